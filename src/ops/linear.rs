//! `Linear`: the one entry point for every projection of the model (q, k, v,
//! o, gate, up, down, output) and for the token-embedding lookup.
//!
//! y = W x (+ bias) + sum_i scale_i * B_i (A_i x): the weight matrix shares
//! its bytes (from any GGUF file or memory), the bias is added after the
//! adapters as llama.cpp's `build_lora_mm` + `ggml_add` do. Adapters (LoRA
//! pairs) belong to the pass, not to the weights: `MatCtx` carries an
//! `AdapterSet` indexed by each `Linear`'s slot, so sessions on one model can
//! use different adapters and scales. The rounding of W x is the caller's
//! choice (`Batch`): as a whole batch, as rows of a bigger batch, or as
//! one-token steps.

use super::add_in_place;
use super::lowrank::LowRank;
use super::matmul::{matmul_q_in_batch, quantize_acts, Batch, QMatrix, QuantizedActs};
use anyhow::{bail, Result};
use std::sync::Arc;

/// A low-rank adapter pair: `a` maps the input (cols) to `rank`, `b` maps
/// `rank` to the output (rows); its product is scaled by `scale`. For the
/// token embedding the pair is transposed: row `token` of `a` (rank values)
/// times `b` (n_embd rows of rank).
#[derive(Clone)]
pub struct Adapter {
    pub a: QMatrix,
    pub b: QMatrix,
    pub scale: f32,
    /// Fast mode: the pair for the batch-invariant product (`lowrank`;
    /// exact mode uses ggml's kernels).
    pub fast: Option<Arc<LowRank>>,
}

impl Adapter {
    /// A pair; in fast mode (the default) with its copy for `lowrank`.
    pub fn new(a: QMatrix, b: QMatrix, scale: f32) -> Adapter {
        let fast = (!crate::quant::fast::exact()).then(|| Arc::new(LowRank::new(a.to_f32(), b.to_f32(), b.cols, b.rows, LowRank::keeps_f16(a.ty, b.ty))));
        Adapter { a, b, scale, fast }
    }
}

/// Adapters per projection slot.
#[derive(Clone, Default)]
pub struct AdapterSet {
    slots: Vec<Vec<Adapter>>,
}

impl AdapterSet {
    /// An empty set for `n_slots` projections.
    pub fn new(n_slots: usize) -> Self {
        AdapterSet { slots: vec![Vec::new(); n_slots] }
    }

    pub fn push(&mut self, slot: usize, a: Adapter) {
        self.slots[slot].push(a);
    }

    /// The adapters of `slot` (none past the end).
    pub fn get(&self, slot: usize) -> &[Adapter] {
        self.slots.get(slot).map_or(&[], |v| v.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|v| v.is_empty())
    }
}

#[derive(Clone)]
pub struct Linear {
    pub w: QMatrix,
    pub bias: Option<Vec<f32>>,
    /// This projection's index in an `AdapterSet` (set by the model loader).
    pub slot: usize,
}

/// Per-pass state of the projections: the activations quantized for the last
/// input (projections of one input share them), the adapters, their scratch.
#[derive(Default)]
pub struct MatCtx {
    acts: QuantizedActs,
    /// The input changed since `acts` was filled.
    stale: bool,
    pub adapters: Option<Arc<AdapterSet>>,
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
        Linear { w, bias: None, slot: usize::MAX }
    }

    pub fn with_bias(w: QMatrix, bias: Option<Vec<f32>>) -> Result<Self> {
        if let Some(b) = &bias {
            if b.len() != w.rows {
                bail!("{}: bias of {} values for {} rows", w.name, b.len(), w.rows);
            }
        }
        Ok(Linear { w, bias, slot: usize::MAX })
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
        if let Some(set) = ctx.adapters.clone() {
            for ad in set.get(self.slot) {
                if let Some(lr) = &ad.fast {
                    lr.add(ad.a.rows, w.cols, w.rows, ad.scale, &x[..n * w.cols], n, &mut ctx.lora_mid, out);
                    continue;
                }
                let rank = ad.a.rows;
                ctx.lora_mid.resize(n * rank, 0.0);
                quantize_acts(&ad.a, &x[..n * w.cols], n, &mut ctx.lora_acts);
                matmul_q_in_batch(&ad.a, &ctx.lora_acts, &mut ctx.lora_mid, batch);
                add_low_rank(ad, &ctx.lora_mid, n, &mut ctx.lora_acts, &mut ctx.lora_out, out, batch);
            }
        }
        if let Some(b) = &self.bias {
            for row in out.chunks_mut(b.len()) {
                add_in_place(row, b);
            }
        }
    }

    /// The embedding rows of `tokens` (one row of `cols` each, in order) into
    /// `out`, plus the adapters' deltas as llama.cpp's `build_inp_embd`.
    pub fn embed(&self, tokens: &[u32], out: &mut [f32], ctx: &mut MatCtx) {
        let d = self.w.cols;
        for (row, &t) in out.chunks_mut(d).zip(tokens) {
            self.w.dequantize_row(t as usize, row);
        }
        let n = tokens.len();
        if let Some(set) = ctx.adapters.clone() {
            for ad in set.get(self.slot) {
                let rank = ad.a.cols;
                ctx.lora_mid.resize(n * rank, 0.0);
                for (row, &t) in ctx.lora_mid.chunks_mut(rank).zip(tokens) {
                    ad.a.dequantize_row(t as usize, row);
                }
                add_low_rank(ad, &ctx.lora_mid, n, &mut ctx.lora_acts, &mut ctx.lora_out, &mut out[..n * d], Batch::Whole);
            }
        }
    }
}

/// out += scale * B mid, for `n` rows of `mid` (rank values each).
fn add_low_rank(ad: &Adapter, mid: &[f32], n: usize, acts: &mut QuantizedActs, tmp: &mut Vec<f32>, out: &mut [f32], batch: Batch) {
    tmp.resize(n * ad.b.rows, 0.0);
    quantize_acts(&ad.b, mid, n, acts);
    matmul_q_in_batch(&ad.b, acts, tmp, batch);
    for (o, &v) in out.iter_mut().zip(tmp.iter()) {
        *o += v * ad.scale;
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
        lin.slot = 1;
        let x: Vec<f32> = (0..n * cols).map(|i| ((i * 13) % 17) as f32 * 0.0625 - 0.5).collect();
        // ggml's kernels (exact mode) and the f32 path (fast mode)
        for fast in [None, Some(Arc::new(LowRank::new(av.clone(), bv.clone(), rank, rows, false)))] {
            let mut set = AdapterSet::new(2);
            set.push(1, Adapter { a: a.clone(), b: b.clone(), scale: 0.5, fast });
            let mut out = vec![0.0; n * rows];
            let mut ctx = MatCtx { adapters: Some(Arc::new(set)), ..Default::default() };
            lin.forward(&x, n, &mut out, &mut ctx, Batch::Whole);
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
    }
}
