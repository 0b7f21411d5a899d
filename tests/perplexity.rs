//! `rllama perplexity`: the base-logits file round trip (write, read back on
//! the same model: KLD ~ 0) through the command line, and its error lines.
mod common;

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

#[test]
fn kl_divergence_base_round_trip_smollm2() {
    let Some(m) = common::model(common::SMOLLM2) else {
        return;
    };
    let m = m.to_str().unwrap();
    let text = common::fixture("rust-book-ch00-04.txt");
    let base = std::env::temp_dir().join(format!("rllama-kld-{}.bin", std::process::id()));
    let b = base.to_str().unwrap();
    let out = run(&["perplexity", "-m", m, "-f", text.to_str().unwrap(), "-c", "128", "--chunks", "3", "--kl-divergence-base", b]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[1]") && stdout.contains("[3]"), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Final estimate: PPL = "));
    // Header: magic, n_ctx, n_vocab, n_chunk, tokens, then 3 chunks x 63 rows.
    let bytes = std::fs::read(&base).unwrap();
    assert_eq!(&bytes[..8], b"_logits_");
    assert_eq!(i32::from_le_bytes(bytes[8..12].try_into().unwrap()), 128);
    let n_vocab = i32::from_le_bytes(bytes[12..16].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 20 + 4 * 128 * 3 + 2 * 3 * 63 * (2 * n_vocab.div_ceil(2) + 4));

    let out = run(&["perplexity", "-m", m, "--kl-divergence-base", b, "--kl-divergence"]);
    std::fs::remove_file(&base).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| -> f64 {
        let l = stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in {stdout}"));
        l[name.len()..].trim_start_matches([' ', ':']).split_whitespace().next().unwrap().trim_end_matches('%').parse().unwrap()
    };
    assert!(field("Mean    KLD") < 1e-4, "{stdout}");
    assert!(field("Same top p") > 99.0, "{stdout}");
}

#[test]
fn errors_are_one_clear_line() {
    let not_logits = common::fixture("rust-book-ch00-04.txt");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["perplexity", "-m", "x.gguf", "--kl-divergence"], "--kl-divergence-base"),
        (vec!["perplexity", "-m", "x.gguf", "--kl-divergence", "--kl-divergence-base", not_logits.to_str().unwrap()], "does not look like"),
        (vec!["perplexity", "-m", "x.gguf", "--kl-divergence", "--kl-divergence-base", "/nonexistent/base.bin"], "failed to open"),
        (vec!["perplexity", "-m", "x.gguf", "-f", "/nonexistent/text.txt"], "cannot read"),
        (vec!["perplexity", "-m", "x.gguf", "-f", not_logits.to_str().unwrap(), "--ppl-stride", "8"], "not supported"),
    ];
    for (args, want) in cases {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want) && err.trim().lines().count() == 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
