//! The fast layout of the 32-element block types (Q8_0, Q4_0, Q4_1, Q5_0,
//! Q5_1, IQ4_NL): rows in tiles of 16 and, per block of 32 elements, the 16
//! rows' values interleaved by groups of 4 elements, so a 64-byte vector holds
//! elements 4j..4j+4 of all 16 rows (row r in dword r) as unsigned bytes u,
//! ready for a `vpdpbusd` with one dword of activations broadcast. A tile is
//! `layout::tiles`' two regions: every block's values, then every block's meta.
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

use super::layout::{grid_index, put_bits, tiles, BitLayout, Geometry, HighBits};
use crate::quant::blocks::{f32_to_f16, BlockIQ4NL, BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use crate::quant::legacy::Block32;
use crate::quant::AlignedBytes;

/// Rows per tile of the 32-element layout.
pub const TILE32_ROWS: usize = 16;

pub const Q8_0_GEOMETRY: Geometry = Geometry { values: 512, meta: 32 };
pub const Q4_0_GEOMETRY: Geometry = Geometry { values: 256, meta: 32 };
pub const Q4_1_GEOMETRY: Geometry = Geometry { values: 256, meta: 64 };
pub const Q5_0_GEOMETRY: Geometry = Geometry { values: 320, meta: 32 };
pub const Q5_1_GEOMETRY: Geometry = Geometry { values: 320, meta: 64 };
/// Offsets in a block's values and meta.
pub const B32_HIGH: usize = 256;
pub const B32_D: usize = 0;
pub const B32_M: usize = 32;

/// How a type stores its values.
#[derive(Clone, Copy, PartialEq)]
enum Store {
    /// Bytes of q + 128.
    Bytes,
    /// Nibbles of q + offset (or of the IQ4_NL grid index when `iq4`).
    Nibbles { offset: i8, iq4: bool },
    /// The low 4 bits of q + offset as nibbles, the fifth bits apart.
    Five { offset: i8, high: HighBits },
}

fn pack<B: Block32 + Sync>(data: &[u8], rows: usize, row_bytes: usize, g: Geometry, store: Store) -> AlignedBytes {
    tiles::<B, TILE32_ROWS>(data, rows, row_bytes, g, |blocks, v, mt| {
        let mut fifth = [[0u8; 32]; TILE32_ROWS];
        for (r, blk) in blocks.iter().enumerate() {
            let Some(blk) = blk else { continue };
            let q = blk.unpack();
            let u: [u8; 32] = match store {
                Store::Bytes => q.map(|x| (x as i16 + 128) as u8),
                Store::Nibbles { iq4: true, .. } => q.map(grid_index),
                Store::Nibbles { offset, .. } | Store::Five { offset, .. } => q.map(|x| (x + offset) as u8),
            };
            for e in 0..4 {
                if store == Store::Bytes {
                    for j in 0..8 {
                        v[64 * j + 4 * r + e] = u[4 * j + e];
                    }
                    continue;
                }
                for k in 0..4 {
                    v[64 * k + 4 * r + e] = (u[4 * k + e] & 0xF) | (u[16 + 4 * k + e] & 0xF) << 4;
                }
            }
            if matches!(store, Store::Five { .. }) {
                fifth[r] = u.map(|x| (x >> 4) & 1);
            }
            mt[B32_D + 2 * r..B32_D + 2 * r + 2].copy_from_slice(&f32_to_f16(blk.d()).to_le_bytes());
            if let Some(m) = blk.m() {
                mt[B32_M + 2 * r..B32_M + 2 * r + 2].copy_from_slice(&f32_to_f16(m).to_le_bytes());
            }
        }
        if let Store::Five { high, .. } = store {
            // value 4r+e of vector j: u(r, 4j+e)
            put_bits(8, high, &mut v[B32_HIGH..], |j, i| fifth[i / 4][4 * j + i % 4]);
        }
    })
}

pub fn pack_q8_0(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ8_0>(data, rows, row_bytes, Q8_0_GEOMETRY, Store::Bytes)
}
pub fn pack_q4_0(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ4_0>(data, rows, row_bytes, Q4_0_GEOMETRY, Store::Nibbles { offset: 8, iq4: false })
}
pub fn pack_iq4_nl(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockIQ4NL>(data, rows, row_bytes, Q4_0_GEOMETRY, Store::Nibbles { offset: 0, iq4: true })
}
pub fn pack_q4_1(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ4_1>(data, rows, row_bytes, Q4_1_GEOMETRY, Store::Nibbles { offset: 0, iq4: false })
}
pub fn pack_q5_0<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ5_0>(data, rows, row_bytes, Q5_0_GEOMETRY, Store::Five { offset: 16, high: L::HIGH })
}
pub fn pack_q5_1<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    pack::<BlockQ5_1>(data, rows, row_bytes, Q5_1_GEOMETRY, Store::Five { offset: 0, high: L::HIGH })
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
