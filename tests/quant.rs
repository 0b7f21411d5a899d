//! Quant formats: vec_dot (scalar) equals dequantize-then-dot; every SIMD
//! twin equals its scalar reference; dequantization equals the numpy
//! dequantizers of the Python `gguf` package, bit for bit.
mod common;
use common::Rng;
use rllama::gguf::{GgmlType, GgufFile};
use rllama::quant::{dequantize_row, kernels, scalar_kernels, AlignedBytes};

const WEIGHT_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q2_K,
    GgmlType::Q3_K,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::IQ4_NL,
    GgmlType::IQ4_XS,
];

/// Byte offsets of the f16 scale fields inside a block.
fn f16_fields(t: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match t {
        Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q3_K => &[108],
        Q6_K => &[208],
        _ => &[],
    }
}

/// `n_blocks` random blocks of `t` with finite scales; `mode` 1 = all quant bits set, 2 = all clear.
fn random_row(t: GgmlType, n: usize, rng: &mut Rng, mode: u8) -> Vec<u8> {
    match t {
        GgmlType::F32 => (0..n).flat_map(|_| (rng.f32() * 4.0).to_le_bytes()).collect(),
        GgmlType::F16 => (0..n).flat_map(|_| half::f16::from_f32(rng.f32() * 4.0).to_le_bytes()).collect(),
        GgmlType::BF16 => (0..n).flat_map(|_| half::bf16::from_f32(rng.f32() * 4.0).to_le_bytes()).collect(),
        _ => {
            let bb = t.block_bytes();
            let nb = n / t.block_elems();
            let mut v = match mode {
                1 => vec![0xFFu8; nb * bb],
                2 => vec![0u8; nb * bb],
                _ => rng.bytes(nb * bb),
            };
            for b in 0..nb {
                for &o in f16_fields(t) {
                    let x = half::f16::from_f32(rng.f32() * 0.05);
                    v[b * bb + o..b * bb + o + 2].copy_from_slice(&x.to_le_bytes());
                }
            }
            v
        }
    }
}

fn acts(n: usize, rng: &mut Rng, mode: u8) -> Vec<f32> {
    (0..n)
        .map(|i| match mode {
            1 => {
                if i % 7 == 0 {
                    1e4
                } else {
                    rng.f32()
                }
            }
            2 => 0.0,
            _ => rng.f32() * 3.0,
        })
        .collect()
}

fn aligned(v: &[u8]) -> AlignedBytes {
    let mut a = AlignedBytes::new(v.len());
    a.as_mut_slice().copy_from_slice(v);
    a
}

/// Tolerance: f32 accumulation over n terms with per-block scaling; relative to sum |w_i a_i|.
fn tol(w: &[f32], a: &[f32]) -> f64 {
    let s: f64 = w.iter().zip(a).map(|(x, y)| (x * y).abs() as f64).sum();
    2e-6 * s * (w.len() as f64).sqrt() / 16.0 + 1e-6
}

#[test]
fn vec_dot_matches_dequantized_dot_and_simd_matches_scalar() {
    let mut rng = Rng(0x9E3779B97F4A7C15);
    for &t in WEIGHT_TYPES {
        let sk = scalar_kernels(t).unwrap();
        let fk = kernels(t).unwrap();
        // float rows of any length (LoRA ranks, tails after 64-element steps)
        let ns: &[usize] = if matches!(t, GgmlType::F16 | GgmlType::F32) { &[256, 2048, 8, 72, 200] } else { &[256, 2048] };
        for &n in ns {
            for mode in 0..3u8 {
                for _ in 0..4 {
                    let w = aligned(&random_row(t, n, &mut rng, mode));
                    let x = acts(n, &mut rng, if mode == 0 { 0 } else { 1 });
                    let mut q = AlignedBytes::new(sk.act.row_bytes(n).unwrap());
                    (sk.quantize_act)(&x, q.as_mut_slice());
                    // the activation as the kernel sees it
                    let mut xa = vec![0f32; n];
                    if matches!(sk.act, GgmlType::Q8_1 | GgmlType::Q8_K) {
                        deq_act(sk.act, q.as_slice(), &mut xa);
                    } else {
                        dequantize_row(sk.act, q.as_slice(), &mut xa);
                    }
                    let mut wf = vec![0f32; n];
                    dequantize_row(t, w.as_slice(), &mut wf);
                    let mut exact: f64 = wf.iter().zip(&xa).map(|(a, b)| *a as f64 * *b as f64).sum();
                    if sk.act == GgmlType::Q8_1 {
                        exact += q81_min_correction(t, w.as_slice(), q.as_slice());
                    }
                    let s = (sk.vec_dot)(w.as_slice(), q.as_slice()) as f64;
                    let f = (fk.vec_dot)(w.as_slice(), q.as_slice()) as f64;
                    let tl = tol(&wf, &xa);
                    assert!((s - exact).abs() <= tl, "{t:?} n={n} mode={mode}: scalar {s} vs exact {exact} (tol {tl})");
                    assert!((f - s).abs() <= tl, "{t:?} n={n} mode={mode}: simd {f} vs scalar {s} (tol {tl})");
                    // the batched roundings (groups of four, wide batches, remainders)
                    for (nb, tok) in [(4, 0), (5, 4), (8, 0), (9, 8)] {
                        let b = (fk.dot_for(nb, tok))(w.as_slice(), q.as_slice()) as f64;
                        assert!((b - s).abs() <= tl, "{t:?} n={n} mode={mode}: batch {nb}/{tok} {b} vs scalar {s}");
                        // float rows follow llama.cpp's summation orders: the SIMD
                        // twins are bit for bit the scalar ones, single and batched
                        if matches!(t, GgmlType::F16 | GgmlType::F32) {
                            let sb = (sk.dot_for(nb, tok))(w.as_slice(), q.as_slice());
                            assert_eq!(b.to_bits(), (sb as f64).to_bits(), "{t:?} n={n}: batch {nb}/{tok} simd vs scalar");
                            assert_eq!(f.to_bits(), s.to_bits(), "{t:?} n={n}: simd vs scalar");
                        }
                    }
                }
            }
        }
    }
}

/// Every multi-row, multi-token kernel gives, pair for pair, the bits of
/// `dot_for` (vec_dot, or the batched rounding of K-quants).
#[test]
fn gemm_kernels_equal_vec_dot_bit_for_bit() {
    let mut rng = Rng(0x51ED_2701_AB12_3456);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::env::var_os("RLLAMA_NO_SIMD").is_none() {
        assert!(!rllama::quant::simd::gemm_variants(GgmlType::Q4_0, false).is_empty(), "AVX2 machine without gemm kernels");
    }
    for &t in WEIGHT_TYPES {
        let fk = kernels(t).unwrap();
        let variants = |p: bool| rllama::quant::simd::gemm_variants(t, p).into_iter().map(move |(n, f)| (n, f, p));
        for (name, gemm, is_packed) in variants(false).chain(variants(true)) {
            let cases: &[(usize, usize, usize)] = if t.block_elems() == 256 {
                &[(256, 9, 7), (2048, 4, 1), (512, 13, 11), (256, 5, 20), (256, 3, 4)]
            } else {
                &[(256, 9, 7), (2048, 4, 1), (64, 13, 11), (256, 9, 17), (64, 13, 20), (64, 13, 5), (128, 9, 6)]
            };
            for &(n, rows, ntok) in cases {
                for mode in 0..3u8 {
                    let rb = t.row_bytes(n).unwrap();
                    let w = aligned(&(0..rows).flat_map(|_| random_row(t, n, &mut rng, mode)).collect::<Vec<u8>>());
                    let arb = fk.act.row_bytes(n).unwrap();
                    let mut q = AlignedBytes::new(arb * ntok);
                    for k in 0..ntok {
                        let x = acts(n, &mut rng, if mode == 0 { 0 } else { 1 });
                        (fk.quantize_act)(&x, &mut q.as_mut_slice()[k * arb..(k + 1) * arb]);
                    }
                    let mut out = vec![f32::NAN; rows * ntok];
                    let wk = if is_packed { rllama::quant::pack_rows(w.as_slice(), rows, rb, t.block_bytes()) } else { w.clone() };
                    // SAFETY: rows x ntok outputs, buffers sized for them.
                    unsafe { gemm(wk.as_slice(), rb, rows, q.as_slice(), arb, ntok, out.as_mut_ptr(), rows) };
                    for k in 0..ntok {
                        for r in 0..rows {
                            let e = (fk.dot_for(ntok, k))(&w.as_slice()[r * rb..(r + 1) * rb], &q.as_slice()[k * arb..(k + 1) * arb]);
                            let g = out[k * rows + r];
                            assert_eq!(g.to_bits(), e.to_bits(), "{t:?} {name} n={n} mode={mode} row {r} token {k}: {g} vs {e}");
                        }
                    }
                }
            }
        }
    }
}

/// Exact mode rounds Q4_0 and IQ4_NL matrices as llama.cpp's x86 build
/// does: with a multiple of 8 rows it repacks them (`q4_0_8x8`,
/// `iq4_nl_8x8`), and its GEMV and GEMM give every token, in any batch, per
/// block acc = fma(S, d_w * d_a, acc) (`fast::dot_ref32`); other shapes go
/// through `vec_dot`. The whole path is checked: load-time packing, the
/// matmul's choice of kernel, batches of 1, 4 and 7 tokens.
#[test]
fn exact_mode_rounds_q4_0_and_iq4_nl_as_llama_cpp_repacks_them() {
    use rllama::ops::matmul::{matmul_q, quantize_acts, QMatrix, QuantizedActs};
    use rllama::quant::blocks::{cast_blocks, BlockIQ4NL, BlockQ4_0, BlockQ8_0};
    use rllama::quant::fast::{dot_ref32, exact_as_fast};
    rllama::quant::fast::set_exact(true);
    let mut rng = Rng(0x40_8808);
    let cols = 160;
    for ty in [GgmlType::Q4_0, GgmlType::IQ4_NL] {
        for rows in [24, 40, 21] {
            let repacked = exact_as_fast(ty, rows).is_some();
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") && std::env::var_os("RLLAMA_NO_SIMD").is_none() {
                assert_eq!(repacked, rows % 8 == 0, "{ty:?}, {rows} rows: llama.cpp repacks exactly the multiples of 8");
            }
            let w: Vec<u8> = (0..rows).flat_map(|_| random_row(ty, cols, &mut rng, 0)).collect();
            let mut m = QMatrix::from_bytes("w", ty, cols, rows, &w).unwrap();
            m.pack();
            let x = acts(7 * cols, &mut rng, 0);
            let mut q = QuantizedActs::default();
            for n in [1, 4, 7] {
                quantize_acts(&m, &x, n, &mut q);
                let mut out = vec![f32::NAN; n * rows];
                matmul_q(&m, &q, &mut out);
                for t in 0..n {
                    let a = &q.buf.as_slice()[t * q.row_bytes..(t + 1) * q.row_bytes];
                    for r in 0..rows {
                        let wr = m.row(r);
                        let want = match (repacked, ty) {
                            (false, _) => (m.kern.vec_dot)(wr, a),
                            (true, GgmlType::Q4_0) => dot_ref32::<BlockQ4_0, BlockQ8_0>(cast_blocks(wr).unwrap(), cast_blocks(a).unwrap()),
                            (true, _) => dot_ref32::<BlockIQ4NL, BlockQ8_0>(cast_blocks(wr).unwrap(), cast_blocks(a).unwrap()),
                        };
                        let got = out[t * rows + r];
                        assert_eq!(got.to_bits(), want.to_bits(), "{ty:?} {rows} rows, batch {n}, token {t}, row {r}: {got} vs {want}");
                    }
                }
            }
        }
    }
}

/// Q8_1 stores s = d * sum(q) rounded to f16, and the min term of Q4_1/Q5_1
/// uses that s: the part of m * s that q * d does not carry.
fn q81_min_correction(t: GgmlType, w: &[u8], a: &[u8]) -> f64 {
    use rllama::quant::blocks::*;
    let bb = t.block_bytes();
    let ab = cast_blocks::<BlockQ8_1>(a).unwrap();
    let mut c = 0.0f64;
    for (i, blk) in ab.iter().enumerate() {
        let m = f16_to_f32(u16::from_le_bytes([w[i * bb + 2], w[i * bb + 3]])) as f64;
        let d = f16_to_f32(blk.d) as f64;
        let sum: i32 = blk.qs.iter().map(|&q| q as i32).sum();
        c += m * (f16_to_f32(blk.s) as f64 - d * sum as f64);
    }
    c
}

/// Dequantize Q8_1 / Q8_K activation rows (not weight types, so not in dequantize_row).
fn deq_act(t: GgmlType, b: &[u8], out: &mut [f32]) {
    use rllama::quant::blocks::*;
    match t {
        GgmlType::Q8_1 => {
            for (blk, o) in cast_blocks::<BlockQ8_1>(b).unwrap().iter().zip(out.chunks_mut(32)) {
                let d = f16_to_f32(blk.d);
                for (o, q) in o.iter_mut().zip(blk.qs) {
                    *o = q as f32 * d;
                }
            }
        }
        GgmlType::Q8_K => {
            for (blk, o) in cast_blocks::<BlockQ8K>(b).unwrap().iter().zip(out.chunks_mut(256)) {
                for (o, q) in o.iter_mut().zip(blk.qs) {
                    *o = q as f32 * blk.d;
                }
                for g in 0..16 {
                    let s: i32 = blk.qs[g * 16..g * 16 + 16].iter().map(|&q| q as i32).sum();
                    assert_eq!(s, blk.bsums[g] as i32);
                }
            }
        }
        _ => unreachable!(),
    }
}

#[test]
fn activation_quantization_round_trips() {
    let mut rng = Rng(42);
    let x = acts(1024, &mut rng, 0);
    for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K] {
        let k = scalar_kernels(t).unwrap();
        let mut q = AlignedBytes::new(k.act.row_bytes(1024).unwrap());
        (k.quantize_act)(&x, q.as_mut_slice());
        let mut back = vec![0f32; 1024];
        if k.act == GgmlType::Q8_0 {
            dequantize_row(k.act, q.as_slice(), &mut back);
        } else {
            deq_act(k.act, q.as_slice(), &mut back);
        }
        let block = k.act.block_elems();
        for (xb, bb) in x.chunks(block).zip(back.chunks(block)) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (a, b) in xb.iter().zip(bb) {
                // half a quantization step (plus f16 rounding of the scale)
                assert!((a - b).abs() <= amax / 127.0 * 0.5 + amax * 1e-3, "{t:?}: {a} -> {b}");
            }
        }
    }
}

/// The SIMD activation quantizers write the scalar quantizers' bytes: random
/// rows, rows with outliers, zeros, ties between +max and -max, halves.
#[test]
fn simd_activation_quantization_equals_scalar() {
    let mut rng = Rng(7);
    for t in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K] {
        let (s, f) = (scalar_kernels(t).unwrap(), kernels(t).unwrap());
        let n = 1024;
        for mode in 0..6u8 {
            let mut x = acts(n, &mut rng, mode.min(2));
            match mode {
                3 => x.iter_mut().enumerate().for_each(|(i, v)| {
                    *v = if i % 9 == 0 {
                        -2.0
                    } else if i % 5 == 0 {
                        2.0
                    } else {
                        *v
                    }
                }),
                4 => x.iter_mut().enumerate().for_each(|(i, v)| {
                    *v = if i % 9 == 0 {
                        2.0
                    } else if i % 5 == 0 {
                        -2.0
                    } else {
                        *v
                    }
                }),
                5 => x.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 64) as f32 * 0.5 - 16.0),
                _ => {}
            }
            let rb = s.act.row_bytes(n).unwrap();
            let (mut a, mut b) = (AlignedBytes::new(rb), AlignedBytes::new(rb));
            (s.quantize_act)(&x, a.as_mut_slice());
            (f.quantize_act)(&x, b.as_mut_slice());
            assert!(a.as_slice() == b.as_slice(), "{:?} mode {mode}: SIMD quantization differs", s.act);
        }
    }
}

/// Quantized activations of the 32-element types lie in [-127, 127] (the
/// scale is amax / 127) unless the block's scale rounds to 0 in f16 (amax
/// so small that 127 / amax overflows), where no product counts: the AVX2
/// Q8_0/IQ4_NL kernels' sign trick relies on it, as ggml's does.
#[test]
fn activation_quants_stay_above_minus_128() {
    let mut rng = Rng(11);
    for t in [GgmlType::Q4_0, GgmlType::Q4_1] {
        let quantizers = [scalar_kernels(t).unwrap(), kernels(t).unwrap()];
        let (act, n) = (quantizers[0].act, 1024);
        // one block's bytes; its 32 quants come last
        let bb = act.row_bytes(32).unwrap();
        let qoff = bb - 32;
        for mode in 0..5u8 {
            let mut x = acts(n, &mut rng, if mode < 3 { mode } else { 0 });
            // blocks of extreme magnitudes, each with its -amax
            let scale = [1.0, 1.0, 1.0, 3e38, 1e-38][mode as usize];
            x.iter_mut().enumerate().for_each(|(i, v)| *v = if i % 32 == 5 { -scale } else { *v * scale.min(1e30) });
            for q in &quantizers {
                let mut a = AlignedBytes::new(act.row_bytes(n).unwrap());
                (q.quantize_act)(&x, a.as_mut_slice());
                for b in a.as_slice().chunks_exact(bb) {
                    let d = half::f16::from_le_bytes([b[0], b[1]]);
                    let low = b[qoff..].iter().any(|&v| v as i8 == -128);
                    assert!(!low || d.to_f32() == 0.0, "{act:?} mode {mode}: -128 in a block of scale {d}");
                }
            }
        }
    }
}

fn python_gguf() -> bool {
    let ok = std::process::Command::new("python3").args(["-c", "import gguf, numpy"]).output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: python3 with the gguf and numpy packages not found (pip install gguf numpy)");
    }
    ok
}

fn read_f32(p: &std::path::Path) -> Vec<f32> {
    std::fs::read(p).unwrap().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn assert_bits_equal(t: &str, ours: &[f32], theirs: &[f32]) {
    assert_eq!(ours.len(), theirs.len(), "{t}: length");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{t}: element {i}: ours {a} numpy {b}");
    }
}

/// numpy's dequantization of each job's whole blocks, in one Python process
/// (its files in a directory of the call's own: the tests run in parallel).
fn numpy_dequantize(jobs: &[(GgmlType, &[u8])]) -> Vec<Vec<f32>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/dequant.py");
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    let mut outs = Vec::new();
    for (i, (t, bytes)) in jobs.iter().enumerate() {
        let (inp, out) = (dir.path().join(format!("{i}.bin")), dir.path().join(format!("{i}.f32")));
        std::fs::write(&inp, bytes).unwrap();
        args.extend([t.name().to_string(), inp.display().to_string(), out.display().to_string()]);
        outs.push(out);
    }
    let st = std::process::Command::new("python3").arg(script).args(&args).status().unwrap();
    assert!(st.success(), "python dequant failed");
    outs.iter().map(|o| read_f32(o)).collect()
}

#[test]
fn dequantize_equals_numpy_on_random_blocks() {
    if !python_gguf() {
        return;
    }
    let mut rng = Rng(7);
    let n = 256 * 8 + 512;
    let rows: Vec<(GgmlType, Vec<u8>)> = WEIGHT_TYPES
        .iter()
        .map(|&t| {
            let mut bytes = random_row(t, 256 * 8, &mut rng, 0);
            bytes.extend(random_row(t, 256, &mut rng, 1));
            bytes.extend(random_row(t, 256, &mut rng, 2));
            (t, bytes)
        })
        .collect();
    let jobs: Vec<(GgmlType, &[u8])> = rows.iter().map(|(t, b)| (*t, b.as_slice())).collect();
    for ((t, bytes), theirs) in rows.iter().zip(numpy_dequantize(&jobs)) {
        let w = aligned(bytes);
        let mut ours = vec![0f32; n];
        dequantize_row(*t, w.as_slice(), &mut ours);
        assert_bits_equal(t.name(), &ours, &theirs);
    }
}

/// The first rows of one tensor of each type found in the models, as the
/// models store them.
#[test]
fn dequantize_equals_numpy_on_real_tensors() {
    if !python_gguf() {
        return;
    }
    let mut seen = std::collections::HashSet::new();
    for m in [common::SMOLLM2, common::QWEN, common::GEMMA] {
        let Some(path) = common::model(m) else {
            continue;
        };
        let g = GgufFile::open(&path).unwrap();
        let picked: Vec<_> = g.tensors.iter().filter(|t| t.dims.len() >= 2 && seen.insert(t.ty)).map(|t| (t, 4.min(t.n_rows()))).collect();
        let jobs: Vec<(GgmlType, &[u8])> = picked.iter().map(|(t, rows)| (t.ty, &g.tensor_data(t)[..rows * t.ty.row_bytes(t.row_len()).unwrap()])).collect();
        for (((t, rows), (_, bytes)), theirs) in picked.iter().zip(&jobs).zip(numpy_dequantize(&jobs)) {
            let mut ours = vec![0f32; rows * t.row_len()];
            dequantize_row(t.ty, bytes, &mut ours);
            assert_bits_equal(&format!("{} ({})", t.name, t.ty.name()), &ours, &theirs);
            eprintln!("{}: {} ({}) equal to numpy on {rows} rows", m, t.name, t.ty.name());
        }
    }
}

/// The SIMD vec_dot entry points are safe functions: operands of different
/// block counts are refused (a panic), never read out of bounds.
#[test]
fn vec_dot_refuses_operands_of_different_lengths() {
    use rllama::gguf::GgmlType::*;
    for ty in [Q4_0, Q4_1, Q5_0, Q8_0, IQ4_NL, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS, F16, BF16, F32] {
        let k = rllama::quant::kernels(ty).unwrap();
        let elems = ty.block_elems().max(32) * 4;
        let w = vec![0u8; ty.row_bytes(elems).unwrap()];
        let a = vec![0u8; k.act.row_bytes(elems * 2).unwrap()];
        let r = std::panic::catch_unwind(|| (k.vec_dot)(&w, &a));
        assert!(r.is_err(), "{}: a longer activation row was accepted", ty.name());
        let s = rllama::quant::scalar_kernels(ty).unwrap();
        let r = std::panic::catch_unwind(|| (s.vec_dot)(&w, &a));
        assert!(r.is_err(), "{}: the scalar dot accepted a longer activation row", ty.name());
    }
}
