//! What the front-ends print and check around a draft model (`rllama
//! speculative`, `rllama cli -md DRAFT`, chat with `-md`): llama.cpp's
//! vocabulary compatibility check and llama-speculative's statistics block.

use crate::decode::drafters::Drafters;
use crate::decode::speculative::SpecStats;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};

/// llama.cpp's draft/target vocabulary check (common_speculative_are_compatible).
pub fn check_compatible(t: &Tokenizer, d: &Tokenizer) -> Result<()> {
    if t.model != d.model {
        bail!("error: draft model vocab type ({}) does not match the target's ({})", d.model, t.model);
    }
    if t.add_bos != d.add_bos || t.add_eos != d.add_eos || t.bos != d.bos || t.eos != d.eos {
        bail!(
            "error: draft model vocab must match the target's: special tokens differ (add_bos {} vs {}, bos {:?} vs {:?}, add_eos {} vs {}, eos {:?} vs {:?})",
            d.add_bos,
            t.add_bos,
            d.bos,
            t.bos,
            d.add_eos,
            t.add_eos,
            d.eos,
            t.eos
        );
    }
    let (nt, nd) = (t.n_vocab(), d.n_vocab());
    if nt.abs_diff(nd) > 128 {
        bail!(
            "error: draft model vocab must closely match the target's: target vocab size {nt} does not match draft vocab size {nd} (difference {}, max 128)",
            nt.abs_diff(nd)
        );
    }
    for i in 5..nt.min(nd) {
        if t.token_text(i as u32) != d.token_text(i as u32) {
            bail!(
                "error: draft model vocab must match the target's: token {i} content differs (target {:?}, draft {:?})",
                t.token_text(i as u32),
                d.token_text(i as u32)
            );
        }
    }
    Ok(())
}

/// llama-speculative's statistics block (stderr), then each drafter's
/// counts and timings.
pub fn print_stats(n_draft: usize, stats: &SpecStats, drafters: &Drafters, n_input: usize, enc_s: f64, n_gen: i64, dec_s: f64) {
    eprintln!("encoded {n_input:4} tokens in {enc_s:8.3} seconds, speed: {:8.3} t/s", n_input as f64 / enc_s.max(1e-9));
    eprintln!("decoded {n_gen:4} tokens in {dec_s:8.3} seconds, speed: {:8.3} t/s", n_gen as f64 / dec_s.max(1e-9));
    eprintln!();
    eprintln!("n_draft   = {n_draft}");
    eprintln!("n_predict = {n_gen}");
    eprintln!("n_drafted = {}", stats.n_drafted);
    eprintln!("n_accept  = {}", stats.n_accept);
    eprintln!("accept    = {:.3}%", 100.0 * stats.n_accept as f64 / stats.n_drafted.max(1) as f64);
    eprintln!("rounds    = {} (target batches; draft length chosen per round from measured acceptance and costs)", stats.n_rounds);
    for e in drafters.entries() {
        let (d_ms, d_n) = e.d.perf();
        eprintln!();
        eprintln!("{}: {} drafts, {} tokens drafted, {} accepted ({:.3}%)", e.d.name(), e.n_proposals, e.n_drafted, e.n_accept, e.accept_pct());
        eprintln!(
            "common_perf_print:        eval time = {:10.2} ms / {:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
            d_ms,
            d_n,
            d_ms / d_n.max(1) as f64,
            d_n as f64 * 1e3 / d_ms.max(1e-9)
        );
        if let Some(line) = e.by_position() {
            eprintln!("  {line}");
        }
        for line in e.d.details() {
            eprintln!("  {line}");
        }
        if let Some(dp) = e.d.session_perf() {
            eprintln!("common_perf_print: prompt eval time = {:10.2} ms / {:5} tokens", dp.t_prompt_ms, dp.n_prompt);
        }
    }
    eprintln!();
    eprintln!("target:");
}
