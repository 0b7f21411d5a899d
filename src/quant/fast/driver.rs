//! The token loop every fast kernel shares: tiles against tokens in groups
//! of up to 8, each group's results stored per row; the ISA modules supply
//! one tile's kernel (`Kernel`) and compile this loop with their features.

use super::layout::Geometry;
use super::TILE_ROWS;
use std::arch::x86_64::*;

/// Bytes of weights ahead to prefetch into L2 (every fast kernel).
/// Streaming Qwen 1.5B's 191 MB Q6_K output matrix for one token at -t 2
/// (`cargo bench --bench matmul -- "1.5b/q6_K 151936"`, GB/s): into L1 3
/// blocks ahead (the earlier setting) 14-18, no prefetch 14, L1 12 blocks
/// ahead 15; into L2 6 blocks ahead 24, 12: 28-35, 20-32: 28-30 (exact
/// kernels: 28). Prefetching many lines into L1 fills its miss buffers; L2
/// keeps them for the loads. tg64 of the whole model, fast mode: 15-16 t/s
/// before, 20-26 after (exact 17-22).
pub const PREFETCH_L2_BYTES: usize = 32 << 10;

/// Fetch the values and meta of the super-block `PREFETCH_L2_BYTES` ahead
/// of the one at `p` / `mt` into L2 (the hardware prefetcher does not run
/// far enough ahead here).
#[inline(always)]
pub unsafe fn prefetch_l2(p: *const u8, mt: *const u8, g: Geometry) {
    let ahead = (PREFETCH_L2_BYTES / g.values).max(1);
    let f = p.add(ahead * g.values);
    for l in (0..g.values).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(f.add(l) as *const i8);
    }
    _mm_prefetch::<_MM_HINT_T1>(mt.add(ahead * g.meta) as *const i8);
}

/// A tile kernel of either family, for the shared token loop.
pub trait Kernel {
    /// The activation block type.
    type Act;
    const G: Geometry;
    /// One tile (64-byte aligned, `nb` blocks) against T tokens.
    unsafe fn tile<const T: usize>(w: *const u8, nb: usize, acts: &[*const Self::Act; T]) -> [__m256; T];
}

/// Every tile against tokens t0..t0+T.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tokens<K: Kernel, const T: usize>(w: &[u8], nb: usize, ntiles: usize, a: &[u8], arb: usize, t0: usize, out: *mut f32, ostride: usize, nrows: usize) {
    let acts: [*const K::Act; T] = std::array::from_fn(|t| a.as_ptr().add((t0 + t) * arb) as *const K::Act);
    for i in 0..ntiles {
        let acc = K::tile::<T>(w.as_ptr().add(i * K::G.tile_bytes(nb)), nb, &acts);
        store_tile(&acc, i, t0, out, ostride, nrows);
    }
}

/// Tile i's 8 rows for tokens t0.. into `out` (rows from `nrows` on are padding).
#[inline(always)]
unsafe fn store_tile<const T: usize>(acc: &[__m256; T], i: usize, t0: usize, out: *mut f32, ostride: usize, nrows: usize) {
    let r0 = i * TILE_ROWS;
    let valid = (nrows - r0).min(TILE_ROWS);
    for (t, v) in acc.iter().enumerate() {
        let o = out.add((t0 + t) * ostride + r0);
        if valid == TILE_ROWS {
            _mm256_storeu_ps(o, *v);
        } else {
            let mut tmp = [0f32; TILE_ROWS];
            _mm256_storeu_ps(tmp.as_mut_ptr(), *v);
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, valid);
        }
    }
}

/// Tokens in groups of 8 (the last group smaller); each token's results are
/// the same in any group.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm<K: Kernel>(w: &[u8], nb: usize, ntiles: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize, nrows: usize) {
    let mut t0 = 0;
    while t0 < ntok {
        let n = (ntok - t0).min(8);
        match n {
            8 => tokens::<K, 8>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
            7 => tokens::<K, 7>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
            6 => tokens::<K, 6>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
            5 => tokens::<K, 5>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
            4 => tokens::<K, 4>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
            3 => tokens::<K, 3>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
            2 => tokens::<K, 2>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
            _ => tokens::<K, 1>(w, nb, ntiles, a, arb, t0, out, ostride, nrows),
        }
        t0 += n;
    }
}
