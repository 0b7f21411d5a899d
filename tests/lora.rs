//! LoRA adapters against llama.cpp: seeded random adapters (the same bytes on
//! every machine, `rllama::lora::random`) applied by rllama in exact mode and
//! by llama-completion / llama-perplexity `--lora` when the fixtures were made
//! (scripts/lora-fixture.sh): greedy text and perplexity must agree. Plus the
//! loader's errors on files that are not adapters for the model.
mod common;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (fixture key, model file, seed of the first adapter, of the second).
const MODELS: [(&str, &str); 2] = [("smollm2-135m-q4_1", common::SMOLLM2), ("qwen2.5-coder-0.5b-q4_k_m", common::QWEN)];
const RANK: usize = 8;
const ALPHA: f32 = 16.0;
/// Each pair's product about this share of its projection's output.
const GAIN: f32 = 0.05;
const SEEDS: [u64; 2] = [1, 2];
/// Chunks of 512 the perplexity fixture covers.
const PPL_CHUNKS: &str = "4";

/// Write the test adapters of `model` as `dir/<stem>-lora<i>.gguf`.
fn write_adapters(model: &Path, dir: &Path) -> Vec<PathBuf> {
    let m = rllama::model::Model::load(model).unwrap();
    let stem = model.file_stem().unwrap().to_string_lossy().into_owned();
    SEEDS
        .iter()
        .enumerate()
        .map(|(i, &seed)| {
            let p = dir.join(format!("{stem}-lora{i}.gguf"));
            rllama::lora::random::random_adapter(&m, RANK, ALPHA, GAIN, seed).unwrap().write_file(&p).unwrap();
            p
        })
        .collect()
}

/// For scripts/lora-fixture.sh: the adapters into $RLLAMA_LORA_OUT.
#[test]
#[ignore]
fn write_test_adapters() {
    let dir = PathBuf::from(std::env::var_os("RLLAMA_LORA_OUT").expect("set RLLAMA_LORA_OUT"));
    for (_, file) in MODELS {
        if let Some(m) = common::model(file) {
            for p in write_adapters(&m, &dir) {
                println!("{}", p.display());
            }
        }
    }
}

/// For scripts/lora-cost.sh: one adapter of rank $RLLAMA_LORA_RANK for the
/// model $RLLAMA_LORA_MODEL, written to $RLLAMA_LORA_OUT (a file path).
#[test]
#[ignore]
fn write_bench_adapter() {
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("set {k}"));
    let m = rllama::model::Model::load(Path::new(&var("RLLAMA_LORA_MODEL"))).unwrap();
    let rank: usize = var("RLLAMA_LORA_RANK").parse().unwrap();
    rllama::lora::random::random_adapter(&m, rank, 2.0 * rank as f32, GAIN, SEEDS[0]).unwrap().write_file(Path::new(&var("RLLAMA_LORA_OUT"))).unwrap();
}

/// The flags each fixture case passes: one adapter, or both scaled.
fn lora_args(case: &str, ads: &[PathBuf]) -> Vec<String> {
    match case {
        "one" => vec!["--lora".into(), ads[0].display().to_string()],
        "two" => vec!["--lora-scaled".into(), format!("{}:0.5,{}:1.5", ads[0].display(), ads[1].display())],
        _ => panic!("unknown case {case}"),
    }
}

fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(common::bin()).args(args).env("RLLAMA_EXACT", "1").output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `run` that must succeed: its stdout and stderr.
fn run_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> (String, String) {
    let (success, out, err) = run(args);
    assert!(success, "{args:?}: {err}");
    (out, err)
}

fn greedy(key: &str, file: &str) {
    let Some(model) = common::model(file) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ads = write_adapters(&model, dir.path());
    let refs = common::read_jsonl(&format!("lora-greedy-{key}.jsonl"));
    for case in ["one", "two"] {
        let (mut ok, mut changed) = (0, 0);
        let cases: Vec<_> = refs.iter().filter(|r| r["case"] == case).collect();
        assert_eq!(cases.len(), 5, "{key}: five prompts per case in the fixture");
        for r in &cases {
            let mut args: Vec<String> =
                ["cli", "-m", model.to_str().unwrap(), "-n", "64", "--temp", "0", "--seed", "23", "-no-cnv", "-c", "2048", "-t", "2", "-p"]
                    .map(String::from)
                    .to_vec();
            args.push(r["prompt"].as_str().unwrap().to_string());
            args.extend(lora_args(case, &ads));
            let (got, _) = run_ok(&args);
            let want = r["stdout"].as_str().unwrap();
            if got.trim_end_matches('\n') == want.trim_end_matches('\n') {
                ok += 1;
            } else {
                eprintln!("{key} {case}: differs for {:?}:\n  ours: {got:?}\n  ref:  {want:?}", r["prompt"]);
            }
            changed += usize::from(want != r["base"].as_str().unwrap());
        }
        // the adapter changes most texts: the test cannot pass on the base alone
        assert!(changed >= 3, "{key} {case}: the fixture adapter changes only {changed}/5 texts");
        eprintln!("{key} {case}: greedy equal on {ok}/5");
        assert!(ok >= 4, "{key} {case}: greedy text with LoRA equal to llama.cpp's on only {ok}/5 prompts");
    }
}

fn final_ppl(out: &str) -> f64 {
    let line = out.lines().find(|l| l.contains("Final estimate: PPL =")).unwrap_or_else(|| panic!("no final estimate in:\n{out}"));
    line.split("PPL =").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

fn perplexity(key: &str, file: &str) {
    let Some(model) = common::model(file) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ads = write_adapters(&model, dir.path());
    let text = common::fixture("rust-book-ch00-04.txt");
    // CI: the two scaled adapters together (case one's single adapter is the
    // same path); both under RLLAMA_LONG_TESTS=1
    let cases = common::read_jsonl(&format!("lora-ppl-{key}.jsonl"));
    for r in cases.iter().filter(|r| common::long_tests() || r["case"] == "two") {
        let case = r["case"].as_str().unwrap();
        let mut args: Vec<String> = ["perplexity", "-m", model.to_str().unwrap(), "-f", text.to_str().unwrap(), "-c", "512", "--chunks", PPL_CHUNKS, "-t", "2"]
            .map(String::from)
            .to_vec();
        args.extend(lora_args(case, &ads));
        let (out, err) = run_ok(&args);
        let ppl = final_ppl(&(out + &err));
        let want = r["ppl"].as_f64().unwrap();
        let base = r["base_ppl"].as_f64().unwrap();
        eprintln!("{key} {case}: PPL {ppl:.4}, llama.cpp {want:.4} (base {base:.4})");
        assert!((ppl / want - 1.0).abs() <= 0.002, "{key} {case}: PPL {ppl} vs llama.cpp's {want}");
        assert!((want / base - 1.0).abs() > 0.01, "{key} {case}: the fixture adapter barely changes the perplexity");
    }
}

/// `rllama export-lora -m M --lora A --lora-scaled B:0.7` writes the bytes
/// llama-export-lora wrote (sha256 in tests/fixtures/lora-export-sha256.txt).
fn export(key: &str, file: &str) {
    use sha2::{Digest, Sha256};
    let Some(model) = common::model(file) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ads = write_adapters(&model, dir.path());
    let out = dir.path().join("merged.gguf");
    let args: Vec<String> = vec![
        "export-lora".into(),
        "-m".into(),
        model.display().to_string(),
        "--lora".into(),
        ads[0].display().to_string(),
        "--lora-scaled".into(),
        format!("{}:0.7", ads[1].display()),
        "-o".into(),
        out.display().to_string(),
    ];
    run_ok(&args);
    let got = format!("{:x}", Sha256::digest(std::fs::read(&out).unwrap()));
    let fixture = std::fs::read_to_string(common::fixture("lora-export-sha256.txt")).unwrap();
    let want = fixture.lines().find_map(|l| l.strip_prefix(&format!("{key} "))).unwrap();
    assert_eq!(got, want.trim(), "{key}: export-lora output differs from llama-export-lora's");
}

/// `export-lora --outtype Q4_K_M` writes the bytes of export-lora followed by
/// `quantize --allow-requantize ... Q4_K_M` (no F16 file in between).
#[test]
fn export_lora_outtype_equals_export_then_quantize() {
    let Some(model) = common::model(common::SMOLLM2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ads = write_adapters(&model, dir.path());
    let p = |n: &str| dir.path().join(n).display().to_string();
    let m = model.display().to_string();
    let a = ads[0].display().to_string();
    for args in [
        vec!["export-lora", "-m", &m, "--lora", &a, "-o", &p("f16.gguf")],
        vec!["quantize", "--allow-requantize", &p("f16.gguf"), &p("two.gguf"), "Q4_K_M"],
        vec!["export-lora", "-m", &m, "--lora", &a, "--outtype", "Q4_K_M", "-o", &p("one.gguf")],
    ] {
        run_ok(&args);
    }
    assert!(std::fs::read(p("one.gguf")).unwrap() == std::fs::read(p("two.gguf")).unwrap(), "one pass differs from export + quantize");
    let (success, _, err) = run(&["export-lora", "-m", &m, "--lora", &a, "--outtype", "Q9_9", "-o", &p("x.gguf")]);
    assert!(!success && err.trim().starts_with("error: --outtype"), "{err}");
}

fn mean_kld(out: &str) -> f64 {
    let line = out.lines().find(|l| l.starts_with("Mean    KLD:")).unwrap_or_else(|| panic!("no KLD in:\n{out}"));
    line["Mean    KLD:".len()..].split_whitespace().next().unwrap().parse().unwrap()
}

/// extract-lora recovers a known low-rank change: TUNED = export-lora(BASE,
/// a rank-8 adapter); the rank-8 extraction keeps ~all of each difference's
/// norm, and BASE + extracted is far closer to TUNED than BASE is.
#[test]
fn extract_lora_recovers_a_merged_adapter() {
    let Some(model) = common::model(common::SMOLLM2) else { return };
    let dir = tempfile::tempdir().unwrap();
    let ads = write_adapters(&model, dir.path());
    let p = |n: &str| dir.path().join(n).display().to_string();
    let m = model.display().to_string();
    let text = common::fixture("rust-book-ch00-04.txt").display().to_string();
    let step = |args: &[&str]| {
        let (out, err) = run_ok(args);
        out + &err
    };
    step(&["export-lora", "-m", &m, "--lora", &ads[0].display().to_string(), "-o", &p("tuned.gguf")]);
    let report = step(&["extract-lora", "-m", &p("tuned.gguf"), "--base", &m, "-o", &p("x.gguf"), "--rank", "8"]);
    let kept: Vec<f64> = report.lines().filter_map(|l| l.split("keeps ").nth(1)).map(|s| s.split('%').next().unwrap().parse().unwrap()).collect();
    assert_eq!(kept.len(), 210, "{report}");
    assert!(kept.iter().all(|&k| k > 99.0), "{report}");
    step(&["perplexity", "-m", &p("tuned.gguf"), "-f", &text, "-c", "512", "--chunks", "2", "--kl-divergence-base", &p("tuned.kld")]);
    let with = mean_kld(&step(&["perplexity", "-m", &m, "--lora", &p("x.gguf"), "--kl-divergence-base", &p("tuned.kld"), "--kl-divergence"]));
    let without = mean_kld(&step(&["perplexity", "-m", &m, "--kl-divergence-base", &p("tuned.kld"), "--kl-divergence"]));
    eprintln!("KLD to the tuned model: base {without:.6}, base + extracted rank 8 {with:.6}");
    assert!(with < 0.1 * without, "base + extracted {with} vs base {without}");
}

#[test]
fn export_lora_equals_llama_export_lora_smollm2() {
    export(MODELS[0].0, MODELS[0].1);
}

#[test]
fn export_lora_equals_llama_export_lora_qwen() {
    export(MODELS[1].0, MODELS[1].1);
}

#[test]
fn lora_greedy_equals_llama_cpp_smollm2() {
    greedy(MODELS[0].0, MODELS[0].1);
}

#[test]
fn lora_greedy_equals_llama_cpp_qwen() {
    greedy(MODELS[1].0, MODELS[1].1);
}

#[test]
fn lora_perplexity_equals_llama_cpp_smollm2() {
    perplexity(MODELS[0].0, MODELS[0].1);
}

#[test]
fn lora_perplexity_equals_llama_cpp_qwen() {
    perplexity(MODELS[1].0, MODELS[1].1);
}

/// A file that is not an adapter for the model: one error line naming the
/// file (and tensor), exit status 1.
#[test]
fn bad_adapters_are_one_error_line() {
    let Some(model) = common::model(common::SMOLLM2) else { return };
    let Some(other) = common::model(common::GEMMA) else { return };
    let dir = tempfile::tempdir().unwrap();
    let m = rllama::model::Model::load(&model).unwrap();
    let good = rllama::lora::random::random_adapter(&m, 4, 8.0, GAIN, 7).unwrap();
    // wrong architecture
    let wrong_arch = {
        let g = std::sync::Arc::new(rllama::gguf::GgufFile::from_bytes(good.to_bytes()).unwrap());
        let mut w = rllama::gguf::GgufWriter::new();
        for (k, v) in &good.metadata {
            w.set(k, if k == "general.architecture" { rllama::gguf::Value::String("gemma3".into()) } else { v.clone() });
        }
        for t in &g.tensors {
            w.add_tensor(&t.name, &t.dims, t.ty, g.tensor_data(t).to_vec()).unwrap();
        }
        let p = dir.path().join("arch.gguf");
        w.write_file(&p).unwrap();
        p
    };
    // only the A half of one pair
    let half = {
        let g = std::sync::Arc::new(rllama::gguf::GgufFile::from_bytes(good.to_bytes()).unwrap());
        let mut w = rllama::gguf::GgufWriter::new();
        w.metadata = good.metadata.clone();
        let t = g.tensors.iter().find(|t| t.name.ends_with(".lora_a")).unwrap();
        w.add_tensor(&t.name, &t.dims, t.ty, g.tensor_data(t).to_vec()).unwrap();
        let p = dir.path().join("half.gguf");
        w.write_file(&p).unwrap();
        p
    };
    // a pair whose rank does not match between A and B
    let shape = {
        let mut w = rllama::gguf::GgufWriter::new();
        w.metadata = good.metadata.clone();
        let d = m.cfg.n_embd as u64;
        w.add_tensor("blk.0.attn_q.weight.lora_a", &[d, 4], rllama::gguf::GgmlType::F32, vec![0; d as usize * 4 * 4]).unwrap();
        w.add_tensor("blk.0.attn_q.weight.lora_b", &[2, d], rllama::gguf::GgmlType::F32, vec![0; d as usize * 2 * 4]).unwrap();
        let p = dir.path().join("shape.gguf");
        w.write_file(&p).unwrap();
        p
    };
    let not_adapter = {
        let mut w = rllama::gguf::GgufWriter::new();
        w.metadata = good.metadata.iter().filter(|(k, _)| k != "general.type").cloned().collect();
        let p = dir.path().join("plain.gguf");
        w.write_file(&p).unwrap();
        p
    };
    let cases: [(&Path, &str); 6] = [
        (&wrong_arch, "architecture"),
        (&half, "missing its lora_b half"),
        (&shape, "do not fit"),
        (&not_adapter, "not a LoRA adapter"),
        (&other, "not a LoRA adapter"),
        (Path::new("/nonexistent/adapter.gguf"), "cannot open"),
    ];
    for (p, want) in cases {
        let (success, _, err) = run(&[
            OsStr::new("cli"),
            OsStr::new("-m"),
            model.as_os_str(),
            OsStr::new("-p"),
            OsStr::new("Hi"),
            OsStr::new("-n"),
            OsStr::new("2"),
            OsStr::new("-no-cnv"),
            OsStr::new("--lora"),
            p.as_os_str(),
        ]);
        assert!(!success, "{}: accepted", p.display());
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{}: {err}", p.display());
        assert!(lines[0].starts_with("error: ") && lines[0].contains(want), "{}: {err}", p.display());
        assert!(lines[0].contains(&*p.display().to_string()), "the error names the file: {err}");
    }
    // --lora-scaled without a scale
    let (success, _, err) =
        run(&[OsStr::new("cli"), OsStr::new("-m"), model.as_os_str(), OsStr::new("-p"), OsStr::new("Hi"), OsStr::new("--lora-scaled"), OsStr::new("x.gguf")]);
    assert!(!success && err.trim().starts_with("error: --lora-scaled"), "{err}");
}
