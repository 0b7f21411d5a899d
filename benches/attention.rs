//! Fast mode's attention for one generated token at depth, shaped as Qwen
//! 2.5 0.5B's decode step: 24 layers, 2 KV heads of 64 dimensions shared by
//! 7 query heads each, f16 K and V caches of `AT_DEPTH` positions (default
//! 2048; 24 layers x 1 MB at 2048, more than the last-level cache, so the
//! keys and values stream from memory as in generation), work items of one
//! KV head and one `KEY_SEGMENT` of keys on rllama's thread team, as
//! `Model::attend` makes them (the segments' merge left out):
//! `cargo bench --bench attention` (AT_DEPTH, AT_QUERIES, AT_KV_HEADS and
//! AT_HEAD_DIM override: Gemma 3 270M's step is `AT_KV_HEADS=1
//! AT_QUERIES=4 AT_HEAD_DIM=256`, 18 layers counted as 24).
use criterion::{criterion_group, criterion_main, Criterion};
use rllama::ops::attention::{attend_tiled_stats, HeadRows, KEY_SEGMENT};
use rllama::parallel::{self, SendPtr};

const LAYERS: usize = 24;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn bench(c: &mut Criterion) {
    let depth = env("AT_DEPTH", 2048);
    let group = env("AT_QUERIES", 7);
    let (kv_heads, head_dim) = (env("AT_KV_HEADS", 2), env("AT_HEAD_DIM", 64));
    let row = kv_heads * head_dim;
    // f16 values in [-1, 1): bit patterns of small normal numbers
    let f16s =
        |n: usize, seed: usize| -> Vec<u16> { (0..n).map(|i| half::f16::from_f32(((i * 7919 + seed) % 2000) as f32 / 1000.0 - 1.0).to_bits()).collect() };
    let ks: Vec<Vec<u16>> = (0..LAYERS).map(|l| f16s(depth * row, 2 * l)).collect();
    let vs: Vec<Vec<u16>> = (0..LAYERS).map(|l| f16s(depth * row, 2 * l + 1)).collect();
    let q: Vec<f32> = (0..kv_heads * group * head_dim).map(|i| ((i * 31 % 200) as f32 / 100.0) - 1.0).collect();
    let nseg = depth.div_ceil(KEY_SEGMENT);
    let items = kv_heads * nseg;
    let mut outs = vec![vec![0f32; group * head_dim]; items];
    let mut stats = vec![vec![(0f32, 0f32); group]; items];
    c.bench_function(&format!("attention tg @ d{depth}, {kv_heads} KV heads of {head_dim}, {group} queries each"), |b| {
        b.iter(|| {
            for l in 0..LAYERS {
                let (kl, vl) = (&ks[l], &vs[l]);
                let (po, ps) = (SendPtr(outs.as_mut_ptr()), SendPtr(stats.as_mut_ptr()));
                parallel::for_each(items, |it| {
                    let (h, sg) = (it / nseg, it % nseg);
                    let keys = sg * KEY_SEGMENT..((sg + 1) * KEY_SEGMENT).min(depth);
                    let qs: Vec<&[f32]> = (0..group).map(|g| &q[(h * group + g) * head_dim..(h * group + g + 1) * head_dim]).collect();
                    let ranges = vec![keys; group];
                    let k_at = HeadRows::new(kl, row, h * head_dim, head_dim);
                    let v_at = HeadRows::new(vl, row, h * head_dim, head_dim);
                    // SAFETY: item it owns outs[it] and stats[it].
                    let (o, st) = unsafe { (&mut *po.get().add(it), &mut *ps.get().add(it)) };
                    attend_tiled_stats(&qs, &ranges, k_at, v_at, 0.125, head_dim, o, Some(st));
                });
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
