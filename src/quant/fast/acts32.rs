//! Activations of the 32-element block types (Q8_0 or Q8_1 rows) as the fast
//! kernels read them: after the `n` rows (from `sides_offset` on, 64-byte
//! aligned), one `Side` per (token, block): the block's scale as f32 and the
//! integer sum of its 32 values, so a kernel whose weights are stored with an
//! offset (unsigned bytes for `vpdpbusd`) takes offset * sum off in integers,
//! and a format with a min adds m * d * sum.

use crate::gguf::GgmlType;
use crate::quant::blocks::{f16_to_f32, BlockQ8_0, BlockQ8_1};

/// What a kernel reads of one activation block besides its quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Side {
    /// The block's scale.
    pub d: f32,
    /// The sum of its 32 quants.
    pub sum: i32,
    /// d * sum, the factor of a weight block's min (`ActBlock32::ds`).
    pub ds: f32,
    _pad: u32,
}

/// The 32-element activation blocks (`Q8_0`, `Q8_1`): their quants and scale.
pub trait ActBlock32: Copy {
    fn qs(&self) -> &[i8; 32];
    fn d(&self) -> f32;
    /// d * sum(qs), as the weight blocks' min term reads it.
    fn ds(&self) -> f32 {
        self.d() * self.qs().iter().map(|&q| q as i32).sum::<i32>() as f32
    }
}

impl ActBlock32 for BlockQ8_0 {
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

impl ActBlock32 for BlockQ8_1 {
    fn qs(&self) -> &[i8; 32] {
        &self.qs
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    /// Q8_1's own s (f16), as ggml's Q4_1/Q5_1 kernels read it: rounding it
    /// otherwise moved SmolLM2 Q4_1 (KLD 0.003 from exact mode).
    fn ds(&self) -> f32 {
        f16_to_f32(self.s)
    }
}

impl Side {
    pub fn of<A: ActBlock32>(a: &A) -> Side {
        let d = a.d();
        let sum: i32 = a.qs().iter().map(|&q| q as i32).sum();
        Side { d, sum, ds: a.ds(), _pad: 0 }
    }
}

/// One token's activations as a 32-element kernel reads them: its first
/// block's quants and its first side.
#[derive(Clone, Copy)]
pub struct ActPtrs {
    pub qs: *const u8,
    pub side: *const Side,
}

impl ActPtrs {
    /// Token t of the `n` rows (`arb` bytes, `nb` blocks of `act` = (block
    /// bytes, quants offset) each) in `a`, sides after them.
    ///
    /// # Safety
    /// `a` is a buffer laid out as `buffer_bytes` says, with t < n.
    #[inline(always)]
    pub unsafe fn of(a: &[u8], arb: usize, n: usize, nb: usize, t: usize, act: (usize, usize)) -> ActPtrs {
        let side = a.as_ptr().add(sides_offset(n, arb)) as *const Side;
        ActPtrs { qs: a.as_ptr().add(t * arb + act.1), side: side.add(t * nb) }
    }
}

/// (Block bytes, quants offset) of Q8_0 and Q8_1 activation blocks.
pub const Q8_0_ACT: (usize, usize) = (std::mem::size_of::<BlockQ8_0>(), std::mem::offset_of!(BlockQ8_0, qs));
pub const Q8_1_ACT: (usize, usize) = (std::mem::size_of::<BlockQ8_1>(), std::mem::offset_of!(BlockQ8_1, qs));

/// The byte size and quants offset of an activation block of `act`, if it
/// is one the 32-element fast kernels read.
pub fn act_block(act: GgmlType) -> Option<(usize, usize)> {
    match act {
        GgmlType::Q8_0 => Some(Q8_0_ACT),
        GgmlType::Q8_1 => Some(Q8_1_ACT),
        _ => None,
    }
}

/// Where the sides start after `n` rows of `row_bytes`.
pub fn sides_offset(n: usize, row_bytes: usize) -> usize {
    (n * row_bytes).next_multiple_of(64)
}

/// Bytes of an activation buffer of `n` rows of `row_bytes` (`cols`
/// elements) of `act`, sides included where `act` has them.
pub fn buffer_bytes(act: GgmlType, n: usize, row_bytes: usize, cols: usize) -> usize {
    match act_block(act) {
        Some(_) => sides_offset(n, row_bytes) + n * (cols / 32) * std::mem::size_of::<Side>(),
        None => n * row_bytes,
    }
}

/// Fill the sides of one quantized row `row` of `act` into `out` (one per block).
pub fn write_sides(act: GgmlType, row: &[u8], out: &mut [Side]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        if let Some((bs, qoff)) = act_block(act) {
            assert!(out.len() * bs <= row.len(), "a side per activation block");
            // SAFETY: AVX2/F16C present; every block read is inside `row` (asserted).
            return unsafe { fill_avx2(row.as_ptr(), bs, qoff, act == GgmlType::Q8_1, out) };
        }
    }
    match act {
        GgmlType::Q8_0 => fill::<BlockQ8_0>(row, out),
        GgmlType::Q8_1 => fill::<BlockQ8_1>(row, out),
        _ => {}
    }
}

/// `fill` with AVX2: the same sides (integer sums; d and Q8_1's s converted by F16C).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn fill_avx2(row: *const u8, bs: usize, qoff: usize, has_s: bool, out: &mut [Side]) {
    use std::arch::x86_64::*;
    let h2f = |p: *const u8| _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const u16) as i32)));
    for (b, s) in out.iter_mut().enumerate() {
        let p = row.add(b * bs);
        let q = _mm256_loadu_si256(p.add(qoff) as *const __m256i);
        // |q| <= 128: pairs in i16, then i32 lanes
        let v = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
        let v = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0b01_00_11_10));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(v, _mm_shuffle_epi32(v, 0b10_11_00_01)));
        let d = h2f(p);
        let ds = if has_s { h2f(p.add(2)) } else { d * sum as f32 };
        *s = Side { d, sum, ds, _pad: 0 };
    }
}

fn fill<A: ActBlock32>(row: &[u8], out: &mut [Side]) {
    let blocks: &[A] = crate::quant::blocks::cast_blocks(row).expect("activation rows of whole blocks");
    for (s, b) in out.iter_mut().zip(blocks) {
        *s = Side::of(b);
    }
}

/// `n` rows of activation blocks followed by their sides, as `quantize_acts`
/// lays them out (for tests and benches that build activations by hand).
pub fn with_sides<A: ActBlock32>(blocks: &[A], n: usize) -> Vec<u8> {
    let rb = std::mem::size_of_val(blocks) / n.max(1);
    // SAFETY: the blocks are plain bytes (repr(C), no padding).
    let bytes = unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, std::mem::size_of_val(blocks)) };
    let off = sides_offset(n, rb);
    let mut v = vec![0u8; off + blocks.len() * std::mem::size_of::<Side>()];
    v[..bytes.len()].copy_from_slice(bytes);
    for (i, b) in blocks.iter().enumerate() {
        let s = Side::of(b);
        let o = off + i * std::mem::size_of::<Side>();
        v[o..o + 4].copy_from_slice(&s.d.to_le_bytes());
        v[o + 4..o + 8].copy_from_slice(&s.sum.to_le_bytes());
        v[o + 8..o + 12].copy_from_slice(&s.ds.to_le_bytes());
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::blocks::f32_to_f16;

    /// The AVX2 writer gives the scalar sides, extremes included.
    #[test]
    fn sides_equal_scalar() {
        let mut blocks: Vec<BlockQ8_1> = (0..7)
            .map(|i| {
                let qs: [i8; 32] = std::array::from_fn(|j| ((i * 37 + j * 11) % 256) as u8 as i8);
                let d = 0.01 * (i + 1) as f32;
                BlockQ8_1 { d: f32_to_f16(d), s: f32_to_f16(d * qs.iter().map(|&q| q as i32).sum::<i32>() as f32), qs }
            })
            .collect();
        blocks[0].qs = [-128; 32];
        blocks[1].qs = [127; 32];
        let bytes = unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, std::mem::size_of_val(&blocks[..])) };
        let mut got = vec![Side::default(); blocks.len()];
        write_sides(GgmlType::Q8_1, bytes, &mut got);
        let want: Vec<Side> = blocks.iter().map(Side::of).collect();
        assert_eq!(got, want);
        assert_eq!(got[0].sum, -4096);
        let b0: Vec<BlockQ8_0> = blocks.iter().map(|b| BlockQ8_0 { d: b.d, qs: b.qs }).collect();
        let bytes = unsafe { std::slice::from_raw_parts(b0.as_ptr() as *const u8, std::mem::size_of_val(&b0[..])) };
        write_sides(GgmlType::Q8_0, bytes, &mut got);
        assert_eq!(got, b0.iter().map(Side::of).collect::<Vec<_>>());
    }
}
