//! How many rows of the output matrix an MTP head drafts over by default
//! (`heads.draft_vocab_size`), chosen by the graft on its held-out answers.
//!
//! Each row costs draft time (a drafted token reads K rows of the output
//! matrix), while a token outside the first K cannot be drafted. What is
//! missing is mostly rare names the head seldom guesses anyway: on Qwen 0.5B
//! 8,192 rows cover 94% of code answers' tokens against 97% for 16,384, yet
//! accepted 480 of 915 first drafts against 481 of 914, and drafted a token
//! in 0.76-0.89 ms against 1.18-1.22. So the graft weighs, for each size K
//! tried, the head's first-draft agreement on held-out answers against the
//! share of a step's weight bytes K rows read (a step is memory-bound, and
//! an accepted draft saves about a step): it keeps the K with the largest
//! `agreement(K) - rows_bytes(K) / step_bytes`.

use super::mtp::HeldOut;
use super::output_rows;
use crate::model::nextn::Nextn;
use crate::model::{Model, Rounding, Scratch};
use anyhow::Result;

/// The smallest size weighed is the vocabulary over this (then doubling).
const SMALLEST_PART: usize = 128;

/// Sizes weighed: the powers of two from `n_vocab / SMALLEST_PART`, below
/// `n_vocab` and at most `n_order` (Qwen's 151,936 tokens: 2,048 to 65,536).
pub fn sizes_tried(n_vocab: usize, n_order: usize) -> Vec<usize> {
    let first = (n_vocab / SMALLEST_PART).max(1).next_power_of_two();
    std::iter::successors(Some(first), |&k| k.checked_mul(2)).take_while(|&k| k < n_vocab && k <= n_order).collect()
}

/// One size weighed.
#[derive(Clone, Debug)]
pub struct Weighed {
    pub rows: usize,
    /// First-draft agreement on the held-out answers over these rows.
    pub agree: f64,
    /// Their bytes as a share of a step's weight bytes.
    pub cost: f64,
}

/// The sizes of `sizes_tried` weighed on `held` over the leading tokens of
/// `order`, and the one kept (None when none fits or nothing is held out).
pub fn weigh(model: &Model, head: &Nextn, held: &[HeldOut], order: &[u32]) -> Result<(Option<usize>, Vec<Weighed>)> {
    let sizes = sizes_tried(model.cfg.n_vocab, order.len());
    let Some(&k_max) = sizes.last() else { return Ok((None, Vec::new())) };
    let (hits, scored) = prefix_hits(model, head, held, &order[..k_max], &sizes)?;
    if scored == 0 {
        return Ok((None, Vec::new()));
    }
    let out = &model.output().w;
    let step = model.step_bytes() as f64;
    let weighed: Vec<Weighed> =
        sizes.iter().zip(&hits).map(|(&rows, &h)| Weighed { rows, agree: h as f64 / scored as f64, cost: (rows * out.row_bytes) as f64 / step }).collect();
    let mut best: Option<&Weighed> = None;
    for w in &weighed {
        if best.is_none_or(|b| w.agree - w.cost > b.agree - b.cost) {
            best = Some(w);
        }
    }
    Ok((best.map(|b| b.rows), weighed))
}

/// The head's first-draft hits on `held` (from each answer's first scored
/// position) over each leading `sizes[i]` of `ids`, and the positions scored.
fn prefix_hits(model: &Model, head: &Nextn, held: &[HeldOut], ids: &[u32], sizes: &[usize]) -> Result<(Vec<usize>, usize)> {
    let d = model.cfg.n_embd;
    let out = output_rows(model, ids)?;
    let mut hits = vec![0; sizes.len()];
    let mut scored = 0;
    let (mut s, mut rows_s, mut logits) = (Scratch::default(), Scratch::default(), Vec::new());
    for h in held {
        let n = h.tokens.len();
        let mut kv = head.new_cache(model, n)?;
        head.forward(model, &h.tokens, &h.hprev, 0, &mut kv, &mut s)?;
        let from = h.from.min(n);
        for (c, rows) in s.x[from * d..n * d].chunks(ROWS_AT_ONCE * d).enumerate() {
            let m = rows.len() / d;
            rows_s.set_hidden(rows, m);
            model.head_normed(&out, &mut rows_s, Rounding::Batch, &mut logits);
            for (i, l) in logits.chunks_exact(ids.len()).enumerate() {
                let want = h.want[from + c * ROWS_AT_ONCE + i];
                // the first largest logit within each prefix, as drafting's argmax
                let (mut best, mut at) = (0, 0);
                for (hit, &k) in hits.iter_mut().zip(sizes) {
                    for (j, &v) in l.iter().enumerate().take(k).skip(at) {
                        if v > l[best] {
                            best = j;
                        }
                    }
                    at = k;
                    *hit += (ids[best] as usize == want) as usize;
                }
            }
            scored += m;
        }
    }
    Ok((hits, scored))
}

/// Rows of hidden states per output-matrix pass.
const ROWS_AT_ONCE: usize = 32;
