//! Super-blocks of 256 (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_XS) and the Q8_K
//! activation format. Each format unpacks to 256 integers plus one integer
//! scale (and min) per 16 values; dequantization and the scalar dot product are
//! written once on top of that.

use super::blocks::*;

pub const QK_K: usize = 256;

/// A super-block unpacked: x[i] = (d * sc[i/16]) * q[i] - (dmin * m[i/16]).
pub struct Unpacked {
    pub q: [i8; QK_K],
    pub sc: [i16; 16],
    pub m: [i16; 16],
    pub d: f32,
    pub dmin: f32,
}

impl Unpacked {
    fn new(d: f32, dmin: f32) -> Self {
        Unpacked { q: [0; QK_K], sc: [0; 16], m: [0; 16], d, dmin }
    }
}

pub trait BlockK: Copy {
    fn unpack(&self) -> Unpacked;
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

impl BlockK for BlockQ2K {
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked::new(f16_to_f32(self.d), f16_to_f32(self.dmin));
        for i in 0..16 {
            u.sc[i] = (self.scales[i] & 0xF) as i16;
            u.m[i] = (self.scales[i] >> 4) as i16;
        }
        // 2 halves of 128; in each, 4 shifts over 32 bytes (two groups of 16)
        for n in 0..2 {
            for s in 0..4 {
                for l in 0..32 {
                    u.q[n * 128 + s * 32 + l] = ((self.qs[n * 32 + l] >> (2 * s)) & 3) as i8;
                }
            }
        }
        u
    }
}

impl BlockK for BlockQ3K {
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked::new(f16_to_f32(self.d), 0.0);
        let s = &self.scales;
        for j in 0..16 {
            // low 4 bits from bytes 0..8, high 2 bits from bytes 8..12
            let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
            let hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            u.sc[j] = (lo | (hi << 4)) as i16 - 32;
        }
        let mut m = 1u8;
        for n in 0..2 {
            for sh in 0..4 {
                for l in 0..32 {
                    let low = ((self.qs[n * 32 + l] >> (2 * sh)) & 3) as i8;
                    let high = if self.hmask[l] & m != 0 { 0 } else { 4 };
                    u.q[n * 128 + sh * 32 + l] = low - high;
                }
                m <<= 1;
            }
        }
        u
    }
}

impl BlockK for BlockQ4K {
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked::new(f16_to_f32(self.d), f16_to_f32(self.dmin));
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &self.scales);
            u.sc[2 * j] = sc as i16;
            u.sc[2 * j + 1] = sc as i16;
            u.m[2 * j] = m as i16;
            u.m[2 * j + 1] = m as i16;
        }
        for c in 0..4 {
            for l in 0..32 {
                let b = self.qs[c * 32 + l];
                u.q[c * 64 + l] = (b & 0xF) as i8;
                u.q[c * 64 + 32 + l] = (b >> 4) as i8;
            }
        }
        u
    }
}

impl BlockK for BlockQ5K {
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked::new(f16_to_f32(self.d), f16_to_f32(self.dmin));
        for j in 0..8 {
            let (sc, m) = scale_min_k4(j, &self.scales);
            u.sc[2 * j] = sc as i16;
            u.sc[2 * j + 1] = sc as i16;
            u.m[2 * j] = m as i16;
            u.m[2 * j + 1] = m as i16;
        }
        for c in 0..4 {
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for l in 0..32 {
                let b = self.qs[c * 32 + l];
                let h = self.qh[l];
                u.q[c * 64 + l] = ((b & 0xF) + if h & u1 != 0 { 16 } else { 0 }) as i8;
                u.q[c * 64 + 32 + l] = ((b >> 4) + if h & u2 != 0 { 16 } else { 0 }) as i8;
            }
        }
        u
    }
}

impl BlockK for BlockQ6K {
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked::new(f16_to_f32(self.d), 0.0);
        for j in 0..16 {
            u.sc[j] = self.scales[j] as i16;
        }
        for n in 0..2 {
            let (ql, qh) = (&self.ql[n * 64..], &self.qh[n * 32..]);
            let y = &mut u.q[n * 128..];
            for l in 0..32 {
                y[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                y[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                y[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                y[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        u
    }
}

impl BlockK for BlockIQ4XS {
    fn unpack(&self) -> Unpacked {
        let mut u = Unpacked::new(f16_to_f32(self.d), 0.0);
        for ib in 0..8 {
            let ls = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | ((((self.scales_h >> (2 * ib)) & 3) as u8) << 4);
            u.sc[2 * ib] = ls as i16 - 32;
            u.sc[2 * ib + 1] = ls as i16 - 32;
            for j in 0..16 {
                let b = self.qs[ib * 16 + j];
                u.q[ib * 32 + j] = KVALUES_IQ4NL[(b & 0xF) as usize];
                u.q[ib * 32 + 16 + j] = KVALUES_IQ4NL[(b >> 4) as usize];
            }
        }
        u
    }
}

/// Reference dequantization in ggml's operation order.
pub fn dequantize<B: BlockK>(blocks: &[B], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let u = b.unpack();
        for g in 0..16 {
            let dl = u.d * u.sc[g] as f32;
            let ml = u.dmin * u.m[g] as f32;
            for i in g * 16..g * 16 + 16 {
                y[i] = dl * u.q[i] as f32 - ml;
            }
        }
    }
}

/// Scalar dot with Q8_K activations: integer sums per 16, scaled in integers
/// within a super-block, then one float multiply per super-block.
pub fn dot_q8_k<B: BlockK>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (w, a) in w.iter().zip(a) {
        let u = w.unpack();
        let mut isum = 0i32;
        let mut msum = 0i32;
        for g in 0..16 {
            let s: i32 = (g * 16..g * 16 + 16).map(|i| u.q[i] as i32 * a.qs[i] as i32).sum();
            isum += s * u.sc[g] as i32;
            msum += a.bsums[g] as i32 * u.m[g] as i32;
        }
        sum += u.d * a.d * isum as f32 - u.dmin * a.d * msum as f32;
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
