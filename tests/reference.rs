//! rllama against llama.cpp's own outputs on the real models (fixtures copied
//! from ../shared/reference): tokenization, greedy text, perplexity.
mod common;
use rllama::gguf::GgufFile;
use rllama::model::Model;
use rllama::tokenizer::Tokenizer;

/// How much of the perplexity check runs without RLLAMA_LONG_TESTS=1.
#[derive(Clone, Copy)]
enum Ci {
    /// the first `.0` chunks, where llama-perplexity's final estimate is `.1`
    Chunks(usize, f64),
    /// the 1.5B's 20 chunks take ~10 min in exact mode on a slow 2-core
    /// machine; its greedy text is checked in CI
    LongOnly,
}

/// Fixture key, file, llama-perplexity's final estimate on the reference
/// text (`-c 512 --chunks 20 -t 2`), and what CI runs of it.
///
/// llama.cpp's own figure depends on the SIMD its build targets (some of its
/// kernels round differently). The 20-chunk values and SmolLM2's and Qwen's
/// 4-chunk ones (the `base_ppl` of tests/fixtures/lora-ppl-*.jsonl, written
/// by scripts/lora-fixture.sh with the same flags) are from an AVX-512
/// build, which exact mode follows on every machine; Gemma's 4-chunk value is
/// from an AVX2-only build (Zen 1; exact mode gives 13.3226, 0.03% off),
/// which gives 13.8185 for SmolLM2 over 4 chunks (13.8427 above) and 8.3996
/// for the 1.5B over 2 (exact mode 8.4278, 0.34% off).
const MODELS: &[(&str, &str, f64, Ci)] = &[
    ("smollm2-135m-q4_1", common::SMOLLM2, 13.0616, Ci::Chunks(4, 13.8427)),
    ("qwen2.5-coder-0.5b-q4_k_m", common::QWEN, 11.5373, Ci::Chunks(4, 12.7824)),
    ("gemma-3-270m-q4_k_m", common::GEMMA, 15.5688, Ci::Chunks(4, 13.3271)),
    ("qwen2.5-coder-1.5b-q4_k_m", common::QWEN15, 7.6045, Ci::LongOnly),
];

#[test]
fn tokenize_equals_llama_cpp() {
    for (key, file, ..) in MODELS {
        let Some(path) = common::model(file) else {
            continue;
        };
        let g = GgufFile::open(&path).unwrap();
        let tok = Tokenizer::from_gguf(&g).unwrap();
        for r in common::read_jsonl(&format!("tokenize-{key}.jsonl")) {
            let text = r["text"].as_str().unwrap();
            let want: Vec<u32> = r["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let got = tok.encode(text, true, true).unwrap();
            assert_eq!(got, want, "{key}: {text:?}");
            // and the pieces give the text back
            if !text.contains("<|") {
                assert_eq!(tok.decode(&got, false), text, "{key}: detokenize {text:?}");
            }
        }
    }
}

/// Prompts that are not valid UTF-8 give llama.cpp's ids: SentencePiece on
/// the bytes (Gemma), byte-level BPE with each bad byte as U+FFFD (SmolLM2,
/// Qwen). Fixtures from scripts/tokenize-bytes-fixture.py.
#[test]
fn tokenize_invalid_utf8_equals_llama_cpp() {
    for (key, file, ..) in &MODELS[..3] {
        let Some(path) = common::model(file) else {
            continue;
        };
        let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
        let cases = common::read_jsonl(&format!("tokenize-bytes-{key}.jsonl"));
        assert!(cases.len() > 30);
        for r in cases {
            let hex = r["hex"].as_str().unwrap();
            let bytes: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            let want: Vec<u32> = r["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode_bytes(&bytes, true, true).unwrap(), want, "{key}: {:?}", String::from_utf8_lossy(&bytes));
        }
    }
}

/// Invalid UTF-8 on the command line: `-p` is bytes (the same ids as from a
/// file, `\xff` escapes give the byte), a model path is a path.
#[cfg(unix)]
#[test]
fn front_ends_take_arguments_as_bytes() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let Some(path) = common::model(common::GEMMA) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join(OsStr::from_bytes(b"model-\xff.gguf"));
    std::os::unix::fs::symlink(&path, &odd).unwrap();
    let text = dir.path().join("in.txt");
    std::fs::write(&text, b"hi \xff there").unwrap();
    let ids = |args: &[&OsStr]| {
        let out = std::process::Command::new(common::bin()).arg("tokenize").args(args).arg("--ids").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let from_arg = ids(&["-m".as_ref(), odd.as_os_str(), "-p".as_ref(), OsStr::from_bytes(b"hi \xff there")]);
    let from_file = ids(&["-m".as_ref(), odd.as_os_str(), "-f".as_ref(), text.as_os_str()]);
    // llama-tokenize's ids (<0xFF> then the bytes of "▁", as its SentencePiece splits them)
    assert_eq!(from_arg, "[2, 2202, 236743, 493, 464, 388, 367, 13534]");
    assert_eq!(from_arg, from_file);
    // completion: -e turns \xff into the byte 0xFF (not U+00FF): the echo of
    // the prompt's tokens shows the byte token (as U+FFFD) and the split "▁"
    let out = std::process::Command::new(common::bin())
        .args(["cli".as_ref(), "-m".as_ref(), odd.as_os_str(), "-p".as_ref(), OsStr::from_bytes(br"hi \xff there"), "-n".as_ref(), "1".as_ref()])
        .args(["--temp", "0", "-t", "1", "-no-cnv"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.starts_with("hi \u{FFFD}\u{2581}there".as_bytes()), "{:?}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn tokenize_front_end_prints_ids() {
    let Some(path) = common::model(common::SMOLLM2) else {
        return;
    };
    let out = std::process::Command::new(common::bin())
        .args(["tokenize", "-m", path.to_str().unwrap(), "-p", "Hello world", "--ids", "--log-disable"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[19556, 905]");
}

/// Greedy 64-token text equals llama-completion's for at least 4 of 5 prompts
/// (near-ties in the logits can flip a token; see the README).
fn greedy(key: &str, file: &str, need: usize) {
    common::exact_mode();
    let Some(path) = common::model(file) else {
        return;
    };
    let mut ok = 0;
    let refs = common::read_jsonl(&format!("greedy-{key}.jsonl"));
    for r in &refs {
        let out = std::process::Command::new(common::bin())
            .args([
                "cli",
                "-m",
                path.to_str().unwrap(),
                "-p",
                r["prompt"].as_str().unwrap(),
                "-n",
                "64",
                "--temp",
                "0",
                "--seed",
                "23",
                "-no-cnv",
                "-c",
                "2048",
                "-t",
                "2",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got = String::from_utf8_lossy(&out.stdout);
        let want = r["stdout"].as_str().unwrap();
        if got.trim_end_matches('\n') == want.trim_end_matches('\n') {
            ok += 1;
        } else {
            eprintln!("{key}: differs for {:?}:\n  ours: {got:?}\n  ref:  {want:?}", r["prompt"]);
        }
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("common_perf_print: prompt eval time"), "{err}");
        assert!(err.contains("[ Prompt: "), "{err}");
    }
    eprintln!("{key}: greedy equal on {ok}/{}", refs.len());
    assert!(ok >= need, "{key}: greedy text equal on only {ok}/{} prompts", refs.len());
}

#[test]
fn greedy_smollm2() {
    greedy(MODELS[0].0, MODELS[0].1, 4);
}

#[test]
fn greedy_qwen() {
    greedy(MODELS[1].0, MODELS[1].1, 4);
}

fn ppl(idx: usize) {
    common::exact_mode();
    let (key, file, full, ci) = MODELS[idx];
    if matches!(ci, Ci::LongOnly) && !common::long_only(&format!("{key}'s perplexity (its greedy text runs in CI)")) {
        return;
    }
    let (chunks, want) = match ci {
        Ci::Chunks(n, ppl) if !common::long_tests() => (n, ppl),
        _ => (20, full),
    };
    let Some(path) = common::model(file) else {
        return;
    };
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    let model = Model::load(&path).unwrap();
    let tok = Tokenizer::from_gguf(&model.g).unwrap();
    let text = std::fs::read_to_string(common::fixture("rust-book-ch00-04.txt")).unwrap();
    let tokens = tok.encode(&text, true, false).unwrap();
    let bos = if tok.add_bos { tok.bos } else { None };
    let r = rllama::perplexity::perplexity(&model, None, &tokens, bos, 512, Some(chunks), 2048, None, None, &mut |_, _| {}).unwrap();
    let rel = (r.ppl - want).abs() / want;
    eprintln!("{key}: {chunks} chunks: PPL {:.4} +/- {:.5} (llama.cpp {want}), relative difference {:.4}%", r.ppl, r.ppl_err.unwrap_or(0.0), rel * 100.0);
    assert!(rel < 0.002, "{key}: PPL {} vs llama.cpp {want}", r.ppl);
}

#[test]
fn perplexity_smollm2() {
    ppl(0);
}

#[test]
fn perplexity_qwen() {
    ppl(1);
}

#[test]
fn greedy_gemma() {
    greedy(MODELS[2].0, MODELS[2].1, 4);
}

#[test]
fn perplexity_gemma() {
    ppl(2);
}

#[test]
fn greedy_qwen15() {
    greedy(MODELS[3].0, MODELS[3].1, 4);
}

#[test]
fn perplexity_qwen15() {
    ppl(3);
}

/// Sequences stepped together equal each stepped alone in exact mode too
/// (every row rounded as a one-token step).
#[test]
fn sequences_stepped_together_equal_each_alone_exact() {
    common::exact_mode();
    let Some(p) = common::model(common::SMOLLM2) else { return };
    let m = rllama::model::Model::load(&p).unwrap();
    common::together_equals_alone(&m, &common::mixed_prompts(&m), 5);
}
