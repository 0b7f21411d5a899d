//! ggml's reference quantizers for the 32-element block types (Q4_0, Q4_1,
//! Q5_0, Q5_1, Q8_0): the ones llama-quantize runs without an importance
//! matrix. Float operations in ggml's order, so the bytes are identical.

use super::signed_absmax;
use crate::quant::blocks::*;

fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// C's float -> int8_t conversion as compiled for x86 (truncating cvttss2si, low byte).
#[inline]
fn trunc_i8(v: f32) -> i8 {
    v as i32 as i8
}

pub fn q4_0(x: &[f32], y: &mut [BlockQ4_0]) {
    for (x, b) in x.chunks_exact(32).zip(y) {
        let (max, _) = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for j in 0..16 {
            let q0 = trunc_i8(x[j] * id + 8.5).min(15) as u8;
            let q1 = trunc_i8(x[16 + j] * id + 8.5).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

pub fn q4_1(x: &[f32], y: &mut [BlockQ4_1]) {
    for (x, b) in x.chunks_exact(32).zip(y) {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        for j in 0..16 {
            let q0 = trunc_i8((x[j] - min) * id + 0.5).min(15) as u8;
            let q1 = trunc_i8((x[16 + j] - min) * id + 0.5).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Low nibbles and the packed fifth bits of 32 five-bit values.
fn pack5(q: impl Fn(usize) -> u8, qs: &mut [u8; 16]) -> [u8; 4] {
    let mut qh = 0u32;
    for j in 0..16 {
        let (q0, q1) = (q(j), q(16 + j));
        qs[j] = (q0 & 0x0F) | ((q1 & 0x0F) << 4);
        qh |= (((q0 & 0x10) >> 4) as u32) << j;
        qh |= (((q1 & 0x10) >> 4) as u32) << (j + 16);
    }
    qh.to_le_bytes()
}

pub fn q5_0(x: &[f32], y: &mut [BlockQ5_0]) {
    for (x, b) in x.chunks_exact(32).zip(y) {
        let (max, _) = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.qh = pack5(|j| trunc_i8(x[j] * id + 16.5).min(31) as u8, &mut b.qs);
    }
}

pub fn q5_1(x: &[f32], y: &mut [BlockQ5_1]) {
    for (x, b) in x.chunks_exact(32).zip(y) {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        b.m = f32_to_f16(min);
        b.qh = pack5(|j| ((x[j] - min) * id + 0.5) as i32 as u8, &mut b.qs);
    }
}

pub fn q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(32).zip(y) {
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f32_to_f16(d);
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (v * id).round() as i32 as i8;
        }
    }
}
