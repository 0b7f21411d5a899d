//! The fast layout of the super-block types (`layout32` has the 32-element
//! ones): rows in tiles of 8, each tile's super-blocks in order, and in a
//! tile super-block the 8 rows' values interleaved by groups of 8
//! elements, so a 64-byte vector holds elements 8g..8g+8 of all 8 rows (row r
//! at bytes 8r..8r+8), ready for a VNNI product with a broadcast 8 bytes of
//! activations.
//!
//! A tile is its super-blocks in groups (`Geometry::group`): a group's
//! scales ("meta", padded to a cache line in a last, partial group), then
//! its values, so every super-block's values start on a line (every 64-byte
//! load is one cache line) and a tile is read as one stream in address
//! order; the tile is padded to a whole number of cache lines. (With all
//! the values first and all the meta after them, each tile was two streams,
//! which the hardware prefetchers do not follow: see `Geometry::group`.)
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
use crate::quant::blocks::{cast_blocks, BlockIQ4XS, BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
use crate::quant::kquants::{scale_min_k4, BlockK, QK_K};
use crate::quant::AlignedBytes;

/// Bytes of one super-block's values and scales in a tile, and how many
/// super-blocks a group holds.
#[derive(Clone, Copy, Debug)]
pub struct Geometry {
    pub values: usize,
    pub meta: usize,
    /// Super-blocks per group: the fewest whose meta fills whole cache
    /// lines (values always do), so each group, and each super-block's
    /// values, starts on a line. A tile read in address order is one
    /// stream, which the hardware prefetchers follow: one thread streaming
    /// a 178 MB Q8_0-shaped tile array in C (Zen 4) took 5.6-6.7 ms
    /// grouped without software prefetches, 8.3-8.7 ms with the meta after
    /// all the values and prefetches 64 KB ahead (the old layout), 13.5
    /// ms without them. The meta goes first: a kernel reads a super-block's
    /// scales while or before it reads its values, and with the meta after
    /// the group's values every scale load jumped ahead of the stream and
    /// the next values came from behind it. Cold, one thread, meta after ->
    /// first: Gemma's 262144 x 640 Q8_0 output 7.2-7.4 -> 6.5-6.7 ms (the C
    /// read 6.2-6.9), Qwen 1.5B's 151936 x 1536 Q4_K embedding matrix
    /// 6.1-6.3 -> 5.4-5.5 ms.
    pub group: usize,
    /// From how many tokens a kernel call prefetches this stream ahead in
    /// software (`driver::prefetch_l2`). The super-block types always do:
    /// one thread streaming Qwen 1.5B's 151936 x 1536 output requantized to
    /// each type, caches evicted between passes (Zen 4, ms with / without):
    /// Q6_K 6.6 / 23.6, Q5_K 5.8 / 12.0, Q3_K 5.2 / 8.5, Q2_K 3.9 / 4.9,
    /// IQ4_XS 4.5 / 4.8, Q4_K 5.1 / 5.2 (the types with a second region of
    /// high bits lose most). The 32-element types only for batches
    /// (`prefetch_from`).
    pub prefetch_tokens: usize,
}

impl Geometry {
    /// The geometry of super-blocks of `values` and `meta` bytes.
    pub const fn new(values: usize, meta: usize) -> Geometry {
        let mut group = 1;
        while !(group * meta).is_multiple_of(LINE) {
            group += 1;
        }
        Geometry { values, meta, group, prefetch_tokens: 1 }
    }

    /// The same layout, prefetched in software only by kernel calls of
    /// `tokens` or more tokens: for streams the hardware prefetchers follow
    /// alone at one token's pace, where the prefetches only compete with the
    /// loads. The 32-element types (`layout32::PREFETCH_FROM`): Gemma's 262144 x 640
    /// Q8_0 output for one token, cold, one thread, 7.8-7.9 -> 6.2-6.3 ms;
    /// tg64, two interleaved rounds each (Zen 4), -t 1 / -t 2, t/s: Qwen
    /// 0.5B Q8_0 41.6 -> 52.8 / 75.4 -> 83.3, Q4_0 63.7 -> 78.2 / 93.7 ->
    /// 95.9, Q4_K_M (Q5_0 and Q8_0 where rows are not whole super-blocks)
    /// 60.0 -> 67.6 / 78.1 -> 82.8, SmolLM2 Q4_1 235 -> 339 / 337 -> 377,
    /// Gemma 90.8 -> 108.5 / 131.2 -> 127.3.
    pub const fn prefetch_from(self, tokens: usize) -> Geometry {
        Geometry { prefetch_tokens: tokens, ..self }
    }

    /// Super-blocks in the group starting at super-block g0 of `nb` (the
    /// last group may hold fewer than `group`).
    #[inline(always)]
    fn group_len(&self, nb: usize, g0: usize) -> usize {
        self.group.min(nb - g0)
    }

    /// Bytes of the meta of a group of n super-blocks, padded to whole
    /// cache lines (only a last, partial group needs the padding).
    #[inline(always)]
    const fn meta_bytes(&self, n: usize) -> usize {
        (n * self.meta).next_multiple_of(LINE)
    }

    /// Bytes of a tile of `nb` super-blocks: to the end of the last one's
    /// values, in whole cache lines.
    pub fn tile_bytes(&self, nb: usize) -> usize {
        nb.checked_sub(1).map_or(0, |last| self.values_at(nb, last) + self.values).next_multiple_of(LINE)
    }

    /// Offset of super-block b's values in a tile of `nb` super-blocks.
    #[inline(always)]
    pub fn values_at(&self, nb: usize, b: usize) -> usize {
        let g0 = b / self.group * self.group;
        g0 * (self.values + self.meta) + self.meta_bytes(self.group_len(nb, g0)) + (b - g0) * self.values
    }

    /// Offset of super-block b's meta in a tile.
    #[inline(always)]
    pub fn meta_at(&self, b: usize) -> usize {
        let g0 = b / self.group * self.group;
        g0 * (self.values + self.meta) + (b - g0) * self.meta
    }
}

/// Bytes per cache line.
const LINE: usize = 64;

pub const Q4K_GEOMETRY: Geometry = Geometry::new(1024, 160);
pub const Q6K_GEOMETRY: Geometry = Geometry::new(1536, 144);
pub const Q5K_GEOMETRY: Geometry = Geometry::new(1280, 160);
pub const Q5K_HIGH: usize = 1024;
pub const Q2K_GEOMETRY: Geometry = Geometry::new(512, 160);
pub const Q3K_GEOMETRY: Geometry = Geometry::new(768, 144);
pub const Q3K_HIGH: usize = 512;
/// Q2_K's and Q3_K's meta: per-16 scales at 8s+r, then d and (Q2_K) dmin per row.
pub const K16_SCALES: usize = 0;
pub const K16_D: usize = 128;
pub const K16_DMIN: usize = 144;
pub const IQ4XS_GEOMETRY: Geometry = Geometry::new(1024, 80);
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
        for b in 0..nb {
            let blocks: [Option<&B>; R] = std::array::from_fn(|i| (t * R + i < rows).then(|| &row(t * R + i)[b]));
            let (v, m) = (g.values_at(nb, b), g.meta_at(b));
            let (meta, values) = tile.split_at_mut(v);
            put(&blocks, &mut values[..g.values], &mut meta[m..m + g.meta]);
        }
    });
    out
}

/// Bytes 8i..8i+8 of `b` as a little-endian word: the packers move 8
/// elements of a row (one row's 8 bytes of a tile vector) at once.
#[inline(always)]
fn word(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"))
}

#[inline(always)]
fn put_word(o: &mut [u8], at: usize, v: u64) {
    o[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Bit 0 of every byte; the low 2 bits; the low nibble.
const BYTE_BIT0: u64 = 0x0101_0101_0101_0101;
const BYTE_LOW2: u64 = 0x0303_0303_0303_0303;
const BYTE_LOW4: u64 = 0x0F0F_0F0F_0F0F_0F0F;

/// A nibble plane row (byte e: element e | element 8 + e << 4) from the
/// bytes holding elements e and 8 + e, in their low or high nibbles.
#[inline(always)]
fn nibble_plane(lo: u64, hi: u64, high: bool) -> u64 {
    if high {
        ((lo >> 4) & BYTE_LOW4) | (hi & !BYTE_LOW4)
    } else {
        (lo & BYTE_LOW4) | ((hi & BYTE_LOW4) << 4)
    }
}

/// ggml's 2-bit packing (Q2_K's qs, Q6_K's qh: element 128n + 32j + l at
/// bits 2j of byte 32n + l) as the tiles' 2-bit plane m (byte e: elements
/// 32m + 8i + e at bits 2i, i = 0..4) of one row.
#[inline(always)]
fn crumb_plane(b: &[u8], m: usize) -> u64 {
    let (n, j) = (m / 4, m % 4);
    (0..4).fold(0, |p, i| p | ((word(b, 4 * n + i) >> (2 * j)) & BYTE_LOW2) << (2 * i))
}

/// ggml's one-bit array of Q5_K (qh) and Q3_K (hmask), element 8g + e at
/// bit g / 4 of byte 8(g % 4) + e, as group g's word (bit 0 of byte e).
#[inline(always)]
fn group_bits(h: &[u8; 32], g: usize) -> u64 {
    (word(h, g % 4) >> (g / 4)) & BYTE_BIT0
}

/// The bits (bit 0 of each byte) of a row's 8 values in vector j into the
/// tile's one-bit region, as the ISA reads it (`HighBits`).
#[inline(always)]
fn put_bit_word(o: &mut [u8], high: HighBits, j: usize, row: usize, bits: u64) {
    match high {
        // byte j * 8 + row: bit e = value e (gathered by a carry-free multiply)
        HighBits::Masks => o[8 * j + row] = (bits.wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8,
        HighBits::Planes => {
            let at = 64 * (j / 8) + 8 * row;
            let v = word(o, at / 8) | bits << (j % 8);
            put_word(o, at, v);
        }
    }
}

/// Q4_K's (and Q5_K's, IQ4_XS's) 16 nibble planes of one row: element
/// 64c + l in the low nibble of byte 32c + l and 64c + 32 + l in the high
/// one (Q4_K, Q5_K), or 32i + l and 32i + 16 + l at byte 16i + l (IQ4_XS).
#[inline(always)]
fn put_nibble_planes(qs: &[u8; 128], o: &mut [u8], r: usize, iq4: bool) {
    for k in 0..16 {
        let (w, high) = if iq4 { (k & !1, k % 2 == 1) } else { (4 * (k / 4) + 2 * (k % 2), k % 4 >= 2) };
        put_word(o, 64 * k + 8 * r, nibble_plane(word(qs, w), word(qs, w + 1), high));
    }
}

/// Row r's f16 field (d, dmin, m) of a tile meta region whose per-row f16s start at `at`.
#[inline(always)]
pub(super) fn put_f16(mt: &mut [u8], at: usize, r: usize, bits: u16) {
    mt[at + 2 * r..at + 2 * r + 2].copy_from_slice(&bits.to_le_bytes());
}

/// Q4_K's and Q5_K's meta: 6-bit scales and mins per 32, d and dmin per row.
pub(super) fn put_meta_k4<B>(blocks: &[Option<&B>; TILE_ROWS], mt: &mut [u8], fields: impl Fn(&B) -> (&[u8; 12], u16, u16)) {
    for (r, b) in blocks.iter().enumerate() {
        let Some(b) = b else { continue };
        let (scales, d, dmin) = fields(b);
        for s in 0..8 {
            let (sc, m) = scale_min_k4(s, scales);
            mt[Q4K_SCALES + 8 * s + r] = sc;
            mt[Q4K_MINS + 8 * s + r] = m;
        }
        put_f16(mt, Q4K_D, r, d);
        put_f16(mt, Q4K_DMIN, r, dmin);
    }
}

/// The present rows of a tile super-block with their index.
fn present<'a, B>(blocks: &'a [Option<&'a B>; TILE_ROWS]) -> impl Iterator<Item = (usize, &'a B)> {
    blocks.iter().enumerate().filter_map(|(r, b)| b.map(|b| (r, b)))
}

pub fn pack_q4k(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ4K, TILE_ROWS>(data, rows, row_bytes, Q4K_GEOMETRY, |blocks, o, mt| {
        present(blocks).for_each(|(r, b)| put_nibble_planes(&b.qs, o, r, false));
        put_meta_k4(blocks, mt, |b| (&b.scales, b.d, b.dmin));
    })
}

/// Q5_K: Q4_K's planes of the low 4 bits, then the fifth bits of each
/// group g of 8 elements (byte 8r+e of vector g: q(r, 8g+e)); Q4_K's meta.
pub fn pack_q5k<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ5K, TILE_ROWS>(data, rows, row_bytes, Q5K_GEOMETRY, |blocks, o, mt| {
        for (r, b) in present(blocks) {
            put_nibble_planes(&b.qs, o, r, false);
            (0..QK_K / 8).for_each(|g| put_bit_word(&mut o[Q5K_HIGH..], L::HIGH, g, r, group_bits(&b.qh, g)));
        }
        put_meta_k4(blocks, mt, |b| (&b.scales, b.d, b.dmin));
    })
}

pub fn pack_q2k(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ2K, TILE_ROWS>(data, rows, row_bytes, Q2K_GEOMETRY, |blocks, o, mt| {
        for (r, b) in present(blocks) {
            (0..8).for_each(|m| put_word(o, 64 * m + 8 * r, crumb_plane(&b.qs, m)));
            for sb in 0..16 {
                mt[K16_SCALES + 8 * sb + r] = b.scales[sb];
            }
            put_f16(mt, K16_D, r, b.d);
            put_f16(mt, K16_DMIN, r, b.dmin);
        }
    })
}

/// Q3_K, u = q + 4: the low 2 bits are ggml's qs, the third bit its hmask.
pub fn pack_q3k<L: BitLayout>(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ3K, TILE_ROWS>(data, rows, row_bytes, Q3K_GEOMETRY, |blocks, o, mt| {
        for (r, b) in present(blocks) {
            (0..8).for_each(|m| put_word(o, 64 * m + 8 * r, crumb_plane(&b.qs, m)));
            (0..QK_K / 8).for_each(|g| put_bit_word(&mut o[Q3K_HIGH..], L::HIGH, g, r, group_bits(&b.hmask, g)));
            let s = b.scales();
            for sb in 0..16 {
                mt[K16_SCALES + 8 * sb + r] = s.sc[sb] as i8 as u8;
            }
            put_f16(mt, K16_D, r, b.d);
        }
    })
}

/// IQ4_XS: the grid indices are ggml's nibbles.
pub fn pack_iq4xs(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockIQ4XS, TILE_ROWS>(data, rows, row_bytes, IQ4XS_GEOMETRY, |blocks, o, mt| {
        for (r, b) in present(blocks) {
            put_nibble_planes(&b.qs, o, r, true);
            let s = b.scales();
            for sb in 0..8 {
                mt[IQ4XS_SCALES + 8 * sb + r] = s.sc[2 * sb] as i8 as u8;
            }
            put_f16(mt, IQ4XS_D, r, b.d);
        }
    })
}

/// Q6_K, u = q + 32: ggml's ql nibbles (element 128n + 32j + l in the low
/// nibble of byte 64n + 32(j % 2) + l for j < 2, the high one for j >= 2)
/// and its qh as 2-bit planes.
pub fn pack_q6k(data: &[u8], rows: usize, row_bytes: usize) -> AlignedBytes {
    tiles::<BlockQ6K, TILE_ROWS>(data, rows, row_bytes, Q6K_GEOMETRY, |blocks, o, mt| {
        for (r, b) in present(blocks) {
            for k in 0..16 {
                let (n, kk) = (k / 8, k % 8);
                let w = 8 * n + 4 * ((kk / 2) % 2) + 2 * (kk % 2);
                put_word(o, 64 * k + 8 * r, nibble_plane(word(&b.ql, w), word(&b.ql, w + 1), kk >= 4));
            }
            (0..8).for_each(|m| put_word(o, Q6K_HIGH + 64 * m + 8 * r, crumb_plane(&b.qh, m)));
            for s in 0..16 {
                mt[Q6K_SCALES + 8 * s + r] = b.scales[s] as u8;
            }
            put_f16(mt, Q6K_D, r, b.d);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::layout32::*;
    use super::*;

    /// Every geometry's groups: values and meta of each super-block inside
    /// the tile, disjoint, in address order (a group's meta, padded to a
    /// cache line, then its values; groups in order), each super-block's
    /// values on a cache line, no byte unused but the last partial group's
    /// meta padding and the tile's own.
    #[test]
    fn groups_tile_the_tile_in_one_stream() {
        let all = [
            (Q4K_GEOMETRY, 2),
            (Q6K_GEOMETRY, 4),
            (Q5K_GEOMETRY, 2),
            (Q2K_GEOMETRY, 2),
            (Q3K_GEOMETRY, 4),
            (IQ4XS_GEOMETRY, 4),
            (Q8_0_GEOMETRY, 2),
            (Q4_0_GEOMETRY, 2),
            (Q4_1_GEOMETRY, 1),
            (Q5_0_GEOMETRY, 2),
            (Q5_1_GEOMETRY, 1),
        ];
        for (g, group) in all {
            assert_eq!(g.group, group, "{g:?}");
            for nb in 1..=9 {
                let tb = g.tile_bytes(nb);
                assert!(tb.is_multiple_of(LINE), "{g:?} nb {nb}: tile of {tb} bytes");
                let mut owner = vec![usize::MAX; tb];
                for b in 0..nb {
                    let (v, m) = (g.values_at(nb, b), g.meta_at(b));
                    assert!(v.is_multiple_of(LINE), "{g:?} nb {nb} block {b}: values at {v}");
                    assert!(m + g.meta <= v, "{g:?} nb {nb} block {b}: meta after values");
                    for (at, len) in [(v, g.values), (m, g.meta)] {
                        for o in &mut owner[at..at + len] {
                            assert_eq!(*o, usize::MAX, "{g:?} nb {nb} block {b}: bytes shared");
                            *o = b;
                        }
                    }
                }
                let unused = owner.iter().filter(|&&o| o == usize::MAX).count();
                let last = nb % g.group;
                let padding = if last == 0 { 0 } else { (last * g.meta).next_multiple_of(LINE) - last * g.meta };
                assert_eq!(unused, tb - nb * (g.values + g.meta), "{g:?} nb {nb}: bytes unused");
                assert!(unused < padding + LINE, "{g:?} nb {nb}: {unused} bytes unused");
                // groups in order: every byte before a group's first (its
                // meta) belongs to the groups before it
                for b in (g.group..nb).step_by(g.group) {
                    assert!(owner[..g.meta_at(b)].iter().all(|&o| o < b || o == usize::MAX), "{g:?} nb {nb}: group at {b} out of order");
                }
            }
        }
    }
}
