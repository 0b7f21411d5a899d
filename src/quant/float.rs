//! Float formats: F32, F16, BF16 rows. ggml dots F16 weights with activations
//! rounded to F16 and BF16 weights with activations rounded to BF16.

use half::{bf16, f16};

pub fn dequantize_f32(src: &[f32], out: &mut [f32]) {
    out.copy_from_slice(src);
}
pub fn dequantize_f16(src: &[u16], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(src) {
        *o = f16::from_bits(b).to_f32();
    }
}
pub fn dequantize_bf16(src: &[u16], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(src) {
        *o = bf16::from_bits(b).to_f32();
    }
}
pub fn quantize_f16(src: &[f32], out: &mut [u16]) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = f16::from_f32(x).to_bits();
    }
}
pub fn quantize_bf16(src: &[f32], out: &mut [u16]) {
    for (o, &x) in out.iter_mut().zip(src) {
        *o = bf16::from_f32(x).to_bits();
    }
}
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
pub fn dot_f16(a: &[u16], b: &[u16]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| f16::from_bits(x).to_f32() * f16::from_bits(y).to_f32()).sum()
}
pub fn dot_bf16(a: &[u16], b: &[u16]) -> f32 {
    a.iter().zip(b).map(|(&x, &y)| bf16::from_bits(x).to_f32() * bf16::from_bits(y).to_f32()).sum()
}
