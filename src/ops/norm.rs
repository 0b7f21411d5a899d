//! RMS normalization as ggml computes it (sum of squares in f64).

pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let n = x.len();
    let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
    let mean = (sum / n as f64) as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for i in 0..n {
        out[i] = (x[i] * scale) * w[i];
    }
}

/// In-place variant over rows of `w.len()`.
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks(d).zip(out.chunks_mut(d)) {
        rms_norm(xr, w, eps, or);
    }
}
