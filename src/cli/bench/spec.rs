//! `rllama bench --spec-type T [--spec-heads H]`: a tg row with drafting on
//! (`tg128+mtp` for draft-mtp), measured like the plain tg row but on real
//! text, since drafts need it: greedy generation of n tokens after a
//! chat-formatted request (`--spec-prompt`), end-of-generation tokens
//! banned so every run generates all n.

use crate::decode::drafters::{Drafters, NgramOpts, SpecType};
use crate::decode::generator::Generator;
use crate::decode::speculative::{DraftLength, Drafter};
use crate::decode::Session;
use crate::heads::Heads;
use crate::model::Model;
use crate::perplexity::logprob::median;
use crate::sampling::{Sampler, SamplerParams};
use crate::tokenizer::Tokenizer;
use anyhow::Result;
use std::time::Instant;

/// The request generated from unless `--spec-prompt` is given.
pub const DEFAULT_PROMPT: &str = "Write a Python function that returns the n-th Fibonacci number iteratively, then explain it line by line.";

/// Most tokens a drafted round proposes (as `rllama cli`).
const DRAFT_CAP: usize = 16;

/// The suffix of the test name (`mtp` for draft-mtp).
pub fn label(types: &[SpecType]) -> String {
    types.iter().map(|t| t.name().strip_prefix("draft-").unwrap_or(t.name())).collect::<Vec<_>>().join("+")
}

/// The prompt's tokens: `text` as a user message in the model's chat
/// template (plain text when it has none).
pub fn prompt_tokens(m: &Model, tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let rendered = match crate::chat::template::ChatTemplate::new(None, &m.g, tok) {
        Ok(t) => t.render(&[crate::chat::template::Message::new("user", text)], true)?,
        Err(_) => text.to_string(),
    };
    tok.encode(&rendered, true, true)
}

/// One drafter's counts over a run (or, summed, over repetitions).
#[derive(Clone, Default)]
pub struct Tally {
    pub name: String,
    pub drafted: usize,
    pub accepted: usize,
    /// (drafted, accepted) per draft position.
    pub by_pos: Vec<(usize, usize)>,
}

impl Tally {
    /// Add another run's counts of the same drafter.
    pub fn add(&mut self, o: &Tally) {
        self.drafted += o.drafted;
        self.accepted += o.accepted;
        if self.by_pos.len() < o.by_pos.len() {
            self.by_pos.resize(o.by_pos.len(), (0, 0));
        }
        for (a, b) in self.by_pos.iter_mut().zip(&o.by_pos) {
            (a.0, a.1) = (a.0 + b.0, a.1 + b.1);
        }
    }

    /// "NAME: N drafted, M accepted (P%); accepted by draft position: ...".
    pub fn line(&self) -> String {
        let pct = 100.0 * self.accepted as f64 / self.drafted.max(1) as f64;
        let pos = crate::decode::drafters::by_position(&self.by_pos).map(|p| format!("; {p}")).unwrap_or_default();
        format!("{}: {} drafted, {} accepted ({pct:.1}%){pos}", self.name, self.drafted, self.accepted)
    }
}

/// One greedy generation of the bench's request.
pub struct Run {
    /// Nanoseconds of the generation (the prompt excluded).
    pub ns: u64,
    /// Each drafter's counts (none without drafting).
    pub tallies: Vec<Tally>,
    /// The first n generated tokens.
    pub tokens: Vec<u32>,
}

/// Generate `n` tokens greedily after `prompt`, with `o.spec` drafting or
/// (`drafting` false) without: the same loop, sampler and banned tokens, so
/// the two differ only by the drafting.
pub fn run(m: &Model, tok: &Tokenizer, heads: Option<&Heads>, o: &super::BenchOpts, prompt: &[u32], n: usize, drafting: bool) -> Result<Run> {
    let mtp = heads.and_then(|h| h.mtp.as_ref()).or(m.nextn().first());
    let opts = NgramOpts { mtp_p_min: o.draft_p_min, draft_vocab: o.draft_vocab, ..NgramOpts::default() };
    let mut ds = if drafting { Some(Drafters::from_types(&o.spec, &opts, None, heads.map(|h| (m, h, None)), mtp, DRAFT_CAP)?) } else { None };
    let len = ds.as_ref().map_or_else(|| DraftLength::new(0, 0), |d| d.length());
    let sess = Session::new(m, prompt.len() + n + DRAFT_CAP + 1, 512)?;
    let drafter = ds.as_mut().map(|d| d as &mut dyn Drafter);
    let mut gen = Generator::new(sess, Sampler::new(SamplerParams { temp: 0.0, ..Default::default() }), drafter, len);
    gen.banned = (0..m.cfg.n_vocab as u32).filter(|&t| tok.is_eog(t)).collect();
    gen.prompt(prompt)?;
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        done += gen.next()?.len();
    }
    let ns = (t0.elapsed().as_nanos() as u64).max(1);
    let tokens = gen.history()[prompt.len()..].iter().take(n).copied().collect();
    drop(gen);
    let tallies = ds.map_or_else(Vec::new, |ds| {
        ds.entries().iter().map(|e| Tally { name: e.d.name().to_string(), drafted: e.n_drafted, accepted: e.n_accept, by_pos: e.by_pos.clone() }).collect()
    });
    Ok(Run { ns, tallies, tokens })
}

/// The drafting runs' speed against the plain runs' (paired, interleaved)
/// as the stderr line: the median of the pairs' ratios (the mean of the
/// middle two for an even count) and each pair's.
pub fn speedup_line(test: &str, plain: &[u64], drafted: &[u64], n: usize) -> String {
    let mut ratios: Vec<f32> = plain.iter().zip(drafted).map(|(&p, &d)| (p as f64 / d as f64) as f32).collect();
    let each = ratios.iter().map(|r| format!("{r:.2}x")).collect::<Vec<_>>().join(" ");
    ratios.sort_by(f32::total_cmp);
    let median = median(&ratios);
    let ts = |ns: &[u64]| ns.iter().map(|&x| n as f64 * 1e9 / x as f64).sum::<f64>() / ns.len() as f64;
    format!(
        "{test}: {median:.2}x the same greedy generation without drafting (median of {} interleaved pairs: {each}; {:.2} t/s plain, {:.2} t/s drafting)",
        ratios.len(),
        ts(plain),
        ts(drafted)
    )
}

#[cfg(test)]
mod tests {
    use super::speedup_line;

    #[test]
    fn speedup_median_of_even_pairs_is_mean_of_middle_two() {
        // Ratios 1.0, 1.2, 1.4, 2.0: the median is 1.3, not 1.4.
        let line = speedup_line("tg4+x", &[100, 120, 140, 200], &[100, 100, 100, 100], 4);
        assert!(line.starts_with("tg4+x: 1.30x the same"), "{line}");
        let odd = speedup_line("tg4+x", &[100, 300, 120], &[100, 100, 100], 4);
        assert!(odd.starts_with("tg4+x: 1.20x the same"), "{odd}");
    }
}
