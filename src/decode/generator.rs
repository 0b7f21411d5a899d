//! The generation loop every front-end drives (completion, chat, speculative):
//! tokens are appended (a prompt, a chat turn), the first next token is
//! sampled from the last appended token's logits, then rounds of
//! `speculative::round` follow — plain one-token steps without a drafter,
//! draft and verify with one. `rewind` takes tokens back (chat's prefix
//! reuse, /regen, /clear) and rolls the sampler's penalty window back with
//! them. Front-ends only print and decide when to stop.

use super::speculative::{accept_rule, ban, round_with, DraftLength, Drafter, NoDrafter, SpecStats};
use super::Session;
use crate::sampling::Sampler;
use anyhow::{bail, Result};
use std::time::Instant;

pub struct Generator<'m, 'd> {
    pub sess: Session<'m>,
    pub sampler: Sampler,
    drafter: Option<&'d mut dyn Drafter>,
    pub len: DraftLength,
    pub stats: SpecStats,
    /// Every token so far (appended and generated). The target's cache holds
    /// all of them, or all but the last (generated, not yet evaluated).
    history: Vec<u32>,
    /// Tokens never sampled (llama.cpp's -inf logit bias, e.g. --ignore-eos).
    pub banned: Vec<u32>,
    /// Logits of the last appended token, until the next token is sampled.
    logits: Option<Vec<f32>>,
}

impl<'m, 'd> Generator<'m, 'd> {
    pub fn new(mut sess: Session<'m>, sampler: Sampler, drafter: Option<&'d mut dyn Drafter>, len: DraftLength) -> Self {
        sess.log_hidden = drafter.as_ref().is_some_and(|d| d.wants_hidden());
        Generator { sess, sampler, drafter, len, stats: SpecStats::default(), history: Vec::new(), banned: Vec::new(), logits: None }
    }

    pub fn history(&self) -> &[u32] {
        &self.history
    }

    /// Evaluate the prompt (all of it, in batches of n_batch).
    pub fn prompt(&mut self, tokens: &[u32]) -> Result<()> {
        self.append(tokens)
    }

    /// Append `tokens` after the history and evaluate them (with the last
    /// generated token if it is not in the cache yet); the next token is
    /// sampled from the last one's logits.
    pub fn append(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            bail!("nothing to append");
        }
        let n_past = self.sess.n_past();
        let mut todo = self.history[n_past.min(self.history.len())..].to_vec();
        todo.extend_from_slice(tokens);
        self.logits = Some(self.sess.prompt(&todo)?);
        for &t in tokens {
            self.sampler.accept(t);
        }
        self.history.extend_from_slice(tokens);
        Ok(())
    }

    /// Keep only the first `n` tokens of the history: the caches (target and
    /// draft) and the sampler's penalty window roll back with it.
    pub fn rewind(&mut self, n: usize) {
        if n >= self.history.len() {
            return;
        }
        self.history.truncate(n);
        // the last kept token is evaluated again by the next append or round
        self.sess.truncate(n.saturating_sub(1));
        self.logits = None;
        if let Some(d) = self.drafter.as_deref_mut() {
            d.rollback(n);
        }
        self.sampler.reset_history(&self.history);
    }

    /// No room in the context for the next token.
    pub fn context_full(&self) -> bool {
        self.logits.is_none() && self.sess.n_past() >= self.sess.n_ctx()
    }

    /// The next tokens: one, or several when drafts were accepted.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Vec<u32>> {
        let out = if let Some(mut l) = self.logits.take() {
            let t0 = Instant::now();
            ban(&mut l, &self.banned);
            let t = self.sampler.sample(&l);
            self.sampler.accept(t);
            self.sess.perf.t_sample_ms += t0.elapsed().as_secs_f64() * 1e3;
            self.sess.perf.n_sample += 1;
            vec![t]
        } else {
            if self.history.is_empty() {
                bail!("nothing to continue: append tokens first");
            }
            let mut none = NoDrafter;
            let drafter: &mut dyn Drafter = match self.drafter.as_deref_mut() {
                Some(d) => d,
                None => &mut none,
            };
            round_with(&mut self.sess, drafter, &mut self.len, &mut self.sampler, &self.history, &mut self.stats, accept_rule, &self.banned)?
        };
        self.history.extend_from_slice(&out);
        Ok(out)
    }
}
