//! Model hyper-parameters read from GGUF metadata.

use crate::gguf::GgufFile;
use anyhow::{bail, Result};

#[derive(Clone, Debug)]
pub struct Config {
    pub arch: String,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub n_embd: usize,
    /// Blocks of the main pass.
    pub n_layer: usize,
    /// Multi-token-prediction blocks after them (`{arch}.nextn_predict_layers`).
    pub n_nextn: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim_k: usize,
    pub head_dim_v: usize,
    pub n_ff: usize,
    pub eps: f32,
    pub rope_base: f32,
    pub rope_freq_scale: f32,
    pub rope_dims: usize,
    pub rope_neox: bool,
    /// Embeddings are multiplied by this (gemma: sqrt(n_embd)).
    pub embd_scale: Option<f32>,
    /// Q is multiplied by this before attention, which then uses no scale
    /// (gemma); otherwise attention scales by 1/sqrt(head_dim_k).
    pub q_scale: Option<f32>,
    pub ffn_act: FfnAct,
    /// Sliding-window attention: window size (0 = none) and which layers use it.
    pub swa_window: usize,
    pub swa_layers: Vec<bool>,
    pub rope_base_swa: f32,
    pub rope_freq_scale_swa: f32,
    /// Final logits become c * tanh(logit / c) when c > 0.
    pub logit_softcap: f32,
}

/// The gated FFN's activation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FfnAct {
    /// SwiGLU: silu(gate) * up.
    Silu,
    /// GeGLU: gelu_tanh(gate) * up, through ggml's f16 table.
    Gelu,
}

/// An optional size: absent gives `default`, present must be in 1..2^40.
fn opt(g: &GgufFile, key: &str, default: usize) -> Result<usize> {
    match g.get(key) {
        None => Ok(default),
        Some(_) => req(g, key),
    }
}

fn req(g: &GgufFile, key: &str) -> Result<usize> {
    match g.get_i64(key) {
        Some(v) if v > 0 && v < (1 << 40) => Ok(v as usize),
        Some(v) => bail!("metadata {key} = {v} is out of range"),
        None => match g.get(key) {
            Some(v) => bail!("metadata {key} has type {:?}, expected an integer", v.value_type()),
            None => bail!("missing metadata {key}"),
        },
    }
}

impl Config {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let Some(arch) = g.get_str("general.architecture") else { bail!("missing metadata general.architecture") };
        let arch = arch.to_string();
        let rope_neox = match arch.as_str() {
            "llama" | "mistral" => false,
            "qwen2" | "gemma3" => true,
            other => bail!("architecture {other:?} is not supported (supported: llama, mistral, qwen2, gemma3)"),
        };
        let k = |s: &str| format!("{arch}.{s}");
        let n_embd = req(g, &k("embedding_length"))?;
        let n_head = req(g, &k("attention.head_count"))?;
        let n_head_kv = opt(g, &k("attention.head_count_kv"), n_head)?;
        if n_head_kv == 0 || n_head % n_head_kv != 0 {
            bail!("metadata {}: {n_head_kv} does not divide the head count {n_head}", k("attention.head_count_kv"));
        }
        if n_embd % n_head != 0 && (g.get_i64(&k("attention.key_length")).is_none() || g.get_i64(&k("attention.value_length")).is_none()) {
            bail!("metadata {}: {n_head} heads do not divide the embedding length {n_embd}", k("attention.head_count"));
        }
        let head_dim_k = opt(g, &k("attention.key_length"), n_embd / n_head)?;
        let head_dim_v = opt(g, &k("attention.value_length"), n_embd / n_head)?;
        if head_dim_k == 0 || head_dim_v == 0 {
            bail!("metadata {}: the head size is 0 ({n_embd} / {n_head} heads)", k("attention.key_length"));
        }
        let n_vocab = match g.get_i64(&k("vocab_size")) {
            Some(v) if v > 0 => v as usize,
            _ => g.get("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len()).unwrap_or(0),
        };
        let rope_dims = match g.get_i64(&k("rope.dimension_count")) {
            Some(v) if v < 0 => bail!("metadata {} = {v} is out of range", k("rope.dimension_count")),
            Some(v) => v as usize,
            None => head_dim_k,
        };
        if rope_dims == 0 || rope_dims > head_dim_k || rope_dims % 2 != 0 {
            bail!("metadata {}: {rope_dims} does not fit the head size {head_dim_k}", k("rope.dimension_count"));
        }
        let rope_freq_scale = match g.get_f64(&k("rope.scaling.factor")) {
            Some(f) if f > 0.0 && g.get_str(&k("rope.scaling.type")).unwrap_or("linear") == "linear" => (1.0 / f) as f32,
            _ => 1.0,
        };
        let n_blocks = req(g, &k("block_count"))?;
        // trailing blocks that are multi-token-prediction (nextn) layers: not
        // run in the main pass, `draft-mtp` drafts with them
        let n_nextn = match g.get_i64(&k("nextn_predict_layers")) {
            None => 0,
            Some(v) if v >= 0 && (v as usize) < n_blocks => v as usize,
            Some(v) => bail!("metadata {} = {v}: the model has {n_blocks} blocks", k("nextn_predict_layers")),
        };
        let n_layer = n_blocks;
        let gemma = arch == "gemma3";
        let rope_base = g.get_f64(&k("rope.freq_base")).unwrap_or(10000.0) as f32;
        let swa_window = if gemma { g.get_i64(&k("attention.sliding_window")).unwrap_or(0).max(0) as usize } else { 0 };
        let swa_layers = if swa_window == 0 {
            vec![false; n_layer]
        } else if let Some(a) = g.get(&k("attention.sliding_window_pattern")).and_then(|v| v.as_array()) {
            if a.len() < n_layer {
                bail!("metadata {}: {} entries for {n_layer} layers", k("attention.sliding_window_pattern"), a.len());
            }
            a.iter().take(n_layer).map(|v| v.as_bool().unwrap_or(false)).collect()
        } else {
            // every `pattern`-th layer is global, the others slide
            let pattern = g.get_i64(&k("attention.sliding_window_pattern")).unwrap_or(6).max(0) as usize;
            (0..n_layer).map(|il| pattern == 0 || il % pattern < pattern - 1).collect()
        };
        let q_scale = gemma.then(|| {
            // gemma 3 27B scales by the model width per head, the others by the key length
            let d = if n_layer == 62 { n_embd / n_head } else { head_dim_k };
            1.0 / (d as f32).sqrt()
        });
        if n_vocab == 0 {
            bail!("metadata: no vocabulary ({} is absent and tokenizer.ggml.tokens is empty)", k("vocab_size"));
        }
        Ok(Config {
            embd_scale: gemma.then(|| (n_embd as f32).sqrt()),
            q_scale,
            ffn_act: if gemma { FfnAct::Gelu } else { FfnAct::Silu },
            swa_window,
            swa_layers,
            rope_base_swa: g.get_f64(&k("rope.freq_base_swa")).unwrap_or(10000.0) as f32,
            rope_freq_scale_swa: 1.0,
            logit_softcap: g.get_f64(&k("final_logit_softcapping")).unwrap_or(0.0) as f32,
            n_vocab,
            n_ctx_train: g.get_i64(&k("context_length")).unwrap_or(2048).max(1) as usize,
            n_embd,
            n_layer: n_layer - n_nextn,
            n_nextn,
            n_head,
            n_head_kv,
            head_dim_k,
            head_dim_v,
            n_ff: req(g, &k("feed_forward_length"))?,
            eps: g.get_f64(&k("attention.layer_norm_rms_epsilon")).unwrap_or(1e-5) as f32,
            rope_base,
            rope_freq_scale,
            rope_dims,
            rope_neox,
            arch,
        })
    }
}
