//! A property test over mutated GGUF files (bit flips, byte sets, truncations,
//! length and count fields set to extremes), in plain `cargo test`: every
//! case gives an error or a valid load, never a panic (nor an abort: a case
//! that allocated without checking would end the test process).
mod common;
use rllama::gguf::{GgufFile, Value, ValueType};
use std::sync::Arc;

/// Load everything a front-end loads from the bytes; Ok or Err, no panic.
fn load(bytes: Vec<u8>) {
    let Ok(g) = GgufFile::from_bytes(bytes) else { return };
    let _ = rllama::model::Config::from_gguf(&g);
    let _ = rllama::tokenizer::Tokenizer::from_gguf(&g);
    let g = Arc::new(g);
    if let Ok(m) = rllama::model::Model::from_gguf(g.clone()) {
        // a model that loads must also evaluate a token or refuse it
        let Ok(mut kv) = m.new_cache(8) else { return };
        let _ = m.forward(&[0], &mut kv, &rllama::model::Outputs::Last);
    }
}

fn tiny_with_tokenizer() -> Vec<u8> {
    common::tiny_gguf(11, |w| {
        w.set_str("tokenizer.ggml.model", "gpt2");
        let toks = ["a", "b", "c", "d", "e", "f", "g", "h"].iter().map(|t| Value::String(t.to_string())).collect();
        w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, toks));
        w.set("tokenizer.ggml.merges", Value::Array(ValueType::String, vec![Value::String("a b".into())]));
    })
}

/// One deterministic mutation of `base` (the next from `rng`), inside its
/// first `header_len` bytes.
fn mutate(base: &[u8], rng: &mut common::Rng, header_len: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    let at = |rng: &mut common::Rng| (rng.next() as usize) % header_len.max(1);
    match rng.next() % 6 {
        0 => {
            for _ in 0..1 + rng.next() % 4 {
                let p = at(rng);
                b[p] ^= 1 << (rng.next() % 8);
            }
        }
        1 => {
            let p = at(rng);
            b[p] = rng.next() as u8;
        }
        2 => b.truncate(at(rng)),
        3 => {
            // an 8-byte length or count field set to an extreme
            let p = at(rng).min(b.len().saturating_sub(8));
            let v: u64 = [u64::MAX, u64::MAX / 2, 1 << 32, 1 << 40, 0, 0xFFFF_FFFF][(rng.next() % 6) as usize];
            b[p..p + 8].copy_from_slice(&v.to_le_bytes());
        }
        4 => {
            // a 4-byte field (type ids, u32 metadata) set to an extreme
            let p = at(rng).min(b.len().saturating_sub(4));
            let v: u32 = [u32::MAX, 0, 13, 40, 0x8000_0000][(rng.next() % 5) as usize];
            b[p..p + 4].copy_from_slice(&v.to_le_bytes());
        }
        _ => {
            // a run of random bytes
            let p = at(rng);
            let n = (1 + rng.next() % 32) as usize;
            for x in b.iter_mut().skip(p).take(n) {
                *x = rng.next() as u8;
            }
        }
    }
    b
}

/// `cases` mutations of `base` (mutated within its first `header_len`
/// bytes) through `load`, none of which may panic.
fn assert_no_panics(base: &[u8], header_len: usize, seed: u64, cases: usize, what: &str) {
    let mut rng = common::Rng(seed);
    let mut panics = Vec::new();
    for i in 0..cases {
        let b = mutate(base, &mut rng, header_len);
        if std::panic::catch_unwind(|| load(b)).is_err() {
            panics.push(i);
        }
    }
    assert!(panics.is_empty(), "{} of {cases} mutated {what} panicked (first cases {:?})", panics.len(), &panics[..panics.len().min(10)]);
}

#[test]
fn mutated_tiny_models_never_panic() {
    let base = tiny_with_tokenizer();
    let header_len = GgufFile::from_bytes(base.clone()).unwrap().data_offset;
    assert_no_panics(&base, header_len, 0x9E37_79B9_7F4A_7C15, 20_000, "files");
}

/// The real SmolLM2 header (its first megabytes: metadata, vocabulary,
/// tensor infos), mutated; tensor data is cut off, so loads stop at it.
#[test]
fn mutated_real_headers_never_panic() {
    let Some(p) = common::model(common::SMOLLM2) else { return };
    let header_len = GgufFile::open(&p).unwrap().data_offset;
    let mut base = vec![0u8; header_len + 4096];
    std::io::Read::read_exact(&mut std::fs::File::open(&p).unwrap(), &mut base).unwrap();
    assert_no_panics(&base, header_len, 0xD1B5_4A32_D192_ED03, 2000, "headers");
}
