//! What every ISA's fast kernel reads alike from a tile super-block's meta
//! (`layout`): each format's geometry and sub-block size, whether it has
//! mins, d and dmin per row, and the coefficient pairs that multiply the
//! activation sums. The ISA modules add how they read the values and scales.

use super::layout::*;
use std::arch::x86_64::*;

/// A format's tile meta.
pub trait Meta {
    const G: Geometry;
    /// Sub-blocks of 16 elements (else 32).
    const SUB16: bool;
    const HAS_MIN: bool;
    /// The 8 rows' d (f16 -> f32), from the super-block's meta.
    unsafe fn d(p: *const u8) -> __m256;
    unsafe fn dmin(p: *const u8) -> __m256;
    /// Pairs (c[2j], c[2j+1]) per row as i16 (lane r) of the per-sub-block
    /// coefficients that multiply activation sums: the scales (Q6_K) or mins
    /// (Q4_K), j = 0..8 (Q6_K) or 0..4 (Q4_K).
    unsafe fn pairs(p: *const u8, j: usize) -> __m256i;
}

pub struct Q4K;
pub struct Q5K;
pub struct Q2K;
pub struct Q3K;
pub struct Iq4Xs;
pub struct Q6K;

/// Eight bytes (row r's at 8s + r) as i16 pairs with the next eight.
#[inline(always)]
unsafe fn byte_pairs<const SIGNED: bool>(a: *const u8, b: *const u8) -> __m256i {
    let v = _mm_unpacklo_epi8(_mm_loadl_epi64(a as *const __m128i), _mm_loadl_epi64(b as *const __m128i));
    if SIGNED {
        _mm256_cvtepi8_epi16(v)
    } else {
        _mm256_cvtepu8_epi16(v)
    }
}

#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

impl Meta for Q4K {
    const G: Geometry = Q4K_GEOMETRY;
    const SUB16: bool = false;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn d(p: *const u8) -> __m256 {
        f16x8(p.add(Q4K_D))
    }
    #[inline(always)]
    unsafe fn dmin(p: *const u8) -> __m256 {
        f16x8(p.add(Q4K_DMIN))
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u8, j: usize) -> __m256i {
        byte_pairs::<false>(p.add(Q4K_MINS + 16 * j), p.add(Q4K_MINS + 16 * j + 8))
    }
}

/// Q4_K's meta (the high bits are in the values).
impl Meta for Q5K {
    const G: Geometry = Q5K_GEOMETRY;
    const SUB16: bool = false;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn d(p: *const u8) -> __m256 {
        Q4K::d(p)
    }
    #[inline(always)]
    unsafe fn dmin(p: *const u8) -> __m256 {
        Q4K::dmin(p)
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u8, j: usize) -> __m256i {
        Q4K::pairs(p, j)
    }
}

impl Meta for Q2K {
    const G: Geometry = Q2K_GEOMETRY;
    const SUB16: bool = true;
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn d(p: *const u8) -> __m256 {
        f16x8(p.add(K16_D))
    }
    #[inline(always)]
    unsafe fn dmin(p: *const u8) -> __m256 {
        f16x8(p.add(K16_DMIN))
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u8, j: usize) -> __m256i {
        // the mins: high nibbles
        _mm256_srli_epi16(byte_pairs::<false>(p.add(K16_SCALES + 16 * j), p.add(K16_SCALES + 16 * j + 8)), 4)
    }
}

impl Meta for Q3K {
    const G: Geometry = Q3K_GEOMETRY;
    const SUB16: bool = true;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn d(p: *const u8) -> __m256 {
        f16x8(p.add(K16_D))
    }
    #[inline(always)]
    unsafe fn dmin(_: *const u8) -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u8, j: usize) -> __m256i {
        byte_pairs::<true>(p.add(K16_SCALES + 16 * j), p.add(K16_SCALES + 16 * j + 8))
    }
}

impl Meta for Iq4Xs {
    const G: Geometry = IQ4XS_GEOMETRY;
    const SUB16: bool = false;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn d(p: *const u8) -> __m256 {
        f16x8(p.add(IQ4XS_D))
    }
    #[inline(always)]
    unsafe fn dmin(_: *const u8) -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u8, j: usize) -> __m256i {
        byte_pairs::<true>(p.add(IQ4XS_SCALES + 16 * j), p.add(IQ4XS_SCALES + 16 * j + 8))
    }
}

impl Meta for Q6K {
    const G: Geometry = Q6K_GEOMETRY;
    const SUB16: bool = true;
    const HAS_MIN: bool = false;
    #[inline(always)]
    unsafe fn d(p: *const u8) -> __m256 {
        f16x8(p.add(Q6K_D))
    }
    #[inline(always)]
    unsafe fn dmin(_: *const u8) -> __m256 {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn pairs(p: *const u8, j: usize) -> __m256i {
        byte_pairs::<true>(p.add(Q6K_SCALES + 16 * j), p.add(Q6K_SCALES + 16 * j + 8))
    }
}
