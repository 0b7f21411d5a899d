//! The llama family forward pass (llama, mistral, smollm; qwen2 with QKV bias;
//! gemma3 with Q/K norms, post-norms, GeGLU, sliding-window layers and scaled
//! embeddings), as parts: `embed` tokens into hidden rows, run `blocks` over a
//! range of layers at explicit positions, `head` turns hidden rows into
//! logits. `forward` is the thin loop over the three. State between calls
//! lives in `Scratch` (llama2.c's RunState), owned by the caller.

use super::config::FfnAct;
use super::debug::dbg_sum;
use super::weights::{Layer, Weights};
use super::{Config, Outputs};
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::ops::attention::{
    attend_f16, attend_f16_split, attend_tiled_cells, attend_tiled_stats, merge_segments, HeadRows, LlamaCells, FA_TILE, KEY_SEGMENT, LLAMA_KV_PAD,
    SPLIT_KV_MIN,
};
use crate::ops::linear::{Linear, MatCtx};
use crate::ops::matmul::Batch;
use crate::ops::norm::rms_norm_rows;
use crate::ops::rope::{rope_apply, rope_cache};
use crate::ops::{add_in_place, geglu, par_elementwise, swiglu};
use crate::parallel::{self, SendPtr};
use anyhow::{bail, Result};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

mod multi;

pub struct Model {
    pub g: Arc<GgufFile>,
    pub cfg: Config,
    w: Weights,
}

/// How a pass rounds its matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rounding {
    /// As llama.cpp rounds the batch (its kernels depend on the batch size).
    Batch,
    /// Every row as a one-token step would round it: the logits of row i equal
    /// those of evaluating the tokens one at a time. Speculative verification
    /// uses it so greedy output does not depend on drafting.
    AsSteps,
}

/// Buffers and state of the passes of one sequence, kept between calls.
#[derive(Default)]
pub struct Scratch {
    /// Hidden rows (n_embd each): after `embed`, then after each block.
    pub x: Vec<f32>,
    /// Which tokens of the batch the rows of `x` are (all of them until the
    /// last layer keeps only the outputs).
    pub rows: Vec<usize>,
    /// Tokens in the current batch.
    n_tokens: usize,
    /// Run the last block on every row (not only the output rows) and keep
    /// all final hidden rows in `all_x` (a nextn head needs every position's).
    pub keep_all_rows: bool,
    pub all_x: Vec<f32>,
    /// Layers after which to copy the hidden rows into `captured`.
    pub capture: Vec<usize>,
    pub captured: Vec<Vec<f32>>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    tmp: Vec<f32>,
    /// Per key segment: attention outputs and their (max, sum) (fast mode,
    /// long contexts).
    seg_o: Vec<f32>,
    seg_st: Vec<(f32, f32)>,
    pub(crate) mc: MatCtx,
    rope: Vec<Vec<(f32, f32)>>,
    rope_swa: Vec<Vec<(f32, f32)>>,
    /// Per sequence of a `step_many` pass: its attention's buffers.
    seqs: Vec<Scratch>,
}

impl Scratch {
    /// Rows of `x` now (tokens of the batch, or the kept outputs).
    pub fn n_rows(&self) -> usize {
        self.rows.len()
    }

    /// Start a batch from hidden rows (`n` of them, n_embd each) instead of
    /// token embeddings: `blocks` then continues from the layer they were
    /// computed up to (early-exit verification reuses a draft's rows).
    pub fn set_hidden(&mut self, x: &[f32], n: usize) {
        self.x.clear();
        self.x.extend_from_slice(x);
        self.n_tokens = n;
        self.rows = (0..n).collect();
        self.captured.clear();
    }

    /// The LoRA adapters this sequence's passes apply.
    pub fn adapters(&self) -> Option<std::sync::Arc<crate::ops::linear::AdapterSet>> {
        self.mc.adapters.clone()
    }

    /// The LoRA adapters this sequence's passes apply (None: the base alone).
    pub fn set_adapters(&mut self, set: Option<std::sync::Arc<crate::ops::linear::AdapterSet>>) {
        self.mc.adapters = set.filter(|s| !s.is_empty());
    }
}

impl Model {
    pub fn load(path: &Path) -> Result<Self> {
        let g = Arc::new(GgufFile::open(path)?);
        Self::from_gguf(g)
    }

    pub fn from_gguf(g: Arc<GgufFile>) -> Result<Self> {
        let cfg = Config::from_gguf(&g)?;
        let w = Weights::load(&g, &cfg)?;
        Ok(Model { g, cfg, w })
    }

    /// A KV cache for `n_ctx` positions (an error when it cannot be had).
    pub fn new_cache(&self, n_ctx: usize) -> Result<KvCache> {
        let c = &self.cfg;
        KvCache::new(c.n_layer, n_ctx, c.n_head_kv * c.head_dim_k, c.n_head_kv * c.head_dim_v)
    }

    /// Number of parameters (elements of all tensors).
    pub fn n_params(&self) -> u64 {
        self.g.tensors.iter().map(|t| t.n_elements()).sum()
    }

    /// Every projection by its tensor's name (what adapters attach to).
    pub fn linears(&self) -> Vec<(&str, &Linear)> {
        self.w.linears()
    }

    /// Weight bytes block `il` reads per step (its projections).
    pub fn block_bytes(&self, il: usize) -> usize {
        self.w.layers[il].bytes()
    }

    /// Weight bytes one step reads: every block's projections and the
    /// output matrix.
    pub fn step_bytes(&self) -> usize {
        let out = &self.w.output.w;
        (0..self.cfg.n_layer).map(|il| self.block_bytes(il)).sum::<usize>() + out.rows * out.row_bytes
    }

    /// The output projection (the head's matrix).
    pub fn output(&self) -> &Linear {
        &self.w.output
    }

    /// Run `tokens` at positions kv.seq_len().. with fresh scratch, rounded as
    /// a batch; logits (n_vocab each) for the rows asked for, in that order.
    pub fn forward(&self, tokens: &[u32], kv: &mut KvCache, outputs: &Outputs) -> Result<Vec<f32>> {
        let pos0 = kv.seq_len();
        self.forward_with(tokens, pos0, kv, &mut Scratch::default(), outputs, Rounding::Batch)
    }

    /// The whole model over `tokens` at positions `pos0..`: embed, every
    /// block, head. The final hidden rows stay in `s.x` (one per output row),
    /// those after the layers in `s.capture` in `s.captured`.
    pub fn forward_with(&self, tokens: &[u32], pos0: usize, kv: &mut KvCache, s: &mut Scratch, outputs: &Outputs, r: Rounding) -> Result<Vec<f32>> {
        self.forward_to(&self.w.output, tokens, pos0, kv, s, outputs, r)
    }

    /// `forward_with` through another output matrix (a draft vocabulary's cut).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_to(
        &self,
        output: &Linear,
        tokens: &[u32],
        pos0: usize,
        kv: &mut KvCache,
        s: &mut Scratch,
        outputs: &Outputs,
        r: Rounding,
    ) -> Result<Vec<f32>> {
        let n = tokens.len();
        if n == 0 {
            bail!("empty batch");
        }
        let out_rows = outputs.rows(n);
        if out_rows.iter().any(|&r| r >= n) {
            bail!("output row out of range");
        }
        self.embed(tokens, s)?;
        if s.keep_all_rows {
            self.blocks(0..self.cfg.n_layer, pos0, kv, s, r, None)?;
            s.all_x.clone_from(&s.x);
            if out_rows.len() < n {
                let d = self.cfg.n_embd;
                s.x = out_rows.iter().flat_map(|&i| s.all_x[i * d..(i + 1) * d].iter().copied()).collect();
                s.rows = out_rows;
            }
        } else {
            self.blocks(0..self.cfg.n_layer, pos0, kv, s, r, Some(&out_rows))?;
        }
        let mut logits = Vec::new();
        self.head_with(output, s, r, &mut logits);
        Ok(logits)
    }

    /// Token embeddings into `s.x` (a new batch of `tokens.len()` rows).
    pub fn embed(&self, tokens: &[u32], s: &mut Scratch) -> Result<()> {
        let c = &self.cfg;
        let d = c.n_embd;
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= c.n_vocab) {
            bail!("token id {t} is outside the vocabulary of {}", c.n_vocab);
        }
        s.x.resize(tokens.len() * d, 0.0);
        self.w.tok_embd.embed(tokens, &mut s.x, &mut s.mc);
        if let Some(sc) = c.embd_scale {
            s.x.iter_mut().for_each(|v| *v *= sc);
        }
        s.n_tokens = tokens.len();
        s.rows = (0..tokens.len()).collect();
        s.captured.clear();
        Ok(())
    }

    /// Blocks `layers` over the batch in `s.x` (tokens at positions
    /// `pos0..pos0 + n`), writing their keys and values into `kv`. With
    /// `keep`, the last layer of the range carries only those rows on past its
    /// attention (llama.cpp's output pruning; the rounding stays the batch's).
    pub fn blocks(&self, layers: Range<usize>, pos0: usize, kv: &mut KvCache, s: &mut Scratch, r: Rounding, keep: Option<&[usize]>) -> Result<()> {
        let c = &self.cfg;
        let n = s.n_tokens;
        if layers.end > c.n_layer || layers.start > layers.end {
            bail!("layers {layers:?} out of 0..{}", c.n_layer);
        }
        if s.rows.len() != n || n == 0 {
            bail!("blocks need the whole batch's rows (embed first)");
        }
        if let Some(k) = keep {
            if k.is_empty() || k.iter().any(|&i| i >= n) {
                bail!("kept rows out of range");
            }
        }
        for il in layers.clone() {
            kv.check_write(il, pos0, n)?;
        }
        self.rope_tables(pos0, n, s);
        let steps = r == Rounding::AsSteps;
        let plain = if steps { Batch::Steps } else { Batch::Whole };
        for il in layers.clone() {
            let l = &self.w.layers[il];
            let prune = if il + 1 == layers.end { keep } else { None };
            self.attention_part(il, l, pos0, kv, s, plain, steps, prune);
            self.ffn_part(il, l, s, plain);
            if s.capture.contains(&il) {
                s.captured.push(s.x.clone());
            }
        }
        Ok(())
    }

    /// One block `l` outside the main stack (a nextn head's) over the batch
    /// in `s.x` at positions `pos0..`, its keys and values in layer `il` of `kv`.
    pub fn block_at(&self, l: &Layer, il: usize, pos0: usize, kv: &mut KvCache, s: &mut Scratch, r: Rounding) -> Result<()> {
        let n = s.n_tokens;
        if s.rows.len() != n || n == 0 || il >= kv.n_layer() {
            bail!("block_at: layer {il} of {}, {} rows of {n}", kv.n_layer(), s.rows.len());
        }
        kv.check_write(il, pos0, n)?;
        self.rope_tables(pos0, n, s);
        let steps = r == Rounding::AsSteps;
        let plain = if steps { Batch::Steps } else { Batch::Whole };
        self.attention_part(il, l, pos0, kv, s, plain, steps, None);
        self.ffn_part(il, l, s, plain);
        Ok(())
    }

    /// Block `il` of the main pass.
    pub fn layer(&self, il: usize) -> &Layer {
        &self.w.layers[il]
    }

    /// The nextn (multi-token-prediction) blocks the model file ships.
    pub fn nextn(&self) -> &[super::nextn::Nextn] {
        &self.w.nextn
    }

    /// The final norm's weights.
    pub fn output_norm(&self) -> &[f32] {
        &self.w.output_norm
    }

    /// RoPE tables for positions `pos0..pos0 + n` (and the sliding-window
    /// layers' base) into `s`.
    fn rope_tables(&self, pos0: usize, n: usize, s: &mut Scratch) {
        let c = &self.cfg;
        let tables = |base: f32, fs: f32, out: &mut Vec<Vec<(f32, f32)>>| {
            out.resize_with(n, Vec::new);
            for (t, cache) in out.iter_mut().enumerate() {
                rope_cache(pos0 + t, c.rope_dims, base, fs, cache);
            }
        };
        tables(c.rope_base, c.rope_freq_scale, &mut s.rope);
        if c.swa_layers.iter().any(|&b| b) {
            tables(c.rope_base_swa, c.rope_freq_scale_swa, &mut s.rope_swa);
        }
    }

    /// Keys and values of layer `il` projected from the normalized rows in `s.h`.
    fn kv_proj(&self, il: usize, l: &Layer, s: &mut Scratch, plain: Batch) {
        let c = &self.cfg;
        let n = s.n_tokens;
        s.k.resize(n * c.n_head_kv * c.head_dim_k, 0.0);
        s.v.resize(n * c.n_head_kv * c.head_dim_v, 0.0);
        l.wk.forward(&s.h, n, &mut s.k, &mut s.mc, plain);
        l.wv.forward(&s.h, n, &mut s.v, &mut s.mc, plain);
        dbg_sum(|| format!("Kcur-{il}"), &s.k);
        dbg_sum(|| format!("Vcur-{il}"), &s.v);
    }

    /// The projected keys (normalized, rotated) and values of `s.k`/`s.v`
    /// stored at `pos0..` of layer `il`.
    fn kv_place(&self, il: usize, l: &Layer, pos0: usize, kv: &mut KvCache, s: &mut Scratch) {
        let c = &self.cfg;
        let n = s.n_tokens;
        let (hk, nkv) = (c.head_dim_k, c.n_head_kv);
        if let Some(w) = &l.k_norm {
            norm_in_place(&mut s.k, w, c.eps, &mut s.tmp);
        }
        let rope_tab = if c.swa_layers.get(il).copied().unwrap_or(false) { &s.rope_swa } else { &s.rope };
        for (t, tab) in rope_tab.iter().enumerate().take(n) {
            for h in 0..nkv {
                rope_apply(&mut s.k[(t * nkv + h) * hk..(t * nkv + h + 1) * hk], c.rope_dims, c.rope_neox, tab);
            }
        }
        kv.store(il, pos0, n, &s.k, &s.v);
    }

    /// CALM's state propagation for rows that exited early: in `layers`,
    /// only the keys and values are written, computed from the frozen hidden
    /// rows in `s.x` (later tokens attend to them); nothing else runs.
    pub fn fill_kv(&self, layers: Range<usize>, pos0: usize, kv: &mut KvCache, s: &mut Scratch, r: Rounding) -> Result<()> {
        let c = &self.cfg;
        let n = s.n_tokens;
        if layers.end > c.n_layer || layers.start > layers.end || s.rows.len() != n || n == 0 {
            bail!("fill_kv: layers {layers:?} of {}, {} rows of {n}", c.n_layer, s.rows.len());
        }
        for il in layers.clone() {
            kv.check_write(il, pos0, n)?;
        }
        self.rope_tables(pos0, n, s);
        let plain = if r == Rounding::AsSteps { Batch::Steps } else { Batch::Whole };
        for il in layers {
            let l = &self.w.layers[il];
            s.h.resize(n * c.n_embd, 0.0);
            rms_norm_rows(&s.x, &l.attn_norm, c.eps, &mut s.h);
            s.mc.new_input();
            self.kv_proj(il, l, s, plain);
            self.kv_place(il, l, pos0, kv, s);
        }
        Ok(())
    }

    /// Attention sub-block of layer `il`: x += attn(norm(x)). With `prune`,
    /// only those rows continue (and `s.rows` becomes them).
    #[allow(clippy::too_many_arguments)]
    fn attention_part(&self, il: usize, l: &Layer, pos0: usize, kv: &mut KvCache, s: &mut Scratch, plain: Batch, steps: bool, prune: Option<&[usize]>) {
        // which token rows continue past this layer's attention
        let all: Vec<usize>;
        let rows: &[usize] = match prune {
            Some(p) => p,
            None => {
                all = (0..s.n_tokens).collect();
                &all
            }
        };
        self.qkv_proj(il, l, s, plain);
        self.attend(il, l, pos0, kv, s, steps, rows);
        self.attn_out(il, l, s, steps, rows);
    }

    /// Queries, keys and values of layer `il` projected from norm(x).
    fn qkv_proj(&self, il: usize, l: &Layer, s: &mut Scratch, plain: Batch) {
        let c = &self.cfg;
        let n = s.n_tokens;
        s.h.resize(n * c.n_embd, 0.0);
        rms_norm_rows(&s.x, &l.attn_norm, c.eps, &mut s.h);
        s.q.resize(n * c.n_head * c.head_dim_k, 0.0);
        s.mc.new_input();
        l.wq.forward(&s.h, n, &mut s.q, &mut s.mc, plain);
        dbg_sum(|| format!("attn_norm-{il}"), &s.h);
        dbg_sum(|| format!("Qcur-{il}"), &s.q);
        self.kv_proj(il, l, s, plain);
    }

    /// The projected keys and values stored at `pos0..`, the queries
    /// rotated, and the attention of the queries of `rows` into `s.att` (one
    /// row each).
    #[allow(clippy::too_many_arguments)]
    fn attend(&self, il: usize, l: &Layer, pos0: usize, kv: &mut KvCache, s: &mut Scratch, steps: bool, rows: &[usize]) {
        let c = &self.cfg;
        let n = s.n_tokens;
        let (hk, hv) = (c.head_dim_k, c.head_dim_v);
        let (nh, nkv) = (c.n_head, c.n_head_kv);
        let swa = c.swa_layers.get(il).copied().unwrap_or(false);
        self.kv_place(il, l, pos0, kv, s);
        if let Some(w) = &l.q_norm {
            norm_in_place(&mut s.q, w, c.eps, &mut s.tmp);
        }
        let rope_tab = if swa { &s.rope_swa } else { &s.rope };
        for (t, tab) in rope_tab.iter().enumerate().take(n) {
            for h in 0..nh {
                let qh = &mut s.q[(t * nh + h) * hk..(t * nh + h + 1) * hk];
                rope_apply(qh, c.rope_dims, c.rope_neox, tab);
                if let Some(qs) = c.q_scale {
                    qh.iter_mut().for_each(|v| *v *= qs);
                }
            }
        }
        let nr = rows.len();
        s.att.resize(nr * nh * hv, 0.0);
        let (kl, vl) = (kv.k_layer(il), kv.v_layer(il));
        let (kdim, vdim) = (kv.k_dim, kv.v_dim);
        let group = nh / nkv;
        let scale = if c.q_scale.is_some() { 1.0 } else { 1.0 / (hk as f32).sqrt() };
        let q = &s.q;
        let first_pos = |t: usize| if swa { (pos0 + t + 1).saturating_sub(c.swa_window) } else { 0 };
        let k_rows = |kvh: usize| HeadRows::new(kl, kdim, kvh * hk, hk);
        let v_rows = |kvh: usize| HeadRows::new(vl, vdim, kvh * hv, hv);
        let k_at = |kvh: usize| move |p: usize| k_rows(kvh).row(p);
        let v_at = |kvh: usize| move |p: usize| v_rows(kvh).row(p);
        let att = SendPtr(s.att.as_mut_ptr());
        // ggml's tiled kernel serves batches of FA_TILE tokens or more; rows
        // rounded as one-token steps take the one-token kernel. Fast mode
        // uses the tiled kernel for every batch: a query's arithmetic depends
        // only on its own positions (tiles at multiples of FA_TILE), so it is
        // batch-invariant. Fast mode also splits contexts longer than
        // KEY_SEGMENT at fixed key positions (flash-decoding: more work items
        // for one token), merging the segments in order.
        let fast = !crate::quant::fast::exact();
        // llama.cpp's cache for this layer (exact mode follows its cell order)
        let cells = llama_kv_cells(kv.n_ctx, swa.then_some(c.swa_window));
        if fast || (n >= FA_TILE && !steps) {
            let max_end = rows.iter().map(|&t| pos0 + t + 1).max().unwrap_or(0);
            let min_start = rows.iter().map(|&t| first_pos(t)).min().unwrap_or(0);
            let (seg0, seg1) = (min_start / KEY_SEGMENT, max_end.div_ceil(KEY_SEGMENT));
            let split = fast && seg1 - seg0 > 1;
            let nseg = if split { seg1 - seg0 } else { 1 };
            let keys = |sg: usize| if split { (seg0 + sg) * KEY_SEGMENT..(seg0 + sg + 1) * KEY_SEGMENT } else { 0..usize::MAX };
            // exact mode's batch once llama.cpp's sliding-window cache has
            // turned into a ring (its cells then hold positions out of
            // order), every row's window still in the cells (a batch no
            // longer than llama.cpp's ubatch, as its cache is sized for)
            let lc = LlamaCells { cells, last: pos0 + n - 1 };
            let ring = (!fast && swa && lc.last >= cells && min_start + cells > lc.last).then_some(lc);
            // work items: a KV head, its query heads (the K/V tiles are
            // widened once for them all), a block of FA_TILE rows, a key
            // segment; the heads split only when there would be fewer items
            // than threads
            let row_blocks = nr.div_ceil(FA_TILE);
            let subsets = parallel::n_threads().div_ceil(nkv * row_blocks * nseg).clamp(1, group);
            let per = group.div_ceil(subsets);
            let items: Vec<(usize, usize, usize, usize)> = (0..nkv)
                .flat_map(|g| (0..group).step_by(per).flat_map(move |h0| (0..row_blocks).flat_map(move |b| (0..nseg).map(move |sg| (g, h0, b, sg)))))
                .collect();
            if split {
                // outputs of slots no item covers are never read (their sum is 0)
                s.seg_o.resize(nseg * nr * nh * hv, 0.0);
                s.seg_st.clear();
                s.seg_st.resize(nseg * nr * nh, (f32::NEG_INFINITY, 0.0));
            }
            let (pop, psp) = (SendPtr(s.seg_o.as_mut_ptr()), SendPtr(s.seg_st.as_mut_ptr()));
            parallel::for_each(items.len(), |it| {
                let (g, h0, b, sg) = items[it];
                let kr = keys(sg);
                let heads = g * group + h0..g * group + (h0 + per).min(group);
                let rr = &rows[b * FA_TILE..((b + 1) * FA_TILE).min(nr)];
                let (mut qs, mut ranges, mut slots) = (Vec::new(), Vec::new(), Vec::new());
                for h in heads {
                    for (k, &t) in rr.iter().enumerate() {
                        let r = first_pos(t).max(kr.start)..(pos0 + t + 1).min(kr.end);
                        if r.start < r.end {
                            qs.push(&q[(t * nh + h) * hk..(t * nh + h + 1) * hk]);
                            ranges.push(r);
                            slots.push((b * FA_TILE + k) * nh + h);
                        }
                    }
                }
                let mut o = vec![0f32; qs.len() * hv];
                let mut st = vec![(0f32, 0f32); if split { qs.len() } else { 0 }];
                if let Some(lc) = ring {
                    // exact mode past a sliding-window cache's size: keys by
                    // llama.cpp's cells, the ring's newest positions first
                    let vis: Vec<_> = ranges.iter().map(|r| lc.cell_ranges(r)).collect();
                    let (ka, va) = (k_at(g), v_at(g));
                    let cell = |c: usize| lc.pos(c).expect("a turned ring has every cell written");
                    attend_tiled_cells(&qs, &vis, |c| ka(cell(c)), |c| va(cell(c)), scale, hv, &mut o);
                } else {
                    attend_tiled_stats(&qs, &ranges, k_rows(g), v_rows(g), scale, hv, &mut o, split.then_some(&mut st[..]));
                }
                for (k, &slot) in slots.iter().enumerate() {
                    // SAFETY: (segment, row, head) slots are disjoint across
                    // items and inside s.att, or s.seg_o / s.seg_st.
                    unsafe {
                        if split {
                            let slot = sg * nr * nh + slot;
                            std::ptr::copy_nonoverlapping(o[k * hv..].as_ptr(), pop.get().add(slot * hv), hv);
                            *psp.get().add(slot) = st[k];
                        } else {
                            std::ptr::copy_nonoverlapping(o[k * hv..].as_ptr(), att.get().add(slot * hv), hv);
                        }
                    }
                }
            });
            if split {
                let (po, pst) = (&s.seg_o, &s.seg_st);
                parallel::for_each(nr * nh, |i| {
                    // SAFETY: slot i of s.att, disjoint across items.
                    let out = unsafe { std::slice::from_raw_parts_mut(att.get().add(i * hv), hv) };
                    merge_segments(nseg, |sg| (&po[(sg * nr * nh + i) * hv..(sg * nr * nh + i + 1) * hv], pst[sg * nr * nh + i]), out);
                });
            }
        } else {
            // keys in llama.cpp's cell order (a sliding-window cache is a
            // ring past its size); a one-token step (or a row rounded as
            // one) whose KV view holds SPLIT_KV_MIN cells or more splits the
            // keys over llama.cpp's threads (rllama's -t stands for its -t)
            let one_token = n == 1 || steps;
            let nth = parallel::n_threads();
            parallel::for_each(nr * nh, |i| {
                thread_local! {
                    static SCRATCH: std::cell::RefCell<(Vec<u16>, Vec<u16>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
                }
                let (ri, h) = (i / nh, i % nh);
                let t = rows[ri];
                let qv = &q[(t * nh + h) * hk..(t * nh + h + 1) * hk];
                // SAFETY: slot i of s.att, disjoint across items.
                let out = unsafe { std::slice::from_raw_parts_mut(att.get().add(i * hv), hv) };
                // the newest position in the cache: the row's own for a step,
                // else the batch's last (all its cells are written first)
                let last = if one_token { pos0 + t } else { pos0 + n - 1 };
                let lc = LlamaCells { cells, last };
                let (visible, ka, va) = (first_pos(t)..pos0 + t + 1, k_at(h / group), v_at(h / group));
                SCRATCH.with_borrow_mut(|(qh, acc)| {
                    if one_token && lc.n_kv() >= SPLIT_KV_MIN {
                        attend_f16_split(qv, lc, visible, nth, ka, va, scale, 0.0, out, qh, acc)
                    } else {
                        attend_f16(qv, lc.keys(0..lc.n_kv(), visible), ka, va, scale, 0.0, out, qh, acc)
                    }
                });
            });
        }
    }

    /// Attention output of `rows` (in `s.att`): x += wo(att), the other rows
    /// dropped.
    fn attn_out(&self, il: usize, l: &Layer, s: &mut Scratch, steps: bool, rows: &[usize]) {
        let c = &self.cfg;
        let (n, d, nr) = (s.n_tokens, c.n_embd, rows.len());
        dbg_sum(|| format!("kqv_out-{il}"), &s.att);
        s.o.resize(nr * d, 0.0);
        s.mc.new_input();
        let batch = if steps { Batch::Steps } else { Batch::Rows(n, rows) };
        l.wo.forward(&s.att, nr, &mut s.o, &mut s.mc, batch);
        if nr != n {
            s.tmp.clear();
            for &r in rows {
                s.tmp.extend_from_slice(&s.x[r * d..(r + 1) * d]);
            }
            std::mem::swap(&mut s.x, &mut s.tmp);
            s.rows = rows.iter().map(|&r| s.rows[r]).collect();
        }
        if let Some(w) = &l.post_attn_norm {
            norm_in_place(&mut s.o, w, c.eps, &mut s.tmp);
        }
        add_in_place(&mut s.x, &s.o);
    }

    /// Feed-forward sub-block: x += ffn(norm(x)) over the rows carried.
    fn ffn_part(&self, il: usize, l: &Layer, s: &mut Scratch, plain: Batch) {
        let c = &self.cfg;
        let (d, nr) = (c.n_embd, s.n_rows());
        s.h.resize(nr * d, 0.0);
        rms_norm_rows(&s.x, &l.ffn_norm, c.eps, &mut s.h);
        s.gate.resize(nr * l.n_ff(), 0.0);
        s.up.resize(nr * l.n_ff(), 0.0);
        s.mc.new_input();
        l.w_gate.forward(&s.h, nr, &mut s.gate, &mut s.mc, plain);
        l.w_up.forward(&s.h, nr, &mut s.up, &mut s.mc, plain);
        dbg_sum(|| format!("ffn_norm-{il}"), &s.h);
        dbg_sum(|| format!("ffn_gate-{il}"), &s.gate);
        dbg_sum(|| format!("ffn_up-{il}"), &s.up);
        let act: fn(&mut [f32], &[f32]) = match c.ffn_act {
            FfnAct::Silu => swiglu,
            FfnAct::Gelu => geglu,
        };
        par_elementwise(&mut s.gate, &s.up, act);
        dbg_sum(|| format!("ffn_swiglu-{il}"), &s.gate);
        s.o.resize(nr * d, 0.0);
        s.mc.new_input();
        l.w_down.forward(&s.gate, nr, &mut s.o, &mut s.mc, plain);
        dbg_sum(|| format!("ffn_out-{il}"), &s.o);
        if let Some(w) = &l.post_ffn_norm {
            norm_in_place(&mut s.o, w, c.eps, &mut s.tmp);
        }
        add_in_place(&mut s.x, &s.o);
        dbg_sum(|| format!("l_out-{il}"), &s.x);
    }

    /// Logits (n_vocab per row) of the hidden rows in `s.x`: final norm, the
    /// output projection, the soft cap.
    pub fn head(&self, s: &mut Scratch, r: Rounding, logits: &mut Vec<f32>) {
        self.head_with(&self.w.output, s, r, logits)
    }

    /// `head` through another output matrix (an exit or MTP head).
    pub fn head_with(&self, output: &Linear, s: &mut Scratch, r: Rounding, logits: &mut Vec<f32>) {
        let c = &self.cfg;
        let nr = s.n_rows();
        s.h.resize(nr * c.n_embd, 0.0);
        rms_norm_rows(&s.x, &self.w.output_norm, c.eps, &mut s.h);
        self.project(output, s, r, logits);
    }

    /// Logits of rows in `s.x` that are already normed (a nextn head's).
    pub fn head_normed(&self, output: &Linear, s: &mut Scratch, r: Rounding, logits: &mut Vec<f32>) {
        s.h.clone_from(&s.x);
        self.project(output, s, r, logits);
    }

    /// The output projection and soft cap of the normed rows in `s.h`.
    fn project(&self, output: &Linear, s: &mut Scratch, r: Rounding, logits: &mut Vec<f32>) {
        let c = &self.cfg;
        let nr = s.n_rows();
        logits.resize(nr * output.rows(), 0.0);
        s.mc.new_input();
        let batch = if r == Rounding::AsSteps { Batch::Steps } else { Batch::Whole };
        output.forward(&s.h, nr, logits, &mut s.mc, batch);
        if c.logit_softcap > 0.0 {
            let (inv, cap) = (1.0 / c.logit_softcap, c.logit_softcap);
            logits.iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
        }
        dbg_sum(|| "result_output".to_string(), logits);
    }
}

/// RMS-normalize each `w.len()` row of `x` in place (`tmp` is scratch).
fn norm_in_place(x: &mut [f32], w: &[f32], eps: f32, tmp: &mut Vec<f32>) {
    tmp.clear();
    tmp.extend_from_slice(x);
    rms_norm_rows(tmp, w, eps, x);
}

/// Cells of llama.cpp's KV cache for a context of `n_ctx` (padded to
/// `LLAMA_KV_PAD`); a sliding-window layer's cache holds the window plus one
/// ubatch (llama.cpp's default `LLAMA_N_UBATCH`), padded, at most that.
fn llama_kv_cells(n_ctx: usize, swa_window: Option<usize>) -> usize {
    let cells = n_ctx.next_multiple_of(LLAMA_KV_PAD).max(LLAMA_KV_PAD);
    match swa_window {
        Some(w) => (w + LLAMA_N_UBATCH).min(cells).next_multiple_of(LLAMA_KV_PAD),
        None => cells,
    }
}

/// llama.cpp's default ubatch (`-ub`), which sizes its sliding-window cache.
const LLAMA_N_UBATCH: usize = 512;
