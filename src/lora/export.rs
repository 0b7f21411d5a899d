//! `export-lora`: adapters merged into the base's weights, as
//! llama-export-lora merges them: every tensor with a pair (in every adapter)
//! becomes `base + sum_i scale_i * B_i A_i` written F16 (F32 when the base
//! tensor is F32), the others are copied, the base's metadata kept with
//! `general.file_type` = MOSTLY_F16. The float arithmetic is ggml's (the
//! base dequantized, each product a ggml_mul_mat of the F32-cast pair, scaled,
//! added in adapter order, rounded to F16 once), so the bytes equal
//! llama-export-lora's.

use super::{LoraFile, Pair, TOKEN_EMBD};
use crate::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};
use crate::quant::float::{dot_batch, dot_ggml, LANES};
use crate::quantize_model::Progress;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

/// llama.cpp's LLAMA_FTYPE_MOSTLY_F16.
const FTYPE_MOSTLY_F16: u32 = 1;
/// Output rows merged per slab (bounded memory for big tensors).
const SLAB_ROWS: usize = 1024;

/// One adapter's product for a tensor, as F32 rows: output element (r, c) is
/// `scale * dot(x[c], y[r])` over `rank`.
struct Term {
    x: Vec<f32>,
    y: Vec<f32>,
    rank: usize,
    scale: f32,
}

impl Term {
    fn new(p: &Pair, scale: f32) -> Term {
        let rank = p.rank();
        if p.name == TOKEN_EMBD {
            // ggml_mul_mat(b, a): x = b's rows (n_embd of rank), y = a's (n_vocab of rank)
            Term { x: p.b.to_f32(), y: p.a.to_f32(), rank, scale }
        } else {
            // ggml_mul_mat(cont(transpose(a)), b): x = a transposed (n_in rows of rank)
            let a = p.a.to_f32();
            let n_in = p.a.cols;
            let mut x = vec![0f32; n_in * rank];
            for k in 0..rank {
                for c in 0..n_in {
                    x[c * rank + k] = a[k * n_in + c];
                }
            }
            Term { x, y: p.b.to_f32(), rank, scale }
        }
    }

    /// ggml's F32 mul_mat element: llamafile's tinyBLAS when the rank is a
    /// multiple of its 16 lanes (every output has 2+ rows), else ggml_vec_dot_f32.
    fn delta(&self, r: usize, c: usize) -> f32 {
        let (x, y) = (&self.x[c * self.rank..(c + 1) * self.rank], &self.y[r * self.rank..(r + 1) * self.rank]);
        let d = if self.rank.is_multiple_of(LANES) { dot_batch(self.rank, |k| (x[k], y[k]), false) } else { dot_ggml(self.rank, |k| (x[k], y[k]), false) };
        d * self.scale
    }
}

/// Check the adapters against the base as llama-export-lora does (same
/// architecture, the same tensors in every adapter) plus the shapes.
fn check(g: &GgufFile, adapters: &[(LoraFile, f32)]) -> Result<()> {
    let arch = g.get_str(super::KEY_ARCH).unwrap_or("");
    let first: Vec<&str> = adapters.first().map(|(f, _)| f.pairs.iter().map(|p| p.name.as_str()).collect()).unwrap_or_default();
    for (f, _) in adapters {
        let p = f.path.display();
        if f.arch != arch {
            bail!("{p}: adapter architecture '{}' does not match the model's '{arch}'", f.arch);
        }
        let names: Vec<&str> = f.pairs.iter().map(|p| p.name.as_str()).collect();
        if names != first {
            bail!("{p}: the adapters do not have the same tensors; merge them one by one");
        }
        for pair in &f.pairs {
            let Some(t) = g.tensor(&pair.name) else { bail!("{p}: LoRA tensor '{}' does not exist in the base model", pair.name) };
            if t.dims.len() > 2 || !super::pair_fits(pair, t.row_len(), t.n_rows()) {
                bail!("{p}: tensor '{}': the pair does not fit the base's shape {:?}", pair.name, t.dims);
            }
        }
    }
    Ok(())
}

/// The adapters' products, by tensor: which tensors they replace and their
/// merged rows (the last tensor's terms kept, as rows come slab by slab).
struct Merge<'a> {
    adapters: &'a [(LoraFile, f32)],
    last: std::sync::Mutex<Option<(String, std::sync::Arc<Vec<Term>>)>>,
}

impl<'a> Merge<'a> {
    fn new(adapters: &'a [(LoraFile, f32)]) -> Self {
        Merge { adapters, last: std::sync::Mutex::new(None) }
    }

    /// `t` has a pair (in every adapter: `check`).
    fn replaces(&self, t: &TensorInfo) -> bool {
        self.adapters.first().is_some_and(|(f, _)| f.pairs.iter().any(|p| p.name == t.name))
    }

    fn terms(&self, name: &str) -> std::sync::Arc<Vec<Term>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((n, terms)) if n == name => terms.clone(),
            _ => {
                let terms: Vec<Term> = self
                    .adapters
                    .iter()
                    .map(|(f, s)| f.pairs.iter().find(|p| p.name == name).map(|p| Term::new(p, f.scale(*s, p.rank()))))
                    .collect::<Option<_>>()
                    .expect("checked: every adapter has the tensor");
                let terms = std::sync::Arc::new(terms);
                *last = Some((name.to_string(), terms.clone()));
                terms
            }
        }
    }

    /// Rows r0..r0+rows of the merged tensor `t`, as f32.
    fn rows_f32(&self, g: &GgufFile, t: &TensorInfo, r0: usize, rows: usize, out: &mut [f32]) {
        merged_rows(g, t, &self.terms(&t.name), r0, rows, out)
    }
}

/// Rows r0..r0+rows of the merged tensor `t`, as f32.
fn merged_rows(g: &GgufFile, t: &TensorInfo, terms: &[Term], r0: usize, rows: usize, out: &mut [f32]) {
    let n = t.row_len();
    let rb = t.ty.row_bytes(n).expect("checked row size");
    let data = &g.tensor_data(t)[r0 * rb..(r0 + rows) * rb];
    out.par_chunks_mut(n).zip(data.par_chunks(rb)).enumerate().for_each(|(i, (o, src))| {
        crate::quant::dequantize_row(t.ty, src, o);
        for term in terms {
            for (c, v) in o.iter_mut().enumerate() {
                // ggml_add(delta, cur): the same sum
                *v += term.delta(r0 + i, c);
            }
        }
    });
}

/// What was written.
pub struct ExportReport {
    pub n_merged: usize,
    pub n_tensors: usize,
}

/// Merge `adapters` (with their user scales) into the model at `base`,
/// written to `dst` through a temporary file.
pub fn export(base: &Path, adapters: &[(LoraFile, f32)], dst: &Path, prog: &mut dyn Progress) -> Result<ExportReport> {
    let g = GgufFile::open(base)?;
    check(&g, adapters)?;
    let merge = Merge::new(adapters);
    let merged = |t: &TensorInfo| merge.replaces(t);
    let out_type = |t: &TensorInfo| {
        if !merged(t) {
            t.ty
        } else if t.ty == GgmlType::F32 {
            GgmlType::F32
        } else {
            GgmlType::F16
        }
    };
    let mut w = GgufWriter::new();
    w.alignment = g.alignment;
    // llama-export-lora: the base's keys, general.file_type removed and
    // appended; tensors in name order (its std::map)
    w.metadata = g.metadata.iter().filter(|(k, _)| k != "general.file_type").cloned().collect();
    w.metadata.push(("general.file_type".into(), Value::U32(FTYPE_MOSTLY_F16)));
    let mut tensors: Vec<&TensorInfo> = g.tensors.iter().collect();
    tensors.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
    let sizes: Vec<usize> = tensors.iter().map(|t| if merged(t) { t.n_rows() * out_type(t).row_bytes(t.row_len()).unwrap_or(0) } else { t.n_bytes }).collect();
    let infos: Vec<(&str, &[u64], GgmlType, usize)> = tensors.iter().zip(&sizes).map(|(t, &s)| (t.name.as_str(), t.dims.as_slice(), out_type(t), s)).collect();
    let header = w.header(&infos);
    let tmp = crate::tmpfile::beside(dst)?;
    let file = tmp.reopen().with_context(|| format!("cannot write {}", dst.display()))?;
    let mut out = std::io::BufWriter::with_capacity(4 << 20, file);
    out.write_all(&header)?;
    let a = g.alignment as usize;
    let mut n_merged = 0;
    let mut buf: Vec<f32> = Vec::new();
    for (&t, &size) in tensors.iter().zip(&sizes) {
        if !merged(t) {
            out.write_all(g.tensor_data(t))?;
            prog.line(&format!("copy_tensor :  {} [{}]", t.name, dims(t)));
        } else {
            let n = t.row_len();
            for r0 in (0..t.n_rows()).step_by(SLAB_ROWS) {
                let rows = SLAB_ROWS.min(t.n_rows() - r0);
                buf.resize(rows * n, 0.0);
                merge.rows_f32(&g, t, r0, rows, &mut buf);
                if out_type(t) == GgmlType::F32 {
                    for v in &buf {
                        out.write_all(&v.to_le_bytes())?;
                    }
                } else {
                    let bytes: Vec<u8> = buf.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
                    out.write_all(&bytes)?;
                }
            }
            n_merged += 1;
            prog.line(&format!("merge_tensor : {} [{}] -> {}", t.name, dims(t), out_type(t).name()));
        }
        out.write_all(&vec![0u8; size.div_ceil(a) * a - size])?;
        prog.advance(t.n_bytes as u64);
    }
    let file = out.into_inner().map_err(|e| anyhow::anyhow!("write failed: {e}"))?;
    file.sync_all()?;
    crate::tmpfile::persist(tmp, dst)?;
    Ok(ExportReport { n_merged, n_tensors: g.tensors.len() })
}

/// The merged values as a quantization source: what export-lora would have
/// written (F16-rounded unless the base tensor is F32), so converting them
/// equals quantizing the exported file.
impl crate::quantize_model::Rows for Merge<'_> {
    fn replaces(&self, t: &TensorInfo) -> bool {
        Merge::replaces(self, t)
    }
    fn rows(&self, g: &GgufFile, t: &TensorInfo, r0: usize, n: usize, out: &mut [f32]) {
        self.rows_f32(g, t, r0, n, out);
        if t.ty != GgmlType::F32 {
            out.iter_mut().for_each(|v| *v = half::f16::from_f32(*v).to_f32());
        }
    }
}

/// `export` then `rllama quantize --allow-requantize` to `ft` in one pass (no
/// F16 file): the plan llama-quantize makes for the model, the merged tensors
/// converted from their merged values.
pub fn export_quantized(
    base: &Path,
    adapters: &[(LoraFile, f32)],
    dst: &Path,
    ft: crate::quantize_model::ftype::Ftype,
    prog: &mut dyn Progress,
) -> Result<ExportReport> {
    use crate::quantize_model::plan;
    let g = GgufFile::open(base)?;
    check(&g, adapters)?;
    let params = plan::Params { allow_requantize: true, quantize_output: true, ..Default::default() };
    // llama-quantize's order (by layer, then name) does not depend on the
    // file's, so the plan is the one for the exported file
    let plans = plan::plan(&g, ft, &params);
    let merge = Merge::new(adapters);
    let n_merged = g.tensors.iter().filter(|t| merge.replaces(t)).count();
    crate::quantize_model::write_plans(&g, ft, &plans, dst, prog, Some(&merge))?;
    Ok(ExportReport { n_merged, n_tensors: g.tensors.len() })
}

fn dims(t: &TensorInfo) -> String {
    t.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
}
