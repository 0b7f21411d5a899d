//! Rotary position embedding, ggml's "normal" (adjacent pairs, llama) and
//! "neox" (first half with second half, qwen2/gemma) modes, with ggml's
//! angle recurrence computed in f32.

/// cos/sin table for one position: `n_dims/2` pairs.
pub fn rope_cache(pos: usize, n_dims: usize, base: f32, freq_scale: f32, cache: &mut Vec<(f32, f32)>) {
    cache.clear();
    let theta_scale = base.powf(-2.0 / n_dims as f32);
    let mut theta = pos as f32;
    for _ in 0..n_dims / 2 {
        let t = theta * freq_scale;
        cache.push((t.cos(), t.sin()));
        theta *= theta_scale;
    }
}

/// Rotate one head vector in place. The fused multiply-adds are where
/// ggml's compiled C (GCC contracts `a*b - c*d`) rounds once.
pub fn rope_apply(x: &mut [f32], n_dims: usize, neox: bool, cache: &[(f32, f32)]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked above).
        return unsafe { rope_fma(x, n_dims, neox, cache) };
    }
    rope_body(x, n_dims, neox, cache)
}

/// `rope_body` with FMA instructions for `mul_add` (else a libm call each;
/// the same bits either way).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn rope_fma(x: &mut [f32], n_dims: usize, neox: bool, cache: &[(f32, f32)]) {
    rope_body(x, n_dims, neox, cache)
}

#[inline(always)]
fn rope_body(x: &mut [f32], n_dims: usize, neox: bool, cache: &[(f32, f32)]) {
    if neox {
        let h = n_dims / 2;
        for i in 0..h {
            let (c, s) = cache[i];
            let (x0, x1) = (x[i], x[i + h]);
            x[i] = x0.mul_add(c, -(x1 * s));
            x[i + h] = x0.mul_add(s, x1 * c);
        }
    } else {
        for i in 0..n_dims / 2 {
            let (c, s) = cache[i];
            let (x0, x1) = (x[2 * i], x[2 * i + 1]);
            x[2 * i] = x0.mul_add(c, -(x1 * s));
            x[2 * i + 1] = x0.mul_add(s, x1 * c);
        }
    }
}
