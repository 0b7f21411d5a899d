//! vec_dot of every weight type (scalar reference and the runtime-selected
//! kernel) on a 4096-element row: `cargo bench --bench vec_dot`.
use criterion::{criterion_group, criterion_main, Criterion};
#[path = "../tests/common/mod.rs"]
mod common;
use rllama::gguf::GgmlType;
use rllama::quant::{kernels, scalar_kernels, AlignedBytes};

fn bench(c: &mut Criterion) {
    let n = 4096;
    let x = common::bench_acts(n);
    for &(ty, ..) in rllama::gguf::TYPE_TABLE {
        let Some(sk) = scalar_kernels(ty) else { continue };
        let fk = kernels(ty).unwrap();
        // a weight row: the activations quantized into the weight type where possible
        let mut w = AlignedBytes::new(ty.row_bytes(n).unwrap());
        for (i, b) in w.as_mut_slice().iter_mut().enumerate() {
            *b = (i * 37 % 251) as u8;
        }
        if ty == GgmlType::F32 || ty == GgmlType::F16 || ty == GgmlType::BF16 {
            (sk.quantize_act)(&x, w.as_mut_slice());
        }
        let mut a = AlignedBytes::new(sk.act.row_bytes(n).unwrap());
        (sk.quantize_act)(&x, a.as_mut_slice());
        let mut g = c.benchmark_group(format!("vec_dot_{}", ty.name()));
        g.bench_function("scalar", |b| b.iter(|| (sk.vec_dot)(w.as_slice(), a.as_slice())));
        g.bench_function("selected", |b| b.iter(|| (fk.vec_dot)(w.as_slice(), a.as_slice())));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
