#![allow(dead_code)]
use std::path::PathBuf;

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const QWEN: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
pub const QWEN15: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";

/// Exact mode (llama.cpp's rounding) for this test process and the
/// binaries it starts: for tests that compare with llama.cpp's outputs.
pub fn exact_mode() {
    rllama::quant::fast::set_exact(true);
    std::env::set_var("RLLAMA_EXACT", "1");
}

/// `RLLAMA_LONG_TESTS=1`: the acceptance-length runs (200 tokens on every
/// prompt, 20 perplexity chunks, the 1.5B everywhere). Without it the same
/// checks run shorter, so that `cargo test --release` fits CI's time on a
/// slow 2-core machine.
pub fn long_tests() -> bool {
    std::env::var_os("RLLAMA_LONG_TESTS").is_some_and(|v| v != "0" && !v.is_empty())
}

/// Whether a long-only check runs: under `RLLAMA_LONG_TESTS=1`; else it
/// prints why `what` is skipped (as `model` does for a missing file).
pub fn long_only(what: &str) -> bool {
    let on = long_tests();
    if !on {
        eprintln!("SKIPPED: {what} needs RLLAMA_LONG_TESTS=1");
    }
    on
}

/// `short` in CI, `long` under `RLLAMA_LONG_TESTS=1`.
pub fn scaled<T>(short: T, long: T) -> T {
    if long_tests() {
        long
    } else {
        short
    }
}

/// `len` deterministic activations in [-1, 1) (the benches' input rows).
pub fn bench_acts(len: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

pub fn models_dir() -> PathBuf {
    match std::env::var_os("RLLAMA_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/rllama/models"),
    }
}

/// The model's path, or None after printing why the test is skipped.
pub fn model(name: &str) -> Option<PathBuf> {
    let p = models_dir().join(name);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: model {} not found (run scripts/fetch-models.sh)", p.display());
        None
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn read_jsonl(name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(fixture(name)).unwrap().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rllama"))
}

/// Deterministic pseudo-random bytes (xorshift).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// A tiny random llama model (GGUF writer, F32 weights): vocabulary 8.
pub fn tiny_model(seed: u64) -> rllama::model::Model {
    tiny_model_with(seed, |_| {})
}

/// `tiny_model` with extra metadata (e.g. a tokenizer).
pub fn tiny_model_with(seed: u64, extra: impl FnOnce(&mut rllama::gguf::GgufWriter)) -> rllama::model::Model {
    rllama::model::Model::from_gguf(std::sync::Arc::new(rllama::gguf::GgufFile::from_bytes(tiny_gguf(seed, extra)).unwrap())).unwrap()
}

/// `tiny_model` with `n_layer` blocks.
pub fn tiny_model_layers(seed: u64, n_layer: usize) -> rllama::model::Model {
    rllama::model::Model::from_gguf(std::sync::Arc::new(rllama::gguf::GgufFile::from_bytes(tiny_gguf_layers(seed, n_layer, |_| {})).unwrap())).unwrap()
}

/// The bytes of `tiny_model_with`'s file.
pub fn tiny_gguf(seed: u64, extra: impl FnOnce(&mut rllama::gguf::GgufWriter)) -> Vec<u8> {
    tiny_gguf_layers(seed, 2, extra)
}

/// The bytes of a tiny model file with `nl` blocks.
pub fn tiny_gguf_layers(seed: u64, nl: usize, extra: impl FnOnce(&mut rllama::gguf::GgufWriter)) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    use rllama::gguf::{GgmlType, GgufWriter, Value};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (d, ff, nv) = (64usize, 128usize, 8usize);
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    for (k, v) in [
        ("embedding_length", d),
        ("feed_forward_length", ff),
        ("block_count", nl),
        ("attention.head_count", 4),
        ("attention.head_count_kv", 2),
        ("context_length", 256),
        ("vocab_size", nv),
    ] {
        w.set(&format!("llama.{k}"), Value::U32(v as u32));
    }
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    let mut t = |name: &str, dims: &[u64], scale: f32, one: bool| {
        let n: u64 = dims.iter().product();
        let data: Vec<u8> = (0..n).flat_map(|_| (if one { 1.0 } else { rng.gen_range(-scale..scale) }).to_le_bytes()).collect();
        w.add_tensor(name, dims, GgmlType::F32, data).unwrap();
    };
    t("token_embd.weight", &[d as u64, nv as u64], 1.0, false);
    t("output_norm.weight", &[d as u64], 0.0, true);
    t("output.weight", &[d as u64, nv as u64], 0.3, false);
    for i in 0..nl {
        let p = |s: &str| format!("blk.{i}.{s}");
        t(&p("attn_norm.weight"), &[d as u64], 0.0, true);
        t(&p("ffn_norm.weight"), &[d as u64], 0.0, true);
        t(&p("attn_q.weight"), &[d as u64, d as u64], 0.3, false);
        t(&p("attn_k.weight"), &[d as u64, (d / 2) as u64], 0.3, false);
        t(&p("attn_v.weight"), &[d as u64, (d / 2) as u64], 0.3, false);
        t(&p("attn_output.weight"), &[d as u64, d as u64], 0.2, false);
        t(&p("ffn_gate.weight"), &[d as u64, ff as u64], 0.2, false);
        t(&p("ffn_up.weight"), &[d as u64, ff as u64], 0.2, false);
        t(&p("ffn_down.weight"), &[ff as u64, d as u64], 0.2, false);
    }
    extra(&mut w);
    w.to_bytes()
}

/// A graft progress sink that shows nothing.
pub struct QuietGraft;
impl rllama::heads::graft::GraftProgress for QuietGraft {
    fn chunk(&mut self, _: usize, _: usize) {}
    fn line(&mut self, _: &str) {}
}

/// `graft --mtp` parameters for a closed-form head (no training, no
/// self-distillation), ridge 1e-2.
pub fn closed_form_mtp(n_ctx: usize, chunks: Option<usize>, holdout: usize, ty: rllama::gguf::GgmlType) -> rllama::heads::mtp::MtpParams {
    rllama::heads::mtp::MtpParams {
        n_ctx,
        chunks,
        holdout,
        ridge: 1e-2,
        ty: ty.into(),
        epochs: 0,
        lr: 0.0,
        self_distill: 0,
        depth: 1,
        train_vocab: 0,
        distill_prompts: Vec::new(),
        stop: Vec::new(),
        n_ff: None,
    }
}

/// Prompts of different lengths (one past a fast-mode key segment) for `m`.
pub fn mixed_prompts(m: &rllama::model::Model) -> Vec<Vec<u32>> {
    let nv = m.cfg.n_vocab as u32;
    [5usize, 40, 300, 17].iter().enumerate().map(|(k, &n)| (0..n as u32).map(|i| (3 + i * 37 + k as u32 * 11) % nv).collect()).collect()
}

/// Several sequences stepped together (`Model::step_many`) give each
/// sequence the logits stepping it alone gives, bit for bit, and
/// `greedy_many` (two at a time, so places are handed on) the continuations
/// of greedy decoding prompt by prompt.
pub fn together_equals_alone(m: &rllama::model::Model, prompts: &[Vec<u32>], steps: usize) {
    use rllama::decode::speculative::argmax;
    use rllama::decode::Session;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let nv = m.cfg.n_vocab;
    let token = |b: usize, k: usize| ((7 + 13 * b + 29 * k) % nv) as u32;
    let mut alone = Vec::new();
    for (b, p) in prompts.iter().enumerate() {
        let mut s = Session::new(m, p.len() + steps, 512).unwrap();
        s.prompt(p).unwrap();
        alone.push((0..steps).map(|k| bits(&s.step(token(b, k)).unwrap())).collect::<Vec<_>>());
    }
    let mut sess: Vec<Session> = prompts.iter().map(|p| Session::new(m, p.len() + steps, 512).unwrap()).collect();
    for (s, p) in sess.iter_mut().zip(prompts) {
        s.prompt(p).unwrap();
    }
    let mut sc = rllama::model::Scratch::default();
    let mut logits = Vec::new();
    for k in 0..steps {
        let tokens: Vec<u32> = (0..prompts.len()).map(|b| token(b, k)).collect();
        let mut kvs: Vec<_> = sess.iter_mut().map(|s| &mut s.kv).collect();
        m.step_many(&tokens, &mut kvs, &mut sc, rllama::model::Rounding::AsSteps, &mut logits).unwrap();
        for (b, want) in alone.iter().enumerate() {
            assert!(bits(&logits[b * nv..(b + 1) * nv]) == want[k], "sequence {b} (prompt of {}), step {k}", prompts[b].len());
        }
    }
    // greedy continuations
    let n = steps;
    let (mut want, mut want_rows) = (Vec::new(), Vec::new());
    for p in prompts {
        let mut s = Session::new(m, p.len() + n, 512).unwrap();
        s.log_hidden = true;
        let mut seq = p.clone();
        let mut l = s.prompt(p).unwrap();
        for i in 0..n {
            let t = argmax(&l) as u32;
            seq.push(t);
            if i + 1 < n {
                l = s.step(t).unwrap();
            }
        }
        want.push(seq);
        want_rows.push(s.take_hidden_log().1);
    }
    let mut finished = Vec::new();
    let got = rllama::decode::batch::greedy_many(m, prompts, n, &[], 2, true, |i| finished.push(i)).unwrap();
    let tokens: Vec<Vec<u32>> = got.iter().map(|c| c.tokens.clone()).collect();
    assert_eq!(tokens, want, "greedy_many, two at a time");
    // the rows of every token but the last: those stepping alone logs
    for (c, rows) in got.iter().zip(&want_rows) {
        assert!(bits(&c.rows) == bits(rows), "greedy_many's hidden rows of {} tokens", c.tokens.len());
    }
    finished.sort();
    assert_eq!(finished, (0..prompts.len()).collect::<Vec<_>>(), "each prompt reported done once");
}
