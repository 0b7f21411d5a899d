//! The fastest of many timed rounds of one matmul, for a VM whose speed
//! drifts by tens of percent within minutes (criterion's means move with
//! it; a minimum over rounds does much less):
//!
//! `cargo bench --bench matmul_min -- MODEL.gguf NAME TOKENS [ROUNDS]`
//!
//! NAME is a tensor name (`blk.0.ffn_gate.weight`: that matrix, 20 calls a
//! round, so it stays in cache) or a suffix every layer has
//! (`ffn_gate.weight`: each layer's matrix once a round, in turn, so the
//! matrices stream from memory as generation reads them). TOKENS is a
//! comma list of batch sizes; ROUNDS (default 30) rounds each. A MODEL
//! without a directory is looked up in the model cache.
#[path = "../tests/common/mod.rs"]
mod common;
use rllama::gguf::GgufFile;
use rllama::ops::matmul::{matmul_q, quantize_acts, QMatrix, QuantizedActs};
use std::time::Instant;

/// Calls a round of a single (cached) matrix.
const CACHED_CALLS: usize = 20;

fn main() {
    // cargo passes --bench; the rest are ours
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let [model, name, tokens, rest @ ..] = args.as_slice() else {
        eprintln!("usage: cargo bench --bench matmul_min -- MODEL.gguf NAME TOKENS [ROUNDS]");
        return;
    };
    let rounds: usize = rest.first().and_then(|r| r.parse().ok()).unwrap_or(30);
    let path = if model.contains('/') { model.into() } else { common::models_dir().join(model) };
    let Ok(g) = GgufFile::open(&path).map(std::sync::Arc::new) else {
        eprintln!("skipping: cannot open {}", path.display());
        return;
    };
    let suffix = format!(".{name}");
    let ws: Vec<QMatrix> = g
        .tensors
        .iter()
        .filter(|t| t.name == *name || t.name.ends_with(&suffix))
        .filter_map(|t| QMatrix::from_file(&g, t).ok())
        .map(|mut w| {
            w.pack();
            w
        })
        .collect();
    let Some(w0) = ws.first() else {
        eprintln!("no matrix named {name} or *.{name} in {}", path.display());
        return;
    };
    if ws.iter().any(|w| (w.rows, w.cols) != (w0.rows, w0.cols)) {
        eprintln!("the matrices *.{name} differ in shape; name one");
        return;
    }
    let calls = if ws.len() > 1 { 1 } else { CACHED_CALLS };
    print!("{name} ({} x {} {}, {} matrices):", w0.rows, w0.cols, w0.ty.name(), ws.len());
    for n in tokens.split(',').filter_map(|t| t.parse::<usize>().ok()) {
        let x = common::bench_acts(n * w0.cols);
        let mut q = QuantizedActs::default();
        quantize_acts(w0, &x, n, &mut q);
        let mut out = vec![0f32; n * w0.rows];
        let mut best = f64::MAX;
        for _ in 0..rounds {
            let t0 = Instant::now();
            for _ in 0..calls {
                for w in &ws {
                    matmul_q(w, &q, &mut out);
                }
            }
            best = best.min(t0.elapsed().as_secs_f64() / (calls * ws.len()) as f64);
        }
        print!("  n={n} {:.1} us", best * 1e6);
    }
    println!();
}
