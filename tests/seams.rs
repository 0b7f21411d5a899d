//! The model as parts, the per-layer KV cache, the Generator's rewind and
//! append: each gives exactly what the whole forward and plain decoding give.
mod common;
use common::tiny_model;
use rllama::decode::generator::Generator;
use rllama::decode::speculative::DraftLength;
use rllama::decode::Session;
use rllama::model::{Model, Outputs, Rounding, Scratch};
use rllama::sampling::{Sampler, SamplerParams};

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// embed + blocks over two layer ranges + head = forward, bit for bit; the
/// first range leaves the later layers' cache behind, the second catches up.
fn parts_equal_forward(m: &Model, tokens: &[u32]) {
    let nl = m.cfg.n_layer;
    let split = nl / 2;
    let mut kv = m.new_cache(256).unwrap();
    let mut s = Scratch::default();
    s.capture = vec![split - 1];
    let want = m.forward_with(tokens, 0, &mut kv, &mut s, &Outputs::Last, Rounding::Batch).unwrap();
    assert_eq!(s.captured.len(), 1, "hidden rows after layer {}", split - 1);
    let captured = s.captured[0].clone();

    let mut kv = m.new_cache(256).unwrap();
    let mut s = Scratch::default();
    m.embed(tokens, &mut s).unwrap();
    m.blocks(0..split, 0, &mut kv, &mut s, Rounding::Batch, None).unwrap();
    assert_eq!(bits(&s.x), bits(&captured), "captured hidden rows = the first range's output");
    assert_eq!(kv.len(0), tokens.len());
    assert_eq!(kv.len(nl - 1), 0, "layers past the range are untouched");
    assert_eq!(kv.seq_len(), 0);
    let last = [tokens.len() - 1];
    m.blocks(split..nl, 0, &mut kv, &mut s, Rounding::Batch, Some(&last)).unwrap();
    assert_eq!(kv.seq_len(), tokens.len());
    let mut got = Vec::new();
    m.head(&mut s, Rounding::Batch, &mut got);
    assert_eq!(bits(&got), bits(&want));
    // a gap in a layer's positions is refused
    let mut s2 = Scratch::default();
    m.embed(&tokens[..1], &mut s2).unwrap();
    assert!(m.blocks(0..nl, tokens.len() + 3, &mut kv, &mut s2, Rounding::Batch, None).is_err());
}

#[test]
fn parts_equal_forward_tiny() {
    parts_equal_forward(&tiny_model(3), &[1, 5, 2, 7, 3, 0, 4]);
}

#[test]
fn parts_equal_forward_smollm2() {
    let Some(p) = common::model(common::SMOLLM2) else { return };
    let m = Model::load(&p).unwrap();
    parts_equal_forward(&m, &[1, 504, 3458, 282, 4649, 314, 16012]);
}

/// Rows rounded "as steps" equal one-token steps, also for a batch of 70
/// (the attention kernel must not switch to the tiled one at 64 rows).
#[test]
fn seventy_rows_as_steps_equal_one_token_steps() {
    let Some(p) = common::model(common::SMOLLM2) else { return };
    let _ = rayon::ThreadPoolBuilder::new().num_threads(2).build_global();
    let m = Model::load(&p).unwrap();
    let prompt: Vec<u32> = (0..9).map(|i| 100 + i * 37).collect();
    let batch: Vec<u32> = (0..70).map(|i| 200 + (i * 113) % 40000).collect();
    let mut a = Session::new(&m, 256, 512).unwrap();
    a.prompt(&prompt).unwrap();
    let all = a.eval(&batch, &Outputs::All, Rounding::AsSteps).unwrap();
    let mut b = Session::new(&m, 256, 512).unwrap();
    b.prompt(&prompt).unwrap();
    let nv = m.cfg.n_vocab;
    for (i, &t) in batch.iter().enumerate() {
        let row = b.step(t).unwrap();
        assert_eq!(bits(&row), bits(&all[i * nv..(i + 1) * nv]), "row {i} of 70");
    }
}

fn greedy_gen(m: &Model) -> Generator<'_, 'static> {
    // greedy with a repetition penalty: the output depends on the penalty window
    let params = SamplerParams { temp: 0.0, seed: 1, repeat_penalty: 1.5, repeat_last_n: 8, ..Default::default() };
    Generator::new(Session::new(m, 256, 64).unwrap(), Sampler::new(params), None, DraftLength::new(0, 0))
}

fn take(g: &mut Generator, n: usize) -> Vec<u32> {
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(g.next().unwrap());
    }
    out.truncate(n);
    out
}

/// rewind(n) then continuing gives what continuing from n gave the first
/// time: the caches and the sampler's penalty window roll back together.
#[test]
fn rewind_and_append_replay_the_same_tokens() {
    let m = tiny_model(4);
    let prompt = [1u32, 2, 3, 1];
    let mut a = greedy_gen(&m);
    a.prompt(&prompt).unwrap();
    let first = take(&mut a, 16);
    for keep in [prompt.len() + 1, prompt.len() + 6, prompt.len() + 11] {
        let mut g = greedy_gen(&m);
        g.prompt(&prompt).unwrap();
        take(&mut g, 16);
        g.rewind(keep);
        assert_eq!(g.history(), &[&prompt[..], &first[..keep - prompt.len()]].concat()[..]);
        assert_eq!(take(&mut g, 16 - (keep - prompt.len())), first[keep - prompt.len()..], "rewound to {keep}");
    }
    // append: the prompt in two parts (the second after a generated token is
    // taken back) gives the same continuation as one prompt
    let mut g = greedy_gen(&m);
    g.prompt(&prompt[..2]).unwrap();
    take(&mut g, 3);
    g.rewind(2);
    g.append(&prompt[2..]).unwrap();
    assert_eq!(take(&mut g, 16), first);
}

/// An end-of-generation id outside the vocabulary in the banned list is
/// ignored, not an index out of bounds.
#[test]
fn banned_ids_outside_the_vocabulary_are_ignored() {
    let m = tiny_model(5);
    let mut g = greedy_gen(&m);
    g.banned = vec![3, m.cfg.n_vocab as u32 + 100, u32::MAX];
    g.prompt(&[1, 2]).unwrap();
    let out = take(&mut g, 8);
    assert!(!out.contains(&3), "{out:?}");
}

/// Sizes the file or the machine cannot hold are errors before anything big
/// is allocated: a block count far beyond the file's tensors, a training
/// context of 2^32 taken with -c 0, a huge -c or bench depth.
#[test]
fn impossible_sizes_are_one_error_line() {
    use rllama::gguf::{GgufFile, Value};
    let bytes = common::tiny_gguf(9, |w| w.set("llama.block_count", Value::U32(100_000_000)));
    let e = Model::from_gguf(std::sync::Arc::new(GgufFile::from_bytes(bytes).unwrap())).err().expect("refused");
    assert!(format!("{e:#}").contains("block_count"), "{e:#}");
    let m = common::tiny_model(9);
    assert!(m.new_cache(usize::MAX / 4).is_err());
    assert!(Session::new(&m, 4_294_967_296, 64).is_err());
    // through the command line
    let path = std::env::temp_dir().join(format!("rllama-ctx-{}.gguf", std::process::id()));
    let file = common::tiny_gguf(9, |w| {
        use rllama::gguf::ValueType;
        w.set("llama.context_length", Value::U32(u32::MAX));
        w.set_str("tokenizer.ggml.model", "gpt2");
        let toks = ["a", "b", "c", "d", "e", "f", "g", "h"].iter().map(|t| Value::String(t.to_string())).collect();
        w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, toks));
        w.set("tokenizer.ggml.merges", Value::Array(ValueType::String, vec![]));
    });
    std::fs::write(&path, file).unwrap();
    let p = path.to_str().unwrap();
    for (args, want) in [
        (vec!["bench", "-m", p, "-p", "0", "-n", "1", "-r", "1", "-d", "100000000"], "KV cache"),
        (vec!["cli", "-m", p, "-p", "abc", "-n", "1", "-c", "0"], "KV cache"),
        (vec!["cli", "-m", p, "-p", "abc", "-n", "1", "-c", "100000000"], "KV cache"),
        (vec!["perplexity", "-m", p, "-f", p, "-c", "4294967296"], "error: "),
    ] {
        let out = std::process::Command::new(common::bin()).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.trim().lines().last().unwrap_or("");
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(last.starts_with("error: ") && last.contains(want), "{args:?}: {err}");
        assert!(!err.contains("memory allocation"), "{args:?}: {err}");
    }
    std::fs::remove_file(&path).ok();
}

/// Sequences stepped together (each its own cache and position) equal each
/// stepped alone (fast mode; exact mode: tests/reference.rs).
#[test]
fn sequences_stepped_together_equal_each_alone() {
    let m = tiny_model(6);
    common::together_equals_alone(&m, &common::mixed_prompts(&m), 6);
    for name in [common::SMOLLM2, common::GEMMA] {
        let Some(p) = common::model(name) else { continue };
        let m = Model::load(&p).unwrap();
        common::together_equals_alone(&m, &common::mixed_prompts(&m), 6);
    }
}
