//! Multi-token-prediction (nextn) blocks in llama.cpp's layout: block `il`
//! (after the main blocks) holds a whole decoder block (`blk.{il}.attn_*`,
//! `blk.{il}.ffn_*`) plus `blk.{il}.nextn.eh_proj` ({2 n_embd, n_embd}),
//! `.enorm`, `.hnorm` and optionally `.shared_head_norm` ({n_embd}); the key
//! `{arch}.nextn_predict_layers` counts them. For the token x at position p
//! and the hidden row h of position p - 1 (the target's final hidden row
//! after its output norm, or the head's own previous output):
//! u = eh_proj([enorm(embed(x)); hnorm(h)]), then the block at position p
//! (its own keys and values), then shared_head_norm (the model's output norm
//! when absent) gives this head's hidden row, and the model's output matrix
//! its logits: a guess at the token of position p + 1.

use super::weights::{matrix, opt_vector, vector, Layer};
use super::{Config, Model, Rounding, Scratch};
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::ops::linear::Linear;
use crate::ops::matmul::Batch;
use crate::ops::norm::rms_norm_rows;
use anyhow::Result;
use std::sync::Arc;

pub struct Nextn {
    /// Its block index (the cache layer it writes).
    pub il: usize,
    pub block: Layer,
    pub eh_proj: Linear,
    pub enorm: Vec<f32>,
    pub hnorm: Vec<f32>,
    pub head_norm: Option<Vec<f32>>,
}

impl Nextn {
    /// The nextn block `il` of `g`.
    pub fn load(g: &Arc<GgufFile>, cfg: &Config, il: usize) -> Result<Nextn> {
        let d = cfg.n_embd;
        let p = |s: &str| format!("blk.{il}.nextn.{s}");
        // its feed-forward width: the gate's rows (a grafted head's may be
        // narrower than the model's; the shapes are checked as it loads)
        let gate = format!("blk.{il}.ffn_gate.weight");
        let n_ff = match g.tensor(&gate).map(|t| t.dims.as_slice()) {
            Some(&[_, rows]) if rows >= 1 && rows <= cfg.n_ff as u64 => rows as usize,
            _ => cfg.n_ff,
        };
        Ok(Nextn {
            il,
            block: Layer::load_ff(g, cfg, il, n_ff)?,
            eh_proj: Linear::new(matrix(g, &p("eh_proj.weight"), 2 * d, d, true)?),
            enorm: vector(g, &p("enorm.weight"), d)?,
            hnorm: vector(g, &p("hnorm.weight"), d)?,
            head_norm: opt_vector(g, &p("shared_head_norm.weight"), d)?,
        })
    }

    /// A cache for this block (layer `il` of it; the layers before it are
    /// never written, so they take no memory).
    pub fn new_cache(&self, model: &Model, n_ctx: usize) -> Result<KvCache> {
        let c = &model.cfg;
        KvCache::new(self.il + 1, n_ctx, c.n_head_kv * c.head_dim_k, c.n_head_kv * c.head_dim_v)
    }

    /// `tokens` at positions `pos0..`, paired with the hidden rows `h` (one
    /// per token: of the position before each). Leaves this head's hidden
    /// rows (normed) in `s.x`.
    pub fn forward(&self, model: &Model, tokens: &[u32], h: &[f32], pos0: usize, kv: &mut KvCache, s: &mut Scratch) -> Result<()> {
        let (d, eps) = (model.cfg.n_embd, model.cfg.eps);
        let n = tokens.len();
        anyhow::ensure!(h.len() == n * d, "nextn: {} hidden rows for {n} tokens", h.len() / d);
        model.embed(tokens, s)?;
        let mut cat = vec![0f32; n * 2 * d];
        let (mut e, mut hn) = (vec![0f32; n * d], vec![0f32; n * d]);
        rms_norm_rows(&s.x, &self.enorm, eps, &mut e);
        rms_norm_rows(h, &self.hnorm, eps, &mut hn);
        for t in 0..n {
            cat[t * 2 * d..t * 2 * d + d].copy_from_slice(&e[t * d..(t + 1) * d]);
            cat[t * 2 * d + d..(t + 1) * 2 * d].copy_from_slice(&hn[t * d..(t + 1) * d]);
        }
        s.mc.new_input();
        self.eh_proj.forward(&cat, n, &mut s.x[..n * d], &mut s.mc, Batch::Steps);
        model.block_at(&self.block, self.il, pos0, kv, s, Rounding::AsSteps)?;
        let norm = self.head_norm.as_deref().unwrap_or(model.output_norm());
        let x = std::mem::take(&mut s.x);
        s.x.resize(n * d, 0.0);
        rms_norm_rows(&x, norm, eps, &mut s.x);
        Ok(())
    }
}
