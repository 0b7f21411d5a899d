//! The fast kernels on AVX-512 VNNI: one `vpdpbusd` multiplies 8 elements of
//! a tile's 8 rows (64 weight bytes, lane 2r+h = row r, elements 4h..4h+4)
//! with 8 activation bytes broadcast; per sub-block the lanes are scaled in
//! integers, per super-block the two halves of each row are added and the
//! float step runs once for the 8 rows. Results equal `super::dot_ref` bit
//! for bit (tests below), for any number of tokens.

use super::driver::{gemm, gemm_fn, prefetch_l2, store8, Kernel};
use super::layout::*;
use super::meta::{Iq4Xs, Meta, Q2K, Q3K, Q4K, Q5K, Q6K};
use super::{FastKernels, TILE_ROWS};
use crate::gguf::GgmlType;
use crate::quant::blocks::{BlockQ8K, KVALUES_IQ4NL};
use std::arch::x86_64::*;

/// The fast kernel of `ty` (K-quants and IQ4_XS; the 32-element block types
/// are `avx512_32`'s).
pub fn kernels(ty: GgmlType) -> Option<FastKernels> {
    type Pack = fn(&[u8], usize, usize) -> crate::quant::AlignedBytes;
    let (geometry, pack, gemm): (Geometry, Pack, super::FastGemmFn) = match ty {
        GgmlType::Q4_K => (Q4K_GEOMETRY, pack_q4k, gemm_q4k),
        GgmlType::Q6_K => (Q6K_GEOMETRY, pack_q6k, gemm_q6k),
        GgmlType::Q5_K => (Q5K_GEOMETRY, pack_q5k::<Masks>, gemm_q5k),
        GgmlType::Q2_K => (Q2K_GEOMETRY, pack_q2k, gemm_q2k),
        GgmlType::Q3_K => (Q3K_GEOMETRY, pack_q3k::<Masks>, gemm_q3k),
        GgmlType::IQ4_XS => (IQ4XS_GEOMETRY, pack_iq4xs, gemm_iq4xs),
        _ => return None,
    };
    Some(FastKernels { ty, rows: TILE_ROWS, geometry, pack, gemm })
}

/// One format's tile super-block, as the kernel reads it (its meta: `Meta`).
trait Tile: Meta {
    /// Weights hold q + 2^OFFSET_SHIFT (Q6_K: 32, IQ4_XS: 128; 0: none):
    /// take 2^OFFSET_SHIFT * sum_g sc[g] * bsum[g] off.
    const OFFSET_SHIFT: u32;
    /// Groups 2k and 2k+1 (elements 16k..16k+16) of the 8 rows, as bytes
    /// (`p`: the super-block's values; `scale` takes its meta).
    unsafe fn plane(p: *const u8, k: usize) -> (__m512i, __m512i);
    /// Sub-block s's scales, row r's at lanes 2r and 2r+1.
    unsafe fn scale(p: *const u8, s: usize) -> __m512i;
}

/// 64 aligned bytes of weights, loaded in program order: a volatile load,
/// so the compiler cannot move it before the loads written ahead of it.
/// Through plain loads LLVM issued a Q8_0 block's eight lines as 7, 6, 5,
/// 0, 1, 2, 3, then 4, and a stream entered backwards at every block's
/// start is one the prefetchers follow badly: Gemma's 262144 x 640 Q8_0
/// output for one token, caches evicted between passes, one thread, 7.7-8.2
/// -> 6.9-7.2 ms (a C loop of the same loads in order 6.0-6.3, in the
/// compiler's order 6.8-7.4 with a wider spread).
#[inline(always)]
pub(super) unsafe fn load64(p: *const u8) -> __m512i {
    debug_assert!((p as usize).is_multiple_of(64));
    std::ptr::read_volatile(p as *const __m512i)
}

#[inline(always)]
pub(super) unsafe fn nibbles(v: __m512i) -> (__m512i, __m512i) {
    let m = _mm512_set1_epi8(0x0F);
    (_mm512_and_si512(v, m), _mm512_and_si512(_mm512_srli_epi16(v, 4), m))
}

#[inline(always)]
unsafe fn doubled<const SIGNED: bool>(a: *const u8) -> __m512i {
    let v = _mm_loadl_epi64(a as *const __m128i);
    let v = _mm_unpacklo_epi8(v, v);
    if SIGNED {
        _mm512_cvtepi8_epi32(v)
    } else {
        _mm512_cvtepu8_epi32(v)
    }
}

impl Tile for Q4K {
    const OFFSET_SHIFT: u32 = 0;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (__m512i, __m512i) {
        nibbles(load64(p.add(64 * k)))
    }
    #[inline(always)]
    unsafe fn scale(p: *const u8, s: usize) -> __m512i {
        doubled::<false>(p.add(Q4K_SCALES + 8 * s))
    }
}

impl Tile for Q5K {
    const OFFSET_SHIFT: u32 = 0;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (__m512i, __m512i) {
        let (lo, hi) = Q4K::plane(p, k);
        let mask = |g: usize| -> __mmask64 { std::ptr::read_unaligned(p.add(Q5K_HIGH + 8 * g) as *const u64) };
        (
            _mm512_mask_blend_epi8(mask(2 * k), lo, _mm512_or_si512(lo, _mm512_set1_epi8(16))),
            _mm512_mask_blend_epi8(mask(2 * k + 1), hi, _mm512_or_si512(hi, _mm512_set1_epi8(16))),
        )
    }
    #[inline(always)]
    unsafe fn scale(p: *const u8, s: usize) -> __m512i {
        Q4K::scale(p, s)
    }
}

/// Groups 2k and 2k+1 from the 2-bit planes (Q2_K, Q3_K).
#[inline(always)]
unsafe fn plane2(p: *const u8, k: usize) -> (__m512i, __m512i) {
    let v = load64(p.add(64 * (k / 2)));
    let v = if k % 2 == 1 { _mm512_srli_epi16(v, 4) } else { v };
    let m = _mm512_set1_epi8(3);
    (_mm512_and_si512(v, m), _mm512_and_si512(_mm512_srli_epi16(v, 2), m))
}

impl Tile for Q2K {
    const OFFSET_SHIFT: u32 = 0;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (__m512i, __m512i) {
        plane2(p, k)
    }
    #[inline(always)]
    unsafe fn scale(p: *const u8, s: usize) -> __m512i {
        // low nibble of ggml's scale byte
        _mm512_and_si512(doubled::<false>(p.add(K16_SCALES + 8 * s)), _mm512_set1_epi32(0xF))
    }
}

impl Tile for Q3K {
    const OFFSET_SHIFT: u32 = 2;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (__m512i, __m512i) {
        let (lo, hi) = plane2(p, k);
        let mask = |g: usize| -> __mmask64 { std::ptr::read_unaligned(p.add(Q3K_HIGH + 8 * g) as *const u64) };
        let four = _mm512_set1_epi8(4);
        (_mm512_mask_blend_epi8(mask(2 * k), lo, _mm512_or_si512(lo, four)), _mm512_mask_blend_epi8(mask(2 * k + 1), hi, _mm512_or_si512(hi, four)))
    }
    #[inline(always)]
    unsafe fn scale(p: *const u8, s: usize) -> __m512i {
        doubled::<true>(p.add(K16_SCALES + 8 * s))
    }
}

impl Tile for Iq4Xs {
    const OFFSET_SHIFT: u32 = 7;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (__m512i, __m512i) {
        // grid index -> grid value + 128 (unsigned)
        let lut = _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_GRID_U8.as_ptr() as *const __m128i));
        let (lo, hi) = nibbles(load64(p.add(64 * k)));
        (_mm512_shuffle_epi8(lut, lo), _mm512_shuffle_epi8(lut, hi))
    }
    #[inline(always)]
    unsafe fn scale(p: *const u8, s: usize) -> __m512i {
        doubled::<true>(p.add(IQ4XS_SCALES + 8 * s))
    }
}

/// The IQ4 grid plus 128, as unsigned bytes.
pub(super) const IQ4_GRID_U8: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (KVALUES_IQ4NL[i] as i16 + 128) as u8;
        i += 1;
    }
    t
};

impl Tile for Q6K {
    const OFFSET_SHIFT: u32 = 5;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (__m512i, __m512i) {
        let (lo, hi) = nibbles(load64(p.add(64 * k)));
        // bits 4(k%2).. of the high plane: two bits for each group
        let h = load64(p.add(Q6K_HIGH + 64 * (k / 2)));
        let h = if k % 2 == 1 { _mm512_srli_epi16(h, 4) } else { h };
        let m = _mm512_set1_epi8(0x30);
        (_mm512_or_si512(lo, _mm512_and_si512(_mm512_slli_epi16(h, 4), m)), _mm512_or_si512(hi, _mm512_and_si512(_mm512_slli_epi16(h, 2), m)))
    }
    #[inline(always)]
    unsafe fn scale(p: *const u8, s: usize) -> __m512i {
        doubled::<true>(p.add(Q6K_SCALES + 8 * s))
    }
}

#[inline(always)]
unsafe fn bcast8(p: *const i8) -> __m512i {
    _mm512_set1_epi64(std::ptr::read_unaligned(p as *const i64))
}

/// Tile super-blocks 0..nb of one tile (64-byte aligned) against T tokens:
/// the 8 rows' results per token.
#[inline(always)]
unsafe fn tile<K: Tile, const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[*const BlockQ8K; T]) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    let zero = _mm512_setzero_si512();
    for b in 0..nb {
        let p = w.add(K::G.values_at(nb, b));
        let mt = w.add(K::G.meta_at(b));
        prefetch_l2(w, end, b, K::G, T);
        let mut s = [zero; T];
        if K::SUB16 {
            for k in 0..16 {
                let (g0, g1) = K::plane(p, k);
                let sc = K::scale(mt, k);
                for t in 0..T {
                    let q = (*acts[t].add(b)).qs.as_ptr().add(16 * k);
                    let x = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, g0, bcast8(q)), g1, bcast8(q.add(8)));
                    s[t] = _mm512_add_epi32(s[t], _mm512_mullo_epi32(x, sc));
                }
            }
        } else {
            for j in 0..8 {
                let (g0, g1) = K::plane(p, 2 * j);
                let (g2, g3) = K::plane(p, 2 * j + 1);
                let sc = K::scale(mt, j);
                for t in 0..T {
                    let q = (*acts[t].add(b)).qs.as_ptr().add(32 * j);
                    let x = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, g0, bcast8(q)), g1, bcast8(q.add(8)));
                    let x = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(x, g2, bcast8(q.add(16))), g3, bcast8(q.add(24)));
                    s[t] = _mm512_add_epi32(s[t], _mm512_mullo_epi32(x, sc));
                }
            }
        }
        let d = K::d(mt);
        let dmin = K::dmin(mt);
        for t in 0..T {
            let a = &*acts[t].add(b);
            // row r = lanes 2r + 2r+1: the low dword of each qword after the add
            let mut st = _mm512_cvtepi64_epi32(_mm512_add_epi32(s[t], _mm512_srli_epi64(s[t], 32)));
            if K::OFFSET_SHIFT > 0 {
                // sum_g sc[g] * bsum[g] per row, times the offset
                let bias = if K::SUB16 { coeff_sums16::<K>(mt, a) } else { coeff_sums32::<K>(mt, a) };
                st = _mm256_sub_epi32(st, _mm256_sllv_epi32(bias, _mm256_set1_epi32(K::OFFSET_SHIFT as i32)));
            }
            let mut x = _mm256_mul_ps(d, _mm256_cvtepi32_ps(st));
            if K::HAS_MIN {
                let m = if K::SUB16 { coeff_sums16::<K>(mt, a) } else { coeff_sums32::<K>(mt, a) };
                x = _mm256_sub_ps(x, _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(m)));
            }
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(a.d), x, acc[t]);
        }
    }
    acc
}

/// sum_g c[g] * bsum16[g] per row (lane r), c = `K::pairs` (16 per block).
#[inline(always)]
unsafe fn coeff_sums16<K: Tile>(mt: *const u8, a: &BlockQ8K) -> __m256i {
    let mut v = _mm256_setzero_si256();
    for j in 0..8 {
        let bs = _mm256_set1_epi32(std::ptr::read_unaligned(a.bsums.as_ptr().add(2 * j) as *const i32));
        v = _mm256_dpwssd_epi32(v, K::pairs(mt, j), bs);
    }
    v
}

/// sum_s c[s] * bsum32[s] per row (lane r), c = `K::pairs` (8 per block).
#[inline(always)]
unsafe fn coeff_sums32<K: Tile>(mt: *const u8, a: &BlockQ8K) -> __m256i {
    // sums of 32: adjacent pairs of the sums of 16, as i16 pairs (2j, 2j+1)
    let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
    let b32 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
    let pk = _mm256_packs_epi32(b32, b32);
    let mut v = _mm256_setzero_si256();
    for (j, idx) in [0, 1, 4, 5].into_iter().enumerate() {
        let bj = _mm256_permutevar8x32_epi32(pk, _mm256_set1_epi32(idx));
        v = _mm256_dpwssd_epi32(v, K::pairs(mt, j), bj);
    }
    v
}

/// The super-block types (Q8_K activations).
struct Super<K>(std::marker::PhantomData<K>);
impl<K: Tile> Kernel for Super<K> {
    type Act = *const BlockQ8K;
    type Acc = __m256;
    const ROWS: usize = TILE_ROWS;
    const G: Geometry = K::G;
    #[inline(always)]
    unsafe fn act(a: &[u8], arb: usize, _: usize, _: usize, t: usize) -> *const BlockQ8K {
        a.as_ptr().add(t * arb) as *const BlockQ8K
    }
    #[inline(always)]
    unsafe fn tile<const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[*const BlockQ8K; T]) -> [__m256; T] {
        tile::<K, T>(w, end, nb, acts)
    }
    #[inline(always)]
    unsafe fn store(v: __m256, o: *mut f32, valid: usize) {
        store8(v, o, valid)
    }
}

gemm_fn!(AVX512_VNNI, gemm_q2k, Super<Q2K>);
gemm_fn!(AVX512_VNNI, gemm_q3k, Super<Q3K>);
gemm_fn!(AVX512_VNNI, gemm_q4k, Super<Q4K>);
gemm_fn!(AVX512_VNNI, gemm_q5k, Super<Q5K>);
gemm_fn!(AVX512_VNNI, gemm_q6k, Super<Q6K>);
gemm_fn!(AVX512_VNNI, gemm_iq4xs, Super<Iq4Xs>);
