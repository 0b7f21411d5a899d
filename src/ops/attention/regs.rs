//! The tiled attention kernel with K and V widened in registers (AVX-512):
//! each tile's keys are transposed once as f16 (32 KB for 256 dimensions,
//! not 64 KB of f32) and the values are read straight from the cache rows;
//! up to `GROUP` queries share every widened vector. The arithmetic is
//! `tiled_body`'s lane for lane (scores as fused chains over the head
//! dimension, one online-softmax step per tile through `tile_softmax`, value
//! lanes as fused chains over the keys), so the results are the same bits:
//! the f32 tiles of the generic kernel cost more in cache traffic than in
//! arithmetic once a tile no longer fits in L1 (Gemma's 256-dimension head).

use super::{exp_avx2, tile_softmax, transpose8_f16, FA_TILE, VBLOCK};
use std::arch::x86_64::*;
use std::ops::Range;

/// Queries whose scores and value accumulators are held in registers at once.
const GROUP: usize = 4;
/// 16-lane vectors per tile of keys (scores) or per value block.
const VECS: usize = FA_TILE / 16;
const _: () = assert!(VBLOCK == FA_TILE);

/// Whether the kernel serves these head sizes (the transposition goes by 8
/// dimensions, the values by blocks of VBLOCK).
pub(super) fn fits(dk: usize, dv: usize) -> bool {
    dk.is_multiple_of(8) && dk > 0 && dv.is_multiple_of(VBLOCK)
}

/// `tiled_body` for AVX-512 (see the module note); `fits(dk, dv)` must hold.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tiled_regs<'a>(
    qs: &[&[f32]],
    ranges: &[Range<usize>],
    k_at: &dyn Fn(usize) -> &'a [u16],
    v_at: &dyn Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
    stats: Option<&mut [(f32, f32)]>,
) {
    const T: usize = FA_TILE;
    let nq = qs.len();
    if nq == 0 {
        return;
    }
    let dk = qs[0].len();
    assert!(fits(dk, dv) && qs.iter().all(|q| q.len() == dk) && ranges.len() >= nq && out.len() >= nq * dv);
    let lo = ranges.iter().map(|r| r.start).min().unwrap_or(0) / T * T;
    let hi = ranges.iter().map(|r| r.end).max().unwrap_or(0);
    let mut kt = vec![0u16; dk * T]; // [d][key], f16
    let mut m = vec![f32::NEG_INFINITY; nq];
    let mut s_sum = vec![0f32; nq];
    let acc = &mut out[..nq * dv];
    acc.iter_mut().for_each(|a| *a = 0.0);
    let mut w = vec![[0f32; T]; nq];
    let mut t0 = lo;
    while t0 < hi {
        let n_in = (hi - t0).min(T);
        let mut krows: [&[u16]; T] = [&[]; T];
        let mut vrows: [&[u16]; T] = [&[]; T];
        for j in 0..n_in {
            krows[j] = &k_at(t0 + j)[..dk];
            vrows[j] = &v_at(t0 + j)[..dv];
        }
        prefetch_next(k_at, v_at, t0 + T, hi, dk, dv);
        transpose_tile(&krows[..n_in], dk, &mut kt);
        // the queries that see a key of this tile, by groups
        let active: Vec<usize> = (0..nq).filter(|&i| ranges[i].end > t0 && ranges[i].start < t0 + T).collect();
        let mut live = Vec::with_capacity(active.len());
        for grp in active.chunks(GROUP) {
            let sc = scores(qs, grp, &kt, dk);
            for (g, &i) in grp.iter().enumerate() {
                if tile_softmax(&sc[g], &ranges[i], t0, scale, &mut m[i], &mut s_sum[i], &mut acc[i * dv..(i + 1) * dv], &mut w[i], exp_avx2) {
                    live.push(i);
                }
            }
        }
        for grp in live.chunks(GROUP) {
            let spans: Vec<Range<usize>> = grp.iter().map(|&i| ranges[i].start.max(t0) - t0..ranges[i].end.min(t0 + T) - t0).collect();
            for c in (0..dv).step_by(VBLOCK) {
                values(grp, &spans, &w, &vrows, c, dv, acc);
            }
        }
        t0 += T;
    }
    for i in 0..nq {
        let inv = if s_sum[i] == 0.0 { 0.0 } else { 1.0 / s_sum[i] };
        acc[i * dv..(i + 1) * dv].iter_mut().for_each(|x| *x *= inv);
    }
    if let Some(st) = stats {
        for (i, x) in st.iter_mut().enumerate().take(nq) {
            *x = (m[i], s_sum[i]);
        }
    }
}

/// Every cache line of the keys and values of the tile at `t`.
#[inline(always)]
unsafe fn prefetch_next<'a>(k_at: &dyn Fn(usize) -> &'a [u16], v_at: &dyn Fn(usize) -> &'a [u16], t: usize, hi: usize, dk: usize, dv: usize) {
    const F16_PER_LINE: usize = 32;
    for p in t..(t + FA_TILE).min(hi) {
        let (k, v) = (k_at(p).as_ptr(), v_at(p).as_ptr());
        for o in (0..dk).step_by(F16_PER_LINE) {
            _mm_prefetch::<_MM_HINT_T0>(k.add(o) as *const i8);
        }
        for o in (0..dv).step_by(F16_PER_LINE) {
            _mm_prefetch::<_MM_HINT_T0>(v.add(o) as *const i8);
        }
    }
}

/// The tile's keys transposed into `kt` ([d][key], f16), keys past `rows` 0.
#[inline(always)]
unsafe fn transpose_tile(rows: &[&[u16]], dk: usize, kt: &mut [u16]) {
    const T: usize = FA_TILE;
    let n8 = rows.len() / 8 * 8;
    for j0 in (0..n8).step_by(8) {
        for d0 in (0..dk).step_by(8) {
            let x = transpose8_f16(rows, j0, d0);
            for (k, &xk) in x.iter().enumerate() {
                _mm_storeu_si128(kt.as_mut_ptr().add((d0 + k) * T + j0) as *mut __m128i, xk);
            }
        }
    }
    for j in n8..T {
        for d in 0..dk {
            kt[d * T + j] = rows.get(j).map_or(0, |r| r[d]);
        }
    }
}

/// Scores of the queries `grp` (at most GROUP) against the tile: per key
/// lane, the fused chain over the dimensions in order.
#[inline(always)]
unsafe fn scores(qs: &[&[f32]], grp: &[usize], kt: &[u16], dk: usize) -> [[f32; FA_TILE]; GROUP] {
    match grp.len() {
        1 => scores_n::<1>(qs, grp, kt, dk),
        2 => scores_n::<2>(qs, grp, kt, dk),
        3 => scores_n::<3>(qs, grp, kt, dk),
        _ => scores_n::<GROUP>(qs, grp, kt, dk),
    }
}

#[inline(always)]
unsafe fn scores_n<const N: usize>(qs: &[&[f32]], grp: &[usize], kt: &[u16], dk: usize) -> [[f32; FA_TILE]; GROUP] {
    let q: [*const f32; N] = std::array::from_fn(|g| qs[grp[g]].as_ptr());
    let mut s = [[_mm512_setzero_ps(); VECS]; N];
    let kp = kt.as_ptr();
    for d in 0..dk {
        let k: [__m512; VECS] = std::array::from_fn(|c| _mm512_cvtph_ps(_mm256_loadu_si256(kp.add(d * FA_TILE + 16 * c) as *const __m256i)));
        for g in 0..N {
            let qd = _mm512_set1_ps(*q[g].add(d));
            for c in 0..VECS {
                s[g][c] = _mm512_fmadd_ps(qd, k[c], s[g][c]);
            }
        }
    }
    let mut out = [[0f32; FA_TILE]; GROUP];
    for g in 0..N {
        for c in 0..VECS {
            _mm512_storeu_ps(out[g].as_mut_ptr().add(16 * c), s[g][c]);
        }
    }
    out
}

/// Value lanes c..c + VBLOCK of the queries `grp`: each lane one fused chain
/// over the keys of the query's span, in key order.
#[inline(always)]
unsafe fn values(grp: &[usize], spans: &[Range<usize>], w: &[[f32; FA_TILE]], vrows: &[&[u16]; FA_TILE], c: usize, dv: usize, acc: &mut [f32]) {
    match grp.len() {
        1 => values_n::<1>(grp, spans, w, vrows, c, dv, acc),
        2 => values_n::<2>(grp, spans, w, vrows, c, dv, acc),
        3 => values_n::<3>(grp, spans, w, vrows, c, dv, acc),
        _ => values_n::<GROUP>(grp, spans, w, vrows, c, dv, acc),
    }
}

#[inline(always)]
unsafe fn values_n<const N: usize>(
    grp: &[usize],
    spans: &[Range<usize>],
    w: &[[f32; FA_TILE]],
    vrows: &[&[u16]; FA_TILE],
    c: usize,
    dv: usize,
    acc: &mut [f32],
) {
    let a: [*mut f32; N] = std::array::from_fn(|g| acc.as_mut_ptr().add(grp[g] * dv + c));
    let mut loc: [[__m512; VECS]; N] = std::array::from_fn(|g| std::array::from_fn(|v| _mm512_loadu_ps(a[g].add(16 * v))));
    let j_lo = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let j_hi = spans.iter().map(|s| s.end).max().unwrap_or(0);
    let uniform = spans.iter().all(|s| *s == spans[0]);
    for j in j_lo..j_hi {
        let vp = vrows[j].as_ptr().add(c);
        let v: [__m512; VECS] = std::array::from_fn(|k| _mm512_cvtph_ps(_mm256_loadu_si256(vp.add(16 * k) as *const __m256i)));
        for g in 0..N {
            if uniform || spans[g].contains(&j) {
                let wj = _mm512_set1_ps(w[grp[g]][j]);
                for k in 0..VECS {
                    loc[g][k] = _mm512_fmadd_ps(wj, v[k], loc[g][k]);
                }
            }
        }
    }
    for g in 0..N {
        for k in 0..VECS {
            _mm512_storeu_ps(a[g].add(16 * k), loc[g][k]);
        }
    }
}
