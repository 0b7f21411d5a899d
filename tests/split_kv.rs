//! Exact mode's one-token step past 256 positions against llama.cpp, bit for
//! bit: layer 0's attention output, and the whole step's logits (by hash).
//! llama.cpp's flash attention splits the keys over its
//! threads once its KV view holds 512+ cells, and on Gemma 3 past 1024
//! positions its sliding-window cache is a ring that orders the keys by
//! cell. Fixtures from `scripts/split-kv-fixtures.sh` (llama.cpp built
//! without AVX-512, 2 threads); rllama runs `cli` in exact mode with 2
//! threads, rounding as that build does (`RLLAMA_GGML_BUILD=avx2`), and
//! dumps its tensors (`RLLAMA_DUMP_DIR`): the last forward pass, the step,
//! leaves its own. Exact mode's kernels give the same bits on every x86
//! machine, so this holds on any.
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
        .env("RLLAMA_GGML_BUILD", "avx2")
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
    let hash = std::fs::read_to_string(common::fixture(&format!("split-kv/{}", name.replace(".f32", ".logits.fnv")))).unwrap();
    let logits = std::fs::read(dir.path().join("result_output.bin")).unwrap();
    assert_eq!(format!("{:016x}", fnv1a(&logits)), hash.trim(), "{model}: the step's logits differ from llama.cpp's");
}

/// 64-bit FNV-1a, as the fixtures script hashes llama.cpp's logits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
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

/// 1118 positions: the sliding-window layers' cache of 1024 cells is a ring
/// (for the step, and for the prompt's third batch in the tiled kernel).
#[test]
fn gemma_step_follows_the_sliding_window_ring() {
    check(common::GEMMA, 5600);
}
