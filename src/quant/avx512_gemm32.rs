//! AVX-512 VNNI kernels for 32-element blocks, two tokens per zmm register:
//! a weight block (unsigned, `q + OFF`) is broadcast to both 256-bit halves,
//! each half holds one token's activation block, so one `vpdpbusd`,
//! `vcvtdq2ps`, `vmulps` and `vfmadd` serve two (row, token) pairs. Lane for
//! lane these are the float steps of ggml's vec_dot (the integer sums are
//! exact: OFF * sum(a) is subtracted inside the dot), so every pair keeps
//! its bits (tests/quant.rs, gemm_kernels_equal_vec_dot_bit_for_bit).

use super::{cb, h2f, hsum_f32, row_blocks, Act32, Unpack32};
use std::arch::x86_64::*;

#[inline(always)]
unsafe fn halves(v: __m512) -> [__m256; 2] {
    [_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))]
}

#[inline(always)]
unsafe fn join(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1))
}

/// R rows times P token pairs; result [pair][token of the pair][row].
#[inline(always)]
unsafe fn tile<B: Unpack32, A: Act32, const R: usize, const P: usize, const S: usize>(w: [&[B]; R], a: [[&[A]; 2]; P]) -> [[[f32; R]; 2]; P] {
    let nb = a[0][0].len();
    let mut acc = [[_mm512_setzero_ps(); R]; P];
    let mut mins = [[[0.0f32; R]; 2]; P];
    let offv = _mm512_set1_epi8(B::OFF as u8 as i8);
    for b in 0..nb {
        let mut wv = [_mm512_setzero_si512(); R];
        let mut wd = [_mm512_setzero_ps(); R];
        let mut wm = [0.0f32; R];
        for r in 0..R {
            let blk = w[r].get_unchecked(b * S);
            wv[r] = _mm512_broadcast_i64x4(blk.unpack_u8());
            wd[r] = _mm512_set1_ps(h2f(blk.d()));
            if B::HAS_M {
                wm[r] = h2f(blk.m());
            }
        }
        for p in 0..P {
            let (x, y) = (a[p][0].get_unchecked(b), a[p][1].get_unchecked(b));
            let lo = _mm256_loadu_si256(x.qs().as_ptr() as *const __m256i);
            let hi = _mm256_loadu_si256(y.qs().as_ptr() as *const __m256i);
            let av = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            let ad = join(_mm256_set1_ps(h2f(x.d())), _mm256_set1_ps(h2f(y.d())));
            let neg = if B::OFF != 0 {
                _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), offv, av))
            } else {
                _mm512_setzero_si512()
            };
            let s = if B::HAS_M { [h2f(x.s()), h2f(y.s())] } else { [0.0; 2] };
            for r in 0..R {
                let isum = _mm512_dpbusd_epi32(neg, wv[r], av);
                acc[p][r] = _mm512_fmadd_ps(_mm512_mul_ps(wd[r], ad), _mm512_cvtepi32_ps(isum), acc[p][r]);
                if B::HAS_M {
                    for k in 0..2 {
                        mins[p][k][r] = wm[r].mul_add(s[k], mins[p][k][r]);
                    }
                }
            }
        }
    }
    let mut out = [[[0.0f32; R]; 2]; P];
    for p in 0..P {
        for r in 0..R {
            let h = halves(acc[p][r]);
            for k in 0..2 {
                out[p][k][r] = if B::HAS_M { hsum_f32(h[k]) + mins[p][k][r] } else { hsum_f32(h[k]) };
            }
        }
    }
    out
}

/// One R x P tile: rows r.., pairs p.. (the second token of the last pair
/// repeats the first when ntok is odd; its result is dropped).
#[inline(always)]
unsafe fn tile_store<B: Unpack32, A: Act32, const R: usize, const P: usize, const S: usize>(
    w: &[u8],
    wrb: usize,
    r: usize,
    a: &[u8],
    arb: usize,
    ntok: usize,
    p: usize,
    out: *mut f32,
    ostride: usize,
) {
    let ws = row_blocks::<B, R, S>(w, wrb, r);
    let act = |t: usize| -> &[A] { cb(&a[t * arb..(t + 1) * arb]) };
    let acts: [[&[A]; 2]; P] = std::array::from_fn(|j| [act(2 * (p + j)), act((2 * (p + j) + 1).min(ntok - 1))]);
    let o = tile::<B, A, R, P, S>(ws, acts);
    for j in 0..P {
        for k in 0..2 {
            let t = 2 * (p + j) + k;
            if t < ntok {
                for i in 0..R {
                    *out.add(t * ostride + r + i) = o[j][k][i];
                }
            }
        }
    }
}

#[inline(always)]
unsafe fn tiles<B: Unpack32, A: Act32, const R: usize, const P: usize, const S: usize>(
    w: &[u8],
    wrb: usize,
    nrows: usize,
    a: &[u8],
    arb: usize,
    ntok: usize,
    out: *mut f32,
    ostride: usize,
) {
    let npairs = ntok.div_ceil(2);
    let mut r = 0;
    while r < nrows {
        let one_row = r + R > nrows;
        let mut p = 0;
        while p + P <= npairs {
            if one_row {
                tile_store::<B, A, 1, P, 1>(w, wrb, r, a, arb, ntok, p, out, ostride);
            } else {
                tile_store::<B, A, R, P, S>(w, wrb, r, a, arb, ntok, p, out, ostride);
            }
            p += P;
        }
        while p < npairs {
            if one_row {
                tile_store::<B, A, 1, 1, 1>(w, wrb, r, a, arb, ntok, p, out, ostride);
            } else {
                tile_store::<B, A, R, 1, S>(w, wrb, r, a, arb, ntok, p, out, ostride);
            }
            p += 1;
        }
        r += if one_row { 1 } else { R };
    }
}

/// Single tokens take the 256-bit kernel. Tile shapes measured on Qwen's
/// 151936x896 Q8_0 and 4864x896 Q5_0, one thread (benches/matmul.rs): small
/// batches 1 row x 2 pairs (more weight streams stall when weights are not
/// reused: n=4 Q8_0 1x2 10.4 ms, 2x2 27.5 ms); from 16 tokens 4 rows x 4
/// pairs (n=64: Q5_0 3.0 ms, 2x2 4.9, 2x4 4.0, 3x3 3.6, 8x2 3.7; the 256-bit
/// kernel 6.8).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw")]
pub(super) unsafe fn gemm32_zmm<B: Unpack32, A: Act32>(w: &[u8], wrb: usize, nrows: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize) {
    if ntok == 1 {
        super::gemm32_vnni::<B, A>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else if ntok == 5 || ntok == 6 {
        tiles::<B, A, 1, 3, 1>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else if ntok < 16 {
        tiles::<B, A, 1, 2, 1>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else {
        tiles::<B, A, 4, 4, 1>(w, wrb, nrows, a, arb, ntok, out, ostride)
    }
}

/// Rows packed by 4 (`crate::quant::pack_rows`): one sequential weight
/// stream for 4 rows, so small batches can take 4-row tiles too.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw")]
pub(super) unsafe fn gemm32x4_zmm<B: Unpack32, A: Act32>(w: &[u8], wrb: usize, nrows: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize) {
    if ntok == 1 {
        super::gemm32x4_vnni_ymm::<B, A>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else if ntok == 5 || ntok == 6 {
        // three pairs in one tile: one weight unpack per row block (with 2+1
        // pairs, 5 tokens cost as much as 8; speculative verification of 4 drafts)
        tiles::<B, A, 4, 3, 4>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else if ntok < 16 {
        tiles::<B, A, 4, 2, 4>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else {
        tiles::<B, A, 4, 4, 4>(w, wrb, nrows, a, arb, ntok, out, ostride)
    }
}
