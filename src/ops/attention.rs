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

    pub fn dot(a: &[u16], b: &[u16]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: avx2/fma/f16c detected at run time.
            return unsafe { avx2::dot_f16_f16(a, b) };
        }
        a.iter().zip(b).map(|(&x, &y)| h2f(x) * h2f(y)).sum()
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

/// One query head against `n_kv` cached positions.
/// `k_at(i)` / `v_at(i)` give the f16 key/value head vectors of position i.
pub fn attend_f16<'a>(
    q: &[f32],
    n_kv: usize,
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
    for i in 0..n_kv {
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
        s_sum = s_sum * ms + vs;
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for d in 0..dv {
        out[d] = h2f(acc[d]) * inv;
    }
}
