//! The fast kernels of the 32-element block types on AVX-512 VNNI, over
//! `layout32`'s 16-row tiles: per block and token, 8 `vpdpbusd` of the tile's
//! unsigned weights with one activation dword broadcast each (16 rows x 4
//! elements per instruction), the weight offset taken off in integers
//! through the activation block's sum (`acts32`), then the float step once
//! for the 16 rows: acc = fma(d_w * d_a, S, acc) (+ fma(m_w, d_a * sum, acc)
//! with a min). Results equal `super::dot_ref32` bit for bit, for any
//! number of tokens.

use super::acts32::ActPtrs;
use super::avx512::{load64, nibbles, IQ4_GRID_U8};
use super::driver::{gemm, gemm_fn, prefetch_l2, Kernel};
use super::layout::{Geometry, Masks};
use super::layout32::*;
use std::arch::x86_64::*;

impl Plane32 for __m512i {
    type Bits = Masks;
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        load64(p)
    }
    #[inline(always)]
    unsafe fn nibbles(self) -> (Self, Self) {
        nibbles(self)
    }
    #[inline(always)]
    unsafe fn iq4(self) -> Self {
        _mm512_shuffle_epi8(_mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_GRID_U8.as_ptr() as *const __m128i)), self)
    }
    #[inline(always)]
    unsafe fn add_high(self, high: *const u8, j: usize) -> Self {
        let mask: __mmask64 = std::ptr::read_unaligned(high.add(8 * j) as *const u64);
        _mm512_mask_add_epi8(self, mask, self, _mm512_set1_epi8(16))
    }
}

/// The kernel of one format.
struct Small<F>(std::marker::PhantomData<F>);
impl<F: Format32> Kernel for Small<F> {
    type Act = ActPtrs;
    type Acc = __m512;
    const ROWS: usize = TILE32_ROWS;
    const G: Geometry = F::G;
    #[inline(always)]
    unsafe fn act(a: &[u8], arb: usize, n: usize, nb: usize, t: usize) -> ActPtrs {
        ActPtrs::of(a, arb, n, nb, t, F::ACT)
    }
    #[inline(always)]
    unsafe fn tile<const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[ActPtrs; T]) -> [__m512; T] {
        tile::<F, T>(w, end, nb, acts)
    }
    #[inline(always)]
    unsafe fn store(v: __m512, o: *mut f32, valid: usize) {
        _mm512_mask_storeu_ps(o, ((1u32 << valid) - 1) as __mmask16, v)
    }
}

/// Blocks 0..nb of one tile against T tokens: the 16 rows' results per token.
#[inline(always)]
unsafe fn tile<F: Format32, const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[ActPtrs; T]) -> [__m512; T] {
    let mut acc = [_mm512_setzero_ps(); T];
    let zero = _mm512_setzero_si512();
    for b in 0..nb {
        let p = w.add(F::G.values_at(nb, b));
        let mt = w.add(F::G.meta_at(b));
        prefetch_l2(w, end, b, F::G, T);
        let v: [__m512i; 8] = planes::<F, _>(p);
        let dw = _mm512_cvtph_ps(_mm256_load_si256(mt.add(B32_D) as *const __m256i));
        // the min per row (types without an offset)
        let mw = _mm512_cvtph_ps(_mm256_load_si256(mt.add(if F::SHIFT.is_none() { B32_M } else { B32_D }) as *const __m256i));
        for t in 0..T {
            let q = acts[t].qs.add(b * F::ACT.0);
            let side = *acts[t].side.add(b);
            let a = |j: usize| _mm512_set1_epi32(std::ptr::read_unaligned(q.add(4 * j) as *const i32));
            let init = match F::SHIFT {
                Some(s) => _mm512_set1_epi32(-(side.sum << s)),
                None => zero,
            };
            let x0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, v[0], a(0)), v[1], a(1)), v[2], a(2)), v[3], a(3));
            let x = if T == 1 {
                // a second chain: half the latency for a single token
                let x1 =
                    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, v[4], a(4)), v[5], a(5)), v[6], a(6)), v[7], a(7));
                _mm512_add_epi32(x0, x1)
            } else {
                _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(x0, v[4], a(4)), v[5], a(5)), v[6], a(6)), v[7], a(7))
            };
            let s = _mm512_cvtepi32_ps(x);
            acc[t] = _mm512_fmadd_ps(_mm512_mul_ps(dw, _mm512_set1_ps(side.d)), s, acc[t]);
            if F::SHIFT.is_none() {
                acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(side.ds), acc[t]);
            }
        }
    }
    acc
}

kernels32!(AVX512_VNNI, Small, __m512i);
