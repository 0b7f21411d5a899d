//! Super-blocks of 256 (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) and the Q8_K
//! activation format. Each format unpacks to 256 integers plus one integer
//! scale (and min) per 16 values; dequantization and the scalar dot product are
//! written once on top of that.

use super::blocks::*;

pub const QK_K: usize = 256;

/// The scales of a super-block, one per 16 values:
/// x[i] = (d * sc[i/16]) * q[i] - (dmin * m[i/16]).
#[derive(Clone, Copy)]
pub struct Scales {
    pub sc: [i16; 16],
    /// Mins per 16 values; None for formats without (their dmin is 0).
    pub m: Option<[i16; 16]>,
    pub d: f32,
    pub dmin: f32,
}

/// A super-block format: scale decoding and the 256 integer values. The
/// scalar reference and the SIMD kernels both take the scales from here.
pub trait BlockK: Copy {
    fn scales(&self) -> Scales;
    fn quants(&self, q: &mut [i8; QK_K]);
}

/// 6-bit scale and min j (0..8) of Q4_K / Q5_K.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K / Q5_K: 8 scale/min pairs, each serving 32 values (two groups of 16).
#[inline(always)]
fn scales_k4(s: &[u8; 12], d: u16, dmin: u16) -> Scales {
    let (mut sc, mut m) = ([0i16; 16], [0i16; 16]);
    for j in 0..8 {
        let (a, b) = scale_min_k4(j, s);
        sc[2 * j] = a as i16;
        sc[2 * j + 1] = a as i16;
        m[2 * j] = b as i16;
        m[2 * j + 1] = b as i16;
    }
    Scales { sc, m: Some(m), d: f16_to_f32(d), dmin: f16_to_f32(dmin) }
}

impl BlockK for BlockQ2K {
    fn scales(&self) -> Scales {
        let (mut sc, mut m) = ([0i16; 16], [0i16; 16]);
        for i in 0..16 {
            sc[i] = (self.scales[i] & 0xF) as i16;
            m[i] = (self.scales[i] >> 4) as i16;
        }
        Scales { sc, m: Some(m), d: f16_to_f32(self.d), dmin: f16_to_f32(self.dmin) }
    }
    fn quants(&self, q: &mut [i8; QK_K]) {
        // 2 halves of 128; in each, 4 shifts over 32 bytes (two groups of 16)
        for n in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    q[n * 128 + s * 32 + l] = ((self.qs[n * 32 + l] >> (2 * s)) & 3) as i8;
                }
            }
        }
    }
}

impl BlockK for BlockQ3K {
    fn scales(&self) -> Scales {
        let s = &self.scales;
        let mut sc = [0i16; 16];
        for j in 0..16 {
            // low 4 bits from bytes 0..8, high 2 bits from bytes 8..12
            let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
            let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            sc[j] = (lo | (hi << 4)) as i16 - 32;
        }
        Scales { sc, m: None, d: f16_to_f32(self.d), dmin: 0.0 }
    }
    fn quants(&self, q: &mut [i8; QK_K]) {
        let mut m = 1u8;
        for n in 0..2 {
            for sh in 0..4 {
                for l in 0..32 {
                    let low = ((self.qs[n * 32 + l] >> (2 * sh)) & 3) as i8;
                    let high = if self.hmask[l] & m != 0 { 0 } else { 4 };
                    q[n * 128 + sh * 32 + l] = low - high;
                }
                m <<= 1;
            }
        }
    }
}

impl BlockK for BlockQ4K {
    fn scales(&self) -> Scales {
        scales_k4(&self.scales, self.d, self.dmin)
    }
    fn quants(&self, q: &mut [i8; QK_K]) {
        for c in 0..4 {
            for l in 0..32 {
                let b = self.qs[c * 32 + l];
                q[c * 64 + l] = (b & 0xF) as i8;
                q[c * 64 + 32 + l] = (b >> 4) as i8;
            }
        }
    }
}

impl BlockK for BlockQ5K {
    fn scales(&self) -> Scales {
        scales_k4(&self.scales, self.d, self.dmin)
    }
    fn quants(&self, q: &mut [i8; QK_K]) {
        for c in 0..4 {
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for l in 0..32 {
                let b = self.qs[c * 32 + l];
                let h = self.qh[l];
                q[c * 64 + l] = ((b & 0xF) + if h & u1 != 0 { 16 } else { 0 }) as i8;
                q[c * 64 + 32 + l] = ((b >> 4) + if h & u2 != 0 { 16 } else { 0 }) as i8;
            }
        }
    }
}

impl BlockK for BlockQ6K {
    fn scales(&self) -> Scales {
        let mut sc = [0i16; 16];
        for j in 0..16 {
            sc[j] = self.scales[j] as i16;
        }
        Scales { sc, m: None, d: f16_to_f32(self.d), dmin: 0.0 }
    }
    fn quants(&self, q: &mut [i8; QK_K]) {
        for n in 0..2 {
            let (ql, qh) = (&self.ql[n * 64..], &self.qh[n * 32..]);
            let y = &mut q[n * 128..];
            for l in 0..32 {
                y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
    }
}

impl BlockK for BlockIQ4XS {
    fn scales(&self) -> Scales {
        let mut sc = [0i16; 16];
        for ib in 0..8 {
            let ls = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | ((((self.scales_h >> (2 * ib)) & 3) as u8) << 4);
            sc[2 * ib] = ls as i16 - 32;
            sc[2 * ib + 1] = ls as i16 - 32;
        }
        Scales { sc, m: None, d: f16_to_f32(self.d), dmin: 0.0 }
    }
    fn quants(&self, q: &mut [i8; QK_K]) {
        for ib in 0..8 {
            for j in 0..16 {
                let b = self.qs[ib * 16 + j];
                q[ib * 32 + j] = KVALUES_IQ4NL[(b & 0xF) as usize];
                q[ib * 32 + 16 + j] = KVALUES_IQ4NL[(b >> 4) as usize];
            }
        }
    }
}

/// Reference dequantization in ggml's operation order.
pub fn dequantize<B: BlockK>(blocks: &[B], out: &mut [f32]) {
    let mut q = [0i8; QK_K];
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let s = b.scales();
        b.quants(&mut q);
        let m = s.m.unwrap_or([0; 16]);
        for g in 0..16 {
            let dl = s.d * s.sc[g] as f32;
            let ml = s.dmin * m[g] as f32;
            for i in g * 16..g * 16 + 16 {
                y[i] = dl * q[i] as f32 - ml;
            }
        }
    }
}

/// Scalar dot with Q8_K activations: integer sums per 16, scaled in integers
/// within a super-block, then one float multiply per super-block.
pub fn dot_q8_k<B: BlockK>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    let mut q = [0i8; QK_K];
    for (w, a) in w.iter().zip(a) {
        let sc = w.scales();
        w.quants(&mut q);
        let m = sc.m.unwrap_or([0; 16]);
        let mut isum = 0i32;
        let mut msum = 0i32;
        for g in 0..16 {
            let s: i32 = (g * 16..g * 16 + 16).map(|i| q[i] as i32 * a.qs[i] as i32).sum();
            isum += s * sc.sc[g] as i32;
            msum += a.bsums[g] as i32 * m[g] as i32;
        }
        sum += sc.d * a.d * isum as f32 - sc.dmin * a.d * msum as f32;
    }
    sum
}

/// Quantize activations to Q8_K as ggml does (scale from the value of largest
/// magnitude, round to nearest even, sums of each 16).
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (x, b) in x.chunks_exact(QK_K).zip(out) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *b = BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; 16] };
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = ((iscale * v).round_ties_even() as i32).min(127) as i8;
        }
        for g in 0..16 {
            b.bsums[g] = b.qs[g * 16..g * 16 + 16].iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}
