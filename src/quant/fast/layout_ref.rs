//! The tiles built value by value from the blocks' decoded quants (how the
//! packers first wrote them): the reference the word-at-a-time packers of
//! `layout` and `layout32` are tested against, byte for byte.

use super::layout::*;
use super::layout32::*;
use super::TILE_ROWS;
use crate::gguf::GgmlType;
use crate::quant::blocks::*;
use crate::quant::kquants::{BlockK, QK_K};
use crate::quant::legacy::Block32;
use crate::quant::AlignedBytes;

/// Bit `bit` of value i of vector j (64 bytes each, `n` vectors) into `o`.
fn put_bits(n: usize, high: HighBits, o: &mut [u8], bit: impl Fn(usize, usize) -> u8) {
    for j in 0..n {
        for i in 0..64 {
            match high {
                HighBits::Masks => o[8 * j + i / 8] |= bit(j, i) << (i % 8),
                HighBits::Planes => o[64 * (j / 8) + i] |= bit(j, i) << (j % 8),
            }
        }
    }
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

/// 2-bit planes: byte 8r+e of plane m holds u(r, 32m+8i+e) >> shift & 3 at bits 2i.
fn put_planes2(u: &[[u8; QK_K]; TILE_ROWS], shift: u32, o: &mut [u8]) {
    for m in 0..8 {
        for r in 0..TILE_ROWS {
            for e in 0..8 {
                o[64 * m + 8 * r + e] = (0..4).map(|i| ((u[r][32 * m + 8 * i + e] >> shift) & 3) << (2 * i)).sum();
            }
        }
    }
}

fn put_group_bits(u: &[[u8; QK_K]; TILE_ROWS], bit: u32, high: HighBits, o: &mut [u8]) {
    put_bits(QK_K / 8, high, o, |g, i| (u[i / 8][8 * g + i % 8] >> bit) & 1);
}

/// Per-row scales of the 16-scale types (Q2_K, Q3_K, Q6_K, IQ4_XS's 8 at 8s + r).
fn put_sc16<B: BlockK>(blocks: &[Option<&B>; TILE_ROWS], mt: &mut [u8], step: usize) {
    for (r, b) in blocks.iter().enumerate() {
        let Some(b) = b else { continue };
        let s = b.scales();
        for sb in 0..16 / step {
            mt[8 * sb + r] = s.sc[step * sb] as i8 as u8;
        }
    }
}

/// The reference tiles of a super-block type.
pub fn pack_k(ty: GgmlType, high: HighBits, data: &[u8], rows: usize, rb: usize) -> AlignedBytes {
    use GgmlType::*;
    match ty {
        Q4_K => tiles::<BlockQ4K, TILE_ROWS>(data, rows, rb, Q4K_GEOMETRY, |blocks, o, mt| {
            put_planes(&values(blocks, 0), o);
            put_meta_k4(blocks, mt, |b| (&b.scales, b.d, b.dmin));
        }),
        Q5_K => tiles::<BlockQ5K, TILE_ROWS>(data, rows, rb, Q5K_GEOMETRY, |blocks, o, mt| {
            let u = values(blocks, 0);
            put_planes(&u, o);
            put_group_bits(&u, 4, high, &mut o[Q5K_HIGH..]);
            put_meta_k4(blocks, mt, |b| (&b.scales, b.d, b.dmin));
        }),
        Q2_K => tiles::<BlockQ2K, TILE_ROWS>(data, rows, rb, Q2K_GEOMETRY, |blocks, o, mt| {
            put_planes2(&values(blocks, 0), 0, o);
            for (r, b) in blocks.iter().enumerate() {
                let Some(b) = b else { continue };
                (0..16).for_each(|sb| mt[K16_SCALES + 8 * sb + r] = b.scales[sb]);
                put_f16(mt, K16_D, r, b.d);
                put_f16(mt, K16_DMIN, r, b.dmin);
            }
        }),
        Q3_K => tiles::<BlockQ3K, TILE_ROWS>(data, rows, rb, Q3K_GEOMETRY, |blocks, o, mt| {
            let u = values(blocks, 4);
            put_planes2(&u, 0, o);
            put_group_bits(&u, 2, high, &mut o[Q3K_HIGH..]);
            put_sc16(blocks, &mut mt[K16_SCALES..], 1);
            blocks.iter().enumerate().for_each(|(r, b)| b.iter().for_each(|b| put_f16(mt, K16_D, r, b.d)));
        }),
        IQ4_XS => tiles::<BlockIQ4XS, TILE_ROWS>(data, rows, rb, IQ4XS_GEOMETRY, |blocks, o, mt| {
            let mut u = [[0u8; QK_K]; TILE_ROWS];
            for (r, b) in blocks.iter().enumerate() {
                let Some(b) = b else { continue };
                let mut q = [0i8; QK_K];
                b.quants(&mut q);
                u[r] = q.map(grid_index);
                put_f16(mt, IQ4XS_D, r, b.d);
            }
            put_planes(&u, o);
            put_sc16(blocks, &mut mt[IQ4XS_SCALES..], 2);
        }),
        Q6_K => tiles::<BlockQ6K, TILE_ROWS>(data, rows, rb, Q6K_GEOMETRY, |blocks, o, mt| {
            let u = values(blocks, 32);
            put_planes(&u, o);
            put_planes2(&u, 4, &mut o[Q6K_HIGH..]);
            put_sc16(blocks, &mut mt[Q6K_SCALES..], 1);
            blocks.iter().enumerate().for_each(|(r, b)| b.iter().for_each(|b| put_f16(mt, Q6K_D, r, b.d)));
        }),
        _ => panic!("{} is not a super-block type", ty.name()),
    }
}

/// The index (0..16) of a value of the IQ4 grid.
fn grid_index(v: i8) -> u8 {
    KVALUES_IQ4NL.iter().position(|&k| k == v).expect("an IQ4 grid value") as u8
}

/// The reference tiles of a 32-element type (u = q + offset; IQ4_NL the
/// grid index; Q8_0 q + 128).
pub fn pack_32(ty: GgmlType, high: HighBits, data: &[u8], rows: usize, rb: usize) -> AlignedBytes {
    use GgmlType::*;
    match ty {
        Q8_0 => pack32::<BlockQ8_0>(data, rows, rb, Q8_0_GEOMETRY, high, |q| (q as i16 + 128) as u8),
        Q4_0 => pack32::<BlockQ4_0>(data, rows, rb, Q4_0_GEOMETRY, high, |q| (q + 8) as u8),
        IQ4_NL => pack32::<BlockIQ4NL>(data, rows, rb, Q4_0_GEOMETRY, high, grid_index),
        Q4_1 => pack32::<BlockQ4_1>(data, rows, rb, Q4_1_GEOMETRY, high, |q| q as u8),
        Q5_0 => pack32::<BlockQ5_0>(data, rows, rb, Q5_0_GEOMETRY, high, |q| (q + 16) as u8),
        Q5_1 => pack32::<BlockQ5_1>(data, rows, rb, Q5_1_GEOMETRY, high, |q| q as u8),
        _ => panic!("{} is not a 32-element type", ty.name()),
    }
}

fn pack32<B: Block32 + Sync>(data: &[u8], rows: usize, rb: usize, g: Geometry, high: HighBits, u: fn(i8) -> u8) -> AlignedBytes {
    let (bytes, five) = (g.values == Q8_0_GEOMETRY.values, g.values == Q5_0_GEOMETRY.values);
    tiles::<B, TILE32_ROWS>(data, rows, rb, g, |blocks, v, mt| {
        let mut fifth = [[0u8; 32]; TILE32_ROWS];
        for (r, blk) in blocks.iter().enumerate() {
            let Some(blk) = blk else { continue };
            let u = blk.unpack().map(u);
            for e in 0..4 {
                if bytes {
                    (0..8).for_each(|j| v[64 * j + 4 * r + e] = u[4 * j + e]);
                } else {
                    (0..4).for_each(|k| v[64 * k + 4 * r + e] = (u[4 * k + e] & 0xF) | (u[16 + 4 * k + e] & 0xF) << 4);
                }
            }
            fifth[r] = u.map(|x| (x >> 4) & 1);
            put_f16(mt, B32_D, r, f32_to_f16(blk.d()));
            if let Some(m) = blk.m() {
                put_f16(mt, B32_M, r, f32_to_f16(m));
            }
        }
        if five {
            // value 4r+e of vector j: u(r, 4j+e)
            put_bits(8, high, &mut v[B32_HIGH..], |j, i| fifth[i / 4][4 * j + i % 4]);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use GgmlType::*;

    /// Random blocks (every bit pattern of the values; finite scales) in a
    /// part-filled last tile: the word packers give the reference's bytes.
    #[test]
    fn word_packers_equal_the_value_packers() {
        let mut s = 0x9e3779b97f4a7c15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        type Pack = fn(&[u8], usize, usize) -> AlignedBytes;
        let (m, p) = (HighBits::Masks, HighBits::Planes);
        let packers: [(GgmlType, HighBits, Pack); 16] = [
            (Q4_K, m, pack_q4k),
            (Q5_K, m, pack_q5k::<Masks>),
            (Q5_K, p, pack_q5k::<Planes>),
            (Q2_K, m, pack_q2k),
            (Q3_K, m, pack_q3k::<Masks>),
            (Q3_K, p, pack_q3k::<Planes>),
            (IQ4_XS, m, pack_iq4xs),
            (Q6_K, m, pack_q6k),
            (Q8_0, m, pack_q8_0),
            (Q4_0, m, pack_q4_0),
            (IQ4_NL, m, pack_iq4_nl),
            (Q4_1, m, pack_q4_1),
            (Q5_0, m, pack_q5_0::<Masks>),
            (Q5_0, p, pack_q5_0::<Planes>),
            (Q5_1, m, pack_q5_1::<Masks>),
            (Q5_1, p, pack_q5_1::<Planes>),
        ];
        for (ty, high, pack) in packers {
            let super_block = ty.block_elems() == QK_K;
            let (rows, cols) = if super_block { (21, 3 * QK_K) } else { (37, 160) };
            let rb = ty.row_bytes(cols).unwrap();
            let mut w: Vec<u8> = (0..rows * rb).map(|_| next() as u8).collect();
            // finite f16 scales where the block has them (the reference
            // goes through f32 for the 32-element types)
            let bb = ty.block_bytes();
            let scale_at: &[usize] = match ty {
                Q6_K | Q3_K => &[bb - 2],
                Q2_K => &[bb - 4, bb - 2],
                Q4_K | Q5_K | Q4_1 | Q5_1 => &[0, 2],
                _ => &[0],
            };
            for blk in w.chunks_mut(bb) {
                for &at in scale_at {
                    blk[at..at + 2].copy_from_slice(&f32_to_f16((next() % 1000) as f32 * 1e-4 - 0.05).to_le_bytes());
                }
            }
            let want = if super_block { pack_k(ty, high, &w, rows, rb) } else { pack_32(ty, high, &w, rows, rb) };
            assert!(pack(&w, rows, rb).as_slice() == want.as_slice(), "{}: tiles differ", ty.name());
        }
    }
}
