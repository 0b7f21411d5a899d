//! Drafts looked up in the history itself (no model): llama.cpp's
//! `ngram-simple`, `ngram-map-k` and `ngram-mod`, and `ngram-lookup`, prompt
//! lookup decoding that backs off from long to short n-grams and lets several
//! earlier occurrences vote on each drafted token.
//!
//! Every index grows with the history (the new positions only, never a rescan)
//! and shrinks with it when a chat rewinds. Proposals cost microseconds; the
//! draft-length policy decides how many of their tokens are worth verifying.

use super::speculative::{DraftCtx, DraftTiming as Timing, Drafter};
use anyhow::Result;
use std::collections::HashMap;
use std::time::Instant;

/// A hash of the n tokens at `t` (FNV-1a over the ids).
fn key(t: &[u32]) -> u64 {
    t.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| (h ^ x as u64).wrapping_mul(0x0100_0000_01b3))
}

/// How much of `mine` (a drafter's copy of the history) still stands in
/// `history`: all of it unless a rewind changed it. Rewinds arrive as
/// rollbacks; one that did not is caught by the last known token, so the
/// common case costs one comparison, not a rescan.
fn kept(mine: &[u32], history: &[u32]) -> usize {
    let l = mine.len();
    if l > history.len() || (l > 0 && mine[l - 1] != history[l - 1]) {
        mine.iter().zip(history).take_while(|(a, b)| a == b).count()
    } else {
        l
    }
}

/// The history and, for each n-gram size, the start positions of its
/// n-grams by content (one copy of the history for all sizes).
#[derive(Default)]
struct Grams {
    sizes: Vec<usize>,
    /// per size: key -> ascending start positions
    maps: Vec<HashMap<u64, Vec<u32>>>,
    /// The history the maps cover (a copy: rollbacks need the keys).
    tokens: Vec<u32>,
}

impl Grams {
    fn new(sizes: impl IntoIterator<Item = usize>) -> Self {
        let sizes: Vec<usize> = sizes.into_iter().collect();
        Grams { maps: sizes.iter().map(|_| HashMap::new()).collect(), sizes, tokens: Vec::new() }
    }

    /// Bring the maps to `history` (append its new tokens, or first drop
    /// what a rewind took back).
    fn sync(&mut self, history: &[u32]) {
        self.truncate(kept(&self.tokens, history));
        for i in self.tokens.len()..history.len() {
            self.tokens.push(history[i]);
            for (&n, map) in self.sizes.iter().zip(&mut self.maps) {
                if i + 1 >= n {
                    let j = i + 1 - n;
                    map.entry(key(&self.tokens[j..=i])).or_default().push(j as u32);
                }
            }
        }
    }

    /// Keep the first `len` tokens.
    fn truncate(&mut self, len: usize) {
        while self.tokens.len() > len {
            let end = self.tokens.len();
            for (&n, map) in self.sizes.iter().zip(&mut self.maps) {
                if end >= n {
                    let k = key(&self.tokens[end - n..end]);
                    if let Some(v) = map.get_mut(&k) {
                        v.pop();
                        if v.is_empty() {
                            map.remove(&k);
                        }
                    }
                }
            }
            self.tokens.pop();
        }
    }

    /// Earlier starts (most recent first) of the size-`c` n-gram ending the
    /// history, the suffix itself excluded, with a start <= `max_start`.
    fn matches(&self, c: usize, max_start: usize) -> impl Iterator<Item = usize> + '_ {
        let (n, l) = (self.sizes[c], self.tokens.len());
        let suffix = if l >= n { &self.tokens[l - n..] } else { &[][..] };
        let list = if l >= n { self.maps[c].get(&key(suffix)).map(|v| &v[..]).unwrap_or(&[]) } else { &[] };
        list.iter().rev().map(|&j| j as usize).filter(move |&j| j <= max_start && j + n < l && self.tokens[j..j + n] == *suffix)
    }
}

/// llama.cpp's `ngram-simple`: the last `n` tokens looked up at their most
/// recent earlier occurrence; the `m` tokens after it are the draft, when at
/// least `n` follow it.
pub struct NgramSimple {
    idx: Grams,
    m: usize,
    time: Timing,
}

impl NgramSimple {
    pub fn new(n: usize, m: usize) -> Self {
        NgramSimple { idx: Grams::new([n.max(1)]), m: m.max(1), time: Timing::default() }
    }

    fn lookup(&self) -> Option<usize> {
        let (n, l) = (self.idx.sizes[0], self.idx.tokens.len());
        // llama.cpp: cur_len (history without the last token) > n + m + 1;
        // a start j in 1..=cur_len-n-1 with at least n tokens after it
        // before the last one
        if l <= n + self.m + 2 {
            return None;
        }
        // only the most recent occurrence counts (as llama.cpp's backward search)
        let j = self.idx.matches(0, l - n - 2).find(|&j| j > 0)?;
        (l - 1 - (j + n) >= n).then_some(j)
    }
}

impl Drafter for NgramSimple {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let t0 = Instant::now();
        self.idx.sync(ctx.history);
        let out = match self.lookup() {
            Some(j) => {
                let (n, l) = (self.idx.sizes[0], self.idx.tokens.len());
                let copy = self.m.min(l - 1 - (j + n)).min(k);
                self.idx.tokens[j + n..j + n + copy].to_vec()
            }
            None => Vec::new(),
        };
        self.time.record(t0, out.len());
        Ok(out)
    }
    fn class(&mut self, ctx: &DraftCtx) -> Option<usize> {
        self.idx.sync(ctx.history);
        self.lookup().map(|_| 0)
    }
    fn rollback(&mut self, n: usize) {
        self.idx.truncate(n);
    }
    fn ms_per_token(&self) -> Option<f64> {
        self.time.ema
    }
    fn perf(&self) -> (f64, usize) {
        (self.time.ms, self.time.n)
    }
    fn name(&self) -> &str {
        "ngram-simple"
    }
}

/// llama.cpp's `ngram-map-k`: keys of `n` tokens mapped to their most
/// recent occurrence followed by a whole `m`-gram; the draft is that m-gram,
/// cut to the number of tokens accepted the last time the key drafted.
pub struct NgramMapK {
    idx: Grams,
    m: usize,
    /// Per key: tokens accepted at its last draft (m until it drafts).
    accepted: HashMap<u64, usize>,
    last: Option<u64>,
    time: Timing,
}

impl NgramMapK {
    pub fn new(n: usize, m: usize) -> Self {
        NgramMapK { idx: Grams::new([n.max(1)]), m: m.max(1), accepted: HashMap::new(), last: None, time: Timing::default() }
    }

    fn lookup(&self) -> Option<(usize, u64)> {
        let (n, l) = (self.idx.sizes[0], self.idx.tokens.len());
        if l < 2 * n + self.m + 1 {
            return None;
        }
        // a start with the whole m-gram after it, before the last token
        let j = self.idx.matches(0, l.checked_sub(n + self.m + 3)?).find(|&j| j > 0)?;
        Some((j, key(&self.idx.tokens[l - n..])))
    }
}

impl Drafter for NgramMapK {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let t0 = Instant::now();
        self.idx.sync(ctx.history);
        self.last = None;
        let out = match self.lookup() {
            Some((j, kk)) => {
                let n = self.idx.sizes[0];
                let len = self.m.min(*self.accepted.get(&kk).unwrap_or(&self.m)).min(k);
                self.last = Some(kk);
                self.idx.tokens[j + n..j + n + len].to_vec()
            }
            None => Vec::new(),
        };
        self.time.record(t0, out.len());
        Ok(out)
    }
    fn class(&mut self, ctx: &DraftCtx) -> Option<usize> {
        self.idx.sync(ctx.history);
        let (_, kk) = self.lookup()?;
        (*self.accepted.get(&kk).unwrap_or(&self.m) > 0).then_some(0)
    }
    fn accepted(&mut self, _drafted: usize, accepted: usize) {
        if let Some(kk) = self.last.take() {
            self.accepted.insert(kk, accepted);
        }
    }
    fn rollback(&mut self, n: usize) {
        self.idx.truncate(n);
    }
    fn ms_per_token(&self) -> Option<f64> {
        self.time.ema
    }
    fn perf(&self) -> (f64, usize) {
        (self.time.ms, self.time.n)
    }
    fn name(&self) -> &str {
        "ngram-map-k"
    }
}

/// Entries of ngram-mod's table (llama.cpp: 4 Mi).
const MOD_TABLE: usize = 4 << 20;
/// Table occupancy above which it is cleared when a sequence starts.
const MOD_MAX_OCCUPANCY: f64 = 0.25;
/// Consecutive drafts with under a quarter accepted before the table is cleared.
const MOD_LOW_STREAK: usize = 5;

/// llama.cpp's `ngram-mod`: a fixed table from a hash of `n_match` tokens to
/// the token that last followed them; drafts chain lookups, and a chain
/// shorter than `n_min` drafts nothing. Cleared after five drafts in a row
/// with under a quarter of their tokens accepted.
pub struct NgramMod {
    n: usize,
    n_max: usize,
    n_min: usize,
    table: Vec<i32>,
    used: usize,
    /// History positions added: starts 0..added have their next token stored.
    added: usize,
    tokens: Vec<u32>,
    low: usize,
    time: Timing,
}

impl NgramMod {
    pub fn new(n_match: usize, n_max: usize, n_min: usize) -> Self {
        NgramMod { n: n_match.max(1), n_max, n_min, table: vec![-1; MOD_TABLE], used: 0, added: 0, tokens: Vec::new(), low: 0, time: Timing::default() }
    }

    fn slot(&self, t: &[u32]) -> usize {
        // llama.cpp's multiplier, over the ids in order
        let h = t.iter().fold(0u64, |h, &x| h.wrapping_mul(6364136223846793005).wrapping_add(x as u64));
        (h % self.table.len() as u64) as usize
    }

    fn reset(&mut self) {
        self.table.fill(-1);
        self.used = 0;
        self.added = 0;
    }

    /// Add the n-grams of the history whose next token is known (the last
    /// token's successor is not).
    fn sync(&mut self, history: &[u32]) {
        let same = kept(&self.tokens, history);
        if same < self.tokens.len() {
            // a rewind: the table cannot forget; entries refer to content
            self.tokens.truncate(same);
            self.added = self.added.min(same.saturating_sub(self.n));
        }
        self.tokens.extend_from_slice(&history[self.tokens.len()..]);
        if self.added == 0 && self.used as f64 > MOD_MAX_OCCUPANCY * self.table.len() as f64 {
            self.reset();
        }
        let l = self.tokens.len();
        while self.added + self.n < l {
            let i = self.added;
            let s = self.slot(&self.tokens[i..i + self.n]);
            if self.table[s] < 0 {
                self.used += 1;
            }
            self.table[s] = self.tokens[i + self.n] as i32;
            self.added += 1;
        }
    }

    fn chain(&self, k: usize) -> Vec<u32> {
        let l = self.tokens.len();
        if l < self.n {
            return Vec::new();
        }
        let mut ctx: Vec<u32> = self.tokens[l - self.n..].to_vec();
        let mut out = Vec::new();
        while out.len() < self.n_max {
            let t = self.table[self.slot(&ctx[ctx.len() - self.n..])];
            if t < 0 {
                break;
            }
            out.push(t as u32);
            ctx.push(t as u32);
        }
        if out.len() < self.n_min {
            return Vec::new();
        }
        out.truncate(k);
        out
    }
}

impl Drafter for NgramMod {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let t0 = Instant::now();
        self.sync(ctx.history);
        let out = self.chain(k);
        self.time.record(t0, out.len());
        Ok(out)
    }
    fn class(&mut self, ctx: &DraftCtx) -> Option<usize> {
        self.sync(ctx.history);
        (!self.chain(self.n_max).is_empty()).then_some(0)
    }
    fn accepted(&mut self, drafted: usize, accepted: usize) {
        if drafted > 0 && (accepted as f64) < 0.25 * drafted as f64 {
            self.low += 1;
            if self.low >= MOD_LOW_STREAK {
                self.reset();
                self.low = 0;
            }
        } else {
            self.low = 0;
        }
    }
    fn rollback(&mut self, n: usize) {
        if n < self.tokens.len() {
            self.tokens.truncate(n);
            self.added = self.added.min(n.saturating_sub(self.n));
        }
    }
    fn ms_per_token(&self) -> Option<f64> {
        self.time.ema
    }
    fn perf(&self) -> (f64, usize) {
        (self.time.ms, self.time.n)
    }
    fn name(&self) -> &str {
        "ngram-mod"
    }
}

/// Earlier occurrences that vote on each token of an `ngram-lookup` draft.
const LOOKUP_CANDIDATES: usize = 8;

/// Prompt lookup decoding with back-off: the longest n-gram (n_max down to
/// n_min) ending the history that occurred before; up to eight of its most
/// recent occurrences continue it, each drafted token is their majority
/// (ties to the most recent), and occurrences that disagree drop out. A
/// continuation may run into the draft itself, so a repeated phrase drafts
/// past the end of its last copy. The acceptance class is the match length.
pub struct NgramLookup {
    idx: Grams,
    time: Timing,
}

impl NgramLookup {
    pub fn new(n_min: usize, n_max: usize) -> Self {
        let n_min = n_min.max(1);
        NgramLookup { idx: Grams::new(n_min..=n_max.max(n_min)), time: Timing::default() }
    }

    /// The longest matching size (position in `idx.sizes`) and its candidates.
    fn lookup(&self) -> Option<(usize, Vec<usize>)> {
        let l = self.idx.tokens.len();
        for (c, &n) in self.idx.sizes.iter().enumerate().rev() {
            if l <= n {
                continue;
            }
            let cands: Vec<usize> = self.idx.matches(c, l - n - 1).take(LOOKUP_CANDIDATES).collect();
            if !cands.is_empty() {
                return Some((c, cands));
            }
        }
        None
    }
}

impl Drafter for NgramLookup {
    fn propose(&mut self, ctx: &mut DraftCtx, k: usize) -> Result<Vec<u32>> {
        let t0 = Instant::now();
        self.idx.sync(ctx.history);
        let mut out = Vec::new();
        if let Some((c, mut cands)) = self.lookup() {
            let (n, h) = (self.idx.sizes[c], &self.idx.tokens);
            let at = |p: usize, out: &[u32]| if p < h.len() { h[p] } else { out[p - h.len()] };
            while out.len() < k && !cands.is_empty() {
                let i = out.len();
                // majority of the candidates' next tokens, ties to the most recent
                let next: Vec<u32> = cands.iter().map(|&j| at(j + n + i, &out)).collect();
                let best =
                    *next.iter().max_by_key(|&&t| (next.iter().filter(|&&u| u == t).count(), std::cmp::Reverse(next.iter().position(|&u| u == t)))).unwrap();
                cands = cands.into_iter().zip(&next).filter(|&(_, &t)| t == best).map(|(j, _)| j).collect();
                out.push(best);
            }
        }
        self.time.record(t0, out.len());
        Ok(out)
    }
    fn n_classes(&self) -> usize {
        self.idx.sizes.len()
    }
    fn class(&mut self, ctx: &DraftCtx) -> Option<usize> {
        self.idx.sync(ctx.history);
        self.lookup().map(|(c, _)| c)
    }
    fn rollback(&mut self, n: usize) {
        self.idx.truncate(n);
    }
    fn ms_per_token(&self) -> Option<f64> {
        self.time.ema
    }
    fn perf(&self) -> (f64, usize) {
        (self.time.ms, self.time.n)
    }
    fn name(&self) -> &str {
        "ngram-lookup"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_grows_and_rewinds() {
        let mut ix = Grams::new([2, 3]);
        ix.sync(&[1, 2, 3, 1, 2]);
        assert_eq!(ix.matches(0, usize::MAX).collect::<Vec<_>>(), vec![0]);
        ix.sync(&[1, 2, 3, 1, 2, 3, 1, 2]);
        assert_eq!(ix.matches(0, usize::MAX).collect::<Vec<_>>(), vec![3, 0]);
        assert_eq!(ix.matches(1, usize::MAX).collect::<Vec<_>>(), vec![2]);
        // a rewind to a different continuation
        ix.sync(&[1, 2, 3, 1, 9]);
        assert_eq!(ix.matches(0, usize::MAX).count(), 0);
        let mut fresh = Grams::new([2, 3]);
        fresh.sync(&[1, 2, 3, 1, 9]);
        assert_eq!(ix.maps.iter().map(HashMap::len).collect::<Vec<_>>(), fresh.maps.iter().map(HashMap::len).collect::<Vec<_>>());
    }
}
