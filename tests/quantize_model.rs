//! `rllama quantize` against llama-quantize: per-tensor types and SHA-256 of
//! the data bytes that llama-quantize (llama.cpp 0c1e570, --allow-requantize)
//! wrote for the same source files (tests/fixtures/llama-quantize-sha256.txt,
//! made with scripts/quantize-fixture.py). And the error lines.
mod common;

use rllama::gguf::GgufFile;
use rllama::quantize_model::{ftype::Ftype, plan::Params, quantize_file, Progress};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::process::Command;

struct Quiet;
impl Progress for Quiet {
    fn line(&mut self, _: &str) {}
    fn advance(&mut self, _: u64) {}
}

const SOURCES: &[(&str, &str)] = &[("smollm2", common::SMOLLM2), ("qwen", common::QWEN)];

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check(key: &str, qtype: &str) {
    let file = SOURCES.iter().find(|s| s.0 == key).unwrap().1;
    let Some(src) = common::model(file) else {
        return;
    };
    let fixture = std::fs::read_to_string(common::fixture("llama-quantize-sha256.txt")).unwrap();
    let want: BTreeMap<String, (String, String)> = fixture
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[0] == key && f[1] == qtype).then(|| (f[2].to_string(), (f[3].to_string(), f[4].to_string())))
        })
        .collect();
    assert!(!want.is_empty(), "no fixture lines for {key} {qtype}");
    let _ = rayon::ThreadPoolBuilder::new().build_global();
    let dst = std::env::temp_dir().join(format!("rllama-q-{key}-{qtype}-{}.gguf", std::process::id()));
    let p = Params { allow_requantize: true, quantize_output: true, ..Default::default() };
    quantize_file(&src, &dst, Ftype::parse(qtype).unwrap().0, &p, &mut Quiet).unwrap();
    let g = GgufFile::open(&dst).unwrap();
    let mut bad = Vec::new();
    assert_eq!(g.tensors.len(), want.len(), "{key} {qtype}: tensor count");
    for t in &g.tensors {
        let got = (t.ty.name().to_lowercase(), hex(&Sha256::digest(g.tensor_data(t))));
        match want.get(&t.name) {
            Some(w) if *w == got => {}
            Some(w) => bad.push(format!("{}: {} {} vs llama-quantize {} {}", t.name, got.0, &got.1[..12], w.0, &w.1[..12])),
            None => bad.push(format!("{}: not in llama-quantize's output", t.name)),
        }
    }
    assert_eq!(g.get_i64("general.file_type"), Some(Ftype::parse(qtype).unwrap().0.id() as i64));
    std::fs::remove_file(&dst).ok();
    assert!(bad.is_empty(), "{key} {qtype}: {} tensors differ:\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn smollm2_q8_0() {
    check("smollm2", "Q8_0");
}
#[test]
fn smollm2_q4_0() {
    check("smollm2", "Q4_0");
}
#[test]
fn smollm2_q4_k_m() {
    check("smollm2", "Q4_K_M");
}
#[test]
fn smollm2_q2_k() {
    check("smollm2", "Q2_K");
}
#[test]
fn smollm2_iq4_xs() {
    check("smollm2", "IQ4_XS");
}
#[test]
fn qwen_q8_0() {
    check("qwen", "Q8_0");
}
#[test]
fn qwen_q4_0() {
    check("qwen", "Q4_0");
}
#[test]
fn qwen_q4_k_m() {
    check("qwen", "Q4_K_M");
}
#[test]
fn qwen_q2_k() {
    check("qwen", "Q2_K");
}
#[test]
fn qwen_iq4_xs() {
    check("qwen", "IQ4_XS");
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(common::bin()).args(args).output().unwrap()
}

#[test]
fn errors_are_one_line_and_leave_files_alone() {
    let Some(src) = common::model(common::SMOLLM2) else {
        return;
    };
    let s = src.to_str().unwrap();
    let before = std::fs::metadata(&src).unwrap().modified().unwrap();
    let dir = std::env::temp_dir().join(format!("rllama-qerr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dst = dir.join("out.gguf");
    let d = dst.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["quantize", "/nonexistent/model.gguf", d, "Q4_0"], "cannot read"),
        (vec!["quantize", s, d, "Q9_9"], "invalid quantization type"),
        (vec!["quantize", s, d, "IQ2_XXS"], "not supported"),
        (vec!["quantize", s, "/nonexistent-dir/out.gguf", "Q4_0"], "does not exist"),
        (vec!["quantize", s, d, "Q4_0"], "--allow-requantize"),
        (vec!["quantize", s, s, "Q4_0"], "the same"),
        (vec!["quantize", "--imatrix", "x.dat", s, d, "Q4_0"], "invalid argument"),
    ];
    for (args, want) in cases {
        let out = run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.trim().lines().last().unwrap_or("").to_string();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(last.starts_with("error"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(!dst.exists(), "{args:?} left {d}");
    }
    assert_eq!(std::fs::metadata(&src).unwrap().modified().unwrap(), before, "the source was modified");
    assert!(std::fs::read_dir(&dir).unwrap().next().is_none(), "temporary files left behind");
    std::fs::remove_dir_all(&dir).ok();
}

/// The temporary file is created exclusively beside the destination: a
/// planted `DST.rllama-tmp` symlink (the old fixed name) is never followed,
/// so neither the file it points at nor the source is touched. A directory
/// as destination is refused before any work.
#[cfg(unix)]
#[test]
fn planted_symlinks_and_directories_are_safe() {
    let Some(src) = common::model(common::SMOLLM2) else { return };
    let dir = std::env::temp_dir().join(format!("rllama-qlink-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    let dst = dir.join("out.gguf");
    std::os::unix::fs::symlink(&victim, dir.join("out.gguf.rllama-tmp")).unwrap();
    let src_len = std::fs::metadata(&src).unwrap().len();
    let out = std::process::Command::new(common::bin())
        .args(["quantize", "--allow-requantize", src.to_str().unwrap(), dst.to_str().unwrap(), "Q8_0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert_eq!(std::fs::metadata(&src).unwrap().len(), src_len);
    assert!(rllama::gguf::GgufFile::open(&dst).is_ok());
    // a directory as destination: one error line, at once
    let out = std::process::Command::new(common::bin())
        .args(["quantize", "--allow-requantize", src.to_str().unwrap(), dir.to_str().unwrap(), "Q8_0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is a directory"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().ends_with(".rllama-tmp") && n != "out.gguf.rllama-tmp")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}
