//! Numeric building blocks of the forward pass.
pub mod attention;
pub mod linear;
pub mod lowrank;
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

/// Whether exact mode follows a llama.cpp built without AVX-512
/// (`RLLAMA_GGML_BUILD=avx2`) where the two builds round differently: the
/// f16 dot product's summation order, the vector `expf` (SwiGLU and the
/// tiled attention's weights) and the sum of those weights. The default is
/// the AVX-512 build, whose outputs the tests' fixtures hold; this one is for
/// comparing with a local llama.cpp on an AVX2-only machine. Exact mode only.
pub fn ggml_avx2_build() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("RLLAMA_GGML_BUILD").is_ok_and(|v| v == "avx2")) && crate::quant::fast::exact()
}

/// e^x as an AVX2 build's `ggml_v_expf` computes it: the polynomial of
/// `expf_ggml` without its constant term, then k + k * p (k = 2^n, fused);
/// past |n| = 126 its two scalings, past 192 overflow or 0.
pub fn expf_ggml_avx2(x: f32) -> f32 {
    let r = f32::from_bits(0x4B40_0000); // 0x1.8p23
    let z = x.mul_add(f32::from_bits(0x3FB8_AA3B), r); // log2(e)
    let n = z - r;
    let b = (-n).mul_add(f32::from_bits(0x35BF_BE8E), (-n).mul_add(f32::from_bits(0x3F31_7200), x)); // ln2 hi/lo
    let e = z.to_bits() << 23;
    let k = f32::from_bits(e.wrapping_add(1f32.to_bits()));
    let u = b * b;
    let p = f32::from_bits(0x3C07_2010).mul_add(b, f32::from_bits(0x3D2B_9F17)); // 0x1.0e402p-7, 0x1.573e2ep-5
    let q = f32::from_bits(0x3E2A_AF33).mul_add(b, f32::from_bits(0x3EFF_FEDB)); // 0x1.555e66p-3, 0x1.fffdb6p-2
    let j = p.mul_add(u, q).mul_add(u, f32::from_bits(0x3F7F_FFF6) * b); // 0x1.ffffecp-1
    if n.abs() <= 126.0 || n.is_nan() {
        return k.mul_add(j, k);
    }
    let g: u32 = if n <= 0.0 { 0x8200_0000 } else { 0 };
    let s1 = f32::from_bits(g.wrapping_add(0x7F00_0000));
    if n.abs() > 192.0 {
        return s1 * s1;
    }
    let s2 = f32::from_bits(e.wrapping_sub(g));
    s2.mul_add(j, s2) * s1
}

/// y[i] = silu(g[i]) * u[i] in place of g, SIMD where available.
pub fn swiglu(g: &mut [f32], u: &[f32]) {
    if ggml_avx2_build() {
        for (g, u) in g.iter_mut().zip(u) {
            *g = *g / (1.0 + expf_ggml_avx2(0.0 - *g)) * u;
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::has_avx2() {
        // SAFETY: avx2/fma detected at run time.
        return unsafe { crate::quant::simd::avx2::swiglu(g, u) };
    }
    for (g, u) in g.iter_mut().zip(u) {
        *g = silu_ggml(*g) * u;
    }
}

/// GELU (tanh form) as ggml tabulates it at start-up, evaluated with the same
/// contractions GCC makes there: (0.5x)(1 + tanh((s x) fma(a x, x, 1))).
fn gelu_f32(x: f32) -> f32 {
    let a = f32::from_bits(0x3D37_2713); // 0.044715
    let s = f32::from_bits(0x3F4C_422A); // sqrt(2/pi)
    let inner = (a * x).mul_add(x, 1.0);
    (0.5 * x) * (1.0 + ((s * x) * inner).tanh())
}

/// ggml's GELU lookup: the f16 result for every f16 input.
fn gelu_table() -> &'static [u16] {
    static T: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    T.get_or_init(|| (0..=u16::MAX).map(|h| half::f16::from_f32(gelu_f32(half::f16::from_bits(h).to_f32())).to_bits()).collect())
}

/// y[i] = gelu(g[i]) * u[i] in place of g, as ggml's GeGLU: the input rounded
/// to f16 and looked up, exact passes outside [-10, 10].
pub fn geglu(g: &mut [f32], u: &[f32]) {
    let t = gelu_table();
    for (g, u) in g.iter_mut().zip(u) {
        let x = *g;
        *g = if x <= -10.0 {
            0.0
        } else if x >= 10.0 {
            x * u
        } else {
            half::f16::from_bits(t[half::f16::from_f32(x).to_bits() as usize]).to_f32() * u
        };
    }
}

/// Elements per work item when an elementwise op is spread over the thread
/// team: a multiple of every SIMD width, so each element takes the path (vector
/// lanes or scalar tail) it takes in one call.
pub(crate) const ELEMENTWISE_CHUNK: usize = 1 << 14;

/// `f(a, b)` for an elementwise `f`, by chunks spread over the thread team
/// (the same results as one call; the FFN activations of a big batch were
/// 3% of Gemma's pp512 on one thread while the other waited).
pub fn par_elementwise(a: &mut [f32], b: &[f32], f: fn(&mut [f32], &[f32])) {
    let n = a.len().min(b.len());
    if n <= ELEMENTWISE_CHUNK {
        return f(a, b);
    }
    let pa = crate::parallel::SendPtr(a.as_mut_ptr());
    crate::parallel::for_each(n.div_ceil(ELEMENTWISE_CHUNK), |i| {
        let (s, e) = (i * ELEMENTWISE_CHUNK, ((i + 1) * ELEMENTWISE_CHUNK).min(n));
        // SAFETY: elements s..e of a, disjoint across items and in bounds.
        let ai = unsafe { std::slice::from_raw_parts_mut(pa.get().add(s), e - s) };
        f(ai, &b[s..e]);
    });
}

pub fn add_in_place(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build's expf: within a few units in the last place of libm's
    /// over the range activations meet, its own rounding (not the AVX-512
    /// build's everywhere), and 0 / infinity far out, through both scalings.
    #[test]
    fn avx2_build_expf_is_close_and_its_own() {
        let mut differs = 0;
        for i in -2000..=2000 {
            let x = i as f32 * 0.0437;
            let (e, want) = (expf_ggml_avx2(x), x.exp());
            assert!((e - want).abs() <= 4.0 * f32::EPSILON * want, "expf({x}) = {e}, libm {want}");
            differs += (e != expf_ggml(x)) as usize;
        }
        assert!(differs > 0, "the AVX2 build's expf rounds as the AVX-512 build's everywhere");
        assert_eq!(expf_ggml_avx2(-200.0), 0.0);
        assert_eq!(expf_ggml_avx2(200.0), f32::INFINITY);
        // |n| in 126..192: the two-step scaling, still near libm's
        for x in [-95.0f32, -88.5, 88.5] {
            let (e, want) = (expf_ggml_avx2(x), x.exp());
            assert!((e - want).abs() <= 1e-5 * want.max(f32::MIN_POSITIVE), "expf({x}) = {e}, libm {want}");
        }
    }
}
