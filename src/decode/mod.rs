//! The decode loop: a `Session` (one sequence: KV cache, scratch, timings) and
//! the `Generator` that every front-end drives, with a pluggable `Drafter`.

pub mod batch;
pub mod drafters;
pub mod early_exit;
pub mod generator;
pub mod mtp;
pub mod ngram;
pub mod speculative;

use crate::kv_cache::KvCache;
use crate::model::{Model, Outputs, Rounding, Scratch};
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

/// One sequence on one model: its KV cache and the scratch of its passes.
pub struct Session<'m> {
    pub model: &'m Model,
    pub kv: KvCache,
    pub scratch: Scratch,
    pub n_batch: usize,
    pub perf: Perf,
    /// Hidden rows in `scratch.x` that belong to tokens now in the cache (the
    /// last evaluated token, or the verified rows of a speculative round).
    hidden_rows: usize,
    /// Another output matrix for this session's logits (a draft model's
    /// over the draft vocabulary); None: the model's own.
    pub output: Option<std::sync::Arc<crate::ops::linear::Linear>>,
    /// Lossy early exit for one-token steps (`--early-exit-threshold`).
    pub lossy: Option<early_exit::LossyExit<'m>>,
    /// Keep the final hidden rows of every token put in the cache (for a
    /// drafter that reads them: `take_hidden_log`).
    pub log_hidden: bool,
    /// Those rows, of positions `log_pos0..`, and where the last pass began.
    log: Vec<f32>,
    log_pos0: usize,
    last_pos0: usize,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, n_ctx: usize, n_batch: usize) -> Result<Self> {
        Ok(Session {
            model,
            kv: model.new_cache(n_ctx)?,
            scratch: Scratch::default(),
            n_batch: n_batch.max(1),
            perf: Perf::default(),
            hidden_rows: 0,
            output: None,
            lossy: None,
            log_hidden: false,
            log: Vec::new(),
            log_pos0: 0,
            last_pos0: 0,
        })
    }

    pub fn n_ctx(&self) -> usize {
        self.kv.n_ctx
    }

    /// Positions every layer of the cache holds (the next token's position).
    pub fn n_past(&self) -> usize {
        self.kv.seq_len()
    }

    /// Forget positions `n..` (all layers).
    pub fn truncate(&mut self, n: usize) {
        self.kv.truncate(n);
        self.hidden_rows = 0;
        self.trim_log(n);
    }

    /// Drop logged rows of positions `n..`.
    fn trim_log(&mut self, n: usize) {
        let d = self.model.cfg.n_embd;
        if n < self.log_pos0 {
            self.log.clear();
            self.log_pos0 = n;
        } else {
            self.log.truncate((n - self.log_pos0) * d);
        }
    }

    /// Log the final hidden rows of the last pass (tokens at `pos0..`).
    fn log_pass(&mut self, pos0: usize) {
        self.last_pos0 = pos0;
        if !self.log_hidden {
            return;
        }
        let d = self.model.cfg.n_embd;
        let rows = if self.scratch.keep_all_rows { &self.scratch.all_x } else { &self.scratch.x };
        let end = self.log_pos0 + self.log.len() / d;
        if pos0 > end {
            // rows were not logged in between: start over here
            self.log.clear();
            self.log_pos0 = pos0;
        } else {
            self.log.truncate((pos0 - self.log_pos0) * d);
        }
        self.log.extend_from_slice(rows);
    }

    /// The logged final hidden rows (before the output norm) since the last
    /// call, and the position of the first; the log starts over.
    pub fn take_hidden_log(&mut self) -> (usize, Vec<f32>) {
        let d = self.model.cfg.n_embd;
        let pos0 = self.log_pos0;
        self.log_pos0 += self.log.len() / d;
        (pos0, std::mem::take(&mut self.log))
    }

    /// Final hidden rows (n_embd each, before the output norm) of the last
    /// tokens evaluated and kept: what an MTP head drafts from.
    pub fn last_hidden(&self) -> &[f32] {
        &self.scratch.x[..self.hidden_rows * self.model.cfg.n_embd]
    }

    /// Keep only the first `n` hidden rows of the last pass (the verified ones).
    pub fn keep_hidden(&mut self, n: usize) {
        self.hidden_rows = self.hidden_rows.min(n);
        self.trim_log(self.last_pos0 + n);
    }

    /// One forward pass over `tokens` at the cache's end.
    pub fn eval(&mut self, tokens: &[u32], outputs: &Outputs, r: Rounding) -> Result<Vec<f32>> {
        let pos0 = self.n_past();
        if let (Some(lx), [tok]) = (self.lossy.as_mut(), tokens) {
            let logits = lx.step(self.model, *tok, pos0, &mut self.kv, &mut self.scratch)?;
            self.hidden_rows = 0;
            return Ok(logits);
        }
        let output = self.output.as_deref().unwrap_or(self.model.output());
        self.scratch.keep_all_rows = self.log_hidden;
        let logits = self.model.forward_to(output, tokens, pos0, &mut self.kv, &mut self.scratch, outputs, r)?;
        self.hidden_rows = self.scratch.n_rows();
        self.log_pass(pos0);
        Ok(logits)
    }

    /// A forward pass over `tokens` at the cache's end whose first `done`
    /// tokens already went through blocks `0..layers` (their keys and values
    /// are in the cache, their hidden rows after those blocks in `hidden`):
    /// the other tokens catch up through those blocks, then all run the rest.
    /// Every row is rounded as one-token steps round it, so the logits equal
    /// `eval`'s with `Rounding::AsSteps`.
    pub fn eval_resumed(&mut self, tokens: &[u32], layers: usize, done: usize, hidden: &[f32], outputs: &Outputs) -> Result<Vec<f32>> {
        let (m, d) = (self.model, self.model.cfg.n_embd);
        let n0 = self.kv.len(m.cfg.n_layer - 1);
        if done == 0 || done > tokens.len() || hidden.len() != done * d || layers == 0 || layers >= m.cfg.n_layer {
            bail!("eval_resumed: {done} rows done of {} after {layers} layers", tokens.len());
        }
        let mut x = hidden.to_vec();
        if done < tokens.len() {
            m.embed(&tokens[done..], &mut self.scratch)?;
            m.blocks(0..layers, n0 + done, &mut self.kv, &mut self.scratch, Rounding::AsSteps, None)?;
            x.extend_from_slice(&self.scratch.x);
        }
        self.scratch.set_hidden(&x, tokens.len());
        let rows = outputs.rows(tokens.len());
        m.blocks(layers..m.cfg.n_layer, n0, &mut self.kv, &mut self.scratch, Rounding::AsSteps, Some(&rows))?;
        let mut logits = Vec::new();
        m.head(&mut self.scratch, Rounding::AsSteps, &mut logits);
        self.hidden_rows = self.scratch.n_rows();
        // every row was kept (verification)
        self.scratch.keep_all_rows = false;
        self.log_pass(n0);
        Ok(logits)
    }

    /// Evaluate prompt tokens (in batches of n_batch); logits of the last one.
    pub fn prompt(&mut self, tokens: &[u32]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            bail!("the prompt is empty");
        }
        let n_past = self.n_past();
        if n_past + tokens.len() > self.n_ctx() {
            bail!("prompt is too long ({} tokens, max {})", tokens.len(), self.n_ctx() - n_past);
        }
        let t0 = Instant::now();
        let mut logits = Vec::new();
        for chunk in tokens.chunks(self.n_batch) {
            logits = self.eval(chunk, &Outputs::Last, Rounding::Batch)?;
        }
        self.perf.t_prompt_ms += t0.elapsed().as_secs_f64() * 1e3;
        self.perf.n_prompt += tokens.len();
        Ok(logits)
    }

    /// Evaluate one generated token; logits for the next.
    pub fn step(&mut self, token: u32) -> Result<Vec<f32>> {
        let t0 = Instant::now();
        let l = self.eval(&[token], &Outputs::Last, Rounding::Batch)?;
        self.perf.t_eval_ms += t0.elapsed().as_secs_f64() * 1e3;
        self.perf.n_eval += 1;
        Ok(l)
    }
}
