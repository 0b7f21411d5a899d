//! `Linear`: the one entry point for every projection of the model (q, k, v,
//! o, gate, up, down, output) and for the token-embedding lookup.
//!
//! y = W x (+ bias) + sum_i scale_i * B_i (A_i x): the weight matrix shares
//! its bytes (from any GGUF file or memory), the bias is added after the
//! adapters as llama.cpp's `build_lora_mm` + `ggml_add` do, and each adapter
//! slot holds a low-rank pair (LoRA). The rounding of W x is the caller's
//! choice (`Batch`): as a whole batch, as rows of a bigger batch, or as
//! one-token steps.

use super::add_in_place;
use super::matmul::{matmul_q_in_batch, quantize_acts, Batch, QMatrix, QuantizedActs};
use anyhow::{bail, Result};

/// A low-rank adapter pair: `a` maps the input (cols) to `rank`, `b` maps
/// `rank` to the output (rows); its product is scaled by `scale`.
#[derive(Clone)]
pub struct Adapter {
    pub a: QMatrix,
    pub b: QMatrix,
    pub scale: f32,
}

#[derive(Clone)]
pub struct Linear {
    pub w: QMatrix,
    pub bias: Option<Vec<f32>>,
    pub adapters: Vec<Adapter>,
}

/// Per-pass state of the projections: the activations quantized for the last
/// input (projections of one input share them) and adapter scratch.
#[derive(Default)]
pub struct MatCtx {
    acts: QuantizedActs,
    /// The input changed since `acts` was filled.
    stale: bool,
    lora_mid: Vec<f32>,
    lora_out: Vec<f32>,
    lora_acts: QuantizedActs,
}

impl MatCtx {
    /// The next projection reads a new input (its quantized rows must be rebuilt).
    pub fn new_input(&mut self) {
        self.stale = true;
    }
}

impl Linear {
    pub fn new(w: QMatrix) -> Self {
        Linear { w, bias: None, adapters: Vec::new() }
    }

    pub fn with_bias(w: QMatrix, bias: Option<Vec<f32>>) -> Result<Self> {
        if let Some(b) = &bias {
            if b.len() != w.rows {
                bail!("{}: bias of {} values for {} rows", w.name, b.len(), w.rows);
            }
        }
        Ok(Linear { w, bias, adapters: Vec::new() })
    }

    /// Add an adapter pair (checked against the weight's shape).
    pub fn add_adapter(&mut self, a: QMatrix, b: QMatrix, scale: f32) -> Result<()> {
        if a.cols != self.w.cols || b.rows != self.w.rows || b.cols != a.rows {
            bail!(
                "{}: adapter shapes A [{} x {}], B [{} x {}] do not fit a [{} x {}] weight",
                self.w.name,
                a.rows,
                a.cols,
                b.rows,
                b.cols,
                self.w.rows,
                self.w.cols
            );
        }
        self.adapters.push(Adapter { a, b, scale });
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.w.rows
    }
    pub fn cols(&self) -> usize {
        self.w.cols
    }

    /// out[t * rows + r] for the `n` rows of `x` (each `cols` long).
    pub fn forward(&self, x: &[f32], n: usize, out: &mut [f32], ctx: &mut MatCtx, batch: Batch) {
        let w = &self.w;
        let out = &mut out[..n * w.rows];
        if ctx.stale || ctx.acts.act != Some(w.kern.act) || ctx.acts.n != n || ctx.acts.row_bytes != w.act_row_bytes() {
            quantize_acts(w, &x[..n * w.cols], n, &mut ctx.acts);
            ctx.stale = false;
        }
        matmul_q_in_batch(w, &ctx.acts, out, batch);
        for ad in &self.adapters {
            let (rank, rows) = (ad.a.rows, w.rows);
            ctx.lora_mid.resize(n * rank, 0.0);
            quantize_acts(&ad.a, &x[..n * w.cols], n, &mut ctx.lora_acts);
            matmul_q_in_batch(&ad.a, &ctx.lora_acts, &mut ctx.lora_mid, batch);
            ctx.lora_out.resize(n * rows, 0.0);
            quantize_acts(&ad.b, &ctx.lora_mid, n, &mut ctx.lora_acts);
            matmul_q_in_batch(&ad.b, &ctx.lora_acts, &mut ctx.lora_out, batch);
            for (o, &v) in out.iter_mut().zip(&ctx.lora_out) {
                *o += v * ad.scale;
            }
        }
        if let Some(b) = &self.bias {
            for row in out.chunks_mut(b.len()) {
                add_in_place(row, b);
            }
        }
    }

    /// Row `r` of the weight, dequantized (the token-embedding lookup).
    pub fn embed(&self, r: usize, out: &mut [f32]) {
        self.w.dequantize_row(r, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgmlType;

    fn f32_matrix(name: &str, cols: usize, rows: usize, f: impl Fn(usize, usize) -> f32) -> (QMatrix, Vec<f32>) {
        let v: Vec<f32> = (0..rows * cols).map(|i| f(i / cols, i % cols)).collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        (QMatrix::from_bytes(name, GgmlType::F32, cols, rows, &bytes).unwrap(), v)
    }

    /// W x + bias + s * B (A x) against a plain f32 evaluation.
    #[test]
    fn adapter_and_bias_follow_the_formula() {
        let (cols, rows, rank, n) = (32, 6, 2, 3);
        let (w, wv) = f32_matrix("w", cols, rows, |r, c| ((r * 7 + c * 3) % 11) as f32 * 0.1 - 0.5);
        let (a, av) = f32_matrix("a", cols, rank, |r, c| ((r + c) % 5) as f32 * 0.25 - 0.5);
        let (b, bv) = f32_matrix("b", rank, rows, |r, c| (r as f32 - c as f32) * 0.3);
        let bias: Vec<f32> = (0..rows).map(|r| r as f32 * 0.01).collect();
        let mut lin = Linear::with_bias(w, Some(bias.clone())).unwrap();
        lin.add_adapter(a, b, 0.5).unwrap();
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 13) % 17) as f32 * 0.0625 - 0.5).collect();
        let mut out = vec![0.0; n * rows];
        lin.forward(&x, n, &mut out, &mut MatCtx::default(), Batch::Whole);
        for t in 0..n {
            let xt = &x[t * cols..(t + 1) * cols];
            let ax: Vec<f32> = (0..rank).map(|k| (0..cols).map(|c| av[k * cols + c] * xt[c]).sum()).collect();
            for r in 0..rows {
                let wx: f32 = (0..cols).map(|c| wv[r * cols + c] * xt[c]).sum();
                let bax: f32 = (0..rank).map(|k| bv[r * rank + k] * ax[k]).sum();
                let want = wx + 0.5 * bax + bias[r];
                assert!((out[t * rows + r] - want).abs() < 1e-3, "row {t},{r}: {} vs {want}", out[t * rows + r]);
            }
        }
    }

    #[test]
    fn adapter_shapes_are_checked() {
        let (w, _) = f32_matrix("w", 32, 6, |_, _| 0.0);
        let (a, _) = f32_matrix("a", 32, 2, |_, _| 0.0);
        let (b, _) = f32_matrix("b", 3, 6, |_, _| 0.0);
        assert!(Linear::new(w).add_adapter(a, b, 1.0).is_err());
    }
}
