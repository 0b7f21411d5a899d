//! The fast kernels of the 32-element block types on AVX2 machines without
//! AVX-512 VNNI: `layout32`'s 16-row tiles, each 64-byte vector read as two
//! 256-bit halves (rows 0-7, rows 8-15; dword r of a half = row 8h + r,
//! 4 elements). Per block, token and half, the rows' integer sums S:
//! - weights of up to 31 (Q4_0, Q4_1, Q5_0, Q5_1): `vpmaddubsw` of the
//!   unsigned weight bytes with one activation dword broadcast, the i16
//!   pairs of 8 vectors (5-bit: of 4) added where they cannot overflow (even
//!   for activations of -128), then `vpmaddwd` by ones into the row's dword;
//! - weights of up to 255 (Q8_0 + 128, the IQ4_NL grid + 128, which would
//!   overflow `vpmaddubsw`'s pairs): signed bytes s instead (Q8_0's u -
//!   128; IQ4_NL's grid values straight from the lookup, 15% off a token's
//!   4864 x 896 matmul), so no offset to correct; per block |s| once for
//!   all tokens; per token `vpsignb` gives a * sign(s), `vpmaddubsw` of |s| with it pairs
//!   of at most 2 * 128 * 127 (activations lie in [-127, 127]: their scale
//!   is amax / 127), `vpmaddwd` by ones into the row's dword. Per block,
//!   token and half: 8 sign, 8 + 8 multiplies, 8 adds; the earlier i16
//!   path (even and odd bytes by `vpmaddwd`) spent 12 shifts and 16 adds
//!   more for the same 16 multiplies: on Zen 1 (one vector multiplier, a
//!   256-bit multiply every 2 cycles) Qwen 0.5B's 896 x 4864 Q8_0 matrix
//!   against 64 tokens took 12.3 ms, now 9.5 (~92 cycles per block, token
//!   and 16 rows, against the multiplies' floor of 64).
//!
//! Elsewhere the offset is taken off through the activation block's sum as
//! on AVX-512; the integer sums are exact and the float step is the same
//! lane by lane, so results equal `super::dot_ref32` (and the AVX-512
//! kernels) bit for bit, in any batch.

use super::acts32::ActPtrs;
use super::avx2::{load_halves, nibbles, with_fifth_bit, Halves};
use super::driver::{gemm, gemm_fn, prefetch_l2, store16, Kernel};
use super::layout::{Geometry, Planes};
use super::layout32::*;
use crate::quant::blocks::KVALUES_IQ4NL;
use std::arch::x86_64::*;

impl Plane32 for Halves {
    type Bits = Planes;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        load_halves(p)
    }
    #[inline(always)]
    unsafe fn nibbles(self) -> (Self, Self) {
        nibbles(self)
    }
    #[inline(always)]
    unsafe fn iq4(self) -> Self {
        // the grid values themselves (signed): the wide path wants s, not u
        let lut = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i));
        [_mm256_shuffle_epi8(lut, self[0]), _mm256_shuffle_epi8(lut, self[1])]
    }
    #[inline(always)]
    unsafe fn add_high(self, high: *const u8, j: usize) -> Self {
        with_fifth_bit(self, high, j)
    }
}

/// Whether the weights reach 255 (the i16 path), else at most 31.
const fn wide<F: Format32>() -> bool {
    matches!(F::VALUES, Values::Bytes | Values::Iq4)
}

/// The kernel of one format.
struct Small<F>(std::marker::PhantomData<F>);
impl<F: Format32> Kernel for Small<F> {
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
        tile::<F, T>(w, end, nb, acts)
    }
    #[inline(always)]
    unsafe fn store(v: [__m256; 2], o: *mut f32, valid: usize) {
        store16(v, o, valid)
    }
}

/// Blocks 0..nb of one tile against T tokens: the 16 rows' results per
/// token, by halves.
#[inline(always)]
unsafe fn tile<F: Format32, const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[ActPtrs; T]) -> [[__m256; 2]; T] {
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    for b in 0..nb {
        let p = w.add(F::G.values_at(nb, b));
        let mt = w.add(F::G.meta_at(b));
        prefetch_l2(w, end, b, F::G, T);
        let half = |h: usize, at: usize| _mm256_cvtph_ps(_mm_loadu_si128(mt.add(at + 16 * h) as *const __m128i));
        let dw = [half(0, B32_D), half(1, B32_D)];
        // the min per row (types without an offset)
        let mw = if F::SHIFT.is_none() { [half(0, B32_M), half(1, B32_M)] } else { dw };
        let x = if wide::<F>() { wide_sums::<F, T>(p, acts, b) } else { narrow_sums::<F, T>(p, acts, b) };
        for t in 0..T {
            let side = *acts[t].side.add(b);
            for h in 0..2 {
                let s = _mm256_cvtepi32_ps(x[t][h]);
                acc[t][h] = _mm256_fmadd_ps(_mm256_mul_ps(dw[h], _mm256_set1_ps(side.d)), s, acc[t][h]);
                if F::SHIFT.is_none() {
                    acc[t][h] = _mm256_fmadd_ps(mw[h], _mm256_set1_ps(side.ds), acc[t][h]);
                }
            }
        }
    }
    acc
}

/// Activation dword j (elements 4j..4j+3) of block b, in every lane.
#[inline(always)]
unsafe fn dword<F: Format32>(a: &ActPtrs, b: usize, j: usize) -> __m256i {
    _mm256_set1_epi32(std::ptr::read_unaligned(a.qs.add(b * F::ACT.0 + 4 * j) as *const i32))
}

/// The integer sums of one block (weights of up to 31) against T tokens:
/// the block's 8 planes decoded once, then per token its 8 activation
/// dwords against them, i16 pairs of 8 vectors (5-bit: of 4) added where
/// they cannot overflow (even for activations of -128: at most 2 * 31 *
/// 128 or 2 * 15 * 128 a pair). Taking the planes a vector at a time with
/// every token inner, as `wide_sums` does, was slower here: two tokens of
/// Qwen 0.5B's 4864 x 896 Q5_0 matrix in cache took 109 us against 92 (one
/// token 55 against 58), the 2T i16 and 2T i32 sums live at once.
#[inline(always)]
unsafe fn narrow_sums<F: Format32, const T: usize>(p: *const u8, acts: &[ActPtrs; T], b: usize) -> [[__m256i; 2]; T] {
    let ones = _mm256_set1_epi16(1);
    // (plain loops: through `map`/`from_fn` closures the intrinsics were
    // not always inlined)
    let v: [Halves; 8] = planes::<F, _>(p);
    let mut x = [[_mm256_setzero_si256(); 2]; T];
    for (t, xt) in x.iter_mut().enumerate() {
        let side = *acts[t].side.add(b);
        let mut a = [_mm256_setzero_si256(); 8];
        for (j, aj) in a.iter_mut().enumerate() {
            *aj = dword::<F>(&acts[t], b, j);
        }
        *xt = [_mm256_set1_epi32(F::SHIFT.map_or(0, |s| -(side.sum << s))); 2];
        let per_sum = if F::VALUES == Values::Five { 4 } else { 8 };
        for (h, xh) in xt.iter_mut().enumerate() {
            for j0 in (0..8).step_by(per_sum) {
                let mut y = _mm256_maddubs_epi16(v[j0][h], a[j0]);
                for j in j0 + 1..j0 + per_sum {
                    y = _mm256_add_epi16(y, _mm256_maddubs_epi16(v[j][h], a[j]));
                }
                *xh = _mm256_add_epi32(*xh, _mm256_madd_epi16(y, ones));
            }
        }
    }
    x
}

/// The integer sums of one block (weights of up to 255: Q8_0, IQ4_NL)
/// against T tokens, a plane at a time: its signed weights s and |s|
/// (4 registers), then for every token `vpsignb` gives a * sign(s) and
/// `vpmaddubsw` of |s| with it pairs of at most 2 * 128 * 127, `vpmaddwd`
/// by ones into the row's dword. Decoding all 8 planes first and running
/// the tokens outside (as `narrow_sums`) kept 48 registers of s and |s|
/// live, spilled and reloaded for every token: Qwen 0.5B's 4864 x 896 Q8_0
/// matrix in cache (`cargo bench --bench matmul_min`, two rounds
/// interleaved) took 63 / 99 / 146 / 192 / 350 us for 1 / 2 / 3 / 4 / 8
/// tokens, now 57 / 98 / 114 / 147 / 292 us.
#[inline(always)]
unsafe fn wide_sums<F: Format32, const T: usize>(p: *const u8, acts: &[ActPtrs; T], b: usize) -> [[__m256i; 2]; T] {
    let ones = _mm256_set1_epi16(1);
    let offset = _mm256_set1_epi8(-128);
    let mut x = [[_mm256_setzero_si256(); 2]; T];
    for k in 0..4 {
        // planes k and 4 + k: Q8_0's vectors k and 4 + k, or the low and
        // high nibbles of IQ4_NL's vector k as grid values (signed already)
        let (lo, hi) = if F::VALUES == Values::Bytes {
            (load_halves(p.add(64 * k)), load_halves(p.add(64 * (4 + k))))
        } else {
            let (lo, hi) = nibbles(load_halves(p.add(64 * k)));
            (lo.iq4(), hi.iq4())
        };
        for (j, v) in [(k, lo), (4 + k, hi)] {
            let mut sw = v;
            if F::VALUES == Values::Bytes {
                sw = [_mm256_xor_si256(v[0], offset), _mm256_xor_si256(v[1], offset)];
            }
            let aw = [_mm256_abs_epi8(sw[0]), _mm256_abs_epi8(sw[1])];
            for (t, xt) in x.iter_mut().enumerate() {
                let a = dword::<F>(&acts[t], b, j);
                for h in 0..2 {
                    let z = _mm256_maddubs_epi16(aw[h], _mm256_sign_epi8(a, sw[h]));
                    xt[h] = _mm256_add_epi32(xt[h], _mm256_madd_epi16(z, ones));
                }
            }
        }
    }
    x
}

kernels32!(AVX2, Small, Halves);
