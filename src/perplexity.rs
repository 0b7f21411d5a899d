//! Perplexity the way llama-perplexity computes it: the text tokenized whole,
//! cut into chunks of n_ctx tokens (the first replaced by BOS when the model
//! adds one), each chunk evaluated from an empty cache, and only the second
//! half of each chunk scored.

use crate::model::{Model, Outputs};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};

pub struct PplResult {
    /// Running PPL after each chunk (llama-perplexity's `[i]x.xxxx` values).
    pub per_chunk: Vec<f64>,
    pub ppl: f64,
    pub ppl_err: f64,
}

/// log-softmax probability of `tok` in one row of logits (f64 accumulation).
pub fn log_prob(logits: &[f32], tok: u32) -> f64 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| (v as f64 - max).exp()).sum();
    logits[tok as usize] as f64 - max - sum.ln()
}

pub fn perplexity(model: &Model, tok: &Tokenizer, text: &str, n_ctx: usize, n_chunks: Option<usize>, n_batch: usize) -> Result<PplResult> {
    let tokens = tok.encode(text, true, false)?;
    if tokens.len() < 2 * n_ctx {
        bail!("you need at least {} tokens to evaluate perplexity with a context of {n_ctx}; the text has {}", 2 * n_ctx, tokens.len());
    }
    let max_chunks = tokens.len() / n_ctx;
    let n_chunks = n_chunks.map(|c| c.min(max_chunks)).unwrap_or(max_chunks);
    let first = n_ctx / 2;
    let mut kv = model.new_cache(n_ctx);
    let (mut nll, mut nll2, mut count) = (0.0f64, 0.0f64, 0usize);
    let mut per_chunk = Vec::with_capacity(n_chunks);
    for c in 0..n_chunks {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        if tok.add_bos {
            if let Some(b) = tok.bos {
                chunk[0] = b;
            }
        }
        kv.truncate(0);
        let mut logits = Vec::with_capacity(n_ctx * model.cfg.n_vocab);
        for part in chunk.chunks(n_batch.max(1)) {
            logits.extend(model.forward(part, &mut kv, &Outputs::All)?);
        }
        let nv = model.cfg.n_vocab;
        for j in first..n_ctx - 1 {
            let lp = log_prob(&logits[j * nv..(j + 1) * nv], tokens[c * n_ctx + j + 1]);
            nll -= lp;
            nll2 += lp * lp;
            count += 1;
        }
        per_chunk.push((nll / count as f64).exp());
    }
    let mean = nll / count as f64;
    let var = (nll2 / count as f64 - mean * mean).max(0.0);
    let ppl = mean.exp();
    let ppl_err = if count > 1 { ppl * (var / (count as f64 - 1.0)).sqrt() } else { 0.0 };
    Ok(PplResult { per_chunk, ppl, ppl_err })
}
