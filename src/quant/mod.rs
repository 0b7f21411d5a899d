//! GGML quantization formats: block layouts, reference dequantization,
//! activation quantization (Q8_0, Q8_1, Q8_K, F16, BF16) and the dot product of
//! each weight type with its activation type, as ggml pairs them.
//!
//! The scalar functions in `legacy`, `kquants`, `float` are the truth; SIMD
//! twins live in `simd` and are chosen once at start-up (`kernels`).

mod aligned;
pub mod blocks;
pub mod fast;
pub mod float;
pub mod kquants;
pub mod legacy;
pub mod quantize;
pub mod simd;

pub use aligned::AlignedBytes;

use crate::gguf::GgmlType;
use blocks::*;

/// Row-level kernels of one weight type, all on raw bytes.
#[derive(Clone, Copy)]
pub struct TypeKernels {
    pub ty: GgmlType,
    /// The activation type ggml pairs with this weight type (its vec_dot_type).
    pub act: GgmlType,
    pub dequantize: fn(&[u8], &mut [f32]),
    /// Dot product of one weight row with one activation row (same element count).
    pub vec_dot: fn(&[u8], &[u8]) -> f32,
    /// How llama.cpp rounds this type in batched matmuls (see `dot_for`).
    pub batch: BatchDot,
    /// Quantize an f32 row into the activation type.
    pub quantize_act: fn(&[f32], &mut [u8]),
    /// Many rows times many tokens at once, each pair rounded as
    /// `dot_for(n_tok, t)`.
    pub gemm: Option<GemmFn>,
    /// `gemm` over rows packed by `pack_rows` (same results, bit for bit).
    pub gemm_packed: Option<GemmFn>,
}

/// Rows per group of the packed layout.
pub const PACK_ROWS: usize = 4;

/// Weight rows repacked for the multi-row kernels: each group of
/// `PACK_ROWS` rows stores its blocks interleaved (block b of rows 0..4, then
/// block b + 1, ...), so a 4-row tile reads one sequential stream; rows past
/// the last whole group stay plain. A group takes the bytes of its rows, so
/// rows r0.. (r0 a multiple of 4) start at byte r0 * row_bytes as before.
pub fn pack_rows(data: &[u8], rows: usize, row_bytes: usize, block_bytes: usize) -> AlignedBytes {
    let mut out = AlignedBytes::weights(rows * row_bytes);
    let o = out.as_mut_slice();
    let nb = row_bytes / block_bytes;
    let groups = rows / PACK_ROWS;
    for g in 0..groups {
        let base = g * PACK_ROWS * row_bytes;
        for b in 0..nb {
            for i in 0..PACK_ROWS {
                let src = base + i * row_bytes + b * block_bytes;
                let dst = base + (b * PACK_ROWS + i) * block_bytes;
                o[dst..dst + block_bytes].copy_from_slice(&data[src..src + block_bytes]);
            }
        }
    }
    let tail = groups * PACK_ROWS * row_bytes;
    o[tail..].copy_from_slice(&data[tail..rows * row_bytes]);
    out
}

/// `gemm(w, w_row_bytes, n_rows, acts, act_row_bytes, n_tok, out, out_stride)`
/// writes out[t * out_stride + r] = dot_for(n_tok, t)(row r, token t).
///
/// # Safety
/// `w` holds `n_rows` rows, `acts` `n_tok` rows, of the kernel's types; `out`
/// is valid for every index written; the CPU has the features the kernel needs.
pub type GemmFn = unsafe fn(&[u8], usize, usize, &[u8], usize, usize, *mut f32, usize);

/// The same dot product with another float rounding, as llama.cpp's x86
/// batched kernels compute it; the integer parts are identical.
#[derive(Clone, Copy)]
pub enum BatchDot {
    /// Every token uses `vec_dot`.
    Same,
    /// Tokens in whole groups of four use this (the repacked GEMM), the
    /// remaining `n % 4` use `vec_dot` (the GEMV).
    Groups4(fn(&[u8], &[u8]) -> f32),
    /// Batches of at least 8 tokens use this for every token (the tiled
    /// K-quant matmul), smaller batches `vec_dot`.
    Wide(fn(&[u8], &[u8]) -> f32),
    /// Batches of at least 2 tokens use this (llamafile's tinyBLAS for float
    /// rows), single tokens `vec_dot`.
    Pairs(fn(&[u8], &[u8]) -> f32),
}

/// Tokens of a batch of `n` in whole groups of four (`BatchDot::Groups4`'s
/// GEMM share: tokens 0..groups4_len(n)).
pub fn groups4_len(n: usize) -> usize {
    n - n % 4
}

impl TypeKernels {
    /// The dot to use for token `t` of a matmul over `n` tokens.
    pub fn dot_for(&self, n: usize, t: usize) -> fn(&[u8], &[u8]) -> f32 {
        match self.batch {
            BatchDot::Groups4(f) if t < groups4_len(n) => f,
            BatchDot::Wide(f) if n >= 8 => f,
            BatchDot::Pairs(f) if n >= 2 => f,
            _ => self.vec_dot,
        }
    }
}

fn cast<B: Copy>(b: &[u8]) -> &[B] {
    cast_blocks(b).expect("row bytes must be whole, aligned blocks")
}
fn cast_mut<B: Copy>(b: &mut [u8]) -> &mut [B] {
    cast_blocks_mut(b).expect("row bytes must be whole, aligned blocks")
}

/// The two operands of a vec_dot as blocks, refused when their counts differ
/// (every dot entry point, scalar and SIMD, has the same contract).
fn dot_pair<'a, W: Copy, A: Copy>(w: &'a [u8], a: &'a [u8]) -> (&'a [W], &'a [A]) {
    let (w, a) = (cast::<W>(w), cast::<A>(a));
    assert_eq!(w.len(), a.len(), "vec_dot: operands of different lengths");
    (w, a)
}

macro_rules! k32 {
    ($blk:ty, Q8_0) => {
        (
            GgmlType::Q8_0,
            (|w, o| legacy::dequantize(cast::<$blk>(w), o)) as fn(&[u8], &mut [f32]),
            (|w, a| {
                let (w, a) = dot_pair::<$blk, BlockQ8_0>(w, a);
                legacy::dot_q8_0(w, a)
            }) as fn(&[u8], &[u8]) -> f32,
            (|x, o| legacy::quantize_q8_0(x, cast_mut::<BlockQ8_0>(o))) as fn(&[f32], &mut [u8]),
        )
    };
    ($blk:ty, Q8_1) => {
        (
            GgmlType::Q8_1,
            (|w, o| legacy::dequantize(cast::<$blk>(w), o)) as fn(&[u8], &mut [f32]),
            (|w, a| {
                let (w, a) = dot_pair::<$blk, BlockQ8_1>(w, a);
                legacy::dot_q8_1(w, a)
            }) as fn(&[u8], &[u8]) -> f32,
            (|x, o| legacy::quantize_q8_1(x, cast_mut::<BlockQ8_1>(o))) as fn(&[f32], &mut [u8]),
        )
    };
}
macro_rules! kk {
    ($blk:ty) => {
        (
            GgmlType::Q8_K,
            (|w, o| kquants::dequantize(cast::<$blk>(w), o)) as fn(&[u8], &mut [f32]),
            (|w, a| {
                let (w, a) = dot_pair::<$blk, BlockQ8K>(w, a);
                kquants::dot_q8_k(w, a)
            }) as fn(&[u8], &[u8]) -> f32,
            (|x, o| kquants::quantize_q8_k(x, cast_mut::<BlockQ8K>(o))) as fn(&[f32], &mut [u8]),
        )
    };
}

/// The scalar reference kernels of a weight type (None for activation-only types).
pub fn scalar_kernels(ty: GgmlType) -> Option<TypeKernels> {
    use GgmlType::*;
    let (act, dequantize, vec_dot, quantize_act) = match ty {
        F32 => (
            F32,
            (|w, o| float::dequantize_f32(cast(w), o)) as fn(&[u8], &mut [f32]),
            (|w, a| {
                let (w, a) = dot_pair(w, a);
                float::dot_f32(w, a)
            }) as fn(&[u8], &[u8]) -> f32,
            (|x, o| cast_mut::<f32>(o).copy_from_slice(x)) as fn(&[f32], &mut [u8]),
        ),
        F16 => (
            F16,
            (|w, o| float::dequantize_f16(cast(w), o)) as fn(&[u8], &mut [f32]),
            (|w, a| {
                let (w, a) = dot_pair(w, a);
                float::dot_f16(w, a)
            }) as fn(&[u8], &[u8]) -> f32,
            (|x, o| float::quantize_f16(x, cast_mut(o))) as fn(&[f32], &mut [u8]),
        ),
        BF16 => (
            BF16,
            (|w, o| float::dequantize_bf16(cast(w), o)) as fn(&[u8], &mut [f32]),
            (|w, a| {
                let (w, a) = dot_pair(w, a);
                float::dot_bf16(w, a)
            }) as fn(&[u8], &[u8]) -> f32,
            (|x, o| float::quantize_bf16(x, cast_mut(o))) as fn(&[f32], &mut [u8]),
        ),
        Q4_0 => k32!(BlockQ4_0, Q8_0),
        Q4_1 => k32!(BlockQ4_1, Q8_1),
        Q5_0 => k32!(BlockQ5_0, Q8_0),
        Q5_1 => k32!(BlockQ5_1, Q8_1),
        Q8_0 => k32!(BlockQ8_0, Q8_0),
        IQ4_NL => k32!(BlockIQ4NL, Q8_0),
        Q2_K => kk!(BlockQ2K),
        Q3_K => kk!(BlockQ3K),
        Q4_K => kk!(BlockQ4K),
        Q5_K => kk!(BlockQ5K),
        Q6_K => kk!(BlockQ6K),
        IQ4_XS => kk!(BlockIQ4XS),
        Q8_1 | Q8_K => return None,
    };
    let batch = match ty {
        F32 => BatchDot::Pairs(|w, a| {
            let (w, a) = dot_pair(w, a);
            float::dot_f32_batch(w, a)
        }),
        F16 => BatchDot::Pairs(|w, a| {
            let (w, a) = dot_pair(w, a);
            float::dot_f16_batch(w, a)
        }),
        _ => BatchDot::Same,
    };
    Some(TypeKernels { ty, act, dequantize, vec_dot, batch, quantize_act, gemm: None, gemm_packed: None })
}

/// The fastest kernels for this machine (SIMD where available, else scalar).
pub fn kernels(ty: GgmlType) -> Option<TypeKernels> {
    let mut k = scalar_kernels(ty)?;
    simd::upgrade(&mut k);
    Some(k)
}

/// Dequantize a whole tensor's bytes (any supported weight type) to f32.
pub fn dequantize_row(ty: GgmlType, bytes: &[u8], out: &mut [f32]) {
    (scalar_kernels(ty).expect("weight type").dequantize)(bytes, out)
}
