//! Fast mode: kernels free to round differently from ggml, and batch-invariant.
//!
//! Weights are repacked at load into tiles of `TILE_ROWS` rows (`layout`), so
//! one 512-bit VNNI instruction multiplies 8 elements of all 8 rows with a
//! token's activations broadcast, and the per-block float work is done once
//! for the 8 rows in one vector. Every (row, token) result follows one fixed
//! formula (`dot_ref`), whatever the batch it is computed in: integer sums
//! are exact, and the float steps per super-block are the same ops in the
//! same order. So a token's logits do not depend on how many tokens share its
//! matmul, and verifying drafts can use the multi-token kernels. Without
//! AVX-512 VNNI, AVX2 kernels read the same tiles as two 256-bit halves
//! (`avx2`) and give the same bits; `driver` holds the token loop both share.
//! The 32-element block types have their own 16-row tiles (`layout32`,
//! `avx512_32`, formula `dot_ref32`) and read their activations' block sums
//! (`acts32`), on AVX2 too (`avx2_32`).
//!
//! Exact mode (`--exact`, `RLLAMA_EXACT=1`) keeps ggml's kernels, bit for bit.

pub mod acts32;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx2_32;
#[cfg(target_arch = "x86_64")]
mod avx2_exact32;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_32;
#[cfg(target_arch = "x86_64")]
mod driver;
pub mod layout;
pub mod layout32;
#[cfg(test)]
mod layout_ref;
#[cfg(target_arch = "x86_64")]
mod meta;

use super::blocks::BlockQ8K;
use super::kquants::{BlockK, QK_K};
use super::legacy::Block32;
use crate::gguf::GgmlType;
use std::sync::atomic::{AtomicU8, Ordering};

/// Rows per tile of the fast layout.
pub const TILE_ROWS: usize = 8;

const MODE_UNSET: u8 = 0;
const MODE_EXACT: u8 = 1;
const MODE_FAST: u8 = 2;
static MODE: AtomicU8 = AtomicU8::new(MODE_UNSET);

/// Whether matrices loaded from now on use ggml's exact kernels (the
/// `RLLAMA_EXACT` environment variable, unless `set_exact` said otherwise).
pub fn exact() -> bool {
    match MODE.load(Ordering::Relaxed) {
        MODE_UNSET => {
            let e = std::env::var_os("RLLAMA_EXACT").is_some_and(|v| !v.is_empty() && v != "0");
            MODE.store(if e { MODE_EXACT } else { MODE_FAST }, Ordering::Relaxed);
            e
        }
        m => m == MODE_EXACT,
    }
}

/// Choose exact (true) or fast kernels for matrices loaded from now on.
pub fn set_exact(e: bool) {
    MODE.store(if e { MODE_EXACT } else { MODE_FAST }, Ordering::Relaxed);
}

/// `gemm(tiles, blocks_per_row, n_tiles, acts, act_row_bytes, n_tok, out,
/// out_stride, n_rows)`: out[t * out_stride + r] for rows r < n_rows of the
/// tiles (the last tile may be partly padding). The kernel runs the first
/// `n_tiles` tiles of `tiles` and prefetches no further than its end, so a
/// caller passes the rest of its range of tiles beyond them.
///
/// # Safety
/// `tiles` holds at least `n_tiles` tiles of the kernel's type with `blocks_per_row`
/// super-blocks each; `acts` holds `n_tok` rows of Q8_K blocks; `out` is valid
/// for every index written; the CPU has the kernel's features.
pub type FastGemmFn = unsafe fn(&[u8], usize, usize, &[u8], usize, usize, *mut f32, usize, usize);

/// A weight type's fast kernel and its layout.
#[derive(Clone, Copy)]
pub struct FastKernels {
    pub ty: GgmlType,
    /// Rows per tile.
    pub rows: usize,
    /// The layout's bytes per super-block (see `layout`).
    pub geometry: layout::Geometry,
    /// Repack `rows` rows (`row_bytes` each) into tiles (rows padded with zeros).
    pub pack: fn(&[u8], usize, usize) -> super::AlignedBytes,
    pub gemm: FastGemmFn,
}

/// The fast kernels of `ty` on this CPU, if any (else exact kernels run).
///
/// The 32-element block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, IQ4_NL) are in
/// unless RLLAMA_FAST32=0 (their 16-row kernels: Qwen 0.5B Q4_K_M, mostly
/// Q5_0 and Q8_0, pp64 253 -> 443-556 t/s with tg unchanged, 61 t/s, -t 2).
pub fn kernels(ty: GgmlType) -> Option<FastKernels> {
    static WITH_32: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let with_32 = *WITH_32.get_or_init(|| std::env::var_os("RLLAMA_FAST32").is_none_or(|v| v != "0"));
    kernels_with(ty, with_32)
}

/// `kernels`, choosing explicitly whether the 32-element block types are in:
/// the first of `kernel_variants` (the fastest ISA that has the type).
pub fn kernels_with(ty: GgmlType, with_32: bool) -> Option<FastKernels> {
    kernel_variants(ty, with_32).into_iter().next().map(|(_, k)| k)
}

/// Exact mode's tiled kernels (Q4_K on AVX2 machines): `gemv.gemm` rounds
/// every token as llama.cpp's repacked GEMV (a batch's last n % 4 tokens),
/// `groups4` as its GEMM (the first n - n % 4); same bits as the per-row
/// kernels (unit test against `dot_for`).
#[derive(Clone, Copy)]
pub struct ExactTiles {
    pub gemv: FastKernels,
    pub groups4: FastGemmFn,
}

/// `ExactTiles` of `ty` on this CPU, if any.
pub fn exact_tiles(ty: GgmlType) -> Option<ExactTiles> {
    #[cfg(target_arch = "x86_64")]
    if ty == GgmlType::Q4_K && super::simd::has_avx2() {
        return Some(avx2::q4k_exact());
    }
    let _ = ty;
    None
}

/// Exact mode's kernel for a matrix of `ty` with `rows` rows, where
/// llama.cpp's x86 build rounds it as a fast kernel does: on AVX2 machines it
/// repacks Q4_0 and IQ4_NL matrices whose row count is a multiple of 8
/// (`q4_0_8x8`, `iq4_nl_8x8`), and their GEMV and GEMM round every token as
/// `dot_ref32` (per block acc = fma(S, d_w * d_a, acc), S the block's exact
/// integer sum), the formula of the fast 32-element kernels in any batch.
/// Other shapes keep ggml's `vec_dot`.
pub fn exact_as_fast(ty: GgmlType, rows: usize) -> Option<FastKernels> {
    const GGML_REPACK_ROWS: usize = 8;
    if !matches!(ty, GgmlType::Q4_0 | GgmlType::IQ4_NL) || !rows.is_multiple_of(GGML_REPACK_ROWS) {
        return None;
    }
    kernels_with(ty, true)
}

/// Exact mode's tiled kernel for the other 32-element matrices on AVX2
/// machines without AVX-512 VNNI (which keep their VNNI kernels): ggml's
/// `vec_dot` rounding on the fast tiles (`avx2_exact32`).
pub fn exact_lanes(ty: GgmlType) -> Option<FastKernels> {
    #[cfg(target_arch = "x86_64")]
    if !has_avx512_vnni() {
        return exact_lanes_avx2(ty);
    }
    let _ = ty;
    None
}

/// `exact_lanes` on any AVX2 machine (the tests run it on AVX-512 ones too).
#[cfg(target_arch = "x86_64")]
pub fn exact_lanes_avx2(ty: GgmlType) -> Option<FastKernels> {
    super::simd::has_avx2().then(|| avx2_exact32::kernels(ty)).flatten()
}

/// Every fast kernel set of `ty` this CPU can run, fastest first, by name
/// (the tests check each against `dot_ref`).
pub fn kernel_variants(ty: GgmlType, with_32: bool) -> Vec<(&'static str, FastKernels)> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        // the super-block types' kernels, else the 32-element ones'
        if has_avx512_vnni() {
            v.extend(avx512::kernels(ty).or_else(|| avx512_32::kernels(ty).filter(|_| with_32)).map(|k| ("avx512-vnni", k)));
        }
        if super::simd::has_avx2() {
            v.extend(avx2::kernels(ty).or_else(|| avx2_32::kernels(ty).filter(|_| with_32)).map(|k| ("avx2", k)));
        }
    }
    let _ = (ty, with_32);
    v
}

/// AVX-512 F/BW/VL with VNNI (Zen 4, Ice Lake and later).
pub fn has_avx512_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::simd::has_avx2() && super::simd::avx2::has_vnni()
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The fast formula for one row and one token, the truth every fast kernel
/// reproduces bit for bit. Per super-block, with q, sc, m as `BlockK` decodes
/// them and bsum the activation sums per 16:
/// S = sum_g sc[g] * sum_(i in g) q[i] a[i],  M = sum_g m[g] * bsum[g] (exact
/// integers), then acc = fma(d_a, d * S - dmin * M, acc) in f32.
pub fn dot_ref<B: BlockK>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    let mut q = [0i8; QK_K];
    for (w, a) in w.iter().zip(a) {
        let s = w.scales();
        w.quants(&mut q);
        let m = s.m.unwrap_or([0; 16]);
        let (mut isum, mut msum) = (0i32, 0i32);
        for g in 0..16 {
            let d: i32 = (g * 16..g * 16 + 16).map(|i| q[i] as i32 * a.qs[i] as i32).sum();
            isum += d * s.sc[g] as i32;
            msum += m[g] as i32 * a.bsums[g] as i32;
        }
        let v = s.d * isum as f32 - s.dmin * msum as f32;
        acc = a.d.mul_add(v, acc);
    }
    acc
}

/// The fast formula of the 32-element block types (Q8_0 or Q8_1
/// activations): per block S = sum w a (exact integers), acc = fma(d_w * d_a,
/// S, acc), and with a min m_w, then acc = fma(m_w, d_a * sum a, acc).
pub fn dot_ref32<B: Block32, A: acts32::ActBlock32>(w: &[B], a: &[A]) -> f32 {
    let mut acc = 0.0f32;
    for (w, a) in w.iter().zip(a) {
        let s: i32 = w.unpack().iter().zip(a.qs()).map(|(&x, &y)| x as i32 * y as i32).sum();
        acc = (w.d() * a.d()).mul_add(s as f32, acc);
        if let Some(m) = w.m() {
            acc = m.mul_add(acts32::Side::of(a).ds, acc);
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::{cast_blocks, f32_to_f16, BlockQ4K, BlockQ6K, BlockQ8_0};
    use crate::quant::kquants::{dot_q8_k, quantize_q8_k};
    use crate::quant::quantize::quantize_row;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn f32(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// `rows` rows of `cols` of type `ty`: quantized from random floats, and
    /// (every third row) raw random bytes with sane f16 scales, so extremes
    /// (q = 15 or 63, negative Q6_K scales) occur.
    fn weights(ty: GgmlType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
        let rb = ty.row_bytes(cols).unwrap();
        let mut w = vec![0u8; rows * rb];
        for r in 0..rows {
            let row = &mut w[r * rb..(r + 1) * rb];
            if r % 3 == 2 {
                // row 2: every bit set (the largest quants and scales)
                row.iter_mut().for_each(|b| *b = (rng.next() as u8) | if r == 2 { 0xFF } else { 0 });
                let bb = ty.block_bytes();
                for blk in row.chunks_mut(bb) {
                    let d = f32_to_f16(rng.f32() * 0.01).to_le_bytes();
                    match ty {
                        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q4_1 | GgmlType::Q5_1 => {
                            blk[0..2].copy_from_slice(&d);
                            blk[2..4].copy_from_slice(&f32_to_f16(rng.f32() * 0.01).to_le_bytes());
                        }
                        GgmlType::Q6_K | GgmlType::Q3_K => blk[bb - 2..].copy_from_slice(&d),
                        GgmlType::Q2_K => {
                            blk[bb - 4..bb - 2].copy_from_slice(&d);
                            blk[bb - 2..].copy_from_slice(&f32_to_f16(rng.f32() * 0.01).to_le_bytes());
                        }
                        GgmlType::IQ4_XS => blk[0..2].copy_from_slice(&f32_to_f16(rng.f32() * 0.001).to_le_bytes()),
                        _ => blk[0..2].copy_from_slice(&d),
                    }
                }
            } else {
                let x: Vec<f32> = (0..cols).map(|_| rng.f32()).collect();
                quantize_row(ty, &x, row).unwrap();
            }
        }
        w
    }

    fn acts(n: usize, cols: usize, rng: &mut Rng) -> Vec<BlockQ8K> {
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f32() * 3.0).collect();
        let mut a = vec![BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; 16] }; n * cols / QK_K];
        quantize_q8_k(&x, &mut a);
        // one token at the Q8_K extremes, and one past them (-128: the most
        // an i8 holds, the worst case for the AVX2 kernels' i16 sums)
        for (bi, b) in a[..2 * cols / QK_K].iter_mut().enumerate() {
            let first = bi < cols / QK_K;
            b.qs.iter_mut().enumerate().for_each(|(i, q)| {
                *q = if !first {
                    -128
                } else if i % 2 == 0 {
                    127
                } else {
                    -127
                }
            });
            for g in 0..16 {
                b.bsums[g] = b.qs[g * 16..g * 16 + 16].iter().map(|&q| q as i16).sum();
            }
        }
        a
    }

    /// Tokens t0..t0+n of `a` (`nb` blocks per token) through the kernel,
    /// the activations laid out by `bytes` (rows, then any sides).
    fn run<A>(k: &FastKernels, tiles: &[u8], cols: usize, rows: usize, a: &[A], t0: usize, n: usize, bytes: fn(&[A], usize) -> Vec<u8>) -> Vec<f32> {
        let nb = cols / k.ty.block_elems();
        let buf = bytes(&a[t0 * nb..(t0 + n) * nb], n);
        let arb = nb * std::mem::size_of::<A>();
        let mut out = vec![f32::NAN; n * rows];
        unsafe { (k.gemm)(tiles, nb, rows.div_ceil(k.rows), &buf, arb, n, out.as_mut_ptr(), rows, rows) };
        out
    }

    /// Activation rows as bytes (the super-block types append nothing).
    fn plain<A>(a: &[A], _: usize) -> Vec<u8> {
        unsafe { std::slice::from_raw_parts(a.as_ptr() as *const u8, std::mem::size_of_val(a)) }.to_vec()
    }

    fn check<B: BlockK>(ty: GgmlType) {
        let variants = kernel_variants(ty, false);
        if variants.is_empty() {
            eprintln!("SKIPPED: no fast kernel for {} on this CPU", ty.name());
        }
        for (isa, k) in variants {
            eprintln!("{}: {isa}", ty.name());
            check_kernel::<B>(ty, &k);
        }
    }

    fn check_kernel<B: BlockK>(ty: GgmlType, k: &FastKernels) {
        let mut rng = Rng(0x5eed ^ ty as u64);
        let (rows, cols, ntok) = (21, 3 * QK_K, 19);
        let w = weights(ty, rows, cols, &mut rng);
        let tiles = (k.pack)(&w, rows, ty.row_bytes(cols).unwrap());
        let a = acts(ntok, cols, &mut rng);
        let nb = cols / QK_K;
        let rb = ty.row_bytes(cols).unwrap();
        let want: Vec<f32> = (0..ntok)
            .flat_map(|t| (0..rows).map(move |r| (t, r)))
            .map(|(t, r)| dot_ref::<B>(cast_blocks(&w[r * rb..(r + 1) * rb]).unwrap(), &a[t * nb..(t + 1) * nb]))
            .collect();
        // the reference is the exact dot but for float rounding (token 1's
        // -128s never come out of Q8_K quantization, and ggml's kernels
        // saturate on them)
        for t in (0..ntok).filter(|&t| t != 1) {
            for r in 0..rows {
                let e = dot_q8_k::<B>(cast_blocks(&w[r * rb..(r + 1) * rb]).unwrap(), &a[t * nb..(t + 1) * nb]);
                let f = want[t * rows + r];
                assert!((e - f).abs() <= 1e-5 * e.abs().max(1.0), "{}: row {r} token {t}: exact {e} fast {f}", ty.name());
            }
        }
        every_batch(k, tiles.as_slice(), cols, rows, &a, ntok, &want, plain);
    }

    /// Exact mode's Q4_K tiles give the per-row exact kernels' bits
    /// (`dot_for(n, t)`: the GEMM's per-64 steps for a batch's first n - n %
    /// 4 tokens, the GEMV's for the rest), the activations' extremes
    /// included.
    #[test]
    fn q4k_exact_tiles_equal_the_exact_kernel() {
        let Some(e) = exact_tiles(GgmlType::Q4_K) else {
            eprintln!("SKIPPED: no exact tiles on this CPU");
            return;
        };
        let exact = crate::quant::kernels(GgmlType::Q4_K).unwrap();
        let mut rng = Rng(0x9e3);
        let (rows, cols, ntok) = (21, 3 * QK_K, 11);
        let w = weights(GgmlType::Q4_K, rows, cols, &mut rng);
        let rb = GgmlType::Q4_K.row_bytes(cols).unwrap();
        let tiles = (e.gemv.pack)(&w, rows, rb);
        let x: Vec<f32> = (0..ntok * cols).map(|i| if i < cols { [-1.0, 1.0][i % 2] } else { rng.f32() * 3.0 }).collect();
        let mut a = vec![BlockQ8K { d: 0.0, qs: [0; QK_K], bsums: [0; 16] }; ntok * cols / QK_K];
        quantize_q8_k(&x, &mut a);
        let nb = cols / QK_K;
        let act = |t: usize| plain(&a[t * nb..(t + 1) * nb], 0);
        for (groups4, gemm) in [(false, e.gemv.gemm), (true, e.groups4)] {
            let k = FastKernels { gemm, ..e.gemv };
            // a token of a batch of 4 (the GEMM), of 1 (the GEMV)
            let dot = if groups4 { exact.dot_for(4, 0) } else { exact.dot_for(1, 0) };
            for n in 1..=ntok {
                let got = run(&k, tiles.as_slice(), cols, rows, &a, 0, n, plain);
                for t in 0..n {
                    for r in 0..rows {
                        let want = dot(&w[r * rb..(r + 1) * rb], &act(t));
                        let g = got[t * rows + r];
                        assert_eq!(g.to_bits(), want.to_bits(), "groups4 {groups4}, batch {n}, token {t}, row {r}: {g} vs {want}");
                    }
                }
            }
        }
    }

    /// Every batch split gives the reference's bits: batch-invariant.
    #[allow(clippy::too_many_arguments)]
    fn every_batch<A>(k: &FastKernels, tiles: &[u8], cols: usize, rows: usize, a: &[A], ntok: usize, want: &[f32], bytes: fn(&[A], usize) -> Vec<u8>) {
        for n in [1, 2, 3, 5, 8, 9, 16, 19] {
            for t0 in (0..ntok).step_by(n) {
                let m = n.min(ntok - t0);
                let got = run(k, tiles, cols, rows, a, t0, m, bytes);
                for t in 0..m {
                    for r in 0..rows {
                        let (g, e) = (got[t * rows + r], want[(t0 + t) * rows + r]);
                        assert_eq!(g.to_bits(), e.to_bits(), "{}: batch {n}, token {}, row {r}: {g} vs {e}", k.ty.name(), t0 + t);
                    }
                }
            }
        }
    }

    fn check32<B: Block32, A: acts32::ActBlock32>(
        ty: GgmlType,
        quantize: fn(&[f32], &mut [A]),
        exact: fn(&[B], &[A]) -> f32,
        zero: A,
        set: fn(&mut A, usize, i8),
    ) {
        let mut rng = Rng(0x32 ^ ty as u64);
        // 37 rows: two whole tiles of 16 and a part
        let (rows, cols, ntok) = (37, 160, 19);
        let w = weights(ty, rows, cols, &mut rng);
        let rb = ty.row_bytes(cols).unwrap();
        let x: Vec<f32> = (0..ntok * cols).map(|_| rng.f32() * 3.0).collect();
        let mut a = vec![zero; ntok * cols / 32];
        quantize(&x, &mut a);
        // the activations' extremes: mixed in the first token, all the
        // lowest in the second (the most an i16 sum of products meets),
        // all 127 in the third. The lowest is -128 but for the types of
        // 8-bit weights, whose AVX2 kernel's sign trick (as ggml's)
        // needs activations of at least -127, all that quantization
        // gives (tests/quant.rs checks it)
        let lowest = if matches!(ty, GgmlType::Q8_0 | GgmlType::IQ4_NL) { -127 } else { -128 };
        for (bi, b) in a[..3 * cols / 32].iter_mut().enumerate() {
            let v = |i: usize| match bi / (cols / 32) {
                0 if i.is_multiple_of(3) => lowest,
                1 => lowest,
                _ => 127,
            };
            (0..32).for_each(|i| set(b, i, v(i)));
        }
        let nb = cols / 32;
        let row = |r: usize| -> &[B] { cast_blocks(&w[r * rb..(r + 1) * rb]).unwrap() };
        let pairs = || (0..ntok).flat_map(|t| (0..rows).map(move |r| (t, r)));
        let want: Vec<f32> = pairs().map(|(t, r)| dot_ref32(row(r), &a[t * nb..(t + 1) * nb])).collect();
        for t in 0..ntok {
            for r in 0..rows {
                let e = exact(row(r), &a[t * nb..(t + 1) * nb]);
                let f = want[t * rows + r];
                // float order only: relative to the min terms' size too
                let mins: f32 = row(r).iter().zip(&a[t * nb..(t + 1) * nb]).map(|(w, a)| w.m().map_or(0.0, |m| (m * a.ds()).abs())).sum();
                assert!((e - f).abs() <= 1e-5 * (e.abs() + mins).max(1.0), "{}: row {r} token {t}: exact {e} fast {f}", ty.name());
            }
        }
        let variants = kernel_variants(ty, true);
        if variants.is_empty() {
            eprintln!("SKIPPED: no fast kernel for {} on this CPU", ty.name());
        }
        for (isa, k) in variants {
            eprintln!("{}: {isa}", ty.name());
            let tiles = (k.pack)(&w, rows, rb);
            every_batch(&k, tiles.as_slice(), cols, rows, &a, ntok, &want, acts32::with_sides);
        }
        // exact mode's tiled kernel: ggml's vec_dot (this CPU's SIMD twin,
        // which tests/quant.rs checks) bit for bit, in any batch
        #[cfg(target_arch = "x86_64")]
        match exact_lanes_avx2(ty) {
            Some(k) => {
                let vec_dot = crate::quant::kernels(ty).unwrap().vec_dot;
                let want: Vec<f32> = pairs().map(|(t, r)| vec_dot(&w[r * rb..(r + 1) * rb], &plain(&a[t * nb..(t + 1) * nb], 1))).collect();
                let tiles = (k.pack)(&w, rows, rb);
                every_batch(&k, tiles.as_slice(), cols, rows, &a, ntok, &want, acts32::with_sides);
            }
            None => eprintln!("SKIPPED: no AVX2 for exact mode's tiled {} kernel", ty.name()),
        }
    }

    fn q8_0<B: Block32>(ty: GgmlType) {
        let set = |b: &mut BlockQ8_0, i: usize, v: i8| b.qs[i] = v;
        check32::<B, BlockQ8_0>(ty, crate::quant::legacy::quantize_q8_0, crate::quant::legacy::dot_q8_0, BlockQ8_0 { d: 0, qs: [0; 32] }, set);
    }

    fn q8_1<B: Block32>(ty: GgmlType) {
        use crate::quant::blocks::BlockQ8_1;
        // Q8_1's s (d * sum) is what ggml's kernels read: keep it in step
        let set = |b: &mut BlockQ8_1, i: usize, v: i8| {
            b.qs[i] = v;
            let d = crate::quant::blocks::f16_to_f32(b.d);
            b.s = f32_to_f16(d * b.qs.iter().map(|&q| q as i32).sum::<i32>() as f32);
        };
        check32::<B, BlockQ8_1>(ty, crate::quant::legacy::quantize_q8_1, crate::quant::legacy::dot_q8_1, BlockQ8_1 { d: 0, s: 0, qs: [0; 32] }, set);
    }

    #[test]
    fn q8_0_equals_reference_in_any_batch() {
        q8_0::<BlockQ8_0>(GgmlType::Q8_0);
    }

    #[test]
    fn q5_0_equals_reference_in_any_batch() {
        q8_0::<crate::quant::blocks::BlockQ5_0>(GgmlType::Q5_0);
    }

    #[test]
    fn q4_0_equals_reference_in_any_batch() {
        q8_0::<crate::quant::blocks::BlockQ4_0>(GgmlType::Q4_0);
    }

    #[test]
    fn iq4_nl_equals_reference_in_any_batch() {
        q8_0::<crate::quant::blocks::BlockIQ4NL>(GgmlType::IQ4_NL);
    }

    #[test]
    fn q4_1_equals_reference_in_any_batch() {
        q8_1::<crate::quant::blocks::BlockQ4_1>(GgmlType::Q4_1);
    }

    #[test]
    fn q5_1_equals_reference_in_any_batch() {
        q8_1::<crate::quant::blocks::BlockQ5_1>(GgmlType::Q5_1);
    }

    #[test]
    fn q4k_equals_reference_in_any_batch() {
        check::<BlockQ4K>(GgmlType::Q4_K);
    }

    #[test]
    fn q5k_equals_reference_in_any_batch() {
        check::<crate::quant::blocks::BlockQ5K>(GgmlType::Q5_K);
    }

    #[test]
    fn q2k_equals_reference_in_any_batch() {
        check::<crate::quant::blocks::BlockQ2K>(GgmlType::Q2_K);
    }

    #[test]
    fn q3k_equals_reference_in_any_batch() {
        check::<crate::quant::blocks::BlockQ3K>(GgmlType::Q3_K);
    }

    #[test]
    fn iq4xs_equals_reference_in_any_batch() {
        check::<crate::quant::blocks::BlockIQ4XS>(GgmlType::IQ4_XS);
    }

    #[test]
    fn q6k_equals_reference_in_any_batch() {
        check::<BlockQ6K>(GgmlType::Q6_K);
    }
}
