//! The decode loop: prompt processing in batches, then one token per step,
//! with the time and token counts llama.cpp's perf block reports.

pub mod generator;
pub mod speculative;

use crate::kv_cache::KvCache;
use crate::model::{Model, Outputs};
use anyhow::{bail, Result};
use std::time::Instant;

#[derive(Default, Clone, Debug)]
pub struct Perf {
    pub t_prompt_ms: f64,
    pub n_prompt: usize,
    pub t_eval_ms: f64,
    pub n_eval: usize,
    pub t_sample_ms: f64,
    pub n_sample: usize,
}

pub struct Session<'m> {
    pub model: &'m Model,
    pub kv: KvCache,
    pub n_batch: usize,
    pub perf: Perf,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, n_ctx: usize, n_batch: usize) -> Self {
        Session { model, kv: model.new_cache(n_ctx), n_batch: n_batch.max(1), perf: Perf::default() }
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }

    /// Evaluate prompt tokens (in batches of n_batch); logits of the last one.
    pub fn prompt(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("the prompt is empty");
        }
        if self.kv.len + tokens.len() > self.kv.n_ctx {
            bail!("prompt is too long ({} tokens, max {})", tokens.len(), self.kv.n_ctx - self.kv.len);
        }
        let t0 = Instant::now();
        let mut logits = Vec::new();
        for chunk in tokens.chunks(self.n_batch) {
            logits = self.model.forward(chunk, &mut self.kv, &Outputs::Last)?;
        }
        self.perf.t_prompt_ms += t0.elapsed().as_secs_f64() * 1e3;
        self.perf.n_prompt += tokens.len();
        Ok(logits)
    }

    /// Evaluate one generated token; logits for the next.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let t0 = Instant::now();
        let l = self.model.forward(&[token], &mut self.kv, &Outputs::Last)?;
        self.perf.t_eval_ms += t0.elapsed().as_secs_f64() * 1e3;
        self.perf.n_eval += 1;
        Ok(l)
    }
}
