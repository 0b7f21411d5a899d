//! Weight quantization as llama-quantize does it without an importance
//! matrix: ggml's reference algorithms (same search, same rounding, same
//! bytes). Separate from the activation quantizers in `legacy`/`kquants`,
//! which round like ggml's SIMD code instead.

pub mod iq4;
pub mod kquants;
pub mod legacy;

use super::blocks::cast_blocks_mut;
use super::float;
use crate::gguf::GgmlType;
use anyhow::{bail, Result};
use rayon::prelude::*;

/// ggml's GROUP_MAX_EPS: groups whose largest magnitude is below it are all zero.
const GROUP_MAX_EPS: f32 = 1e-15;

/// Round to nearest, ties to even (ggml's nearest_int).
#[inline]
pub fn nearest_int(f: f32) -> i32 {
    let v = f + 12582912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// The value of largest magnitude (the first one wins ties) and that magnitude,
/// as ggml's quantizers find it.
fn signed_absmax(x: &[f32]) -> (f32, f32) {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    (max, amax)
}

/// Types `quantize_rows` can produce.
pub fn can_quantize(ty: GgmlType) -> bool {
    !matches!(ty, GgmlType::Q8_1 | GgmlType::Q8_K)
}

/// Quantize one row (n_per_row = x.len(), a multiple of the block size) into `out`.
pub fn quantize_row(ty: GgmlType, x: &[f32], out: &mut [u8]) -> Result<()> {
    use GgmlType::*;
    macro_rules! q {
        ($f:path) => {{
            let Some(b) = cast_blocks_mut(out) else { bail!("quantize: misaligned or partial output for {}", ty.name()) };
            $f(x, b)
        }};
    }
    match ty {
        F32 => {
            let Some(o) = cast_blocks_mut::<f32>(out) else { bail!("quantize: misaligned f32 output") };
            o.copy_from_slice(x)
        }
        F16 => q!(float::quantize_f16),
        BF16 => q!(float::quantize_bf16),
        Q4_0 => q!(legacy::q4_0),
        Q4_1 => q!(legacy::q4_1),
        Q5_0 => q!(legacy::q5_0),
        Q5_1 => q!(legacy::q5_1),
        Q8_0 => q!(legacy::q8_0),
        Q2_K => q!(kquants::q2_k),
        Q3_K => q!(kquants::q3_k),
        Q4_K => q!(kquants::q4_k),
        Q5_K => q!(kquants::q5_k),
        Q6_K => q!(kquants::q6_k),
        IQ4_NL => q!(iq4::iq4_nl),
        IQ4_XS => q!(iq4::iq4_xs),
        Q8_1 | Q8_K => bail!("quantize: {} is an activation-only type", ty.name()),
    }
    Ok(())
}

/// Quantize `x` (rows of `n_per_row`) into `out` (rows of ty.row_bytes), rows in parallel.
pub fn quantize_rows(ty: GgmlType, x: &[f32], n_per_row: usize, out: &mut [u8]) -> Result<()> {
    let Some(rb) = ty.row_bytes(n_per_row) else { bail!("quantize: row length {n_per_row} is not a multiple of the {} block size", ty.name()) };
    if !x.len().is_multiple_of(n_per_row) || out.len() != x.len() / n_per_row * rb {
        bail!("quantize: buffer sizes do not match");
    }
    x.par_chunks(n_per_row).zip(out.par_chunks_mut(rb)).try_for_each(|(x, o)| quantize_row(ty, x, o))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::dequantize_row;
    use rand::{Rng, SeedableRng};

    const TYPES: &[(GgmlType, f64)] = &[
        (GgmlType::F32, 1e-9),
        (GgmlType::F16, 1e-3),
        (GgmlType::BF16, 1e-2),
        (GgmlType::Q8_0, 0.01),
        (GgmlType::Q6_K, 0.02),
        (GgmlType::Q5_0, 0.05),
        (GgmlType::Q5_1, 0.05),
        (GgmlType::Q5_K, 0.05),
        (GgmlType::Q4_0, 0.1),
        (GgmlType::Q4_1, 0.1),
        (GgmlType::Q4_K, 0.1),
        (GgmlType::IQ4_NL, 0.1),
        (GgmlType::IQ4_XS, 0.1),
        (GgmlType::Q3_K, 0.2),
        (GgmlType::Q2_K, 0.4),
    ];

    fn round_trip(ty: GgmlType, x: &[f32]) -> Vec<f32> {
        let mut q = crate::quant::AlignedBytes::new(ty.row_bytes(x.len()).unwrap());
        quantize_rows(ty, x, x.len(), q.as_mut_slice()).unwrap();
        let mut y = vec![0.0f32; x.len()];
        dequantize_row(ty, q.as_slice(), &mut y);
        y
    }

    #[test]
    fn round_trip_error_is_small_for_every_type() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let x: Vec<f32> = (0..1024).map(|_| rng.gen_range(-1.0f32..1.0) * rng.gen_range(0.0f32..2.0)).collect();
        let norm = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>();
        for &(ty, tol) in TYPES {
            let y = round_trip(ty, &x);
            let err = x.iter().zip(&y).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
            let rel = (err / norm).sqrt();
            assert!(rel < tol, "{}: relative RMS error {rel}", ty.name());
        }
    }

    #[test]
    fn zeros_and_extremes_are_handled() {
        let zeros = vec![0.0f32; 512];
        let mut spikes = vec![0.0f32; 512];
        spikes[3] = 60000.0;
        spikes[300] = -1e-30;
        spikes[400] = f32::MIN_POSITIVE;
        for &(ty, _) in TYPES {
            assert!(round_trip(ty, &zeros).iter().all(|v| *v == 0.0), "{}: zeros", ty.name());
            let y = round_trip(ty, &spikes);
            assert!(y.iter().all(|v| v.is_finite()), "{}: non-finite output", ty.name());
            assert!((y[3] - 60000.0).abs() / 60000.0 < 0.1, "{}: spike {}", ty.name(), y[3]);
        }
    }
}
