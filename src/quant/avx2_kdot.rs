//! AVX2 K-quant kernels (Q2_K..Q6_K, IQ4_XS against Q8_K): each super-block
//! unpacked to 8 chunks of 32 signed bytes with its scales in vectors, and the
//! dot products in the rounding of llama.cpp's x86 kernels (plain, Q4_K
//! repacked as q4_K_8x8, and the tiled AVX-512 build's).

use super::{dot_i8, h2f, hsum_f32, hsum_i32, iq4_lut, mul_i8_pairs, nibbles};
use crate::quant::blocks::*;
use crate::quant::kquants::{BlockK, Scales};
use std::arch::x86_64::*;

/// A 256-element super-block as 8 chunks of 32 signed bytes; its scales come
/// from the scalar format's `BlockK::scales`.
pub trait UnpackK: BlockK {
    /// The chunks hold `q + BIAS`; `dotk` takes `BIAS * sum(a)` off per chunk
    /// lane through the Q8_K block sums (ggml's lane layout for Q6_K).
    const BIAS: i32 = 0;
    /// Whether chunks hold negative values (else 0..=127: `maddubs`'s unsigned side).
    const SIGNED: bool = false;
    /// Whether the format has mins (`Scales::m` is Some).
    const HAS_MIN: bool = false;
    /// Chunk c (0..8) = elements 32c..32c+32.
    unsafe fn chunks(&self, out: &mut [__m256i; 8]);
    /// The scales (and mins) as 16 i16 lanes, the same numbers as
    /// `BlockK::scales`, built in registers: wide loads of the scalar
    /// decoder's narrow stores stall store forwarding.
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let s = self.scales();
        let m = s.m.unwrap_or([0; 16]);
        ScalesV { sc16: _mm256_loadu_si256(s.sc.as_ptr() as *const __m256i), m16: _mm256_loadu_si256(m.as_ptr() as *const __m256i), d: s.d, dmin: s.dmin }
    }
}

/// `Scales` in vectors (`m16` zero where the format has no mins).
#[derive(Clone, Copy)]
pub struct ScalesV {
    pub sc16: __m256i,
    pub m16: __m256i,
    pub d: f32,
    pub dmin: f32,
}

/// Q4_K / Q5_K: the 12 packed bytes to 8 scales and 8 mins (bytes), each
/// doubled to the 16 groups of 16 (ggml's u32 mask trick, in registers).
#[inline(always)]
pub(super) unsafe fn scales_k4_v(q: &[u8; 12], d: u16, dmin: u16) -> ScalesV {
    let u = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let (k1, k2, k3) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
    let sc_lo = u0 & k1;
    let sc_hi = (u2 & k2) | (((u0 >> 6) & k3) << 4);
    let m_lo = u1 & k1;
    let m_hi = ((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4);
    let v = _mm_setr_epi32(sc_lo as i32, sc_hi as i32, m_lo as i32, m_hi as i32);
    ScalesV { sc16: _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(v, v)), m16: _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v)), d: h2f(d), dmin: h2f(dmin) }
}

impl UnpackK for BlockQ4K {
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        scales_k4_v(&self.scales, self.d, self.dmin)
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m = _mm256_set1_epi8(0x0F);
        for c in 0..4 {
            let b = _mm256_loadu_si256(self.qs.as_ptr().add(32 * c) as *const __m256i);
            out[2 * c] = _mm256_and_si256(b, m);
            out[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(b, 4), m);
        }
    }
}

impl UnpackK for BlockQ5K {
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        scales_k4_v(&self.scales, self.d, self.dmin)
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m = _mm256_set1_epi8(0x0F);
        let qh = _mm256_loadu_si256(self.qh.as_ptr() as *const __m256i);
        let sixteen = _mm256_set1_epi8(16);
        for c in 0..4 {
            let b = _mm256_loadu_si256(self.qs.as_ptr().add(32 * c) as *const __m256i);
            let bit_lo = _mm256_set1_epi8((1u8 << (2 * c)) as i8);
            let bit_hi = _mm256_set1_epi8((2u8 << (2 * c)) as i8);
            let h_lo = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_lo), bit_lo), sixteen);
            let h_hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_hi), bit_hi), sixteen);
            out[2 * c] = _mm256_or_si256(_mm256_and_si256(b, m), h_lo);
            out[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m), h_hi);
        }
    }
}

impl UnpackK for BlockQ6K {
    const BIAS: i32 = 32;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let sc = _mm_loadu_si128(self.scales.as_ptr() as *const __m128i);
        ScalesV { sc16: _mm256_cvtepi8_epi16(sc), m16: _mm256_setzero_si256(), d: h2f(self.d), dmin: 0.0 }
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        for n in 0..2 {
            let l0 = _mm256_loadu_si256(self.ql.as_ptr().add(64 * n) as *const __m256i);
            let l1 = _mm256_loadu_si256(self.ql.as_ptr().add(64 * n + 32) as *const __m256i);
            let h = _mm256_loadu_si256(self.qh.as_ptr().add(32 * n) as *const __m256i);
            // bits 2s..2s+2 of qh moved to bits 4..6 (no closure: closures
            // do not inherit target features)
            let hb0 = _mm256_slli_epi16(_mm256_and_si256(h, m2), 4);
            let hb2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4);
            let hb4 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4);
            let hb6 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4);
            out[4 * n] = _mm256_or_si256(_mm256_and_si256(l0, m4), hb0);
            out[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), hb2);
            out[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), hb4);
            out[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), hb6);
        }
    }
}

impl UnpackK for BlockQ2K {
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let b = _mm_loadu_si128(self.scales.as_ptr() as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        ScalesV {
            sc16: _mm256_cvtepu8_epi16(_mm_and_si128(b, m4)),
            m16: _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), m4)),
            d: h2f(self.d),
            dmin: h2f(self.dmin),
        }
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m2 = _mm256_set1_epi8(3);
        for n in 0..2 {
            let q = _mm256_loadu_si256(self.qs.as_ptr().add(32 * n) as *const __m256i);
            out[4 * n] = _mm256_and_si256(q, m2);
            out[4 * n + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m2);
            out[4 * n + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m2);
            out[4 * n + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m2);
        }
    }
}

impl UnpackK for BlockQ3K {
    const SIGNED: bool = true;
    /// sc[j] = (low 4 bits from bytes 0..8 | 2 high bits from bytes 8..12) - 32.
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let s = &self.scales;
        let v = _mm_loadl_epi64(s.as_ptr() as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        let lo = _mm_unpacklo_epi64(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16(v, 4), m4));
        // i32 lane k = bytes 8..12 shifted right by 2k: byte 4k + m = s[8 + m] >> 2k
        let x = u32::from_le_bytes([s[8], s[9], s[10], s[11]]) as i32;
        let hi = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(x), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
        let sc = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
        ScalesV { sc16: _mm256_cvtepi8_epi16(sc), m16: _mm256_setzero_si256(), d: h2f(self.d), dmin: 0.0 }
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m2 = _mm256_set1_epi8(3);
        let hm = _mm256_loadu_si256(self.hmask.as_ptr() as *const __m256i);
        let four = _mm256_set1_epi8(4);
        for n in 0..2 {
            let q = _mm256_loadu_si256(self.qs.as_ptr().add(32 * n) as *const __m256i);
            for s in 0..4 {
                let low = match s {
                    0 => _mm256_and_si256(q, m2),
                    1 => _mm256_and_si256(_mm256_srli_epi16(q, 2), m2),
                    2 => _mm256_and_si256(_mm256_srli_epi16(q, 4), m2),
                    _ => _mm256_and_si256(_mm256_srli_epi16(q, 6), m2),
                };
                let bit = _mm256_set1_epi8((1u8 << (4 * n + s)) as i8);
                // subtract 4 where the high bit is clear
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                let sub = _mm256_andnot_si256(set, four);
                out[4 * n + s] = _mm256_sub_epi8(low, sub);
            }
        }
    }
}

impl UnpackK for BlockIQ4XS {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        for ib in 0..8 {
            let qs: &[u8; 16] = self.qs[16 * ib..16 * ib + 16].try_into().unwrap();
            out[ib] = iq4_lut(nibbles(qs));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dotk<B: UnpackK>(w: &[B], a: &[BlockQ8K]) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    let mut acc = _mm256_setzero_ps();
    let mut mins_acc = 0.0f32;
    let mut ch = [_mm256_setzero_si256(); 8];
    for (w, a) in w.iter().zip(a) {
        w.chunks(&mut ch);
        let Scales { sc, m, d, dmin } = w.scales();
        let mut isum = _mm256_setzero_si256();
        for c in 0..8 {
            let av = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
            let p16 = mul_i8_pairs(ch[c], av);
            // i16 lanes 0..8 hold elements 0..16 of the chunk, lanes 8..16 the rest
            let (s0, s1) = (sc[2 * c], sc[2 * c + 1]);
            let scv = _mm256_setr_epi16(s0, s0, s0, s0, s0, s0, s0, s0, s1, s1, s1, s1, s1, s1, s1, s1);
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p16, scv));
        }
        if B::BIAS != 0 {
            // lane c: BIAS * (bsums[2c] sc[2c] + bsums[2c+1] sc[2c+1])
            let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
            let scv = _mm256_loadu_si256(sc.as_ptr() as *const __m256i);
            let sub = _mm256_mullo_epi32(_mm256_madd_epi16(bs, scv), _mm256_set1_epi32(B::BIAS));
            isum = _mm256_sub_epi32(isum, sub);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(isum), acc);
        if let Some(m) = m {
            let mut msum = 0i32;
            for g in 0..16 {
                msum += a.bsums[g] as i32 * m[g] as i32;
            }
            mins_acc += dmin * a.d * msum as f32;
        }
    }
    hsum_f32(acc) - mins_acc
}

/// Q4_K in the rounding of llama.cpp's x86 kernels for Q4_K repacked as
/// q4_K_8x8 (what it runs on every AVX2 machine): per row, exact integer sums
/// over a whole super-block (GEMV, one token) or over each 64 elements (GEMM,
/// groups of four tokens; `per_64`), each folded into one scalar FMA chain,
/// the mins into a second chain subtracted at the end.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_q4k_repacked(w: &[BlockQ4K], a: &[BlockQ8K], per_64: bool) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    let mut ch = [_mm256_setzero_si256(); 8];
    for (w, a) in w.iter().zip(a) {
        w.chunks(&mut ch);
        let Scales { sc, m, d, dmin } = w.scales();
        let m = m.unwrap_or([0; 16]);
        let (dd, dm) = (d * a.d, dmin * a.d);
        let (mut isum, mut msum) = (0i32, 0i32);
        for c in 0..8 {
            let av = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
            isum += sc[2 * c] as i32 * hsum_i32(dot_i8(ch[c], av));
            msum += m[2 * c] as i32 * (a.bsums[2 * c] as i32 + a.bsums[2 * c + 1] as i32);
            if per_64 && c % 2 == 1 {
                acc = (isum as f32).mul_add(dd, acc);
                acc_min = (msum as f32).mul_add(dm, acc_min);
                (isum, msum) = (0, 0);
            }
        }
        if !per_64 {
            acc = (isum as f32).mul_add(dd, acc);
            acc_min = (msum as f32).mul_add(dm, acc_min);
        }
    }
    acc - acc_min
}

/// K-quants in the rounding of llama.cpp's tiled matmul (AVX-512 VNNI build):
/// per super-block the exact integer sum is scaled by the weight's d (and its
/// min term fused off), then fused into the accumulator times the token's d.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dotk_tiled<B: UnpackK>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    let mut ch = [_mm256_setzero_si256(); 8];
    for (w, a) in w.iter().zip(a) {
        w.chunks(&mut ch);
        let Scales { sc, m, d, dmin } = w.scales();
        let mut isum = _mm256_setzero_si256();
        for c in 0..8 {
            let av = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
            let (s0, s1) = (sc[2 * c], sc[2 * c + 1]);
            let scv = _mm256_setr_epi16(s0, s0, s0, s0, s0, s0, s0, s0, s1, s1, s1, s1, s1, s1, s1, s1);
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(mul_i8_pairs(ch[c], av), scv));
        }
        let mut isum = hsum_i32(isum);
        if B::BIAS != 0 {
            isum -= B::BIAS * (0..16).map(|g| a.bsums[g] as i32 * sc[g] as i32).sum::<i32>();
        }
        let mut r = isum as f32 * d;
        if let Some(m) = m {
            let msum: i32 = (0..16).map(|g| a.bsums[g] as i32 * m[g] as i32).sum();
            r = (-dmin).mul_add(msum as f32, r);
        }
        acc = r.mul_add(a.d, acc);
    }
    acc
}
