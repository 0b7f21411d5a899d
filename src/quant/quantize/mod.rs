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
    if x.len() % n_per_row != 0 || out.len() != x.len() / n_per_row * rb {
        bail!("quantize: buffer sizes do not match");
    }
    x.par_chunks(n_per_row).zip(out.par_chunks_mut(rb)).try_for_each(|(x, o)| quantize_row(ty, x, o))
}
