//! AVX2 (+FMA, F16C) kernels. Each weight format only says how to unpack a
//! block into signed bytes; the integer dot product and the scaling are shared.
//! Results equal the scalar reference up to float summation order.

use crate::gguf::GgmlType;
use crate::quant::blocks::*;
use crate::quant::kquants::{BlockK, Scales};
use crate::quant::BatchDot;
use std::arch::x86_64::*;

#[path = "avx2_kgemm.rs"]
mod kgemm;
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
        F16 => |w, a| unsafe { dot_f16(cb(w), cb(a)) },
        F32 => |w, a| unsafe { dot_f32(cb(w), cb(a)) },
        _ => return None,
    })
}

/// The AVX2 quantizer of an activation type (same bytes as the scalar one).
pub fn quantize_for(act: GgmlType) -> Option<fn(&[f32], &mut [u8])> {
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

/// A 256-element super-block as 8 chunks of 32 signed bytes; its scales come
/// from the scalar format's `BlockK::scales`.
pub trait UnpackK: BlockK {
    /// The chunks hold `q + BIAS`; `dotk` takes `BIAS * sum(a)` off per chunk
    /// lane through the Q8_K block sums (ggml's lane layout for Q6_K).
    const BIAS: i32 = 0;
    /// Whether chunks hold negative values (else 0..=127: `maddubs`'s unsigned side).
    const SIGNED: bool = false;
    /// Whether the format has mins (`Scales::m` is Some).
    const HAS_MIN: bool = false;
    /// Chunk c (0..8) = elements 32c..32c+32.
    unsafe fn chunks(&self, out: &mut [__m256i; 8]);
    /// The scales (and mins) as 16 i16 lanes, the same numbers as
    /// `BlockK::scales`, built in registers: wide loads of the scalar
    /// decoder's narrow stores stall store forwarding.
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let s = self.scales();
        let m = s.m.unwrap_or([0; 16]);
        ScalesV { sc16: _mm256_loadu_si256(s.sc.as_ptr() as *const __m256i), m16: _mm256_loadu_si256(m.as_ptr() as *const __m256i), d: s.d, dmin: s.dmin }
    }
}

/// `Scales` in vectors (`m16` zero where the format has no mins).
#[derive(Clone, Copy)]
pub struct ScalesV {
    pub sc16: __m256i,
    pub m16: __m256i,
    pub d: f32,
    pub dmin: f32,
}

/// Q4_K / Q5_K: the 12 packed bytes to 8 scales and 8 mins (bytes), each
/// doubled to the 16 groups of 16 (ggml's u32 mask trick, in registers).
#[inline(always)]
unsafe fn scales_k4_v(q: &[u8; 12], d: u16, dmin: u16) -> ScalesV {
    let u = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    let (k1, k2, k3) = (0x3f3f_3f3fu32, 0x0f0f_0f0fu32, 0x0303_0303u32);
    let sc_lo = u0 & k1;
    let sc_hi = (u2 & k2) | (((u0 >> 6) & k3) << 4);
    let m_lo = u1 & k1;
    let m_hi = ((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4);
    let v = _mm_setr_epi32(sc_lo as i32, sc_hi as i32, m_lo as i32, m_hi as i32);
    ScalesV { sc16: _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(v, v)), m16: _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(v, v)), d: h2f(d), dmin: h2f(dmin) }
}

impl UnpackK for BlockQ4K {
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        scales_k4_v(&self.scales, self.d, self.dmin)
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m = _mm256_set1_epi8(0x0F);
        for c in 0..4 {
            let b = _mm256_loadu_si256(self.qs.as_ptr().add(32 * c) as *const __m256i);
            out[2 * c] = _mm256_and_si256(b, m);
            out[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16(b, 4), m);
        }
    }
}

impl UnpackK for BlockQ5K {
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        scales_k4_v(&self.scales, self.d, self.dmin)
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m = _mm256_set1_epi8(0x0F);
        let qh = _mm256_loadu_si256(self.qh.as_ptr() as *const __m256i);
        let sixteen = _mm256_set1_epi8(16);
        for c in 0..4 {
            let b = _mm256_loadu_si256(self.qs.as_ptr().add(32 * c) as *const __m256i);
            let bit_lo = _mm256_set1_epi8((1u8 << (2 * c)) as i8);
            let bit_hi = _mm256_set1_epi8((2u8 << (2 * c)) as i8);
            let h_lo = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_lo), bit_lo), sixteen);
            let h_hi = _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, bit_hi), bit_hi), sixteen);
            out[2 * c] = _mm256_or_si256(_mm256_and_si256(b, m), h_lo);
            out[2 * c + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), m), h_hi);
        }
    }
}

impl UnpackK for BlockQ6K {
    const BIAS: i32 = 32;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let sc = _mm_loadu_si128(self.scales.as_ptr() as *const __m128i);
        ScalesV { sc16: _mm256_cvtepi8_epi16(sc), m16: _mm256_setzero_si256(), d: h2f(self.d), dmin: 0.0 }
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m4 = _mm256_set1_epi8(0x0F);
        let m2 = _mm256_set1_epi8(0x03);
        for n in 0..2 {
            let l0 = _mm256_loadu_si256(self.ql.as_ptr().add(64 * n) as *const __m256i);
            let l1 = _mm256_loadu_si256(self.ql.as_ptr().add(64 * n + 32) as *const __m256i);
            let h = _mm256_loadu_si256(self.qh.as_ptr().add(32 * n) as *const __m256i);
            // bits 2s..2s+2 of qh moved to bits 4..6 (no closure: closures
            // do not inherit target features)
            let hb0 = _mm256_slli_epi16(_mm256_and_si256(h, m2), 4);
            let hb2 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 2), m2), 4);
            let hb4 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 4), m2), 4);
            let hb6 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(h, 6), m2), 4);
            out[4 * n] = _mm256_or_si256(_mm256_and_si256(l0, m4), hb0);
            out[4 * n + 1] = _mm256_or_si256(_mm256_and_si256(l1, m4), hb2);
            out[4 * n + 2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), hb4);
            out[4 * n + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), hb6);
        }
    }
}

impl UnpackK for BlockQ2K {
    const HAS_MIN: bool = true;
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let b = _mm_loadu_si128(self.scales.as_ptr() as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        ScalesV {
            sc16: _mm256_cvtepu8_epi16(_mm_and_si128(b, m4)),
            m16: _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), m4)),
            d: h2f(self.d),
            dmin: h2f(self.dmin),
        }
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m2 = _mm256_set1_epi8(3);
        for n in 0..2 {
            let q = _mm256_loadu_si256(self.qs.as_ptr().add(32 * n) as *const __m256i);
            out[4 * n] = _mm256_and_si256(q, m2);
            out[4 * n + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 2), m2);
            out[4 * n + 2] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m2);
            out[4 * n + 3] = _mm256_and_si256(_mm256_srli_epi16(q, 6), m2);
        }
    }
}

impl UnpackK for BlockQ3K {
    const SIGNED: bool = true;
    /// sc[j] = (low 4 bits from bytes 0..8 | 2 high bits from bytes 8..12) - 32.
    #[inline(always)]
    unsafe fn scales_v(&self) -> ScalesV {
        let s = &self.scales;
        let v = _mm_loadl_epi64(s.as_ptr() as *const __m128i);
        let m4 = _mm_set1_epi8(0x0F);
        let lo = _mm_unpacklo_epi64(_mm_and_si128(v, m4), _mm_and_si128(_mm_srli_epi16(v, 4), m4));
        // i32 lane k = bytes 8..12 shifted right by 2k: byte 4k + m = s[8 + m] >> 2k
        let x = u32::from_le_bytes([s[8], s[9], s[10], s[11]]) as i32;
        let hi = _mm_and_si128(_mm_srlv_epi32(_mm_set1_epi32(x), _mm_setr_epi32(0, 2, 4, 6)), _mm_set1_epi8(3));
        let sc = _mm_sub_epi8(_mm_or_si128(lo, _mm_slli_epi16(hi, 4)), _mm_set1_epi8(32));
        ScalesV { sc16: _mm256_cvtepi8_epi16(sc), m16: _mm256_setzero_si256(), d: h2f(self.d), dmin: 0.0 }
    }
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        let m2 = _mm256_set1_epi8(3);
        let hm = _mm256_loadu_si256(self.hmask.as_ptr() as *const __m256i);
        let four = _mm256_set1_epi8(4);
        for n in 0..2 {
            let q = _mm256_loadu_si256(self.qs.as_ptr().add(32 * n) as *const __m256i);
            for s in 0..4 {
                let low = match s {
                    0 => _mm256_and_si256(q, m2),
                    1 => _mm256_and_si256(_mm256_srli_epi16(q, 2), m2),
                    2 => _mm256_and_si256(_mm256_srli_epi16(q, 4), m2),
                    _ => _mm256_and_si256(_mm256_srli_epi16(q, 6), m2),
                };
                let bit = _mm256_set1_epi8((1u8 << (4 * n + s)) as i8);
                // subtract 4 where the high bit is clear
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
                let sub = _mm256_andnot_si256(set, four);
                out[4 * n + s] = _mm256_sub_epi8(low, sub);
            }
        }
    }
}

impl UnpackK for BlockIQ4XS {
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn chunks(&self, out: &mut [__m256i; 8]) {
        for ib in 0..8 {
            let qs: &[u8; 16] = self.qs[16 * ib..16 * ib + 16].try_into().unwrap();
            out[ib] = iq4_lut(nibbles(qs));
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dotk<B: UnpackK>(w: &[B], a: &[BlockQ8K]) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    let mut acc = _mm256_setzero_ps();
    let mut mins_acc = 0.0f32;
    let mut ch = [_mm256_setzero_si256(); 8];
    for (w, a) in w.iter().zip(a) {
        w.chunks(&mut ch);
        let Scales { sc, m, d, dmin } = w.scales();
        let mut isum = _mm256_setzero_si256();
        for c in 0..8 {
            let av = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
            let p16 = mul_i8_pairs(ch[c], av);
            // i16 lanes 0..8 hold elements 0..16 of the chunk, lanes 8..16 the rest
            let (s0, s1) = (sc[2 * c], sc[2 * c + 1]);
            let scv = _mm256_setr_epi16(s0, s0, s0, s0, s0, s0, s0, s0, s1, s1, s1, s1, s1, s1, s1, s1);
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(p16, scv));
        }
        if B::BIAS != 0 {
            // lane c: BIAS * (bsums[2c] sc[2c] + bsums[2c+1] sc[2c+1])
            let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
            let scv = _mm256_loadu_si256(sc.as_ptr() as *const __m256i);
            let sub = _mm256_mullo_epi32(_mm256_madd_epi16(bs, scv), _mm256_set1_epi32(B::BIAS));
            isum = _mm256_sub_epi32(isum, sub);
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d * a.d), _mm256_cvtepi32_ps(isum), acc);
        if let Some(m) = m {
            let mut msum = 0i32;
            for g in 0..16 {
                msum += a.bsums[g] as i32 * m[g] as i32;
            }
            mins_acc += dmin * a.d * msum as f32;
        }
    }
    hsum_f32(acc) - mins_acc
}

/// Q4_K in the rounding of llama.cpp's x86 kernels for Q4_K repacked as
/// q4_K_8x8 (what it runs on every AVX2 machine): per row, exact integer sums
/// over a whole super-block (GEMV, one token) or over each 64 elements (GEMM,
/// groups of four tokens; `per_64`), each folded into one scalar FMA chain,
/// the mins into a second chain subtracted at the end.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_q4k_repacked(w: &[BlockQ4K], a: &[BlockQ8K], per_64: bool) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    let (mut acc, mut acc_min) = (0.0f32, 0.0f32);
    let mut ch = [_mm256_setzero_si256(); 8];
    for (w, a) in w.iter().zip(a) {
        w.chunks(&mut ch);
        let Scales { sc, m, d, dmin } = w.scales();
        let m = m.unwrap_or([0; 16]);
        let (dd, dm) = (d * a.d, dmin * a.d);
        let (mut isum, mut msum) = (0i32, 0i32);
        for c in 0..8 {
            let av = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
            isum += sc[2 * c] as i32 * hsum_i32(dot_i8(ch[c], av));
            msum += m[2 * c] as i32 * (a.bsums[2 * c] as i32 + a.bsums[2 * c + 1] as i32);
            if per_64 && c % 2 == 1 {
                acc = (isum as f32).mul_add(dd, acc);
                acc_min = (msum as f32).mul_add(dm, acc_min);
                (isum, msum) = (0, 0);
            }
        }
        if !per_64 {
            acc = (isum as f32).mul_add(dd, acc);
            acc_min = (msum as f32).mul_add(dm, acc_min);
        }
    }
    acc - acc_min
}

/// K-quants in the rounding of llama.cpp's tiled matmul (AVX-512 VNNI build):
/// per super-block the exact integer sum is scaled by the weight's d (and its
/// min term fused off), then fused into the accumulator times the token's d.
#[target_feature(enable = "avx2,fma")]
unsafe fn dotk_tiled<B: UnpackK>(w: &[B], a: &[BlockQ8K]) -> f32 {
    let mut acc = 0.0f32;
    let mut ch = [_mm256_setzero_si256(); 8];
    for (w, a) in w.iter().zip(a) {
        w.chunks(&mut ch);
        let Scales { sc, m, d, dmin } = w.scales();
        let mut isum = _mm256_setzero_si256();
        for c in 0..8 {
            let av = _mm256_loadu_si256(a.qs.as_ptr().add(32 * c) as *const __m256i);
            let (s0, s1) = (sc[2 * c], sc[2 * c + 1]);
            let scv = _mm256_setr_epi16(s0, s0, s0, s0, s0, s0, s0, s0, s1, s1, s1, s1, s1, s1, s1, s1);
            isum = _mm256_add_epi32(isum, _mm256_madd_epi16(mul_i8_pairs(ch[c], av), scv));
        }
        let mut isum = hsum_i32(isum);
        if B::BIAS != 0 {
            isum -= B::BIAS * (0..16).map(|g| a.bsums[g] as i32 * sc[g] as i32).sum::<i32>();
        }
        let mut r = isum as f32 * d;
        if let Some(m) = m {
            let msum: i32 = (0..16).map(|g| a.bsums[g] as i32 * m[g] as i32).sum();
            r = (-dmin).mul_add(msum as f32, r);
        }
        acc = r.mul_add(a.d, acc);
    }
    acc
}

#[inline(always)]
unsafe fn hsum_i32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
    _mm_cvtsi128_si32(s)
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_f16(w: &[u16], a: &[u16]) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    let n = w.len().min(a.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_cvtph_ps(_mm_loadu_si128(w.as_ptr().add(i) as *const __m128i));
        let y = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i) as *const __m128i));
        acc = _mm256_fmadd_ps(x, y, acc);
        i += 8;
    }
    let mut s = hsum_f32(acc);
    while i < n {
        s += f16_to_f32(w[i]) * f16_to_f32(a[i]);
        i += 1;
    }
    s
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dot_f32(w: &[f32], a: &[f32]) -> f32 {
    // the safe vec_dot entry points reach here: the loops index both by one count
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    let n = w.len().min(a.len());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i + 8 <= n {
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(w.as_ptr().add(i)), _mm256_loadu_ps(a.as_ptr().add(i)), acc);
        i += 8;
    }
    let mut s = hsum_f32(acc);
    while i < n {
        s += w[i] * a[i];
        i += 1;
    }
    s
}

/// acc[i] = f16(f32(v[i]) * s + f32(acc[i])), fused, as ggml_vec_mad_f16.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn mad_f16(acc: &mut [u16], v: &[u16], s: f32) {
    let n = acc.len().min(v.len());
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        let y = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i) as *const __m128i));
        let x = _mm256_cvtph_ps(_mm_loadu_si128(v.as_ptr().add(i) as *const __m128i));
        let r = _mm256_fmadd_ps(x, sv, y);
        _mm_storeu_si128(acc.as_mut_ptr().add(i) as *mut __m128i, _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT));
        i += 8;
    }
    while i < n {
        acc[i] = f32_to_f16(f16_to_f32(v[i]).mul_add(s, f16_to_f32(acc[i])));
        i += 1;
    }
}

/// acc[i] = f16(f32(acc[i]) * s), as ggml_vec_scale_f16.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn scale_f16(acc: &mut [u16], s: f32) {
    let n = acc.len();
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        let y = _mm256_cvtph_ps(_mm_loadu_si128(acc.as_ptr().add(i) as *const __m128i));
        _mm_storeu_si128(acc.as_mut_ptr().add(i) as *mut __m128i, _mm256_cvtps_ph(_mm256_mul_ps(y, sv), _MM_FROUND_TO_NEAREST_INT));
        i += 8;
    }
    while i < n {
        acc[i] = f32_to_f16(f16_to_f32(acc[i]) * s);
        i += 1;
    }
}

/// f16 dot in ggml's AVX-512 order (see ops::attention::f16v::dot_scalar, its twin):
/// each 16-lane accumulator is two 8-lane halves here, lane for lane the same.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn dot_f16_ggml(a: &[u16], b: &[u16]) -> f32 {
    let n = a.len().min(b.len());
    let np = n & !63;
    let mut acc = [_mm256_setzero_ps(); 8];
    let mut i = 0;
    while i < np {
        for k in 0..8 {
            let x = _mm256_cvtph_ps(_mm_loadu_si128(a.as_ptr().add(i + 8 * k) as *const __m128i));
            let y = _mm256_cvtph_ps(_mm_loadu_si128(b.as_ptr().add(i + 8 * k) as *const __m128i));
            acc[k] = _mm256_fmadd_ps(x, y, acc[k]);
        }
        i += 64;
    }
    // acc[2j], acc[2j+1] are lanes 0..8 and 8..16 of ggml's accumulator j
    let lo = _mm256_add_ps(_mm256_add_ps(acc[0], acc[4]), _mm256_add_ps(acc[2], acc[6]));
    let hi = _mm256_add_ps(_mm256_add_ps(acc[1], acc[5]), _mm256_add_ps(acc[3], acc[7]));
    let t = _mm256_add_ps(lo, hi); // v[i] + v[i+8]
    let u = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)); // t[i] + t[i+4]
    let w = _mm_add_ps(u, _mm_movehl_ps(u, u)); // u0+u2, u1+u3
    let r = _mm_add_ss(w, _mm_shuffle_ps(w, w, 1));
    let mut sum = _mm_cvtss_f32(r) as f64;
    for j in np..n {
        sum += (f16_to_f32(a[j]) * f16_to_f32(b[j])) as f64;
    }
    sum as f32
}

/// g[i] = silu(g[i]) * u[i] with ggml's vector expf; twin of ops::silu_ggml.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn swiglu(g: &mut [f32], u: &[f32]) {
    let n = g.len().min(u.len());
    let mut i = 0;
    let r = _mm256_set1_ps(f32::from_bits(0x4B40_0000));
    while i + 8 <= n {
        let x = _mm256_loadu_ps(g.as_ptr().add(i));
        let nx = _mm256_sub_ps(_mm256_setzero_ps(), x);
        let z = _mm256_fmadd_ps(nx, _mm256_set1_ps(f32::from_bits(0x3FB8_AA3B)), r);
        let nn = _mm256_sub_ps(z, r);
        let b = _mm256_fnmadd_ps(nn, _mm256_set1_ps(f32::from_bits(0x35BF_BE8E)), _mm256_fnmadd_ps(nn, _mm256_set1_ps(f32::from_bits(0x3F31_7200)), nx));
        let uu = _mm256_mul_ps(b, b);
        let p = _mm256_fmadd_ps(_mm256_set1_ps(f32::from_bits(0x3C07_2010)), b, _mm256_set1_ps(f32::from_bits(0x3D2B_9F17)));
        let q = _mm256_fmadd_ps(_mm256_set1_ps(f32::from_bits(0x3E2A_AF33)), b, _mm256_set1_ps(f32::from_bits(0x3EFF_FEDB)));
        let s = _mm256_fmadd_ps(_mm256_set1_ps(f32::from_bits(0x3F7F_FFF6)), b, _mm256_set1_ps(1.0));
        let j = _mm256_fmadd_ps(_mm256_fmadd_ps(p, uu, q), uu, s);
        // |n| <= 126 here for all practical inputs; fall back to the scalar twin otherwise
        let big = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0), nn), _mm256_set1_ps(126.0), _CMP_GT_OQ));
        if big != 0 {
            for k in i..i + 8 {
                g[k] = crate::ops::silu_ggml(g[k]) * u[k];
            }
            i += 8;
            continue;
        }
        let e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(nn), _mm256_set1_epi32(127)), 23);
        let ex = _mm256_mul_ps(j, _mm256_castsi256_ps(e));
        let y = _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), ex));
        _mm256_storeu_ps(g.as_mut_ptr().add(i), _mm256_mul_ps(y, _mm256_loadu_ps(u.as_ptr().add(i))));
        i += 8;
    }
    for k in i..n {
        g[k] = crate::ops::silu_ggml(g[k]) * u[k];
    }
}
