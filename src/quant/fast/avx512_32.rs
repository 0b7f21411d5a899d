//! The fast kernels of the 32-element block types on AVX-512 VNNI, over
//! `layout32`'s 16-row tiles: per block and token, 8 `vpdpbusd` of the tile's
//! unsigned weights with one activation dword broadcast each (16 rows x 4
//! elements per instruction), the weight offset taken off in integers
//! through the activation block's sum (`acts32`), then the float step once
//! for the 16 rows: acc = fma(d_w * d_a, S, acc) (+ fma(m_w, d_a * sum, acc)
//! with a min). Results equal `super::dot_ref32` bit for bit, for any
//! number of tokens.

use super::acts32::{sides_offset, Side, Q8_0_ACT, Q8_1_ACT};
use super::avx512::{load64, nibbles, IQ4_GRID_U8};
use super::driver::{gemm, gemm_fn, prefetch_l2, Kernel};
use super::layout::Geometry;
use super::layout32::*;
use super::FastKernels;
use crate::gguf::GgmlType;
use std::arch::x86_64::*;

/// The fast kernel of a 32-element block type.
pub fn kernels(ty: GgmlType) -> Option<FastKernels> {
    type Pack = fn(&[u8], usize, usize) -> crate::quant::AlignedBytes;
    let (geometry, pack, gemm): (Geometry, Pack, super::FastGemmFn) = match ty {
        GgmlType::Q8_0 => (Q8_0_GEOMETRY, pack_q8_0, gemm_q8_0),
        GgmlType::Q4_0 => (Q4_0_GEOMETRY, pack_q4_0, gemm_q4_0),
        GgmlType::IQ4_NL => (Q4_0_GEOMETRY, pack_iq4_nl, gemm_iq4_nl),
        GgmlType::Q4_1 => (Q4_1_GEOMETRY, pack_q4_1, gemm_q4_1),
        GgmlType::Q5_0 => (Q5_0_GEOMETRY, pack_q5_0, gemm_q5_0),
        GgmlType::Q5_1 => (Q5_1_GEOMETRY, pack_q5_1, gemm_q5_1),
        _ => return None,
    };
    Some(FastKernels { ty, rows: TILE32_ROWS, geometry, pack, gemm })
}

/// One format's tile block as the kernel reads it.
trait Tile32 {
    const G: Geometry;
    /// The activation type's (block bytes, quants offset): Q8_0 or Q8_1.
    const ACT: (usize, usize);
    /// log2 of the weights' offset (see `layout32`); None: a min instead.
    const SHIFT: Option<u32>;
    /// The 8 vectors j of unsigned weights (elements 4j..4j+4 of the 16 rows).
    unsafe fn planes(p: *const u8) -> [__m512i; 8];
}

#[inline(always)]
unsafe fn nibble_planes(p: *const u8) -> [__m512i; 8] {
    let v: [(__m512i, __m512i); 4] = std::array::from_fn(|k| nibbles(load64(p.add(64 * k))));
    [v[0].0, v[1].0, v[2].0, v[3].0, v[0].1, v[1].1, v[2].1, v[3].1]
}

#[inline(always)]
unsafe fn five_planes(p: *const u8) -> [__m512i; 8] {
    let lo = nibble_planes(p);
    let sixteen = _mm512_set1_epi8(16);
    std::array::from_fn(|j| {
        let high: __mmask64 = std::ptr::read_unaligned(p.add(B32_HIGH + 8 * j) as *const u64);
        _mm512_mask_add_epi8(lo[j], high, lo[j], sixteen)
    })
}

struct Q8_0;
impl Tile32 for Q8_0 {
    const G: Geometry = Q8_0_GEOMETRY;
    const ACT: (usize, usize) = Q8_0_ACT;
    const SHIFT: Option<u32> = Some(7);
    #[inline(always)]
    unsafe fn planes(p: *const u8) -> [__m512i; 8] {
        std::array::from_fn(|j| load64(p.add(64 * j)))
    }
}

struct Q4_0;
impl Tile32 for Q4_0 {
    const G: Geometry = Q4_0_GEOMETRY;
    const ACT: (usize, usize) = Q8_0_ACT;
    const SHIFT: Option<u32> = Some(3);
    #[inline(always)]
    unsafe fn planes(p: *const u8) -> [__m512i; 8] {
        nibble_planes(p)
    }
}

struct Iq4Nl;
impl Tile32 for Iq4Nl {
    const G: Geometry = Q4_0_GEOMETRY;
    const ACT: (usize, usize) = Q8_0_ACT;
    const SHIFT: Option<u32> = Some(7);
    #[inline(always)]
    unsafe fn planes(p: *const u8) -> [__m512i; 8] {
        let lut = _mm512_broadcast_i32x4(_mm_loadu_si128(IQ4_GRID_U8.as_ptr() as *const __m128i));
        nibble_planes(p).map(|v| _mm512_shuffle_epi8(lut, v))
    }
}

struct Q4_1;
impl Tile32 for Q4_1 {
    const G: Geometry = Q4_1_GEOMETRY;
    const ACT: (usize, usize) = Q8_1_ACT;
    const SHIFT: Option<u32> = None;
    #[inline(always)]
    unsafe fn planes(p: *const u8) -> [__m512i; 8] {
        nibble_planes(p)
    }
}

struct Q5_0;
impl Tile32 for Q5_0 {
    const G: Geometry = Q5_0_GEOMETRY;
    const ACT: (usize, usize) = Q8_0_ACT;
    const SHIFT: Option<u32> = Some(4);
    #[inline(always)]
    unsafe fn planes(p: *const u8) -> [__m512i; 8] {
        five_planes(p)
    }
}

struct Q5_1;
impl Tile32 for Q5_1 {
    const G: Geometry = Q5_1_GEOMETRY;
    const ACT: (usize, usize) = Q8_1_ACT;
    const SHIFT: Option<u32> = None;
    #[inline(always)]
    unsafe fn planes(p: *const u8) -> [__m512i; 8] {
        five_planes(p)
    }
}

/// One token's activations: its first block's quants, its first side.
#[derive(Clone, Copy)]
struct Act {
    qs: *const u8,
    side: *const Side,
}

/// The kernel of one format.
struct Small<K>(std::marker::PhantomData<K>);
impl<K: Tile32> Kernel for Small<K> {
    type Act = Act;
    type Acc = __m512;
    const ROWS: usize = TILE32_ROWS;
    const G: Geometry = K::G;
    #[inline(always)]
    unsafe fn act(a: &[u8], arb: usize, n: usize, nb: usize, t: usize) -> Act {
        let side = a.as_ptr().add(sides_offset(n, arb)) as *const Side;
        Act { qs: a.as_ptr().add(t * arb + K::ACT.1), side: side.add(t * nb) }
    }
    #[inline(always)]
    unsafe fn tile<const T: usize>(w: *const u8, nb: usize, acts: &[Act; T]) -> [__m512; T] {
        tile::<K, T>(w, nb, acts)
    }
    #[inline(always)]
    unsafe fn store(v: __m512, o: *mut f32, valid: usize) {
        _mm512_mask_storeu_ps(o, ((1u32 << valid) - 1) as __mmask16, v)
    }
}

/// Blocks 0..nb of one tile against T tokens: the 16 rows' results per token.
#[inline(always)]
unsafe fn tile<K: Tile32, const T: usize>(w: *const u8, nb: usize, acts: &[Act; T]) -> [__m512; T] {
    let mut acc = [_mm512_setzero_ps(); T];
    let zero = _mm512_setzero_si512();
    let meta = w.add(nb * K::G.values);
    for b in 0..nb {
        let p = w.add(b * K::G.values);
        let mt = meta.add(b * K::G.meta);
        prefetch_l2(w, b, K::G);
        let v = K::planes(p);
        let dw = _mm512_cvtph_ps(_mm256_load_si256(mt.add(B32_D) as *const __m256i));
        // the min per row (types without an offset)
        let mw = _mm512_cvtph_ps(_mm256_load_si256(mt.add(if K::SHIFT.is_none() { B32_M } else { B32_D }) as *const __m256i));
        for t in 0..T {
            let q = acts[t].qs.add(b * K::ACT.0);
            let side = *acts[t].side.add(b);
            let a = |j: usize| _mm512_set1_epi32(std::ptr::read_unaligned(q.add(4 * j) as *const i32));
            let init = match K::SHIFT {
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
            if K::SHIFT.is_none() {
                acc[t] = _mm512_fmadd_ps(mw, _mm512_set1_ps(side.ds), acc[t]);
            }
        }
    }
    acc
}

gemm_fn!(AVX512_VNNI, gemm_q8_0, Small<Q8_0>);
gemm_fn!(AVX512_VNNI, gemm_q4_0, Small<Q4_0>);
gemm_fn!(AVX512_VNNI, gemm_iq4_nl, Small<Iq4Nl>);
gemm_fn!(AVX512_VNNI, gemm_q4_1, Small<Q4_1>);
gemm_fn!(AVX512_VNNI, gemm_q5_0, Small<Q5_0>);
gemm_fn!(AVX512_VNNI, gemm_q5_1, Small<Q5_1>);
