//! `extract-lora`: an adapter whose `BASE + adapter` approximates `TUNED`,
//! from a truncated SVD of each matrix's dequantized difference
//! (randomized range finder with power iterations, then an exact SVD of the
//! small projected matrix, faer for the dense algebra). Written in llama.cpp's
//! adapter format (F16, no alpha: scale = the user's), so `llama-cli --lora`
//! loads it.

use super::{KEY_ADAPTER_TYPE, KEY_ARCH, KEY_GENERAL_TYPE, SUFFIX_A, SUFFIX_B, TOKEN_EMBD};
use crate::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo};
use crate::quantize_model::Progress;
use anyhow::{bail, Result};
use faer::Mat;

/// Columns added to the target rank for the range finder.
const OVERSAMPLE: usize = 8;
/// Power iterations (each sharpens the spectrum the range finder sees).
const POWER_ITERS: usize = 2;
/// The projections adapters usually cover.
pub const DEFAULT_TENSORS: &str = r"^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$";

pub struct ExtractParams {
    /// Largest rank per matrix.
    pub rank: usize,
    /// With Some(f): the smallest rank keeping this share of the difference's
    /// Frobenius norm (at most `rank`).
    pub energy: Option<f64>,
    pub tensors: regex::Regex,
}

/// One matrix's result.
pub struct TensorReport {
    pub name: String,
    pub rank: usize,
    /// Share of the difference's Frobenius norm the pair keeps (1 when the
    /// difference is zero).
    pub kept: f64,
}

fn dequantized(g: &GgufFile, t: &TensorInfo) -> Vec<f32> {
    let mut out = vec![0f32; t.n_elements() as usize];
    crate::quant::dequantize_row(t.ty, g.tensor_data(t), &mut out);
    out
}

/// Truncated SVD of `d` (m x n) to `k` terms: (U k columns, singular values, V k columns).
fn truncated_svd(d: &Mat<f64>, k: usize, seed: u64) -> (Mat<f64>, Vec<f64>, Mat<f64>) {
    let (m, n) = (d.nrows(), d.ncols());
    let l = (k + OVERSAMPLE).min(m).min(n);
    let mut rng = super::random::SplitMix(seed);
    let omega = Mat::<f64>::from_fn(n, l, |_, _| rng.unit() as f64);
    let mut q = (d * &omega).qr().compute_thin_Q();
    for _ in 0..POWER_ITERS {
        let z = (d.transpose() * &q).qr().compute_thin_Q();
        q = (d * &z).qr().compute_thin_Q();
    }
    let b = q.transpose() * d; // l x n
    let svd = b.thin_svd().expect("SVD of a small dense matrix");
    let u = &q * svd.U();
    let s: Vec<f64> = (0..l).map(|i| svd.S().column_vector()[i]).collect();
    let k = k.min(l);
    (Mat::from_fn(m, k, |i, j| u[(i, j)]), s[..k].to_vec(), Mat::from_fn(n, k, |i, j| svd.V()[(i, j)]))
}

fn f16_bytes(v: impl Iterator<Item = f64>) -> Vec<u8> {
    v.flat_map(|x| half::f16::from_f64(x).to_le_bytes()).collect()
}

/// Build the adapter `tuned - base` for the matrices `p.tensors` selects.
pub fn extract(tuned: &GgufFile, base: &GgufFile, p: &ExtractParams, prog: &mut dyn Progress) -> Result<(GgufWriter, Vec<TensorReport>)> {
    let arch = base.get_str(KEY_ARCH).unwrap_or("");
    if tuned.get_str(KEY_ARCH).unwrap_or("") != arch {
        bail!("the tuned model's architecture '{}' is not the base's '{arch}'", tuned.get_str(KEY_ARCH).unwrap_or(""));
    }
    if p.rank == 0 {
        bail!("--rank must be at least 1");
    }
    let mut w = GgufWriter::new();
    w.set_str(KEY_GENERAL_TYPE, "adapter");
    w.set_str(KEY_ARCH, arch);
    w.set_str("general.name", "rllama extract-lora");
    w.set_str(KEY_ADAPTER_TYPE, "lora");
    // faer's products and factorizations on the rayon pool (-t)
    faer::set_global_parallelism(faer::Par::rayon(rayon::current_num_threads()));
    let mut reports = Vec::new();
    let selected: Vec<&TensorInfo> = base.tensors.iter().filter(|t| p.tensors.is_match(&t.name) && t.dims.len() == 2).collect();
    if selected.is_empty() {
        bail!("no matrix of the base matches --tensors {}", p.tensors.as_str());
    }
    for (i, t) in selected.iter().enumerate() {
        let Some(tt) = tuned.tensor(&t.name) else { bail!("tensor {} is in the base but not in the tuned model", t.name) };
        if tt.dims != t.dims {
            bail!("tensor {}: shape {:?} in the tuned model, {:?} in the base", t.name, tt.dims, t.dims);
        }
        let (n, m) = (t.row_len(), t.n_rows());
        let (a, b) = (dequantized(tuned, tt), dequantized(base, t));
        let d = Mat::<f64>::from_fn(m, n, |r, c| (a[r * n + c] - b[r * n + c]) as f64);
        let total: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        prog.advance((t.n_bytes + tt.n_bytes) as u64);
        if total == 0.0 {
            reports.push(TensorReport { name: t.name.clone(), rank: 0, kept: 1.0 });
            prog.line(&format!("{}: no difference, skipped", t.name));
            continue;
        }
        let (u, s, v) = truncated_svd(&d, p.rank, i as u64 + 1);
        let share = |r: usize| (s[..r].iter().map(|x| x * x).sum::<f64>() / total).sqrt().min(1.0);
        let r = match p.energy {
            Some(f) => (1..=s.len()).find(|&r| share(r) >= f).unwrap_or(s.len()),
            None => s.len(),
        };
        let sq: Vec<f64> = s[..r].iter().map(|x| x.sqrt()).collect();
        // D = U S V^T, split evenly: U sqrt(S) (m rows of r) and V sqrt(S)
        let rows_side = f16_bytes((0..m).flat_map(|i| (0..r).map(|k| u[(i, k)] * sq[k]).collect::<Vec<_>>()));
        let (r64, m64, n64) = (r as u64, m as u64, n as u64);
        if t.name == TOKEN_EMBD {
            // a {r, n_vocab}: row v = U[v] sqrt(S); b {r, n_embd}: row e = V[e] sqrt(S)
            let cols_side = f16_bytes((0..n).flat_map(|j| (0..r).map(|k| v[(j, k)] * sq[k]).collect::<Vec<_>>()));
            w.add_tensor(&format!("{}{SUFFIX_A}", t.name), &[r64, m64], GgmlType::F16, rows_side)?;
            w.add_tensor(&format!("{}{SUFFIX_B}", t.name), &[r64, n64], GgmlType::F16, cols_side)?;
        } else {
            // a {n_in, r}: row k = sqrt(s_k) V[:, k]^T; b {r, n_out}: row i = U[i] sqrt(S)
            let cols_t = f16_bytes((0..r).flat_map(|k| (0..n).map(|j| v[(j, k)] * sq[k]).collect::<Vec<_>>()));
            w.add_tensor(&format!("{}{SUFFIX_A}", t.name), &[n64, r64], GgmlType::F16, cols_t)?;
            w.add_tensor(&format!("{}{SUFFIX_B}", t.name), &[r64, m64], GgmlType::F16, rows_side)?;
        }
        prog.line(&format!("{}: rank {r}, keeps {:.2}% of the difference's Frobenius norm", t.name, 100.0 * share(r)));
        reports.push(TensorReport { name: t.name.clone(), rank: r, kept: share(r) });
    }
    Ok((w, reports))
}
