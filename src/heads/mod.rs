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
//! - `heads.model_probe` (f32 array): the first columns of a few token
//!   embedding rows, dequantized; when the fingerprint differs, a heads file
//!   still serves the model if its probe agrees (cosine >= 0.9): the same
//!   weights in another quantization, so one graft serves a whole ladder
//! - `heads.exit_layers` (u32 array): the L of each exit head
//! - `heads.exit_tails` (u32 array, optional, parallel to `exit_layers`):
//!   T > 0 for an exit that also runs the model's last T blocks on the
//!   hidden state after the first L (a layer-skipping draft: blocks
//!   `0..L` and `n_layer-T..n_layer`, the middle ones skipped); absent = 0
//! - `heads.exit_agreement` (f32 array, optional, parallel): each head's
//!   held-out top-1 agreement with the full model (the drafting policy's
//!   prior acceptance)
//! - `heads.mtp_acceptance` (f32 array, optional): the MTP head's held-out
//!   acceptance at draft positions 1, 2, ..., each given the ones before it
//!   stood (the drafting policy's prior for that head)
//! - `heads.calibration_tokens` (u32), `heads.ridge` (f32): how they were fitted
//! - `heads.draft_vocab` (u32 array): token ids in drafting priority (the
//!   calibration text's by frequency, then the rest by id, as BPE ids
//!   roughly follow merge frequency); drafts use the first K
//!   (`--spec-draft-vocab K`), so the output matrix they multiply is K rows
//! - `heads.draft_vocab_size` (u32, optional): the K the MTP head drafts
//!   over when no `--spec-draft-vocab` is given, chosen by its graft on the
//!   held-out answers (see `draft_rows`); absent (and for exit heads),
//!   drafts use `DEFAULT_DRAFT_VOCAB`
//! - an MTP head (`rllama graft --mtp`): `{arch}.nextn_predict_layers` = 1
//!   and block `n_layer` in llama.cpp's nextn layout (`blk.{n_layer}.nextn.*`
//!   and the block's `attn_*`/`ffn_*` tensors; see `model::nextn`)
//! - tensors `exit.{S}.weight` (F32, {n_embd, n_embd}: row j gives output
//!   dimension j) and `exit.{S}.bias` (F32, {n_embd}), S = `L`, or `L+T`
//!   for an exit with a tail

pub mod draft_rows;
pub mod graft;
pub mod mtp;
pub mod requests;
#[cfg(feature = "train")]
pub mod train;
#[cfg(feature = "train")]
mod train_ops;

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
pub const KEY_PROBE: &str = "heads.model_probe";
pub const KEY_EXIT_LAYERS: &str = "heads.exit_layers";
pub const KEY_EXIT_TAILS: &str = "heads.exit_tails";
pub const KEY_EXIT_AGREEMENT: &str = "heads.exit_agreement";
pub const KEY_MTP_ACCEPTANCE: &str = "heads.mtp_acceptance";
pub const KEY_CALIB_TOKENS: &str = "heads.calibration_tokens";
pub const KEY_RIDGE: &str = "heads.ridge";
pub const KEY_DRAFT_VOCAB: &str = "heads.draft_vocab";
pub const KEY_DRAFT_VOCAB_SIZE: &str = "heads.draft_vocab_size";
/// Draft vocabulary kept in a heads file at most.
pub const DRAFT_VOCAB_MAX: usize = 65536;
/// Tokens drafts use without `--spec-draft-vocab` or `heads.draft_vocab_size`.
pub const DEFAULT_DRAFT_VOCAB: usize = 16384;

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

/// A draft vocabulary's rows of the output matrix and their token ids.
pub type DraftOutput = (Linear, Vec<u32>);

/// The rows of the model's output matrix for tokens `ids` (in range), in
/// that order, as a matrix of their own: a draft vocabulary's logits.
pub fn output_rows(model: &Model, ids: &[u32]) -> Result<Linear> {
    let out = &model.output().w;
    let mut bytes = Vec::with_capacity(ids.len() * out.row_bytes);
    for &t in ids {
        bytes.extend_from_slice(out.row(t as usize));
    }
    let mut m = QMatrix::from_bytes("draft_output", out.ty, out.cols, ids.len(), &bytes)?;
    m.pack();
    Ok(Linear::new(m))
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

/// Token embedding rows in the probe (spread over the vocabulary).
const PROBE_ROWS: usize = 64;
/// Leading columns of each probe row.
const PROBE_COLS: usize = 256;
/// Least cosine between a heads file's probe and the model's for the model
/// to count as the same weights in another quantization (Qwen 1.5B's
/// Q8_0, IQ4_XS and Q2_K of its Q4_K_M pass; unrelated weights give ~0).
pub const PROBE_MIN_COS: f64 = 0.9;

/// The model's embedding probe (see `KEY_PROBE`).
pub fn probe(model: &Model) -> Result<Vec<f32>> {
    let c = &model.cfg;
    let rows = PROBE_ROWS.min(c.n_vocab);
    let toks: Vec<u32> = (0..rows).map(|i| (i * c.n_vocab / rows) as u32).collect();
    let mut s = Scratch::default();
    model.embed(&toks, &mut s)?;
    let cols = PROBE_COLS.min(c.n_embd);
    Ok(s.x.chunks(c.n_embd).flat_map(|r| r[..cols].iter().copied()).collect())
}

/// Cosine of two probes (0 when their lengths differ).
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
    dot(a, b) / (dot(a, a) * dot(b, b)).sqrt().max(f64::MIN_POSITIVE)
}

/// Which blocks an exit runs: the first `layer`, then the last `tail`
/// (written `L` or `L+T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ExitSpec {
    pub layer: usize,
    pub tail: usize,
}

impl ExitSpec {
    /// Blocks a draft token runs through.
    pub fn blocks(&self) -> usize {
        self.layer + self.tail
    }
    /// Whether it fits a model of `n_layer` blocks (at least one block
    /// first, at least one skipped).
    pub fn check(&self, n_layer: usize) -> Result<()> {
        if self.layer == 0 || self.layer + self.tail >= n_layer {
            bail!("{self}: an exit runs 1..{} of the model's {n_layer} blocks (the first L, plus the last T in L+T)", n_layer - 1);
        }
        Ok(())
    }
}

impl std::fmt::Display for ExitSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.tail {
            0 => write!(f, "{}", self.layer),
            t => write!(f, "{}+{t}", self.layer),
        }
    }
}

impl std::str::FromStr for ExitSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |x: &str| x.trim().parse::<usize>().map_err(|_| format!("'{s}': expected L or L+T (blocks first, blocks last)"));
        match s.split_once('+') {
            Some((l, t)) => Ok(ExitSpec { layer: num(l)?, tail: num(t)? }),
            None => Ok(ExitSpec { layer: num(s)?, tail: 0 }),
        }
    }
}

/// One exit head.
pub struct ExitHead {
    /// Blocks run before it: the first `layer`, then the last `tail`.
    pub layer: usize,
    pub tail: usize,
    /// Held-out top-1 agreement with the full model the graft measured.
    pub agree: Option<f64>,
    /// The affine map (rows: output dimensions) and its bias.
    pub map: Linear,
}

impl ExitHead {
    /// This exit's logits for one hidden row `x` (after `layer` blocks): the
    /// map into `mapped`, then the model's output norm and `output` (the
    /// model's own matrix or a draft-vocabulary cut of it). `s` is left
    /// holding the mapped row, so `model.head_with` can add another output.
    pub fn spec(&self) -> ExitSpec {
        ExitSpec { layer: self.layer, tail: self.tail }
    }

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
    /// How many of them drafts use by default (`heads.draft_vocab_size`).
    pub vocab_size: Option<usize>,
    /// A grafted multi-token-prediction head (`rllama graft --mtp`).
    pub mtp: Option<crate::model::nextn::Nextn>,
    /// The MTP head's held-out acceptance per draft position (see
    /// `heads.mtp_acceptance`; empty when the file has none).
    pub mtp_accept: Vec<f64>,
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
            match g.get_i64(k) {
                Some(h) if h == v as i64 => {}
                Some(h) => bail!("{name}: heads for another model ({k} is {h}, the model's is {v})"),
                None => bail!("{name}: heads for another model ({k} is missing, the model's is {v})"),
            }
        }
        let same_file = g.get_str(KEY_FINGERPRINT) == Some(fingerprint(&model.g).as_str());
        let same_weights = || -> Result<bool> {
            let Some(a) = g.get(KEY_PROBE).and_then(Value::as_array) else { return Ok(false) };
            let theirs: Vec<f32> = a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect();
            Ok(cosine(&theirs, &probe(model)?) >= PROBE_MIN_COS)
        };
        if g.get_str(KEY_ARCH) != Some(c.arch.as_str()) || !(same_file || same_weights()?) {
            bail!("{name}: heads fitted for another model (architecture or weights differ; run rllama graft on this model)");
        }
        let ints = |key: &str| -> Option<Vec<i64>> { g.get(key).and_then(Value::as_array).map(|a| a.iter().map(|v| v.as_i64().unwrap_or(-1)).collect()) };
        let mtp_key = format!("{}.nextn_predict_layers", c.arch);
        let n_mtp = g.get_i64(&mtp_key).unwrap_or(0);
        let layers = match ints(KEY_EXIT_LAYERS) {
            Some(l) => l,
            None if n_mtp > 0 => Vec::new(),
            None => bail!("{name}: no {KEY_EXIT_LAYERS} and no MTP head"),
        };
        let agree: Vec<Option<f64>> = match g.get(KEY_EXIT_AGREEMENT).and_then(Value::as_array) {
            Some(a) if a.len() == layers.len() => a.iter().map(|v| v.as_f64().filter(|x| (0.0..=1.0).contains(x))).collect(),
            _ => vec![None; layers.len()],
        };
        let tails = ints(KEY_EXIT_TAILS).unwrap_or_else(|| vec![0; layers.len()]);
        if tails.len() != layers.len() {
            bail!("{name}: {KEY_EXIT_TAILS} has {} entries for {} exits", tails.len(), layers.len());
        }
        let mut specs = Vec::new();
        for (&l, &t) in layers.iter().zip(&tails) {
            if l <= 0 || t < 0 || (l + t) as usize >= c.n_layer {
                bail!("{name}: exit layer {l} (tail {t}) out of range for {} layers", c.n_layer);
            }
            specs.push(ExitSpec { layer: l as usize, tail: t as usize });
        }
        let d = c.n_embd;
        let mut exits = Vec::new();
        for (spec, agree) in specs.into_iter().zip(agree) {
            let (wn, bn) = (format!("exit.{spec}.weight"), format!("exit.{spec}.bias"));
            let (Some(w), Some(b)) = (g.tensor(&wn), g.tensor(&bn)) else { bail!("{name}: missing {wn} or {bn}") };
            if w.ty != GgmlType::F32 || b.ty != GgmlType::F32 || w.dims != [d as u64, d as u64] || b.dims != [d as u64] {
                bail!("{name}: {wn} / {bn} must be F32 of {{{d}, {d}}} / {{{d}}}");
            }
            let m = QMatrix::from_bytes(&wn, GgmlType::F32, d, d, g.tensor_data(w))?;
            let bias: Vec<f32> = g.tensor_data(b).chunks_exact(4).map(|x| f32::from_le_bytes([x[0], x[1], x[2], x[3]])).collect();
            exits.push(ExitHead { layer: spec.layer, tail: spec.tail, agree, map: Linear::with_bias(m, Some(bias))? });
        }
        let vocab: Vec<u32> = match g.get(KEY_DRAFT_VOCAB).and_then(Value::as_array) {
            Some(a) => a.iter().filter_map(|v| v.as_i64()).filter(|&t| t >= 0 && (t as usize) < c.n_vocab).map(|t| t as u32).collect(),
            None => Vec::new(),
        };
        let vocab_size = match g.get(KEY_DRAFT_VOCAB_SIZE) {
            None => None,
            Some(v) => match v.as_i64() {
                Some(k) if k > 0 && k as usize <= vocab.len() => Some(k as usize),
                _ => bail!("{name}: {KEY_DRAFT_VOCAB_SIZE} must be 1..={} (the length of {KEY_DRAFT_VOCAB})", vocab.len()),
            },
        };
        exits.sort_by_key(|e| e.spec());
        let mtp_accept = match g.get(KEY_MTP_ACCEPTANCE).and_then(Value::as_array) {
            Some(a) if n_mtp == 1 => a.iter().map_while(|v| v.as_f64().filter(|x| (0.0..=1.0).contains(x))).collect(),
            _ => Vec::new(),
        };
        let mtp = match n_mtp {
            0 => None,
            1 => {
                let g = std::sync::Arc::new(g);
                Some(crate::model::nextn::Nextn::load(&g, c, c.n_layer).with_context(|| format!("{name}: the MTP head"))?)
            }
            k => bail!("{name}: {mtp_key} = {k}: one MTP head is supported"),
        };
        Ok(Heads { exits, vocab, vocab_size, mtp, mtp_accept })
    }

    /// Rows the MTP head drafts over: `flag` (`--spec-draft-vocab`) when
    /// given, else the size its graft weighed, else `DEFAULT_DRAFT_VOCAB`.
    pub fn mtp_draft_rows(&self, flag: Option<usize>) -> usize {
        flag.or(self.vocab_size).unwrap_or(DEFAULT_DRAFT_VOCAB)
    }

    /// Rows exit heads (early-exit drafts, lossy exits) use: `flag` when
    /// given, else `DEFAULT_DRAFT_VOCAB` (the weighed size is the MTP head's).
    pub fn exit_draft_rows(&self, flag: Option<usize>) -> usize {
        flag.unwrap_or(DEFAULT_DRAFT_VOCAB)
    }

    /// The model's output matrix cut to the first `k` tokens of the draft
    /// vocabulary (and their ids); None for the whole vocabulary (k 0, or
    /// not fewer than the model's).
    pub fn draft_output(&self, model: &Model, k: usize) -> Result<Option<DraftOutput>> {
        let k = k.min(self.vocab.len());
        if k == 0 || k >= model.cfg.n_vocab {
            return Ok(None);
        }
        let ids: Vec<u32> = self.vocab.iter().copied().filter(|&t| (t as usize) < model.cfg.n_vocab).take(k).collect();
        Ok(Some((output_rows(model, &ids)?, ids)))
    }

    /// The exit head after `layer` blocks (no tail), if the file has one.
    pub fn exit(&self, layer: usize) -> Option<&ExitHead> {
        self.exits.iter().find(|e| e.layer == layer && e.tail == 0)
    }
}
