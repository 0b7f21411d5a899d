//! Blocks of 32 (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) and the Q8_0 / Q8_1
//! activation formats. One truth per format: `unpack` gives the integer values,
//! dequantization and the scalar dot product are written once on top of it.

use super::blocks::*;

/// A 32-element weight block: integer values plus scale (and optional min).
pub trait Block32: Copy {
    /// Integer values q such that x = d * q + m.
    fn unpack(&self) -> [i8; 32];
    fn d(&self) -> f32;
    /// The additive min (0 for symmetric formats).
    fn m(&self) -> Option<f32> {
        None
    }
}

impl Block32 for BlockQ4_0 {
    fn unpack(&self) -> [i8; 32] {
        let mut q = [0i8; 32];
        for j in 0..16 {
            q[j] = (self.qs[j] & 0x0F) as i8 - 8;
            q[j + 16] = (self.qs[j] >> 4) as i8 - 8;
        }
        q
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

impl Block32 for BlockQ4_1 {
    fn unpack(&self) -> [i8; 32] {
        let mut q = [0i8; 32];
        for j in 0..16 {
            q[j] = (self.qs[j] & 0x0F) as i8;
            q[j + 16] = (self.qs[j] >> 4) as i8;
        }
        q
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    fn m(&self) -> Option<f32> {
        Some(f16_to_f32(self.m))
    }
}

fn unpack5(qs: &[u8; 16], qh: [u8; 4], offset: i8) -> [i8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0i8; 32];
    for j in 0..16 {
        let h0 = (((qh >> j) << 4) & 0x10) as u8;
        let h1 = ((qh >> (j + 12)) & 0x10) as u8;
        q[j] = ((qs[j] & 0x0F) | h0) as i8 - offset;
        q[j + 16] = ((qs[j] >> 4) | h1) as i8 - offset;
    }
    q
}

impl Block32 for BlockQ5_0 {
    fn unpack(&self) -> [i8; 32] {
        unpack5(&self.qs, self.qh, 16)
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

impl Block32 for BlockQ5_1 {
    fn unpack(&self) -> [i8; 32] {
        unpack5(&self.qs, self.qh, 0)
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
    fn m(&self) -> Option<f32> {
        Some(f16_to_f32(self.m))
    }
}

impl Block32 for BlockQ8_0 {
    fn unpack(&self) -> [i8; 32] {
        self.qs
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

impl Block32 for BlockIQ4NL {
    fn unpack(&self) -> [i8; 32] {
        let mut q = [0i8; 32];
        for j in 0..16 {
            q[j] = KVALUES_IQ4NL[(self.qs[j] & 0x0F) as usize];
            q[j + 16] = KVALUES_IQ4NL[(self.qs[j] >> 4) as usize];
        }
        q
    }
    fn d(&self) -> f32 {
        f16_to_f32(self.d)
    }
}

/// Reference dequantization: x = q * d (+ m), in ggml's operation order.
pub fn dequantize<B: Block32>(blocks: &[B], out: &mut [f32]) {
    for (b, y) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let q = b.unpack();
        let d = b.d();
        match b.m() {
            None => y.iter_mut().zip(q).for_each(|(y, q)| *y = q as f32 * d),
            Some(m) => y.iter_mut().zip(q).for_each(|(y, q)| *y = q as f32 * d + m),
        }
    }
}

fn isum32(a: &[i8; 32], b: &[i8; 32]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// Scalar dot of symmetric blocks with Q8_0 activations.
pub fn dot_q8_0<B: Block32>(w: &[B], a: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (w, a) in w.iter().zip(a) {
        sum += isum32(&w.unpack(), &a.qs) as f32 * (w.d() * f16_to_f32(a.d));
    }
    sum
}

/// Scalar dot of min-carrying blocks with Q8_1 activations (s = d * sum(q)).
pub fn dot_q8_1<B: Block32>(w: &[B], a: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (w, a) in w.iter().zip(a) {
        let m = w.m().unwrap_or(0.0);
        sum += isum32(&w.unpack(), &a.qs) as f32 * (w.d() * f16_to_f32(a.d)) + m * f16_to_f32(a.s);
    }
    sum
}

/// Scale of a 32-value group as ggml's x86 code computes it: d = amax/127 and
/// values scaled by 127/amax, rounded to nearest, ties to even.
fn quantize32(x: &[f32]) -> (f32, [i8; 32]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut q = [0i8; 32];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
    (d, q)
}

/// Quantize activations to Q8_0.
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    for (x, b) in x.chunks_exact(32).zip(out) {
        let (d, q) = quantize32(x);
        *b = BlockQ8_0 { d: f32_to_f16(d), qs: q };
    }
}

/// Quantize activations to Q8_1 (s = d * sum of the quantized values).
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    for (x, b) in x.chunks_exact(32).zip(out) {
        let (d, q) = quantize32(x);
        let s: i32 = q.iter().map(|&v| v as i32).sum();
        *b = BlockQ8_1 { d: f32_to_f16(d), s: f32_to_f16(d * s as f32), qs: q };
    }
}
