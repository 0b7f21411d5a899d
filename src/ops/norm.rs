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

/// `rms_norm` of each row of `w.len()`, blocks of rows spread over the
/// thread team for big batches (each row the same computation).
pub fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    let rows = x.len().min(out.len()) / d.max(1);
    let per = (super::ELEMENTWISE_CHUNK / d.max(1)).max(1);
    if rows <= per {
        for (xr, or) in x.chunks(d).zip(out.chunks_mut(d)) {
            rms_norm(xr, w, eps, or);
        }
        return;
    }
    let po = crate::parallel::SendPtr(out.as_mut_ptr());
    crate::parallel::for_each(rows.div_ceil(per), |i| {
        for r in i * per..((i + 1) * per).min(rows) {
            // SAFETY: row r of out, disjoint across items and in bounds.
            let or = unsafe { std::slice::from_raw_parts_mut(po.get().add(r * d), d) };
            rms_norm(&x[r * d..(r + 1) * d], w, eps, or);
        }
    });
}
