//! Loading a llama-family model's tensors into `Linear`s and norm vectors,
//! each checked against the shape the config implies.

use super::Config;
use crate::gguf::GgufFile;
use crate::ops::linear::Linear;
use crate::ops::matmul::QMatrix;
use anyhow::{bail, Result};
use std::sync::Arc;

/// Tensors every block has (q, k, v, o, gate, up, down, two norms).
const TENSORS_PER_BLOCK: usize = 9;

/// One transformer block's weights.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub wq: Linear,
    pub wk: Linear,
    pub wv: Linear,
    pub wo: Linear,
    pub ffn_norm: Vec<f32>,
    pub w_gate: Linear,
    pub w_up: Linear,
    pub w_down: Linear,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub post_ffn_norm: Option<Vec<f32>>,
}

impl Layer {
    /// Block `i` of `g` (tensors `blk.{i}.*`), shaped as `cfg` says.
    pub fn load(g: &Arc<GgufFile>, cfg: &Config, i: usize) -> Result<Layer> {
        Self::load_ff(g, cfg, i, cfg.n_ff)
    }

    /// `load` with a feed-forward width of `n_ff` (an MTP head's may be
    /// narrower than the model's).
    pub fn load_ff(g: &Arc<GgufFile>, cfg: &Config, i: usize, n_ff: usize) -> Result<Layer> {
        let (d, hk, hv) = (cfg.n_embd, cfg.head_dim_k, cfg.head_dim_v);
        let (nq, nk, nv) = (cfg.n_head * hk, cfg.n_head_kv * hk, cfg.n_head_kv * hv);
        let p = |s: &str| format!("blk.{i}.{s}");
        let lin = |s: &str, cols, rows| matrix(g, &p(&format!("{s}.weight")), cols, rows, true);
        let biased = |s: &str, cols, rows| Linear::with_bias(lin(s, cols, rows)?, opt_vector(g, &p(&format!("{s}.bias")), rows)?);
        Ok(Layer {
            attn_norm: vector(g, &p("attn_norm.weight"), d)?,
            wq: biased("attn_q", d, nq)?,
            wk: biased("attn_k", d, nk)?,
            wv: biased("attn_v", d, nv)?,
            wo: Linear::new(lin("attn_output", cfg.n_head * hv, d)?),
            ffn_norm: vector(g, &p("ffn_norm.weight"), d)?,
            w_gate: Linear::new(lin("ffn_gate", d, n_ff)?),
            w_up: Linear::new(lin("ffn_up", d, n_ff)?),
            w_down: Linear::new(lin("ffn_down", n_ff, d)?),
            q_norm: opt_vector(g, &p("attn_q_norm.weight"), hk)?,
            k_norm: opt_vector(g, &p("attn_k_norm.weight"), hk)?,
            post_attn_norm: opt_vector(g, &p("post_attention_norm.weight"), d)?,
            post_ffn_norm: opt_vector(g, &p("post_ffw_norm.weight"), d)?,
        })
    }

    /// Its feed-forward width.
    pub fn n_ff(&self) -> usize {
        self.w_gate.w.rows
    }

    /// Weight bytes one step reads (its projections).
    pub fn bytes(&self) -> usize {
        [&self.wq, &self.wk, &self.wv, &self.wo, &self.w_gate, &self.w_up, &self.w_down].iter().map(|x| x.w.rows * x.w.row_bytes).sum()
    }
}

/// All weights of a model.
pub struct Weights {
    pub tok_embd: Linear,
    pub layers: Vec<Layer>,
    /// Multi-token-prediction blocks shipped with the model.
    pub nextn: Vec<super::nextn::Nextn>,
    pub output_norm: Vec<f32>,
    pub output: Linear,
    /// The output matrix is the token embedding's.
    pub tied_output: bool,
}

/// The matrix `name` of `g`, `rows` x `cols`; packed for the multi-row
/// kernels unless `pack` is false (a matrix only read row by row).
pub fn matrix(g: &Arc<GgufFile>, name: &str, cols: usize, rows: usize, pack: bool) -> Result<QMatrix> {
    let Some(t) = g.tensor(name) else { bail!("missing tensor {name}") };
    let mut m = QMatrix::from_file(g, t)?;
    if m.cols != cols || m.rows != rows {
        bail!("tensor {name}: shape {:?}, expected [{cols}, {rows}]", t.dims);
    }
    if pack {
        m.pack();
    }
    Ok(m)
}

pub fn vector(g: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>> {
    let Some(t) = g.tensor(name) else { bail!("missing tensor {name}") };
    if t.n_elements() != n as u64 {
        bail!("tensor {name}: {} elements, expected {n}", t.n_elements());
    }
    let mut out = vec![0.0; n];
    if crate::quant::scalar_kernels(t.ty).is_none() || t.ty.block_elems() > n {
        bail!("tensor {name}: unsupported type {}", t.ty.name());
    }
    crate::quant::dequantize_row(t.ty, g.tensor_data(t), &mut out);
    Ok(out)
}

pub fn opt_vector(g: &GgufFile, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
    if g.tensor(name).is_some() {
        vector(g, name, n).map(Some)
    } else {
        Ok(None)
    }
}

impl Weights {
    pub fn load(g: &Arc<GgufFile>, cfg: &Config) -> Result<Self> {
        let d = cfg.n_embd;
        // token_embd is only read row by row (unless it is also the output, packed below)
        // every block has at least its nine matrices and norms: a block count
        // the file cannot hold is an error before anything is allocated for it
        let n_blocks = cfg.n_layer + cfg.n_nextn;
        if n_blocks.saturating_mul(TENSORS_PER_BLOCK) > g.tensors.len() {
            bail!("metadata block_count {n_blocks}: the file holds only {} tensors", g.tensors.len());
        }
        let tok_embd = Linear::new(matrix(g, "token_embd.weight", d, cfg.n_vocab, false)?);
        let layers = (0..cfg.n_layer).map(|i| Layer::load(g, cfg, i)).collect::<Result<Vec<_>>>()?;
        let nextn = (cfg.n_layer..cfg.n_layer + cfg.n_nextn).map(|i| super::nextn::Nextn::load(g, cfg, i)).collect::<Result<Vec<_>>>()?;
        let output_norm = vector(g, "output_norm.weight", d)?;
        let output = if g.tensor("output.weight").is_some() {
            Linear::new(matrix(g, "output.weight", d, cfg.n_vocab, true)?)
        } else {
            let mut o = tok_embd.w.clone();
            o.pack();
            Linear::new(o)
        };
        let mut w = Weights { tok_embd, layers, nextn, output_norm, output, tied_output: g.tensor("output.weight").is_none() };
        for (slot, l) in w.linears_mut().into_iter().enumerate() {
            l.slot = slot;
        }
        Ok(w)
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let mut v = vec![&mut self.tok_embd];
        for l in &mut self.layers {
            v.extend([&mut l.wq, &mut l.wk, &mut l.wv, &mut l.wo, &mut l.w_gate, &mut l.w_up, &mut l.w_down]);
        }
        v.push(&mut self.output);
        v
    }

    /// Every projection by the name of its tensor in the file (an output tied
    /// to the token embedding has none of its own and is left out).
    pub fn linears(&self) -> Vec<(&str, &Linear)> {
        let mut v = vec![(self.tok_embd.w.name.as_str(), &self.tok_embd)];
        for l in &self.layers {
            v.extend([&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down].map(|x| (x.w.name.as_str(), x)));
        }
        if !self.tied_output {
            v.push((self.output.w.name.as_str(), &self.output));
        }
        v
    }
}
