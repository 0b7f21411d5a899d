//! The fast layout of the super-block types (`layout32` has the 32-element
//! ones): rows in tiles of 8, each tile's super-blocks in order, and in a
//! tile super-block the 8 rows' values interleaved by groups of 8
//! elements, so a 64-byte vector holds elements 8g..8g+8 of all 8 rows (row r
//! at bytes 8r..8r+8), ready for a VNNI product with a broadcast 8 bytes of
//! activations.
//!
//! A tile is two regions: the values of its super-blocks (64-byte aligned, so
//! every 64-byte load is one cache line), then their scales ("meta"); the
//! tile is padded to a whole number of cache lines.
//!
//! Q4_K (8 x 148 bytes per super-block; ggml's 8 x 144):
//!   values 1024: 16 planes k of 64 bytes: byte 8r+e = q(r, 16k+e) | q(r, 16k+8+e) << 4
//!   meta 160:    scale of sub-block s (32 elements) of row r at 8s+r (6 bits),
//!                64.. mins likewise, 128.. d (f16) per row, 144.. dmin per row
//! Q5_K (8 x 180 bytes; ggml's 8 x 176): Q4_K's 16 planes of the low 4 bits,
//!   then the fifth bits of the 32 groups g in 256 bytes (`HighBits`), Q4_K's meta
//! Q2_K (8 x 84 as ggml's): 8 planes m of 64 bytes: byte 8r+e holds q(r,
//!   32m+8i+e) (2 bits) at bits 2i..2i+2, i = 0..4; meta 160: ggml's scale
//!   byte (scale | min << 4) of sub-block s (16 elements) of row r at 8s+r,
//!   128.. d, 144.. dmin (f16) per row
//! Q3_K (8 x 114; ggml's 8 x 110), u = q + 4 in 0..8: Q2_K's planes of the low
//!   2 bits of u, then the third bits likewise; meta 144: the scale (i8, -32..31) of
//!   sub-block s of row r at 8s+r, 128.. d per row
//! IQ4_XS (8 x 138 bytes; ggml's 8 x 136): Q4_K's planes of the grid indices;
//!   meta 80: the scale (i8, -32..31) of sub-block s (32 elements) of row r at
//!   8s+r, 64.. d (f16) per row
//! Q6_K (8 x 210 as ggml's), u = q + 32 in 0..64:
//!   values 1536: 16 planes of the low 4 bits of u, as Q4_K's, then 8 planes m
//!                of 64 bytes: byte 8r+e holds the high 2 bits of
//!                u(r, 32m+8i+e) at bits 2i..2i+2, i = 0..4
//!   meta 144:    scale (i8) of sub-block s (16 elements) of row r at 8s+r,
//!                128.. d (f16) per row

//! One-bit planes (Q5_K's fifth bits, Q3_K's third, the 32-element 5-bit
//! types' fifth), in the layout the ISA's kernel decodes with fewest steps:
//!   masks (AVX-512): one 64-bit mask per vector of 64 values (a k-mask);
//!   planes (AVX2's Q5_K and 5-bit 32-element types): per 8 vectors, one
//!   vector of 64 bytes whose byte i holds bit j for byte i of vector j, so
//!   one shift and one AND move vector j's bits into place (expanding a
//!   mask's bits to bytes takes four operations more; but AVX2's Q3_K loop
//!   over 16 planes is not unrolled, and there the shift by a distance known
//!   only at run time lost to the masks).

use super::TILE_ROWS;
use crate::parallel::{self, SendPtr};
use crate::quant::blocks::{cast_blocks, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, KVALUES_IQ4NL};
use crate::quant::kquants::{scale_min_k4, BlockK, QK_K};
use crate::quant::AlignedBytes;

/// Bytes of one super-block's values and scales in a tile.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub values: usize,
    pub meta: usize,
}

impl Geometry {
    /// Bytes of a tile of `nb` super-blocks (whole cache lines).
    pub fn tile_bytes(&self, nb: usize) -> usize {
        (nb * (self.values + self.meta)).next_multiple_of(64)
    }
}

pub const Q4K_GEOMETRY: Geometry = Geometry { values: 1024, meta: 160 };
pub const Q6K_GEOMETRY: Geometry = Geometry { values: 1536, meta: 144 };
pub const Q5K_GEOMETRY: Geometry = Geometry { values: 1280, meta: 160 };
pub const Q5K_HIGH: usize = 1024;
pub const Q2K_GEOMETRY: Geometry = Geometry { values: 512, meta: 160 };
pub const Q3K_GEOMETRY: Geometry = Geometry { values: 768, meta: 144 };
pub const Q3K_HIGH: usize = 512;
/// Q2_K's and Q3_K's meta: per-16 scales at 8s+r, then d and (Q2_K) dmin per row.
pub const K16_SCALES: usize = 0;
pub const K16_D: usize = 128;
pub const K16_DMIN: usize = 144;
pub const IQ4XS_GEOMETRY: Geometry = Geometry { values: 1024, meta: 80 };
pub const IQ4XS_SCALES: usize = 0;
pub const IQ4XS_D: usize = 64;
/// Offsets in a super-block's values and meta.
pub const Q6K_HIGH: usize = 1024;
pub const Q4K_SCALES: usize = 0;
pub const Q4K_MINS: usize = 64;
pub const Q4K_D: usize = 128;
pub const Q4K_DMIN: usize = 144;
pub const Q6K_SCALES: usize = 0;
pub const Q6K_D: usize = 128;

/// How a tile stores a one-bit plane of its values (see the module notes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HighBits {
    Masks,
    Planes,
}

/// A one-bit layout as a type, for the packers' type parameter.
pub trait BitLayout {
    const HIGH: HighBits;
}
pub struct Masks;
pub struct Planes;
impl BitLayout for Masks {
    const HIGH: HighBits = HighBits::Masks;
}
impl BitLayout for Planes {
    const HIGH: HighBits = HighBits::Planes;
}

/// Bit `bit` of value i of vector j (64 bytes each, `n` vectors) into `o`.
pub(super) fn put_bits(n: usize, high: HighBits, o: &mut [u8], bit: impl Fn(usize, usize) -> u8) {
    for j in 0..n {
        for i in 0..64 {
            match high {
                HighBits::Masks => o[8 * j + i / 8] |= bit(j, i) << (i % 8),
                HighBits::Planes => o[64 * (j / 8) + i] |= bit(j, i) << (j % 8),
            }
        }
    }
}

/// Tiles of `rows` rows: rows past the end are zero (scale 0: they add 0).
/// `put(blocks, values, meta)` writes one super-block. The tiles are
/// written in parallel (time to one token, Qwen 0.5B Q4_K_M on 2 cores:
/// 1.50-1.88 -> 1.08-1.34 s).
pub(super) fn tiles<B: Copy + Sync, const R: usize>(
    data: &[u8],
    rows: usize,
    row_bytes: usize,
    g: Geometry,
    put: impl Fn(&[Option<&B>; R], &mut [u8], &mut [u8]) + Sync,
) -> AlignedBytes {
    let nb = row_bytes / std::mem::size_of::<B>();
    let ntiles = rows.div_ceil(R);
    let tb = g.tile_bytes(nb);
    let mut out = AlignedBytes::weights(ntiles * tb);
    let o = SendPtr(out.as_mut_slice().as_mut_ptr());
    let row = |r: usize| -> &[B] { cast_blocks(&data[r * row_bytes..(r + 1) * row_bytes]).expect("weight rows of whole blocks") };
    parallel::for_each(ntiles, |t| {
        // SAFETY: tile t's bytes of `out` (ntiles * tb long), disjoint per t.
        let tile = unsafe { std::slice::from_raw_parts_mut(o.get().add(t * tb), tb) };
        let (values, meta) = tile.split_at_mut(nb * g.values);
        for b in 0..nb {
            let blocks: [Option<&B>; R] = std::array::from_fn(|i| (t * R + i < rows).then(|| &row(t * R + i)[b]));
            put(&blocks, &mut values[b * g.values..(b + 1) * g.values], &mut meta[b * g.meta..(b + 1) * g.meta]);
        }
    });
    out
}

/// The 256 unsigned values of each row (q + offset), zeros for padding.
fn values<B: BlockK>(blocks: &[Option<&B>; TILE_ROWS], offset: i16) -> [[u8; QK_K]; TILE_ROWS] {
    let mut u = [[0u8; QK_K]; TILE_ROWS];
    for (r, b) in blocks.iter().enumerate() {
        if let Some(b) = b {
            let mut q = [0i8; QK_K];
            b.quants(&mut q);
            for i in 0..QK_K {
                u[r][i] = (q[i] as i16 + offset) as u8;
            }
        }
    }
    u
}

fn put_planes(u: &[[u8; QK_K]; TILE_ROWS], o: &mut [u8]) {
    for k in 0..16 {
        for r in 0..TILE_ROWS {
            for e in 0..8 {
                o[64 * k + 8 * r + e] = (u[r][16 * k + e] & 0xF) | (u[r][16 * k + 8 + e] & 0xF) << 4;
            }
        }
    }
}

/// Q4_K's and Q5_K's meta: 6-bit scales and mins per 32, d and dmin per row.
fn put_meta_k4<B>(blocks: &[Option<&B>; TILE_ROWS], mt: &mut [u8], fields: impl Fn(&B) -> (&[u8; 12], u16, u16)) {
    for (r, b) in blocks.iter().enumerate() {
        let Some(b) = b else { continue };
        let (scales, d, dmin) = fields(b);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, scales);
            mt[Q4K_SCALES + 8 * s + r] = sc;
            mt[Q4K_MINS + 8 * s + r] = m;
        }
        mt[Q4K_D + 2 * r..Q4K_D + 2 * r + 2].copy_from_slice(&d.to_le_bytes());
        mt[Q4K_DMIN + 2 * r..Q4K_DMIN + 2 * r + 2].copy_from_slice(&dmin.to_le_bytes());
    }
}

pub fn pack_q4k(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ4K, TILE_ROWS>(data, rows, row_bytes, Q4K_GEOMETRY, |blocks, o, mt| {
        put_planes(&values(blocks, 0), o);
        put_meta_k4(blocks, mt, |b| (&b.scales, b.d, b.dmin));
    })
}

/// Q5_K: Q4_K's planes of the low 4 bits, then the fifth bits of each
/// group g of 8 elements (byte 8r+e of vector g: q(r, 8g+e)); Q4_K's meta.
pub fn pack_q5k<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ5K, TILE_ROWS>(data, rows, row_bytes, Q5K_GEOMETRY, |blocks, o, mt| {
        let u = values(blocks, 0);
        put_planes(&u, o);
        put_group_bits(&u, 4, L::HIGH, &mut o[Q5K_HIGH..]);
        put_meta_k4(blocks, mt, |b| (&b.scales, b.d, b.dmin));
    })
}

/// 2-bit planes: byte 8r+e of plane m holds u(r, 32m+8i+e) & 3 at bits 2i.
fn put_planes2(u: &[[u8; QK_K]; TILE_ROWS], o: &mut [u8]) {
    for m in 0..8 {
        for r in 0..TILE_ROWS {
            for e in 0..8 {
                o[64 * m + 8 * r + e] = (0..4).map(|i| (u[r][32 * m + 8 * i + e] & 3) << (2 * i)).sum();
            }
        }
    }
}

/// Bit `bit` of u(r, 8g+e) for each group g of 8 elements, as value 8r+e of
/// vector g.
fn put_group_bits(u: &[[u8; QK_K]; TILE_ROWS], bit: u32, high: HighBits, o: &mut [u8]) {
    put_bits(QK_K / 8, high, o, |g, i| (u[i / 8][8 * g + i % 8] >> bit) & 1);
}

pub fn pack_q2k(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ2K, TILE_ROWS>(data, rows, row_bytes, Q2K_GEOMETRY, |blocks, o, mt| {
        put_planes2(&values(blocks, 0), o);
        for (r, b) in blocks.iter().enumerate() {
            let Some(b) = b else { continue };
            for sb in 0..16 {
                mt[K16_SCALES + 8 * sb + r] = b.scales[sb];
            }
            mt[K16_D + 2 * r..K16_D + 2 * r + 2].copy_from_slice(&b.d.to_le_bytes());
            mt[K16_DMIN + 2 * r..K16_DMIN + 2 * r + 2].copy_from_slice(&b.dmin.to_le_bytes());
        }
    })
}

pub fn pack_q3k<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ3K, TILE_ROWS>(data, rows, row_bytes, Q3K_GEOMETRY, |blocks, o, mt| {
        let u = values(blocks, 4);
        put_planes2(&u, o);
        put_group_bits(&u, 2, L::HIGH, &mut o[Q3K_HIGH..]);
        for (r, b) in blocks.iter().enumerate() {
            let Some(b) = b else { continue };
            let s = b.scales();
            for sb in 0..16 {
                mt[K16_SCALES + 8 * sb + r] = s.sc[sb] as i8 as u8;
            }
            mt[K16_D + 2 * r..K16_D + 2 * r + 2].copy_from_slice(&b.d.to_le_bytes());
        }
    })
}

pub fn pack_iq4xs(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockIQ4XS, TILE_ROWS>(data, rows, row_bytes, IQ4XS_GEOMETRY, |blocks, o, mt| {
        let mut u = [[0u8; QK_K]; TILE_ROWS];
        for (r, b) in blocks.iter().enumerate() {
            let Some(b) = b else { continue };
            let mut q = [0i8; QK_K];
            b.quants(&mut q);
            for i in 0..QK_K {
                u[r][i] = grid_index(q[i]);
            }
            let s = b.scales();
            for sb in 0..8 {
                mt[IQ4XS_SCALES + 8 * sb + r] = s.sc[2 * sb] as i8 as u8;
            }
            mt[IQ4XS_D + 2 * r..IQ4XS_D + 2 * r + 2].copy_from_slice(&b.d.to_le_bytes());
        }
        put_planes(&u, o);
    })
}

pub fn pack_q6k(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ6K, TILE_ROWS>(data, rows, row_bytes, Q6K_GEOMETRY, |blocks, o, mt| {
        let u = values(blocks, 32);
        put_planes(&u, o);
        for m in 0..8 {
            for r in 0..TILE_ROWS {
                for e in 0..8 {
                    let mut h = 0u8;
                    for i in 0..4 {
                        h |= (u[r][32 * m + 8 * i + e] >> 4) << (2 * i);
                    }
                    o[Q6K_HIGH + 64 * m + 8 * r + e] = h;
                }
            }
        }
        for (r, b) in blocks.iter().enumerate() {
            let Some(b) = b else { continue };
            for s in 0..16 {
                mt[Q6K_SCALES + 8 * s + r] = b.scales[s] as u8;
            }
            mt[Q6K_D + 2 * r..Q6K_D + 2 * r + 2].copy_from_slice(&b.d.to_le_bytes());
        }
    })
}

/// The index (0..16) of a value of the IQ4 grid (IQ4_NL, IQ4_XS).
#[inline]
pub(super) fn grid_index(v: i8) -> u8 {
    let i = GRID_INDEX[v as u8 as usize];
    assert!(i < 16, "{v} is not an IQ4 grid value");
    i
}

/// `grid_index` by table (a search per weight made loading Qwen 0.5B
/// IQ4_XS, mostly IQ4_NL, take 9 s): 16 for values off the grid.
const GRID_INDEX: [u8; 256] = {
    let mut t = [16u8; 256];
    let mut i = 0;
    while i < 16 {
        t[KVALUES_IQ4NL[i] as u8 as usize] = i as u8;
        i += 1;
    }
    t
};
