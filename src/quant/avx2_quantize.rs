//! Activation quantization (Q8_0, Q8_1, Q8_K) with AVX2: the same bytes as
//! the scalar quantizers in legacy.rs / kquants.rs (tests/quant.rs compares
//! them on random and extreme rows). `vroundps` rounds half to even like
//! `round_ties_even`, without a libm call per element.

use crate::quant::blocks::{f32_to_f16, BlockQ8K, BlockQ8_0, BlockQ8_1};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)))
}

#[inline(always)]
unsafe fn hmin(v: __m256) -> f32 {
    let m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    _mm_cvtss_f32(_mm_min_ss(m, _mm_movehdup_ps(m)))
}

/// round(x[i] * s) as i32 for 32 values.
#[inline(always)]
unsafe fn round32(x: &[f32], s: f32) -> [__m256i; 4] {
    // loops, not closures: closures do not inherit target features
    let sv = _mm256_set1_ps(s);
    let mut out = [_mm256_setzero_si256(); 4];
    for (k, o) in out.iter_mut().enumerate() {
        let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(8 * k)), sv);
        *o = _mm256_cvtps_epi32(_mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
    out
}

/// Four i32 x 8 vectors (|v| <= 127) to 32 bytes in order.
#[inline(always)]
unsafe fn pack32(i: [__m256i; 4]) -> __m256i {
    let p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
    _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// (d, 32 bytes, their i32 sums) of one 32-element block, as `legacy::quantize32`.
#[inline(always)]
unsafe fn q32(x: &[f32]) -> (f32, __m256i, [__m256i; 4]) {
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let p = x.as_ptr();
    let (l0, l1) = (_mm256_and_ps(_mm256_loadu_ps(p), abs), _mm256_and_ps(_mm256_loadu_ps(p.add(8)), abs));
    let (l2, l3) = (_mm256_and_ps(_mm256_loadu_ps(p.add(16)), abs), _mm256_and_ps(_mm256_loadu_ps(p.add(24)), abs));
    let amax = hmax(_mm256_max_ps(_mm256_max_ps(l0, l1), _mm256_max_ps(l2, l3)));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let i = round32(x, id);
    (d, pack32(i), i)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(32).zip(out) {
        let (d, q, _) = q32(x);
        b.d = f32_to_f16(d);
        _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, q);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (x, b) in x.chunks_exact(32).zip(out) {
        let (d, q, i) = q32(x);
        let s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s = super::hsum_i32(s);
        b.d = f32_to_f16(d);
        b.s = f32_to_f16(d * s as f32);
        _mm256_storeu_si256(b.qs.as_mut_ptr() as *mut __m256i, q);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    for (x, b) in x.chunks_exact(256).zip(out) {
        let (mut vmax, mut vmin) = (_mm256_set1_ps(f32::MIN), _mm256_set1_ps(f32::MAX));
        for k in 0..32 {
            let v = _mm256_loadu_ps(x.as_ptr().add(8 * k));
            vmax = _mm256_max_ps(vmax, v);
            vmin = _mm256_min_ps(vmin, v);
        }
        let (hi, lo) = (hmax(vmax), hmin(vmin));
        let amax = hi.max(-lo);
        if amax == 0.0 {
            *b = BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] };
            continue;
        }
        // the scalar quantizer keeps the first value of largest magnitude
        let max = if hi == amax && -lo != amax {
            hi
        } else if -lo == amax && hi != amax {
            lo
        } else {
            *x.iter().find(|v| v.abs() == amax).unwrap_or(&hi)
        };
        let iscale = -127.0 / max;
        let top = _mm256_set1_epi32(127);
        for c in 0..8 {
            let mut i = round32(&x[32 * c..], iscale);
            for v in i.iter_mut() {
                *v = _mm256_min_epi32(*v, top);
            }
            _mm256_storeu_si256(b.qs.as_mut_ptr().add(32 * c) as *mut __m256i, pack32(i));
            // groups of 16: (i0 + i1), (i2 + i3)
            b.bsums[2 * c] = super::hsum_i32(_mm256_add_epi32(i[0], i[1])) as i16;
            b.bsums[2 * c + 1] = super::hsum_i32(_mm256_add_epi32(i[2], i[3])) as i16;
        }
        b.d = 1.0 / iscale;
    }
}
