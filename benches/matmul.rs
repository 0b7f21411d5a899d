//! Matmuls of the real models' weight matrices (skipped when the model files
//! are absent): every distinct (type, shape) of SmolLM2, Qwen2.5 and Gemma 3,
//! for 1, 4 and 64 tokens, on the runtime-selected kernels and rllama's thread
//! team: `cargo bench --bench matmul` (RLLAMA_MODELS overrides the cache,
//! MM_FILES=a.gguf,b.gguf the files, MM_TOKENS=1,4,64 the batch sizes).
//! Most matrices stay in L2/L3 between iterations (compute-bound); Qwen
//! 1.5B's output matrix (Q6_K, 191 MB) streams from memory, as generation does.
use criterion::{criterion_group, criterion_main, Criterion};
#[path = "../tests/common/mod.rs"]
mod common;
use common::models_dir;
use rllama::gguf::GgufFile;
use rllama::ops::matmul::{matmul_q, quantize_acts, QMatrix, QuantizedActs};

fn bench(c: &mut Criterion) {
    let default_files = [common::SMOLLM2, common::QWEN, common::GEMMA, common::QWEN15].join(",");
    let files_var = std::env::var("MM_FILES").unwrap_or(default_files);
    let files: Vec<&str> = files_var.split(',').collect();
    let tokens: Vec<usize> = std::env::var("MM_TOKENS").ok().map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect()).unwrap_or(vec![1, 4, 64]);
    for f in files {
        let path = models_dir().join(f);
        let Ok(g) = GgufFile::open(&path).map(std::sync::Arc::new) else {
            eprintln!("skipping {f}: not in {}", models_dir().display());
            continue;
        };
        let mut seen = std::collections::HashSet::new();
        for t in g.tensors.clone() {
            if t.dims.len() != 2 || t.name == "token_embd.weight" && g.tensor("output.weight").is_some() {
                continue;
            }
            let Ok(mut w) = QMatrix::from_file(&g, &t) else { continue };
            w.pack();
            if !seen.insert((w.ty, w.rows, w.cols)) {
                continue;
            }
            for &n in &tokens {
                let x = common::bench_acts(n * w.cols);
                let mut q = QuantizedActs::default();
                quantize_acts(&w, &x, n, &mut q);
                let mut out = vec![0f32; n * w.rows];
                let name = format!("{}/{} {}x{} n={n}", f.split("-i").next().unwrap(), w.ty.name(), w.rows, w.cols);
                c.bench_function(&name, |b| b.iter(|| matmul_q(&w, &q, &mut out)));
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
