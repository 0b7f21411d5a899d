//! llama.cpp's default sampler chain, in its order: penalties, top-k, top-p,
//! min-p, temperature, then a seeded draw. `temp <= 0` is greedy.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};

#[derive(Clone, Debug)]
pub struct SamplerParams {
    pub seed: u32,
    pub temp: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_last_n: i32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
}

/// llama.cpp's LLAMA_DEFAULT_SEED: pick a random seed.
pub const DEFAULT_SEED: u32 = 0xFFFF_FFFF;

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            seed: DEFAULT_SEED,
            temp: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_last_n: 64,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Cand {
    pub id: u32,
    pub logit: f32,
    pub p: f32,
}

pub struct Sampler {
    pub params: SamplerParams,
    rng: StdRng,
    last: VecDeque<u32>,
    cands: Vec<Cand>,
}

impl Sampler {
    pub fn new(params: SamplerParams) -> Self {
        let seed = if params.seed == DEFAULT_SEED { rand::random::<u32>() } else { params.seed };
        Sampler { rng: StdRng::seed_from_u64(seed as u64), params, last: VecDeque::new(), cands: Vec::new() }
    }

    /// Remember a token (prompt or generated) for the repetition penalties.
    pub fn accept(&mut self, tok: u32) {
        let n = self.params.repeat_last_n;
        if n == 0 {
            return;
        }
        self.last.push_back(tok);
        if n > 0 && self.last.len() > n as usize {
            self.last.pop_front();
        }
    }

    /// Rebuild the penalty window from a token history (after a rewind): the
    /// same window as accepting those tokens one by one.
    pub fn reset_history(&mut self, history: &[u32]) {
        self.last.clear();
        let n = self.params.repeat_last_n;
        let keep = if n < 0 { history.len() } else { history.len().min(n as usize) };
        self.last.extend(&history[history.len() - keep..]);
    }

    /// Pick the next token from one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.dist(logits) {
            return self.cands[0].id;
        }
        let r: f32 = self.rng.gen();
        self.draw(r, None)
    }

    /// Run the chain on one row of logits, leaving the final candidates and
    /// their probabilities in `candidates()`. True when greedy (one candidate, p = 1).
    pub fn dist(&mut self, logits: &[f32]) -> bool {
        let p = self.params.clone();
        self.cands.clear();
        self.cands.extend(logits.iter().enumerate().map(|(i, &l)| Cand { id: i as u32, logit: l, p: 0.0 }));
        self.penalties(&p);
        if p.temp <= 0.0 {
            // greedy: the first maximum
            let mut best = 0;
            for (i, c) in self.cands.iter().enumerate() {
                if c.logit > self.cands[best].logit {
                    best = i;
                }
            }
            let c = self.cands[best];
            self.cands.clear();
            self.cands.push(Cand { p: 1.0, ..c });
            return true;
        }
        // top-k (sorts descending)
        let k = if p.top_k <= 0 { self.cands.len() } else { (p.top_k as usize).min(self.cands.len()) };
        self.cands.sort_by(|a, b| b.logit.total_cmp(&a.logit));
        self.cands.truncate(k.max(1));
        // top-p
        if p.top_p < 1.0 {
            softmax(&mut self.cands);
            let mut cum = 0.0f32;
            let mut keep = self.cands.len();
            for (i, c) in self.cands.iter().enumerate() {
                cum += c.p;
                if cum >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            self.cands.truncate(keep);
        }
        // min-p
        if p.min_p > 0.0 && p.min_p <= 1.0 {
            let max = self.cands.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.logit));
            let thr = max + p.min_p.ln();
            let kept: Vec<Cand> = self.cands.iter().copied().filter(|c| c.logit >= thr).collect();
            if !kept.is_empty() {
                self.cands = kept;
            }
        }
        for c in self.cands.iter_mut() {
            c.logit /= p.temp;
        }
        softmax(&mut self.cands);
        false
    }

    /// The candidates of the last `dist` call.
    pub fn candidates(&self) -> &[Cand] {
        &self.cands
    }

    /// A uniform draw in [0, 1) from the sampler's generator.
    pub fn uniform(&mut self) -> f32 {
        self.rng.gen()
    }

    /// Draw from the last `dist` with uniform `r`, optionally with one token
    /// removed and the rest renormalized (speculative rejection).
    pub fn draw(&self, r: f32, exclude: Option<u32>) -> u32 {
        let total: f32 = if exclude.is_some() { self.cands.iter().filter(|c| Some(c.id) != exclude).map(|c| c.p).sum() } else { 1.0 };
        let r = r * total;
        let mut cum = 0.0f32;
        let mut last = self.cands[0].id;
        for c in self.cands.iter().filter(|c| Some(c.id) != exclude) {
            cum += c.p;
            last = c.id;
            if r < cum {
                return c.id;
            }
        }
        last
    }

    fn penalties(&mut self, p: &SamplerParams) {
        if self.last.is_empty() || (p.repeat_penalty == 1.0 && p.frequency_penalty == 0.0 && p.presence_penalty == 0.0) {
            return;
        }
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in &self.last {
            *counts.entry(t).or_default() += 1;
        }
        for (&t, &n) in &counts {
            let Some(c) = self.cands.get_mut(t as usize) else { continue };
            if c.logit <= 0.0 {
                c.logit *= p.repeat_penalty;
            } else {
                c.logit /= p.repeat_penalty;
            }
            c.logit -= n as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

fn softmax(c: &mut [Cand]) {
    let max = c.iter().fold(f32::NEG_INFINITY, |m, c| m.max(c.logit));
    let mut sum = 0.0f32;
    for x in c.iter_mut() {
        x.p = (x.logit - max).exp();
        sum += x.p;
    }
    for x in c.iter_mut() {
        x.p /= sum;
    }
}
