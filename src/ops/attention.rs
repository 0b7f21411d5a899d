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
    qh: &mut Vec<f32>,
    acc: &mut Vec<u16>,
) {
    let dk = q.len();
    let dv = out.len();
    qh.clear();
    qh.extend(q.iter().map(|&x| h2f(f2h(x))));
    acc.clear();
    acc.resize(dv, 0);
    let mut m = f32::NEG_INFINITY;
    let mut s_sum = 0.0f32;
    for i in 0..n_kv {
        let k = k_at(i);
        let mut dot = 0.0f32;
        for d in 0..dk {
            dot += h2f(k[d]) * qh[d];
        }
        let mut s = dot * scale;
        if softcap != 0.0 {
            s = softcap * s.tanh();
        }
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            let mold = m;
            m = s;
            ms = (mold - m).exp();
            for a in acc.iter_mut() {
                *a = f2h(h2f(*a) * ms);
            }
        } else {
            vs = (s - m).exp();
        }
        let v = v_at(i);
        for d in 0..dv {
            *acc.get_mut(d).unwrap() = f2h(h2f(v[d]).mul_add(vs, h2f(acc[d])));
        }
        s_sum = s_sum * ms + vs;
    }
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for d in 0..dv {
        out[d] = h2f(acc[d]) * inv;
    }
}
