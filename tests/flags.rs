//! Flags through clap: every spelling llama.cpp users type still parses, each
//! front-end's --help lists its flags with defaults, a typo gets a
//! suggestion in one error line.
mod common;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{args:?}: {err}");
    err
}

#[test]
fn help_lists_flags_with_defaults() {
    for (cmd, flags) in [
        ("cli", &["--ctx-size", "--n-predict", "--temp", "--model-draft", "--spec-draft-n-max", "--chat-template", "[default: 4096]", "[default: 0.8]"][..]),
        ("speculative", &["--model-draft", "--spec-draft-p-min", "[default: 16]"][..]),
        ("bench", &["--n-prompt", "--repetitions", "--output", "[default: 5]", "[default: md]"][..]),
        ("perplexity", &["--kl-divergence-base", "--chunks", "--ppl-output-type", "[default: 512]"][..]),
        ("tokenize", &["--ids", "--no-bos", "--stdin"][..]),
        ("quantize", &["--allow-requantize", "--pure", "Q4_K_M"][..]),
    ] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help");
        let s = String::from_utf8_lossy(&out.stdout);
        for f in flags {
            assert!(s.contains(f), "{cmd} --help lacks {f}:\n{s}");
        }
    }
}

#[test]
fn typos_get_a_suggestion_in_one_line() {
    for (args, want) in [
        (&["cli", "--temperature", "0"][..], "did you mean --temp"),
        (&["bench", "--n-promt", "8"][..], "did you mean --n-prompt"),
        (&["perplexity", "--kl-divergance"][..], "did you mean --kl-divergence"),
        (&["cli", "-n", "many"][..], "many"),
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want) && err.trim().lines().count() == 1 && err.starts_with("error: "), "{args:?}: {err}");
    }
}

/// llama.cpp's spellings, old and new, single-dash long flags included.
#[test]
fn old_spellings_still_parse() {
    let Some(m) = common::model(common::SMOLLM2) else { return };
    let m = m.to_str().unwrap();
    let base = ["-m", m, "-n", "2", "-p", "Hi", "-t", "2"];
    let cli = |extra: &[&str]| ok(&[&["cli"][..], &base, extra].concat());
    cli(&["-no-cnv", "--temp", "0", "-c", "256", "-b", "64", "-ub", "32", "-tb", "2", "-s", "-1", "--seed", "7", "-e", "--no-escape"]);
    cli(&["--no-conversation", "--top-k", "5", "--top-p", "0.9", "--min-p", "0.1", "--repeat-penalty", "1.1", "--repeat-last-n", "16"]);
    cli(&["--presence-penalty", "0.1", "--frequency-penalty", "0.1", "--ignore-eos", "--log-disable", "--verbose-prompt", "--no-warmup"]);
    cli(&["--predict", "2", "--n-predict=2", "--ctx-size=256", "-fa", "on", "--flash-attn", "auto", "--jinja", "--no-jinja", "--simple-io", "-co"]);
    cli(&["--no-display-prompt", "--in-prefix-bos", "--color", "--threads-batch", "2", "--batch-size", "64", "--ubatch-size", "64"]);
    let err = cli(&["-ngl", "99", "--n-gpu-layers", "99"]);
    assert_eq!(err.matches("CPU only").count(), 1, "{err}");
    cli(&["--gpu-layers", "0", "-md", m, "-cd", "256", "-td", "2", "-tbd", "2", "-ngld", "99", "--draft-max", "4", "--draft-min", "1"]);
    cli(&["--model-draft", m, "--spec-draft-n-max", "3", "--spec-draft-n-min", "0", "--spec-draft-p-min", "0.5", "--draft-p-min", "0.2", "--draft", "2"]);
    cli(&[
        "--spec-draft-model",
        m,
        "--draft-n",
        "2",
        "--ctx-size-draft",
        "0",
        "--spec-draft-ctx-size",
        "128",
        "--threads-draft",
        "1",
        "--spec-draft-threads",
        "1",
    ]);
    ok(&[&["speculative"][..], &base, &["-md", m, "--temp", "0"]].concat());
    // chat flags, single turn from -p
    cli(&[
        "-cnv",
        "-st",
        "-sys",
        "Be brief.",
        "--chat-template",
        "chatml",
        "-r",
        "User:",
        "--reverse-prompt",
        "X",
        "--in-prefix",
        " ",
        "--in-suffix",
        "A:",
        "-mli",
    ]);
    cli(&["--conversation", "--single-turn", "--system-prompt", "Hi", "--no-show-timings", "--show-timings", "--multiline-input", "-i", "--interactive-first"]);
    ok(&["tokenize", "-m", m, "-p", "Hello", "--ids", "--no-bos", "--no-parse-special", "--show-count", "--log-disable", "--no-escape"]);
    let text = common::fixture("rust-book-ch00-04.txt");
    let t = text.to_str().unwrap();
    ok(&["perplexity", "-m", m, "-f", t, "-c", "64", "--chunks", "1", "-b", "64", "-ub", "64", "-ngl", "0", "-fa", "on", "-s", "1", "-t", "2", "-tb", "2"]);
    ok(&[
        "perplexity",
        "-m",
        m,
        "--file",
        t,
        "--ctx-size",
        "64",
        "--chunks",
        "1",
        "--ppl-output-type",
        "1",
        "--ppl-stride",
        "0",
        "--log-disable",
        "--no-mmap",
        "--mlock",
        "-e",
    ]);
    ok(&["bench", "-m", m, "-p", "8", "-n", "2", "-r", "1", "-pg", "8,2", "-ub", "8", "-b", "8", "-t", "2", "-d", "0", "-o", "csv", "-oe", "none"]);
    ok(&[
        "bench",
        "--model",
        m,
        "--n-prompt",
        "0",
        "--n-gen",
        "2",
        "--repetitions",
        "1",
        "-ngl",
        "99",
        "-fa",
        "1",
        "-mmp",
        "0",
        "-sm",
        "none",
        "-mg",
        "0",
        "-nkvo",
        "0",
    ]);
    ok(&[
        "bench",
        "-m",
        m,
        "-p",
        "0",
        "-n",
        "1",
        "-r",
        "1",
        "-ctk",
        "f16",
        "-ctv",
        "f16",
        "--numa",
        "distribute",
        "--prio",
        "0",
        "--delay",
        "0",
        "--poll",
        "50",
        "-embd",
        "0",
        "--no-warmup",
        "--progress",
        "-v",
    ]);
}

/// llama.cpp's common flags without a feature behind them in rllama: those
/// that cannot change the output (devices, pinning, mapping, logging; the
/// samplers rllama lacks at their neutral values) leave the text exactly as
/// it was, single-dash spellings included; `-np 1` does not swallow the prompt.
#[test]
fn llama_flags_without_effect_leave_the_output() {
    let Some(m) = common::model(common::SMOLLM2) else { return };
    let m = m.to_str().unwrap();
    let text = |extra: &[&str]| {
        let out = run(&[&["cli", "-m", m, "-n", "6", "-p", "The capital of France", "--temp", "0", "-t", "2"][..], extra].concat());
        assert!(out.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    let plain = text(&[]);
    let flags: &[&[&str]] = &[
        &["-ctk", "f16", "-ctv", "f16", "--mlock", "--no-mmap", "-nkvo", "-ot", "exps=CPU", "--numa", "distribute", "-C", "ff", "--prio", "2"],
        &["-np", "1", "-kvu", "--swa-full", "-nr", "-dio", "-dev", "none", "-sm", "none", "-ts", "1", "-fit", "off", "-lv", "1", "-v", "--no-perf"],
        &["--typical", "1.0", "--mirostat", "0", "--mirostat-lr", "0.2", "--dry-multiplier", "0", "--xtc-probability", "0", "--top-nsigma", "-1"],
        &["--dynatemp-range", "0", "--keep", "0", "--no-context-shift", "--log-file", "/dev/null", "--log-colors", "off", "-ctkd", "f16", "-ngld", "9"],
    ];
    for extra in flags {
        assert_eq!(text(extra), plain, "{extra:?}");
    }
    let help = String::from_utf8_lossy(&run(&["cli", "--help"]).stdout).into_owned();
    assert!(help.contains("--mirostat 0") && help.contains("--mlock"), "{help}");
}

/// The rest of them: one `error:` line naming the flag, before any model is
/// read (no file needed), for each front-end that takes them.
#[test]
fn llama_flags_rllama_lacks_are_one_error_line() {
    for (args, want) in [
        (&["cli", "-ctk", "q8_0"][..], "--cache-type-k q8_0 is not supported"),
        (&["cli", "-ctv", "q4_0", "-p", "x"][..], "--cache-type-v q4_0 is not supported"),
        (&["cli", "--mirostat", "2"][..], "--mirostat 2 is not supported"),
        (&["cli", "--typical", "0.9"][..], "--typical 0.9 is not supported"),
        (&["cli", "--grammar", "root ::= \"a\""][..], "--grammar is not supported"),
        (&["cli", "-j", "{}"][..], "--json-schema is not supported"),
        (&["cli", "-hf", "org/model"][..], "--hf-repo is not supported"),
        (&["cli", "--context-shift"][..], "--context-shift is not supported"),
        (&["cli", "--rope-freq-base", "1e6"][..], "--rope-freq-base is not supported"),
        (&["speculative", "-ctk", "q8_0"][..], "--cache-type-k q8_0 is not supported"),
        (&["perplexity", "-ctk", "q8_0", "-f", "x.txt"][..], "--cache-type-k q8_0 is not supported"),
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(want) && err.trim().lines().count() == 1, "{args:?}: {err}");
    }
}

/// A prompt that looks like a flag is still a prompt.
#[test]
fn prompt_values_are_never_flags() {
    let Some(m) = common::model(common::SMOLLM2) else { return };
    let out = run(&["tokenize", "-m", m.to_str().unwrap(), "-p", "-ngl", "--ids", "--no-bos"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids = String::from_utf8_lossy(&out.stdout);
    assert!(ids.starts_with('[') && ids.trim() != "[]", "{ids}");
}

/// Arguments that are not UTF-8 get one error line, never a panic.
#[cfg(unix)]
#[test]
fn invalid_utf8_arguments_are_one_error_line() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let bad = OsStr::from_bytes(b"hi \xff");
    for args in
        [vec![OsStr::new("cli"), OsStr::new("-p"), bad], vec![OsStr::new("tokenize"), OsStr::new("-m"), bad], vec![OsStr::new("bench"), OsStr::new("-m"), bad]]
    {
        let out = Command::new(common::bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.trim().lines().count() == 1 && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn version_and_server() {
    for args in [&["--version"][..], &["cli", "--version"][..], &["bench", "--version"][..]] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("version: "), "{args:?}");
    }
    let out = run(&["server", "-m", "x.gguf"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code() == Some(1) && err.contains("not part of rllama"), "{err}");
}

/// A huge draft length is capped (and said so), not run as asked.
#[test]
fn huge_draft_length_is_capped() {
    let Some(m) = common::model(common::SMOLLM2) else { return };
    let m = m.to_str().unwrap();
    let err = ok(&["speculative", "-m", m, "-md", m, "--draft-max", "100000", "-p", "Hi", "-n", "8", "--temp", "0.8", "-s", "1"]);
    assert!(err.contains("capped at 64") && err.contains("n_draft   = 64"), "{err}");
}

/// `bench --spec-type`: a tg row with drafting on, named as llama-bench
/// would name a test (`tg8+ngram-lookup`), after the plain one, and its
/// speed-up over plain greedy runs on stderr; draft-mtp without a head is
/// one error line.
#[test]
fn bench_spec_type_adds_a_drafting_tg_row() {
    let Some(m) = common::model(common::SMOLLM2) else { return };
    let m = m.to_str().unwrap();
    let out = run(&["bench", "-m", m, "-p", "0", "-n", "8", "-r", "1", "-t", "2", "--spec-type", "ngram-lookup", "--spec-draft-vocab", "8192"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = text.lines().filter(|l| l.contains(" tg8")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(rows[1].contains("tg8+ngram-lookup"), "{text}");
    // paired with plain greedy runs of the same request: their speed-up
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tg8+ngram-lookup: ") && err.contains("x the same greedy generation without drafting (median of 1 interleaved pairs"), "{err}");
    let out = run(&["bench", "-m", m, "-p", "0", "-n", "8", "-r", "1", "--spec-type", "draft-mtp"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.starts_with("error:") && err.contains("draft-mtp needs") && err.trim().lines().count() == 1, "{err}");
}
