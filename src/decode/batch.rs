//! Greedy continuations of many prompts generated together: each prompt is
//! evaluated in its own session, then every step runs one token of each
//! unfinished sequence in one pass (`Model::step_many`: the weights are read
//! once for all of them), and a finished sequence's place goes to the next
//! prompt. Every row is rounded as a one-token step, so each continuation
//! is the one `Session::prompt` + `Session::step` give alone.

use super::speculative::argmax;
use super::Session;
use crate::model::{Model, Rounding, Scratch};
use anyhow::Result;

/// Sequences stepped together by default (a 16-token pass of Qwen 1.5B
/// costs ~3 one-token steps on 2 cores: ~5x the tokens per second).
pub const DEFAULT_WIDTH: usize = 16;

/// A prompt and its continuation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Continuation {
    pub tokens: Vec<u32>,
    /// When asked for: the final hidden rows (n_embd each, before the
    /// output norm) of every token but the last (which was never evaluated).
    pub rows: Vec<f32>,
}

/// Each prompt followed by up to `n` tokens the model picks greedily (until
/// a `stop` token, which is kept), `width` sequences at a time, with the
/// final hidden rows when `rows`; `done(i)` is called as prompt i's
/// continuation ends.
pub fn greedy_many(
    model: &Model,
    prompts: &[Vec<u32>],
    n: usize,
    stop: &[u32],
    width: usize,
    rows: bool,
    mut done: impl FnMut(usize),
) -> Result<Vec<Continuation>> {
    let d = model.cfg.n_embd;
    let mut out: Vec<Continuation> = vec![Continuation::default(); prompts.len()];
    // (prompt index, its session, its continuation so far)
    let mut active: Vec<(usize, Session, Continuation)> = Vec::new();
    let mut next = 0;
    let mut s = Scratch::default();
    let mut logits = Vec::new();
    // whether prompt i's continuation `c` is complete
    let ends = |i: usize, c: &Continuation| c.tokens.len() >= prompts[i].len() + n || c.tokens.last().is_some_and(|t| stop.contains(t));
    loop {
        while active.len() < width.max(1) && next < prompts.len() {
            let (i, prompt) = (next, &prompts[next]);
            next += 1;
            let mut sess = Session::new(model, prompt.len() + n, 512)?;
            sess.log_hidden = rows;
            let logits = sess.prompt(prompt)?;
            let mut c = Continuation { tokens: prompt.clone(), rows: sess.take_hidden_log().1 };
            sess.log_hidden = false;
            // the prompt's buffers are not needed for single rows
            sess.scratch = Scratch::default();
            if n > 0 {
                c.tokens.push(argmax(&logits) as u32);
            }
            if ends(i, &c) {
                out[i] = c;
                done(i);
            } else {
                active.push((i, sess, c));
            }
        }
        if active.is_empty() {
            return Ok(out);
        }
        let tokens: Vec<u32> = active.iter().map(|a| *a.2.tokens.last().unwrap_or(&0)).collect();
        let mut kvs: Vec<_> = active.iter_mut().map(|a| &mut a.1.kv).collect();
        model.step_many(&tokens, &mut kvs, &mut s, Rounding::AsSteps, &mut logits)?;
        let nv = logits.len() / tokens.len();
        for (b, a) in active.iter_mut().enumerate() {
            if rows {
                a.2.rows.extend_from_slice(&s.x[b * d..(b + 1) * d]);
            }
            a.2.tokens.push(argmax(&logits[b * nv..(b + 1) * nv]) as u32);
        }
        let mut k = 0;
        while k < active.len() {
            if ends(active[k].0, &active[k].2) {
                let (i, _, c) = active.swap_remove(k);
                out[i] = c;
                done(i);
            } else {
                k += 1;
            }
        }
    }
}
