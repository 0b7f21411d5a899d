//! Speculative decoding inside the one decode loop: a `Drafter` proposes up to
//! k tokens, the target evaluates [last, d1..dk] in one batch, verification
//! accepts a prefix, both KV caches are cut back to what was accepted.
//!
//! Drafts are the drafter's top-1 tokens (as llama-speculative drafts), so the
//! draft distribution is a point mass q = δ(d): greedy verification is
//! "accept while d equals the target's choice"; stochastic verification
//! accepts d with probability min(1, p(d)/q(d)) = p(d) and on rejection draws
//! from max(0, p − q) normalized, i.e. p without d. The output distribution is
//! exactly the target sampler's.

use super::Session;
use crate::model::{Model, Outputs, Rounding};
use crate::sampling::Sampler;
use anyhow::Result;
use std::time::Instant;

/// What a drafter sees of the target when it proposes: every accepted token,
/// and the target's session (its model, KV cache and the hidden rows of the
/// last verified tokens), so a drafter can be another model, the target's own
/// first layers, an MTP head on the target's hidden state or an n-gram index.
pub struct DraftCtx<'a, 'm> {
    /// Every accepted token, prompt included; the last one is not yet in the
    /// target's cache.
    pub history: &'a [u32],
    pub target: &'a mut Session<'m>,
}

impl DraftCtx<'_, '_> {
    pub fn model(&self) -> &Model {
        self.target.model
    }
    /// Final hidden rows of the last verified tokens (see `Session::last_hidden`).
    pub fn hidden(&self) -> &[f32] {
        self.target.last_hidden()
    }
}

/// Something that guesses the next tokens: a draft model today; later an MTP
/// head or the target's own early layers, without touching the loop.
pub trait Drafter {
    /// Up to `k` tokens continuing `ctx.history`.
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>>;
    /// Only the first `n` tokens of the history stand; forget the rest.
    fn rollback(&mut self, n: usize);
    /// Measured time of one drafted token, in milliseconds (None until measured).
    fn ms_per_token(&self) -> Option<f64>;
    /// Time spent drafting, tokens drafted (for the statistics block).
    fn perf(&self) -> (f64, usize);
    /// Acceptance classes this drafter's proposals fall in (the policy keeps
    /// an acceptance rate per class: an n-gram match of 6 tokens drafts
    /// better than one of 2).
    fn n_classes(&self) -> usize {
        1
    }
    /// The class a proposal made now would fall in; None when there is
    /// nothing to propose (a cheap look, before the length is chosen).
    fn class(&mut self, _ctx: &DraftCtx) -> Option<usize> {
        Some(0)
    }
    /// Give the policy this drafter's prior acceptance (e.g. a graft's
    /// held-out figures) before its first round; called every round.
    fn prime(&mut self, _len: &mut DraftLength, _slot0: usize) {}
    /// How many of the last proposal's tokens were accepted.
    fn accepted(&mut self, _drafted: usize, _accepted: usize) {}
    /// This round's drafts and the policy slot they were chosen for: the
    /// length comes from `len` (acceptance and costs measured per slot; this
    /// drafter's classes are slots `slot0..slot0 + n_classes()`).
    fn draft_round(&mut self, ctx: &mut DraftCtx, len: &mut DraftLength, slot0: usize, room: usize) -> Result<(usize, Vec<u32>)> {
        self.prime(len, slot0);
        let Some(c) = self.class(ctx) else { return Ok((slot0, Vec::new())) };
        let k = len.choose(slot0 + c, self.ms_per_token()).min(room);
        Ok((slot0 + c, if k > 0 { self.propose(ctx, k)? } else { Vec::new() }))
    }
    /// The name in statistics (`--spec-type` spelling).
    fn name(&self) -> &str {
        "draft-simple"
    }
    /// After `propose`: the drafts' leading rows this drafter already ran
    /// through the target's first blocks (blocks, rows from the last
    /// history token on, their hidden rows), for verification to reuse.
    fn reuse(&self) -> Option<(usize, usize, &[f32])> {
        None
    }
    /// Whether it reads the target's final hidden rows of every token
    /// (`Session::take_hidden_log`; the session then keeps them).
    fn wants_hidden(&self) -> bool {
        false
    }
    /// Extra statistics lines (e.g. per exit head).
    fn details(&self) -> Vec<String> {
        Vec::new()
    }
    /// A draft model's own session timings (for the statistics block).
    fn session_perf(&self) -> Option<&super::Perf> {
        None
    }
}

/// Tokens a draft model catches up per round while drafting goes on (the
/// accepted drafts' last one and the target's token).
const STEADY_CATCHUP: usize = 2;

/// Most history tokens a draft model re-reads to catch up.
const MAX_CATCHUP: usize = 64;

/// A smaller model with the same vocabulary, its own KV cache kept in step.
pub struct DraftModel<'m> {
    pub sess: Session<'m>,
    /// Tokens of the history its cache covers: history[offset..n_past].
    n_past: usize,
    offset: usize,
    /// Stop drafting when the draft's top probability falls below this.
    pub p_min: f32,
    /// Token ids of the draft session's logits when it drafts over a
    /// vocabulary subset (`Session::output`).
    ids: Option<Vec<u32>>,
    ms_ema: Option<f64>,
    t_ms: f64,
    n_drafted: usize,
    n_rounds: usize,
}

impl<'m> DraftModel<'m> {
    pub fn new(model: &'m Model, n_ctx: usize, n_batch: usize, p_min: f32) -> Result<Self> {
        Ok(DraftModel {
            sess: Session::new(model, n_ctx, n_batch)?,
            n_past: 0,
            offset: 0,
            p_min,
            ids: None,
            ms_ema: None,
            t_ms: 0.0,
            n_drafted: 0,
            n_rounds: 0,
        })
    }

    /// Draft over a vocabulary subset: `output` holds the draft model's
    /// output rows of `ids` (`Heads::draft_output`).
    pub fn with_vocab(mut self, output: crate::ops::linear::Linear, ids: Vec<u32>) -> Self {
        self.sess.output = Some(std::sync::Arc::new(output));
        self.ids = Some(ids);
        self
    }
}

/// Drafting time and count of a drafter that costs about the same per token
/// every round, for the policy (`ms_per_token`) and the statistics (`perf`).
#[derive(Default)]
pub struct DraftTiming {
    pub ms: f64,
    pub n: usize,
    pub ema: Option<f64>,
}

impl DraftTiming {
    /// A proposal that started at `t0` and drafted `n` tokens.
    pub fn record(&mut self, t0: Instant, n: usize) {
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.ms += ms;
        self.n += n;
        if n > 0 {
            let per = ms / n as f64;
            self.ema = Some(self.ema.map_or(per, |e| 0.8 * e + 0.2 * per));
        }
    }
}

/// Index of the largest logit (the first one wins ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Softmax probability of the largest logit `logits[best]`.
pub fn top_prob(logits: &[f32], best: usize) -> f32 {
    let m = logits[best];
    let sum: f32 = logits.iter().map(|&l| (l - m).exp()).sum();
    1.0 / sum
}

impl Drafter for DraftModel<'_> {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let history = ctx.history;
        let t0 = Instant::now();
        let mut out = Vec::with_capacity(k);
        if k == 0 {
            return Ok(out);
        }
        // Far behind (drafting was off for a while) or out of room: restart the
        // draft cache on a window of the recent history, so catching up never
        // costs more than MAX_CATCHUP tokens. The window only shapes the drafts;
        // verification keeps the output exact.
        let n = history.len();
        let behind = n - self.n_past.min(n);
        if behind > MAX_CATCHUP || (self.n_past - self.offset) + behind + k >= self.sess.n_ctx() {
            self.sess.kv.truncate(0);
            self.offset = n - n.min(MAX_CATCHUP);
            self.n_past = self.offset;
        }
        if (n - self.offset) + k >= self.sess.n_ctx() {
            return Ok(out);
        }
        // Catch the draft cache up with the accepted history.
        let new = &history[self.n_past..];
        if new.is_empty() {
            return Ok(out); // cannot happen in the loop: the last token is always new
        }
        let mut logits = self.sess.prompt(new)?;
        // Steady drafting catches up one or two tokens per round; a long
        // catch-up after drafting was off is paid once and is not what a
        // drafted token costs: count it as one token of the batch.
        let t_catchup = t0.elapsed().as_secs_f64() * 1e3;
        let catchup_cost = if new.len() <= STEADY_CATCHUP { t_catchup } else { t_catchup / new.len() as f64 };
        self.n_past = history.len();
        for i in 0..k {
            let best = argmax(&logits);
            // The softmax over the vocabulary only when a cut-off asks for it.
            if self.p_min > 0.0 && top_prob(&logits, best) < self.p_min {
                break;
            }
            let tok = match &self.ids {
                Some(ids) => ids[best],
                None => best as u32,
            };
            out.push(tok);
            if i + 1 == k {
                break;
            }
            logits = self.sess.step(tok)?;
            self.n_past += 1;
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        self.t_ms += ms;
        self.n_drafted += out.len();
        if !out.is_empty() {
            let per = (ms - t_catchup + catchup_cost) / out.len() as f64;
            // The first round also evaluates the whole prompt: a later one replaces it.
            self.n_rounds += 1;
            self.ms_ema = Some(match self.ms_ema {
                Some(e) if self.n_rounds > 2 => 0.8 * e + 0.2 * per,
                _ => per,
            });
        }
        Ok(out)
    }

    fn rollback(&mut self, n: usize) {
        if self.n_past > n {
            if n >= self.offset {
                self.sess.kv.truncate(n - self.offset);
            } else {
                self.sess.kv.truncate(0);
                self.offset = n;
            }
            self.n_past = n;
        }
    }

    fn ms_per_token(&self) -> Option<f64> {
        self.ms_ema
    }

    fn perf(&self) -> (f64, usize) {
        (self.t_ms, self.n_drafted)
    }

    fn session_perf(&self) -> Option<&super::Perf> {
        Some(&self.sess.perf)
    }
}

/// What the policy keeps per slot (a drafter's acceptance class).
#[derive(Clone, Debug)]
struct Slot {
    n_max: usize,
    n_min: usize,
    /// Acceptance rate of the drafted token at each position, given the
    /// ones before it were accepted (smoothed): drafters differ in how it
    /// falls with depth (an MTP head chaining on its own rows: 45%, then
    /// 10%; an n-gram match: flat).
    alpha: Vec<f64>,
    /// Rounds that reached each position.
    n_obs: Vec<usize>,
    /// Rounds the prior counts as, and the least weight of a new round in
    /// `alpha`: a generic prior (`ALPHA_PRIOR`, `ALPHA_EMA`) or one measured
    /// on held-out text (`set_prior`: `MEASURED_PRIOR_ROUNDS`, `MEASURED_EMA`).
    prior_rounds: usize,
    ema: f64,
    /// Rounds left before drafting is tried again after it was switched off.
    cooldown: usize,
    /// The next wait between probes.
    backoff: usize,
    /// Drafting rounds since one drafted past the plan (exploring).
    since_explore: usize,
}

impl Slot {
    fn new(n_max: usize, n_min: usize) -> Slot {
        let n = n_max.max(1);
        Slot {
            n_max,
            n_min: n_min.min(n_max),
            alpha: vec![ALPHA_PRIOR; n],
            n_obs: vec![0; n],
            prior_rounds: 1,
            ema: ALPHA_EMA,
            cooldown: 0,
            backoff: 16,
            since_explore: 0,
        }
    }

    /// Acceptance per position for planning: a position no round has
    /// reached yet is assumed no better than the one before it.
    fn effective(&self) -> Vec<f64> {
        let mut out: Vec<f64> = Vec::with_capacity(self.alpha.len());
        for (i, (&a, &n)) in self.alpha.iter().zip(&self.n_obs).enumerate() {
            let a = if n == 0 && i > 0 { a.min(out[i - 1]) } else { a };
            out.push(a.clamp(0.0, 0.999));
        }
        out
    }
}

/// Weight of a new round in the smoothed acceptance rate once the first
/// rounds are in (before that, the plain mean of the rounds and the prior).
const ALPHA_EMA: f64 = 0.15;
/// Expected speed-up below which a draft length is not chosen.
const MIN_GAIN: f64 = 1.04;
/// Acceptance rate assumed before a slot has drafted.
const ALPHA_PRIOR: f64 = 0.7;
/// A prior measured on held-out text (a graft's agreement) counts as this
/// many rounds, and a new round then moves the rate by at least
/// `MEASURED_EMA`. With the generic 1 round and 0.15, one early rejection
/// halved an MTP head's rate and a few more switched drafting off for 16+
/// rounds: simulated with the acceptance bench measured on Zen 3 (90
/// rounds, 300 runs), drafting stayed off in 25-58% of the rounds and gave
/// 1.08-1.22x where 8 rounds and 0.05 give 1.18-1.29x (plain in 0-3%).
const MEASURED_PRIOR_ROUNDS: usize = 8;
const MEASURED_EMA: f64 = 0.05;
/// Drafting rounds between explorations: one round drafts a token past the
/// planned length, so a position left out after a few early rejections is
/// observed again.
const EXPLORE_EVERY: usize = 16;
/// Observations of a position after which it is no longer explored.
const EXPLORE_OBS: usize = 8;

/// Draft length chosen from measured acceptance and measured costs: the k
/// that maximizes expected tokens per millisecond, 0 (plain decoding) when
/// drafting does not pay. The target's batch times are shared; acceptance
/// is kept per slot (drafter and class).
pub struct DraftLength {
    /// The most tokens any slot drafts.
    pub n_max: usize,
    slots: Vec<Slot>,
    /// Target time of a batch of 1..=n_max+1 tokens, smoothed (ms).
    t_target: Vec<Option<f64>>,
    /// Runs seen per batch size.
    n_seen: Vec<usize>,
    /// Rounds since the last plain step (t1 is re-measured every 64).
    since_plain: usize,
    fixed: bool,
}

/// A batch time counts at most this multiple of its estimate (a preempted
/// run is not the batch's cost).
const SLOWER_RUN_CAP: f64 = 1.25;

/// Rounds between re-measurements of a plain step while drafting.
const REMEASURE_PLAIN: usize = 64;

impl DraftLength {
    /// One slot drafting up to `n_max` tokens (at least `n_min` when it drafts).
    pub fn new(n_max: usize, n_min: usize) -> Self {
        Self::with_slots(&[(n_max, n_min)])
    }

    /// One slot per (n_max, n_min).
    pub fn with_slots(limits: &[(usize, usize)]) -> Self {
        let n_max = limits.iter().map(|l| l.0).max().unwrap_or(0);
        let slots = limits.iter().map(|&(n_max, n_min)| Slot::new(n_max, n_min)).collect();
        DraftLength { n_max, slots, t_target: vec![None; n_max + 2], n_seen: vec![0; n_max + 2], since_plain: 0, fixed: false }
    }

    /// Always draft `k` tokens (tests, and measuring acceptance).
    pub fn fixed(k: usize) -> Self {
        let mut l = Self::new(k, k);
        l.fixed = true;
        l
    }

    /// Fixed lengths for several slots (tests).
    pub fn fixed_slots(limits: &[(usize, usize)]) -> Self {
        let mut l = Self::with_slots(limits);
        l.fixed = true;
        l
    }

    pub fn record_target(&mut self, n_tokens: usize, ms: f64) {
        if let (Some(e), Some(c)) = (self.t_target.get_mut(n_tokens), self.n_seen.get_mut(n_tokens)) {
            // The first run of a batch size is cold (caches, page faults) and
            // any run can be preempted: the second run counts if faster, and
            // later ones move the estimate by at most a quarter upwards per
            // run (one 2-token pass at 1.5x its usual time switched Qwen
            // 0.5B's MTP drafting off for the rest of a story).
            *e = Some(match (*e, *c) {
                (Some(v), c) if c >= 2 => 0.7 * v + 0.3 * ms.min(SLOWER_RUN_CAP * v),
                (Some(v), 1) => v.min(ms),
                _ => ms,
            });
            *c += 1;
        }
    }

    pub fn record_acceptance(&mut self, slot: usize, drafted: usize, accepted: usize) {
        let Some(s) = self.slots.get_mut(slot) else { return };
        if drafted == 0 {
            return;
        }
        // positions 0..accepted were accepted; the next one (if drafted) was
        // reached and rejected; later ones were never judged
        for i in 0..drafted.min(accepted + 1).min(s.alpha.len()) {
            let hit = if i < accepted { 1.0 } else { 0.0 };
            s.n_obs[i] += 1;
            let w = (1.0 / (s.n_obs[i] + s.prior_rounds) as f64).max(s.ema);
            s.alpha[i] = (1.0 - w) * s.alpha[i] + w * hit;
        }
    }

    /// Target time for a batch of n tokens: measured, or a line through the
    /// single-token time and the nearest measured larger batch.
    fn t(&self, n: usize) -> Option<f64> {
        if let Some(t) = self.t_target.get(n).copied().flatten() {
            return Some(t);
        }
        let t1 = self.t_target[1]?;
        let near = (2..self.t_target.len()).filter_map(|m| self.t_target[m].map(|t| (m, t))).min_by_key(|&(m, _)| m.abs_diff(n));
        let slope = match near {
            Some((m, tm)) => ((tm - t1) / (m as f64 - 1.0)).max(0.0),
            None => 0.15 * t1,
        };
        Some(t1 + slope * (n as f64 - 1.0))
    }

    /// Whether this round must be a plain step (once per round, before any
    /// slot is asked): plain steps are measured first (the first one is cold),
    /// and re-measured now and then while drafting.
    pub fn plain_round(&mut self) -> bool {
        if self.n_max == 0 || self.fixed {
            return self.n_max == 0;
        }
        self.since_plain += 1;
        if self.n_seen[1] < 2 || self.since_plain > REMEASURE_PLAIN {
            self.since_plain = 0;
            return true;
        }
        false
    }

    /// A prior acceptance for slot `slot` per draft position (e.g. a head's
    /// held-out agreement; positions past the list take its last value),
    /// before anything is observed.
    pub fn set_prior(&mut self, slot: usize, alpha: &[f64]) {
        let Some(&last) = alpha.last() else { return };
        if let Some(s) = self.slots.get_mut(slot).filter(|s| s.n_obs.iter().all(|&n| n == 0)) {
            for (i, a) in s.alpha.iter_mut().enumerate() {
                *a = alpha.get(i).copied().unwrap_or(last).clamp(0.0, 0.999);
            }
            s.prior_rounds = MEASURED_PRIOR_ROUNDS;
            s.ema = MEASURED_EMA;
        }
    }

    /// Plain step time (ms), once measured.
    pub fn t1(&self) -> Option<f64> {
        self.t(1)
    }

    /// The best length for slot `slot` with drafts costing `td` ms each, and
    /// its expected speed relative to plain steps (None until the plain step
    /// is measured).
    pub fn plan(&self, slot: usize, td: f64) -> Option<(usize, f64)> {
        let s = self.slots.get(slot)?;
        let t1 = self.t(1)?;
        let a = s.effective();
        let mut best = (0usize, 0.0f64);
        for k in s.n_min.max(1)..=s.n_max {
            let Some(tv) = self.t(k + 1) else { continue };
            // the target's token, plus each draft while all before it stand
            let expected = 1.0
                + a[..k]
                    .iter()
                    .scan(1.0, |p, &x| {
                        *p *= x;
                        Some(*p)
                    })
                    .sum::<f64>();
            let speed = expected * t1 / (k as f64 * td + tv);
            if speed > best.1 {
                best = (k, speed);
            }
        }
        Some(best)
    }

    /// How many tokens slot `slot` should draft now (0 = not worth it).
    pub fn choose(&mut self, slot: usize, draft_ms: Option<f64>) -> usize {
        let Some(&Slot { n_max, n_min, .. }) = self.slots.get(slot) else { return 0 };
        if self.fixed || n_max == 0 {
            return n_max;
        }
        let Some(t1) = self.t(1) else { return 0 };
        let Some(td) = draft_ms else { return n_max.min(4).max(n_min) };
        // drafting must beat plain steps by a margin: at break-even it only
        // adds the noise of its estimates
        let best = match self.plan(slot, td) {
            Some((k, speed)) if speed > MIN_GAIN => (k, speed),
            _ => (0, 0.0),
        };
        if std::env::var_os("RLLAMA_DEBUG_SPEC").is_some() {
            eprintln!(
                "[spec] slot {slot} alpha {:.3} t1 {t1:.2} ms draft {td:.3} ms/token t2 {:.2} t5 {:.2} -> k {}",
                self.slots[slot].alpha[0],
                self.t(2).unwrap_or(0.0),
                self.t(5).unwrap_or(0.0),
                best.0
            );
        }
        if best.0 > 0 {
            let s = &mut self.slots[slot];
            s.cooldown = 0;
            s.backoff = 16;
            s.since_explore += 1;
            let k = best.0;
            if k < s.n_max && s.n_obs[k] < EXPLORE_OBS && s.since_explore >= EXPLORE_EVERY {
                s.since_explore = 0;
                return k + 1;
            }
            return k;
        }
        // Even if every draft were accepted, would drafting beat plain steps
        // by 10%? If not, do not spend time probing at all.
        let upper = (n_min.max(1)..=n_max).filter_map(|k| self.t(k + 1).map(|tv| (k as f64 + 1.0) / (k as f64 * td + tv))).fold(0.0f64, f64::max);
        if upper < 1.1 / t1 {
            return 0;
        }
        // Not worth it now. Probe again now and then (acceptance and costs
        // change with the text), backing off while probes keep failing, so
        // the probes cost little next to plain decoding.
        let s = &mut self.slots[slot];
        if s.cooldown == 0 {
            s.cooldown = s.backoff;
            s.backoff = (s.backoff * 2).min(1024);
        }
        s.cooldown -= 1;
        // a probe drafts one token: it measures the first position, which
        // deeper ones only add to
        if s.cooldown > 0 {
            0
        } else {
            n_min.max(1)
        }
    }
}

/// Counters for llama-speculative's statistics.
#[derive(Default, Debug, Clone)]
pub struct SpecStats {
    pub n_drafted: usize,
    pub n_accept: usize,
    pub n_rounds: usize,
}

/// llama.cpp's -inf logit bias: `banned` tokens are never sampled (ids
/// outside the vocabulary are ignored).
pub fn ban(logits: &mut [f32], banned: &[u32]) {
    for &b in banned {
        if let Some(v) = logits.get_mut(b as usize) {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Verify `drafts` against the target's rows of logits (row i follows the
/// history plus drafts[..i]); returns the accepted drafts plus one more token
/// (the target's correction, or its bonus token when all were accepted).
/// The sampler's repetition history is advanced by every returned token.
pub fn verify(sampler: &mut Sampler, rows: &[&[f32]], drafts: &[u32]) -> Vec<u32> {
    verify_with(sampler, rows, drafts, accept_rule)
}

/// Accept a point-mass draft d with probability min(1, p(d) / q(d)) = p(d).
pub fn accept_rule(p_d: f32, u: f32) -> bool {
    u < p_d
}

/// `verify` with the stochastic acceptance rule as a parameter (tests check
/// that a wrong rule is caught).
pub fn verify_with(sampler: &mut Sampler, rows: &[&[f32]], drafts: &[u32], rule: fn(f32, f32) -> bool) -> Vec<u32> {
    let mut out = Vec::with_capacity(drafts.len() + 1);
    for (i, row) in rows.iter().enumerate() {
        let greedy = sampler.dist(row);
        let top = sampler.candidates()[0].id;
        let draft = drafts.get(i).copied();
        if let Some(d) = draft {
            let accept = if greedy {
                top == d
            } else {
                let p_d = sampler.candidates().iter().find(|c| c.id == d).map_or(0.0, |c| c.p);
                let u = sampler.uniform();
                rule(p_d, u)
            };
            if accept {
                sampler.accept(d);
                out.push(d);
                continue;
            }
        }
        // Rejection (p without d, renormalized) or the bonus token (p itself).
        let t = if greedy {
            top
        } else {
            let r = sampler.uniform();
            sampler.draw(r, draft)
        };
        sampler.accept(t);
        out.push(t);
        return out;
    }
    out
}

/// One speculative round on a session: draft, verify in one target batch,
/// cut both caches back. `history` holds every token so far; its last one is
/// not yet in the target cache. Returns the new tokens (at least one).
pub fn round(
    sess: &mut Session,
    drafter: &mut dyn Drafter,
    len: &mut DraftLength,
    sampler: &mut Sampler,
    history: &[u32],
    stats: &mut SpecStats,
) -> Result<Vec<u32>> {
    round_with(sess, drafter, len, sampler, history, stats, accept_rule, &[])
}

/// `round` with the stochastic acceptance rule as a parameter (for tests).
#[allow(clippy::too_many_arguments)]
pub fn round_with(
    sess: &mut Session,
    drafter: &mut dyn Drafter,
    len: &mut DraftLength,
    sampler: &mut Sampler,
    history: &[u32],
    stats: &mut SpecStats,
    rule: fn(f32, f32) -> bool,
    banned: &[u32],
) -> Result<Vec<u32>> {
    let last = *history.last().expect("a history");
    let room = sess.n_ctx().saturating_sub(sess.n_past() + 1);
    let (slot, drafts) =
        if room > 0 && !len.plain_round() { drafter.draft_round(&mut DraftCtx { history, target: sess }, len, 0, room)? } else { (0, Vec::new()) };
    let mut batch = Vec::with_capacity(drafts.len() + 1);
    batch.push(last);
    batch.extend_from_slice(&drafts);
    let reuse = if drafts.is_empty() { None } else { drafter.reuse() };
    if reuse.is_none() {
        // a drafter may have written ahead in the target's cache (early
        // exit): verification starts right after the history
        sess.truncate(history.len() - 1);
    }
    let n0 = sess.kv.len(sess.model.cfg.n_layer - 1);
    if n0 + 1 != history.len() {
        anyhow::bail!("the target cache holds {n0} tokens, the history {}: out of step", history.len());
    }
    let t0 = Instant::now();
    let mut logits = match reuse {
        Some((layers, done, hidden)) => {
            let done = done.min(batch.len());
            let d = sess.model.cfg.n_embd;
            // rows past the batch (a draft that looked further) are dropped
            sess.kv.remove_from(n0 + done, 0..layers);
            sess.eval_resumed(&batch, layers, done, &hidden[..done * d], &Outputs::All)?
        }
        None => sess.eval(&batch, &Outputs::All, Rounding::AsSteps)?,
    };
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    len.record_target(batch.len(), ms);
    sess.perf.t_eval_ms += ms;
    sess.perf.n_eval += 1;
    let nv = sess.model.cfg.n_vocab;
    for row in logits.chunks_exact_mut(nv) {
        ban(row, banned);
    }
    let rows: Vec<&[f32]> = logits.chunks_exact(nv).collect();
    let ts = Instant::now();
    let out = verify_with(sampler, &rows, &drafts, rule);
    sess.perf.t_sample_ms += ts.elapsed().as_secs_f64() * 1e3;
    sess.perf.n_sample += out.len();
    let accepted = out.len() - 1;
    // Keep `last` and the accepted drafts; the final token is evaluated next round.
    sess.kv.truncate(n0 + 1 + accepted);
    sess.keep_hidden(1 + accepted);
    drafter.rollback(history.len() + accepted);
    if !drafts.is_empty() {
        stats.n_drafted += drafts.len();
        stats.n_accept += accepted;
        len.record_acceptance(slot, drafts.len(), accepted);
        drafter.accepted(drafts.len(), accepted);
    }
    stats.n_rounds += 1;
    Ok(out)
}

/// No drafting: every round is one plain step.
pub struct NoDrafter;

impl Drafter for NoDrafter {
    fn propose(&mut self, _: &mut DraftCtx, _: usize) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }
    fn rollback(&mut self, _: usize) {}
    fn ms_per_token(&self) -> Option<f64> {
        None
    }
    fn perf(&self) -> (f64, usize) {
        (0.0, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::SamplerParams;

    /// A preempted run does not become a batch's cost: a slow second run
    /// is ignored, a slow later one moves the estimate by at most a quarter.
    #[test]
    fn slow_runs_barely_move_batch_times() {
        let mut l = DraftLength::new(4, 0);
        l.record_target(2, 17.0);
        l.record_target(2, 26.0);
        assert_eq!(l.t(2), Some(17.0));
        l.record_target(2, 100.0);
        assert!((l.t(2).unwrap() - (0.7 * 17.0 + 0.3 * 17.0 * SLOWER_RUN_CAP)).abs() < 1e-9);
        // faster runs still count in full
        l.record_target(2, 10.0);
        assert!(l.t(2).unwrap() < 17.0);
    }

    /// A policy with plain step 10 ms and n-token batches 10 + n ms.
    fn measured(n_max: usize) -> DraftLength {
        let mut l = DraftLength::new(n_max, 0);
        for n in 1..=n_max + 1 {
            for _ in 0..2 {
                l.record_target(n, 10.0 + if n > 1 { n as f64 } else { 0.0 });
            }
        }
        l
    }

    #[test]
    fn acceptance_is_kept_per_draft_position() {
        // the first draft always stands, the second never: one token per
        // round (a single rate would be 50% and pick two or more)
        let mut l = measured(4);
        for _ in 0..20 {
            l.record_acceptance(0, 3, 1);
        }
        assert_eq!(l.plan(0, 0.5).unwrap().0, 1);
        // every draft stands: the longest
        let mut l = measured(4);
        for _ in 0..20 {
            l.record_acceptance(0, 4, 4);
        }
        assert_eq!(l.plan(0, 0.5).unwrap().0, 4);
        // positions not reached count as no better than the one before
        let mut l = measured(4);
        for _ in 0..20 {
            l.record_acceptance(0, 1, 0);
        }
        assert_eq!(l.plan(0, 0.5).unwrap().0, 1, "a first draft never accepted: the rest are no better");
        assert!(l.plan(0, 0.5).unwrap().1 < 1.0);
    }

    #[test]
    fn a_prior_per_position_plans_before_any_round() {
        // an MTP head's graft measured 45% then 10%: one draft from the start
        let mut l = measured(4);
        l.set_prior(0, &[0.45, 0.1]);
        assert_eq!(l.plan(0, 0.5).unwrap().0, 1);
        // a flat 90% (an exit head's single agreement): the longest
        let mut l = measured(4);
        l.set_prior(0, &[0.9]);
        assert_eq!(l.plan(0, 0.5).unwrap().0, 4);
    }

    #[test]
    fn a_measured_prior_outlasts_an_early_rejection_but_yields_to_evidence() {
        // a graft's 45%: drafting pays (1.45 x 10 / 12.5 ms); one rejection
        // must not halve the rate and switch drafting off
        let mut l = measured(1);
        l.set_prior(0, &[0.45]);
        l.record_acceptance(0, 1, 0);
        let (k, speed) = l.plan(0, 0.5).unwrap();
        assert!(k == 1 && speed > MIN_GAIN, "one rejection switched a measured 45% off: k {k}, speed {speed}");
        // but a run of rejections does
        for _ in 0..40 {
            l.record_acceptance(0, 1, 0);
        }
        assert!(l.plan(0, 0.5).unwrap().1 < MIN_GAIN, "40 rejections still plan drafting");
    }

    #[test]
    fn a_position_rejected_early_is_explored_again() {
        // position 2 rejected in its first rounds, though it stands 90% of
        // the time: exploration drafts past the plan now and then until it
        // has enough observations, and the plan then takes it in
        let mut l = measured(2);
        l.set_prior(0, &[0.9, 0.2]);
        let mut rounds_at_2 = 0;
        for round in 0..400 {
            let k = l.choose(0, Some(0.5));
            assert!(k >= 1, "round {round}: drafting stopped");
            rounds_at_2 += (k == 2) as usize;
            // first draft always stands; the second stands 9 times in 10
            let accepted = if k == 2 && round % 10 != 0 { 2 } else { 1 };
            l.record_acceptance(0, k, accepted);
        }
        assert!(rounds_at_2 > 300, "position 2 drafted in {rounds_at_2} of 400 rounds");
    }

    /// Chi-square statistic of observed counts against probabilities.
    fn chi2(counts: &[usize], p: &[f64]) -> f64 {
        let n: usize = counts.iter().sum();
        counts.iter().zip(p).map(|(&c, &p)| (c as f64 - n as f64 * p).powi(2) / (n as f64 * p)).sum()
    }

    /// First output token's frequencies from speculative sampling with a
    /// fixed draft token, over many seeds, against the target distribution.
    fn first_token_chi2(rule: fn(f32, f32) -> bool) -> f64 {
        let logits = [1.0f32, 0.2, -0.5, 2.0, 0.0, -1.0, 0.7, 1.5];
        let next = [0.3f32, 0.1, 0.0, -0.2, 0.5, 0.4, 0.0, 0.1];
        let m = logits.iter().fold(f32::MIN, |a, &b| a.max(b));
        let e: Vec<f64> = logits.iter().map(|&l| ((l - m) as f64).exp()).collect();
        let z: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|v| v / z).collect();
        let mut counts = [0usize; 8];
        for seed in 0..40_000u32 {
            let params = SamplerParams { seed, temp: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() };
            let mut s = Sampler::new(params);
            // The draft proposes token 6 (p = 0.12): accepted or rejected, the
            // first output must still follow p.
            let out = verify_with(&mut s, &[&logits, &next], &[6], rule);
            counts[out[0] as usize] += 1;
        }
        chi2(&counts, &p)
    }

    #[test]
    fn stochastic_verification_keeps_the_target_distribution() {
        // 7 degrees of freedom: P(chi2 > 30) ~ 1e-4.
        let x = first_token_chi2(accept_rule);
        assert!(x < 30.0, "chi2 {x}");
    }

    #[test]
    fn a_biased_acceptance_rule_is_caught() {
        let x = first_token_chi2(|p, u| u < p.sqrt());
        assert!(x > 30.0, "a wrong rule went unnoticed (chi2 {x})");
        let x = first_token_chi2(|_, _| true);
        assert!(x > 30.0, "always-accept went unnoticed (chi2 {x})");
    }

    #[test]
    fn greedy_verification_accepts_the_matching_prefix() {
        let mut s = Sampler::new(SamplerParams { temp: 0.0, seed: 1, ..Default::default() });
        let r0 = [0.0f32, 3.0, 1.0];
        let r1 = [2.0f32, 0.0, 1.0];
        let r2 = [0.0f32, 0.0, 5.0];
        // drafts 1 (matches r0's argmax), then 2 (r1 wants 0): stop with 0.
        assert_eq!(verify(&mut s, &[&r0, &r1, &r2], &[1, 2]), vec![1, 0]);
        // all accepted: bonus token from the last row.
        assert_eq!(verify(&mut s, &[&r0, &r1, &r2], &[1, 0]), vec![1, 0, 2]);
    }
}
