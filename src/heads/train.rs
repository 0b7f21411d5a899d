//! Training a grafted MTP head on the frozen model (`rllama graft --mtp`,
//! feature `train`): candle's autograd runs the head exactly as
//! `model::nextn` does (norms, eh_proj, one decoder block with RoPE and
//! causal attention over the chunk, head norm) and AdamW fits all of its
//! weights. Loss: cross-entropy against the model's own next-token
//! distribution over the draft vocabulary (soft targets from the model's
//! final hidden rows, a distillation), plus the squared distance between
//! the head's and the model's unit-RMS hidden rows.
//!
//! With `depth` > 1 the head is also trained as drafting chains it
//! (EAGLE-3's training-time test): draft position j at p takes the head's
//! own output row of position j - 1 at p - 1 (not the model's) and attends
//! to what the head's cache holds then: the first pass's keys up to
//! p - j + 1 and the chained passes' keys at p - j + 2 ..= p. Its target is
//! the model's distribution at p, as for the first position. Chained
//! positions are trained on one chain start in `CHAIN_EVERY` (rotating):
//! Qwen 0.5B, 1 epoch, depth 2: held-out answers 39.3/25.7/21.7% per draft
//! position (every start: 39.3/26.5/21.8%; depth 1: 38.8/21.3/16.9%), the
//! training 1.35x depth 1's time (every start: 1.65x).

use super::mtp::HeadWeights;
use super::train_ops::{Adam, FrozenProj, SoftCrossEntropy};
use crate::model::Model;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};

pub struct TrainParams {
    pub epochs: usize,
    pub lr: f64,
    /// Weight of the hidden-row term.
    pub reg: f64,
    /// Draft positions trained (1: the first only).
    pub depth: usize,
}

/// Each further draft position's loss weighs this much of the one before.
const DEPTH_WEIGHT: f64 = 0.7;

/// One training or held-out sequence: its tokens and the model's final
/// hidden rows (before the output norm).
pub struct Sample {
    pub tokens: Vec<u32>,
    pub f: Vec<f32>,
}

/// Progress: (epoch, step, steps, mean loss so far, held-out agreement of the last epoch).
pub trait TrainProgress {
    fn step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64, agree: Option<f64>);
}

struct Net {
    vars: Vec<Var>,
    eh: Var,
    enorm: Var,
    hnorm: Var,
    head_norm: Var,
    attn_norm: Var,
    ffn_norm: Var,
    /// q, k, v, o, gate, up, down with their biases.
    mats: Vec<(Var, Option<Var>)>,
}

fn var(v: &[f32], shape: (usize, usize), dev: &Device) -> Result<Var> {
    Ok(Var::from_slice(v, shape, dev)?)
}

fn vec_var(v: &[f32], dev: &Device) -> Result<Var> {
    Ok(Var::from_slice(v, v.len(), dev)?)
}

fn rms(x: &Tensor, w: Option<&Tensor>, eps: f64) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let y = x.broadcast_div(&(ms + eps)?.sqrt()?)?;
    match w {
        Some(w) => y.broadcast_mul(w),
        None => Ok(y),
    }
}

fn lin(x: &Tensor, w: &Var, b: &Option<Var>) -> candle_core::Result<Tensor> {
    let y = x.matmul(&w.as_tensor().t()?)?;
    match b {
        Some(b) => y.broadcast_add(b.as_tensor()),
        None => Ok(y),
    }
}

impl Net {
    fn new(h: &HeadWeights, dev: &Device) -> Result<Net> {
        let d = h.enorm.len();
        let eh = var(&h.eh_proj, (d, 2 * d), dev)?;
        let (enorm, hnorm, head_norm) = (vec_var(&h.enorm, dev)?, vec_var(&h.hnorm, dev)?, vec_var(&h.head_norm, dev)?);
        let (attn_norm, ffn_norm) = (vec_var(&h.attn_norm, dev)?, vec_var(&h.ffn_norm, dev)?);
        let mut mats = Vec::new();
        for name in ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
            let Some(m) = h.mats.iter().find(|m| m.0 == name) else { bail!("mtp training: no {name}") };
            let b = match &m.4 {
                Some(b) => Some(vec_var(b, dev)?),
                None => None,
            };
            mats.push((var(&m.3, (m.2, m.1), dev)?, b));
        }
        let mut vars = vec![eh.clone(), enorm.clone(), hnorm.clone(), head_norm.clone(), attn_norm.clone(), ffn_norm.clone()];
        for (w, b) in &mats {
            vars.push(w.clone());
            vars.extend(b.clone());
        }
        Ok(Net { vars, eh, enorm, hnorm, head_norm, attn_norm, ffn_norm, mats })
    }

    /// Back into f32 rows.
    fn weights(&self, start: &HeadWeights) -> Result<HeadWeights> {
        let flat = |v: &Var| -> Result<Vec<f32>> { Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?) };
        let mut h = start.clone();
        h.eh_proj = flat(&self.eh)?;
        h.enorm = flat(&self.enorm)?;
        h.hnorm = flat(&self.hnorm)?;
        h.head_norm = flat(&self.head_norm)?;
        h.attn_norm = flat(&self.attn_norm)?;
        h.ffn_norm = flat(&self.ffn_norm)?;
        for (m, (w, b)) in h.mats.iter_mut().zip(&self.mats) {
            m.3 = flat(w)?;
            if let Some(b) = b {
                m.4 = Some(flat(b)?);
            }
        }
        Ok(h)
    }
}

/// Fixed tensors of the model the head needs.
struct Frozen {
    /// Output rows of the draft vocabulary (K x d).
    out: Tensor,
    output_norm: Tensor,
    eps: f64,
    n_head: usize,
    n_head_kv: usize,
    head_dim: usize,
    rope_base: f32,
    rope_freq_scale: f32,
    neox: bool,
}

impl Frozen {
    /// The model's output rows of `vocab` and what the block needs.
    fn new(model: &Model, vocab: &[u32], dev: &Device) -> Result<Frozen> {
        let c = &model.cfg;
        let d = c.n_embd;
        let out_w = &model.output().w;
        let mut rows = vec![0f32; vocab.len() * d];
        for (i, &t) in vocab.iter().enumerate() {
            crate::quant::dequantize_row(out_w.ty, out_w.row(t as usize), &mut rows[i * d..(i + 1) * d]);
        }
        Ok(Frozen {
            out: Tensor::from_vec(rows, (vocab.len(), d), dev)?,
            output_norm: Tensor::from_slice(model.output_norm(), d, dev)?,
            eps: c.eps as f64,
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim_k,
            rope_base: c.rope_base,
            rope_freq_scale: c.rope_freq_scale,
            neox: c.rope_neox,
        })
    }

    /// cos and sin (T x hd/2) for positions 0..t, as `ops::rope` computes them.
    fn rope(&self, t: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.head_dim / 2;
        let (mut c, mut s) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        let mut cache = Vec::new();
        for p in 0..t {
            crate::ops::rope::rope_cache(p, self.head_dim, self.rope_base, self.rope_freq_scale, &mut cache);
            c.extend(cache.iter().map(|x| x.0));
            s.extend(cache.iter().map(|x| x.1));
        }
        Ok((Tensor::from_vec(c, (t, half), dev)?, Tensor::from_vec(s, (t, half), dev)?))
    }

    /// Rotate (heads, T, hd) rows.
    fn rotate(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let (h, t, hd) = x.dims3()?;
        let half = hd / 2;
        if self.neox {
            let (x1, x2) = (x.narrow(2, 0, half)?, x.narrow(2, half, half)?);
            let (c, s) = (cos.unsqueeze(0)?, sin.unsqueeze(0)?);
            let a = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
            let b = (x1.broadcast_mul(&s)? + x2.broadcast_mul(&c)?)?;
            Tensor::cat(&[a, b], 2)
        } else {
            let xp = x.reshape((h, t, half, 2))?;
            let (x1, x2) = (xp.narrow(3, 0, 1)?, xp.narrow(3, 1, 1)?);
            let (c, s) = (cos.unsqueeze(0)?.unsqueeze(3)?, sin.unsqueeze(0)?.unsqueeze(3)?);
            let a = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
            let b = (x1.broadcast_mul(&s)? + x2.broadcast_mul(&c)?)?;
            Tensor::cat(&[a, b], 3)?.reshape((h, t, hd))
        }
    }
}

/// Keys and values (heads, T, hd) a pass leaves in the head's cache.
struct Kv {
    k: Tensor,
    v: Tensor,
}

/// The head over one sequence: its normed hidden rows (T x d) and its keys
/// and values. `past`: keys of earlier passes the queries also see
/// (`mask` covers them first, then this pass's own).
#[allow(clippy::too_many_arguments)]
fn forward(
    net: &Net,
    fz: &Frozen,
    e: &Tensor,
    hprev: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: &Tensor,
    past: Option<&Kv>,
) -> candle_core::Result<(Tensor, Kv)> {
    let eps = fz.eps;
    let cat = Tensor::cat(&[rms(e, Some(net.enorm.as_tensor()), eps)?, rms(hprev, Some(net.hnorm.as_tensor()), eps)?], 1)?;
    let u = cat.matmul(&net.eh.as_tensor().t()?)?;
    let t = u.dim(0)?;
    let (nh, nkv, hd) = (fz.n_head, fz.n_head_kv, fz.head_dim);
    let a = rms(&u, Some(net.attn_norm.as_tensor()), eps)?;
    let m = &net.mats;
    let q = lin(&a, &m[0].0, &m[0].1)?.reshape((t, nh, hd))?.transpose(0, 1)?.contiguous()?;
    let k = lin(&a, &m[1].0, &m[1].1)?.reshape((t, nkv, hd))?.transpose(0, 1)?.contiguous()?;
    let v = lin(&a, &m[2].0, &m[2].1)?.reshape((t, nkv, hd))?.transpose(0, 1)?.contiguous()?;
    let q = fz.rotate(&q, cos, sin)?;
    let k = fz.rotate(&k, cos, sin)?;
    let g = nh / nkv;
    let own = Kv {
        k: k.unsqueeze(1)?.expand((nkv, g, t, hd))?.contiguous()?.reshape((nh, t, hd))?,
        v: v.unsqueeze(1)?.expand((nkv, g, t, hd))?.contiguous()?.reshape((nh, t, hd))?,
    };
    let (k, v) = match past {
        Some(p) => (Tensor::cat(&[&p.k, &own.k], 1)?, Tensor::cat(&[&p.v, &own.v], 1)?),
        None => (own.k.clone(), own.v.clone()),
    };
    let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(mask)?;
    let att = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
    let att = att.transpose(0, 1)?.contiguous()?.reshape((t, nh * hd))?;
    let x = (u + lin(&att, &m[3].0, &m[3].1)?)?;
    let f = rms(&x, Some(net.ffn_norm.as_tensor()), eps)?;
    let ff = (lin(&f, &m[4].0, &m[4].1)?.silu()? * lin(&f, &m[5].0, &m[5].1)?)?;
    let y = (x + lin(&ff, &m[6].0, &m[6].1)?)?;
    Ok((rms(&y, Some(net.head_norm.as_tensor()), eps)?, own))
}

/// Rows shifted down one position (zeros at 0): the next position's input.
fn shifted(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, d) = x.dims2()?;
    Tensor::cat(&[Tensor::zeros((1, d), DType::F32, x.device())?, x.narrow(0, 0, n - 1)?], 0)
}

/// Per-sequence fixed inputs: embeddings and the model's target rows
/// (normed). The previous rows and the target distribution are derived
/// per step (a distribution over the draft vocabulary is 64 KB a token).
struct Prepared {
    e: Tensor,
    target: Tensor,
}

impl Prepared {
    /// The previous position's target rows (zeros at 0): the head's input.
    fn hprev(&self) -> candle_core::Result<Tensor> {
        shifted(&self.target)
    }

    /// The model's logits over the draft vocabulary.
    fn logits(&self, fz: &Frozen) -> candle_core::Result<Tensor> {
        self.target.matmul(&fz.out.t()?)
    }
}

fn prepare(model: &Model, fz: &Frozen, s: &Sample, dev: &Device) -> Result<Prepared> {
    let d = model.cfg.n_embd;
    let n = s.tokens.len();
    let mut sc = crate::model::Scratch::default();
    model.embed(&s.tokens, &mut sc)?;
    let e = Tensor::from_vec(sc.x.clone(), (n, d), dev)?;
    let f = Tensor::from_vec(s.f.clone(), (n, d), dev)?;
    let target = rms(&f, Some(&fz.output_norm), fz.eps)?;
    Ok(Prepared { e, target })
}

/// The first pass's attention mask over a sequence of `t`: causal.
fn causal_mask(t: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
    Ok(Tensor::from_vec(m, (t, t), dev)?)
}

/// The attention mask of chained pass `j` (2-based: draft position j) over
/// a sequence of `t`, for chains starting at `starts` (ascending, none
/// at 0): its query for chain b sits at p = b + j - 2 and sees what the
/// drafting cache holds then: the first pass's keys up to b - 1 and the
/// key of chain b in each pass 2..=j (keys side by side: the first pass's
/// `t`, then each chained pass's `starts.len()`).
fn chain_mask(t: usize, starts: &[usize], j: usize, dev: &Device) -> Result<Tensor> {
    let n = starts.len();
    let w = t + (j - 1) * n;
    let mut m = vec![f32::NEG_INFINITY; n * w];
    for (r, &b) in starts.iter().enumerate() {
        let row = &mut m[r * w..(r + 1) * w];
        row[..b].fill(0.0);
        for i in 2..=j {
            row[t + (i - 2) * n + r] = 0.0;
        }
    }
    Ok(Tensor::from_vec(m, (n, w), dev)?)
}

/// Chains trained per position of a sequence beyond the first draft
/// position: one in `CHAIN_EVERY` (a chained pass costs as much as the first
/// over the same rows).
const CHAIN_EVERY: usize = 2;

/// One pass of the head over a sequence: the positions its rows stand at
/// (None: every position) and its rows.
struct Pass {
    at: Option<Tensor>,
    y: Tensor,
}

/// The head's passes over one sequence for draft positions `1..=depth`;
/// the chained ones over every `CHAIN_EVERY`-th chain start from
/// `1 + offset % CHAIN_EVERY`. Gradients flow only through each pass's own
/// computation (its inputs from earlier passes are detached).
fn passes(net: &Net, fz: &Frozen, s: &Prepared, depth: usize, offset: usize) -> candle_core::Result<Vec<Pass>> {
    let dev = s.e.device();
    let wrap = candle_core::Error::wrap;
    let t = s.e.dim(0)?;
    let (cos, sin) = fz.rope(t, dev).map_err(wrap)?;
    let (y1, kv1) = forward(net, fz, &s.e, &s.hprev()?, &cos, &sin, &causal_mask(t, dev).map_err(wrap)?, None)?;
    // chains b: draft position j at b + j - 2 on the head's own rows
    let starts: Vec<usize> = (1 + offset % CHAIN_EVERY..(t + 2).saturating_sub(depth)).step_by(CHAIN_EVERY).collect();
    let mut out = vec![Pass { at: None, y: y1.clone() }];
    if depth < 2 || starts.is_empty() {
        return Ok(out);
    }
    let rows = |shift: usize| Tensor::new(starts.iter().map(|&b| (b + shift - 1) as u32).collect::<Vec<_>>(), dev);
    let mut hprev = y1.detach().index_select(&rows(0)?, 0)?;
    let mut past = Kv { k: kv1.k.detach(), v: kv1.v.detach() };
    for j in 2..=depth {
        let at = rows(j - 1)?;
        let mask = chain_mask(t, &starts, j, dev).map_err(wrap)?;
        let (y, own) = forward(net, fz, &s.e.index_select(&at, 0)?, &hprev, &cos.index_select(&at, 0)?, &sin.index_select(&at, 0)?, &mask, Some(&past))?;
        if j < depth {
            hprev = y.detach();
            past = Kv { k: Tensor::cat(&[&past.k, &own.k.detach()], 1)?, v: Tensor::cat(&[&past.v, &own.v.detach()], 1)? };
        }
        out.push(Pass { at: Some(at), y });
    }
    Ok(out)
}

/// The head's loss on one sequence: each pass's, draft position j's weighed
/// `DEPTH_WEIGHT^(j-1)`.
fn loss(net: &Net, fz: &Frozen, s: &Prepared, depth: usize, reg: f64, offset: usize) -> candle_core::Result<Tensor> {
    let probs = candle_nn::ops::softmax_last_dim(&s.logits(fz)?)?;
    let target = rms(&s.target, None, fz.eps)?;
    let mut total: Option<Tensor> = None;
    let mut weight = 1.0;
    for p in passes(net, fz, s, depth, offset)? {
        let (probs, target) = match &p.at {
            Some(at) => (probs.index_select(at, 0)?, target.index_select(at, 0)?),
            None => (probs.clone(), target.clone()),
        };
        let logits = p.y.contiguous()?.apply_op1(FrozenProj(fz.out.clone()))?;
        let ce = logits.apply_op2(&probs.contiguous()?, SoftCrossEntropy)?.mean_all()?;
        let r = (rms(&p.y, None, fz.eps)? - target)?.sqr()?.mean_all()?;
        let term = ((ce + (r * reg)?)? * weight)?;
        total = Some(match total {
            Some(a) => (a + term)?,
            None => term,
        });
        weight *= DEPTH_WEIGHT;
    }
    total.ok_or_else(|| candle_core::Error::Msg("mtp training: no pass".into()))
}

/// The head's rows (normed) on `s` as training computes them, per draft
/// position 1..=depth: the positions they stand at and the rows (chains
/// from `offset` as in `passes`). Drafting must compute the same rows.
pub fn pass_rows(model: &Model, head: &HeadWeights, s: &Sample, depth: usize, offset: usize) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let dev = Device::Cpu;
    let fz = Frozen::new(model, &[], &dev)?;
    let net = Net::new(head, &dev)?;
    let t = s.tokens.len();
    let mut out = Vec::new();
    for p in passes(&net, &fz, &prepare(model, &fz, s, &dev)?, depth, offset)? {
        let at = match p.at {
            Some(at) => at.to_vec1::<u32>()?.into_iter().map(|i| i as usize).collect(),
            None => (0..t).collect(),
        };
        out.push((at, p.y.flatten_all()?.to_vec1::<f32>()?));
    }
    Ok(out)
}

/// While alive, freed memory stays in the process's heap. candle allocates
/// every intermediate tensor afresh (tens of MB each for a 512-token
/// chunk); glibc serves such sizes with new mmap'd pages, which the kernel
/// zeroes on first touch, and unmaps them when freed: with that, page
/// faults and zeroing took half the training time (Qwen 1.5B, 2 epochs of
/// 14 chunks: 158 s, 75 s with freed memory kept). Dropping it restores
/// glibc's defaults and returns the free memory to the system.
struct KeepFreedMemory;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod malloc_tuning {
    /// glibc's defaults (mallopt(3)).
    pub const MMAP_MAX: i32 = 65536;
    pub const TRIM_THRESHOLD: i32 = 128 * 1024;
    /// Heap growth at a time while training.
    pub const TOP_PAD: i32 = 256 << 20;
}

impl KeepFreedMemory {
    fn new() -> Self {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
            libc::mallopt(libc::M_TOP_PAD, malloc_tuning::TOP_PAD);
        }
        KeepFreedMemory
    }
}

impl Drop for KeepFreedMemory {
    fn drop(&mut self) {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: as in new; malloc_trim releases free heap memory.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, malloc_tuning::MMAP_MAX);
            libc::mallopt(libc::M_TRIM_THRESHOLD, malloc_tuning::TRIM_THRESHOLD);
            libc::mallopt(libc::M_TOP_PAD, 0);
            libc::malloc_trim(0);
        }
    }
}

/// Share of the learning rate always kept at the end of the schedule.
const LR_FLOOR: f64 = 0.1;

/// The learning rate's factor at `step` of `steps`: a cosine from 1 down to
/// `LR_FLOOR`.
fn lr_factor(step: usize, steps: usize) -> f64 {
    let x = step as f64 / steps.max(1) as f64;
    LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + (std::f64::consts::PI * x).cos())
}

/// Train from `start` on `data`; held-out agreement (draft vocabulary, first
/// draft position) after each epoch on `held`.
pub fn train(
    model: &Model,
    start: &HeadWeights,
    data: &[Sample],
    held: &[Sample],
    vocab: &[u32],
    p: &TrainParams,
    prog: &mut dyn TrainProgress,
) -> Result<HeadWeights> {
    let c = &model.cfg;
    if c.rope_dims != c.head_dim_k || c.head_dim_k != c.head_dim_v || c.q_scale.is_some() || !c.n_head.is_multiple_of(c.n_head_kv) {
        bail!("training an MTP head supports llama and qwen2 style blocks (this is {})", c.arch);
    }
    if !start.extra_norms.is_empty() || !matches!(c.ffn_act, crate::model::FfnAct::Silu) {
        bail!("training an MTP head supports llama and qwen2 style blocks (this is {})", c.arch);
    }
    let dev = Device::Cpu;
    let _heap = KeepFreedMemory::new();
    let fz = Frozen::new(model, vocab, &dev)?;
    let net = Net::new(start, &dev)?;
    let mut opt = Adam::new(net.vars.clone(), p.lr);
    let prep: Vec<Prepared> = data.iter().map(|s| prepare(model, &fz, s, &dev)).collect::<Result<_>>()?;
    let held_prep: Vec<Prepared> = held.iter().map(|s| prepare(model, &fz, s, &dev)).collect::<Result<_>>()?;
    // the model's choices on the held-out sequences, for every epoch's report
    let held_top: Vec<Vec<u32>> = held_prep.iter().map(|s| s.logits(&fz)?.argmax(D::Minus1)?.to_vec1::<u32>()).collect::<candle_core::Result<_>>()?;
    let mut agree = None;
    let steps = prep.len() * p.epochs;
    let mut step = 0;
    let mut order: Vec<usize> = (0..prep.len()).collect();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(7);
    for epoch in 0..p.epochs {
        rand::seq::SliceRandom::shuffle(&mut order[..], &mut rng);
        let mut sum = 0.0;
        for (i, &si) in order.iter().enumerate() {
            let loss = loss(&net, &fz, &prep[si], p.depth, p.reg, step)?;
            opt.lr = p.lr * lr_factor(step, steps);
            opt.backward_step(&loss)?;
            sum += loss.to_scalar::<f32>()? as f64;
            step += 1;
            prog.step(epoch, step, steps, sum / (i + 1) as f64, agree);
        }
        if !held_prep.is_empty() {
            let (mut hit, mut n) = (0usize, 0usize);
            for (s, top) in held_prep.iter().zip(&held_top) {
                // the first draft position only
                let y = &passes(&net, &fz, s, 1, 0)?[0].y;
                let got = y.matmul(&fz.out.t()?)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
                hit += got.iter().zip(top).filter(|(a, b)| a == b).count();
                n += got.len();
            }
            agree = Some(hit as f64 / n.max(1) as f64);
            prog.step(epoch, step, steps, sum / prep.len().max(1) as f64, agree);
        }
    }
    net.weights(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which keys each query of chained pass `j` sees: (pass, position).
    fn seen(t: usize, starts: &[usize], j: usize) -> Vec<Vec<(usize, usize)>> {
        let m = chain_mask(t, starts, j, &Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let key = |c: usize| if c < t { (1, c) } else { ((c - t) / starts.len() + 2, starts[(c - t) % starts.len()] + (c - t) / starts.len()) };
        m.iter().map(|row| (0..row.len()).filter(|&c| row[c] == 0.0).map(key).collect()).collect()
    }

    #[test]
    fn chain_masks_see_what_the_drafting_cache_holds() {
        // second position at p = b: the history's keys up to b - 1, its own at b
        assert_eq!(seen(5, &[1, 3], 2), vec![vec![(1, 0), (2, 1)], vec![(1, 0), (1, 1), (1, 2), (2, 3)]]);
        // third at p = b + 1: history up to b - 1, the second draft's key at b, its own at b + 1
        assert_eq!(seen(5, &[2], 3), vec![vec![(1, 0), (1, 1), (2, 2), (3, 3)]]);
    }
}
