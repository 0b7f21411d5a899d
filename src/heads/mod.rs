//! Heads grafted onto a model, kept in a sidecar GGUF (`rllama graft -o
//! HEADS.gguf`, loaded with `--spec-heads HEADS.gguf`); the model file stays
//! untouched and llama.cpp-loadable.
//!
//! An exit head after layer L maps the hidden state after the first L
//! blocks to an estimate of the final hidden state (an affine map fitted in
//! closed form, a "tuned lens"), then the model's own output norm and output
//! matrix give logits.
//!
//! File layout (GGUF):
//! - `general.type` = `heads`, `general.architecture` = the model's
//! - `heads.n_embd`, `heads.n_layer`, `heads.n_vocab` (u32): the model's sizes
//! - `heads.model_fingerprint` (string): a hash of the model's tensor names,
//!   shapes and token-embedding bytes (a heads file refuses other models)
//! - `heads.exit_layers` (u32 array): the L of each exit head
//! - `heads.calibration_tokens` (u32), `heads.ridge` (f32): how they were fitted
//! - `heads.draft_vocab` (u32 array): token ids in drafting priority (the
//!   calibration text's by frequency, then the rest by id, as BPE ids
//!   roughly follow merge frequency); drafts use the first K
//!   (`--spec-draft-vocab K`), so the output matrix they multiply is K rows
//! - tensors `exit.{L}.weight` (F32, {n_embd, n_embd}: row j gives output
//!   dimension j) and `exit.{L}.bias` (F32, {n_embd})

pub mod graft;

use crate::gguf::{GgmlType, GgufFile, Value};
use crate::model::Model;
use crate::model::{Rounding, Scratch};
use crate::ops::linear::Linear;
use crate::ops::matmul::{Batch, QMatrix};
use anyhow::{bail, Context, Result};
use std::path::Path;

pub const KEY_TYPE: &str = "general.type";
pub const TYPE_HEADS: &str = "heads";
pub const KEY_ARCH: &str = "general.architecture";
pub const KEY_N_EMBD: &str = "heads.n_embd";
pub const KEY_N_LAYER: &str = "heads.n_layer";
pub const KEY_N_VOCAB: &str = "heads.n_vocab";
pub const KEY_FINGERPRINT: &str = "heads.model_fingerprint";
pub const KEY_EXIT_LAYERS: &str = "heads.exit_layers";
pub const KEY_CALIB_TOKENS: &str = "heads.calibration_tokens";
pub const KEY_RIDGE: &str = "heads.ridge";
pub const KEY_DRAFT_VOCAB: &str = "heads.draft_vocab";
/// Draft vocabulary kept in a heads file at most.
pub const DRAFT_VOCAB_MAX: usize = 65536;

/// Token ids in drafting priority: those of `tokens` by descending count
/// (ties by id), then the others by id; at most `max` of `n_vocab`.
pub fn vocab_order(tokens: &[u32], n_vocab: usize, max: usize) -> Vec<u32> {
    let mut count = vec![0u32; n_vocab];
    for &t in tokens {
        if let Some(c) = count.get_mut(t as usize) {
            *c += 1;
        }
    }
    let mut seen: Vec<u32> = (0..n_vocab as u32).filter(|&t| count[t as usize] > 0).collect();
    seen.sort_by_key(|&t| (std::cmp::Reverse(count[t as usize]), t));
    seen.extend((0..n_vocab as u32).filter(|&t| count[t as usize] == 0));
    seen.truncate(max);
    seen
}

/// Bytes of the token embedding hashed into the fingerprint.
const FINGERPRINT_BYTES: usize = 1 << 16;

/// A hash identifying the model's weights (names, shapes, the first bytes
/// of the token embedding).
pub fn fingerprint(g: &GgufFile) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |b: &[u8]| {
        for &x in b {
            h = (h ^ x as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for t in &g.tensors {
        eat(t.name.as_bytes());
        for d in &t.dims {
            eat(&d.to_le_bytes());
        }
    }
    if let Some(t) = g.tensor("token_embd.weight") {
        let d = g.tensor_data(t);
        eat(&d[..d.len().min(FINGERPRINT_BYTES)]);
    }
    format!("{h:016x}")
}

/// One exit head.
pub struct ExitHead {
    /// Blocks run before it.
    pub layer: usize,
    /// The affine map (rows: output dimensions) and its bias.
    pub map: Linear,
}

impl ExitHead {
    /// This exit's logits for one hidden row `x` (after `layer` blocks): the
    /// map into `mapped`, then the model's output norm and `output` (the
    /// model's own matrix or a draft-vocabulary cut of it). `s` is left
    /// holding the mapped row, so `model.head_with` can add another output.
    pub fn logits(&self, model: &Model, x: &[f32], output: &Linear, mapped: &mut Vec<f32>, s: &mut Scratch, logits: &mut Vec<f32>) {
        mapped.resize(model.cfg.n_embd, 0.0);
        self.map.forward(x, 1, mapped, &mut Default::default(), Batch::Whole);
        s.set_hidden(mapped, 1);
        model.head_with(output, s, Rounding::AsSteps, logits);
    }
}

/// The heads of one model (exits in layer order).
pub struct Heads {
    pub exits: Vec<ExitHead>,
    /// Token ids in drafting priority (see `heads.draft_vocab`).
    pub vocab: Vec<u32>,
}

impl Heads {
    /// Load `path` for `model`: one error line when it is not a heads file,
    /// or its heads were fitted for another model.
    pub fn load(path: &Path, model: &Model) -> Result<Heads> {
        let g = GgufFile::open(path).with_context(|| format!("cannot open heads file {}", path.display()))?;
        let name = path.display();
        if g.get_str(KEY_TYPE) != Some(TYPE_HEADS) {
            bail!("{name} is not a heads file (general.type is not '{TYPE_HEADS}'; write one with rllama graft)");
        }
        let c = &model.cfg;
        let want = [(KEY_N_EMBD, c.n_embd), (KEY_N_LAYER, c.n_layer), (KEY_N_VOCAB, c.n_vocab)];
        for (k, v) in want {
            if g.get_i64(k) != Some(v as i64) {
                bail!("{name}: heads for another model ({k} is {:?}, the model's is {v})", g.get_i64(k));
            }
        }
        if g.get_str(KEY_ARCH) != Some(c.arch.as_str()) || g.get_str(KEY_FINGERPRINT) != Some(fingerprint(&model.g).as_str()) {
            bail!("{name}: heads fitted for another model (architecture or weights differ; run rllama graft on this model)");
        }
        let layers: Vec<usize> = match g.get(KEY_EXIT_LAYERS).and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .map(|v| v.as_i64().unwrap_or(-1))
                .map(|l| if l > 0 && (l as usize) < c.n_layer { Ok(l as usize) } else { bail!("{name}: exit layer {l} out of range") })
                .collect::<Result<_>>()?,
            None => bail!("{name}: no {KEY_EXIT_LAYERS}"),
        };
        let d = c.n_embd;
        let mut exits = Vec::new();
        for l in layers {
            let (wn, bn) = (format!("exit.{l}.weight"), format!("exit.{l}.bias"));
            let (Some(w), Some(b)) = (g.tensor(&wn), g.tensor(&bn)) else { bail!("{name}: missing {wn} or {bn}") };
            if w.ty != GgmlType::F32 || b.ty != GgmlType::F32 || w.dims != [d as u64, d as u64] || b.dims != [d as u64] {
                bail!("{name}: {wn} / {bn} must be F32 of {{{d}, {d}}} / {{{d}}}");
            }
            let m = QMatrix::from_bytes(&wn, GgmlType::F32, d, d, g.tensor_data(w))?;
            let bias: Vec<f32> = g.tensor_data(b).chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect();
            exits.push(ExitHead { layer: l, map: Linear::with_bias(m, Some(bias))? });
        }
        let vocab: Vec<u32> = match g.get(KEY_DRAFT_VOCAB).and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(|v| v.as_i64()).filter(|&t| t >= 0 && (t as usize) < c.n_vocab).map(|t| t as u32).collect(),
            None => Vec::new(),
        };
        exits.sort_by_key(|e| e.layer);
        Ok(Heads { exits, vocab })
    }

    /// The model's output matrix cut to the first `k` tokens of the draft
    /// vocabulary (and their ids); None for the whole vocabulary (k 0, or
    /// not fewer than the model's).
    pub fn draft_output(&self, model: &Model, k: usize) -> Result<Option<(Linear, Vec<u32>)>> {
        let k = k.min(self.vocab.len());
        if k == 0 || k >= model.cfg.n_vocab {
            return Ok(None);
        }
        let ids: Vec<u32> = self.vocab.iter().copied().filter(|&t| (t as usize) < model.cfg.n_vocab).take(k).collect();
        let out = &model.output().w;
        let mut bytes = Vec::with_capacity(k * out.row_bytes);
        for &t in &ids {
            bytes.extend_from_slice(out.row(t as usize));
        }
        let mut m = QMatrix::from_bytes("draft_output", out.ty, out.cols, k, &bytes)?;
        m.pack();
        Ok(Some((Linear::new(m), ids)))
    }

    /// The exit head after `layer` blocks, if the file has one.
    pub fn exit(&self, layer: usize) -> Option<&ExitHead> {
        self.exits.iter().find(|e| e.layer == layer)
    }
}
