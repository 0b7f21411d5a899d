//! The tiled attention kernel with K and V widened in registers (AVX-512 or
//! AVX2): each tile's keys are transposed once as f16 (32 KB for 256
//! dimensions, not 64 KB of f32) and the values are read straight from the
//! cache rows; up to `Lanes::GROUP` queries share every widened vector. The arithmetic is
//! `tiled_body`'s lane for lane (scores as fused chains over the head
//! dimension, one online-softmax step per tile through `tile_softmax`, value
//! lanes as fused chains over the keys), so the results are the same bits:
//! the f32 tiles of the generic kernel cost more in cache traffic than in
//! arithmetic once a tile no longer fits in L1 (Gemma's 256-dimension head).

use super::{exp_avx2, finish, prefetch_span, tile_softmax, transpose8_f16, HeadRows, FA_TILE, VBLOCK};
use std::arch::x86_64::*;
use std::ops::Range;

/// Vectors per chunk of keys (scores) or of value lanes.
const VECS: usize = 4;
/// Most queries a group holds (AVX-512's).
const MAX_GROUP: usize = 4;
/// Tiles of keys and values ahead to prefetch (into L2; the first ones
/// before the loop, where one tile ahead, into L1, left every item's
/// first tile cold: a 256-key segment is 4 tiles). `cargo bench --bench
/// attention` (Qwen 0.5B's step at depth 2048, Zen 4, -t 2 team): one
/// ahead into L1 4.1-5.0 ms; into L2 3.9-4.4; two ahead into L2 and the
/// first two before the loop 3.2-3.7 (one: 3.4-4.0, four: 3.6-3.8).
/// tg64 @ d2048 of Qwen 0.5B Q8_0, three interleaved rounds: 40.6-44.3
/// -> 40.6-45.2 t/s.
const PREFETCH_TILES: usize = 2;

/// A vector of f32 lanes, what the kernel does with it, and how many
/// queries' accumulators fit in the registers (4 x GROUP vectors plus 4
/// widened ones).
trait Lanes: Copy {
    const WIDTH: usize;
    const GROUP: usize;
    /// Keys (scores) or value lanes per chunk.
    const CHUNK: usize = VECS * Self::WIDTH;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn load_f16(p: *const u16) -> Self;
    unsafe fn store(self, p: *mut f32);
    /// a * b + c, fused.
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
}

impl Lanes for __m512 {
    const WIDTH: usize = 16;
    const GROUP: usize = 4;
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm512_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm512_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm512_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        _mm512_fmadd_ps(a, b, c)
    }
}

impl Lanes for __m256 {
    const WIDTH: usize = 8;
    const GROUP: usize = 2;
    #[inline(always)]
    unsafe fn zero() -> Self {
        _mm256_setzero_ps()
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        _mm256_set1_ps(x)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        _mm256_loadu_ps(p)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self)
    }
    #[inline(always)]
    unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
        _mm256_fmadd_ps(a, b, c)
    }
}

/// Whether the kernel serves these head sizes (the transposition goes by 8
/// dimensions, the values by blocks of VBLOCK).
pub(super) fn fits(dk: usize, dv: usize) -> bool {
    dk.is_multiple_of(8) && dk > 0 && dv.is_multiple_of(VBLOCK)
}

/// `tiled_body` with 16-lane vectors (see the module note); `fits(dk, dv)`
/// must hold.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tiled_regs_avx512<'a>(
    qs: &[&[f32]],
    ranges: &[Range<usize>],
    k: HeadRows<'a>,
    v: HeadRows<'a>,
    scale: f32,
    dv: usize,
    out: &mut [f32],
    stats: Option<&mut [(f32, f32)]>,
) {
    tiled_regs::<__m512>(qs, ranges, k, v, scale, dv, out, stats)
}

/// The same with 8-lane vectors (16 registers: half the queries per group).
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tiled_regs_avx2<'a>(
    qs: &[&[f32]],
    ranges: &[Range<usize>],
    k: HeadRows<'a>,
    v: HeadRows<'a>,
    scale: f32,
    dv: usize,
    out: &mut [f32],
    stats: Option<&mut [(f32, f32)]>,
) {
    tiled_regs::<__m256>(qs, ranges, k, v, scale, dv, out, stats)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tiled_regs<'a, L: Lanes>(
    qs: &[&[f32]],
    ranges: &[Range<usize>],
    k: HeadRows<'a>,
    v: HeadRows<'a>,
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
    assert!(k.len >= dk && v.len >= dv && k.holds(hi) && v.holds(hi), "attention rows outside the cache");
    let mut kt = vec![0u16; dk * T]; // [d][key], f16
    let mut m = vec![f32::NEG_INFINITY; nq];
    let mut s_sum = vec![0f32; nq];
    let acc = &mut out[..nq * dv];
    acc.iter_mut().for_each(|a| *a = 0.0);
    let mut w = vec![[0f32; T]; nq];
    let mut sc = [[0f32; T]; MAX_GROUP];
    // the queries that see a key of the tile, and those with a weight in it
    let (mut active, mut live) = (Vec::with_capacity(nq), Vec::with_capacity(nq));
    // SAFETY (every row pointer below): rows lo..hi checked above.
    let prefetch = |p: usize| {
        prefetch_span(k.ptr(p), dk);
        prefetch_span(v.ptr(p), dv);
    };
    (lo..(lo + PREFETCH_TILES * T).min(hi)).for_each(prefetch);
    let mut t0 = lo;
    while t0 < hi {
        let n_in = (hi - t0).min(T);
        let mut krows = [std::ptr::null::<u16>(); T];
        let mut vrows = [std::ptr::null::<u16>(); T];
        for j in 0..n_in {
            krows[j] = k.ptr(t0 + j);
            vrows[j] = v.ptr(t0 + j);
        }
        ((t0 + PREFETCH_TILES * T).min(hi)..(t0 + (PREFETCH_TILES + 1) * T).min(hi)).for_each(prefetch);
        transpose_tile(&krows[..n_in], dk, &mut kt);
        active.clear();
        active.extend((0..nq).filter(|&i| ranges[i].end > t0 && ranges[i].start < t0 + T));
        live.clear();
        for grp in active.chunks(L::GROUP) {
            scores::<L>(qs, grp, &kt, dk, &mut sc);
            for (g, &i) in grp.iter().enumerate() {
                if tile_softmax(&sc[g], &ranges[i], t0, scale, &mut m[i], &mut s_sum[i], &mut acc[i * dv..(i + 1) * dv], &mut w[i], exp_avx2) {
                    live.push(i);
                }
            }
        }
        for grp in live.chunks(L::GROUP) {
            let spans: [Range<usize>; MAX_GROUP] =
                std::array::from_fn(|g| grp.get(g).map_or(0..0, |&i| ranges[i].start.max(t0) - t0..ranges[i].end.min(t0 + T) - t0));
            for c in (0..dv).step_by(L::CHUNK) {
                values::<L>(grp, &spans[..grp.len()], &w, &vrows, c, dv, acc);
            }
        }
        t0 += T;
    }
    finish(acc, dv, &m, &s_sum, stats);
}

/// The tile's keys transposed into `kt` ([d][key], f16). Columns past
/// `rows` keep what they held (zeros, or an earlier tile's keys): their
/// scores are computed but never read, as no query sees a key past the
/// tile's rows (`tile_softmax` sets an unseen key's weight without reading
/// its score). Zeroing them was a scalar loop over up to 63 x dk values in
/// every range's last tile: Gemma 3 270M's step (`cargo bench --bench
/// attention`, `AT_KV_HEADS=1 AT_QUERIES=4 AT_HEAD_DIM=256`, 24 layers,
/// two interleaved pairs) at depth 100 354-357 -> 273-277 µs, at 130
/// 472-519 -> 348-381 µs.
///
/// # Safety
/// Every row is valid for `dk` elements; `kt` holds `dk * FA_TILE`.
#[inline(always)]
unsafe fn transpose_tile(rows: &[*const u16], dk: usize, kt: &mut [u16]) {
    const T: usize = FA_TILE;
    let n8 = rows.len() / 8 * 8;
    for j0 in (0..n8).step_by(8) {
        let p: [*const u16; 8] = rows[j0..j0 + 8].try_into().unwrap();
        for d0 in (0..dk).step_by(8) {
            let x = transpose8_f16(&p, d0);
            for (k, &xk) in x.iter().enumerate() {
                _mm_storeu_si128(kt.as_mut_ptr().add((d0 + k) * T + j0) as *mut __m128i, xk);
            }
        }
    }
    for (j, &r) in rows.iter().enumerate().skip(n8) {
        for d in 0..dk {
            kt[d * T + j] = *r.add(d);
        }
    }
}

/// Scores of the queries `grp` (at most `L::GROUP`) against the tile, into
/// `out`: per key lane, the fused chain over the dimensions in order.
#[inline(always)]
unsafe fn scores<L: Lanes>(qs: &[&[f32]], grp: &[usize], kt: &[u16], dk: usize, out: &mut [[f32; FA_TILE]; MAX_GROUP]) {
    for c0 in (0..FA_TILE).step_by(L::CHUNK) {
        match grp.len() {
            1 => scores_n::<L, 1>(qs, grp, kt, dk, c0, out),
            2 => scores_n::<L, 2>(qs, grp, kt, dk, c0, out),
            3 => scores_n::<L, 3>(qs, grp, kt, dk, c0, out),
            _ => scores_n::<L, MAX_GROUP>(qs, grp, kt, dk, c0, out),
        }
    }
}

/// Keys c0..c0 + CHUNK of `scores`.
#[inline(always)]
unsafe fn scores_n<L: Lanes, const N: usize>(qs: &[&[f32]], grp: &[usize], kt: &[u16], dk: usize, c0: usize, out: &mut [[f32; FA_TILE]; MAX_GROUP]) {
    let q: [*const f32; N] = std::array::from_fn(|g| qs[grp[g]].as_ptr());
    let mut s = [[L::zero(); VECS]; N];
    let kp = kt.as_ptr().add(c0);
    for d in 0..dk {
        let k: [L; VECS] = std::array::from_fn(|c| L::load_f16(kp.add(d * FA_TILE + L::WIDTH * c)));
        for g in 0..N {
            let qd = L::splat(*q[g].add(d));
            for c in 0..VECS {
                s[g][c] = L::fmadd(qd, k[c], s[g][c]);
            }
        }
    }
    for g in 0..N {
        for c in 0..VECS {
            s[g][c].store(out[g].as_mut_ptr().add(c0 + L::WIDTH * c));
        }
    }
}

/// Value lanes c..c + CHUNK of the queries `grp`: each lane one fused
/// chain over the keys of the query's span, in key order.
#[inline(always)]
unsafe fn values<L: Lanes>(grp: &[usize], spans: &[Range<usize>], w: &[[f32; FA_TILE]], vrows: &[*const u16; FA_TILE], c: usize, dv: usize, acc: &mut [f32]) {
    match grp.len() {
        1 => values_n::<L, 1>(grp, spans, w, vrows, c, dv, acc),
        2 => values_n::<L, 2>(grp, spans, w, vrows, c, dv, acc),
        3 => values_n::<L, 3>(grp, spans, w, vrows, c, dv, acc),
        _ => values_n::<L, MAX_GROUP>(grp, spans, w, vrows, c, dv, acc),
    }
}

#[inline(always)]
unsafe fn values_n<L: Lanes, const N: usize>(
    grp: &[usize],
    spans: &[Range<usize>],
    w: &[[f32; FA_TILE]],
    vrows: &[*const u16; FA_TILE],
    c: usize,
    dv: usize,
    acc: &mut [f32],
) {
    let a: [*mut f32; N] = std::array::from_fn(|g| acc.as_mut_ptr().add(grp[g] * dv + c));
    let mut loc: [[L; VECS]; N] = std::array::from_fn(|g| std::array::from_fn(|v| L::load(a[g].add(L::WIDTH * v))));
    let j_lo = spans.iter().map(|s| s.start).min().unwrap_or(0);
    let j_hi = spans.iter().map(|s| s.end).max().unwrap_or(0);
    let uniform = spans.iter().all(|s| *s == spans[0]);
    for j in j_lo..j_hi {
        let vp = vrows[j].add(c);
        let v: [L; VECS] = std::array::from_fn(|k| L::load_f16(vp.add(L::WIDTH * k)));
        for g in 0..N {
            if uniform || spans[g].contains(&j) {
                let wj = L::splat(w[grp[g]][j]);
                for k in 0..VECS {
                    loc[g][k] = L::fmadd(wj, v[k], loc[g][k]);
                }
            }
        }
    }
    for g in 0..N {
        for k in 0..VECS {
            loc[g][k].store(a[g].add(L::WIDTH * k));
        }
    }
}
