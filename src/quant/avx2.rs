//! AVX2 (+FMA, F16C) kernels. Each weight format only says how to unpack a
//! block into signed bytes; the integer dot product and the scaling are shared.
//! Results equal the scalar reference up to float summation order.

use crate::gguf::GgmlType;
use crate::quant::blocks::*;

use crate::quant::BatchDot;
use std::arch::x86_64::*;

#[path = "avx2_float.rs"]
mod float;
use float::{dot_f16_batch, dot_f32, dot_f32_batch};
pub use float::{dot_f16_ggml, exp_ggml, mad_f16, scale_f16, swiglu};
#[path = "avx2_kdot.rs"]
mod kdot;
#[path = "avx2_kgemm.rs"]
mod kgemm;
use kdot::{dot_q4k_repacked, dotk, dotk_tiled, ScalesV, UnpackK};
#[path = "avx2_quantize.rs"]
mod quantize;
#[path = "avx512_gemm32.rs"]
mod zmm;

type DotFn = fn(&[u8], &[u8]) -> f32;

/// The AVX2 dot product for a weight type, if there is one.
pub fn vec_dot_for(ty: GgmlType) -> Option<DotFn> {
    use GgmlType::*;
    // SAFETY (all wrappers): only installed after has_avx2() confirmed avx2, fma, f16c;
    // byte slices are whole, aligned blocks (checked by cast_blocks).
    Some(match ty {
        Q4_0 => |w, a| unsafe { dot32::<BlockQ4_0, BlockQ8_0>(cb(w), cb(a)) },
        Q5_0 => |w, a| unsafe { dot32::<BlockQ5_0, BlockQ8_0>(cb(w), cb(a)) },
        Q8_0 => |w, a| unsafe { dot32::<BlockQ8_0, BlockQ8_0>(cb(w), cb(a)) },
        IQ4_NL => |w, a| unsafe { dot32::<BlockIQ4NL, BlockQ8_0>(cb(w), cb(a)) },
        Q4_1 => |w, a| unsafe { dot32::<BlockQ4_1, BlockQ8_1>(cb(w), cb(a)) },
        Q5_1 => |w, a| unsafe { dot32::<BlockQ5_1, BlockQ8_1>(cb(w), cb(a)) },
        Q2_K => |w, a| unsafe { dotk::<BlockQ2K>(cb(w), cb(a)) },
        Q3_K => |w, a| unsafe { dotk::<BlockQ3K>(cb(w), cb(a)) },
        Q4_K => |w, a| unsafe { dot_q4k_repacked(cb(w), cb(a), false) },
        Q5_K => |w, a| unsafe { dotk::<BlockQ5K>(cb(w), cb(a)) },
        Q6_K => |w, a| unsafe { dotk::<BlockQ6K>(cb(w), cb(a)) },
        IQ4_XS => |w, a| unsafe { dotk::<BlockIQ4XS>(cb(w), cb(a)) },
        F16 => |w, a| unsafe { dot_f16_ggml(cb(w), cb(a)) },
        F32 => |w, a| unsafe { dot_f32(cb(w), cb(a)) },
        _ => return None,
    })
}

/// An activation quantizer: f32 row in, blocks out.
type QuantizeFn = fn(&[f32], &mut [u8]);

/// The AVX2 quantizer of an activation type (same bytes as the scalar one).
pub fn quantize_for(act: GgmlType) -> Option<QuantizeFn> {
    use GgmlType::*;
    // SAFETY: as in vec_dot_for.
    Some(match act {
        Q8_0 => |x, o| unsafe { quantize::quantize_q8_0(x, cast_blocks_mut(o).expect("Q8_0 blocks")) },
        Q8_1 => |x, o| unsafe { quantize::quantize_q8_1(x, cast_blocks_mut(o).expect("Q8_1 blocks")) },
        Q8_K => |x, o| unsafe { quantize::quantize_q8_k(x, cast_blocks_mut(o).expect("Q8_K blocks")) },
        _ => return None,
    })
}

/// How batched matmuls round, where it differs from `vec_dot_for`: Q4_K is
/// repacked (GEMM over groups of four tokens), the other K-quants go through
/// llama.cpp's tiled matmul from 8 tokens on.
pub fn batch_dot_for(ty: GgmlType) -> BatchDot {
    use GgmlType::*;
    // SAFETY: as in vec_dot_for.
    match ty {
        Q4_K => BatchDot::Groups4(|w, a| unsafe { dot_q4k_repacked(cb(w), cb(a), true) }),
        Q2_K => BatchDot::Wide(|w, a| unsafe { dotk_tiled::<BlockQ2K>(cb(w), cb(a)) }),
        Q3_K => BatchDot::Wide(|w, a| unsafe { dotk_tiled::<BlockQ3K>(cb(w), cb(a)) }),
        Q5_K => BatchDot::Wide(|w, a| unsafe { dotk_tiled::<BlockQ5K>(cb(w), cb(a)) }),
        Q6_K => BatchDot::Wide(|w, a| unsafe { dotk_tiled::<BlockQ6K>(cb(w), cb(a)) }),
        IQ4_XS => BatchDot::Wide(|w, a| unsafe { dotk_tiled::<BlockIQ4XS>(cb(w), cb(a)) }),
        F16 => BatchDot::Pairs(|w, a| unsafe { dot_f16_batch(cb(w), cb(a)) }),
        F32 => BatchDot::Pairs(|w, a| unsafe { dot_f32_batch(cb(w), cb(a)) }),
        _ => BatchDot::Same,
    }
}

/// The multi-row, multi-token kernel of a weight type, if it has one; the
/// AVX-512 VNNI variant where the CPU has it (same integers, same floats).
pub fn gemm_for(ty: GgmlType) -> Option<crate::quant::GemmFn> {
    gemm_variants(ty, false).pop().map(|(_, f)| f)
}

/// The kernel over rows packed by `crate::quant::pack_rows` (32-element block types).
pub fn gemm_packed_for(ty: GgmlType) -> Option<crate::quant::GemmFn> {
    gemm_variants(ty, true).pop().map(|(_, f)| f)
}

/// Every multi-row kernel variant this CPU can run for a type, over plain or
/// packed rows (tests compare them all); the fastest last.
pub fn gemm_variants(ty: GgmlType, packed: bool) -> Vec<(&'static str, crate::quant::GemmFn)> {
    use crate::quant::GemmFn;
    use GgmlType::*;
    let vnni = has_vnni();
    macro_rules! b32 {
        ($b:ty, $a:ty) => {{
            if packed {
                let mut v = vec![("avx2-x4", gemm32x4_avx2::<$b, $a> as GemmFn)];
                if vnni {
                    v.push(("avx512vnni-x4", zmm::gemm32x4_zmm::<$b, $a> as GemmFn));
                }
                v
            } else {
                let mut v = vec![("avx2", gemm32_avx2::<$b, $a> as GemmFn)];
                if vnni {
                    v.push(("avx512vnni", gemm32_vnni::<$b, $a> as GemmFn));
                    v.push(("avx512vnni-zmm", zmm::gemm32_zmm::<$b, $a> as GemmFn));
                }
                v
            }
        }};
    }
    macro_rules! bk {
        ($b:ty, $q4:expr) => {{
            let mut v = Vec::new();
            if !packed {
                v.push(("avx2", kgemm::kgemm_avx2::<$b, $q4> as GemmFn));
                if vnni {
                    v.push(("avx512vnni", kgemm::kgemm_vnni::<$b, $q4> as GemmFn));
                }
            }
            v
        }};
    }
    match ty {
        Q2_K => bk!(BlockQ2K, false),
        Q3_K => bk!(BlockQ3K, false),
        Q4_K => bk!(BlockQ4K, true),
        Q5_K => bk!(BlockQ5K, false),
        Q6_K => bk!(BlockQ6K, false),
        IQ4_XS => bk!(BlockIQ4XS, false),
        Q4_0 => b32!(BlockQ4_0, BlockQ8_0),
        Q5_0 => b32!(BlockQ5_0, BlockQ8_0),
        Q8_0 => b32!(BlockQ8_0, BlockQ8_0),
        IQ4_NL => b32!(BlockIQ4NL, BlockQ8_0),
        Q4_1 => b32!(BlockQ4_1, BlockQ8_1),
        Q5_1 => b32!(BlockQ5_1, BlockQ8_1),
        _ => vec![],
    }
}

/// AVX-512 with VNNI on 256-bit vectors (and RLLAMA_NO_AVX512 unset).
pub fn has_vnni() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("RLLAMA_NO_AVX512").is_none()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
    })
}

fn cb<B: Copy>(b: &[u8]) -> &[B] {
    cast_blocks(b).expect("whole, aligned blocks")
}

#[inline(always)]
unsafe fn hsum_f32(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Signed bytes times signed bytes, pairs summed into i16 (|w| <= 128, |a| <= 127).
#[inline(always)]
unsafe fn mul_i8_pairs(w: __m256i, a: __m256i) -> __m256i {
    _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w))
}

/// Sums of 4 adjacent products as i32x8.
#[inline(always)]
unsafe fn dot_i8(w: __m256i, a: __m256i) -> __m256i {
    _mm256_madd_epi16(mul_i8_pairs(w, a), _mm256_set1_epi16(1))
}

#[inline(always)]
unsafe fn nibbles(qs: &[u8; 16]) -> __m256i {
    let t = _mm_loadu_si128(qs.as_ptr() as *const __m128i);
    let m = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(t, m);
    let hi = _mm_and_si128(_mm_srli_epi16(t, 4), m);
    _mm256_set_m128i(hi, lo)
}

/// 0x10 in each byte whose bit is set in `bits` (bit j -> byte j).
#[inline(always)]
unsafe fn bits_to_0x10(bits: u32) -> __m256i {
    let v = _mm256_set1_epi32(bits as i32);
    let shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    let bytes = _mm256_shuffle_epi8(v, shuf);
    let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let sel = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask);
    _mm256_and_si256(sel, _mm256_set1_epi8(0x10))
}

#[inline(always)]
unsafe fn iq4_lut(idx: __m256i) -> __m256i {
    let t = _mm_loadu_si128(KVALUES_IQ4NL.as_ptr() as *const __m128i);
    _mm256_shuffle_epi8(_mm256_set_m128i(t, t), idx)
}

/// A 32-element block unpacked to 32 signed bytes.
pub trait Unpack32: Copy {
    /// Whether the block has a min (`m`), paired with Q8_1's `s`.
    const HAS_M: bool = false;
    /// # Safety
    /// AVX2 must be available.
    unsafe fn unpack_avx2(&self) -> __m256i;
    /// The f16 bits of the scale.
    fn d(&self) -> u16;
    /// The f16 bits of the min.
    fn m(&self) -> u16 {
        0
    }
    /// The block as unsigned bytes `q + OFF` (VNNI `vpdpbusd` takes the
    /// weights unsigned; OFF * sum(a) comes off through the activation sums).
    const OFF: i32 = if Self::HAS_M { 0 } else { 128 };
    /// # Safety
    /// AVX2 must be available.
    #[inline(always)]
    unsafe fn unpack_u8(&self) -> __m256i {
        if Self::HAS_M {
            self.unpack_avx2()
        } else {
            _mm256_xor_si256(self.unpack_avx2(), _mm256_set1_epi8(-128))
        }
    }
}

impl Unpack32 for BlockQ4_0 {
    #[inline(always)]
    unsafe fn unpack_avx2(&self) -> __m256i {
        _mm256_sub_epi8(nibbles(&self.qs), _mm256_set1_epi8(8))
    }
    const OFF: i32 = 8;
    /// # Safety
    /// AVX2 must be available.
    #[inline(always)]
    unsafe fn unpack_u8(&self) -> __m256i {
        nibbles(&self.qs)
    }
    fn d(&self) -> u16 {
        self.d
    }
}
impl Unpack32 for BlockQ4_1 {
    const HAS_M: bool = true;
    #[inline(always)]
    unsafe fn unpack_avx2(&self) -> __m256i {
        nibbles(&self.qs)
    }
    fn d(&self) -> u16 {
        self.d
    }
    fn m(&self) -> u16 {
        self.m
    }
}
impl Unpack32 for BlockQ5_0 {
    #[inline(always)]
    unsafe fn unpack_avx2(&self) -> __m256i {
        _mm256_sub_epi8(self.unpack_u8(), _mm256_set1_epi8(16))
    }
    const OFF: i32 = 16;
    /// # Safety
    /// AVX2 must be available.
    #[inline(always)]
    unsafe fn unpack_u8(&self) -> __m256i {
        _mm256_or_si256(nibbles(&self.qs), bits_to_0x10(u32::from_le_bytes(self.qh)))
    }
    fn d(&self) -> u16 {
        self.d
    }
}
impl Unpack32 for BlockQ5_1 {
    const HAS_M: bool = true;
    #[inline(always)]
    unsafe fn unpack_avx2(&self) -> __m256i {
        _mm256_or_si256(nibbles(&self.qs), bits_to_0x10(u32::from_le_bytes(self.qh)))
    }
    fn d(&self) -> u16 {
        self.d
    }
    fn m(&self) -> u16 {
        self.m
    }
}
impl Unpack32 for BlockQ8_0 {
    #[inline(always)]
    unsafe fn unpack_avx2(&self) -> __m256i {
        _mm256_loadu_si256(self.qs.as_ptr() as *const __m256i)
    }
    fn d(&self) -> u16 {
        self.d
    }
}
impl Unpack32 for BlockIQ4NL {
    #[inline(always)]
    unsafe fn unpack_avx2(&self) -> __m256i {
        iq4_lut(nibbles(&self.qs))
    }
    fn d(&self) -> u16 {
        self.d
    }
}

/// f16 bits to f32 with F16C. The conversion is an opaque asm block so that
/// its input is a fully written register (movd): with the intrinsic LLVM
/// loads the bits with `pinsrw` into whatever register is free, often the
/// accumulator, which chained every block's scale to the previous block's FMA
/// (a ~17-cycle loop-carried path; Q8_0 generation ran 1.7x slower than ggml).
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn h2f(h: u16) -> f32 {
    let x = _mm_cvtsi32_si128(h as i32);
    let r: __m128;
    std::arch::asm!("vcvtph2ps {r}, {x}", x = in(xmm_reg) x, r = lateout(xmm_reg) r, options(pure, nomem, nostack, preserves_flags));
    _mm_cvtss_f32(r)
}

/// An activation block of 32 signed bytes (Q8_0 or Q8_1).
pub trait Act32: Copy {
    fn qs(&self) -> &[i8; 32];
    fn d(&self) -> u16;
    /// Q8_1: f16 bits of d * sum(qs).
    fn s(&self) -> u16 {
        0
    }
}
impl Act32 for BlockQ8_0 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    #[inline(always)]
    fn d(&self) -> u16 {
        self.d
    }
}
impl Act32 for BlockQ8_1 {
    #[inline(always)]
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    #[inline(always)]
    fn d(&self) -> u16 {
        self.d
    }
    #[inline(always)]
    fn s(&self) -> u16 {
        self.s
    }
}

/// ggml's AVX2 vec_dot for 32-element blocks, for R weight rows times T
/// tokens at once: each weight block is unpacked once and each activation
/// block loaded once, while every (row, token) pair keeps its own accumulator
/// in exactly the single-pair order (per block acc = fma(dw * da, isum, acc);
/// the mins fused into a scalar chain; hsum at the end).
#[inline(always)]
unsafe fn tile32<B: Unpack32, A: Act32, const R: usize, const T: usize, const VNNI: bool, const S: usize>(w: [&[B]; R], a: [&[A]; T]) -> [[f32; R]; T] {
    // block b of row r is w[r][b * S] (S = R for rows packed by `pack_rows`)
    let nb = a[0].len();
    let mut acc = [[_mm256_setzero_ps(); R]; T];
    let mut mins = [[0.0f32; R]; T];
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); R];
        let mut wd = [0.0f32; R];
        for r in 0..R {
            let blk = w[r].get_unchecked(b * S);
            wv[r] = blk.unpack_avx2();
            wd[r] = h2f(blk.d());
        }
        for t in 0..T {
            let ab = a[t].get_unchecked(b);
            let av = _mm256_loadu_si256(ab.qs().as_ptr() as *const __m256i);
            let ad = h2f(ab.d());
            for r in 0..R {
                let isum = if VNNI { dot_i8_vnni::<B>(wv[r], av) } else { dot_i8(wv[r], av) };
                let p = _mm256_cvtepi32_ps(isum);
                acc[t][r] = _mm256_fmadd_ps(_mm256_set1_ps(wd[r] * ad), p, acc[t][r]);
                if B::HAS_M {
                    let m = h2f(w[r].get_unchecked(b * S).m());
                    mins[t][r] = m.mul_add(h2f(ab.s()), mins[t][r]);
                }
            }
        }
    }
    let mut out = [[0.0f32; R]; T];
    for t in 0..T {
        for r in 0..R {
            out[t][r] = if B::HAS_M { hsum_f32(acc[t][r]) + mins[t][r] } else { hsum_f32(acc[t][r]) };
        }
    }
    out
}

/// Sums of 4 adjacent byte products with AVX-512 VNNI (same integers as `dot_i8`).
#[inline(always)]
unsafe fn dot_i8_vnni<B: Unpack32>(w: __m256i, a: __m256i) -> __m256i {
    if B::HAS_M {
        // unsigned weights: one instruction
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)
    } else {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w))
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot32<B: Unpack32, A: Act32>(w: &[B], a: &[A]) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    tile32::<B, A, 1, 1, false, 1>([w], [a])[0][0]
}

/// Rows r..r+R as block slices: plain rows (S = 1), or a group of R rows
/// packed block-interleaved (S = R; see `crate::quant::pack_rows`).
#[inline(always)]
fn row_blocks<B: Copy, const R: usize, const S: usize>(w: &[u8], wrb: usize, r: usize) -> [&[B]; R] {
    if S == 1 {
        std::array::from_fn(|i| cb(&w[(r + i) * wrb..(r + i + 1) * wrb]))
    } else {
        let g: &[B] = cb(&w[r * wrb..(r + R) * wrb]);
        std::array::from_fn(|i| &g[i..])
    }
}

/// One R x T tile stored to out[t * ostride + r].
#[inline(always)]
unsafe fn tile32_store<B: Unpack32, A: Act32, const R: usize, const T: usize, const VNNI: bool, const S: usize>(
    w: &[u8],
    wrb: usize,
    r: usize,
    a: &[u8],
    arb: usize,
    t: usize,
    out: *mut f32,
    ostride: usize,
) {
    let ws = row_blocks::<B, R, S>(w, wrb, r);
    let acts: [&[A]; T] = std::array::from_fn(|k| cb(&a[(t + k) * arb..(t + k + 1) * arb]));
    let o = tile32::<B, A, R, T, VNNI, S>(ws, acts);
    for k in 0..T {
        for i in 0..R {
            *out.add((t + k) * ostride + r + i) = o[k][i];
        }
    }
}

/// All rows of a weight slice times all tokens, in R x T tiles (smaller at
/// the edges). S = R: the slice is packed by R rows (its tail rows plain).
#[inline(always)]
unsafe fn gemm32_tiles<B: Unpack32, A: Act32, const R: usize, const T: usize, const VNNI: bool, const S: usize>(
    w: &[u8],
    wrb: usize,
    nrows: usize,
    a: &[u8],
    arb: usize,
    ntok: usize,
    out: *mut f32,
    ostride: usize,
) {
    let mut r = 0;
    while r + R <= nrows {
        let mut t = 0;
        while t + T <= ntok {
            tile32_store::<B, A, R, T, VNNI, S>(w, wrb, r, a, arb, t, out, ostride);
            t += T;
        }
        while t < ntok {
            tile32_store::<B, A, R, 1, VNNI, S>(w, wrb, r, a, arb, t, out, ostride);
            t += 1;
        }
        r += R;
    }
    while r < nrows {
        let mut t = 0;
        while t + T <= ntok {
            tile32_store::<B, A, 1, T, VNNI, 1>(w, wrb, r, a, arb, t, out, ostride);
            t += T;
        }
        while t < ntok {
            tile32_store::<B, A, 1, 1, VNNI, 1>(w, wrb, r, a, arb, t, out, ostride);
            t += 1;
        }
        r += 1;
    }
}

/// Tile shape. Single tokens go row by row; small batches (speculative
/// verification, pp4) 1 row x 4 tokens; big batches 2 rows x 4 tokens.
/// Measured on Qwen's 151936x896 Q8_0 output matrix, one thread
/// (benches/matmul.rs): n=4 1x4 11 ms, 2x4 29 ms, 4x4 45 ms (two or more
/// weight streams per tile stall on memory when weights are not reused
/// enough); n=64 1x4 200 ms, 2x4 170 ms, 4x4 238 ms (register spills).
#[inline(always)]
unsafe fn gemm32_body<B: Unpack32, A: Act32, const VNNI: bool>(
    w: &[u8],
    wrb: usize,
    nrows: usize,
    a: &[u8],
    arb: usize,
    ntok: usize,
    out: *mut f32,
    ostride: usize,
) {
    if ntok == 1 {
        gemm32_tiles::<B, A, 1, 1, VNNI, 1>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else if ntok < 16 {
        gemm32_tiles::<B, A, 1, 4, VNNI, 1>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else {
        gemm32_tiles::<B, A, 2, 4, VNNI, 1>(w, wrb, nrows, a, arb, ntok, out, ostride)
    }
}

/// Rows packed by 4 (`crate::quant::pack_rows`): 4 rows x 1 token (four
/// independent FMA chains from one sequential weight stream) or x 2 tokens.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm32x4_avx2<B: Unpack32, A: Act32>(w: &[u8], wrb: usize, nrows: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize) {
    if ntok == 1 {
        gemm32_tiles::<B, A, 4, 1, false, 4>(w, wrb, nrows, a, arb, ntok, out, ostride)
    } else {
        gemm32_tiles::<B, A, 4, 2, false, 4>(w, wrb, nrows, a, arb, ntok, out, ostride)
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw")]
unsafe fn gemm32x4_vnni_ymm<B: Unpack32, A: Act32>(w: &[u8], wrb: usize, nrows: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize) {
    gemm32_tiles::<B, A, 4, 1, true, 4>(w, wrb, nrows, a, arb, ntok, out, ostride)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm32_avx2<B: Unpack32, A: Act32>(w: &[u8], wrb: usize, nrows: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize) {
    gemm32_body::<B, A, false>(w, wrb, nrows, a, arb, ntok, out, ostride)
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512vnni,avx512bw")]
unsafe fn gemm32_vnni<B: Unpack32, A: Act32>(w: &[u8], wrb: usize, nrows: usize, a: &[u8], arb: usize, ntok: usize, out: *mut f32, ostride: usize) {
    gemm32_body::<B, A, true>(w, wrb, nrows, a, arb, ntok, out, ostride)
}

#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}
