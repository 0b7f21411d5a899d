//! Training a grafted MTP head on the frozen model (`rllama graft --mtp`,
//! feature `train`): candle's autograd runs the head exactly as
//! `model::nextn` does (norms, eh_proj, one decoder block with RoPE and
//! causal attention over the chunk, head norm) and AdamW fits all of its
//! weights. Loss: cross-entropy against the model's own next-token
//! distribution over the draft vocabulary (soft targets from the model's
//! final hidden rows, a distillation), plus the squared distance between
//! the head's and the model's unit-RMS hidden rows.

use super::mtp::HeadWeights;
use crate::model::Model;
use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};

pub struct TrainParams {
    pub epochs: usize,
    pub lr: f64,
    /// Weight of the hidden-row term.
    pub reg: f64,
}

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

/// The head over one sequence: its normed hidden rows (T x d).
fn forward(net: &Net, fz: &Frozen, e: &Tensor, hprev: &Tensor, cos: &Tensor, sin: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
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
    let k = k.unsqueeze(1)?.expand((nkv, g, t, hd))?.contiguous()?.reshape((nh, t, hd))?;
    let v = v.unsqueeze(1)?.expand((nkv, g, t, hd))?.contiguous()?.reshape((nh, t, hd))?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(mask)?;
    let att = candle_nn::ops::softmax(&scores, D::Minus1)?.matmul(&v)?;
    let att = att.transpose(0, 1)?.contiguous()?.reshape((t, nh * hd))?;
    let x = (u + lin(&att, &m[3].0, &m[3].1)?)?;
    let f = rms(&x, Some(net.ffn_norm.as_tensor()), eps)?;
    let ff = (lin(&f, &m[4].0, &m[4].1)?.silu()? * lin(&f, &m[5].0, &m[5].1)?)?;
    let y = (x + lin(&ff, &m[6].0, &m[6].1)?)?;
    rms(&y, Some(net.head_norm.as_tensor()), eps)
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
        let (n, d) = self.target.dims2()?;
        Tensor::cat(&[Tensor::zeros((1, d), DType::F32, self.target.device())?, self.target.narrow(0, 0, n - 1)?], 0)
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

fn causal_mask(t: usize, dev: &Device) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
    Ok(Tensor::from_vec(m, (t, t), dev)?)
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
    let d = c.n_embd;
    let out_w = &model.output().w;
    let mut rows = vec![0f32; vocab.len() * d];
    for (i, &t) in vocab.iter().enumerate() {
        crate::quant::dequantize_row(out_w.ty, out_w.row(t as usize), &mut rows[i * d..(i + 1) * d]);
    }
    let fz = Frozen {
        out: Tensor::from_vec(rows, (vocab.len(), d), &dev)?,
        output_norm: Tensor::from_slice(model.output_norm(), d, &dev)?,
        eps: c.eps as f64,
        n_head: c.n_head,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim_k,
        rope_base: c.rope_base,
        rope_freq_scale: c.rope_freq_scale,
        neox: c.rope_neox,
    };
    let net = Net::new(start, &dev)?;
    let mut opt = AdamW::new(net.vars.clone(), ParamsAdamW { lr: p.lr, weight_decay: 0.0, ..Default::default() })?;
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
            let s = &prep[si];
            let t = s.e.dim(0)?;
            let (cos, sin) = fz.rope(t, &dev)?;
            let mask = causal_mask(t, &dev)?;
            let y = forward(&net, &fz, &s.e, &s.hprev()?, &cos, &sin, &mask)?;
            let logq = candle_nn::ops::log_softmax(&y.matmul(&fz.out.t()?)?, D::Minus1)?;
            let probs = candle_nn::ops::softmax(&s.logits(&fz)?, D::Minus1)?;
            let ce = (probs.mul(&logq)?.sum(D::Minus1)?.mean_all()? * -1.0)?;
            let reg = (rms(&y, None, fz.eps)? - rms(&s.target, None, fz.eps)?)?.sqr()?.mean_all()?;
            let loss = (ce + (reg * p.reg)?)?;
            opt.set_learning_rate(p.lr * lr_factor(step, steps));
            opt.backward_step(&loss)?;
            sum += loss.to_scalar::<f32>()? as f64;
            step += 1;
            prog.step(epoch, step, steps, sum / (i + 1) as f64, agree);
        }
        if !held_prep.is_empty() {
            let (mut hit, mut n) = (0usize, 0usize);
            for (s, top) in held_prep.iter().zip(&held_top) {
                let t = s.e.dim(0)?;
                let (cos, sin) = fz.rope(t, &dev)?;
                let y = forward(&net, &fz, &s.e, &s.hprev()?, &cos, &sin, &causal_mask(t, &dev)?)?;
                let got = y.matmul(&fz.out.t()?)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
                hit += got.iter().zip(top).filter(|(a, b)| a == b).count();
                n += t;
            }
            agree = Some(hit as f64 / n.max(1) as f64);
            prog.step(epoch, step, steps, sum / prep.len().max(1) as f64, agree);
        }
    }
    net.weights(start)
}
