//! `--spec-type early-exit`: the target drafts for itself with its first L
//! blocks and an exit head (`rllama graft`, `--spec-heads`). A drafted
//! token's rows through those blocks are exactly what a full step computes
//! (fast mode is batch-invariant, exact mode rounds verification rows as
//! steps), so they stay in the target's cache and verification resumes from
//! block L for them (`Session::eval_resumed`); only the last draft, which
//! the draft never ran, goes through every block.

use super::speculative::DraftLength;
use super::speculative::{argmax, top_prob, DraftCtx, DraftTiming, Drafter};
use crate::heads::{ExitSpec, Heads};
use crate::model::{Rounding, Scratch};
use anyhow::{bail, Result};
use std::time::Instant;

pub struct EarlyExit<'m> {
    heads: &'m Heads,
    /// The output matrix over the draft vocabulary, and its token ids.
    out: Option<(crate::ops::linear::Linear, Vec<u32>)>,
    /// Exits it may draft with (indexes into `heads.exits`; all of them
    /// unless `--spec-exit-layer` picked one). Each is a class of the
    /// length policy: acceptance and draft time are kept per exit, and each
    /// round drafts with the exit expected to be fastest.
    allowed: Vec<usize>,
    /// The exit of the last proposal.
    exit: usize,
    /// Measured time of a drafted token per exit (ms, smoothed).
    ms: Vec<Option<f64>>,
    /// Weight bytes a drafted token reads per exit (its blocks, its map and
    /// the draft output), and a plain step's (every block and the output):
    /// generation reads weights at the memory's pace, so their ratio
    /// estimates a draft token's time before it is measured.
    bytes: Vec<f64>,
    step_bytes: f64,
    /// Per exit: proposals, tokens drafted, tokens accepted.
    counts: Vec<[usize; 3]>,
    /// Whether the exits' held-out agreement was given to the policy.
    primed: bool,
    s: Scratch,
    /// Hidden rows after the exit's first blocks of the tokens drafted from, in order.
    hidden: Vec<f32>,
    rows: usize,
    /// The row after the tail blocks.
    tail_x: Vec<f32>,
    mapped: Vec<f32>,
    logits: Vec<f32>,
    time: DraftTiming,
}

/// Weight of a new draft-time measurement.
const MS_EMA: f64 = 0.3;

impl<'m> EarlyExit<'m> {
    /// Drafting with the exits of `heads` (only the one written `exit`, as
    /// `L` or `L+T`, when given) over the first `vocab` tokens of the draft
    /// vocabulary (0: all).
    pub fn new(model: &crate::model::Model, heads: &'m Heads, exit: Option<ExitSpec>, vocab: usize) -> Result<Self> {
        if heads.exits.is_empty() {
            bail!("the heads file has no exit heads");
        }
        let allowed = match exit {
            Some(x) => match heads.exits.iter().position(|e| e.spec() == x) {
                Some(i) => vec![i],
                None => {
                    bail!("--spec-exit-layer {x}: the heads file has exits {}", heads.exits.iter().map(|e| e.spec().to_string()).collect::<Vec<_>>().join(", "))
                }
            },
            None => (0..heads.exits.len()).collect(),
        };
        let out = heads.draft_output(model, vocab)?;
        let n_layer = model.cfg.n_layer;
        let mat = |l: &crate::ops::linear::Linear| (l.w.rows * l.w.row_bytes) as f64;
        let blocks = |r: std::ops::Range<usize>| r.map(|il| model.block_bytes(il) as f64).sum::<f64>();
        let step_bytes = model.step_bytes() as f64;
        let out_bytes = mat(out.as_ref().map_or(model.output(), |(o, _)| o));
        let bytes = heads.exits.iter().map(|e| blocks(0..e.layer) + blocks(n_layer - e.tail..n_layer) + mat(&e.map) + out_bytes).collect();
        Ok(EarlyExit {
            bytes,
            step_bytes,
            heads,
            out,
            exit: allowed[0],
            allowed,
            ms: vec![None; heads.exits.len()],
            counts: vec![[0; 3]; heads.exits.len()],
            primed: false,
            s: Scratch::default(),
            hidden: Vec::new(),
            rows: 0,
            tail_x: Vec::new(),
            mapped: Vec::new(),
            logits: Vec::new(),
            time: DraftTiming::default(),
        })
    }

    /// Draft time per token of exit `i`: measured, else scaled by weight
    /// bytes read from a measured exit, else from a plain step `t1`.
    fn est_ms(&self, i: usize, t1: f64) -> f64 {
        if let Some(t) = self.ms[i] {
            return t;
        }
        match (0..self.ms.len()).find_map(|j| self.ms[j].map(|t| (j, t))) {
            Some((j, t)) => t * self.bytes[i] / self.bytes[j],
            None => t1 * self.bytes[i] / self.step_bytes,
        }
    }
}

impl Drafter for EarlyExit<'_> {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let t0 = Instant::now();
        let head = &self.heads.exits[self.exit];
        let sess = &mut *ctx.target;
        let m = sess.model;
        let (d, n_layer) = (m.cfg.n_embd, m.cfg.n_layer);
        let tail = n_layer - head.tail..n_layer;
        let n0 = ctx.history.len() - 1;
        sess.kv.remove_from(n0, 0..head.layer);
        sess.kv.remove_from(n0, tail.clone());
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
            let pos = n0 + self.rows;
            m.embed(&[tok], &mut self.s)?;
            m.blocks(0..head.layer, pos, &mut sess.kv, &mut self.s, Rounding::AsSteps, None)?;
            self.hidden.extend_from_slice(&self.s.x[..d]);
            self.rows += 1;
            let x: &[f32] = if tail.is_empty() {
                &self.hidden[(self.rows - 1) * d..]
            } else {
                // the last blocks on the skipped state; their cache rows at
                // the drafted positions are the draft's own (verification
                // writes the full model's over them)
                m.blocks(tail.clone(), pos, &mut sess.kv, &mut self.s, Rounding::AsSteps, None)?;
                self.tail_x.clear();
                self.tail_x.extend_from_slice(&self.s.x[..d]);
                &self.tail_x
            };
            head.logits(m, x, output, &mut self.mapped, &mut self.s, &mut self.logits);
            let best = argmax(&self.logits);
            tok = match &self.out {
                Some((_, ids)) => ids[best],
                None => best as u32,
            };
            out.push(tok);
        }
        // the tail's rows are the draft's own: verification runs those
        // blocks again from the exit on
        sess.kv.remove_from(n0, tail);
        if !out.is_empty() {
            let per = t0.elapsed().as_secs_f64() * 1e3 / out.len() as f64;
            let e = &mut self.ms[self.exit];
            *e = Some(e.map_or(per, |v| (1.0 - MS_EMA) * v + MS_EMA * per));
        }
        self.time.record(t0, out.len());
        Ok(out)
    }
    fn prime(&mut self, len: &mut DraftLength, slot0: usize) {
        if !self.primed {
            // the graft's held-out agreement: what a first draft token is accepted at
            for (i, e) in self.heads.exits.iter().enumerate() {
                if let Some(a) = e.agree {
                    len.set_prior(slot0 + i, &[a]);
                }
            }
            self.primed = true;
        }
    }
    fn draft_round(&mut self, ctx: &mut DraftCtx, len: &mut DraftLength, slot0: usize, room: usize) -> Result<(usize, Vec<u32>)> {
        self.prime(len, slot0);
        // the exit expected fastest now; with none worth it, the length
        // policy decides on probing that one
        let best = len.t1().and_then(|t1| {
            self.allowed.iter().filter_map(|&i| len.plan(slot0 + i, self.est_ms(i, t1)).map(|(_, speed)| (i, speed))).max_by(|a, b| a.1.total_cmp(&b.1))
        });
        let i = best.map_or(self.exit, |b| b.0);
        if std::env::var_os("RLLAMA_DEBUG_SPEC").is_some() {
            if let Some((_, speed)) = best {
                eprintln!("[spec] early-exit: exit {} expected {speed:.3}x plain", self.heads.exits[i].spec());
            }
        }
        // nothing measured yet: the policy's first probe measures it
        let td = len.t1().filter(|_| self.ms.iter().any(Option::is_some)).map(|t1| self.est_ms(i, t1));
        let k = len.choose(slot0 + i, td).min(room);
        self.exit = i;
        Ok((slot0 + i, if k > 0 { self.propose(ctx, k)? } else { Vec::new() }))
    }
    fn n_classes(&self) -> usize {
        self.heads.exits.len()
    }
    fn accepted(&mut self, drafted: usize, accepted: usize) {
        let c = &mut self.counts[self.exit];
        c[0] += 1;
        c[1] += drafted;
        c[2] += accepted;
    }
    fn details(&self) -> Vec<String> {
        self.allowed
            .iter()
            .map(|&i| {
                let (e, c) = (&self.heads.exits[i], self.counts[i]);
                let ms = self.ms[i].map_or("-".into(), |t| format!("{t:.2}"));
                let prior = e.agree.map_or("-".into(), |a| format!("{:.1}%", 100.0 * a));
                format!(
                    "exit {:>5}: {} drafts, {} tokens drafted, {} accepted ({:.1}%), {ms} ms per drafted token, graft agreement {prior}",
                    e.spec().to_string(),
                    c[0],
                    c[1],
                    c[2],
                    100.0 * c[2] as f64 / c[1].max(1) as f64
                )
            })
            .collect()
    }
    fn reuse(&self) -> Option<(usize, usize, &[f32])> {
        (self.rows > 0).then(|| (self.heads.exits[self.exit].layer, self.rows, &self.hidden[..]))
    }
    fn rollback(&mut self, _n: usize) {
        self.rows = 0;
    }
    fn ms_per_token(&self) -> Option<f64> {
        self.ms[self.exit]
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
        // exits are in layer order; those with a tail are drafting exits
        for e in self.heads.exits.iter().filter(|e| e.tail == 0) {
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
