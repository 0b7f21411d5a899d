//! Numeric building blocks of the forward pass.
pub mod attention;
pub mod matmul;
pub mod norm;
pub mod rope;

/// e^x as ggml's vectorised `ggml_v_expf` computes it (a degree-5 polynomial
/// on the reduced argument, then scaling by 2^n); used by ggml's SwiGLU, so
/// using it keeps our FFN activations bit-identical to llama.cpp's.
#[inline]
pub fn expf_ggml(x: f32) -> f32 {
    let r = f32::from_bits(0x4B40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3FB8_AA3B), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(f32::from_bits(0x35BF_BE8E), (-n).mul_add(f32::from_bits(0x3F31_7200), x)); // ln2 hi/lo
    let u = b * b;
    let p = f32::from_bits(0x3C07_2010).mul_add(b, f32::from_bits(0x3D2B_9F17)); // 0x1.0e402p-7, 0x1.573e2ep-5
    let q = f32::from_bits(0x3E2A_AF33).mul_add(b, f32::from_bits(0x3EFF_FEDB)); // 0x1.555e66p-3, 0x1.fffdb6p-2
    let s = f32::from_bits(0x3F7F_FFF6).mul_add(b, 1.0); // 0x1.ffffecp-1
    let j = p.mul_add(u, q).mul_add(u, s);
    if n.abs() > 192.0 {
        return if n <= 0.0 { 0.0 } else { f32::INFINITY };
    }
    scale_pow2(j, n as i32)
}

/// x * 2^n, exact while the result is normal (as _mm512_scalef_ps).
#[inline]
fn scale_pow2(x: f32, n: i32) -> f32 {
    let mut x = x;
    let mut n = n;
    while n > 127 {
        x *= f32::from_bits(0x7F00_0000);
        n -= 127;
    }
    while n < -126 {
        x *= f32::from_bits(0x0080_0000);
        n += 126;
    }
    x * f32::from_bits(((n + 127) as u32) << 23)
}

/// SiLU as ggml's vectorised SwiGLU computes it: x / (1 + expf_ggml(-x)).
#[inline]
pub fn silu_ggml(x: f32) -> f32 {
    x / (1.0 + expf_ggml(0.0 - x))
}

/// y[i] = silu(g[i]) * u[i] in place of g, SIMD where available.
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        // SAFETY: avx2/fma detected at run time.
        return unsafe { crate::quant::simd::avx2::swiglu(g, u) };
    }
    for (g, u) in g.iter_mut().zip(u) {
        *g = silu_ggml(*g) * u;
    }
}

pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}
