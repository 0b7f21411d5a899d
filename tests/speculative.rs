//! Greedy speculative decoding gives exactly the tokens of plain greedy
//! decoding: SmolLM2 and Qwen targets with drafts made by quantizing the same
//! model (Q2_K, Q4_0) with rllama quantize, 200 tokens on five prompts
//! (`RLLAMA_LONG_TESTS=1`; 64 in CI, and Qwen's Q4_0 draft alone), every
//! round drafting 4 tokens (the adaptive length would mostly switch drafting
//! off on these pairs, and the test is about verification).
mod common;

use rllama::decode::speculative::{round, DraftLength, DraftModel, SpecStats};
use rllama::decode::Session;
use rllama::model::Model;
use rllama::quantize_model::{ftype::Ftype, plan::Params, quantize_file, Progress};
use rllama::sampling::{Sampler, SamplerParams};
use rllama::tokenizer::Tokenizer;

const PROMPTS: &[&str] = &[
    "The history of the Roman Empire",
    "fn main() {\n    let v = vec![1, 2, 3];",
    "Once upon a time, in a small village,",
    "The three laws of thermodynamics are",
    "Question: What is the capital of Japan?\nAnswer:",
];
/// Tokens generated per prompt.
fn n_tokens() -> usize {
    common::scaled(64, 200)
}

struct Quiet;
impl Progress for Quiet {
    fn line(&mut self, _: &str) {}
    fn advance(&mut self, _: u64) {}
}

fn greedy() -> Sampler {
    Sampler::new(SamplerParams { temp: 0.0, seed: 1, ..Default::default() })
}

fn plain(model: &Model, prompt: &[u32], tok: &Tokenizer) -> Vec<u32> {
    let mut sess = Session::new(model, 1024, 512).unwrap();
    let mut s = greedy();
    let mut logits = sess.prompt(prompt).unwrap();
    let mut out = Vec::new();
    let n = n_tokens();
    while out.len() < n {
        let t = s.sample(&logits);
        out.push(t);
        if tok.is_eog(t) {
            break;
        }
        logits = sess.step(t).unwrap();
    }
    out
}

fn speculative(model: &Model, draft: &Model, prompt: &[u32], tok: &Tokenizer, stats: &mut SpecStats) -> Vec<u32> {
    let mut sess = Session::new(model, 1024, 512).unwrap();
    let mut drafter = DraftModel::new(draft, 1024, 512, 0.0).unwrap();
    let mut len = DraftLength::fixed(4);
    let mut s = greedy();
    sess.prompt(&prompt[..prompt.len() - 1]).unwrap();
    let mut history = prompt.to_vec();
    let mut out = Vec::new();
    let n = n_tokens();
    'gen: while out.len() < n {
        for t in round(&mut sess, &mut drafter, &mut len, &mut s, &history, stats).unwrap() {
            out.push(t);
            history.push(t);
            if tok.is_eog(t) || out.len() == n {
                break 'gen;
            }
        }
    }
    out
}

fn check(target_file: &str, drafts: &[&str]) {
    let Some(src) = common::model(target_file) else {
        return;
    };
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    let target = Model::load(&src).unwrap();
    let tok = Tokenizer::from_gguf(&target.g).unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| tok.encode(p, true, true).unwrap()).collect();
    let want: Vec<Vec<u32>> = prompts.iter().map(|p| plain(&target, p, &tok)).collect();
    // a directory of this call's own: the tests run in parallel and draft
    // the same types (one file name per process raced between them)
    let dir = tempfile::tempdir().unwrap();
    for ty in drafts {
        let path = dir.path().join(format!("draft-{ty}.gguf"));
        let p = Params { allow_requantize: true, quantize_output: true, ..Default::default() };
        quantize_file(&src, &path, Ftype::parse(ty).unwrap().0, &p, &mut Quiet).unwrap();
        let draft = Model::load(&path).unwrap();
        let mut stats = SpecStats::default();
        for (i, prompt) in prompts.iter().enumerate() {
            let got = speculative(&target, &draft, prompt, &tok, &mut stats);
            assert_eq!(got, want[i], "{target_file} with a {ty} draft, prompt {i}: speculative greedy output differs from plain");
        }
        eprintln!("{target_file} + {ty} draft: {} drafted, {} accepted", stats.n_drafted, stats.n_accept);
        assert!(stats.n_accept > 0 && stats.n_accept < stats.n_drafted, "verification was not exercised both ways");
    }
}

#[test]
fn greedy_speculation_equals_plain_smollm2() {
    check(common::SMOLLM2, &["Q2_K", "Q4_0"]);
}

#[test]
fn greedy_speculation_equals_plain_qwen() {
    // The Q4_K_M target: its K-quant products round differently in batches
    // of 4+ in ggml; verification rounds each row as a one-token step.
    // The Q2_K draft only under RLLAMA_LONG_TESTS=1 (SmolLM2 has both in CI).
    check(common::QWEN, common::scaled::<&[&str]>(&["Q4_0"], &["Q2_K", "Q4_0"]));
}

#[test]
fn incompatible_or_missing_draft_is_one_error_line() {
    let (Some(smol), Some(qwen)) = (common::model(common::SMOLLM2), common::model(common::QWEN)) else {
        return;
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-m".into(), smol.display().to_string(), "-md".into(), qwen.display().to_string()], "vocab"),
        (vec!["-m".into(), smol.display().to_string(), "-md".into(), "/nonexistent/draft.gguf".into()], "cannot open"),
        (vec!["-m".into(), smol.display().to_string()], "draft model is required"),
    ];
    for (args, want) in cases {
        let out = std::process::Command::new(common::bin()).arg("speculative").args(&args).args(["-p", "Hi", "-n", "4"]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want) && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
}

use common::tiny_model;

/// Where a round's drafts come from.
#[derive(Clone, Copy)]
enum Draft<'a> {
    None,
    Model(&'a Model),
    /// n-gram lookups in the history (ngram-lookup, matches of 1-3 tokens)
    Lookup,
    /// An MTP head on the target's hidden rows (draft-mtp)
    Mtp(&'a rllama::model::nextn::Nextn),
}

/// A prompt that repeats, so n-gram lookups draft from the first token on.
const REPEATING: [u32; 7] = [1, 5, 2, 1, 5, 2, 1];

/// Counts of (position, token) over `n` seeds: the 3 tokens after `prompt`,
/// sampled plainly or speculatively (2 drafts a round) with `rule`.
fn token_counts(target: &Model, prompt: &[u32], draft: Draft, n: u32, rule: fn(f32, f32) -> bool) -> Vec<[usize; 8]> {
    use rllama::decode::speculative::{round_with, Drafter};
    let mut counts = vec![[0usize; 8]; 3];
    let mut drafted = 0;
    for seed in 0..n {
        let mut s = Sampler::new(SamplerParams { seed, temp: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() });
        let mut out = Vec::new();
        let mut sess = Session::new(target, 64, 64).unwrap();
        let (mut drafter, mut len): (Box<dyn Drafter>, DraftLength) = match draft {
            Draft::None => {
                let mut logits = sess.prompt(prompt).unwrap();
                while out.len() < 3 {
                    let t = s.sample(&logits);
                    s.accept(t);
                    out.push(t);
                    logits = sess.step(t).unwrap();
                }
                for (i, &t) in out.iter().enumerate() {
                    counts[i][t as usize] += 1;
                }
                continue;
            }
            Draft::Model(d) => (Box::new(DraftModel::new(d, 64, 64, 0.0).unwrap()), DraftLength::fixed(2)),
            Draft::Lookup => (Box::new(rllama::decode::ngram::NgramLookup::new(1, 3)), DraftLength::fixed_slots(&[(2, 2); 3])),
            Draft::Mtp(h) => (Box::new(rllama::decode::mtp::MtpDrafter::new(h, None, Vec::new(), 0.0).unwrap()), DraftLength::fixed(2)),
        };
        sess.log_hidden = drafter.wants_hidden();
        let mut stats = SpecStats::default();
        sess.prompt(&prompt[..prompt.len() - 1]).unwrap();
        let mut history = prompt.to_vec();
        while out.len() < 3 {
            for t in round_with(&mut sess, drafter.as_mut(), &mut len, &mut s, &history, &mut stats, rule, &[]).unwrap() {
                out.push(t);
                history.push(t);
            }
        }
        drafted += stats.n_drafted;
        for (i, &t) in out.iter().take(3).enumerate() {
            counts[i][t as usize] += 1;
        }
    }
    assert!(matches!(draft, Draft::None) || drafted > 0, "nothing was drafted");
    counts
}

/// Two-sample chi-square statistic (homogeneity) over the cells both samples use.
fn chi2(a: &[usize; 8], b: &[usize; 8]) -> f64 {
    let (na, nb) = (a.iter().sum::<usize>() as f64, b.iter().sum::<usize>() as f64);
    let mut x = 0.0;
    for i in 0..8 {
        let tot = (a[i] + b[i]) as f64;
        if tot == 0.0 {
            continue;
        }
        let (ea, eb) = (tot * na / (na + nb), tot * nb / (na + nb));
        x += (a[i] as f64 - ea).powi(2) / ea + (b[i] as f64 - eb).powi(2) / eb;
    }
    x
}

#[test]
fn stochastic_speculation_samples_the_target_distribution() {
    use rllama::decode::speculative::accept_rule;
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    let (target, draft) = (tiny_model(1), tiny_model(2));
    let n = 6000;
    let plain = token_counts(&target, &[1, 5, 2], Draft::None, n, accept_rule);
    let spec = token_counts(&target, &[1, 5, 2], Draft::Model(&draft), n, accept_rule);
    // 7 degrees of freedom per position: P(chi2 > 30) ~ 1e-4 when unbiased.
    for pos in 0..3 {
        let x = chi2(&plain[pos], &spec[pos]);
        assert!(x < 30.0, "position {pos}: chi2 {x}\nplain {:?}\nspeculative {:?}", plain[pos], spec[pos]);
    }
    // The same test catches a verification that accepts drafts too often.
    let biased = token_counts(&target, &[1, 5, 2], Draft::Model(&draft), n, |_, _| true);
    let worst = (0..3).map(|pos| chi2(&plain[pos], &biased[pos])).fold(0.0, f64::max);
    assert!(worst > 30.0, "an always-accept rule went unnoticed (chi2 {worst})");
}

/// The same with n-gram lookup drafts (their drafts are not the target's
/// likeliest tokens, so many are rejected: the rejection path is exercised).
#[test]
fn stochastic_ngram_speculation_samples_the_target_distribution() {
    use rllama::decode::speculative::accept_rule;
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    let target = tiny_model(1);
    let n = 6000;
    let plain = token_counts(&target, &REPEATING, Draft::None, n, accept_rule);
    let spec = token_counts(&target, &REPEATING, Draft::Lookup, n, accept_rule);
    for pos in 0..3 {
        let x = chi2(&plain[pos], &spec[pos]);
        assert!(x < 30.0, "position {pos}: chi2 {x}\nplain {:?}\nspeculative {:?}", plain[pos], spec[pos]);
    }
    let biased = token_counts(&target, &REPEATING, Draft::Lookup, n, |_, _| true);
    let worst = (0..3).map(|pos| chi2(&plain[pos], &biased[pos])).fold(0.0, f64::max);
    assert!(worst > 30.0, "an always-accept rule went unnoticed (chi2 {worst})");
}

/// The same with draft-mtp (a closed-form MTP head grafted on the tiny model).
#[test]
fn stochastic_mtp_speculation_samples_the_target_distribution() {
    use rllama::decode::speculative::accept_rule;
    use rllama::heads::graft::heads_writer;
    use rllama::heads::mtp::graft_mtp;
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    let target = tiny_model(1);
    let toks: Vec<u32> = (0..32 * 12u32).map(|i| (i * 7 + i / 3) % 8).collect();
    let mut w = heads_writer(&target, &toks).unwrap();
    let p = common::closed_form_mtp(32, None, 2, rllama::gguf::GgmlType::F32);
    graft_mtp(&target, &toks, &p, &mut w, &mut common::QuietGraft).unwrap();
    let path = std::env::temp_dir().join(format!("rllama-spec-mtp-{}.gguf", std::process::id()));
    w.write_file(&path).unwrap();
    let heads = rllama::heads::Heads::load(&path, &target).unwrap();
    std::fs::remove_file(&path).ok();
    let head = heads.mtp.as_ref().unwrap();
    let n = 6000;
    let plain = token_counts(&target, &[1, 5, 2], Draft::None, n, accept_rule);
    let spec = token_counts(&target, &[1, 5, 2], Draft::Mtp(head), n, accept_rule);
    for pos in 0..3 {
        let x = chi2(&plain[pos], &spec[pos]);
        assert!(x < 30.0, "position {pos}: chi2 {x}\nplain {:?}\nspeculative {:?}", plain[pos], spec[pos]);
    }
    let biased = token_counts(&target, &[1, 5, 2], Draft::Mtp(head), n, |_, _| true);
    let worst = (0..3).map(|pos| chi2(&plain[pos], &biased[pos])).fold(0.0, f64::max);
    assert!(worst > 30.0, "an always-accept rule went unnoticed (chi2 {worst})");
}
