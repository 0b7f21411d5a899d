//! Float formats: F32, F16, BF16 rows. ggml dots F16 weights with activations
//! rounded to F16 and BF16 weights with activations rounded to BF16; F32 and
//! F16 products follow llama.cpp's summation order (`dot_llama`).

use half::{bf16, f16};

pub fn dequantize_f32(src: &[f32], out: &mut [f32]) {
    out.copy_from_slice(src);
}
pub fn dequantize_f16(src: &[u16], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(src) {
        *o = f16::from_bits(b).to_f32();
    }
}
pub fn dequantize_bf16(src: &[u16], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(src) {
        *o = bf16::from_bits(b).to_f32();
    }
}
pub fn quantize_f16(src: &[f32], out: &mut [u16]) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = f16::from_f32(x).to_bits();
    }
}
pub fn quantize_bf16(src: &[f32], out: &mut [u16]) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = bf16::from_f32(x).to_bits();
    }
}
/// Lanes of llamafile's tinyBLAS accumulator and of ggml's AVX-512 vectors.
pub const LANES: usize = 16;
/// Elements per step of ggml_vec_dot_f16/f32 (four 16-lane accumulators).
pub const GGML_STEP: usize = 64;

/// _mm512_reduce_add_ps's tree: halves, quarters, then pairs.
pub fn reduce16(v: &[f32; LANES]) -> f32 {
    let mut t = [0f32; 8];
    for i in 0..8 {
        t[i] = v[i] + v[i + 8];
    }
    let u = [t[0] + t[4], t[1] + t[5], t[2] + t[6], t[3] + t[7]];
    (u[0] + u[2]) + (u[1] + u[3])
}

/// A float row product as ggml_vec_dot_f16/f32 rounds it on an AVX-512
/// build (what llama.cpp uses for single tokens): four 16-lane fused
/// accumulators over 64-element steps, reduced pairwise, the tail added in
/// f64 for f16 (`tail_f64`) or in f32 for f32.
pub fn dot_ggml(n: usize, xy: impl Fn(usize) -> (f32, f32), tail_f64: bool) -> f32 {
    let np = n / GGML_STEP * GGML_STEP;
    let mut acc = [[0f32; LANES]; 4];
    for i in (0..np).step_by(GGML_STEP) {
        for (j, accj) in acc.iter_mut().enumerate() {
            for (l, a) in accj.iter_mut().enumerate() {
                let (x, y) = xy(i + LANES * j + l);
                *a = x.mul_add(y, *a);
            }
        }
    }
    let mut v = [0f32; LANES];
    for l in 0..LANES {
        v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
    }
    let head = reduce16(&v);
    if tail_f64 {
        let mut sum = head as f64;
        for i in np..n {
            let (x, y) = xy(i);
            sum += (x * y) as f64;
        }
        sum as f32
    } else {
        let mut sum = head;
        for i in np..n {
            let (x, y) = xy(i);
            sum += x * y;
        }
        sum
    }
}

/// The product of batches of 2+ tokens: rows of a multiple of 16 go to
/// llamafile's tinyBLAS (one 16-lane fused accumulator, then the reduction
/// tree), others to `dot_ggml`.
pub fn dot_batch(n: usize, xy: impl Fn(usize) -> (f32, f32), tail_f64: bool) -> f32 {
    if !n.is_multiple_of(LANES) {
        return dot_ggml(n, xy, tail_f64);
    }
    let mut acc = [0f32; LANES];
    for i in (0..n).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            let (x, y) = xy(i + l);
            *a = x.mul_add(y, *a);
        }
    }
    reduce16(&acc)
}

fn h(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_ggml(a.len().min(b.len()), |i| (a[i], b[i]), false)
}
pub fn dot_f32_batch(a: &[f32], b: &[f32]) -> f32 {
    dot_batch(a.len().min(b.len()), |i| (a[i], b[i]), false)
}
pub fn dot_f16(a: &[u16], b: &[u16]) -> f32 {
    dot_ggml(a.len().min(b.len()), |i| (h(a[i]), h(b[i])), true)
}
/// The f16 row product as ggml_vec_dot_f16 rounds it on an AVX2 build
/// (without AVX-512): four 8-lane fused accumulators over 32-element steps,
/// the accumulators added (0 + 2, 1 + 3, then the two), the two 128-bit
/// halves added and the four lanes summed by two `hadd`s, the tail in f64.
/// Only for comparing with such a build (`RLLAMA_GGML_BUILD=avx2`).
pub fn dot_f16_avx2_build(a: &[u16], b: &[u16]) -> f32 {
    const STEP: usize = 32;
    const EPR: usize = 8;
    let n = a.len().min(b.len());
    let np = n / STEP * STEP;
    let mut acc = [[0f32; EPR]; 4];
    for i in (0..np).step_by(STEP) {
        for (j, accj) in acc.iter_mut().enumerate() {
            for (l, x) in accj.iter_mut().enumerate() {
                *x = h(a[i + EPR * j + l]).mul_add(h(b[i + EPR * j + l]), *x);
            }
        }
    }
    let x: [f32; EPR] = std::array::from_fn(|l| (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]));
    let t: [f32; 4] = std::array::from_fn(|l| x[l] + x[l + 4]);
    let mut sum = ((t[0] + t[1]) + (t[2] + t[3])) as f64;
    for i in np..n {
        sum += (h(a[i]) * h(b[i])) as f64;
    }
    sum as f32
}

pub fn dot_f16_batch(a: &[u16], b: &[u16]) -> f32 {
    dot_batch(a.len().min(b.len()), |i| (h(a[i]), h(b[i])), true)
}
pub fn dot_bf16(a: &[u16], b: &[u16]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| bf16::from_bits(x).to_f32() * bf16::from_bits(y).to_f32()).sum()
}
