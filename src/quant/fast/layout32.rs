//! The fast layout of the 32-element block types (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1, IQ4_NL): rows in tiles of 16 and, per block of 32 elements, the 16
//! rows' values interleaved by groups of 4 elements, so a 64-byte vector holds
//! elements 4j..4j+4 of all 16 rows (row r in dword r) as unsigned bytes u,
//! ready for a `vpdpbusd` with one dword of activations broadcast. A tile is
//! `layout::tiles`' groups of blocks (`Geometry::group`): each group's
//! blocks' meta, then their values. The kernels read these tiles without
//! software prefetches for fewer than `PREFETCH_FROM` tokens.
//!
//! u = q + offset, offset = 2^shift (`Store::shift`; the kernel takes
//! offset * sum(a) off): Q8_0 q + 128; Q4_0 q + 8; Q5_0 q + 16; IQ4_NL the
//! grid index (the kernel maps it to grid value + 128); Q4_1 and Q5_1 q as is
//! (no offset: their min is a separate term).
//!
//!   Q8_0:  8 vectors j of 64 bytes: byte 4r+e = u(r, 4j+e)
//!   4-bit: 4 vectors k of 64 bytes: byte 4r+e = u(r, 4k+e) | u(r, 16+4k+e) << 4
//!          (vector j = k in the low nibbles, j = 4+k in the high ones)
//!   5-bit: the 4-bit vectors of the low 4 bits, then 64 bytes of the fifth
//!          bits (value 4r+e of vector j: bit 4 of u(r, 4j+e)) as the ISA
//!          reads them (`layout::HighBits`)
//!   meta:  d (f16) per row at 2r; with a min, m (f16) per row at 32 + 2r

use super::layout::{put_f16, tiles, BitLayout, Geometry, HighBits};
use crate::quant::blocks::{BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use crate::quant::AlignedBytes;

/// Rows per tile of the 32-element layout.
pub const TILE32_ROWS: usize = 16;

/// Tokens from which a kernel call prefetches these tiles in software
/// (`Geometry::prefetch_from`): one token's stream goes faster without (the
/// loads in order, the hardware prefetchers follow it), eight tokens' with
/// it (the arithmetic per line is eight times one token's, and the stream
/// slows). Qwen 0.5B Q4_K_M (mostly Q5_0 and Q8_0), `bench -p 1,2,5,8 -n 0
/// -r 5 -t 2`, three interleaved rounds, t/s, never / from 2 / from 3
/// tokens: pp2 151-158 / 143-155 / 147-159, pp5 345-364 / 339-378 /
/// 327-350, pp8 389-421 / 440-475 / 410-463; pp512 unchanged.
pub const PREFETCH_FROM: usize = 6;
pub const Q8_0_GEOMETRY: Geometry = Geometry::new(512, 32).prefetch_from(PREFETCH_FROM);
pub const Q4_0_GEOMETRY: Geometry = Geometry::new(256, 32).prefetch_from(PREFETCH_FROM);
pub const Q4_1_GEOMETRY: Geometry = Geometry::new(256, 64).prefetch_from(PREFETCH_FROM);
pub const Q5_0_GEOMETRY: Geometry = Geometry::new(320, 32).prefetch_from(PREFETCH_FROM);
pub const Q5_1_GEOMETRY: Geometry = Geometry::new(320, 64).prefetch_from(PREFETCH_FROM);
/// Offsets in a block's values and meta.
pub const B32_HIGH: usize = 256;
pub const B32_D: usize = 0;
pub const B32_M: usize = 32;

/// How a type stores its values.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    /// Bytes of q + 128.
    Bytes,
    /// Nibbles: ggml's own (q + offset, or the IQ4_NL grid index).
    Nibbles,
    /// ggml's nibbles as the low 4 bits, its fifth bits apart.
    Five(HighBits),
}

/// A 32-element block's fields as the tiles copy them: u is ggml's stored
/// value (the nibble, with the fifth bit; Q8_0's byte + 128).
pub trait Raw32: Copy + Sync {
    /// Q8_0's 32 bytes, or 16 nibble bytes (byte l: element l | element 16 + l << 4).
    fn low(&self) -> &[u8];
    /// The fifth bits: element i at bit i.
    fn qh(&self) -> u32 {
        0
    }
    /// The f16 bits of d and (with a min) m.
    fn d_m(&self) -> (u16, Option<u16>);
}

impl Raw32 for BlockQ8_0 {
    fn low(&self) -> &[u8] {
        bytes_of_i8(&self.qs)
    }
    fn d_m(&self) -> (u16, Option<u16>) {
        (self.d, None)
    }
}
impl Raw32 for BlockQ4_0 {
    fn low(&self) -> &[u8] {
        &self.qs
    }
    fn d_m(&self) -> (u16, Option<u16>) {
        (self.d, None)
    }
}
impl Raw32 for BlockIQ4NL {
    fn low(&self) -> &[u8] {
        &self.qs
    }
    fn d_m(&self) -> (u16, Option<u16>) {
        (self.d, None)
    }
}
impl Raw32 for BlockQ4_1 {
    fn low(&self) -> &[u8] {
        &self.qs
    }
    fn d_m(&self) -> (u16, Option<u16>) {
        (self.d, Some(self.m))
    }
}
impl Raw32 for BlockQ5_0 {
    fn low(&self) -> &[u8] {
        &self.qs
    }
    fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
    fn d_m(&self) -> (u16, Option<u16>) {
        (self.d, None)
    }
}
impl Raw32 for BlockQ5_1 {
    fn low(&self) -> &[u8] {
        &self.qs
    }
    fn qh(&self) -> u32 {
        u32::from_le_bytes(self.qh)
    }
    fn d_m(&self) -> (u16, Option<u16>) {
        (self.d, Some(self.m))
    }
}

fn bytes_of_i8(q: &[i8; 32]) -> &[u8] {
    // SAFETY: i8 and u8 have the same size and alignment, every bit pattern valid.
    unsafe { std::slice::from_raw_parts(q.as_ptr() as *const u8, 32) }
}

/// Bits 0..4 of `x` to bit 0 of bytes 0..4 (shifted copies 7 bits apart
/// cannot carry into each other).
#[inline(always)]
fn spread4(x: u32) -> u32 {
    (x & 0xF).wrapping_mul(0x0020_4081) & 0x0101_0101
}

fn pack<B: Raw32>(data: &[u8], rows: usize, row_bytes: usize, g: Geometry, store: Store) -> AlignedBytes {
    tiles::<B, TILE32_ROWS>(data, rows, row_bytes, g, |blocks, v, mt| {
        for (r, blk) in blocks.iter().enumerate() {
            let Some(blk) = blk else { continue };
            let low = blk.low();
            // vector j's dword r: elements 4j..4j+4 (Q8_0), or the nibble
            // bytes 4k..4k+4 (elements 4k + e and 16 + 4k + e)
            let dword = |i: usize| u32::from_le_bytes(low[4 * i..4 * i + 4].try_into().expect("4 bytes"));
            let put = |v: &mut [u8], j: usize, x: u32| v[64 * j + 4 * r..64 * j + 4 * r + 4].copy_from_slice(&x.to_le_bytes());
            match store {
                Store::Bytes => (0..8).for_each(|j| put(v, j, dword(j) ^ 0x8080_8080)),
                _ => (0..4).for_each(|k| put(v, k, dword(k))),
            }
            if let Store::Five(high) = store {
                let h = &mut v[B32_HIGH..];
                for j in 0..8 {
                    // value 4r + e of vector j: the fifth bit of element 4j + e
                    let bits = blk.qh() >> (4 * j);
                    match high {
                        HighBits::Masks => h[8 * j + r / 2] |= ((bits & 0xF) as u8) << (4 * (r % 2)),
                        HighBits::Planes => {
                            let at = 4 * r;
                            let x = u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes")) | spread4(bits) << j;
                            h[at..at + 4].copy_from_slice(&x.to_le_bytes());
                        }
                    }
                }
            }
            let (d, m) = blk.d_m();
            put_f16(mt, B32_D, r, d);
            if let Some(m) = m {
                put_f16(mt, B32_M, r, m);
            }
        }
    })
}

pub fn pack_q8_0(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ8_0>(data, rows, row_bytes, Q8_0_GEOMETRY, Store::Bytes)
}
pub fn pack_q4_0(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ4_0>(data, rows, row_bytes, Q4_0_GEOMETRY, Store::Nibbles)
}
pub fn pack_iq4_nl(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockIQ4NL>(data, rows, row_bytes, Q4_0_GEOMETRY, Store::Nibbles)
}
pub fn pack_q4_1(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ4_1>(data, rows, row_bytes, Q4_1_GEOMETRY, Store::Nibbles)
}
pub fn pack_q5_0<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ5_0>(data, rows, row_bytes, Q5_0_GEOMETRY, Store::Five(L::HIGH))
}
pub fn pack_q5_1<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ5_1>(data, rows, row_bytes, Q5_1_GEOMETRY, Store::Five(L::HIGH))
}

/// How a format's tile block holds its values, as the kernels decode them
/// into the 8 vectors j of unsigned bytes u (elements 4j..4j+4 of the rows).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// Q8_0: u as bytes, up to 255.
    Bytes,
    /// 4-bit u (Q4_0, Q4_1).
    Nibbles,
    /// 4-bit grid indices, mapped to the IQ4_NL grid value + 128.
    Iq4,
    /// 4-bit low parts and the fifth bits' masks (Q5_0, Q5_1): u up to 31.
    Five,
}

/// One 32-element format as every ISA's kernel reads its tiles.
pub trait Format32 {
    const G: Geometry;
    /// The activation type's (block bytes, quants offset): Q8_0 or Q8_1.
    const ACT: (usize, usize);
    /// log2 of the weights' offset as the kernel sees them; None: a min instead.
    const SHIFT: Option<u32>;
    const VALUES: Values;
}

/// One 64-byte vector of a tile block in an ISA's registers (one `__m512i`,
/// or two `__m256i` halves), with the steps `planes` decodes values by.
///
/// # Safety
/// Every method needs the ISA's features; `load` reads 64 aligned bytes at
/// `p`, `add_high` the 64 bytes of fifth bits at `high`.
#[allow(clippy::missing_safety_doc)]
pub trait Plane32: Copy {
    /// How this ISA's tiles store the fifth bits.
    type Bits: BitLayout;
    /// 64 bytes (64-byte aligned).
    unsafe fn load(p: *const u8) -> Self;
    /// The low and high nibbles of every byte.
    unsafe fn nibbles(self) -> (Self, Self);
    /// Each byte (a grid index) mapped to its IQ4_NL grid value as the
    /// ISA's kernel multiplies it: + 128 (unsigned) for AVX-512's
    /// `vpdpbusd`, the value itself (signed) for AVX2's sign trick.
    unsafe fn iq4(self) -> Self;
    /// Vector j with 16 added where its fifth bit is set (the block's
    /// fifth bits are at `high`).
    unsafe fn add_high(self, high: *const u8, j: usize) -> Self;
}

/// The 8 vectors j of unsigned weights u of the tile block at `p` (elements
/// 4j..4j+4 of the 16 rows), as format `F` codes them. Plain loops: through
/// `array::from_fn`'s closures the intrinsics were not always inlined into
/// the kernels (a call each: Q5_0 on AVX2 ~5x slower).
///
/// # Safety
/// `p` is a tile block of `F`; the CPU has `V`'s features.
#[inline(always)]
pub unsafe fn planes<F: Format32, V: Plane32>(p: *const u8) -> [V; 8] {
    let mut out = [V::load(p); 8];
    if F::VALUES == Values::Bytes {
        for (j, o) in out.iter_mut().enumerate().skip(1) {
            *o = V::load(p.add(64 * j));
        }
        return out;
    }
    for k in 0..4 {
        (out[k], out[4 + k]) = V::load(p.add(64 * k)).nibbles();
    }
    for (j, o) in out.iter_mut().enumerate() {
        match F::VALUES {
            Values::Iq4 => *o = o.iq4(),
            Values::Five => *o = o.add_high(p.add(B32_HIGH), j),
            _ => {}
        }
    }
    out
}

macro_rules! format32 {
    ($name:ident, $g:expr, $act:expr, $shift:expr, $values:expr) => {
        pub struct $name;
        impl Format32 for $name {
            const G: Geometry = $g;
            const ACT: (usize, usize) = $act;
            const SHIFT: Option<u32> = $shift;
            const VALUES: Values = $values;
        }
    };
}
use super::acts32::{Q8_0_ACT, Q8_1_ACT};
format32!(FQ8_0, Q8_0_GEOMETRY, Q8_0_ACT, Some(7), Values::Bytes);
format32!(FQ4_0, Q4_0_GEOMETRY, Q8_0_ACT, Some(3), Values::Nibbles);
format32!(FIq4Nl, Q4_0_GEOMETRY, Q8_0_ACT, Some(7), Values::Iq4);
format32!(FQ4_1, Q4_1_GEOMETRY, Q8_1_ACT, None, Values::Nibbles);
format32!(FQ5_0, Q5_0_GEOMETRY, Q8_0_ACT, Some(4), Values::Five);
format32!(FQ5_1, Q5_1_GEOMETRY, Q8_1_ACT, None, Values::Five);

/// An ISA module's `kernels(ty)` for the 32-element types, its gemm
/// functions compiled from kernel `$k<Format>` with `gemm_fn!($isa, ...)`:
/// the one table of formats, packers and kernels.
macro_rules! kernels32 {
    ($isa:ident, $k:ident, $plane:ty) => {
        gemm_fn!($isa, gemm_q8_0, $k<FQ8_0>);
        gemm_fn!($isa, gemm_q4_0, $k<FQ4_0>);
        gemm_fn!($isa, gemm_iq4_nl, $k<FIq4Nl>);
        gemm_fn!($isa, gemm_q4_1, $k<FQ4_1>);
        gemm_fn!($isa, gemm_q5_0, $k<FQ5_0>);
        gemm_fn!($isa, gemm_q5_1, $k<FQ5_1>);

        /// The fast kernel of a 32-element block type.
        pub fn kernels(ty: crate::gguf::GgmlType) -> Option<super::FastKernels> {
            use crate::gguf::GgmlType as T;
            type Pack = fn(&[u8], usize, usize) -> crate::quant::AlignedBytes;
            let (geometry, pack, gemm): (Geometry, Pack, super::FastGemmFn) = match ty {
                T::Q8_0 => (FQ8_0::G, pack_q8_0, gemm_q8_0),
                T::Q4_0 => (FQ4_0::G, pack_q4_0, gemm_q4_0),
                T::IQ4_NL => (FIq4Nl::G, pack_iq4_nl, gemm_iq4_nl),
                T::Q4_1 => (FQ4_1::G, pack_q4_1, gemm_q4_1),
                T::Q5_0 => (FQ5_0::G, pack_q5_0::<<$plane as Plane32>::Bits>, gemm_q5_0),
                T::Q5_1 => (FQ5_1::G, pack_q5_1::<<$plane as Plane32>::Bits>, gemm_q5_1),
                _ => return None,
            };
            Some(super::FastKernels { ty, rows: TILE32_ROWS, geometry, pack, gemm })
        }
    };
}
pub(super) use kernels32;
