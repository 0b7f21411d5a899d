//! The llama family forward pass (llama, mistral, smollm; qwen2 with QKV bias;
//! gemma3 with Q/K norms, post-norms, GeGLU, sliding-window layers and scaled
//! embeddings): RMSNorm, RoPE, grouped-query attention over an f16 KV cache,
//! gated FFN.

use super::config::FfnAct;
use super::{Config, Outputs};
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::ops::attention::{attend_f16, attend_tiled, FA_TILE};
use crate::ops::matmul::{matmul_q, matmul_q_in_batch, quantize_acts, QMatrix, QuantizedActs};
use crate::ops::norm::rms_norm_rows;
use crate::ops::rope::{rope_apply, rope_cache};
use crate::ops::{add_in_place, geglu, swiglu};
use crate::parallel::{self, SendPtr};
use anyhow::{bail, Result};
use half::f16;
use std::path::Path;
use std::sync::Arc;

struct Layer {
    attn_norm: Vec<f32>,
    wq: QMatrix,
    wk: QMatrix,
    wv: QMatrix,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: QMatrix,
    ffn_norm: Vec<f32>,
    w_gate: QMatrix,
    w_up: QMatrix,
    w_down: QMatrix,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    post_attn_norm: Option<Vec<f32>>,
    post_ffn_norm: Option<Vec<f32>>,
}

pub struct Model {
    pub g: Arc<GgufFile>,
    pub cfg: Config,
    tok_embd: QMatrix,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: QMatrix,
}

fn matrix(g: &GgufFile, name: &str, cols: usize, rows: usize) -> Result<QMatrix> {
    let Some(t) = g.tensor(name) else { bail!("missing tensor {name}") };
    let mut m = QMatrix::from_info(t)?;
    if m.cols != cols || m.rows != rows {
        bail!("tensor {name}: shape {:?}, expected [{cols}, {rows}]", t.dims);
    }
    // token_embd is only read row by row (unless it is also the output, packed below)
    if name != "token_embd.weight" {
        m.pack(g);
    }
    Ok(m)
}

fn vector(g: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let Some(t) = g.tensor(name) else { bail!("missing tensor {name}") };
    if t.n_elements() != n as u64 {
        bail!("tensor {name}: {} elements, expected {n}", t.n_elements());
    }
    let mut out = vec![0.0; n];
    if crate::quant::scalar_kernels(t.ty).is_none() || t.ty.block_elems() > n {
        bail!("tensor {name}: unsupported type {}", t.ty.name());
    }
    crate::quant::dequantize_row(t.ty, g.tensor_data(t), &mut out);
    Ok(out)
}

fn opt_vector(g: &GgufFile, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
    if g.tensor(name).is_some() {
        vector(g, name, n).map(Some)
    } else {
        Ok(None)
    }
}

/// Scratch buffers of one forward call.
#[derive(Default)]
struct Scratch {
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    tmp: Vec<f32>,
    qa: QuantizedActs,
    /// Every row rounded as a single-token step would round it (see `forward_as_steps`).
    as_steps: bool,
    zeros: Vec<usize>,
}

impl Model {
    pub fn load(path: &Path) -> Result<Self> {
        let g = Arc::new(GgufFile::open(path)?);
        Self::from_gguf(g)
    }

    pub fn from_gguf(g: Arc<GgufFile>) -> Result<Self> {
        let cfg = Config::from_gguf(&g)?;
        let (d, hk, hv) = (cfg.n_embd, cfg.head_dim_k, cfg.head_dim_v);
        let tok_embd = matrix(&g, "token_embd.weight", d, cfg.n_vocab)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |s: &str| format!("blk.{i}.{s}");
            layers.push(Layer {
                attn_norm: vector(&g, &p("attn_norm.weight"), d)?,
                wq: matrix(&g, &p("attn_q.weight"), d, cfg.n_head * hk)?,
                wk: matrix(&g, &p("attn_k.weight"), d, cfg.n_head_kv * hk)?,
                wv: matrix(&g, &p("attn_v.weight"), d, cfg.n_head_kv * hv)?,
                bq: opt_vector(&g, &p("attn_q.bias"), cfg.n_head * hk)?,
                bk: opt_vector(&g, &p("attn_k.bias"), cfg.n_head_kv * hk)?,
                bv: opt_vector(&g, &p("attn_v.bias"), cfg.n_head_kv * hv)?,
                wo: matrix(&g, &p("attn_output.weight"), cfg.n_head * hv, d)?,
                ffn_norm: vector(&g, &p("ffn_norm.weight"), d)?,
                w_gate: matrix(&g, &p("ffn_gate.weight"), d, cfg.n_ff)?,
                w_up: matrix(&g, &p("ffn_up.weight"), d, cfg.n_ff)?,
                w_down: matrix(&g, &p("ffn_down.weight"), cfg.n_ff, d)?,
                q_norm: opt_vector(&g, &p("attn_q_norm.weight"), hk)?,
                k_norm: opt_vector(&g, &p("attn_k_norm.weight"), hk)?,
                post_attn_norm: opt_vector(&g, &p("post_attention_norm.weight"), d)?,
                post_ffn_norm: opt_vector(&g, &p("post_ffw_norm.weight"), d)?,
            });
        }
        let output_norm = vector(&g, "output_norm.weight", d)?;
        let output = if g.tensor("output.weight").is_some() {
            matrix(&g, "output.weight", d, cfg.n_vocab)?
        } else {
            let mut o = tok_embd.clone();
            o.pack(&g);
            o
        };
        Ok(Model { g, cfg, tok_embd, layers, output_norm, output })
    }

    pub fn new_cache(&self, n_ctx: usize) -> KvCache {
        let c = &self.cfg;
        KvCache::new(c.n_layer, n_ctx, c.n_head_kv * c.head_dim_k, c.n_head_kv * c.head_dim_v)
    }

    /// Number of parameters (elements of all tensors).
    pub fn n_params(&self) -> u64 {
        self.g.tensors.iter().map(|t| t.n_elements()).sum()
    }

    /// Run `tokens` at positions kv.len.. and return logits (n_vocab each) for
    /// the rows asked for, in that order.
    pub fn forward(&self, tokens: &[u32], kv: &mut KvCache, outputs: &Outputs) -> Result<Vec<f32>> {
        self.forward_impl(tokens, kv, outputs, false)
    }

    /// `forward`, with every matrix product rounded as in a one-token step
    /// (ggml's batch-dependent kernels are not used): the logits of row i
    /// equal those of evaluating the tokens one at a time. Speculative
    /// verification uses it so greedy output does not depend on drafting.
    pub fn forward_as_steps(&self, tokens: &[u32], kv: &mut KvCache, outputs: &Outputs) -> Result<Vec<f32>> {
        self.forward_impl(tokens, kv, outputs, true)
    }

    fn forward_impl(&self, tokens: &[u32], kv: &mut KvCache, outputs: &Outputs, as_steps: bool) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let n = tokens.len();
        if n == 0 {
            bail!("empty batch");
        }
        if kv.len + n > kv.n_ctx {
            bail!("the context is full: {} + {n} tokens exceed the context size {}", kv.len, kv.n_ctx);
        }
        for &t in tokens {
            if t as usize >= c.n_vocab {
                bail!("token id {t} is outside the vocabulary of {}", c.n_vocab);
            }
        }
        let out_rows = outputs.rows(n);
        if out_rows.iter().any(|&r| r >= n) {
            bail!("output row out of range");
        }
        let g = &*self.g;
        let d = c.n_embd;
        let (hk, hv) = (c.head_dim_k, c.head_dim_v);
        let (nh, nkv) = (c.n_head, c.n_head_kv);
        let pos0 = kv.len;
        let mut s = Scratch { as_steps, zeros: vec![0; if as_steps { n } else { 0 }], ..Default::default() };
        let mut x = vec![0.0f32; n * d];
        for (t, &tok) in tokens.iter().enumerate() {
            let row = &mut x[t * d..(t + 1) * d];
            self.tok_embd.dequantize_row(g, tok as usize, row);
            if let Some(s) = c.embd_scale {
                row.iter_mut().for_each(|v| *v *= s);
            }
        }
        let tables = |base: f32, fs: f32| -> Vec<Vec<(f32, f32)>> {
            (0..n)
                .map(|t| {
                    let mut cache = Vec::new();
                    rope_cache(pos0 + t, c.rope_dims, base, fs, &mut cache);
                    cache
                })
                .collect()
        };
        let rope_tab = tables(c.rope_base, c.rope_freq_scale);
        let rope_tab_swa = if c.swa_layers.iter().any(|&b| b) { tables(c.rope_base_swa, c.rope_freq_scale_swa) } else { Vec::new() };
        let scale = if c.q_scale.is_some() { 1.0 } else { 1.0 / (hk as f32).sqrt() };
        let mut n_cur = n; // rows still carried (the last layer keeps only outputs)
        for (il, l) in self.layers.iter().enumerate() {
            let swa = c.swa_layers[il];
            let rope_tab = if swa { &rope_tab_swa } else { &rope_tab };
            s.h.resize(n_cur * d, 0.0);
            rms_norm_rows(&x, &l.attn_norm, c.eps, &mut s.h);
            s.q.resize(n * nh * hk, 0.0);
            s.k.resize(n * nkv * hk, 0.0);
            s.v.resize(n * nkv * hv, 0.0);
            self.mm(&l.wq, &s.h, n, &mut s.qa, &mut s.q, true, s.as_steps.then_some(&s.zeros[..]));
            self.mm(&l.wk, &s.h, n, &mut s.qa, &mut s.k, false, s.as_steps.then_some(&s.zeros[..]));
            self.mm(&l.wv, &s.h, n, &mut s.qa, &mut s.v, false, s.as_steps.then_some(&s.zeros[..]));
            dbg_sum(|| format!("attn_norm-{il}"), &s.h);
            dbg_sum(|| format!("Qcur-{il}"), &s.q);
            dbg_sum(|| format!("Kcur-{il}"), &s.k);
            dbg_sum(|| format!("Vcur-{il}"), &s.v);
            add_bias(&mut s.q, &l.bq);
            add_bias(&mut s.k, &l.bk);
            add_bias(&mut s.v, &l.bv);
            if let Some(w) = &l.q_norm {
                norm_in_place(&mut s.q, w, c.eps, &mut s.tmp);
            }
            if let Some(w) = &l.k_norm {
                norm_in_place(&mut s.k, w, c.eps, &mut s.tmp);
            }
            for t in 0..n {
                for h in 0..nh {
                    let qh = &mut s.q[(t * nh + h) * hk..(t * nh + h + 1) * hk];
                    rope_apply(qh, c.rope_dims, c.rope_neox, &rope_tab[t]);
                    if let Some(qs) = c.q_scale {
                        qh.iter_mut().for_each(|v| *v *= qs);
                    }
                }
                for h in 0..nkv {
                    rope_apply(&mut s.k[(t * nkv + h) * hk..(t * nkv + h + 1) * hk], c.rope_dims, c.rope_neox, &rope_tab[t]);
                }
                let kr = kv.k_row_mut(il, pos0 + t);
                for (o, &v) in kr.iter_mut().zip(&s.k[t * nkv * hk..(t + 1) * nkv * hk]) {
                    *o = f16::from_f32(v).to_bits();
                }
                let vr = kv.v_row_mut(il, pos0 + t);
                for (o, &v) in vr.iter_mut().zip(&s.v[t * nkv * hv..(t + 1) * nkv * hv]) {
                    *o = f16::from_f32(v).to_bits();
                }
            }
            // which token rows continue past this layer's attention
            let last = il + 1 == self.layers.len();
            let rows: Vec<usize> = if last { out_rows.clone() } else { (0..n).collect() };
            let nr = rows.len();
            s.att.resize(nr * nh * hv, 0.0);
            let (kl, vl) = (kv.k_layer(il), kv.v_layer(il));
            let (kdim, vdim) = (kv.k_dim, kv.v_dim);
            let group = nh / nkv;
            let q = &s.q;
            let first_pos = |t: usize| if swa { (pos0 + t + 1).saturating_sub(c.swa_window) } else { 0 };
            let k_at = |kvh: usize| move |p: usize| &kl[p * kdim + kvh * hk..p * kdim + (kvh + 1) * hk];
            let v_at = |kvh: usize| move |p: usize| &vl[p * vdim + kvh * hv..p * vdim + (kvh + 1) * hv];
            if n >= FA_TILE {
                // ggml's tiled f32 kernel: per head, blocks of FA_TILE query rows
                let blocks: Vec<(usize, usize)> = (0..nh).flat_map(|h| (0..nr).step_by(FA_TILE).map(move |r0| (h, r0))).collect();
                let att = SendPtr(s.att.as_mut_ptr());
                parallel::for_each(blocks.len(), |b| {
                    let (h, r0) = blocks[b];
                    let rr = &rows[r0..(r0 + FA_TILE).min(nr)];
                    let qs: Vec<&[f32]> = rr.iter().map(|&t| &q[(t * nh + h) * hk..(t * nh + h + 1) * hk]).collect();
                    let ranges: Vec<_> = rr.iter().map(|&t| first_pos(t)..pos0 + t + 1).collect();
                    let mut o = vec![0f32; rr.len() * hv];
                    attend_tiled(&qs, &ranges, k_at(h / group), v_at(h / group), scale, hv, &mut o);
                    for (k, ov) in o.chunks(hv).enumerate() {
                        let ri = r0 + k;
                        // SAFETY: (row, head) slots are disjoint across items and inside s.att.
                        unsafe { std::ptr::copy_nonoverlapping(ov.as_ptr(), att.get().add((ri * nh + h) * hv), hv) };
                    }
                });
            } else {
                let att = SendPtr(s.att.as_mut_ptr());
                parallel::for_each(nr * nh, |i| {
                    thread_local! {
                        static SCRATCH: std::cell::RefCell<(Vec<u16>, Vec<u16>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
                    }
                    let (ri, h) = (i / nh, i % nh);
                    let t = rows[ri];
                    let qv = &q[(t * nh + h) * hk..(t * nh + h + 1) * hk];
                    // SAFETY: slot i of s.att, disjoint across items.
                    let out = unsafe { std::slice::from_raw_parts_mut(att.get().add(i * hv), hv) };
                    SCRATCH.with_borrow_mut(|(qh, acc)| attend_f16(qv, first_pos(t)..pos0 + t + 1, k_at(h / group), v_at(h / group), scale, 0.0, out, qh, acc));
                });
            }
            dbg_sum(|| format!("kqv_out-{il}"), &s.att);
            s.o.resize(nr * d, 0.0);
            quantize_acts(&l.wo, &s.att[..nr * l.wo.cols], nr, &mut s.qa);
            let batch = if s.as_steps { (1, &s.zeros[..nr]) } else { (n, &rows[..]) };
            matmul_q_in_batch(g, &l.wo, &s.qa, &mut s.o[..nr * d], Some(batch));
            if last && nr != n_cur {
                let mut nx = vec![0.0f32; nr * d];
                for (i, &r) in rows.iter().enumerate() {
                    nx[i * d..(i + 1) * d].copy_from_slice(&x[r * d..(r + 1) * d]);
                }
                x = nx;
                n_cur = nr;
            }
            if let Some(w) = &l.post_attn_norm {
                norm_in_place(&mut s.o, w, c.eps, &mut s.tmp);
            }
            add_in_place(&mut x, &s.o);
            // feed-forward
            s.h.resize(n_cur * d, 0.0);
            rms_norm_rows(&x, &l.ffn_norm, c.eps, &mut s.h);
            s.gate.resize(n_cur * c.n_ff, 0.0);
            s.up.resize(n_cur * c.n_ff, 0.0);
            self.mm(&l.w_gate, &s.h, n_cur, &mut s.qa, &mut s.gate, true, s.as_steps.then_some(&s.zeros[..]));
            self.mm(&l.w_up, &s.h, n_cur, &mut s.qa, &mut s.up, false, s.as_steps.then_some(&s.zeros[..]));
            dbg_sum(|| format!("ffn_norm-{il}"), &s.h);
            dbg_sum(|| format!("ffn_gate-{il}"), &s.gate);
            dbg_sum(|| format!("ffn_up-{il}"), &s.up);
            match c.ffn_act {
                FfnAct::Silu => swiglu(&mut s.gate, &s.up),
                FfnAct::Gelu => geglu(&mut s.gate, &s.up),
            }
            dbg_sum(|| format!("ffn_swiglu-{il}"), &s.gate);
            s.o.resize(n_cur * d, 0.0);
            self.mm(&l.w_down, &s.gate, n_cur, &mut s.qa, &mut s.o, true, s.as_steps.then_some(&s.zeros[..]));
            dbg_sum(|| format!("ffn_out-{il}"), &s.o);
            if let Some(w) = &l.post_ffn_norm {
                norm_in_place(&mut s.o, w, c.eps, &mut s.tmp);
            }
            add_in_place(&mut x, &s.o);
            dbg_sum(|| format!("l_out-{il}"), &x);
        }
        kv.len = pos0 + n;
        s.h.resize(n_cur * d, 0.0);
        rms_norm_rows(&x, &self.output_norm, c.eps, &mut s.h);
        let mut logits = vec![0.0f32; n_cur * c.n_vocab];
        self.mm(&self.output, &s.h, n_cur, &mut s.qa, &mut logits, true, s.as_steps.then_some(&s.zeros[..]));
        if c.logit_softcap > 0.0 {
            let (inv, cap) = (1.0 / c.logit_softcap, c.logit_softcap);
            logits.iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
        }
        dbg_sum(|| "result_output".to_string(), &logits);
        Ok(logits)
    }

    /// out = W x for `n` rows of x; `fresh` says x changed since the last call,
    /// otherwise quantized activations are reused when the format matches.
    #[allow(clippy::too_many_arguments)]
    fn mm(&self, w: &QMatrix, x: &[f32], n: usize, qa: &mut QuantizedActs, out: &mut [f32], fresh: bool, as_steps: Option<&[usize]>) {
        if fresh || qa.act != Some(w.kern.act) || qa.n != n {
            quantize_acts(w, &x[..n * w.cols], n, qa);
        }
        match as_steps {
            Some(z) => matmul_q_in_batch(&self.g, w, qa, &mut out[..n * w.rows], Some((1, &z[..n]))),
            None => matmul_q(&self.g, w, qa, &mut out[..n * w.rows]),
        }
    }
}

/// RMS-normalize each `w.len()` row of `x` in place (`tmp` is scratch).
fn norm_in_place(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut Vec<f32>) {
    tmp.clear();
    tmp.extend_from_slice(x);
    rms_norm_rows(tmp, w, eps, x);
}

fn add_bias(x: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        for row in x.chunks_mut(b.len()) {
            add_in_place(row, b);
        }
    }
}

/// With RLLAMA_DEBUG_SUMS set, print each intermediate's sum (compare with
/// llama-eval-callback). The variable is read once.
/// Debug output of an intermediate tensor (RLLAMA_DUMP_DIR / RLLAMA_DEBUG_SUMS);
/// the name is built only when one of them is set.
fn dbg_sum(name: impl Fn() -> String, v: &[f32]) {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static DIR: std::sync::OnceLock<Option<std::ffi::OsString>> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| std::env::var_os("RLLAMA_DUMP_DIR"));
    let on = *ON.get_or_init(|| std::env::var_os("RLLAMA_DEBUG_SUMS").is_some());
    if dir.is_none() && !on {
        return;
    }
    let name = name();
    if let Some(dir) = dir {
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let _ = std::fs::write(std::path::Path::new(dir).join(format!("{name}.bin")), bytes);
    }
    if on {
        let s: f64 = v.iter().map(|&x| x as f64).sum();
        eprintln!("{name:>20} sum = {s:.6}  first = {:?}", &v[..3.min(v.len())]);
    }
}
