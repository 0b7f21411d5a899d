//! Seeded random adapters in llama.cpp's format, for tests and fixtures: the
//! same seed gives the same file on every machine (splitmix64, F16 values),
//! so llama.cpp's outputs with an adapter can be committed and checked in CI.

use super::{KEY_ADAPTER_TYPE, KEY_ALPHA, KEY_ARCH, KEY_GENERAL_TYPE, SUFFIX_A, SUFFIX_B, TOKEN_EMBD};
use crate::gguf::{GgmlType, GgufWriter, Value};
use crate::model::Model;
use crate::ops::matmul::QMatrix;
use anyhow::Result;

/// The projections of every block a random adapter covers.
const BLOCK_TARGETS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
/// Rows of a base matrix sampled for its typical magnitude.
const SAMPLE_ROWS: usize = 16;

/// splitmix64: tiny, fixed forever (unlike a library generator's stream).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub(crate) fn unit(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// Root mean square of a few rows of `w`.
fn rms_rows(w: &QMatrix) -> f32 {
    let mut row = vec![0.0f32; w.cols];
    let (mut s, mut n) = (0.0f64, 0usize);
    for i in 0..SAMPLE_ROWS.min(w.rows) {
        w.dequantize_row(i * (w.rows / SAMPLE_ROWS.min(w.rows)), &mut row);
        s += row.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
        n += row.len();
    }
    ((s / n.max(1) as f64).sqrt() as f32).max(1e-6)
}

fn f16_tensor(rng: &mut SplitMix, n: usize, amp: f32) -> Vec<u8> {
    // uniform in [-amp*sqrt3, amp*sqrt3): root mean square `amp`
    let k = amp * 3f32.sqrt();
    (0..n).flat_map(|_| half::f16::from_f32(rng.unit() * k).to_le_bytes()).collect()
}

/// A rank-`rank` adapter on q, k, v, o, gate, up and down of every block, and
/// on the output and token embedding when the model has its own output matrix
/// (llama.cpp cannot apply a token-embedding adapter to a tied output).
/// Each pair's product, at the adapter's scale, is about `gain` times the
/// base projection's output in root mean square.
pub fn random_adapter(model: &Model, rank: usize, alpha: f32, gain: f32, seed: u64) -> Result<GgufWriter> {
    let mut w = GgufWriter::new();
    w.set_str(KEY_GENERAL_TYPE, "adapter");
    w.set_str(KEY_ARCH, &model.cfg.arch);
    w.set_str("general.name", "rllama random test adapter");
    w.set_str(KEY_ADAPTER_TYPE, "lora");
    w.set(KEY_ALPHA, Value::F32(alpha));
    let scale = if alpha != 0.0 { alpha / rank as f32 } else { 1.0 };
    let mut rng = SplitMix(seed);
    let linears = model.linears();
    let has_output = linears.iter().any(|(n, _)| *n == "output.weight");
    for (name, lin) in linears {
        let base = name.strip_suffix(".weight").unwrap_or(name);
        let wanted = if name == TOKEN_EMBD || name == "output.weight" { has_output } else { BLOCK_TARGETS.iter().any(|t| base.ends_with(t)) };
        if !wanted {
            continue;
        }
        let (n_in, n_out) = (lin.cols(), lin.rows());
        let m = &lin.w;
        if name == TOKEN_EMBD {
            // a {rank, n_vocab} looked up by token (rms 1); b {rank, n_embd}
            let b_amp = rms_rows(m) * gain / (scale * (rank as f32).sqrt());
            w.add_tensor(&format!("{name}{SUFFIX_A}"), &[rank as u64, n_out as u64], GgmlType::F16, f16_tensor(&mut rng, rank * n_out, 1.0))?;
            w.add_tensor(&format!("{name}{SUFFIX_B}"), &[rank as u64, n_in as u64], GgmlType::F16, f16_tensor(&mut rng, rank * n_in, b_amp))?;
        } else {
            // a keeps the input's scale per rank row; b brings the sum of
            // `rank` terms to `gain` times rms(W) * sqrt(n_in)
            let a_amp = 1.0 / (n_in as f32).sqrt();
            let b_amp = rms_rows(m) * (n_in as f32).sqrt() * gain / (scale * (rank as f32).sqrt());
            w.add_tensor(&format!("{name}{SUFFIX_A}"), &[n_in as u64, rank as u64], GgmlType::F16, f16_tensor(&mut rng, rank * n_in, a_amp))?;
            w.add_tensor(&format!("{name}{SUFFIX_B}"), &[rank as u64, n_out as u64], GgmlType::F16, f16_tensor(&mut rng, rank * n_out, b_amp))?;
        }
    }
    Ok(w)
}
