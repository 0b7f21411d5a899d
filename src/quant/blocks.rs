//! GGML block layouts, byte for byte as ggml stores them (`#[repr(C)]`, f16 as u16).

use half::f16;

#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

macro_rules! block {
    ($(#[$m:meta])* $name:ident, $size:expr, { $($f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        pub struct $name { $(pub $f: $t),* }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
    };
}

block!(/// 4-bit, scale only: x = d * (q - 8)
    BlockQ4_0, 18, { d: u16, qs: [u8; 16] });
block!(/// 4-bit, scale and min: x = d * q + m
    BlockQ4_1, 20, { d: u16, m: u16, qs: [u8; 16] });
block!(/// 5-bit, scale only: x = d * (q - 16)
    BlockQ5_0, 22, { d: u16, qh: [u8; 4], qs: [u8; 16] });
block!(/// 5-bit, scale and min
    BlockQ5_1, 24, { d: u16, m: u16, qh: [u8; 4], qs: [u8; 16] });
block!(/// 8-bit, scale only
    BlockQ8_0, 34, { d: u16, qs: [i8; 32] });
block!(/// 8-bit activations with s = d * sum(qs)
    BlockQ8_1, 36, { d: u16, s: u16, qs: [i8; 32] });
block!(/// 2-bit super-block of 16 x 16
    BlockQ2K, 84, { scales: [u8; 16], qs: [u8; 64], d: u16, dmin: u16 });
block!(/// 3-bit super-block of 16 x 16
    BlockQ3K, 110, { hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: u16 });
block!(/// 4-bit super-block of 8 x 32
    BlockQ4K, 144, { d: u16, dmin: u16, scales: [u8; 12], qs: [u8; 128] });
block!(/// 5-bit super-block of 8 x 32
    BlockQ5K, 176, { d: u16, dmin: u16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] });
block!(/// 6-bit super-block of 16 x 16
    BlockQ6K, 210, { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: u16 });
block!(/// 8-bit activations for k-quants, with sums of each 16
    BlockQ8K, 292, { d: f32, qs: [i8; 256], bsums: [i16; 16] });
block!(/// 4-bit non-linear, blocks of 32
    BlockIQ4NL, 18, { d: u16, qs: [u8; 16] });
block!(/// 4-bit non-linear super-block of 8 x 32 with 6-bit scales
    BlockIQ4XS, 136, { d: u16, scales_h: u16, scales_l: [u8; 4], qs: [u8; 128] });

/// The non-linear grid of IQ4_NL and IQ4_XS.
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Reinterpret raw tensor bytes as blocks. Fails (None) when the length is not a
/// whole number of blocks or the pointer is misaligned for the block type.
pub fn cast_blocks<B: Copy>(bytes: &[u8]) -> Option<&[B]> {
    let sz = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(sz) || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()) {
        return None;
    }
    // SAFETY: all block types are repr(C) plain-old-data (integers only, any bit
    // pattern valid); length and alignment were checked above.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, bytes.len() / sz) })
}

pub fn cast_blocks_mut<B: Copy>(bytes: &mut [u8]) -> Option<&mut [B]> {
    let sz = std::mem::size_of::<B>();
    if !bytes.len().is_multiple_of(sz) || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()) {
        return None;
    }
    // SAFETY: as in cast_blocks; the borrow is exclusive.
    Some(unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr() as *mut B, bytes.len() / sz) })
}

pub fn as_bytes<B: Copy>(blocks: &[B]) -> &[u8] {
    // SAFETY: plain-old-data blocks without padding (sizes asserted above).
    unsafe { std::slice::from_raw_parts(blocks.as_ptr() as *const u8, std::mem::size_of_val(blocks)) }
}
