//! `rllama quantize`: a GGUF file rewritten with llama-quantize's per-tensor
//! types (`plan`) and ggml's reference quantizers (`quant::quantize`), so the
//! tensor bytes equal llama-quantize's. Streams slabs of rows from the mmap to
//! a temporary file renamed at the end: the source is only read, and a failed
//! run leaves no half-written destination.

pub mod ftype;
pub mod plan;

use crate::gguf::{GgmlType, GgufFile, GgufWriter, TensorInfo, Value};
use crate::quant::{self, quantize as q, AlignedBytes};
use anyhow::{bail, Context, Result};
use ftype::Ftype;
use plan::{is_quantized, Params, TensorPlan};
use rayon::prelude::*;
use std::io::Write;
use std::path::Path;

/// f32 values converted per slab (bounds memory for any tensor size).
const SLAB_F32: usize = 16 << 20;

pub struct Report {
    pub size_org: u64,
    pub size_new: u64,
    pub n_elements: u64,
    pub n_tensors: usize,
    pub n_fallback: usize,
}

/// What the driver tells its front-end as it goes.
pub trait Progress {
    /// A log line (llama-quantize's wording).
    fn line(&mut self, s: &str);
    /// `bytes` more of the source have been processed.
    fn advance(&mut self, bytes: u64);
}

pub fn mib(b: u64) -> f64 {
    b as f64 / 1024.0 / 1024.0
}

/// Check the plan before anything is written.
fn validate(g: &GgufFile, plans: &[TensorPlan], p: &Params) -> Result<()> {
    for pl in plans {
        let t = &g.tensors[pl.index];
        if pl.new_type == t.ty {
            continue;
        }
        if is_quantized(t.ty) && !p.allow_requantize {
            bail!("requantizing from type {} is disabled (tensor {}); pass --allow-requantize", t.ty.name(), t.name);
        }
        if quant::scalar_kernels(t.ty).is_none() {
            bail!("tensor {}: cannot convert from type {}", t.name, t.ty.name());
        }
        if !q::can_quantize(pl.new_type) || pl.new_type.row_bytes(t.row_len()).is_none() {
            bail!("tensor {}: cannot quantize rows of {} to {}", t.name, t.row_len(), pl.new_type.name());
        }
    }
    Ok(())
}

fn shape(dims: &[u64]) -> String {
    let d: Vec<String> = (0..4).map(|i| format!("{:6}", dims.get(i).copied().unwrap_or(1))).collect();
    d.join(", ")
}

fn new_size(g: &GgufFile, pl: &TensorPlan) -> usize {
    let t = &g.tensors[pl.index];
    if pl.new_type == t.ty {
        t.n_bytes
    } else {
        t.n_rows() * pl.new_type.row_bytes(t.row_len()).unwrap_or(0)
    }
}

/// A planned and validated quantization: nothing written yet.
pub struct Job {
    g: GgufFile,
    ft: Ftype,
    plans: Vec<TensorPlan>,
}

/// Open `src`, decide every tensor's type and check the run can succeed
/// (requantization allowed, types convertible) before anything is written.
pub fn prepare(src: &Path, ft: Ftype, p: &Params) -> Result<Job> {
    let g = GgufFile::open(src)?;
    let plans = plan::plan(&g, ft, p);
    validate(&g, &plans, p)?;
    Ok(Job { g, ft, plans })
}

/// Quantize `src` into `dst` as llama-quantize would with this file type.
pub fn quantize_file(src: &Path, dst: &Path, ft: Ftype, p: &Params, prog: &mut dyn Progress) -> Result<Report> {
    prepare(src, ft, p)?.write(dst, prog)
}

impl Job {
    pub fn write(self, dst: &Path, prog: &mut dyn Progress) -> Result<Report> {
        let Job { g, ft, plans } = self;
        write_plans(&g, ft, &plans, dst, prog, None)
    }
}

/// Where converted tensors' f32 rows come from, when not from the file's
/// own data (e.g. LoRA adapters merged in).
pub trait Rows: Sync {
    /// Whether `t`'s values are replaced (it is then converted even to its own type).
    fn replaces(&self, t: &TensorInfo) -> bool;
    /// Rows r0..r0+n of `t` as f32 into `out`.
    fn rows(&self, g: &GgufFile, t: &TensorInfo, r0: usize, n: usize, out: &mut [f32]);
}

/// Write `g`'s tensors as `plans` says (in that order) into `dst` through a
/// temporary file, the values of `rows` where it replaces them.
pub fn write_plans(g: &GgufFile, ft: Ftype, plans: &[TensorPlan], dst: &Path, prog: &mut dyn Progress, rows: Option<&dyn Rows>) -> Result<Report> {
    let mut n_fallback = 0;
    for w in plans.iter().filter_map(|pl| pl.warning.as_ref()) {
        prog.line(w);
        n_fallback += 1;
    }
    let mut w = GgufWriter::new();
    w.alignment = g.alignment;
    w.metadata = g.metadata.iter().filter(|(k, _)| !k.starts_with("split.")).cloned().collect();
    for (k, v) in [("general.quantization_version", 2u32), ("general.file_type", ft.id())] {
        w.metadata.retain(|(key, _)| key != k);
        w.metadata.push((k.to_string(), Value::U32(v)));
    }
    let infos: Vec<(&str, &[u64], GgmlType, usize)> = plans
        .iter()
        .map(|pl| {
            let t = &g.tensors[pl.index];
            (t.name.as_str(), t.dims.as_slice(), pl.new_type, new_size(g, pl))
        })
        .collect();
    let header = w.header(&infos);
    // a failed run drops `tmp`, which removes it
    let tmp = crate::tmpfile::beside(dst)?;
    let file = tmp.reopen().with_context(|| format!("cannot write {}", dst.display()))?;
    let (size_org, size_new) = write_tensors(g, plans, header, file, prog, rows)?;
    crate::tmpfile::persist(tmp, dst)?;
    Ok(Report { size_org, size_new, n_elements: g.tensors.iter().map(|t| t.n_elements()).sum(), n_tensors: g.tensors.len(), n_fallback })
}

fn write_tensors(
    g: &GgufFile,
    plans: &[TensorPlan],
    header: Vec<u8>,
    file: std::fs::File,
    prog: &mut dyn Progress,
    rows_src: Option<&dyn Rows>,
) -> Result<(u64, u64)> {
    let a = g.alignment as usize;
    let mut out = std::io::BufWriter::with_capacity(4 << 20, file);
    out.write_all(&header)?;
    let (mut size_org, mut size_new) = (0u64, 0u64);
    let mut f32buf: Vec<f32> = Vec::new();
    let mut qbuf = AlignedBytes::default();
    for (k, pl) in plans.iter().enumerate() {
        let t = &g.tensors[pl.index];
        let data = g.tensor_data(t);
        let mut line = format!("[{:4}/{:4}] {:<36} - [{}], type = {:>6}, ", k + 1, plans.len(), t.name, shape(&t.dims), t.ty.name());
        let replaced = rows_src.is_some_and(|r| r.replaces(t));
        let written = if pl.new_type == t.ty && !replaced {
            out.write_all(data)?;
            prog.advance(data.len() as u64);
            line.push_str(&format!("size = {:8.3} MiB", mib(data.len() as u64)));
            data.len()
        } else {
            let (n, src_rb) = (t.row_len(), t.ty.row_bytes(t.row_len()).unwrap_or(0));
            let dst_rb = pl.new_type.row_bytes(n).unwrap_or(0);
            let rows_per_slab = (SLAB_F32 / n.max(1)).max(1);
            let mut done = 0usize;
            for r0 in (0..t.n_rows()).step_by(rows_per_slab) {
                let rows = rows_per_slab.min(t.n_rows() - r0);
                let src = &data[r0 * src_rb..(r0 + rows) * src_rb];
                f32buf.resize(rows * n, 0.0);
                match rows_src.filter(|_| replaced) {
                    Some(r) => r.rows(g, t, r0, rows, &mut f32buf),
                    None => src.par_chunks(src_rb).zip(f32buf.par_chunks_mut(n)).for_each(|(s, o)| quant::dequantize_row(t.ty, s, o)),
                }
                qbuf.resize(rows * dst_rb);
                q::quantize_rows(pl.new_type, &f32buf, n, qbuf.as_mut_slice()).with_context(|| format!("tensor {}", t.name))?;
                out.write_all(qbuf.as_slice())?;
                done += rows * dst_rb;
                prog.advance(src.len() as u64);
            }
            line.push_str(&format!("converting to {} .. size = {:8.2} MiB -> {:8.2} MiB", pl.new_type.name(), mib(data.len() as u64), mib(done as u64)));
            done
        };
        let pad = written.div_ceil(a) * a - written;
        out.write_all(&vec![0u8; pad])?;
        size_org += data.len() as u64;
        size_new += written as u64;
        prog.line(&line);
    }
    let file = out.into_inner().map_err(|e| anyhow::anyhow!("write failed: {e}"))?;
    file.sync_all()?;
    Ok((size_org, size_new))
}
