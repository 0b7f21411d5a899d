//! Per-row log-softmax arithmetic exactly as llama-perplexity does it (float
//! max, double sum of `expf`, float log-sum-exp), the uint16 packing of a row
//! of log-probabilities for `--kl-divergence-base` files, and the KL-divergence
//! accumulators of `--kl-divergence`.

use crate::quant::quantize::nearest_int;

/// Max logit (first index wins ties), its index and the double sum of expf(l - max).
fn row_max_sum(logits: &[f32]) -> (f32, usize, f64) {
    let (mut max, mut imax) = (logits[0], 0usize);
    for (i, &v) in logits.iter().enumerate().skip(1) {
        if v > max {
            max = v;
            imax = i;
        }
    }
    let sum: f64 = logits.iter().map(|&v| (v - max).exp() as f64).sum();
    (max, imax, sum)
}

/// Negative log-likelihood of `tok` (llama-perplexity without a logits file).
pub fn nll(logits: &[f32], tok: u32) -> f64 {
    let (max, _, sum) = row_max_sum(logits);
    -((logits[tok as usize] - max) as f64 - sum.ln())
}

/// u16 values per packed row: two f32 (scale, min log-prob), then n_vocab rounded up to even.
pub fn packed_row_len(n_vocab: usize) -> usize {
    2 * n_vocab.div_ceil(2) + 4
}

/// Pack one row's log-probabilities into `out` (packed_row_len values) and
/// return the NLL of `tok` as llama-perplexity computes it in that mode.
pub fn pack_row(logits: &[f32], tok: u32, out: &mut [u16]) -> f64 {
    let (max, _, sum) = row_max_sum(logits);
    let min = logits.iter().fold(logits[0], |m, &v| m.min(v)).max(max - 16.0);
    let lse = sum.ln() as f32;
    let min_log_prob = min - max - lse;
    let scale = (max - min) / 65535.0;
    let s = scale.to_bits();
    let m = min_log_prob.to_bits();
    out[0] = s as u16;
    out[1] = (s >> 16) as u16;
    out[2] = m as u16;
    out[3] = (m >> 16) as u16;
    let vals = &mut out[4..];
    vals.iter_mut().for_each(|v| *v = 0);
    if scale != 0.0 {
        let inv = 1.0 / scale;
        for (o, &l) in vals.iter_mut().zip(logits) {
            *o = if l > min { nearest_int(inv * (l - min)) as u16 } else { 0 };
        }
    }
    (max + lse - logits[tok as usize]) as f64
}

/// Running sums of `--kl-divergence` (llama.cpp's kl_divergence_result).
#[derive(Default, Clone, Debug)]
pub struct KldSums {
    pub sum_nll: f64,
    pub sum_nll2: f64,
    pub sum_nll_base: f64,
    pub sum_nll_base2: f64,
    pub sum_nll_nll_base: f64,
    pub sum_kld: f64,
    pub sum_kld2: f64,
    pub sum_p_diff: f64,
    pub sum_p_diff2: f64,
    pub sum_p_diff4: f64,
    pub max_p_diff: f32,
    pub n_same_top: usize,
    pub count: usize,
}

impl KldSums {
    pub fn merge(&mut self, o: &KldSums) {
        self.sum_nll += o.sum_nll;
        self.sum_nll2 += o.sum_nll2;
        self.sum_nll_base += o.sum_nll_base;
        self.sum_nll_base2 += o.sum_nll_base2;
        self.sum_nll_nll_base += o.sum_nll_nll_base;
        self.sum_kld += o.sum_kld;
        self.sum_kld2 += o.sum_kld2;
        self.sum_p_diff += o.sum_p_diff;
        self.sum_p_diff2 += o.sum_p_diff2;
        self.sum_p_diff4 += o.sum_p_diff4;
        self.max_p_diff = self.max_p_diff.max(o.max_p_diff);
        self.n_same_top += o.n_same_top;
        self.count += o.count;
    }

    /// Compare one row of logits with the base model's packed row; returns (KLD, Δp) of this token.
    pub fn add_row(&mut self, logits: &[f32], base: &[u16], tok: u32) -> (f64, f32) {
        let (max, imax, sum) = row_max_sum(logits);
        let lse = sum.ln() as f32;
        let scale = f32::from_bits(base[0] as u32 | (base[1] as u32) << 16);
        let min_log_prob = f32::from_bits(base[2] as u32 | (base[3] as u32) << 16);
        let base = &base[4..];
        let t = tok as usize;
        let nll = max + lse - logits[t];
        self.sum_nll += nll as f64;
        self.sum_nll2 += (nll * nll) as f64;
        let nll_base = -(scale * base[t] as f32 + min_log_prob);
        self.sum_nll_base += nll_base as f64;
        self.sum_nll_base2 += (nll_base * nll_base) as f64;
        self.sum_nll_nll_base += (nll * nll_base) as f64;
        let max_lse = max + lse;
        let mut kld = 0.0f64;
        let (mut imax_base, mut p_log_base_max) = (0usize, 0.0f32);
        for (i, (&q, &l)) in base.iter().zip(logits).enumerate() {
            let p_log_base = scale * q as f32 + min_log_prob;
            if i == 0 || p_log_base > p_log_base_max {
                p_log_base_max = p_log_base;
                imax_base = i;
            }
            if p_log_base > -16.0 {
                let p_base = p_log_base.exp();
                kld += (p_base * (p_log_base - l + max_lse)) as f64;
            }
        }
        self.sum_kld += kld;
        self.sum_kld2 += kld * kld;
        self.count += 1;
        if imax == imax_base {
            self.n_same_top += 1;
        }
        let p_diff = (-nll).exp() - (-nll_base).exp();
        self.sum_p_diff += p_diff as f64;
        let p_diff2 = (p_diff * p_diff) as f64;
        self.sum_p_diff2 += p_diff2;
        self.sum_p_diff4 += p_diff2 * p_diff2;
        self.max_p_diff = self.max_p_diff.max(p_diff.abs());
        (kld, p_diff)
    }
}

/// Mean and its uncertainty (llama.cpp's mean_and_uncertainty).
pub fn mean_and_uncertainty(sum: f64, sum2: f64, count: usize) -> (f64, f64) {
    if count < 1 {
        return (0.0, 0.0);
    }
    let f = sum / count as f64;
    let df = sum2 / count as f64 - f * f;
    let df = if df > 0.0 && count > 10 { (df / (count as f64 - 1.0)).sqrt() } else { 0.0 };
    (f, df)
}

pub fn covariance(suma: f64, sumb: f64, sumab: f64, count: usize) -> f64 {
    if count < 10 {
        return 0.0;
    }
    let c = count as f64;
    (sumab / c - (suma / c) * (sumb / c)) / (c - 1.0)
}

/// Linear-interpolated percentile of sorted values (llama.cpp's lambda).
pub fn percentile(sorted: &[f32], fraction: f32) -> f32 {
    if fraction <= 0.0 {
        return sorted[0];
    }
    if fraction >= 1.0 {
        return *sorted.last().unwrap();
    }
    let mut p = fraction * (sorted.len() - 1) as f32;
    let ip = p as usize;
    p -= ip as f32;
    (1.0 - p) * sorted[ip] + p * sorted[(ip + 1).min(sorted.len() - 1)]
}

pub fn median(sorted: &[f32]) -> f32 {
    let n = sorted.len();
    if n.is_multiple_of(2) {
        0.5 * (sorted[n / 2] + sorted[n / 2 - 1])
    } else {
        sorted[n / 2]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(3.5), 4);
        assert_eq!(nearest_int(65534.7), 65535);
        assert_eq!(nearest_int(-1.4), -1);
    }

    #[test]
    fn packed_row_round_trips_log_probs() {
        let logits: Vec<f32> = (0..101).map(|i| ((i * 37) % 23) as f32 * 0.7 - 5.0).collect();
        let mut row = vec![0u16; packed_row_len(logits.len())];
        assert_eq!(row.len(), 2 * 51 + 4);
        let nll = pack_row(&logits, 7, &mut row);
        assert!((nll - super::nll(&logits, 7)).abs() < 1e-5);
        // The same model against its own base: KLD ~ 0, same top token, p diff ~ 0.
        let mut s = KldSums::default();
        let (kld, dp) = s.add_row(&logits, &row, 7);
        assert!(kld.abs() < 1e-4, "{kld}");
        assert!(dp.abs() < 1e-4);
        assert_eq!(s.n_same_top, 1);
        // A different distribution has a clearly positive KLD.
        let other: Vec<f32> = logits.iter().rev().copied().collect();
        let (kld2, _) = s.add_row(&other, &row, 7);
        assert!(kld2 > 0.1, "{kld2}");
    }

    #[test]
    fn percentiles_like_llama_cpp() {
        let v = [1.0f32, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
        assert_eq!(median(&v), 2.5);
        assert_eq!(median(&v[..3]), 2.0);
    }
}
