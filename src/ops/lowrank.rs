//! Fast mode's low-rank product `out += scale * B (A x)` (LoRA pairs),
//! batch-invariant: every (token, rank) value of `A x` is one 16-lane dot in
//! a fixed order, and every output row sums its rank terms in order from 0,
//! whatever the batch size and however the work is split over threads.
//!
//! The pair is kept in its file's precision where that is F16 (half the
//! bytes of f32: a rank-16 adapter on Qwen 1.5B is 5% of the weights a step
//! reads in F16, 9% in f32) and widened in registers; anything else is kept
//! as f32. SIMD and scalar paths give the same bits (no fused multiply-add:
//! every product is rounded, then added).

use crate::gguf::GgmlType;
use crate::parallel::{for_each, n_threads, SendPtr};
use crate::quant::float::{reduce16, LANES};
use half::f16;

/// An element the pair is stored in.
pub trait Elem: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}
impl Elem for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}
impl Elem for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

/// `A`'s rows (rank x cols) and `B` in blocks of `ROW_BLOCK` output rows,
/// each block transposed (rank runs of its rows), so one block is one
/// contiguous stream and its rows' sums stay in registers.
pub struct Pair<T> {
    pub a: Vec<T>,
    pub b: Vec<T>,
}

/// Output rows per block of `B`.
pub const ROW_BLOCK: usize = 64;

/// A pair in the precision it is stored in.
pub enum LowRank {
    F16(Pair<f16>),
    F32(Pair<f32>),
}

/// Work items of the B product per thread (blocks are grouped into items).
const ITEMS_PER_THREAD: usize = 4;
/// Rank values per work item of the A product.
const RANKS_PER_ITEM: usize = 4;

impl LowRank {
    /// From `a` (rank rows of `cols`) and `b` (rows of `rank`) as f32, kept
    /// in F16 when both came from F16 (so no value changes).
    pub fn new(a: Vec<f32>, b: Vec<f32>, rank: usize, rows: usize, both_f16: bool) -> LowRank {
        let mut bb = Vec::with_capacity(rank * rows);
        for r0 in (0..rows).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(rows);
            for k in 0..rank {
                bb.extend((r0..r1).map(|r| b[r * rank + k]));
            }
        }
        if both_f16 {
            let h = |v: &[f32]| v.iter().map(|&x| f16::from_f32(x)).collect();
            LowRank::F16(Pair { a: h(&a), b: h(&bb) })
        } else {
            LowRank::F32(Pair { a, b: bb })
        }
    }

    /// Whether a pair of these types is kept in F16.
    pub fn keeps_f16(a: GgmlType, b: GgmlType) -> bool {
        a == GgmlType::F16 && b == GgmlType::F16
    }

    /// out[t * rows + r] += scale * (B (A x[t]))[r] for the `n` rows of `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn add(&self, rank: usize, cols: usize, rows: usize, scale: f32, x: &[f32], n: usize, mid: &mut Vec<f32>, out: &mut [f32]) {
        match self {
            LowRank::F16(p) => add_pair(p, rank, cols, rows, scale, x, n, mid, out),
            LowRank::F32(p) => add_pair(p, rank, cols, rows, scale, x, n, mid, out),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn add_pair<T: Elem>(p: &Pair<T>, rank: usize, cols: usize, rows: usize, scale: f32, x: &[f32], n: usize, mid: &mut Vec<f32>, out: &mut [f32]) {
    let k_items = rank.div_ceil(RANKS_PER_ITEM);
    mid.resize(n * rank, 0.0);
    let pm = SendPtr(mid.as_mut_ptr());
    for_each(n * k_items, |i| {
        let (t, k0) = (i / k_items, (i % k_items) * RANKS_PER_ITEM);
        for k in k0..(k0 + RANKS_PER_ITEM).min(rank) {
            let v = dot(&p.a[k * cols..(k + 1) * cols], &x[t * cols..(t + 1) * cols]);
            // SAFETY: (t, k) belongs to this item only, inside mid.
            unsafe { *pm.get().add(t * rank + k) = v };
        }
    });
    let po = SendPtr(out.as_mut_ptr());
    let n_blocks = rows.div_ceil(ROW_BLOCK);
    let per_item = n_blocks.div_ceil(n_threads() * ITEMS_PER_THREAD).max(1);
    let mid = &*mid;
    for_each(n_blocks.div_ceil(per_item), |item| {
        for blk in item * per_item..((item + 1) * per_item).min(n_blocks) {
            let (r0, len) = (blk * ROW_BLOCK, ROW_BLOCK.min(rows - blk * ROW_BLOCK));
            let bb = &p.b[r0 * rank..r0 * rank + len * rank];
            for t in 0..n {
                // SAFETY: (t, rows of this block): one item's only, inside out.
                let o = unsafe { std::slice::from_raw_parts_mut(po.get().add(t * rows + r0), len) };
                block(bb, &mid[t * rank..(t + 1) * rank], scale, o);
            }
        }
    });
}

/// o[i] += scale * sum over k in order of b[k][i] * m[k], for one block of
/// `o.len()` rows (`b` holds rank runs of them).
pub fn block<T: Elem>(b: &[T], m: &[f32], scale: f32, o: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if o.len() == ROW_BLOCK && crate::quant::simd::has_avx2() {
        // SAFETY: avx2 and f16c detected; b holds m.len() runs of ROW_BLOCK.
        return unsafe { simd::block(b, m, scale, o) };
    }
    block_scalar(b, m, scale, o)
}

/// The scalar reference of `block`.
pub fn block_scalar<T: Elem>(b: &[T], m: &[f32], scale: f32, o: &mut [f32]) {
    let len = o.len();
    for (i, o) in o.iter_mut().enumerate() {
        let mut acc = 0f32;
        for (k, &mk) in m.iter().enumerate() {
            acc += b[k * len + i].to_f32() * mk;
        }
        *o += acc * scale;
    }
}

/// sum a[i] * x[i]: lane l sums elements l, l + 16, ... (each product
/// rounded, then added), the lanes then reduced as `reduce16`.
pub fn dot<T: Elem>(a: &[T], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        // SAFETY: avx2 and f16c detected.
        return unsafe { simd::dot(a, x) };
    }
    dot_scalar(a, x)
}

/// The scalar reference of `dot`.
pub fn dot_scalar<T: Elem>(a: &[T], x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let n = a.len().min(x.len());
    for (i, (&w, &v)) in a[..n].iter().zip(&x[..n]).enumerate() {
        acc[i % LANES] += w.to_f32() * v;
    }
    reduce16(&acc)
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{Elem, LANES};
    use half::f16;
    use std::any::TypeId;
    use std::arch::x86_64::*;

    /// 8 elements from `p` as f32 (F16 widened by F16C).
    #[inline(always)]
    unsafe fn load8<T: Elem>(p: *const T) -> __m256 {
        if TypeId::of::<T>() == TypeId::of::<f16>() {
            _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
        } else {
            _mm256_loadu_ps(p as *const f32)
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dot<T: Elem>(a: &[T], x: &[f32]) -> f32 {
        let n = a.len().min(x.len());
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + LANES <= n {
            lo = _mm256_add_ps(lo, _mm256_mul_ps(load8(a.as_ptr().add(i)), _mm256_loadu_ps(x.as_ptr().add(i))));
            hi = _mm256_add_ps(hi, _mm256_mul_ps(load8(a.as_ptr().add(i + 8)), _mm256_loadu_ps(x.as_ptr().add(i + 8))));
            i += LANES;
        }
        let mut acc = [0f32; LANES];
        _mm256_storeu_ps(acc.as_mut_ptr(), lo);
        _mm256_storeu_ps(acc.as_mut_ptr().add(8), hi);
        for (l, j) in (i..n).enumerate() {
            acc[l] += a[j].to_f32() * x[j];
        }
        super::reduce16(&acc)
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn block<T: Elem>(b: &[T], m: &[f32], scale: f32, o: &mut [f32]) {
        const V: usize = super::ROW_BLOCK / 8;
        let mut acc = [_mm256_setzero_ps(); V];
        for (k, &mk) in m.iter().enumerate() {
            let (mv, p) = (_mm256_set1_ps(mk), b.as_ptr().add(k * super::ROW_BLOCK));
            for (v, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_ps(*a, _mm256_mul_ps(load8(p.add(8 * v)), mv));
            }
        }
        let s = _mm256_set1_ps(scale);
        for (v, a) in acc.iter().enumerate() {
            let q = o.as_mut_ptr().add(8 * v);
            _mm256_storeu_ps(q, _mm256_add_ps(_mm256_loadu_ps(q), _mm256_mul_ps(*a, s)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(n: usize, seed: u32) -> Vec<f32> {
        (0..n).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 333.0 - 1.5).collect()
    }

    /// SIMD and scalar give the same bits, both element types, odd lengths.
    #[test]
    fn simd_matches_scalar_bitwise() {
        for n in [1, 7, 8, 15, 16, 17, 40, 1536, 1541] {
            let (a, x) = (vals(n, 1), vals(n, 2));
            let h: Vec<f16> = a.iter().map(|&v| f16::from_f32(v)).collect();
            assert_eq!(dot(&a, &x).to_bits(), dot_scalar(&a, &x).to_bits(), "f32 dot {n}");
            assert_eq!(dot(&h, &x).to_bits(), dot_scalar(&h, &x).to_bits(), "f16 dot {n}");
        }
        for rank in [1, 3, 16] {
            let (b, m) = (vals(rank * ROW_BLOCK, 6), vals(rank, 7));
            let h: Vec<f16> = b.iter().map(|&v| f16::from_f32(v)).collect();
            let (mut p, mut q) = (vals(ROW_BLOCK, 8), vals(ROW_BLOCK, 8));
            block(&h, &m, 0.37, &mut p);
            block_scalar(&h, &m, 0.37, &mut q);
            assert_eq!(p, q, "f16 block rank {rank}");
            block(&b, &m, -1.1, &mut p);
            block_scalar(&b, &m, -1.1, &mut q);
            assert_eq!(p, q, "f32 block rank {rank}");
        }
    }

    /// The product equals a plain evaluation, and a token's result does not
    /// depend on the batch it is in.
    #[test]
    fn batch_invariant_low_rank_product() {
        let (rank, cols, rows, n) = (5, 37, 150, 4);
        let (a, b, x) = (vals(rank * cols, 3), vals(rows * rank, 4), vals(n * cols, 5));
        for f16 in [false, true] {
            let lr = LowRank::new(a.clone(), b.clone(), rank, rows, f16);
            let mut mid = Vec::new();
            let mut all = vec![0.5f32; n * rows];
            lr.add(rank, cols, rows, 2.0, &x, n, &mut mid, &mut all);
            for t in 0..n {
                let mut one = vec![0.5f32; rows];
                lr.add(rank, cols, rows, 2.0, &x[t * cols..(t + 1) * cols], 1, &mut mid, &mut one);
                assert_eq!(one, all[t * rows..(t + 1) * rows], "token {t} f16 {f16}");
                for r in 0..rows {
                    let want: f32 = (0..rank).map(|k| b[r * rank + k] * (0..cols).map(|c| a[k * cols + c] * x[t * cols + c]).sum::<f32>()).sum();
                    assert!((one[r] - 0.5 - 2.0 * want).abs() < 0.05 * (1.0 + want.abs()), "row {r}: {} vs {}", one[r] - 0.5, 2.0 * want);
                }
            }
        }
    }
}
