//! `rllama graft`: exit heads fitted in closed form. Calibration text runs
//! through the model in chunks; for each exit layer L the hidden states
//! after L blocks (x) and the final hidden states (y) are accumulated as
//! x'x and x'y (f64, centred at the end); the head is
//! y ~ x W + b with W = I + (Cxx + lambda I)^-1 (Cxy - Cxx), the ridge pulling
//! towards the identity (the plain logit lens), lambda = ridge * tr(Cxx) / d.
//! An exit with a tail (`L+T`) also runs the model's last T blocks on the
//! hidden state after L (with their own cache, as a draft would): its head
//! maps that output instead.
//! The last chunks are held out: each head's top-1 agreement with the full
//! model on them is reported (and the plain logit lens's, for comparison).

use super::*;
use crate::gguf::GgufWriter;
use crate::model::{Rounding, Scratch};
use faer::linalg::solvers::Solve;
use faer::{Mat, Side};

pub struct GraftParams {
    pub exit_layers: Vec<ExitSpec>,
    /// Tokens per chunk.
    pub n_ctx: usize,
    /// Chunks used for fitting (None: all but the held-out ones).
    pub chunks: Option<usize>,
    /// Chunks held out for the agreement report.
    pub holdout: usize,
    pub ridge: f64,
}

/// What fitting found per exit layer.
pub struct ExitReport {
    pub exit: ExitSpec,
    /// Held-out top-1 agreement with the full model: the fitted head, the logit lens.
    pub agree: f64,
    pub agree_lens: f64,
}

/// Running sums for one exit layer.
struct Sums {
    xx: Mat<f64>,
    xy: Mat<f64>,
    sx: Vec<f64>,
}

/// Progress callbacks (a bar in the front-end).
pub trait GraftProgress {
    fn chunk(&mut self, done: usize, total: usize);
    fn line(&mut self, s: &str);
    /// A training step (MTP head): mean loss of the epoch so far, held-out
    /// agreement after the last epoch.
    fn train(&mut self, _epoch: usize, _step: usize, _steps: usize, _loss: f64, _agree: Option<f64>) {}
}

/// Rows (n x d, f32) as an f64 matrix.
fn rows(v: &[f32], n: usize, d: usize) -> Mat<f64> {
    Mat::from_fn(n, d, |i, j| v[i * d + j] as f64)
}

/// Each exit's input rows (after its first blocks, and its tail blocks run
/// with their own cache) and the final rows, for one chunk.
fn hidden(model: &Model, tokens: &[u32], exits: &[ExitSpec]) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
    let n_layer = model.cfg.n_layer;
    let mut kv = model.new_cache(tokens.len())?;
    let mut s = Scratch::default();
    let mut at: Vec<usize> = exits.iter().map(|e| e.layer - 1).collect();
    at.sort_unstable();
    at.dedup();
    s.capture = at.clone();
    model.embed(tokens, &mut s)?;
    model.blocks(0..n_layer, 0, &mut kv, &mut s, Rounding::Batch, None)?;
    let captured = std::mem::take(&mut s.captured);
    let mut xs = Vec::with_capacity(exits.len());
    for e in exits {
        let Ok(i) = at.binary_search(&(e.layer - 1)) else { bail!("exit {e}: its rows were not captured") };
        let x = &captured[i];
        if e.tail == 0 {
            xs.push(x.clone());
            continue;
        }
        let mut s2 = Scratch::default();
        let mut kv2 = model.new_cache(tokens.len())?;
        s2.set_hidden(x, tokens.len());
        model.blocks(n_layer - e.tail..n_layer, 0, &mut kv2, &mut s2, Rounding::Batch, None)?;
        xs.push(std::mem::take(&mut s2.x));
    }
    Ok((xs, s.x.clone()))
}

/// Top-1 of the model's head on hidden rows `x` (n of them), in groups.
fn top1(model: &Model, x: &[f32], n: usize) -> Vec<usize> {
    const GROUP: usize = 32;
    let d = model.cfg.n_embd;
    let mut out = Vec::with_capacity(n);
    let mut s = Scratch::default();
    let mut logits = Vec::new();
    for g in (0..n).step_by(GROUP) {
        let m = GROUP.min(n - g);
        s.x = x[g * d..(g + m) * d].to_vec();
        s.rows = (0..m).collect();
        model.head(&mut s, Rounding::Batch, &mut logits);
        out.extend(logits.chunks_exact(logits.len() / m).map(crate::decode::speculative::argmax));
    }
    out
}

/// A heads file for `model` with its identity and the draft vocabulary of
/// `tokens` (the calibration text); heads are added to it.
pub fn heads_writer(model: &Model, tokens: &[u32]) -> Result<GgufWriter> {
    let c = &model.cfg;
    let mut w = GgufWriter::new();
    w.set_str(KEY_TYPE, TYPE_HEADS);
    w.set_str(KEY_ARCH, &c.arch);
    w.set_str("general.name", "rllama graft heads");
    w.set(KEY_N_EMBD, Value::U32(c.n_embd as u32));
    w.set(KEY_N_LAYER, Value::U32(c.n_layer as u32));
    w.set(KEY_N_VOCAB, Value::U32(c.n_vocab as u32));
    w.set_str(KEY_FINGERPRINT, &fingerprint(&model.g));
    w.set(KEY_PROBE, Value::f32_array(probe(model)?));
    set_draft_vocab(model, &mut w, tokens);
    Ok(w)
}

/// The draft vocabulary of `tokens` (the text drafting will meet) into
/// `w`; returns it.
pub fn set_draft_vocab(model: &Model, w: &mut GgufWriter, tokens: &[u32]) -> Vec<u32> {
    let order = vocab_order(tokens, model.cfg.n_vocab, DRAFT_VOCAB_MAX);
    w.set(KEY_DRAFT_VOCAB, Value::Array(crate::gguf::ValueType::U32, order.iter().map(|&t| Value::U32(t)).collect()));
    order
}

/// Fit the heads on `tokens` (the calibration text) and write them.
pub fn graft(model: &Model, tokens: &[u32], p: &GraftParams, prog: &mut dyn GraftProgress) -> Result<(GgufWriter, Vec<ExitReport>)> {
    let mut w = heads_writer(model, tokens)?;
    let reports = graft_exits(model, tokens, p, &mut w, prog)?;
    Ok((w, reports))
}

/// The exit heads of `p` into `w`.
pub fn graft_exits(model: &Model, tokens: &[u32], p: &GraftParams, w: &mut GgufWriter, prog: &mut dyn GraftProgress) -> Result<Vec<ExitReport>> {
    let c = &model.cfg;
    let d = c.n_embd;
    for e in &p.exit_layers {
        e.check(c.n_layer).map_err(|err| anyhow::anyhow!("--exit-layers {err}"))?;
    }
    if p.exit_layers.is_empty() {
        bail!("--exit-layers: give at least one layer");
    }
    let mut seen = p.exit_layers.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != p.exit_layers.len() {
        bail!("--exit-layers: a layer is given twice");
    }
    if p.n_ctx < 2 {
        bail!("-c {}: chunks need at least 2 tokens", p.n_ctx);
    }
    let n_chunks = tokens.len() / p.n_ctx;
    if n_chunks < p.holdout + 1 {
        bail!("the calibration text has {} tokens: {} chunks of {} needed ({} held out)", tokens.len(), p.holdout + 1, p.n_ctx, p.holdout);
    }
    let fit = p.chunks.unwrap_or(usize::MAX).min(n_chunks - p.holdout);
    if fit * p.n_ctx < d {
        prog.line(&format!("note: {} calibration tokens for {d} dimensions: the ridge carries the fit", fit * p.n_ctx));
    }
    faer::set_global_parallelism(faer::Par::rayon(rayon::current_num_threads()));
    let mut sums: Vec<Sums> = p.exit_layers.iter().map(|_| Sums { xx: Mat::zeros(d, d), xy: Mat::zeros(d, d), sx: vec![0.0; d] }).collect();
    let mut sy = vec![0f64; d];
    let total = fit + p.holdout;
    for ci in 0..fit {
        let chunk = &tokens[ci * p.n_ctx..(ci + 1) * p.n_ctx];
        let (xs, y) = hidden(model, chunk, &p.exit_layers)?;
        let n = chunk.len();
        let ym = rows(&y, n, d);
        for (sm, x) in sums.iter_mut().zip(&xs) {
            let xm = rows(x, n, d);
            sm.xx += xm.transpose() * &xm;
            sm.xy += xm.transpose() * &ym;
            for (i, v) in x.iter().enumerate() {
                sm.sx[i % d] += *v as f64;
            }
        }
        for (i, v) in y.iter().enumerate() {
            sy[i % d] += *v as f64;
        }
        prog.chunk(ci + 1, total);
    }
    let nt = (fit * p.n_ctx) as f64;
    let my: Vec<f64> = sy.iter().map(|v| v / nt).collect();
    w.set(KEY_EXIT_LAYERS, Value::Array(crate::gguf::ValueType::U32, p.exit_layers.iter().map(|e| Value::U32(e.layer as u32)).collect()));
    if p.exit_layers.iter().any(|e| e.tail > 0) {
        w.set(KEY_EXIT_TAILS, Value::Array(crate::gguf::ValueType::U32, p.exit_layers.iter().map(|e| Value::U32(e.tail as u32)).collect()));
    }
    w.set(KEY_CALIB_TOKENS, Value::U32(nt as u32));
    w.set(KEY_RIDGE, Value::F32(p.ridge as f32));
    let mut maps = Vec::new();
    for (sm, l) in sums.iter().zip(&p.exit_layers) {
        let mx: Vec<f64> = sm.sx.iter().map(|v| v / nt).collect();
        // centred second moments
        let cxx = Mat::from_fn(d, d, |i, j| sm.xx[(i, j)] - nt * mx[i] * mx[j]);
        let cxy = Mat::from_fn(d, d, |i, j| sm.xy[(i, j)] - nt * mx[i] * my[j]);
        let trace: f64 = (0..d).map(|i| cxx[(i, i)]).sum();
        let lambda = p.ridge * trace / d as f64;
        let a = Mat::from_fn(d, d, |i, j| cxx[(i, j)] + if i == j { lambda } else { 0.0 });
        let rhs = Mat::from_fn(d, d, |i, j| cxy[(i, j)] - cxx[(i, j)]);
        let Ok(llt) = a.llt(Side::Lower) else { bail!("exit {l}: the hidden states' covariance is singular (raise --ridge)") };
        let dw = llt.solve(&rhs);
        // W = I + dW (d_in x d_out); b = my - mx W
        let wmat = Mat::from_fn(d, d, |i, j| dw[(i, j)] + if i == j { 1.0 } else { 0.0 });
        let b: Vec<f64> = (0..d).map(|j| my[j] - (0..d).map(|i| mx[i] * wmat[(i, j)]).sum::<f64>()).collect();
        // rows of the stored matrix are output dimensions: M[j][i] = W[i][j]
        let mut wbytes = Vec::with_capacity(d * d * 4);
        for j in 0..d {
            for i in 0..d {
                wbytes.extend_from_slice(&(wmat[(i, j)] as f32).to_le_bytes());
            }
        }
        let bbytes: Vec<u8> = b.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
        let m = QMatrix::from_bytes(&format!("exit.{l}.weight"), GgmlType::F32, d, d, &wbytes)?;
        maps.push(Linear::with_bias(m, Some(b.iter().map(|&v| v as f32).collect()))?);
        w.add_tensor(&format!("exit.{l}.weight"), &[d as u64, d as u64], GgmlType::F32, wbytes)?;
        w.add_tensor(&format!("exit.{l}.bias"), &[d as u64], GgmlType::F32, bbytes)?;
    }
    // held-out agreement with the full model
    let (mut agree, mut lens, mut n_held) = (vec![0usize; maps.len()], vec![0usize; maps.len()], 0usize);
    for hi in 0..p.holdout {
        let ci = n_chunks - p.holdout + hi;
        let chunk = &tokens[ci * p.n_ctx..(ci + 1) * p.n_ctx];
        let (xs, y) = hidden(model, chunk, &p.exit_layers)?;
        let n = chunk.len();
        let full = top1(model, &y, n);
        for (e, (x, map)) in xs.iter().zip(&maps).enumerate() {
            let mut mapped = vec![0f32; n * d];
            map.forward(x, n, &mut mapped, &mut Default::default(), crate::ops::matmul::Batch::Whole);
            agree[e] += top1(model, &mapped, n).iter().zip(&full).filter(|(a, b)| a == b).count();
            lens[e] += top1(model, x, n).iter().zip(&full).filter(|(a, b)| a == b).count();
        }
        n_held += n;
        prog.chunk(fit + hi + 1, total);
    }
    let agreement: Vec<f64> = agree.iter().map(|&a| a as f64 / n_held.max(1) as f64).collect();
    w.set(KEY_EXIT_AGREEMENT, Value::f32_array(agreement.iter().map(|&a| a as f32)));
    let reports = p
        .exit_layers
        .iter()
        .enumerate()
        .map(|(e, &exit)| ExitReport { exit, agree: agreement[e], agree_lens: lens[e] as f64 / n_held.max(1) as f64 })
        .collect();
    Ok(reports)
}
