//! The token loop every fast kernel shares: tiles against tokens in groups
//! of up to 8, each group's results stored per row; the ISA modules supply
//! one tile's kernel (`Kernel`) and compile this loop with their features.

use super::layout::Geometry;
use std::arch::x86_64::*;

/// Bytes of weights ahead to prefetch into L2 (every fast kernel).
/// Streaming Qwen 1.5B's 191 MB Q6_K output matrix for one token at -t 2
/// (`cargo bench --bench matmul -- "1.5b/q6_K 151936"`, GB/s): into L1 3
/// blocks ahead (the earlier setting) 14-18, no prefetch 14, L1 12 blocks
/// ahead 15; into L2 6 blocks ahead 24, 12: 28-35, 20-32: 28-30 (exact
/// kernels: 28). Prefetching many lines into L1 fills its miss buffers; L2
/// keeps them for the loads. tg64 of the whole model, fast mode: 15-16 t/s
/// before, 20-26 after (exact 17-22). 64 KB rather than 32 helps one thread
/// (tg, 3 runs each: Qwen 0.5B Q8_0 -t 1 29.4-31.4 -> 30.5-35.7 t/s, Qwen
/// 1.5B -t 1 13.3-14.5 -> 14.0-15.3) and costs nothing at -t 2 (19.4-24.3 ->
/// 21.6-24.4). Prefetching the tiles' byte stream (values and meta, across
/// tiles; `prefetch_l2`) instead of each block's values and one meta line
/// (which skipped every tile's meta region and aimed the meta hint into the
/// next tile): tg64, 3 runs each, Qwen 0.5B Q4_0 -t 1 43-46 -> 51-54 t/s,
/// -t 2 62-70 -> 69-78; Qwen 1.5B Q4_K_M -t 1 14.4-15.2 -> 19.5-20.2, -t 2
/// 21.9-25.5 -> 25.5-29.3. With a tile one stream (`Geometry::group`), the
/// prefetch still pays: Gemma's 262144 x 640 Q8_0 output for one token,
/// caches evicted between passes, -t 2, medians of alternating runs, 6.20 ms
/// with it, 7.24 without; -t 1, 32 / 64 / 128 / 256 KB ahead 9.39 / 8.49 /
/// 8.93 / 8.95 ms. Once the loads ran in address order (`avx512::load64`),
/// the 32-element types streamed faster without it for one token
/// (`Geometry::prefetch_tokens`).
pub const PREFETCH_L2_BYTES: usize = 64 << 10;

/// Fetch into L2 the bytes `PREFETCH_L2_BYTES` ahead of super-block `b` of
/// the tile at `w` (`nb` blocks): one block's share (values + meta) of the
/// tiles' byte stream per call, so the prefetches run on through the
/// groups' meta and across tiles (the hardware prefetcher does not run far
/// enough ahead here). Nothing at or past `end`, the end of the caller's
/// range of tiles: past it lie another thread's tiles or another matrix.
/// Nothing for a call of fewer `tokens` than the geometry prefetches for.
#[inline(always)]
pub unsafe fn prefetch_l2(w: *const u8, end: *const u8, b: usize, g: Geometry, tokens: usize) {
    if tokens < g.prefetch_tokens {
        return;
    }
    let step = g.values + g.meta;
    let f = w.wrapping_add(PREFETCH_L2_BYTES + b * step);
    if f >= end {
        return;
    }
    for l in (0..step).step_by(64) {
        _mm_prefetch::<_MM_HINT_T1>(f.add(l) as *const i8);
    }
}

/// A tile kernel, for the shared token loop.
pub trait Kernel {
    /// One token's activations as the tile kernel reads them.
    type Act: Copy;
    /// A tile's results for one token, `ROWS` lanes.
    type Acc: Copy;
    const ROWS: usize;
    const G: Geometry;
    /// Token t of `n` in `a` (rows of `arb` bytes, then whatever the
    /// activation format appends, e.g. `acts32`'s sides).
    unsafe fn act(a: &[u8], arb: usize, n: usize, nb: usize, t: usize) -> Self::Act;
    /// One tile (64-byte aligned, `nb` blocks) against T tokens; `end` is
    /// the end of the range of tiles (`prefetch_l2`'s limit).
    unsafe fn tile<const T: usize>(w: *const u8, end: *const u8, nb: usize, acts: &[Self::Act; T]) -> [Self::Acc; T];
    /// The first `valid` lanes of `v` to `o`.
    unsafe fn store(v: Self::Acc, o: *mut f32, valid: usize);
}

/// Every tile against tokens t0..t0+T.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tokens<K: Kernel, const T: usize>(
    w: &[u8],
    nb: usize,
    ntiles: usize,
    a: &[u8],
    arb: usize,
    n: usize,
    t0: usize,
    out: *mut f32,
    ostride: usize,
    nrows: usize,
) {
    let acts: [K::Act; T] = std::array::from_fn(|t| K::act(a, arb, n, nb, t0 + t));
    let end = w.as_ptr_range().end;
    for i in 0..ntiles {
        let acc = K::tile::<T>(w.as_ptr().add(i * K::G.tile_bytes(nb)), end, nb, &acts);
        let r0 = i * K::ROWS;
        let valid = (nrows - r0).min(K::ROWS);
        for (t, v) in acc.into_iter().enumerate() {
            K::store(v, out.add((t0 + t) * ostride + r0), valid);
        }
    }
}

/// 8 lanes to `o`, the first `valid` of them.
#[inline(always)]
pub unsafe fn store8(v: __m256, o: *mut f32, valid: usize) {
    if valid == 8 {
        _mm256_storeu_ps(o, v);
    } else {
        let mut tmp = [0f32; 8];
        _mm256_storeu_ps(tmp.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), o, valid);
    }
}

/// 16 lanes as two halves to `o`, the first `valid` of them (the AVX2
/// kernels of 16-row tiles).
#[inline(always)]
pub unsafe fn store16(v: [__m256; 2], o: *mut f32, valid: usize) {
    store8(v[0], o, valid.min(8));
    if valid > 8 {
        store8(v[1], o.add(8), valid - 8);
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
        let args = (w, nb, ntiles, a, arb, ntok, t0, out, ostride, nrows);
        match n {
            8 => call::<K, 8>(args),
            7 => call::<K, 7>(args),
            6 => call::<K, 6>(args),
            5 => call::<K, 5>(args),
            4 => call::<K, 4>(args),
            3 => call::<K, 3>(args),
            2 => call::<K, 2>(args),
            _ => call::<K, 1>(args),
        }
        t0 += n;
    }
}

type Args<'a> = (&'a [u8], usize, usize, &'a [u8], usize, usize, usize, *mut f32, usize, usize);

#[inline(always)]
unsafe fn call<K: Kernel, const T: usize>((w, nb, ntiles, a, arb, n, t0, out, ostride, nrows): Args) {
    tokens::<K, T>(w, nb, ntiles, a, arb, n, t0, out, ostride, nrows)
}

/// `gemm` for kernel `$k` as a `FastGemmFn` named `$name`, compiled with
/// the features of `AVX2` or `AVX512_VNNI` (the callers' `gemm` in scope).
macro_rules! gemm_fn {
    (AVX2, $name:ident, $k:ty) => {
        gemm_fn!(@ "avx2,fma,f16c", $name, $k);
    };
    (AVX512_VNNI, $name:ident, $k:ty) => {
        gemm_fn!(@ "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", $name, $k);
    };
    (@ $feat:literal, $name:ident, $k:ty) => {
        #[target_feature(enable = $feat)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn $name(w: &[u8], nb: usize, ntiles: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize, nrows: usize) {
            gemm::<$k>(w, nb, ntiles, a, arb, ntok, out, ostride, nrows)
        }
    };
}
pub(super) use gemm_fn;
