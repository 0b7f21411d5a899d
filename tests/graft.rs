//! `rllama graft` heads and `--spec-heads`: fitting on a tiny synthetic
//! model, the heads file round trip, and one error line for a missing file,
//! another model's heads, an exit layer out of range, early-exit without heads.
mod common;

use common::{tiny_model, tiny_model_layers, Rng};
use rllama::heads::graft::{graft, GraftParams, GraftProgress};
use rllama::heads::{ExitSpec, Heads};
use std::path::PathBuf;
use std::process::Command;

use common::QuietGraft as Quiet;

/// Exits written as on the command line (`L` or `L+T`).
fn params(exits: &[&str]) -> GraftParams {
    GraftParams { exit_layers: exits.iter().map(|e| e.parse().unwrap()).collect(), n_ctx: 32, chunks: None, holdout: 2, ridge: 1e-2 }
}

fn tokens(n: usize) -> Vec<u32> {
    let mut r = Rng(7);
    (0..n).map(|_| (r.next() % 8) as u32).collect()
}

fn tmp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rllama-graft-{}-{name}", std::process::id()))
}

#[test]
fn heads_round_trip_and_refuse_another_model() {
    let m = tiny_model(1);
    let (w, reports) = graft(&m, &tokens(32 * 12), &params(&["1"]), &mut Quiet).unwrap();
    assert_eq!(reports.len(), 1);
    assert!((0.0..=1.0).contains(&reports[0].agree) && (0.0..=1.0).contains(&reports[0].agree_lens));
    let p = tmp("heads.gguf");
    w.write_file(&p).unwrap();
    let h = Heads::load(&p, &m).unwrap();
    assert_eq!(h.exits.iter().map(|e| e.layer).collect::<Vec<_>>(), vec![1]);
    assert_eq!(h.vocab.len(), 8, "the draft vocabulary covers the tiny vocabulary");
    // the same shapes, other weights
    let e = Heads::load(&p, &tiny_model(2)).err().expect("another model's heads were accepted").to_string();
    assert!(e.contains("another model"), "{e}");
    std::fs::remove_file(&p).ok();
}

#[test]
fn graft_refuses_bad_layers_and_short_text() {
    let m = tiny_model(1);
    for layers in [&["0"][..], &["2"], &[], &["1", "1"], &["1+1"], &["0+1"]] {
        let e = graft(&m, &tokens(32 * 12), &params(layers), &mut Quiet).err().expect("bad layers accepted").to_string();
        assert!(e.contains("exit-layers"), "{layers:?}: {e}");
    }
    let e = graft(&m, &tokens(40), &params(&["1"]), &mut Quiet).err().expect("too little text accepted").to_string();
    assert!(e.contains("chunks"), "{e}");
    assert!("3+x".parse::<ExitSpec>().is_err() && "+2".parse::<ExitSpec>().is_err());
    assert_eq!("5+2".parse::<ExitSpec>().unwrap(), ExitSpec { layer: 5, tail: 2 });
}

/// An exit with a tail (first blocks, then the last ones) on a 3-block
/// model: stored and loaded with its tail and agreement, refused by the
/// lossy exit (which runs plain exits only), and given by its spelling to
/// `--spec-exit-layer`.
#[test]
fn exits_with_a_tail_round_trip() {
    let m = tiny_model_layers(1, 3);
    let (w, reports) = graft(&m, &tokens(32 * 12), &params(&["1+1", "1", "2"]), &mut Quiet).unwrap();
    assert_eq!(reports.iter().map(|r| r.exit.to_string()).collect::<Vec<_>>(), vec!["1+1", "1", "2"]);
    let p = tmp("tail-heads.gguf");
    w.write_file(&p).unwrap();
    let h = Heads::load(&p, &m).unwrap();
    std::fs::remove_file(&p).ok();
    let specs: Vec<String> = h.exits.iter().map(|e| e.spec().to_string()).collect();
    assert_eq!(specs, vec!["1", "1+1", "2"], "exits kept in (layer, tail) order");
    for (e, r) in h.exits.iter().zip([&reports[1], &reports[0], &reports[2]]) {
        assert_eq!(e.agree.map(|a| a as f32), Some(r.agree as f32), "exit {}: agreement stored", e.spec());
    }
    let ee = rllama::decode::early_exit::EarlyExit::new(&m, &h, Some(ExitSpec { layer: 1, tail: 2 }), 0);
    assert!(ee.err().expect("a missing exit accepted").to_string().contains("1, 1+1, 2"));
}

/// One `error:` line and exit code 1.
fn one_error_line<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S], want: &str) {
    let out = Command::new(common::bin()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("error:") && err.contains(want) && err.trim().lines().count() == 1, "{args:?}: {err}");
}

/// One graft serves every quantization of the same weights (the embedding
/// probe agrees), and still refuses other weights of the same shapes.
#[test]
fn heads_serve_another_quantization_of_the_model() {
    let dir = tmp("requant");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("tiny.gguf");
    std::fs::write(&src, common::tiny_gguf(1, |_| {})).unwrap();
    let m = tiny_model(1);
    let (w, _) = graft(&m, &tokens(32 * 12), &params(&["1"]), &mut Quiet).unwrap();
    let heads = dir.join("heads.gguf");
    w.write_file(&heads).unwrap();
    for ty in ["Q8_0", "Q4_0"] {
        let q = dir.join(format!("tiny-{ty}.gguf"));
        let out = Command::new(env!("CARGO_BIN_EXE_rllama"))
            .args(["quantize", "--allow-requantize", "--pure", src.to_str().unwrap(), q.to_str().unwrap(), ty])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let g = rllama::gguf::GgufFile::open(&q).unwrap();
        assert!(g.tensor("token_embd.weight").unwrap().ty.name().eq_ignore_ascii_case(ty), "the embedding was requantized");
        let mq = rllama::model::Model::from_gguf(std::sync::Arc::new(g)).unwrap();
        let h = Heads::load(&heads, &mq).unwrap_or_else(|e| panic!("{ty}: {e}"));
        assert_eq!(h.exits.len(), 1);
    }
    let e = Heads::load(&heads, &tiny_model(2)).err().expect("another model's heads were accepted").to_string();
    assert!(e.contains("another model"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn spec_heads_errors_are_one_line() {
    let Some(q) = common::model(common::QWEN) else { return };
    let q = q.display().to_string();
    let base = ["cli", "-m", &q, "-p", "Hi", "-n", "4", "-no-cnv"];
    let with = |extra: &[&str]| base.iter().chain(extra).map(|s| s.to_string()).collect::<Vec<String>>();
    one_error_line(&with(&["--spec-type", "early-exit"]), "needs exit heads");
    one_error_line(&with(&["--spec-type", "early-exit", "--spec-heads", "/nonexistent/heads.gguf"]), "cannot open heads file");
    // the tiny model's heads on Qwen
    let m = tiny_model(1);
    let (w, _) = graft(&m, &tokens(32 * 12), &params(&["1"]), &mut Quiet).unwrap();
    let p = tmp("tiny-heads.gguf");
    w.write_file(&p).unwrap();
    one_error_line(&with(&["--spec-type", "early-exit", "--spec-heads", p.to_str().unwrap()]), "another model");
    std::fs::remove_file(&p).ok();
    one_error_line(&with(&["--spec-type", "ngram-cache"]), "not supported");
    one_error_line(&with(&["--early-exit-threshold", "0.9"]), "needs exit heads");
    one_error_line(&with(&["--early-exit-threshold", "1.5", "--spec-heads", "x.gguf"]), "expected a probability");
    let text = common::fixture("rust-book-ch00-04.txt");
    one_error_line(&["perplexity", "-m", &q, "-f", text.to_str().unwrap(), "--early-exit-threshold", "0.9"], "needs exit heads");
    one_error_line(&["graft", "-m", &q, "-f", "/nonexistent.txt", "--exit-layers", "3", "-o", "/tmp/x.gguf"], "cannot read calibration file");
    let out = tmp("never.gguf");
    one_error_line(&["graft", "-m", &q, "-f", text.to_str().unwrap(), "--exit-layers", "24", "-o", out.to_str().unwrap()], "exit-layers 24");
    assert!(!out.exists(), "a failed graft left a file");
    one_error_line(&["graft", "-m", &q, "-f", text.to_str().unwrap(), "--exit-layers", "3", "-o", &q], "would overwrite an input");
    // the MTP path: text too short, a bad head type, draft-mtp with a heads file that has no MTP head
    one_error_line(&["graft", "-m", &q, "-f", text.to_str().unwrap(), "--mtp", "--tokens", "300", "-o", out.to_str().unwrap()], "chunks of 512 needed");
    one_error_line(&["graft", "-m", &q, "-f", text.to_str().unwrap(), "--mtp", "--mtp-type", "q8_1", "-o", out.to_str().unwrap()], "--mtp-type q8_1");
    one_error_line(&["graft", "-m", &q, "-f", text.to_str().unwrap(), "--mtp", "--mtp-ff", "0", "-o", out.to_str().unwrap()], "--mtp-ff 0");
    one_error_line(&["graft", "-m", &q, "-f", text.to_str().unwrap(), "--mtp", "--mtp-ff", "99999", "-o", out.to_str().unwrap()], "--mtp-ff 99999");
    assert!(!out.exists(), "a failed graft left a file");
    one_error_line(&with(&["--spec-type", "draft-mtp"]), "draft-mtp needs");
}

/// Lossy early exit on the tiny model: with a threshold every head passes,
/// each token leaves at the exit, the skipped block's keys and values are
/// still filled (the next token's step needs them), and the logits are the
/// head's; with threshold 1 nearly none exits and the logits are the model's.
#[test]
fn lossy_exit_fills_the_skipped_blocks() {
    use rllama::decode::early_exit::LossyExit;
    use rllama::model::Scratch;
    let m = tiny_model(1);
    let (w, _) = graft(&m, &tokens(32 * 12), &params(&["1"]), &mut Quiet).unwrap();
    let p = tmp("lossy-heads.gguf");
    w.write_file(&p).unwrap();
    let h = Heads::load(&p, &m).unwrap();
    std::fs::remove_file(&p).ok();
    let toks = [1u32, 5, 2, 7, 3];
    let mut all = LossyExit::new(&m, &h, 1e-6, 0).unwrap();
    let mut kv = m.new_cache(16).unwrap();
    let mut s = Scratch::default();
    for (i, &t) in toks.iter().enumerate() {
        all.step(&m, t, i, &mut kv, &mut s).unwrap();
        assert_eq!(kv.seq_len(), i + 1, "every block holds the exited token's keys");
    }
    assert_eq!((all.exited, all.tokens), (toks.len(), toks.len()));
    assert!(all.summary().contains("50.0% of the blocks skipped"), "{}", all.summary());
    // never confident enough: the full model's logits
    let mut none = LossyExit::new(&m, &h, 1.0, 0).unwrap();
    let mut kv2 = m.new_cache(16).unwrap();
    let mut got = Vec::new();
    for (i, &t) in toks.iter().enumerate() {
        got = none.step(&m, t, i, &mut kv2, &mut s).unwrap();
    }
    let want = m.forward(&toks, &mut m.new_cache(16).unwrap(), &rllama::model::Outputs::Last).unwrap();
    if none.exited == 0 {
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-3, "full-model logits differ by {diff}");
    }
}

/// Mutated heads files (bit flips and byte sets in the header, truncations)
/// load or give an error, never a panic.
#[test]
fn mutated_heads_files_never_panic() {
    let m = tiny_model(1);
    let (w, _) = graft(&m, &tokens(32 * 12), &params(&["1"]), &mut Quiet).unwrap();
    let base = w.to_bytes();
    let header = base.len().min(4096);
    let mut rng = Rng(99);
    let p = tmp("mutated.gguf");
    let (mut ok, mut err) = (0, 0);
    for _ in 0..300 {
        let mut b = base.clone();
        match rng.next() % 3 {
            0 => {
                let i = rng.next() as usize % header;
                b[i] ^= 1 << (rng.next() % 8);
            }
            1 => {
                let i = rng.next() as usize % header;
                b[i] = [0u8, 0xff, 0x7f, 0x80][rng.next() as usize % 4];
            }
            _ => b.truncate(rng.next() as usize % base.len()),
        }
        std::fs::write(&p, &b).unwrap();
        match Heads::load(&p, &m) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    std::fs::remove_file(&p).ok();
    assert!(err > 0, "no mutation was refused ({ok} loaded)");
}

/// `graft --mtp` on the tiny model: the head lands in the heads file in
/// llama.cpp's nextn layout (block n_layer, `{arch}.nextn_predict_layers`),
/// loads back, and `draft-mtp` with it leaves greedy output unchanged.
#[test]
fn mtp_head_round_trip_and_lossless_drafting() {
    use rllama::decode::drafters::{Drafters, NgramOpts, SpecType};
    use rllama::decode::generator::Generator;
    use rllama::decode::speculative::{DraftLength, Drafter};
    use rllama::decode::Session;
    use rllama::heads::graft::heads_writer;
    use rllama::heads::mtp::{graft_mtp, MtpParams};
    use rllama::sampling::{Sampler, SamplerParams};
    let m = tiny_model(1);
    let toks = tokens(32 * 12);
    let mut w = heads_writer(&m, &toks).unwrap();
    let gen = rllama::heads::mtp::DISTILL_GEN;
    let p = MtpParams { train_vocab: 8, self_distill: 8 * gen, ..common::closed_form_mtp(32, None, 2, rllama::gguf::GgmlType::Q8_0) };
    let r = graft_mtp(&m, &toks, &p, &mut w, &mut Quiet).unwrap();
    assert_eq!(r.agree.text.len(), 3);
    assert_eq!(r.agree.text, r.agree_start.text, "no training: the closed-form head is written");
    assert!(r.agree.text.iter().all(|a| (0.0..=1.0).contains(a)), "{:?}", r.agree);
    // one answer of eight held out, scored on its generated tokens only
    // (the last generated token, never evaluated, has no hidden row)
    assert_eq!(r.held_answers, gen - 1);
    assert_eq!(r.distilled, 7 * (64 + gen - 1));
    assert!(r.agree.answers.as_ref().is_some_and(|a| a.len() == 3 && a.iter().all(|x| (0.0..=1.0).contains(x))), "{:?}", r.agree);
    let path = tmp("mtp-heads.gguf");
    w.write_file(&path).unwrap();
    let g = rllama::gguf::GgufFile::open(&path).unwrap();
    assert_eq!(g.get_i64("llama.nextn_predict_layers"), Some(1));
    for t in [
        "blk.2.nextn.eh_proj.weight",
        "blk.2.nextn.enorm.weight",
        "blk.2.nextn.hnorm.weight",
        "blk.2.nextn.shared_head_norm.weight",
        "blk.2.attn_q.weight",
        "blk.2.ffn_down.weight",
    ] {
        assert!(g.tensor(t).is_some(), "{t} missing");
    }
    let h = Heads::load(&path, &m).unwrap();
    std::fs::remove_file(&path).ok();
    assert!(h.exits.is_empty() && h.mtp.is_some());
    // the policy's prior: acceptance per draft position given the ones before stood
    assert_eq!(h.mtp_accept.len(), 3);
    assert_eq!(h.mtp_accept, r.agree.accept.iter().map(|&a| a as f32 as f64).collect::<Vec<_>>());
    assert!(h.mtp_accept.iter().all(|a| (0.0..=1.0).contains(a)), "{:?}", h.mtp_accept);
    let run = |d: Option<&mut dyn Drafter>, len: DraftLength| {
        let mut gen = Generator::new(Session::new(&m, 128, 32).unwrap(), Sampler::new(SamplerParams { temp: 0.0, ..Default::default() }), d, len);
        gen.prompt(&toks[..20]).unwrap();
        let mut out = Vec::new();
        while out.len() < 60 {
            out.extend(gen.next().unwrap());
        }
        let all = [&toks[..20], &out[..]].concat();
        out.truncate(60);
        (out, gen.stats.n_drafted, all)
    };
    let (want, _, _) = run(None, DraftLength::new(0, 0));
    let mut ds = Drafters::from_types(&[SpecType::DraftMtp], &NgramOpts::default(), None, Some((&m, &h, None)), h.mtp.as_ref(), 3).unwrap();
    let (got, drafted, all) = run(Some(&mut ds), DraftLength::fixed(3));
    assert_eq!(got, want, "draft-mtp changed greedy output");
    assert!(drafted > 0);
    // the prior's replay of drafting's rounds on that text counts what drafting met
    // (up to the last rounds, which the replay leaves out)
    let held = rllama::heads::mtp::HeldOut::new(&m, &all).unwrap().scored_from(20);
    let c = rllama::heads::mtp::agreement(&m, h.mtp.as_ref().unwrap(), &held, None).unwrap();
    // over a draft vocabulary of every token, in another order, the head picks the same
    let ids: Vec<u32> = (0..m.cfg.n_vocab as u32).rev().collect();
    let every = (rllama::heads::output_rows(&m, &ids).unwrap(), ids);
    let c_every = rllama::heads::mtp::agreement(&m, h.mtp.as_ref().unwrap(), &held, Some(&every)).unwrap();
    assert_eq!((&c_every.hits, &c_every.chain_hits), (&c.hits, &c.chain_hits));
    // the default draft vocabulary: each size weighed agrees as drafting over
    // that many rows does, and the graft keeps the best net of its cost
    let head = h.mtp.as_ref().unwrap();
    let (kept, weighed) = rllama::heads::draft_rows::weigh(&m, head, std::slice::from_ref(&held), &h.vocab).unwrap();
    assert_eq!(weighed.iter().map(|w| w.rows).collect::<Vec<_>>(), [1, 2, 4]);
    for wd in &weighed {
        let ids = h.vocab[..wd.rows].to_vec();
        let out = (rllama::heads::output_rows(&m, &ids).unwrap(), ids);
        let ck = rllama::heads::mtp::agreement(&m, head, &held, Some(&out)).unwrap();
        assert_eq!(wd.agree, ck.hits[0] as f64 / ck.tried[0] as f64, "{} rows", wd.rows);
        assert!(wd.cost > 0.0 && wd.cost < 0.1, "{wd:?}");
    }
    let net = |w: &rllama::heads::draft_rows::Weighed| w.agree - w.cost;
    let best = weighed.iter().fold(&weighed[0], |b, w| if net(w) > net(b) { w } else { b });
    assert_eq!(kept, Some(best.rows), "{weighed:?}");
    // the file's own size (weighed on its held-out answer) is the default, the flag wins
    let k = r.draft_rows.expect("held-out answers: a default size is written");
    assert_eq!(h.vocab_size, Some(k));
    assert_eq!((h.mtp_draft_rows(None), h.mtp_draft_rows(Some(3)), h.mtp_draft_rows(Some(0))), (k, 3, 0));
    for bad in [0u32, 9] {
        w.set(rllama::heads::KEY_DRAFT_VOCAB_SIZE, rllama::gguf::Value::U32(bad));
        let p = tmp("bad-size-heads.gguf");
        w.write_file(&p).unwrap();
        let e = Heads::load(&p, &m).err().map(|e| e.to_string());
        std::fs::remove_file(&p).ok();
        assert!(e.as_deref().is_some_and(|e| e.contains("heads.draft_vocab_size must be 1..=8")), "size {bad}: {e:?}");
    }
    let by_pos = &ds.entries()[0].by_pos;
    let near = |a: usize, b: usize| a.abs_diff(b) <= 2;
    assert!(near(c.chain_tried[0], by_pos[0].0), "rounds: replayed {:?}, drafting {by_pos:?}", c.chain_tried);
    for k in 0..3 {
        assert!(near(c.chain_hits[k], by_pos[k].1), "position {}: replayed {:?}, drafting {by_pos:?}", k + 1, c.chain_hits);
    }
    // --draft-p-min: rounds stop at a token the head is unsure of
    let o = NgramOpts { mtp_p_min: 0.6, ..NgramOpts::default() };
    let mut ds = Drafters::from_types(&[SpecType::DraftMtp], &o, None, Some((&m, &h, None)), h.mtp.as_ref(), 3).unwrap();
    let (got, fewer, _) = run(Some(&mut ds), DraftLength::fixed(3));
    assert_eq!(got, want, "draft-mtp with --draft-p-min changed greedy output");
    assert!(fewer < drafted, "--draft-p-min 0.6 drafted {fewer} of {drafted}");
}

/// Training the MTP head (feature `train`) on the tiny model with
/// self-distilled text: the loss falls and the head written differs from
/// its closed-form start.
#[cfg(feature = "train")]
#[test]
fn mtp_training_lowers_the_loss() {
    use rllama::heads::graft::heads_writer;
    use rllama::heads::mtp::{graft_mtp, MtpParams};
    struct Losses(Vec<f64>);
    impl GraftProgress for Losses {
        fn chunk(&mut self, _: usize, _: usize) {}
        fn line(&mut self, _: &str) {}
        fn train(&mut self, _: usize, step: usize, steps: usize, loss: f64, _: Option<f64>) {
            if step == 1 || step == steps {
                self.0.push(loss);
            }
        }
    }
    let m = tiny_model(1);
    let toks = tokens(32 * 12);
    for depth in [1, 2] {
        let mut w = heads_writer(&m, &toks).unwrap();
        let p =
            MtpParams { epochs: 8, lr: 3e-3, self_distill: 200, train_vocab: 8, depth, ..common::closed_form_mtp(32, None, 2, rllama::gguf::GgmlType::F32) };
        let mut l = Losses(Vec::new());
        let r = graft_mtp(&m, &toks, &p, &mut w, &mut l).unwrap();
        assert_eq!(r.distilled, 2 * (64 + 191), "two snippets of 64 tokens continued by 192 (the last one without a hidden row)");
        let (first, last) = (l.0[0], *l.0.last().unwrap());
        assert!(last < first, "depth {depth}: training did not lower the loss: {first} -> {last}");
    }
}

/// Training's chained passes (EAGLE-3's training-time test) compute the rows
/// drafting computes: draft position j of the chain starting at b, on the
/// head's own rows of the positions before, over the cache drafting holds
/// then (`model::nextn` run as `decode::mtp` runs it, teacher-forced tokens).
#[cfg(feature = "train")]
#[test]
fn training_chains_the_head_as_drafting_does() {
    use rllama::heads::mtp::{final_rows, HeadWeights};
    use rllama::heads::train::{pass_rows, Sample};
    use rllama::ops::norm::rms_norm_rows;
    let m = tiny_model(1);
    let (d, eps) = (m.cfg.n_embd, m.cfg.eps);
    let mut r = Rng(11);
    // a feed-forward narrower than the model's, as `--mtp-ff` makes
    let n_ff = m.cfg.n_ff / 2;
    let mut h = HeadWeights::start(&m, (0..2 * d * d).map(|_| r.f32() * 0.5).collect(), Some(n_ff));
    assert_eq!(h.mat("ffn_gate").unwrap().0.len(), n_ff * d);
    for mat in &mut h.mats {
        let scale = 1.5 / (mat.1 as f32).sqrt();
        mat.3.iter_mut().for_each(|x| *x = r.f32() * scale);
    }
    let toks = tokens(24);
    let f = final_rows(&m, &toks).unwrap();
    let depth = 3;
    let passes = pass_rows(&m, &h, &Sample { tokens: toks.clone(), f: f.clone() }, depth, 1).unwrap();
    assert_eq!(passes.len(), depth);
    let mut w = rllama::gguf::GgufWriter::new();
    h.write(&m, &mut w, rllama::gguf::GgmlType::F32.into()).unwrap();
    let head = rllama::heads::mtp::load_written(&m, &w).unwrap();
    assert_eq!(head.block.n_ff(), n_ff);
    // the head's input rows: the model's of the position before, normed
    let mut normed = vec![0f32; f.len()];
    rms_norm_rows(&f, m.output_norm(), eps, &mut normed);
    let hrows = |n: usize| -> Vec<f32> { (0..n).flat_map(|p| if p == 0 { vec![0.0; d] } else { normed[(p - 1) * d..p * d].to_vec() }).collect() };
    let mut checked = 0;
    for (j, (at, rows)) in passes.iter().enumerate() {
        assert!(!at.is_empty());
        for (i, &p) in at.iter().enumerate() {
            // history 0..=p - j; then j chained steps
            let b = p - j;
            let mut kv = head.new_cache(&m, toks.len()).unwrap();
            let mut s = rllama::model::Scratch::default();
            head.forward(&m, &toks[..=b], &hrows(b + 1), 0, &mut kv, &mut s).unwrap();
            for q in b + 1..=p {
                let prev = s.x[(s.n_rows() - 1) * d..].to_vec();
                head.forward(&m, &toks[q..=q], &prev, q, &mut kv, &mut s).unwrap();
            }
            let want = &s.x[(s.n_rows() - 1) * d..];
            let got = &rows[i * d..(i + 1) * d];
            let diff = want.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff < 1e-3, "draft position {} at {p}: training's row differs from drafting's by {diff}", j + 1);
            checked += 1;
        }
    }
    assert!(checked > 24, "{checked} rows checked");
}

/// The draft vocabulary ranks what drafting meets: tokens of the model's
/// own (training) answers come before tokens seen nowhere, even when the
/// calibration text never has them.
#[test]
fn mtp_draft_vocabulary_counts_the_models_answers() {
    use rllama::heads::graft::heads_writer;
    use rllama::heads::mtp::{graft_mtp, MtpParams, DISTILL_GEN};
    let m = tiny_model(1);
    // calibration text of tokens 0 and 1 only
    let mut r = Rng(11);
    let toks: Vec<u32> = (0..32 * 12).map(|_| (r.next() % 2) as u32).collect();
    let prompts: Vec<Vec<u32>> = (0..8u32).map(|i| (0..24).map(|j| ((i >> (j % 3)) ^ j) & 1).collect()).collect();
    let mut w = heads_writer(&m, &toks).unwrap();
    let p = MtpParams { self_distill: 8 * DISTILL_GEN, distill_prompts: prompts.clone(), ..common::closed_form_mtp(32, None, 2, rllama::gguf::GgmlType::Q8_0) };
    graft_mtp(&m, &toks, &p, &mut w, &mut Quiet).unwrap();
    let path = tmp("vocab-heads.gguf");
    w.write_file(&path).unwrap();
    let h = Heads::load(&path, &m).unwrap();
    std::fs::remove_file(&path).ok();
    let answers = rllama::decode::batch::greedy_many(&m, &prompts, DISTILL_GEN, &[], 4, false, |_| {}).unwrap();
    let nv = m.cfg.n_vocab as u32;
    // in two answers or more: at least one of them trained (one in eight is held out)
    let in_answers = |t: u32| answers.iter().zip(&prompts).filter(|(a, p)| a.tokens[p.len()..].contains(&t)).count();
    let answered: Vec<u32> = (2..nv).filter(|&t| in_answers(t) >= 2).collect();
    let nowhere: Vec<u32> = (2..nv).filter(|&t| in_answers(t) == 0).collect();
    assert!(!answered.is_empty() && !nowhere.is_empty(), "the test needs both: answered {answered:?}, nowhere {nowhere:?}");
    let rank = |t: u32| h.vocab.iter().position(|&v| v == t).unwrap();
    for &a in &answered {
        for &n in &nowhere {
            assert!(rank(a) < rank(n), "token {a} of the answers ranks after token {n}, seen nowhere: {:?}", h.vocab);
        }
    }
}
