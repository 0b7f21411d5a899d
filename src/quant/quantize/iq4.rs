//! ggml's IQ4_NL / IQ4_XS quantizer (quantize_row_iq4_nl_impl) as
//! llama-quantize runs it without an importance matrix: weights x^2, a
//! +-7 step search of the block scale, best grid index per value.

use super::{nearest_int, signed_absmax, GROUP_MAX_EPS};
use crate::quant::blocks::*;

const NTRY: i32 = 7;

/// The IQ4_NL grid as floats.
const GRID: [f32; 16] = {
    let mut g = [0.0f32; 16];
    let mut i = 0;
    while i < 16 {
        g[i] = KVALUES_IQ4NL[i] as f32;
        i += 1;
    }
    g
};

/// Index of the grid value nearest to x, with ggml's best_index_int8 result
/// (its binary search finds mu = the number of grid values <= x; counting
/// them directly gives the same index without unpredictable branches).
#[inline]
fn best_index(x: f32) -> u8 {
    let mu = GRID.iter().map(|&v| (v <= x) as usize).sum::<usize>().clamp(1, 15);
    let r = mu - ((x - GRID[mu - 1] < GRID[mu] - x) as usize);
    // Selects, not branches: x below the grid gives 0, above it (or NaN,
    // where the binary search ends) 15.
    let r = if x <= GRID[0] { 0 } else { r };
    (if x < GRID[15] { r } else { 15 }) as u8
}

/// Best scale of one 32-value block (0 for an all-zero block); fills `l`.
fn block_scale(xb: &[f32], l: &mut [u8]) -> f32 {
    let mut weight = [0.0f32; 32];
    for (w, &x) in weight.iter_mut().zip(xb) {
        *w = x * x;
    }
    let (max, amax) = signed_absmax(xb);
    if amax < GROUP_MAX_EPS {
        return 0.0;
    }
    let mut d = -max / GRID[0];
    let mut id = 1.0 / d;
    let (mut sumqx, mut sumq2) = (0.0f32, 0.0f32);
    for j in 0..xb.len() {
        let k = best_index(id * xb[j]);
        l[j] = k;
        let q = GRID[k as usize];
        let w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
    }
    d = if sumq2 > 0.0 { sumqx / sumq2 } else { 0.0 };
    let mut best = d * sumqx;
    for itry in -NTRY..=NTRY {
        id = (itry + KVALUES_IQ4NL[0] as i32) as f32 / max;
        sumqx = 0.0;
        sumq2 = 0.0;
        for j in 0..xb.len() {
            let q = GRID[best_index(id * xb[j]) as usize];
            let w = weight[j];
            sumqx += w * q * xb[j];
            sumq2 += w * q * q;
        }
        if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
            d = sumqx / sumq2;
            best = d * sumqx;
        }
    }
    d
}

fn pack_nibbles(l: &[u8], qs: &mut [u8]) {
    for i in 0..l.len() / 32 {
        for j in 0..16 {
            qs[16 * i + j] = l[32 * i + j] | (l[32 * i + 16 + j] << 4);
        }
    }
}

pub fn iq4_nl(x: &[f32], y: &mut [BlockIQ4NL]) {
    let mut l = [0u8; 32];
    for (x, b) in x.chunks_exact(32).zip(y) {
        let s = block_scale(x, &mut l);
        b.d = f32_to_f16(s);
        let id = if s != 0.0 { 1.0 / s } else { 0.0 };
        for j in 0..32 {
            l[j] = best_index(id * x[j]);
        }
        pack_nibbles(&l, &mut b.qs);
    }
}

pub fn iq4_xs(x: &[f32], y: &mut [BlockIQ4XS]) {
    let mut l = [0u8; 256];
    for (x, b) in x.chunks_exact(256).zip(y) {
        let mut scales = [0.0f32; 8];
        for ib in 0..8 {
            scales[ib] = block_scale(&x[32 * ib..32 * ib + 32], &mut l[32 * ib..32 * ib + 32]);
        }
        let (max_scale, _) = signed_absmax(&scales);
        b.scales_h = 0;
        b.scales_l = [0; 4];
        let d = -max_scale / 32.0;
        b.d = f32_to_f16(d);
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        for ib in 0..8 {
            let mut lv = nearest_int(id * scales[ib]).clamp(-32, 31);
            let dl = d * lv as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            for j in 0..32 {
                l[32 * ib + j] = best_index(idl * x[32 * ib + j]);
            }
            lv += 32;
            let (lo, hi) = ((lv & 0xF) as u8, (lv >> 4) as u16);
            if ib % 2 == 0 {
                b.scales_l[ib / 2] = lo;
            } else {
                b.scales_l[ib / 2] |= lo << 4;
            }
            b.scales_h |= hi << (2 * (ib % 8));
        }
        pack_nibbles(&l, &mut b.qs);
    }
}
