//! Exact mode's one-token step past 256 positions against llama.cpp, layer
//! 0's attention output bit for bit: llama.cpp's flash attention splits the
//! keys over its threads once its KV view holds 512+ cells, and on Gemma 3
//! past 1024 positions its sliding-window cache is a ring that orders the
//! keys by cell. Fixtures from `scripts/split-kv-fixtures.sh` (llama.cpp
//! built without AVX-512, 2 threads); rllama runs `cli` in exact mode with 2
//! threads and the f16 dot product in that build's order
//! (`RLLAMA_F16_DOT=avx2`), dumping its tensors (`RLLAMA_DUMP_DIR`): the last
//! forward pass, the step, leaves its own. Layer 0's queries, keys and values
//! are the same bits on every build, so this holds on any x86 machine.
mod common;

/// The step after the first `bytes` bytes of the book fixture (as the shell
/// passes them: trailing newlines dropped) against the fixture's tensor.
fn check(model: &str, bytes: usize) {
    let Some(path) = common::model(model) else { return };
    let book = std::fs::read(common::fixture("rust-book-ch00-04.txt")).unwrap();
    let prompt = String::from_utf8(book[..bytes].to_vec()).unwrap();
    let prompt = prompt.trim_end_matches('\n');
    let name = format!("{}-{bytes}.f32", model.trim_end_matches(".gguf"));
    let want = std::fs::read(common::fixture(&format!("split-kv/{name}"))).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rllama"))
        .args(["cli", "-m", path.to_str().unwrap(), "-p", prompt, "-n", "2", "-t", "2", "--temp", "0", "-no-cnv"])
        .env("RLLAMA_EXACT", "1")
        .env("RLLAMA_F16_DOT", "avx2")
        .env("RLLAMA_DUMP_DIR", dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{model}: {}", String::from_utf8_lossy(&out.stderr));
    let got = std::fs::read(dir.path().join("kqv_out-0.bin")).unwrap();
    assert_eq!(got.len(), want.len(), "{model}: the step's attention output has another size");
    let f = |b: &[u8]| -> Vec<f32> { b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() };
    let (got, want) = (f(&got), f(&want));
    let same = got.iter().zip(&want).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    let maxdiff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert_eq!(same, want.len(), "{model}: {same} of {} elements bit-identical to llama.cpp's, largest difference {maxdiff}", want.len());
}

/// 296 positions: a KV view of 512 cells in two chunks of 256.
#[test]
fn smollm2_step_splits_the_keys_as_llama_cpp() {
    check(common::SMOLLM2, 1500);
}

/// 766 positions, 7 queries per KV head: 768 cells in chunks of 384.
#[test]
fn qwen_step_splits_the_keys_as_llama_cpp() {
    check(common::QWEN, 4000);
}

/// 1118 positions: the sliding-window layers' cache of 1024 cells is a ring.
#[test]
fn gemma_step_follows_the_sliding_window_ring() {
    check(common::GEMMA, 5600);
}
