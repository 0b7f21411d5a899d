//! `--spec-type draft-mtp`: a multi-token-prediction head drafts from the
//! target's own hidden state (llama.cpp's algorithm). Its cache holds, at
//! each position p of the history, the head's block run on the pair
//! (target hidden row of p - 1, token p); the target's rows come from the
//! session's hidden log (every verified pass). A round catches the head up
//! to the last history token, whose output is the first draft; further
//! drafts chain on the head's own output rows. Lossless through
//! verification.

use super::speculative::{argmax, top_prob, DraftCtx, DraftLength, DraftTiming, Drafter};
use crate::kv_cache::KvCache;
use crate::model::nextn::Nextn;
use crate::model::{Model, Rounding, Scratch};
use crate::ops::linear::Linear;
use crate::ops::norm::rms_norm_rows;
use anyhow::Result;
use std::time::Instant;

/// Positions caught up at once beyond which the catch-up (a prompt's) is
/// not counted as drafting time.
const LONG_CATCHUP: usize = 16;

pub struct MtpDrafter<'m> {
    head: &'m Nextn,
    /// Its own cache (made at the first round, as long as the target's).
    kv: Option<KvCache>,
    /// Head cache positions `0..valid` hold pairs with the target's rows.
    valid: usize,
    /// The target's final hidden rows after its output norm, by position.
    h: Vec<f32>,
    /// The output matrix over the draft vocabulary, and its token ids.
    out: Option<(Linear, Vec<u32>)>,
    s: Scratch,
    /// The last row on its way to logits.
    s_out: Scratch,
    logits: Vec<f32>,
    time: DraftTiming,
    /// Acceptance per draft position the graft measured (the policy's
    /// prior; empty: none), and whether the policy has it yet.
    prior: Vec<f64>,
    primed: bool,
    /// Drafting stops at a token the head gives less than this probability.
    p_min: f32,
}

impl<'m> MtpDrafter<'m> {
    /// `prior`: the head's held-out acceptance per draft position (may be empty).
    pub fn new(head: &'m Nextn, out: Option<(Linear, Vec<u32>)>, prior: Vec<f64>, p_min: f32) -> Result<Self> {
        Ok(MtpDrafter {
            head,
            kv: None,
            valid: 0,
            h: Vec::new(),
            out,
            s: Scratch::default(),
            s_out: Scratch::default(),
            logits: Vec::new(),
            time: DraftTiming::default(),
            prior,
            primed: false,
            p_min,
        })
    }

    /// Take the target's newly logged rows (normed) into `h`.
    fn take_rows(&mut self, ctx: &mut DraftCtx) {
        let m = ctx.target.model;
        let d = m.cfg.n_embd;
        let (pos0, rows) = ctx.target.take_hidden_log();
        if rows.is_empty() {
            return;
        }
        // positions never logged stay zero rows (the head sees no state there)
        self.h.resize(pos0 * d, 0.0);
        let start = self.h.len();
        self.h.resize(start + rows.len(), 0.0);
        rms_norm_rows(&rows, m.output_norm(), m.cfg.eps, &mut self.h[start..]);
    }

    /// Catch the head up to the last history token, then draft up to `k`;
    /// also the time a long catch-up took (a prompt's: not a draft cost).
    fn run(&mut self, m: &Model, history: &[u32], kv: &mut KvCache, k: usize) -> Result<(Vec<u32>, std::time::Duration)> {
        let d = m.cfg.n_embd;
        let il = self.head.il;
        let n = history.len();
        let k = k.min(kv.n_ctx.saturating_sub(n));
        let mut t_catchup = std::time::Duration::ZERO;
        if k == 0 {
            return Ok((Vec::new(), t_catchup));
        }
        // pairs (h[p - 1], x[p]) for p in from..n; h of position -1 is zeros
        let from = self.valid.min(n - 1);
        let mut hrows = vec![0f32; (n - from) * d];
        for p in from.max(1)..n {
            if p * d <= self.h.len() {
                hrows[(p - from) * d..(p - from + 1) * d].copy_from_slice(&self.h[(p - 1) * d..p * d]);
            }
        }
        kv.remove_from(from, il..il + 1);
        let mut at = from;
        if n - from > LONG_CATCHUP {
            let t = Instant::now();
            self.head.forward(m, &history[from..n - 1], &hrows[..(n - 1 - from) * d], from, kv, &mut self.s)?;
            t_catchup = t.elapsed();
            at = n - 1;
        }
        self.head.forward(m, &history[at..], &hrows[(at - from) * d..], at, kv, &mut self.s)?;
        self.valid = n;
        let mut out = Vec::with_capacity(k);
        let Some(mut tok) = self.next_token(m) else { return Ok((out, t_catchup)) };
        out.push(tok);
        while out.len() < k {
            let prev = self.s.x[(self.s.n_rows() - 1) * d..].to_vec();
            self.head.forward(m, &[tok], &prev, n - 1 + out.len(), kv, &mut self.s)?;
            let Some(next) = self.next_token(m) else { break };
            tok = next;
            out.push(tok);
        }
        Ok((out, t_catchup))
    }

    /// The head's choice from its last row; None below `p_min`.
    fn next_token(&mut self, model: &Model) -> Option<u32> {
        let d = model.cfg.n_embd;
        let n = self.s.n_rows();
        // the last row only
        self.s_out.set_hidden(&self.s.x[(n - 1) * d..n * d], 1);
        let output = self.out.as_ref().map_or(model.output(), |(o, _)| o);
        model.head_normed(output, &mut self.s_out, Rounding::AsSteps, &mut self.logits);
        let best = argmax(&self.logits);
        if self.p_min > 0.0 && top_prob(&self.logits, best) < self.p_min {
            return None;
        }
        Some(match &self.out {
            Some((_, ids)) => ids[best],
            None => best as u32,
        })
    }
}

impl Drafter for MtpDrafter<'_> {
    fn prime(&mut self, len: &mut DraftLength, slot0: usize) {
        if !self.primed {
            len.set_prior(slot0, &self.prior);
            self.primed = true;
        }
    }
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let t0 = Instant::now();
        self.take_rows(ctx);
        let m = ctx.target.model;
        let mut kv = match self.kv.take() {
            Some(kv) => kv,
            None => self.head.new_cache(m, ctx.target.n_ctx())?,
        };
        let out = self.run(m, ctx.history, &mut kv, k);
        self.kv = Some(kv);
        let (out, t_catchup) = out?;
        self.time.record(t0.checked_add(t_catchup).unwrap_or(t0), out.len());
        Ok(out)
    }
    fn rollback(&mut self, n: usize) {
        // the head's rows past the history were drafts
        self.valid = self.valid.min(n);
    }
    fn ms_per_token(&self) -> Option<f64> {
        self.time.ema
    }
    fn perf(&self) -> (f64, usize) {
        (self.time.ms, self.time.n)
    }
    fn name(&self) -> &str {
        "draft-mtp"
    }
    fn wants_hidden(&self) -> bool {
        true
    }
}
