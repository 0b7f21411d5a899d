//! Exact mode's kernels of the 32-element block types on AVX2: ggml's
//! `vec_dot` rounding, bit for bit, on the fast tiles of `layout32`.
//!
//! ggml's AVX2 `vec_dot` keeps 8 float lanes per row: lane k accumulates,
//! block by block, fma(d_w * d_a, S_k, acc_k), S_k the exact integer sum of
//! the products of elements 4k..4k+4; at the end the lanes are added in
//! `hsum_float_8`'s order ((0+4) + (2+6)) + ((1+5) + (3+7)), and Q4_1/Q5_1
//! add their min terms' chain fma(m_w, s_a, summs). A tile's vector j holds
//! exactly lane j of 16 rows (dword r = row r), so each half of it (8 rows)
//! gives the 8 rows' S_j with one `vpmaddubsw` and one `vpmaddwd`, and one
//! conversion and one FMA advance lane j of 8 rows: what ggml's kernel
//! spends per row, here per 8 rows, with the block's decode and scales
//! shared by them. Signed weights (offset types, Q8_0, IQ4_NL) go through
//! ggml's sign trick, unsigned ones (Q4_1, Q5_1) straight in, as ggml's
//! kernels do; the integers are exact either way.
//!
//! Each token and half runs alone over the tile's blocks (8 lane
//! accumulators fill half the registers); the tile stays in L1/L2 for the
//! second half and the next tokens.

use super::acts32::ActPtrs;
use super::avx2::fifth_at4;
use super::driver::{gemm, gemm_fn, prefetch_l2, store16, Kernel};
use super::layout::{Geometry, Planes};
use super::layout32::*;
use crate::quant::blocks::KVALUES_IQ4NL;
use std::arch::x86_64::*;

/// One half (8 rows) of a tile's 64-byte vector.
#[derive(Clone, Copy)]
struct Half(__m256i);

impl Plane32 for Half {
    type Bits = Planes;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        Half(_mm256_load_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn nibbles(self) -> (Self, Self) {
        let m = _mm256_set1_epi8(0x0F);
        (Half(_mm256_and_si256(self.0, m)), Half(_mm256_and_si256(_mm256_srli_epi16(self.0, 4), m)))
    }
    #[inline(always)]
    unsafe fn iq4(self) -> Self {
        // the grid values themselves (signed)
        let lut = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
        Half(_mm256_shuffle_epi8(lut, self.0))
    }
    #[inline(always)]
    unsafe fn add_high(self, high: *const u8, j: usize) -> Self {
        let h = _mm256_load_si256(high.add(64 * (j / 8)) as *const __m256i);
        Half(_mm256_or_si256(self.0, fifth_at4(h, j)))
    }
}

/// The kernel of one format.
struct Lanes<F>(std::marker::PhantomData<F>);
impl<F: Format32> Kernel for Lanes<F> {
    type Act = ActPtrs;
    type Acc = [__m256; 2];
    const ROWS: usize = TILE32_ROWS;
    const G: Geometry = F::G;
    #[inline(always)]
    unsafe fn act(a: &[u8], arb: usize, n: usize, nb: usize, t: usize) -> ActPtrs {
        ActPtrs::of(a, arb, n, nb, t, F::ACT)
    }
    #[inline(always)]
    unsafe fn tile<const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[ActPtrs; T]) -> [[__m256; 2]; T] {
        let mut out = [[_mm256_setzero_ps(); 2]; T];
        for (t, (o, a)) in out.iter_mut().zip(acts).enumerate() {
            // the first token's pass streams the tile for the call; the
            // others find it in cache
            let tokens = if t == 0 { T } else { 0 };
            for (h, oh) in o.iter_mut().enumerate() {
                *oh = half::<F>(w, end, nb, a, h, tokens);
            }
        }
        out
    }
    #[inline(always)]
    unsafe fn store(v: [__m256; 2], o: *mut f32, valid: usize) {
        store16(v, o, valid)
    }
}

/// Lane j's integer sums S_j of the 8 rows in `w` (unsigned bytes as the
/// format stores them, or the IQ4_NL grid values) with the activation
/// dword `a` broadcast.
#[inline(always)]
unsafe fn lane_sums<F: Format32>(w: __m256i, a: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let pairs = match (F::VALUES, F::SHIFT) {
        // a min instead of an offset: unsigned weights straight in
        (_, None) => _mm256_maddubs_epi16(w, a),
        (values, Some(shift)) => {
            let s = match values {
                Values::Bytes => _mm256_xor_si256(w, _mm256_set1_epi8(-128)),
                Values::Iq4 => w,
                _ => _mm256_sub_epi8(w, _mm256_set1_epi8(1 << shift)),
            };
            _mm256_maddubs_epi16(_mm256_sign_epi8(s, s), _mm256_sign_epi8(a, s))
        }
    };
    _mm256_madd_epi16(pairs, ones)
}

/// Rows 8h..8h+8 of the tile at `w` (`nb` blocks) against one token; the
/// first half prefetches as a call of `tokens` tokens (`prefetch_l2`).
#[inline(always)]
unsafe fn half<F: Format32>(w: *const u8, end: *const u8, nb: usize, act: &ActPtrs, h: usize, tokens: usize) -> __m256 {
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut mins = _mm256_setzero_ps();
    for b in 0..nb {
        if h == 0 {
            prefetch_l2(w, end, b, F::G, tokens);
        }
        let mt = w.add(F::G.meta_at(b));
        let q = act.qs.add(b * F::ACT.0);
        let side = *act.side.add(b);
        let d = _mm256_mul_ps(f16x8(mt.add(B32_D + 16 * h)), _mm256_set1_ps(side.d));
        let v: [Half; 8] = planes::<F, Half>(w.add(F::G.values_at(nb, b) + 32 * h));
        for (j, (vj, acc)) in v.iter().zip(acc.iter_mut()).enumerate() {
            let a = _mm256_set1_epi32(std::ptr::read_unaligned(q.add(4 * j) as *const i32));
            *acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(lane_sums::<F>(vj.0, a)), *acc);
        }
        if F::SHIFT.is_none() {
            mins = _mm256_fmadd_ps(f16x8(mt.add(B32_M + 16 * h)), _mm256_set1_ps(side.ds), mins);
        }
    }
    let (a, c) = (_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    let (b, d) = (_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    let s = _mm256_add_ps(_mm256_add_ps(a, c), _mm256_add_ps(b, d));
    if F::SHIFT.is_none() {
        _mm256_add_ps(s, mins)
    } else {
        s
    }
}

/// 8 f16 (16-byte aligned) as f32. A function, not a closure: closures do
/// not inherit the kernels' target features.
#[inline(always)]
unsafe fn f16x8(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_load_si128(p as *const __m128i))
}

kernels32!(AVX2, Lanes, Half);
