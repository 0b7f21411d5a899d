//! The generation loop every completion front-end drives: the prompt in one
//! pass, the first token sampled from its logits, then rounds of
//! `speculative::round` — plain one-token steps without a drafter, draft and
//! verify with one. Front-ends only print and decide when to stop.

use super::speculative::{accept_rule, round_with, DraftLength, Drafter, NoDrafter, SpecStats};
use super::Session;
use crate::sampling::Sampler;
use anyhow::Result;
use std::time::Instant;

pub struct Generator<'m, 'd> {
    pub sess: Session<'m>,
    pub sampler: Sampler,
    drafter: Option<&'d mut dyn Drafter>,
    pub len: DraftLength,
    pub stats: SpecStats,
    /// Every token so far (prompt and generated).
    pub history: Vec<u32>,
    /// Tokens never sampled (llama.cpp's -inf logit bias, e.g. --ignore-eos).
    pub banned: Vec<u32>,
    /// Logits of the last prompt token, until the first token is sampled.
    logits: Option<Vec<f32>>,
}

impl<'m, 'd> Generator<'m, 'd> {
    pub fn new(sess: Session<'m>, sampler: Sampler, drafter: Option<&'d mut dyn Drafter>, len: DraftLength) -> Self {
        Generator { sess, sampler, drafter, len, stats: SpecStats::default(), history: Vec::new(), banned: Vec::new(), logits: None }
    }

    /// Evaluate the prompt (all of it, in batches of n_batch).
    pub fn prompt(&mut self, tokens: &[u32]) -> Result<()> {
        for &t in tokens {
            self.sampler.accept(t);
        }
        self.logits = Some(self.sess.prompt(tokens)?);
        self.history.extend_from_slice(tokens);
        Ok(())
    }

    /// Room in the context for the next call.
    pub fn context_full(&self) -> bool {
        self.logits.is_none() && self.sess.kv.len >= self.sess.n_ctx()
    }

    /// The next tokens: one, or several when drafts were accepted.
    pub fn next(&mut self) -> Result<Vec<u32>> {
        let out = if let Some(mut l) = self.logits.take() {
            let t0 = Instant::now();
            for &b in &self.banned {
                l[b as usize] = f32::NEG_INFINITY;
            }
            let t = self.sampler.sample(&l);
            self.sampler.accept(t);
            self.sess.perf.t_sample_ms += t0.elapsed().as_secs_f64() * 1e3;
            self.sess.perf.n_sample += 1;
            vec![t]
        } else {
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
