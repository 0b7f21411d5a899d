//! `--spec-type early-exit`: the target drafts for itself with its first L
//! blocks and an exit head (`rllama graft`, `--spec-heads`). A drafted
//! token's rows through those blocks are exactly what a full step computes
//! (fast mode is batch-invariant, exact mode rounds verification rows as
//! steps), so they stay in the target's cache and verification resumes from
//! block L for them (`Session::eval_resumed`); only the last draft, which
//! the draft never ran, goes through every block.

use super::speculative::{argmax, top_prob, DraftCtx, DraftTiming, Drafter};
use crate::heads::Heads;
use crate::model::{Rounding, Scratch};
use anyhow::{bail, Result};
use std::time::Instant;

pub struct EarlyExit<'m> {
    heads: &'m Heads,
    /// The output matrix over the draft vocabulary, and its token ids.
    out: Option<(crate::ops::linear::Linear, Vec<u32>)>,
    /// Index of the exit head used.
    exit: usize,
    s: Scratch,
    /// Hidden rows after the exit's blocks of the tokens drafted from, in order.
    hidden: Vec<f32>,
    rows: usize,
    mapped: Vec<f32>,
    logits: Vec<f32>,
    time: DraftTiming,
}

impl<'m> EarlyExit<'m> {
    /// Drafting with the exit after `layer` blocks (None: the deepest in the
    /// file) over the first `vocab` tokens of the draft vocabulary (0: all).
    pub fn new(model: &crate::model::Model, heads: &'m Heads, layer: Option<usize>, vocab: usize) -> Result<Self> {
        if heads.exits.is_empty() {
            bail!("the heads file has no exit heads");
        }
        let exit = match layer {
            Some(l) => match heads.exits.iter().position(|e| e.layer == l) {
                Some(i) => i,
                None => bail!("--spec-exit-layer {l}: the heads file has exits after {:?} layers", heads.exits.iter().map(|e| e.layer).collect::<Vec<_>>()),
            },
            // exits are in layer order
            None => heads.exits.len() - 1,
        };
        let out = heads.draft_output(model, vocab)?;
        Ok(EarlyExit {
            heads,
            out,
            exit,
            s: Scratch::default(),
            hidden: Vec::new(),
            rows: 0,
            mapped: Vec::new(),
            logits: Vec::new(),
            time: DraftTiming::default(),
        })
    }
}

impl Drafter for EarlyExit<'_> {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let t0 = Instant::now();
        let head = &self.heads.exits[self.exit];
        let sess = &mut *ctx.target;
        let m = sess.model;
        let d = m.cfg.n_embd;
        let n0 = ctx.history.len() - 1;
        sess.kv.remove_from(n0, 0..head.layer);
        // the target's adapters: the rows it reuses must be its own
        self.s.set_adapters(sess.scratch.adapters());
        self.hidden.clear();
        self.rows = 0;
        let mut out = Vec::with_capacity(k);
        let mut tok = *ctx.history.last().expect("a history");
        // the draft's own tokens must fit in the cache after the history
        let k = k.min(sess.n_ctx().saturating_sub(n0 + 1));
        let output = self.out.as_ref().map_or(m.output(), |(o, _)| o);
        while out.len() < k {
            m.embed(&[tok], &mut self.s)?;
            m.blocks(0..head.layer, n0 + self.rows, &mut sess.kv, &mut self.s, Rounding::AsSteps, None)?;
            self.hidden.extend_from_slice(&self.s.x[..d]);
            self.rows += 1;
            head.logits(m, &self.hidden[(self.rows - 1) * d..], output, &mut self.mapped, &mut self.s, &mut self.logits);
            let best = argmax(&self.logits);
            tok = match &self.out {
                Some((_, ids)) => ids[best],
                None => best as u32,
            };
            out.push(tok);
        }
        self.time.record(t0, out.len());
        Ok(out)
    }
    fn reuse(&self) -> Option<(usize, usize, &[f32])> {
        (self.rows > 0).then(|| (self.heads.exits[self.exit].layer, self.rows, &self.hidden[..]))
    }
    fn rollback(&mut self, _n: usize) {
        self.rows = 0;
    }
    fn ms_per_token(&self) -> Option<f64> {
        self.time.ema
    }
    fn perf(&self) -> (f64, usize) {
        (self.time.ms, self.time.n)
    }
    fn name(&self) -> &str {
        "early-exit"
    }
}

/// `--early-exit-threshold P` (lossy, CALM-style): a token is emitted from
/// the first exit head whose top probability reaches P, and the remaining
/// blocks are skipped for it; their keys and values at its position are
/// filled from its hidden state at the exit (CALM's state propagation: one
/// K/V projection per skipped block, so later tokens attend to something
/// close to what the full model would have written, at ~2% of a block's
/// cost; a deferred batched fill would cost a full pass of those blocks
/// later and delay nothing it could save). Not lossless.
pub struct LossyExit<'m> {
    heads: &'m Heads,
    pub threshold: f32,
    /// The output rows of the draft vocabulary: the confidence test runs on
    /// them (a tenth of the output matrix), the full head only on exit.
    check: Option<(crate::ops::linear::Linear, Vec<u32>)>,
    s2: Scratch,
    mapped: Vec<f32>,
    /// `RLLAMA_EXIT_FULL_KV` (a diagnosis): the skipped blocks run in full,
    /// only the emitted logits are the head's.
    full_kv: bool,
    /// Tokens stepped, tokens that exited early, blocks run, blocks in all.
    pub tokens: usize,
    pub exited: usize,
    pub blocks_run: usize,
    pub blocks_total: usize,
}

impl<'m> LossyExit<'m> {
    /// Exits of `heads`, confidence measured over the first `vocab` tokens
    /// of the draft vocabulary (0: all).
    pub fn new(model: &crate::model::Model, heads: &'m Heads, threshold: f32, vocab: usize) -> Result<Self> {
        let check = heads.draft_output(model, vocab)?;
        let full_kv = std::env::var_os("RLLAMA_EXIT_FULL_KV").is_some();
        Ok(LossyExit { heads, threshold, check, s2: Scratch::default(), mapped: Vec::new(), full_kv, tokens: 0, exited: 0, blocks_run: 0, blocks_total: 0 })
    }

    /// One token at `pos0` (the cache holds 0..pos0 in every block): the
    /// logits of the next token.
    pub fn step(&mut self, m: &crate::model::Model, tok: u32, pos0: usize, kv: &mut crate::kv_cache::KvCache, s: &mut Scratch) -> Result<Vec<f32>> {
        let n_layer = m.cfg.n_layer;
        self.s2.set_adapters(s.adapters());
        m.embed(&[tok], s)?;
        let mut done = 0;
        let mut logits = Vec::new();
        self.tokens += 1;
        self.blocks_total += n_layer;
        let check = self.check.as_ref().map_or(m.output(), |(o, _)| o);
        // exits are in layer order
        for e in &self.heads.exits {
            m.blocks(done..e.layer, pos0, kv, s, Rounding::AsSteps, None)?;
            done = e.layer;
            e.logits(m, &s.x, check, &mut self.mapped, &mut self.s2, &mut logits);
            if top_prob(&logits, argmax(&logits)) >= self.threshold {
                if self.check.is_some() {
                    // s2 still holds the mapped row: the full vocabulary's logits
                    m.head(&mut self.s2, Rounding::AsSteps, &mut logits);
                }
                if self.full_kv {
                    m.blocks(done..n_layer, pos0, kv, s, Rounding::AsSteps, None)?;
                } else {
                    m.fill_kv(done..n_layer, pos0, kv, s, Rounding::AsSteps)?;
                }
                self.exited += 1;
                self.blocks_run += done;
                return Ok(logits);
            }
        }
        m.blocks(done..n_layer, pos0, kv, s, Rounding::AsSteps, None)?;
        m.head(s, Rounding::AsSteps, &mut logits);
        self.blocks_run += n_layer;
        Ok(logits)
    }

    /// The stderr line with what was skipped.
    pub fn summary(&self) -> String {
        format!(
            "early exit (lossy, threshold {}): {} of {} tokens exited early, {:.1}% of the blocks skipped",
            self.threshold,
            self.exited,
            self.tokens,
            100.0 * (1.0 - self.blocks_run as f64 / self.blocks_total.max(1) as f64)
        )
    }
}
