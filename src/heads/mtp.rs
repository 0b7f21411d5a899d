//! `rllama graft --mtp`: a multi-token-prediction head grafted onto a model
//! that ships none, written in llama.cpp's nextn layout (see
//! `model::nextn`) as block `n_layer` of the heads file, with
//! `{arch}.nextn_predict_layers = 1`.
//!
//! The closed-form start: for each calibration position p, the pair
//! z = [rms(embed(x_p)); rms(output_norm(F_{p-1}))] (F: the model's final
//! hidden rows) is mapped to F_p by ridge regression (no intercept: eh_proj
//! has no bias); the block starts as the model's last block with its output
//! projections (attn_output, ffn_down) zero, so it passes its input through
//! until training gives it something to add; shared_head_norm is the
//! model's output norm. Held-out agreement with the full model's next
//! choice is measured with the head as drafting runs it, per draft position
//! (position k chains on the head's own output row k - 1 times).

use super::*;
use crate::gguf::{GgmlType, GgufWriter};
use crate::model::nextn::Nextn;
use crate::model::{Rounding, Scratch};
use crate::ops::norm::rms_norm_rows;
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use std::sync::Arc;

pub struct MtpParams {
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks used for fitting (None: all but the held-out ones).
    pub chunks: Option<usize>,
    /// Chunks held out for the agreement report.
    pub holdout: usize,
    pub ridge: f64,
    /// Type of the head's matrices.
    pub ty: GgmlType,
}

/// Draft positions the agreement is reported for.
pub const REPORT_POSITIONS: usize = 3;

pub struct MtpReport {
    /// Held-out top-1 agreement with the full model per draft position.
    pub agree: Vec<f64>,
    pub held_out: usize,
}

/// Final hidden rows (before the output norm) of every token of `chunk`.
pub fn final_rows(model: &Model, chunk: &[u32]) -> Result<Vec<f32>> {
    let mut kv = model.new_cache(chunk.len())?;
    let mut s = Scratch::default();
    model.embed(chunk, &mut s)?;
    model.blocks(0..model.cfg.n_layer, 0, &mut kv, &mut s, Rounding::Batch, None)?;
    Ok(s.x)
}

/// Each row RMS-normalized (unit weights).
fn rms(x: &[f32], d: usize, eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    rms_norm_rows(x, &vec![1.0; d], eps, &mut out);
    out
}

/// The head's inputs for a chunk: z_p = [rms(embed(x_p)); rms(output_norm(F_{p-1}))]
/// (zeros for the hidden half at p = 0), n x 2d.
pub fn pair_rows(model: &Model, chunk: &[u32], f: &[f32]) -> Result<Vec<f32>> {
    let (d, eps, n) = (model.cfg.n_embd, model.cfg.eps, chunk.len());
    let mut s = Scratch::default();
    model.embed(chunk, &mut s)?;
    let e = rms(&s.x, d, eps);
    let mut h = vec![0f32; n * d];
    rms_norm_rows(f, model.output_norm(), eps, &mut h);
    let h = rms(&h, d, eps);
    let mut z = vec![0f32; n * 2 * d];
    for p in 0..n {
        z[p * 2 * d..p * 2 * d + d].copy_from_slice(&e[p * d..(p + 1) * d]);
        if p > 0 {
            z[p * 2 * d + d..(p + 1) * 2 * d].copy_from_slice(&h[(p - 1) * d..p * d]);
        }
    }
    Ok(z)
}

/// A matrix of `rows` x `cols` f32 values stored as `ty` (F32 when the rows
/// do not fit its blocks).
fn put(w: &mut GgufWriter, name: &str, cols: usize, rows: usize, x: &[f32], ty: GgmlType) -> Result<()> {
    let ty = if ty.row_bytes(cols).is_some() { ty } else { GgmlType::F32 };
    let rb = ty.row_bytes(cols).unwrap_or(cols * 4);
    let mut out = vec![0u8; rows * rb];
    crate::quant::quantize::quantize_rows(ty, x, cols, &mut out)?;
    w.add_tensor(name, &[cols as u64, rows as u64], ty, out)
}

fn put_vec(w: &mut GgufWriter, name: &str, x: &[f32]) -> Result<()> {
    w.add_tensor(name, &[x.len() as u64], GgmlType::F32, x.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A matrix of the model as f32 rows.
fn dequant(m: &crate::ops::matmul::QMatrix) -> Vec<f32> {
    let mut out = vec![0f32; m.rows * m.cols];
    for r in 0..m.rows {
        crate::quant::dequantize_row(m.ty, m.row(r), &mut out[r * m.cols..(r + 1) * m.cols]);
    }
    out
}

/// The head's tensors into `w` (block `il`), from eh_proj (d rows of 2d)
/// and block matrices taken from the model's last block but with zero
/// output projections.
pub fn write_head(model: &Model, w: &mut GgufWriter, eh: &[f32], ty: GgmlType) -> Result<()> {
    let c = &model.cfg;
    let (d, il) = (c.n_embd, c.n_layer);
    let last = model.layer(c.n_layer - 1);
    let p = |s: &str| format!("blk.{il}.{s}");
    put(w, &p("nextn.eh_proj.weight"), 2 * d, d, eh, ty)?;
    put_vec(w, &p("nextn.enorm.weight"), &vec![1.0; d])?;
    put_vec(w, &p("nextn.hnorm.weight"), &vec![1.0; d])?;
    put_vec(w, &p("nextn.shared_head_norm.weight"), model.output_norm())?;
    put_vec(w, &p("attn_norm.weight"), &last.attn_norm)?;
    put_vec(w, &p("ffn_norm.weight"), &last.ffn_norm)?;
    for (name, lin) in [("attn_q", &last.wq), ("attn_k", &last.wk), ("attn_v", &last.wv), ("ffn_gate", &last.w_gate), ("ffn_up", &last.w_up)] {
        put(w, &p(&format!("{name}.weight")), lin.w.cols, lin.w.rows, &dequant(&lin.w), ty)?;
        if let Some(b) = lin.bias.as_deref() {
            put_vec(w, &p(&format!("{name}.bias")), b)?;
        }
    }
    for (name, lin) in [("attn_output", &last.wo), ("ffn_down", &last.w_down)] {
        put(w, &p(&format!("{name}.weight")), lin.w.cols, lin.w.rows, &vec![0.0; lin.w.cols * lin.w.rows], ty)?;
    }
    for (name, v) in
        [("attn_q_norm", &last.q_norm), ("attn_k_norm", &last.k_norm), ("post_attention_norm", &last.post_attn_norm), ("post_ffw_norm", &last.post_ffn_norm)]
    {
        if let Some(v) = v {
            put_vec(w, &p(&format!("{name}.weight")), v)?;
        }
    }
    w.set(&format!("{}.nextn_predict_layers", c.arch), Value::U32(1));
    Ok(())
}

/// Fit the head on `tokens`, write it into `w`, report held-out agreement.
pub fn graft_mtp(model: &Model, tokens: &[u32], p: &MtpParams, w: &mut GgufWriter, prog: &mut dyn super::graft::GraftProgress) -> Result<MtpReport> {
    let d = model.cfg.n_embd;
    if p.n_ctx < 2 {
        bail!("-c {}: chunks need at least 2 tokens", p.n_ctx);
    }
    let n_chunks = tokens.len() / p.n_ctx;
    if n_chunks < p.holdout + 1 {
        bail!("the calibration text has {} tokens: {} chunks of {} needed ({} held out)", tokens.len(), p.holdout + 1, p.n_ctx, p.holdout);
    }
    let fit = p.chunks.unwrap_or(usize::MAX).min(n_chunks - p.holdout);
    let total = fit + p.holdout;
    faer::set_global_parallelism(faer::Par::rayon(rayon::current_num_threads()));
    let (mut zz, mut zy) = (Mat::<f64>::zeros(2 * d, 2 * d), Mat::<f64>::zeros(2 * d, d));
    for ci in 0..fit {
        let chunk = &tokens[ci * p.n_ctx..(ci + 1) * p.n_ctx];
        let f = final_rows(model, chunk)?;
        let z = pair_rows(model, chunk, &f)?;
        let n = chunk.len();
        let zm = Mat::from_fn(n, 2 * d, |i, j| z[i * 2 * d + j] as f64);
        let ym = Mat::from_fn(n, d, |i, j| f[i * d + j] as f64);
        zz += zm.transpose() * &zm;
        zy += zm.transpose() * &ym;
        prog.chunk(ci + 1, total);
    }
    let trace: f64 = (0..2 * d).map(|i| zz[(i, i)]).sum();
    let lambda = p.ridge * trace / (2 * d) as f64;
    let a = Mat::from_fn(2 * d, 2 * d, |i, j| zz[(i, j)] + if i == j { lambda } else { 0.0 });
    let Ok(llt) = a.llt(Side::Lower) else { bail!("mtp: the pairs' covariance is singular (raise --ridge)") };
    let wm = llt.solve(&zy);
    // eh_proj rows are output dimensions: E[j][i] = W[i][j]
    let eh: Vec<f32> = (0..d).flat_map(|j| (0..2 * d).map(move |i| (j, i))).map(|(j, i)| wm[(i, j)] as f32).collect();
    write_head(model, w, &eh, p.ty)?;
    let head = load_written(model, w)?;
    let (mut hits, mut tried) = (vec![0usize; REPORT_POSITIONS], vec![0usize; REPORT_POSITIONS]);
    for hi in 0..p.holdout {
        let ci = n_chunks - p.holdout + hi;
        let chunk = &tokens[ci * p.n_ctx..(ci + 1) * p.n_ctx];
        let (h, t) = agreement(model, &head, chunk)?;
        for k in 0..REPORT_POSITIONS {
            hits[k] += h[k];
            tried[k] += t[k];
        }
        prog.chunk(fit + hi + 1, total);
    }
    Ok(MtpReport { agree: hits.iter().zip(&tried).map(|(&h, &t)| h as f64 / t.max(1) as f64).collect(), held_out: tried[0] })
}

/// The head as written in `w` (its tensors read back).
fn load_written(model: &Model, w: &GgufWriter) -> Result<Nextn> {
    let g = Arc::new(crate::gguf::GgufFile::from_bytes(w.to_bytes())?);
    Nextn::load(&g, &model.cfg, model.cfg.n_layer)
}

/// Top-1 of the model's output on normed rows.
fn top1_normed(model: &Model, x: &[f32]) -> Vec<usize> {
    let d = model.cfg.n_embd;
    let mut s = Scratch::default();
    let mut logits = Vec::new();
    let mut out = Vec::new();
    for rows in x.chunks(32 * d) {
        s.set_hidden(rows, rows.len() / d);
        model.head_normed(model.output(), &mut s, Rounding::Batch, &mut logits);
        out.extend(logits.chunks_exact(logits.len() / (rows.len() / d)).map(crate::decode::speculative::argmax));
    }
    out
}

/// Hits per draft position on one chunk, and positions tried: the head
/// at position p (pair of F_{p-1} and x_p) against the model's choice at p;
/// position k chains k - 1 times on the head's own rows with the text's
/// tokens, against the model's choices at p + k - 1.
pub fn agreement(model: &Model, head: &Nextn, chunk: &[u32]) -> Result<(Vec<usize>, Vec<usize>)> {
    let d = model.cfg.n_embd;
    let n = chunk.len();
    let f = final_rows(model, chunk)?;
    let mut s = Scratch::default();
    let mut normed = vec![0f32; n * d];
    rms_norm_rows(&f, model.output_norm(), model.cfg.eps, &mut normed);
    let want = top1_normed(model, &normed);
    // the target's normed rows paired one position later, as drafting does
    let mut hprev = vec![0f32; n * d];
    hprev[d..].copy_from_slice(&normed[..(n - 1) * d]);
    let mut kv = head.new_cache(model, n + REPORT_POSITIONS)?;
    head.forward(model, chunk, &hprev, 0, &mut kv, &mut s)?;
    let step1 = s.x.clone();
    let got1 = top1_normed(model, &step1);
    let mut hits = vec![0usize; REPORT_POSITIONS];
    hits[0] = got1.iter().zip(&want).filter(|(a, b)| a == b).count();
    // chained positions: from each p (its true pairs 0..=p in the cache)
    let il = head.il;
    let mut tried = vec![n; REPORT_POSITIONS];
    let starts = n.saturating_sub(REPORT_POSITIONS);
    for t in tried.iter_mut().skip(1) {
        *t = starts;
    }
    for p in 0..starts {
        let mut row = step1[p * d..(p + 1) * d].to_vec();
        for k in 1..REPORT_POSITIONS {
            kv.remove_from(p + k, il..il + 1);
            head.forward(model, &chunk[p + k..p + k + 1], &row, p + k, &mut kv, &mut s)?;
            row = s.x.clone();
            if top1_normed(model, &row)[0] == want[p + k] {
                hits[k] += 1;
            }
        }
        // the true pair at p + 1 again, for the next p
        kv.remove_from(p + 1, il..il + 1);
        head.forward(model, &chunk[p + 1..p + 2], &hprev[(p + 1) * d..(p + 2) * d], p + 1, &mut kv, &mut s)?;
    }
    Ok((hits, tried))
}
