//! Attention over an F16 KV cache the way ggml's CPU flash-attention kernel
//! computes it for F16 K/V: the query rounded to f16, scores in f32, an
//! online softmax, and the value accumulator held in f16.

use half::f16;

#[inline]
fn h2f(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}
#[inline]
fn f2h(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// f16 vector kernels of the attention loop, SIMD when available.
pub mod f16v {
    use super::{f2h, h2f};
    #[cfg(target_arch = "x86_64")]
    use crate::quant::simd::{avx2, has_avx2};

    /// f16 dot product in ggml's AVX-512 summation order: four 16-lane fused
    /// multiply-add accumulators over 64-element steps, reduced pairwise, the
    /// tail added in f64. Matching that order keeps the f16 value accumulator
    /// of the attention on the same roundings as llama.cpp.
    pub fn dot(a: &[u16], b: &[u16]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: avx2/fma/f16c detected at run time.
            return unsafe { avx2::dot_f16_ggml(a, b) };
        }
        dot_scalar(a, b)
    }

    pub fn dot_scalar(a: &[u16], b: &[u16]) -> f32 {
        let n = a.len().min(b.len());
        let np = n & !63;
        let mut acc = [[0f32; 16]; 4];
        for i in (0..np).step_by(64) {
            for (j, accj) in acc.iter_mut().enumerate() {
                for (l, s) in accj.iter_mut().enumerate() {
                    let k = i + 16 * j + l;
                    *s = h2f(a[k]).mul_add(h2f(b[k]), *s);
                }
            }
        }
        let mut v = [0f32; 16];
        for l in 0..16 {
            v[l] = (acc[0][l] + acc[2][l]) + (acc[1][l] + acc[3][l]);
        }
        let mut sum = reduce16(&v) as f64;
        for i in np..n {
            sum += (h2f(a[i]) * h2f(b[i])) as f64;
        }
        sum as f32
    }

    /// _mm512_reduce_add_ps's tree: halves, quarters, then pairs.
    pub fn reduce16(v: &[f32; 16]) -> f32 {
        let mut t = [0f32; 8];
        for i in 0..8 {
            t[i] = v[i] + v[i + 8];
        }
        let u = [t[0] + t[4], t[1] + t[5], t[2] + t[6], t[3] + t[7]];
        (u[0] + u[2]) + (u[1] + u[3])
    }
    pub fn mad(acc: &mut [u16], v: &[u16], s: f32) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { avx2::mad_f16(acc, v, s) };
        }
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = f2h(h2f(x).mul_add(s, h2f(*a)));
        }
    }
    pub fn scale(acc: &mut [u16], s: f32) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { avx2::scale_f16(acc, s) };
        }
        for a in acc.iter_mut() {
            *a = f2h(h2f(*a) * s);
        }
    }
}

/// One query head against the cached positions `kv` (a sliding window starts
/// past 0). `k_at(i)` / `v_at(i)` give the f16 key/value head vectors of
/// position i.
pub fn attend_f16<'a>(
    q: &[f32],
    kv: std::ops::Range<usize>,
    k_at: impl Fn(usize) -> &'a [u16],
    v_at: impl Fn(usize) -> &'a [u16],
    scale: f32,
    softcap: f32,
    out: &mut [f32],
    qh: &mut Vec<u16>,
    acc: &mut Vec<u16>,
) {
    let dk = q.len();
    let dv = out.len();
    qh.clear();
    qh.extend(q.iter().map(|&x| f2h(x)));
    acc.clear();
    acc.resize(dv, 0);
    let mut m = f32::NEG_INFINITY;
    let mut s_sum = 0.0f32;
    for i in kv {
        let k = k_at(i);
        let mut s = f16v::dot(&k[..dk], qh) * scale;
        if softcap != 0.0 {
            s = softcap * s.tanh();
        }
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            let mold = m;
            m = s;
            ms = (mold - m).exp();
            f16v::scale(acc, ms);
        } else {
            vs = (s - m).exp();
        }
        let v = v_at(i);
        f16v::mad(acc, &v[..dv], vs);
        s_sum = s_sum.mul_add(ms, vs); // fused, as ggml's compiled `S = S*ms + vs`
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for d in 0..dv {
        out[d] = h2f(acc[d]) * inv;
    }
}

/// Key positions per tile of ggml's tiled flash attention.
pub const FA_TILE: usize = 64;

/// Queries of one head the way ggml's tiled flash attention computes batches
/// of at least `FA_TILE` queries: each query stays f32, K and V are widened to
/// f32, and the keys go in tiles of 64 positions (aligned at multiples of 64):
/// scores as fused chains over the head dimension, one online-softmax update
/// per tile (libm exp for the rescale, ggml_v_expf and the AVX-512 reduction
/// tree for the weights, their sum in f64), values as fused chains over the
/// tile into an f32 accumulator. `ranges[i]` are the positions query i sees;
/// `out` holds the results, `dv` per query.
pub fn attend_tiled<'a>(
    qs: &[&[f32]],
    ranges: &[std::ops::Range<usize>],
    k_at: impl Fn(usize) -> &'a [u16],
    v_at: impl Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        // SAFETY: avx2/fma detected at run time; the body is plain Rust.
        return unsafe { tiled_fma(qs, ranges, &k_at, &v_at, scale, dv, out) };
    }
    tiled_body(qs, ranges, &k_at, &v_at, scale, dv, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tiled_fma<'a>(
    qs: &[&[f32]],
    ranges: &[std::ops::Range<usize>],
    k_at: &dyn Fn(usize) -> &'a [u16],
    v_at: &dyn Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
) {
    tiled_body(qs, ranges, k_at, v_at, scale, dv, out)
}

/// The tiled kernel; the loops over keys and over value dimensions are the
/// independent lanes (the compiler vectorises them), each lane a sequential
/// fused chain as in ggml's simd_gemm.
#[inline(always)]
fn tiled_body<'a>(
    qs: &[&[f32]],
    ranges: &[std::ops::Range<usize>],
    k_at: &dyn Fn(usize) -> &'a [u16],
    v_at: &dyn Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
) {
    const T: usize = FA_TILE;
    let nq = qs.len();
    if nq == 0 {
        return;
    }
    let dk = qs[0].len();
    let lo = ranges.iter().map(|r| r.start).min().unwrap_or(0) / T * T;
    let hi = ranges.iter().map(|r| r.end).max().unwrap_or(0);
    let mut kt = vec![0f32; dk * T]; // [d][key]
    let mut vt = vec![0f32; T * dv]; // [key][d]
    let mut m = vec![f32::NEG_INFINITY; nq];
    let mut s_sum = vec![0f32; nq];
    let acc = &mut out[..nq * dv];
    acc.iter_mut().for_each(|a| *a = 0.0);
    let mut w = [0f32; T];
    let mut t0 = lo;
    while t0 < hi {
        let n_in = (hi - t0).min(T);
        for tk in 0..T {
            if tk < n_in {
                let k = k_at(t0 + tk);
                for d in 0..dk {
                    kt[d * T + tk] = h2f(k[d]);
                }
                let v = v_at(t0 + tk);
                for d in 0..dv {
                    vt[tk * dv + d] = h2f(v[d]);
                }
            } else {
                for d in 0..dk {
                    kt[d * T + tk] = 0.0;
                }
            }
        }
        for (i, q) in qs.iter().enumerate() {
            let r = &ranges[i];
            if r.end <= t0 || r.start >= t0 + T {
                continue;
            }
            let mut sc = [0f32; T];
            for d in 0..dk {
                let qd = q[d];
                let row = &kt[d * T..d * T + T];
                for j in 0..T {
                    sc[j] = qd.mul_add(row[j], sc[j]);
                }
            }
            let mut tile_max = f32::NEG_INFINITY;
            for j in 0..T {
                let p = t0 + j;
                w[j] = if p >= r.start && p < r.end { sc[j] * scale } else { f32::NEG_INFINITY };
                tile_max = if tile_max > w[j] { tile_max } else { w[j] };
            }
            if tile_max == f32::NEG_INFINITY {
                continue;
            }
            let a = &mut acc[i * dv..(i + 1) * dv];
            let m_new = m[i].max(tile_max);
            if m_new > m[i] {
                let ms = (m[i] - m_new).exp();
                a.iter_mut().for_each(|x| *x *= ms);
                s_sum[i] *= ms;
            }
            m[i] = m_new;
            let mut sum = 0.0f64;
            for g in w.chunks_mut(16) {
                for x in g.iter_mut() {
                    *x = super::expf_ggml(*x - m_new);
                }
                sum += f16v::reduce16(&(&*g).try_into().unwrap()) as f64;
            }
            s_sum[i] = (s_sum[i] as f64 + sum) as f32;
            for j in 0..T {
                let p = t0 + j;
                if p < r.start || p >= r.end {
                    continue; // weight 0: ggml's fused add of 0 * v changes nothing
                }
                let wj = w[j];
                let vrow = &vt[j * dv..(j + 1) * dv];
                for d in 0..dv {
                    a[d] = wj.mul_add(vrow[d], a[d]);
                }
            }
        }
        t0 += T;
    }
    for i in 0..nq {
        let inv = if s_sum[i] == 0.0 { 0.0 } else { 1.0 / s_sum[i] };
        acc[i * dv..(i + 1) * dv].iter_mut().for_each(|x| *x *= inv);
    }
}
