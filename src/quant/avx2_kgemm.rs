//! Multi-token kernels for the 256-element super-block types (Q8_K
//! activations): each weight super-block is unpacked, and its scales decoded
//! into vectors, once for a block of tokens; every token then costs a
//! `maddubs` + `madd`/`vpdpwssd` per 32 elements.
//!
//! The integer sums are exact, so only the float steps decide the bits; for
//! each token they are those of the kernel llama.cpp runs for that batch
//! (`TypeKernels::dot_for`): `dotk` lanes below 8 tokens, the tiled
//! per-super-block chain from 8, and for Q4_K the repacked GEMV / per-64 GEMM.
//! tests/quant.rs compares every pair's bits with `dot_for`.

use super::{hsum_f32, hsum_i32, ScalesV, UnpackK};
use crate::quant::blocks::{cast_blocks, BlockQ8K};
use std::arch::x86_64::*;

/// Float rounding of one token (see the module doc).
const LANES: u8 = 0;
const TILED: u8 = 1;
const Q4_GEMV: u8 = 2;
const Q4_PER64: u8 = 3;

/// Tokens per pass over a weight row: their activation blocks stay in L1/L2.
const TB: usize = 16;

/// One unpacked weight super-block.
struct WBlock {
    /// |q| (signed types) or q (+BIAS) as bytes, per 32-element chunk.
    ch: [__m256i; 8],
    /// The signs to move onto the activations (signed types only).
    sg: [__m256i; 8],
    /// Chunk c's two 16-element scales as i16 x 16 (8 copies each).
    scv: [__m256i; 8],
    s: ScalesV,
}

#[derive(Clone, Copy)]
struct St {
    lanes: __m256,
    acc: f32,
    acc_min: f32,
}

#[inline(always)]
unsafe fn unpack<B: UnpackK>(w: &B) -> WBlock {
    let mut ch = [_mm256_setzero_si256(); 8];
    w.chunks(&mut ch);
    let mut sg = [_mm256_setzero_si256(); 8];
    if B::SIGNED {
        for c in 0..8 {
            sg[c] = ch[c];
            ch[c] = _mm256_abs_epi8(ch[c]);
        }
    }
    let s = w.scales_v();
    // chunk c's pair (sc[2c], sc[2c+1]) sits at bytes 4(c%4).. of 128-bit half
    // c/4 of sc16: broadcast each half, then one vpshufb spreads sc[2c] over
    // the low 128 bits and sc[2c+1] over the high. (A loop, not
    // array::from_fn: closures do not inherit target features.)
    let halves = [_mm256_permute2x128_si256(s.sc16, s.sc16, 0x00), _mm256_permute2x128_si256(s.sc16, s.sc16, 0x11)];
    let mut scv = [_mm256_setzero_si256(); 8];
    for (c, v) in scv.iter_mut().enumerate() {
        let k = (4 * (c % 4)) as i8;
        let (a, b) = (
            _mm_setr_epi8(k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1, k, k + 1),
            _mm_setr_epi8(k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3, k + 2, k + 3),
        );
        *v = _mm256_shuffle_epi8(halves[c / 4], _mm256_setr_m128i(a, b));
    }
    WBlock { ch, sg, scv, s }
}

/// Scaled integer sums of one super-block and one token: `P` partial vectors
/// (1: the whole block; 4: per 64 elements), lane l summing elements 4l..4l+3
/// of every chunk (ggml's lane layout).
#[inline(always)]
unsafe fn sums<B: UnpackK, const P: usize, const VNNI: bool>(wb: &WBlock, a: &BlockQ8K) -> [__m256i; P] {
    let mut p = [_mm256_setzero_si256(); P];
    let mut q = [_mm256_setzero_si256(); 2];
    for c in 0..8 {
        let mut av = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
        if B::SIGNED {
            av = _mm256_sign_epi8(av, wb.sg[c]);
        }
        let p16 = _mm256_maddubs_epi16(wb.ch[c], av);
        // P = 1: two chains (c even / odd) to halve the latency; P = 4: pairs of chunks
        let k = if P == 1 { c % 2 } else { c / 2 };
        let acc = if P == 1 { &mut q[k] } else { &mut p[k] };
        *acc = if VNNI { _mm256_dpwssd_epi32(*acc, p16, wb.scv[c]) } else { _mm256_add_epi32(*acc, _mm256_madd_epi16(p16, wb.scv[c])) };
    }
    if P == 1 {
        p[0] = _mm256_add_epi32(q[0], q[1]);
    }
    p
}

#[inline(always)]
unsafe fn step<B: UnpackK, const MODE: u8, const VNNI: bool>(wb: &WBlock, a: &BlockQ8K, st: &mut St) {
    let s = &wb.s;
    let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
    match MODE {
        LANES => {
            let mut isum = sums::<B, 1, VNNI>(wb, a)[0];
            if B::BIAS != 0 {
                isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(_mm256_madd_epi16(bs, wb.s.sc16), _mm256_set1_epi32(B::BIAS)));
            }
            st.lanes = _mm256_fmadd_ps(_mm256_set1_ps(s.d * a.d), _mm256_cvtepi32_ps(isum), st.lanes);
            if B::HAS_MIN {
                let msum = hsum_i32(_mm256_madd_epi16(bs, wb.s.m16));
                st.acc_min += s.dmin * a.d * msum as f32;
            }
        }
        TILED => {
            let mut isum = sums::<B, 1, VNNI>(wb, a)[0];
            if B::BIAS != 0 {
                isum = _mm256_sub_epi32(isum, _mm256_mullo_epi32(_mm256_madd_epi16(bs, wb.s.sc16), _mm256_set1_epi32(B::BIAS)));
            }
            let mut r = hsum_i32(isum) as f32 * s.d;
            if B::HAS_MIN {
                let msum = hsum_i32(_mm256_madd_epi16(bs, wb.s.m16));
                r = (-s.dmin).mul_add(msum as f32, r);
            }
            st.acc = r.mul_add(a.d, st.acc);
        }
        Q4_GEMV => {
            let isum = hsum_i32(sums::<B, 1, VNNI>(wb, a)[0]);
            let msum = hsum_i32(_mm256_madd_epi16(bs, wb.s.m16));
            st.acc = (isum as f32).mul_add(s.d * a.d, st.acc);
            st.acc_min = (msum as f32).mul_add(s.dmin * a.d, st.acc_min);
        }
        _ => {
            let p = sums::<B, 4, VNNI>(wb, a);
            // [S0, S1, S2, S3]: each partial's 8 lanes summed
            let h = _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
            let is = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            // lane j of madd = chunk j's min term; per 64 = lanes 2k + 2k+1
            let mh = _mm256_hadd_epi32(_mm256_madd_epi16(bs, wb.s.m16), _mm256_setzero_si256());
            let ms = _mm_unpacklo_epi64(_mm256_castsi256_si128(mh), _mm256_extracti128_si256(mh, 1));
            let (mut iv, mut mv) = ([0i32; 4], [0i32; 4]);
            _mm_storeu_si128(iv.as_mut_ptr() as *mut __m128i, is);
            _mm_storeu_si128(mv.as_mut_ptr() as *mut __m128i, ms);
            let (dd, dm) = (s.d * a.d, s.dmin * a.d);
            for k in 0..4 {
                st.acc = (iv[k] as f32).mul_add(dd, st.acc);
                st.acc_min = (mv[k] as f32).mul_add(dm, st.acc_min);
            }
        }
    }
}

/// Rows 0..nrows of `w` times tokens t0..t1, all in rounding MODE.
#[inline(always)]
unsafe fn run<B: UnpackK, const MODE: u8, const VNNI: bool>(
    w: &[u8],
    wrb: usize,
    nrows: usize,
    a: &[u8],
    arb: usize,
    t0: usize,
    t1: usize,
    out: *mut f32,
    ostride: usize,
) {
    let act = |t: usize| -> &[BlockQ8K] { cast_blocks(&a[t * arb..(t + 1) * arb]).expect("Q8_K rows") };
    let mut tb = t0;
    while tb < t1 {
        let te = (tb + TB).min(t1);
        let acts: [&[BlockQ8K]; TB] = std::array::from_fn(|k| if tb + k < te { act(tb + k) } else { &[] });
        for r in 0..nrows {
            let row: &[B] = cast_blocks(&w[r * wrb..(r + 1) * wrb]).expect("weight rows");
            let mut st = [St { lanes: _mm256_setzero_ps(), acc: 0.0, acc_min: 0.0 }; TB];
            for (b, blk) in row.iter().enumerate() {
                let wb = unpack(blk);
                for k in 0..te - tb {
                    step::<B, MODE, VNNI>(&wb, acts[k].get_unchecked(b), &mut st[k]);
                }
            }
            for k in 0..te - tb {
                let v = match MODE {
                    LANES => hsum_f32(st[k].lanes) - st[k].acc_min,
                    TILED => st[k].acc,
                    _ => st[k].acc - st[k].acc_min,
                };
                *out.add((tb + k) * ostride + r) = v;
            }
        }
        tb = te;
    }
}

/// Every row times every token, each in the rounding `dot_for(ntok, t)` picks.
#[inline(always)]
unsafe fn body<B: UnpackK, const Q4: bool, const VNNI: bool>(
    w: &[u8],
    wrb: usize,
    nrows: usize,
    a: &[u8],
    arb: usize,
    ntok: usize,
    out: *mut f32,
    ostride: usize,
) {
    if Q4 {
        let g = crate::quant::groups4_len(ntok);
        run::<B, Q4_PER64, VNNI>(w, wrb, nrows, a, arb, 0, g, out, ostride);
        run::<B, Q4_GEMV, VNNI>(w, wrb, nrows, a, arb, g, ntok, out, ostride);
    } else if ntok >= 8 {
        run::<B, TILED, VNNI>(w, wrb, nrows, a, arb, 0, ntok, out, ostride);
    } else {
        run::<B, LANES, VNNI>(w, wrb, nrows, a, arb, 0, ntok, out, ostride);
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn kgemm_avx2<B: UnpackK, const Q4: bool>(
    w: &[u8],
    wrb: usize,
    nrows: usize,
    a: &[u8],
    arb: usize,
    ntok: usize,
    out: *mut f32,
    ostride: usize,
) {
    body::<B, Q4, false>(w, wrb, nrows, a, arb, ntok, out, ostride)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw")]
pub(super) unsafe fn kgemm_vnni<B: UnpackK, const Q4: bool>(
    w: &[u8],
    wrb: usize,
    nrows: usize,
    a: &[u8],
    arb: usize,
    ntok: usize,
    out: *mut f32,
    ostride: usize,
) {
    body::<B, Q4, true>(w, wrb, nrows, a, arb, ntok, out, ostride)
}
