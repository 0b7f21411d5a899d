//! AVX2 float kernels: f16 and f32 dot products (weights of those types),
//! the f16 attention accumulators in ggml's rounding, and SwiGLU.

use crate::quant::blocks::{f16_to_f32, f32_to_f16};
use std::arch::x86_64::*;

/// The reduction tree of a 16-lane accumulator held as two 8-lane halves
/// (float::reduce16).
#[inline(always)]
unsafe fn reduce16(lo: __m256, hi: __m256) -> f32 {
    let t = _mm256_add_ps(lo, hi); // v[i] + v[i+8]
    let u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)); // t[i] + t[i+4]
    let w = _mm_add_ps(u, _mm_movehl_ps(u, u)); // u0+u2, u1+u3
    _mm_cvtss_f32(_mm_add_ss(w, _mm_shuffle_ps(w, w, 1)))
}

/// llamafile's tinyBLAS order over `n` (a multiple of 16) elements: one
/// 16-lane fused accumulator, held as two 8-lane halves, then reduce16.
/// `xy(i)` loads elements i..i+8 of both operands.
#[inline(always)]
unsafe fn sum_tinyblas(n: usize, xy: impl Fn(usize) -> (__m256, __m256)) -> f32 {
    let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    for i in (0..n).step_by(16) {
        let ((x0, y0), (x1, y1)) = (xy(i), xy(i + 8));
        lo = _mm256_fmadd_ps(x0, y0, lo);
        hi = _mm256_fmadd_ps(x1, y1, hi);
    }
    reduce16(lo, hi)
}

/// ggml_vec_dot's AVX-512 order over the first `np` (a multiple of 64)
/// elements: four 16-lane fused accumulators (two 8-lane halves each),
/// reduced pairwise, then reduce16. The caller adds the tail.
#[inline(always)]
unsafe fn sum_ggml_steps(np: usize, xy: impl Fn(usize) -> (__m256, __m256)) -> f32 {
    let mut acc = [_mm256_setzero_ps(); 8];
    for i in (0..np).step_by(64) {
        for k in 0..8 {
            let (x, y) = xy(i + 8 * k);
            acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
        }
    }
    // acc[2j], acc[2j+1] are lanes 0..8 and 8..16 of ggml's accumulator j
    let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    reduce16(lo, hi)
}

#[inline(always)]
unsafe fn ld_f16(p: &[u16], i: usize) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p.as_ptr().add(i) as *const __m128i))
}

/// float::dot_f16_batch (twin of the scalar one, lane for lane).
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dot_f16_batch(w: &[u16], a: &[u16]) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    if !w.len().is_multiple_of(16) {
        return dot_f16_ggml(w, a);
    }
    sum_tinyblas(w.len(), |i| (ld_f16(w, i), ld_f16(a, i)))
}

/// float::dot_f32_batch.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_f32_batch(w: &[f32], a: &[f32]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    if !w.len().is_multiple_of(16) {
        return dot_f32(w, a);
    }
    sum_tinyblas(w.len(), |i| (_mm256_loadu_ps(w.as_ptr().add(i)), _mm256_loadu_ps(a.as_ptr().add(i))))
}

/// float::dot_f32 (ggml_vec_dot_f32's order: the tail added in f32).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    let (n, np) = (w.len(), w.len() & !63);
    let mut s = sum_ggml_steps(np, |i| (_mm256_loadu_ps(w.as_ptr().add(i)), _mm256_loadu_ps(a.as_ptr().add(i))));
    for i in np..n {
        s += w[i] * a[i];
    }
    s
}

/// acc[i] = f16(f32(v[i]) * s + f32(acc[i])), fused, as ggml_vec_mad_f16.
/// # Safety
/// The CPU must support the enabled target features (callers check `has_avx2()`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_f16(acc: &mut [u16], v: &[u16], s: f32) {
    let n = acc.len().min(v.len());
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        let y = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i) as *const __m128i));
        let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
        let r = _mm256_fmadd_ps(x, sv, y);
        _mm_storeu_si128(acc.as_mut_ptr().add(i) as *mut __m128i, _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT));
        i += 8;
    }
    while i < n {
        acc[i] = f32_to_f16(f16_to_f32(v[i]).mul_add(s, f16_to_f32(acc[i])));
        i += 1;
    }
}

/// acc[i] = f16(f32(acc[i]) * s), as ggml_vec_scale_f16.
/// # Safety
/// The CPU must support the enabled target features (callers check `has_avx2()`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_f16(acc: &mut [u16], s: f32) {
    let n = acc.len();
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        let y = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i) as *const __m128i));
        _mm_storeu_si128(acc.as_mut_ptr().add(i) as *mut __m128i, _mm256_cvtps_ph(_mm256_mul_ps(y, sv), _MM_FROUND_TO_NEAREST_INT));
        i += 8;
    }
    while i < n {
        acc[i] = f32_to_f16(f16_to_f32(acc[i]) * s);
        i += 1;
    }
}

/// f16 dot in ggml's AVX-512 order (see ops::attention::f16v::dot_scalar, its twin):
/// each 16-lane accumulator is two 8-lane halves here, lane for lane the same.
/// # Safety
/// The CPU must support the enabled target features (callers check `has_avx2()`).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16_ggml(a: &[u16], b: &[u16]) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(a.len(), b.len(), "vec_dot: operands of different lengths");
    let (n, np) = (a.len(), a.len() & !63);
    // ggml_vec_dot_f16: the tail in f64
    let mut sum = sum_ggml_steps(np, |i| (ld_f16(a, i), ld_f16(b, i))) as f64;
    for j in np..n {
        sum += (f16_to_f32(a[j]) * f16_to_f32(b[j])) as f64;
    }
    sum as f32
}

/// x[i] = ops::expf_ggml(x[i]), 8 lanes at a time (groups with a lane whose
/// power of two is out of the normal range take the scalar twin).
/// # Safety
/// The CPU must support the enabled target features (callers check `has_avx2()`).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp_ggml(x: &mut [f32]) {
    let n = x.len();
    let mut i = 0;
    while i + 8 <= n {
        let (e, nn) = expf8(_mm256_loadu_ps(x.as_ptr().add(i)));
        // |n| > 126 (or NaN: not ordered-less-or-equal) needs the scalar path
        let ok = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0), nn), _mm256_set1_ps(126.0), _CMP_LE_OQ));
        if ok != 0xFF {
            for v in &mut x[i..i + 8] {
                *v = crate::ops::expf_ggml(*v);
            }
        } else {
            _mm256_storeu_ps(x.as_mut_ptr().add(i), e);
        }
        i += 8;
    }
    for v in &mut x[i..] {
        *v = crate::ops::expf_ggml(*v);
    }
}

/// ops::expf_ggml on 8 lanes, valid where |n| <= 126 (n, the power of two,
/// is returned for the caller's range check).
#[inline(always)]
unsafe fn expf8(v: __m256) -> (__m256, __m256) {
    let r = _mm256_set1_ps(f32::from_bits(0x4B40_0000));
    let z = _mm256_fmadd_ps(v, _mm256_set1_ps(f32::from_bits(0x3FB8_AA3B)), r);
    let nn = _mm256_sub_ps(z, r);
    let b = _mm256_fnmadd_ps(nn, _mm256_set1_ps(f32::from_bits(0x35BF_BE8E)), _mm256_fnmadd_ps(nn, _mm256_set1_ps(f32::from_bits(0x3F31_7200)), v));
    let u = _mm256_mul_ps(b, b);
    let p = _mm256_fmadd_ps(_mm256_set1_ps(f32::from_bits(0x3C07_2010)), b, _mm256_set1_ps(f32::from_bits(0x3D2B_9F17)));
    let q = _mm256_fmadd_ps(_mm256_set1_ps(f32::from_bits(0x3E2A_AF33)), b, _mm256_set1_ps(f32::from_bits(0x3EFF_FEDB)));
    let s = _mm256_fmadd_ps(_mm256_set1_ps(f32::from_bits(0x3F7F_FFF6)), b, _mm256_set1_ps(1.0));
    let j = _mm256_fmadd_ps(_mm256_fmadd_ps(p, u, q), u, s);
    let e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23);
    (_mm256_mul_ps(j, _mm256_castsi256_ps(e)), nn)
}

/// g[i] = silu(g[i]) * u[i] with ggml's vector expf; twin of ops::silu_ggml.
/// # Safety
/// The CPU must support the enabled target features (callers check `has_avx2()`).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn swiglu(g: &mut [f32], u: &[f32]) {
    let n = g.len().min(u.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_loadu_ps(g.as_ptr().add(i));
        let (ex, nn) = expf8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        // |n| <= 126 here for all practical inputs; fall back to the scalar twin otherwise
        let big = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0), nn), _mm256_set1_ps(126.0), _CMP_GT_OQ));
        if big != 0 {
            for k in i..i + 8 {
                g[k] = crate::ops::silu_ggml(g[k]) * u[k];
            }
            i += 8;
            continue;
        }
        let y = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), ex));
        _mm256_storeu_ps(g.as_mut_ptr().add(i), _mm256_mul_ps(y, _mm256_loadu_ps(u.as_ptr().add(i))));
        i += 8;
    }
    for k in i..n {
        g[k] = crate::ops::silu_ggml(g[k]) * u[k];
    }
}
