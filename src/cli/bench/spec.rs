//! `rllama bench --spec-type T [--spec-heads H]`: a tg row with drafting on
//! (`tg128+mtp` for draft-mtp), measured like the plain tg row but on real
//! text, since drafts need it: greedy generation of n tokens after a
//! chat-formatted request (`--spec-prompt`), end-of-generation tokens
//! banned so every run generates all n.

use crate::decode::drafters::{Drafters, NgramOpts, SpecType};
use crate::decode::generator::Generator;
use crate::decode::speculative::Drafter;
use crate::decode::Session;
use crate::heads::Heads;
use crate::model::Model;
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

/// Nanoseconds to generate `n` tokens greedily after `prompt` with `types`
/// drafting, and a line per drafter on its acceptance.
pub fn run(m: &Model, tok: &Tokenizer, heads: Option<&Heads>, types: &[SpecType], prompt: &[u32], n: usize) -> Result<(u64, Vec<String>)> {
    let mtp = heads.and_then(|h| h.mtp.as_ref()).or(m.nextn().first());
    let mut ds = Drafters::from_types(types, &NgramOpts::default(), None, heads.map(|h| (m, h, None)), mtp, DRAFT_CAP)?;
    let len = ds.length();
    let sess = Session::new(m, prompt.len() + n + DRAFT_CAP + 1, 512)?;
    let mut gen = Generator::new(sess, Sampler::new(SamplerParams { temp: 0.0, ..Default::default() }), Some(&mut ds as &mut dyn Drafter), len);
    gen.banned = (0..m.cfg.n_vocab as u32).filter(|&t| tok.is_eog(t)).collect();
    gen.prompt(prompt)?;
    let t0 = Instant::now();
    let mut done = 0;
    while done < n {
        done += gen.next()?.len();
    }
    let ns = (t0.elapsed().as_nanos() as u64).max(1);
    drop(gen);
    let lines = ds
        .entries()
        .iter()
        .map(|e| {
            let pos = e.by_position().map(|p| format!("; {p}")).unwrap_or_default();
            format!("{}: {} drafted, {} accepted ({:.1}%){pos}", e.d.name(), e.n_drafted, e.n_accept, e.accept_pct())
        })
        .collect();
    Ok((ns, lines))
}
