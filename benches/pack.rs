//! Load-time repacking of the real models' weight matrices into the fast
//! kernels' tiles (skipped when the model files are absent): for each weight
//! type of a file, its biggest matrix, fresh memory each time as at load:
//! `cargo bench --bench pack` (RLLAMA_MODELS overrides the cache, MM_FILES
//! the files; RLLAMA_EXACT=1 packs what exact mode packs).
use criterion::{criterion_group, criterion_main, Criterion};
#[path = "../tests/common/mod.rs"]
mod common;
use common::models_dir;
use rllama::gguf::GgufFile;
use rllama::ops::matmul::QMatrix;

fn bench(c: &mut Criterion) {
    let files_var = std::env::var("MM_FILES").unwrap_or(format!("{},{}", common::QWEN, common::QWEN15));
    for f in files_var.split(',') {
        let path = models_dir().join(f);
        let Ok(g) = GgufFile::open(&path).map(std::sync::Arc::new) else {
            eprintln!("skipping {f}: not in {}", models_dir().display());
            continue;
        };
        let mut biggest = std::collections::BTreeMap::new();
        for t in g.tensors.iter().filter(|t| t.dims.len() == 2) {
            let n: u64 = t.dims.iter().product();
            let e = biggest.entry(t.ty.name()).or_insert((0, t.clone()));
            if n > e.0 {
                *e = (n, t.clone());
            }
        }
        for (ty, (_, t)) in biggest {
            let Ok(w) = QMatrix::from_file(&g, &t) else { continue };
            let name = format!("{}/{ty} {}x{}", f.split("-i").next().unwrap(), w.rows, w.cols);
            c.bench_function(&name, |b| {
                b.iter(|| {
                    let mut m = w.clone();
                    m.pack();
                    m
                })
            });
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
