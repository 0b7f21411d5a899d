//! Perplexity and KL divergence the way llama-perplexity computes them: the
//! text tokenized whole, cut into chunks of n_ctx tokens (the first replaced by
//! BOS when the model adds one), each chunk evaluated from an empty cache, and
//! only the second half of each chunk scored. `--kl-divergence-base` files
//! (llama.cpp's `_logits_` format) are written and read in `logits_file`.

pub mod logits_file;
pub mod logprob;

use crate::kv_cache::KvCache;
use crate::model::{Model, Outputs, Rounding, Scratch};
use crate::ops::linear::AdapterSet;
use anyhow::{bail, Result};
use logprob::KldSums;
use rayon::prelude::*;
use std::io::Write;
use std::sync::Arc;

pub struct PplResult {
    /// Running PPL after each chunk (llama-perplexity's `[i]x.xxxx` values).
    pub per_chunk: Vec<f64>,
    pub ppl: f64,
    /// Uncertainty as llama-perplexity prints it; None when the variance came out negative.
    pub ppl_err: Option<f64>,
}

/// Chunks of `n_ctx` tokens that llama-perplexity would score in `tokens`.
pub fn n_chunks(n_tokens: usize, n_ctx: usize, asked: Option<usize>) -> Result<usize> {
    if n_ctx < 4 {
        bail!("perplexity needs a context of at least 4 tokens (-c), got {n_ctx}");
    }
    if n_tokens < 2 * n_ctx {
        bail!("you need at least {} tokens to evaluate perplexity with a context of {n_ctx}; the text tokenizes to only {n_tokens} tokens", 2 * n_ctx);
    }
    let max = n_tokens / n_ctx;
    Ok(asked.map(|c| c.min(max)).unwrap_or(max))
}

/// Evaluate one chunk from an empty cache (its first token replaced by `bos`)
/// and return the logits of positions n_ctx/2 .. n_ctx-1, the ones scored.
/// With `lossy`, the scored positions run one token at a time through its
/// early exits (the first half, the context, runs whole).
pub fn chunk_logits(
    model: &Model,
    kv: &mut KvCache,
    s: &mut Scratch,
    chunk: &[u32],
    bos: Option<u32>,
    n_batch: usize,
    lossy: Option<&mut crate::decode::early_exit::LossyExit>,
) -> Result<Vec<f32>> {
    let n_ctx = chunk.len();
    let first = n_ctx / 2;
    let mut toks = chunk.to_vec();
    if let Some(b) = bos {
        toks[0] = b;
    }
    kv.truncate(0);
    let mut logits = Vec::with_capacity((n_ctx - first) * model.cfg.n_vocab);
    let n_batch = n_batch.clamp(1, n_ctx);
    if let Some(lx) = lossy {
        for (j, part) in toks[..first].chunks(n_batch).enumerate() {
            model.forward_with(part, j * n_batch, kv, s, &Outputs::Rows(vec![part.len() - 1]), Rounding::Batch)?;
        }
        for (p, &t) in toks.iter().enumerate().skip(first) {
            logits.extend(lx.step(model, t, p, kv, s)?);
        }
        return Ok(logits);
    }
    for (j, part) in toks.chunks(n_batch).enumerate() {
        let p0 = j * n_batch;
        let rows: Vec<usize> = (0..part.len()).filter(|&k| p0 + k >= first).collect();
        if rows.is_empty() {
            model.forward_with(part, p0, kv, s, &Outputs::Rows(vec![part.len() - 1]), Rounding::Batch)?;
        } else {
            logits.extend(model.forward_with(part, p0, kv, s, &Outputs::Rows(rows), Rounding::Batch)?);
        }
    }
    Ok(logits)
}

/// Perplexity over `tokens` (already tokenized with BOS as the model wants).
/// With `save`, the base log-probabilities go there in llama.cpp's
/// `--kl-divergence-base` format. `on_chunk(i, running_ppl)` after each chunk.
#[allow(clippy::too_many_arguments)]
pub fn perplexity(
    model: &Model,
    adapters: Option<Arc<AdapterSet>>,
    tokens: &[u32],
    bos: Option<u32>,
    n_ctx: usize,
    n_chunks_asked: Option<usize>,
    n_batch: usize,
    mut save: Option<&mut dyn Write>,
    mut lossy: Option<&mut crate::decode::early_exit::LossyExit>,
    on_chunk: &mut dyn FnMut(usize, f64),
) -> Result<PplResult> {
    let n_chunk = n_chunks(tokens.len(), n_ctx, n_chunks_asked)?;
    let nv = model.cfg.n_vocab;
    let first = n_ctx / 2;
    let n_scored = n_ctx - 1 - first;
    if let Some(w) = save.as_deref_mut() {
        logits_file::write_header(w, n_ctx, nv, n_chunk, &tokens[..n_chunk * n_ctx])?;
    }
    let row_len = logprob::packed_row_len(nv);
    let mut packed = vec![0u16; if save.is_some() { n_scored * row_len } else { 0 }];
    let mut kv = model.new_cache(n_ctx)?;
    let mut scratch = Scratch::default();
    scratch.set_adapters(adapters);
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut per_chunk = Vec::with_capacity(n_chunk);
    for c in 0..n_chunk {
        let chunk = &tokens[c * n_ctx..(c + 1) * n_ctx];
        let logits = chunk_logits(model, &mut kv, &mut scratch, chunk, bos, n_batch, lossy.as_deref_mut())?;
        let next = &chunk[first + 1..];
        let vals: Vec<f64> = if let Some(w) = save.as_deref_mut() {
            let v: Vec<f64> =
                packed.par_chunks_mut(row_len).enumerate().map(|(j, out)| logprob::pack_row(&logits[j * nv..(j + 1) * nv], next[j], out)).collect();
            logits_file::write_rows(w, &packed)?;
            v
        } else {
            (0..n_scored).into_par_iter().map(|j| logprob::nll(&logits[j * nv..(j + 1) * nv], next[j])).collect()
        };
        for v in vals {
            nll += v;
            nll2 += v * v;
        }
        count += n_scored;
        let running = (nll / count as f64).exp();
        per_chunk.push(running);
        on_chunk(c, running);
    }
    if let Some(w) = save {
        w.flush()?;
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let ppl_err = (var > 0.0).then(|| ppl * (var / (count as f64 - 1.0)).sqrt());
    Ok(PplResult { per_chunk, ppl, ppl_err })
}

pub struct KldResult {
    pub sums: KldSums,
    /// Per-token KL divergence and probability difference, in evaluation order.
    pub kld_values: Vec<f32>,
    pub p_diff_values: Vec<f32>,
}

/// KL divergence of `model` against the base log-probabilities in `base`
/// (written by llama-perplexity or rllama). `on_chunk(i, sums)` after each chunk.
pub fn kl_divergence(
    model: &Model,
    adapters: Option<Arc<AdapterSet>>,
    base: &mut logits_file::LogitsReader,
    bos: Option<u32>,
    n_batch: usize,
    mut lossy: Option<&mut crate::decode::early_exit::LossyExit>,
    on_chunk: &mut dyn FnMut(usize, &KldSums),
) -> Result<KldResult> {
    let (n_ctx, nv) = (base.n_ctx, model.cfg.n_vocab);
    if base.n_vocab != nv {
        bail!("the base logits file has a vocabulary of {} tokens, the model {nv}", base.n_vocab);
    }
    let first = n_ctx / 2;
    let n_scored = n_ctx - 1 - first;
    let row_len = logprob::packed_row_len(nv);
    let mut packed = vec![0u16; n_scored * row_len];
    let mut kv = model.new_cache(n_ctx)?;
    let mut scratch = Scratch::default();
    scratch.set_adapters(adapters);
    let mut sums = KldSums::default();
    let (mut kld_values, mut p_diff_values) = (Vec::new(), Vec::new());
    for c in 0..base.n_chunk {
        let chunk = base.tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        let logits = chunk_logits(model, &mut kv, &mut scratch, &chunk, bos, n_batch, lossy.as_deref_mut())?;
        base.read_rows(&mut packed).map_err(|e| anyhow::anyhow!("failed reading log-probs for chunk {c}: {e}"))?;
        let next = &chunk[first + 1..];
        let rows: Vec<(KldSums, f64, f32)> = packed
            .par_chunks(row_len)
            .enumerate()
            .map(|(j, b)| {
                let mut s = KldSums::default();
                let (k, d) = s.add_row(&logits[j * nv..(j + 1) * nv], b, next[j]);
                (s, k, d)
            })
            .collect();
        for (s, k, d) in rows {
            sums.merge(&s);
            kld_values.push(k as f32);
            p_diff_values.push(d);
        }
        on_chunk(c, &sums);
    }
    Ok(KldResult { sums, kld_values, p_diff_values })
}
