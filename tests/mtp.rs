//! `--spec-type draft-mtp` with a model that ships a nextn layer: a tiny
//! synthetic model (written with the GGUF writer) whose greedy text counts
//! up (token t is followed by t + 1 mod 8), and whose nextn layer predicts
//! exactly that from the target's hidden row of the previous position (its
//! eh_proj shifts that row's token by one): every draft must be accepted,
//! and the output equals plain decoding. A head that read the wrong row
//! (the pairing off by one) would draft t + 2 and be rejected.
mod common;

use rllama::decode::drafters::{Drafters, NgramOpts, SpecType};
use rllama::decode::generator::Generator;
use rllama::decode::speculative::{DraftLength, Drafter};
use rllama::decode::Session;
use rllama::gguf::{GgmlType, GgufFile, GgufWriter, Value};
use rllama::model::Model;
use rllama::sampling::{Sampler, SamplerParams};
use std::sync::Arc;

const D: usize = 64;
const FF: usize = 128;
const NV: usize = 8;

/// Rows of a {cols, rows} F32 matrix from a function of (row, col).
fn mat(w: &mut GgufWriter, name: &str, cols: usize, rows: usize, f: impl Fn(usize, usize) -> f32) {
    let data: Vec<u8> = (0..rows).flat_map(|r| (0..cols).map(move |c| (r, c))).flat_map(|(r, c)| f(r, c).to_le_bytes()).collect();
    w.add_tensor(name, &[cols as u64, rows as u64], GgmlType::F32, data).unwrap();
}

fn ones(w: &mut GgufWriter, name: &str) {
    mat(w, name, D, 1, |_, _| 1.0);
}

/// Pseudo-random small weights (the parts whose output is zeroed anyway).
fn noise(r: usize, c: usize) -> f32 {
    (((r * 31 + c * 17) % 13) as f32 - 6.0) * 0.02
}

/// A block whose attention and FFN add nothing (output projections zero).
fn block(w: &mut GgufWriter, i: usize) {
    let p = |s: &str| format!("blk.{i}.{s}");
    ones(w, &p("attn_norm.weight"));
    ones(w, &p("ffn_norm.weight"));
    mat(w, &p("attn_q.weight"), D, D, noise);
    mat(w, &p("attn_k.weight"), D, D / 2, noise);
    mat(w, &p("attn_v.weight"), D, D / 2, noise);
    mat(w, &p("attn_output.weight"), D, D, |_, _| 0.0);
    mat(w, &p("ffn_gate.weight"), D, FF, noise);
    mat(w, &p("ffn_up.weight"), D, FF, noise);
    mat(w, &p("ffn_down.weight"), FF, D, |_, _| 0.0);
}

/// The counting model: token t embeds as the basis vector e_t, the blocks
/// pass it through, the output row of token j is e_{j-1}.
fn counting_model(nextn: bool) -> Model {
    let mut w = GgufWriter::new();
    w.set_str("general.architecture", "llama");
    let nl = if nextn { 3 } else { 2 };
    for (k, v) in [
        ("embedding_length", D),
        ("feed_forward_length", FF),
        ("block_count", nl),
        ("attention.head_count", 4),
        ("attention.head_count_kv", 2),
        ("context_length", 256),
        ("vocab_size", NV),
    ] {
        w.set(&format!("llama.{k}"), Value::U32(v as u32));
    }
    w.set("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5));
    mat(&mut w, "token_embd.weight", D, NV, |t, c| (c == t) as u8 as f32);
    ones(&mut w, "output_norm.weight");
    mat(&mut w, "output.weight", D, NV, |j, c| (c == (j + NV - 1) % NV) as u8 as f32);
    block(&mut w, 0);
    block(&mut w, 1);
    if nextn {
        w.set("llama.nextn_predict_layers", Value::U32(1));
        block(&mut w, 2);
        // [enorm(e); hnorm(h)] -> shift(h): the previous position's token plus one
        mat(&mut w, "blk.2.nextn.eh_proj.weight", 2 * D, D, |r, c| (c >= D && r < NV && c - D == (r + NV - 1) % NV) as u8 as f32);
        ones(&mut w, "blk.2.nextn.enorm.weight");
        ones(&mut w, "blk.2.nextn.hnorm.weight");
        ones(&mut w, "blk.2.nextn.shared_head_norm.weight");
    }
    Model::from_gguf(Arc::new(GgufFile::from_bytes(w.to_bytes()).unwrap())).unwrap()
}

fn generate(model: &Model, drafter: Option<&mut dyn Drafter>, len: DraftLength, prompt: &[u32], n: usize) -> (Vec<u32>, usize, usize) {
    let sampler = Sampler::new(SamplerParams { temp: 0.0, ..Default::default() });
    let mut gen = Generator::new(Session::new(model, 128, 32).unwrap(), sampler, drafter, len);
    gen.prompt(prompt).unwrap();
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(gen.next().unwrap());
    }
    out.truncate(n);
    (out, gen.stats.n_drafted, gen.stats.n_accept)
}

#[test]
fn nextn_layers_stay_out_of_the_main_pass() {
    let with = counting_model(true);
    let without = counting_model(false);
    assert_eq!((with.cfg.n_layer, with.cfg.n_nextn, with.nextn().len()), (2, 1, 1));
    let (a, _, _) = generate(&with, None, DraftLength::new(0, 0), &[3, 4], 20);
    let (b, _, _) = generate(&without, None, DraftLength::new(0, 0), &[3, 4], 20);
    assert_eq!(a, b, "the nextn block changed the main pass");
    assert_eq!(a[..6], [5, 6, 7, 0, 1, 2], "the counting model does not count");
}

#[test]
fn draft_mtp_on_a_model_with_a_nextn_layer_drafts_exactly() {
    let model = counting_model(true);
    let prompt = [1u32, 2, 3, 4, 5];
    let (want, _, _) = generate(&model, None, DraftLength::new(0, 0), &prompt, 40);
    for k in [1usize, 3] {
        let mut ds = Drafters::from_types(&[SpecType::DraftMtp], &NgramOpts::default(), None, None, model.nextn().first(), k).unwrap();
        let (got, drafted, accepted) = generate(&model, Some(&mut ds), DraftLength::fixed(k), &prompt, 40);
        assert_eq!(got, want, "k {k}: drafting changed the output");
        assert!(drafted >= 20, "k {k}: only {drafted} tokens drafted");
        assert_eq!(accepted, drafted, "k {k}: the exact nextn head was rejected");
        // acceptance by draft position: every position drafted, all accepted
        let e = &ds.entries()[0];
        assert_eq!(e.by_pos.len(), k, "{:?}", e.by_pos);
        assert!(e.by_pos.iter().all(|&(n, a)| n == a && n > 0), "{:?}", e.by_pos);
        assert_eq!(e.by_pos.iter().map(|p| p.1).sum::<usize>(), accepted);
        let line = e.by_position().unwrap();
        assert!(line.starts_with("accepted by draft position: 1: 100.0%"), "{line}");
    }
    // without a nextn layer or heads: one clear error
    let plain = counting_model(false);
    let e = Drafters::from_types(&[SpecType::DraftMtp], &NgramOpts::default(), None, None, plain.nextn().first(), 4)
        .err()
        .expect("draft-mtp without a head")
        .to_string();
    assert!(e.contains("needs a model with nextn layers"), "{e}");
}
