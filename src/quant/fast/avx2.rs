//! The fast kernels on AVX2 machines without AVX-512 VNNI: the same tiles
//! (`layout`), each 64-byte plane read as two 256-bit halves (rows 0-3 and
//! rows 4-7; lane 2r+h of a half = row r, elements 4h..4h+4). `vpmaddubsw`
//! multiplies the weight bytes (unsigned) with 8 activation bytes broadcast
//! into i16 pairs, a sub-block's pairs are summed in i16 where they cannot
//! overflow and scaled by `vpmaddwd` with the sub-block's scale (an i16 pair
//! per lane), and per super-block the two lanes of each row are added and
//! the float step runs once for the 8 rows. The integers are exact and the
//! float steps those of `super::dot_ref`, so results equal the reference
//! (and the AVX-512 kernels) bit for bit, for any number of tokens.
//!
//! The 32-element block types have theirs in `avx2_32`.

use super::driver::{gemm, gemm_fn, prefetch_l2, store8, Kernel};
use super::layout::*;
use super::meta::{Iq4Xs, Meta, Q2K, Q3K, Q4K, Q5K, Q6K};
use super::{FastKernels, TILE_ROWS};
use crate::gguf::GgmlType;
use crate::quant::blocks::{BlockQ8K, KVALUES_IQ4NL};
use std::arch::x86_64::*;

/// The fast kernel of `ty` on AVX2 (K-quants and IQ4_XS).
pub fn kernels(ty: GgmlType) -> Option<FastKernels> {
    type Pack = fn(&[u8], usize, usize) -> crate::quant::AlignedBytes;
    let (geometry, pack, gemm): (Geometry, Pack, super::FastGemmFn) = match ty {
        GgmlType::Q4_K => (Q4K_GEOMETRY, pack_q4k, gemm_q4k),
        GgmlType::Q6_K => (Q6K_GEOMETRY, pack_q6k, gemm_q6k),
        GgmlType::Q5_K => (Q5K_GEOMETRY, pack_q5k::<Planes>, gemm_q5k),
        GgmlType::Q2_K => (Q2K_GEOMETRY, pack_q2k, gemm_q2k),
        GgmlType::Q3_K => (Q3K_GEOMETRY, pack_q3k::<Masks>, gemm_q3k),
        GgmlType::IQ4_XS => (IQ4XS_GEOMETRY, pack_iq4xs, gemm_iq4xs),
        _ => return None,
    };
    Some(FastKernels { ty, rows: TILE_ROWS, geometry, pack, gemm })
}

/// A 64-byte plane as its two halves: rows 0-3, rows 4-7.
pub(super) type Halves = [__m256i; 2];

/// One format's tile super-block on 256-bit vectors (the AVX-512 module's
/// `Tile`, halved; its meta: `Meta`).
trait Tile: Meta {
    /// Weights hold q + 2^OFFSET_SHIFT: take 2^OFFSET_SHIFT * sum_g sc[g] *
    /// bsum[g] off.
    const OFFSET_SHIFT: u32;
    /// Signed weight bytes (IQ4_XS's grid, up to 127 in magnitude): each
    /// product is taken as |a| * (w * sign a) and scaled alone (two sums
    /// could overflow i16). Else the weights are unsigned and small enough
    /// that a sub-block's products add up in i16.
    const SIGNED: bool;
    /// Unsigned weights small enough that a sub-block's i16 sums of the two
    /// halves still fit i16 when added pairwise (`vphaddw`): one `vpmaddwd`
    /// scales both halves (bound: 2 * N * 2 * max weight * 127 < 2^15).
    const FOLD: bool = false;
    /// Groups 2k and 2k+1 (elements 16k..16k+16) of the 8 rows as bytes.
    unsafe fn plane(p: *const u8, k: usize) -> (Halves, Halves);
    /// Sub-block s's scales of the 8 rows as i16 (row r at lane r).
    unsafe fn scales(p: *const u8, s: usize) -> __m128i;
}

/// 64 aligned bytes of weights as two halves, loaded in program order
/// (volatile, as `avx512::load64`; on Zen 4 under `RLLAMA_NO_AVX512=1` no
/// change measured, Q8_0 or Q6_K, but the compiler's order is not left to
/// chance).
#[inline(always)]
pub(super) unsafe fn load_halves(p: *const u8) -> Halves {
    [std::ptr::read_volatile(p as *const __m256i), std::ptr::read_volatile(p.add(32) as *const __m256i)]
}

#[inline(always)]
pub(super) unsafe fn nibbles(v: Halves) -> (Halves, Halves) {
    // no closures: through `map` the intrinsics were not always inlined
    let m = _mm256_set1_epi8(0x0F);
    let hi = |x: __m256i| _mm256_and_si256(_mm256_srli_epi16(x, 4), m);
    ([_mm256_and_si256(v[0], m), _mm256_and_si256(v[1], m)], [hi(v[0]), hi(v[1])])
}

/// 8 bytes (row r's at r) as i16.
#[inline(always)]
unsafe fn bytes16<const SIGNED: bool>(a: *const u8) -> __m128i {
    let v = _mm_loadl_epi64(a as *const __m128i);
    if SIGNED {
        _mm_cvtepi8_epi16(v)
    } else {
        _mm_cvtepu8_epi16(v)
    }
}

/// 64 mask bits (bit 8r+e: byte 8r+e of a plane) as 0xFF / 0 bytes, by halves.
#[inline(always)]
unsafe fn mask_bytes(p: *const u8) -> Halves {
    // byte i of a half takes mask byte i / 8 and tests bit i % 8
    let spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    std::array::from_fn(|h| {
        let m = _mm256_set1_epi32(std::ptr::read_unaligned(p.add(4 * h) as *const i32));
        // shuffle_epi8 indexes within 128-bit lanes: the high lane's bytes
        // 16..32 read mask bytes 2 and 3 of its own copy
        let sel = _mm256_and_si256(_mm256_shuffle_epi8(m, spread), bits);
        _mm256_cmpeq_epi8(sel, bits)
    })
}

/// `v | bit` where the mask bytes at `mask` are set (`HighBits::Masks`).
#[inline(always)]
unsafe fn with_mask_bit(v: Halves, mask: *const u8, bit: i8) -> Halves {
    let m = mask_bytes(mask);
    let b = _mm256_set1_epi8(bit);
    [_mm256_or_si256(v[0], _mm256_and_si256(m[0], b)), _mm256_or_si256(v[1], _mm256_and_si256(m[1], b))]
}

/// Bit `j % 8` of each byte of `x` moved to bit 4, the rest cleared. 16-bit
/// shifts: the bit stays in its byte either way. The `match` folds away
/// where the loop over j is unrolled; where it is not it costs branches
/// (shifts by counts in registers were slower still). A function, not a
/// closure: closures do not inherit target features, and one compiled to
/// calls made a kernel 6x slower.
#[inline(always)]
pub(super) unsafe fn fifth_at4(x: __m256i, j: usize) -> __m256i {
    let x = match j % 8 {
        0 => _mm256_slli_epi16(x, 4),
        1 => _mm256_slli_epi16(x, 3),
        2 => _mm256_slli_epi16(x, 2),
        3 => _mm256_slli_epi16(x, 1),
        4 => x,
        5 => _mm256_srli_epi16(x, 1),
        6 => _mm256_srli_epi16(x, 2),
        _ => _mm256_srli_epi16(x, 3),
    };
    _mm256_and_si256(x, _mm256_set1_epi8(16))
}

/// `v` + 16 where vector j's fifth bit is set in the one-bit planes at
/// `planes` (`HighBits::Planes`: bit j % 8 of the 64 bytes at planes + 64 (j / 8)).
#[inline(always)]
pub(super) unsafe fn with_fifth_bit(v: Halves, planes: *const u8, j: usize) -> Halves {
    let h = load_halves(planes.add(64 * (j / 8)));
    [_mm256_or_si256(v[0], fifth_at4(h[0], j)), _mm256_or_si256(v[1], fifth_at4(h[1], j))]
}

impl Tile for Q4K {
    const OFFSET_SHIFT: u32 = 0;
    const SIGNED: bool = false;
    // 2 halves * 4 products of 2 * 15 * 127
    const FOLD: bool = true;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (Halves, Halves) {
        nibbles(load_halves(p.add(64 * k)))
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: usize) -> __m128i {
        bytes16::<false>(p.add(Q4K_SCALES + 8 * s))
    }
}

impl Tile for Q5K {
    const OFFSET_SHIFT: u32 = 0;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (Halves, Halves) {
        let (lo, hi) = Q4K::plane(p, k);
        let h = p.add(Q5K_HIGH);
        (with_fifth_bit(lo, h, 2 * k), with_fifth_bit(hi, h, 2 * k + 1))
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: usize) -> __m128i {
        Q4K::scales(p, s)
    }
}

/// Groups 2k and 2k+1 from the 2-bit planes (Q2_K, Q3_K).
#[inline(always)]
unsafe fn plane2(p: *const u8, k: usize) -> (Halves, Halves) {
    let v = load_halves(p.add(64 * (k / 2)));
    let v = if k % 2 == 1 { v.map(|x| _mm256_srli_epi16(x, 4)) } else { v };
    let m = _mm256_set1_epi8(3);
    (v.map(|x| _mm256_and_si256(x, m)), v.map(|x| _mm256_and_si256(_mm256_srli_epi16(x, 2), m)))
}

impl Tile for Q2K {
    const OFFSET_SHIFT: u32 = 0;
    const SIGNED: bool = false;
    const FOLD: bool = true;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (Halves, Halves) {
        plane2(p, k)
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: usize) -> __m128i {
        // low nibble of ggml's scale byte
        _mm_and_si128(bytes16::<false>(p.add(K16_SCALES + 8 * s)), _mm_set1_epi16(0xF))
    }
}

impl Tile for Q3K {
    const OFFSET_SHIFT: u32 = 2;
    const SIGNED: bool = false;
    const FOLD: bool = true;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (Halves, Halves) {
        let (lo, hi) = plane2(p, k);
        (with_mask_bit(lo, p.add(Q3K_HIGH + 16 * k), 4), with_mask_bit(hi, p.add(Q3K_HIGH + 16 * k + 8), 4))
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: usize) -> __m128i {
        bytes16::<true>(p.add(K16_SCALES + 8 * s))
    }
}

impl Tile for Iq4Xs {
    const OFFSET_SHIFT: u32 = 0;
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (Halves, Halves) {
        // grid index -> grid value (signed)
        let lut = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
        let (lo, hi) = nibbles(load_halves(p.add(64 * k)));
        (lo.map(|x| _mm256_shuffle_epi8(lut, x)), hi.map(|x| _mm256_shuffle_epi8(lut, x)))
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: usize) -> __m128i {
        bytes16::<true>(p.add(IQ4XS_SCALES + 8 * s))
    }
}

impl Tile for Q6K {
    const OFFSET_SHIFT: u32 = 5;
    const SIGNED: bool = false;
    #[inline(always)]
    unsafe fn plane(p: *const u8, k: usize) -> (Halves, Halves) {
        let (lo, hi) = nibbles(load_halves(p.add(64 * k)));
        // bits 4(k%2).. of the high plane: two bits for each group
        let h = load_halves(p.add(Q6K_HIGH + 64 * (k / 2)));
        let h = if k % 2 == 1 { h.map(|x| _mm256_srli_epi16(x, 4)) } else { h };
        let m = _mm256_set1_epi8(0x30);
        let (h4, h2) = (h.map(|x| _mm256_and_si256(_mm256_slli_epi16(x, 4), m)), h.map(|x| _mm256_and_si256(_mm256_slli_epi16(x, 2), m)));
        ([_mm256_or_si256(lo[0], h4[0]), _mm256_or_si256(lo[1], h4[1])], [_mm256_or_si256(hi[0], h2[0]), _mm256_or_si256(hi[1], h2[1])])
    }
    #[inline(always)]
    unsafe fn scales(p: *const u8, s: usize) -> __m128i {
        bytes16::<true>(p.add(Q6K_SCALES + 8 * s))
    }
}

/// The 8 rows' scales (i16, row r at lane r) as `vpmaddwd` operands for each
/// half: lanes 2r' and 2r'+1 hold the pair (sc, sc) of row 4h + r'.
#[inline(always)]
unsafe fn scale_pairs(sc: __m128i) -> Halves {
    let dup = _mm256_castsi128_si256(_mm_unpacklo_epi16(sc, sc));
    let dup_hi = _mm256_castsi128_si256(_mm_unpackhi_epi16(sc, sc));
    let spread = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
    [_mm256_permutevar8x32_epi32(dup, spread), _mm256_permutevar8x32_epi32(dup_hi, spread)]
}

/// The scale pairs for `folded` sums: lanes 2i, 2i+1 of the 128-bit half
/// k hold row (2k + i) for i < 2, row (4 + 2k + i - 2) for i >= 2.
#[inline(always)]
unsafe fn fold_pairs(sc: __m128i) -> __m256i {
    let (lo, hi) = (_mm_unpacklo_epi16(sc, sc), _mm_unpackhi_epi16(sc, sc));
    _mm256_set_m128i(_mm_unpackhi_epi64(lo, hi), _mm_unpacklo_epi64(lo, hi))
}

/// Both halves' byte products summed in i16 per half, then adjacent lanes
/// of the two added (`vphaddw`): rows 0 0 1 1 4 4 5 5 | 2 2 3 3 6 6 7 7.
#[inline(always)]
unsafe fn folded<const N: usize>(w: [Halves; N], a: [__m256i; N]) -> __m256i {
    let half = |h: usize| {
        let mut x = _mm256_maddubs_epi16(w[0][h], a[0]);
        for i in 1..N {
            x = _mm256_add_epi16(x, _mm256_maddubs_epi16(w[i][h], a[i]));
        }
        x
    };
    _mm256_hadd_epi16(half(0), half(1))
}

#[inline(always)]
unsafe fn bcast8(p: *const i8) -> __m256i {
    _mm256_set1_epi64x(std::ptr::read_unaligned(p as *const i64))
}

/// sum_i w[i] . a[i] (byte products per lane) times the scale pairs `sc`,
/// as i32 lanes.
#[inline(always)]
unsafe fn scaled<K: Tile, const N: usize>(w: [__m256i; N], a: [__m256i; N], sc: __m256i) -> __m256i {
    if K::SIGNED {
        let mut s = _mm256_setzero_si256();
        for i in 0..N {
            let x = _mm256_maddubs_epi16(_mm256_abs_epi8(a[i]), _mm256_sign_epi8(w[i], a[i]));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(x, sc));
        }
        s
    } else {
        let mut x = _mm256_maddubs_epi16(w[0], a[0]);
        for i in 1..N {
            x = _mm256_add_epi16(x, _mm256_maddubs_epi16(w[i], a[i]));
        }
        _mm256_madd_epi16(x, sc)
    }
}

/// Tile super-blocks 0..nb of one tile against T tokens: the 8 rows'
/// results per token (the AVX-512 module's `tile`, on halves).
#[inline(always)]
unsafe fn tile<K: Tile, const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[*const BlockQ8K; T]) -> [__m256; T] {
    let mut acc = [_mm256_setzero_ps(); T];
    for b in 0..nb {
        let mt = w.add(K::G.meta_at(b));
        let s = sb_sums::<K, T>(w, end, nb, acts, b);
        let d = K::d(mt);
        let dmin = K::dmin(mt);
        for t in 0..T {
            let a = &*acts[t].add(b);
            let mut st = s[t];
            if K::OFFSET_SHIFT > 0 {
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

/// Super-block b of one tile against T tokens: the 8 rows' scaled integer
/// sums sum_s sc[s] * (q . a over sub-block s) per token (row r at lane r).
#[inline(always)]
unsafe fn sb_sums<K: Tile, const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[*const BlockQ8K; T], b: usize) -> [__m256i; T] {
    let p = sb_partials::<K, T, 1>(w, end, nb, acts, b);
    std::array::from_fn(|t| p[t][0])
}

/// `sb_sums` in P partial sums (P = 1, or 4 for the sums per 64 elements).
#[inline(always)]
unsafe fn sb_partials<K: Tile, const T: usize, const P: usize>(
    w: *const u8,
    end: *const u8,
    nb: usize,
    acts: &[*const BlockQ8K; T],
    b: usize,
) -> [[__m256i; P]; T] {
    let zero = _mm256_setzero_si256();
    let p = w.add(K::G.values_at(nb, b));
    let mt = w.add(K::G.meta_at(b));
    prefetch_l2(w, end, b, K::G, T);
    let mut s = [[[zero; 2]; P]; T];
    if K::SUB16 {
        // planes by pairs, each of a pair inlined on its own: which half of
        // a byte of the 2-bit planes (`k % 2`) is then known when compiling
        // (a loop over k kept a branch and a shift per plane)
        for m in 0..8 {
            sub16_plane::<K, T, P>(p, mt, acts, b, 2 * m, &mut s);
            sub16_plane::<K, T, P>(p, mt, acts, b, 2 * m + 1, &mut s);
        }
    } else {
        for j in 0..8 {
            let (g0, g1) = K::plane(p, 2 * j);
            let (g2, g3) = K::plane(p, 2 * j + 1);
            let sc = scale_pairs(K::scales(mt, j));
            let scf = fold_pairs(K::scales(mt, j));
            for (t, sp) in s.iter_mut().enumerate() {
                let st = &mut sp[j * P / 8];
                let q = (*acts[t].add(b)).qs.as_ptr().add(32 * j);
                let a = [bcast8(q), bcast8(q.add(8)), bcast8(q.add(16)), bcast8(q.add(24))];
                if K::FOLD {
                    st[0] = _mm256_add_epi32(st[0], _mm256_madd_epi16(folded([g0, g1, g2, g3], a), scf));
                    continue;
                }
                for h in 0..2 {
                    st[h] = _mm256_add_epi32(st[h], scaled::<K, 4>([g0[h], g1[h], g2[h], g3[h]], a, sc[h]));
                }
            }
        }
    }
    // folded and hadd sums hold rows 0 1 4 5 | 2 3 6 7
    let order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
    let mut out = [[zero; P]; T];
    for t in 0..T {
        for i in 0..P {
            let rows = if K::FOLD { s[t][i][0] } else { _mm256_hadd_epi32(s[t][i][0], s[t][i][1]) };
            out[t][i] = _mm256_permutevar8x32_epi32(rows, order);
        }
    }
    out
}

/// Plane k (16 elements, one scale) of a 16-element-scale type's
/// super-block b against T tokens, into `sb_partials`' sums.
#[inline(always)]
unsafe fn sub16_plane<K: Tile, const T: usize, const P: usize>(
    p: *const u8,
    mt: *const u8,
    acts: &[*const BlockQ8K; T],
    b: usize,
    k: usize,
    s: &mut [[Halves; P]; T],
) {
    let (g0, g1) = K::plane(p, k);
    let sc = scale_pairs(K::scales(mt, k));
    let scf = fold_pairs(K::scales(mt, k));
    for (t, sp) in s.iter_mut().enumerate() {
        let st = &mut sp[k * P / 16];
        let q = (*acts[t].add(b)).qs.as_ptr().add(16 * k);
        let a = [bcast8(q), bcast8(q.add(8))];
        if K::FOLD {
            st[0] = _mm256_add_epi32(st[0], _mm256_madd_epi16(folded([g0, g1], a), scf));
            continue;
        }
        for h in 0..2 {
            st[h] = _mm256_add_epi32(st[h], scaled::<K, 2>([g0[h], g1[h]], a, sc[h]));
        }
    }
}

/// sum_g c[g] * bsum16[g] per row (lane r), c = `K::pairs` (16 per block).
#[inline(always)]
unsafe fn coeff_sums16<K: Tile>(mt: *const u8, a: &BlockQ8K) -> __m256i {
    let mut v = _mm256_setzero_si256();
    for j in 0..8 {
        let bs = _mm256_set1_epi32(std::ptr::read_unaligned(a.bsums.as_ptr().add(2 * j) as *const i32));
        v = _mm256_add_epi32(v, _mm256_madd_epi16(K::pairs(mt, j), bs));
    }
    v
}

/// sum_s c[s] * bsum32[s] per row (lane r), c = `K::pairs` (8 per block).
#[inline(always)]
unsafe fn coeff_sums32<K: Tile>(mt: *const u8, a: &BlockQ8K) -> __m256i {
    sum_parts(coeff_parts32::<K>(mt, a))
}

#[inline(always)]
unsafe fn sum_parts(p: [__m256i; 4]) -> __m256i {
    _mm256_add_epi32(_mm256_add_epi32(p[0], p[1]), _mm256_add_epi32(p[2], p[3]))
}

/// `coeff_sums32` per 64 elements: part j = c[2j] * bsum32[2j] + c[2j+1] * bsum32[2j+1].
#[inline(always)]
unsafe fn coeff_parts32<K: Tile>(mt: *const u8, a: &BlockQ8K) -> [__m256i; 4] {
    // sums of 32: adjacent pairs of the sums of 16, as i16 pairs (2j, 2j+1)
    let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
    let b32 = _mm256_madd_epi16(bs, _mm256_set1_epi16(1));
    let pk = _mm256_packs_epi32(b32, b32);
    let mut v = [_mm256_setzero_si256(); 4];
    for (j, idx) in [0, 1, 4, 5].into_iter().enumerate() {
        let bj = _mm256_permutevar8x32_epi32(pk, _mm256_set1_epi32(idx));
        v[j] = _mm256_madd_epi16(K::pairs(mt, j), bj);
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

/// Exact mode's Q4_K on the tiles, in the rounding llama.cpp's repacked
/// kernels give each token (`quant::avx2_kgemm`): a batch's first n - n % 4
/// tokens as its GEMM (`Q4Exact<4>`: per row and super-block, for each 64
/// elements k in order, acc += isum_k * (d * a.d) and acc_min += msum_k *
/// (dmin * a.d)), the rest as its GEMV (`Q4Exact<1>`: the same over the
/// whole super-block), each step fused; the result acc - acc_min. The integer
/// sums are exact in any layout, so the tiles' sums with these float steps
/// give ggml's bits, 8 rows at a time (the per-row kernel unpacked every
/// super-block's scales per row).
struct Q4Exact<const P: usize>;
impl<const P: usize> Kernel for Q4Exact<P> {
    type Act = *const BlockQ8K;
    type Acc = [__m256; 2];
    const ROWS: usize = TILE_ROWS;
    const G: Geometry = Q4K::G;
    #[inline(always)]
    unsafe fn act(a: &[u8], arb: usize, n: usize, nb: usize, t: usize) -> *const BlockQ8K {
        Super::<Q4K>::act(a, arb, n, nb, t)
    }
    /// P float steps per super-block: 4 (per 64 elements, the GEMM) or 1 (the GEMV).
    #[inline(always)]
    unsafe fn tile<const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[*const BlockQ8K; T]) -> [[__m256; 2]; T] {
        let mut acc = [[_mm256_setzero_ps(); 2]; T];
        for b in 0..nb {
            let mt = w.add(Q4K::G.meta_at(b));
            let (d, dmin) = (Q4K::d(mt), Q4K::dmin(mt));
            let s = sb_partials::<Q4K, T, P>(w, end, nb, acts, b);
            for t in 0..T {
                let a = &*acts[t].add(b);
                let ad = _mm256_set1_ps(a.d);
                let (dd, dm) = (_mm256_mul_ps(d, ad), _mm256_mul_ps(dmin, ad));
                let parts = coeff_parts32::<Q4K>(mt, a);
                let m: [__m256i; P] = if P == 1 { [sum_parts(parts); P] } else { std::array::from_fn(|k| parts[k]) };
                for k in 0..P {
                    acc[t][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t][k]), dd, acc[t][0]);
                    acc[t][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(m[k]), dm, acc[t][1]);
                }
            }
        }
        acc
    }
    #[inline(always)]
    unsafe fn store(v: [__m256; 2], o: *mut f32, valid: usize) {
        store8(_mm256_sub_ps(v[0], v[1]), o, valid)
    }
}

/// Exact mode's Q4_K tiles (see `Q4Exact`).
pub fn q4k_exact() -> super::ExactTiles {
    let gemv = FastKernels { ty: GgmlType::Q4_K, rows: TILE_ROWS, geometry: Q4K_GEOMETRY, pack: pack_q4k, gemm: gemm_q4k_gemv };
    super::ExactTiles { gemv, groups4: gemm_q4k_per64 }
}

gemm_fn!(AVX2, gemm_q4k_gemv, Q4Exact<1>);
gemm_fn!(AVX2, gemm_q4k_per64, Q4Exact<4>);
gemm_fn!(AVX2, gemm_q2k, Super<Q2K>);
gemm_fn!(AVX2, gemm_q3k, Super<Q3K>);
gemm_fn!(AVX2, gemm_q4k, Super<Q4K>);
gemm_fn!(AVX2, gemm_q5k, Super<Q5K>);
gemm_fn!(AVX2, gemm_q6k, Super<Q6K>);
gemm_fn!(AVX2, gemm_iq4xs, Super<Iq4Xs>);
