//! LoRA adapters in llama.cpp's GGUF format (`general.type = adapter`,
//! `adapter.type = lora`, tensors `<base tensor>.lora_a` / `.lora_b`), applied
//! unmerged: every projection with an adapter computes
//! `W x + scale * B (A x)` as llama.cpp's `build_lora_mm` does, the base
//! keeping its mmap'd (and repacked) weights.
//!
//! Shapes, in ggml order (ne0 first): `lora_a` is {n_in, r}, `lora_b`
//! {r, n_out}; for the token embedding the pair is transposed (`lora_a`
//! {r, n_vocab} is looked up by token, `lora_b` {r, n_embd} multiplies the
//! row), as llama.cpp's `build_inp_embd`. Scale = user scale * alpha / rank,
//! or the user scale when alpha is 0 (absent).

pub mod export;
pub mod extract;
pub mod random;

use crate::gguf::GgufFile;
use crate::model::Model;
use crate::ops::linear::{Adapter, AdapterSet};
use crate::ops::matmul::QMatrix;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const KEY_GENERAL_TYPE: &str = "general.type";
pub const KEY_ARCH: &str = "general.architecture";
pub const KEY_ADAPTER_TYPE: &str = "adapter.type";
pub const KEY_ALPHA: &str = "adapter.lora.alpha";
pub const SUFFIX_A: &str = ".lora_a";
pub const SUFFIX_B: &str = ".lora_b";
/// Norm vectors some converters add; llama.cpp skips them too.
const SKIPPED_SUFFIX: &str = "_norm.weight";
pub const TOKEN_EMBD: &str = "token_embd.weight";

/// One low-rank pair of an adapter file, named by the base tensor it adapts.
#[derive(Clone)]
pub struct Pair {
    pub name: String,
    pub a: QMatrix,
    pub b: QMatrix,
}

impl Pair {
    /// The rank: `lora_b`'s ne0.
    pub fn rank(&self) -> usize {
        self.b.cols
    }
}

/// A loaded adapter file.
pub struct LoraFile {
    pub path: PathBuf,
    pub arch: String,
    pub alpha: f32,
    pub pairs: Vec<Pair>,
}

/// What the flags asked for: a file and its user scale.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f32,
}

impl LoraFile {
    /// Read and check an adapter file (pairs complete, suffixes known).
    pub fn load(path: &Path) -> Result<Self> {
        let g = Arc::new(GgufFile::open(path)?);
        let p = path.display();
        let general = g.get_str(KEY_GENERAL_TYPE).unwrap_or("");
        if general != "adapter" {
            bail!("{p}: not a LoRA adapter: expected {KEY_GENERAL_TYPE} 'adapter', found '{general}'");
        }
        let ty = g.get_str(KEY_ADAPTER_TYPE).unwrap_or("");
        if ty != "lora" {
            bail!("{p}: expected {KEY_ADAPTER_TYPE} 'lora', found '{ty}'");
        }
        let arch = g.get_str(KEY_ARCH).unwrap_or("").to_string();
        let alpha = match g.get(KEY_ALPHA) {
            None => 0.0,
            Some(v) => match v.as_f64() {
                Some(a) if a.is_finite() => a as f32,
                _ => bail!("{p}: {KEY_ALPHA} is not a finite number"),
            },
        };
        let mut halves: BTreeMap<String, (Option<QMatrix>, Option<QMatrix>)> = BTreeMap::new();
        for t in &g.tensors {
            let (base, is_a) = if let Some(b) = t.name.strip_suffix(SUFFIX_A) {
                (b, true)
            } else if let Some(b) = t.name.strip_suffix(SUFFIX_B) {
                (b, false)
            } else if t.name.ends_with(SKIPPED_SUFFIX) {
                continue;
            } else {
                bail!("{p}: tensor '{}' has an unexpected suffix (expected {SUFFIX_A} or {SUFFIX_B})", t.name);
            };
            let m = QMatrix::from_file(&g, t).map_err(|e| anyhow::anyhow!("{p}: {e}"))?;
            let e = halves.entry(base.to_string()).or_default();
            if is_a {
                e.0 = Some(m);
            } else {
                e.1 = Some(m);
            }
        }
        let mut pairs = Vec::with_capacity(halves.len());
        for (name, h) in halves {
            let (Some(a), Some(b)) = h else {
                bail!("{p}: the LoRA pair for '{name}' is missing its {} half", if h.0.is_none() { "lora_a" } else { "lora_b" })
            };
            pairs.push(Pair { name, a, b });
        }
        if pairs.is_empty() {
            bail!("{p}: the adapter holds no LoRA tensors");
        }
        Ok(LoraFile { path: path.to_path_buf(), arch, alpha, pairs })
    }

    /// llama.cpp's scale for a pair of rank `rank`.
    pub fn scale(&self, user_scale: f32, rank: usize) -> f32 {
        if self.alpha != 0.0 {
            user_scale * self.alpha / rank as f32
        } else {
            user_scale
        }
    }
}

/// Load the adapter files with their user scales (`adapter_set` checks
/// them against a model).
pub fn load_all(specs: &[LoraSpec]) -> Result<Vec<(LoraFile, f32)>> {
    specs.iter().map(|s| LoraFile::load(&s.path).map(|f| (f, s.scale))).collect()
}

/// llama.cpp's shape rule for a pair on a base matrix of `n_in` columns and
/// `n_out` rows: a {n_in, r}, b {r, n_out}; for the token embedding the pair
/// is transposed (a {r, n_vocab} looked up by token, b {r, n_embd}).
pub fn pair_fits(pair: &Pair, n_in: usize, n_out: usize) -> bool {
    let (a, b) = (&pair.a, &pair.b);
    if pair.name == TOKEN_EMBD {
        b.rows == n_in && a.rows == n_out && a.cols == b.cols
    } else {
        a.cols == n_in && b.rows == n_out && a.rows == b.cols
    }
}

/// `f` fits `model` (architecture, names, shapes).
pub fn check(model: &Model, f: &LoraFile) -> Result<()> {
    let p = f.path.display();
    if f.arch != model.cfg.arch {
        bail!("{p}: adapter architecture '{}' does not match the model's '{}'", f.arch, model.cfg.arch);
    }
    let linears = model.linears();
    for pair in &f.pairs {
        let Some((_, lin)) = linears.iter().find(|(n, _)| *n == pair.name) else {
            bail!("{p}: LoRA tensor '{}' does not exist in the base model (a wrong base model?)", pair.name)
        };
        let (a, b, w) = (&pair.a, &pair.b, &lin.w);
        if !pair_fits(pair, w.cols, w.rows) {
            bail!(
                "{p}: tensor '{}': lora_a {{{}, {}}} and lora_b {{{}, {}}} do not fit the base's {{{}, {}}} (a wrong base model?)",
                pair.name,
                a.cols,
                a.rows,
                b.cols,
                b.rows,
                w.cols,
                w.rows
            );
        }
    }
    Ok(())
}

/// The adapters with their scales, attached to `model`'s projections (by
/// slot): what a session applies. Scale 0 leaves an adapter out.
pub fn adapter_set(model: &Model, adapters: &[(LoraFile, f32)]) -> Result<AdapterSet> {
    let linears = model.linears();
    let mut set = AdapterSet::new(linears.iter().map(|(_, l)| l.slot + 1).max().unwrap_or(0));
    // llama.cpp keeps its adapters in an unordered_map keyed by pointer, whose
    // iteration (libstdc++: newest first) is the order the products are
    // added in; the sums round the same way when ours go in that order
    for (f, user) in adapters.iter().rev() {
        check(model, f)?;
        for pair in &f.pairs {
            let scale = f.scale(*user, pair.rank());
            if scale == 0.0 {
                continue;
            }
            let (_, lin) = linears.iter().find(|(n, _)| *n == pair.name).expect("checked");
            set.push(lin.slot, Adapter::new(pair.a.clone(), pair.b.clone(), scale));
        }
    }
    Ok(set)
}

/// The adapters `specs` ask for, loaded, checked and attached to `model`
/// (None when there are none).
pub fn session_adapters(model: &Model, specs: &[LoraSpec]) -> Result<Option<Arc<AdapterSet>>> {
    if specs.is_empty() {
        return Ok(None);
    }
    Ok(Some(Arc::new(adapter_set(model, &load_all(specs)?)?)))
}

/// `--lora FNAME[,FNAME...]` (scale 1) and `--lora-scaled FNAME:SCALE[,...]`
/// as llama.cpp's common/arg.cpp reads them.
pub fn parse_specs(lora: &[std::ffi::OsString], scaled: &[std::ffi::OsString]) -> Result<Vec<LoraSpec>> {
    let mut out = Vec::new();
    for v in lora {
        for p in crate::cli::flags::split_paths(v) {
            out.push(LoraSpec { path: p, scale: 1.0 });
        }
    }
    for v in scaled {
        for item in crate::cli::flags::split_paths(v) {
            let bytes = crate::cli::flags::os_bytes(item.as_os_str());
            let Some(colon) = bytes.iter().rposition(|&c| c == b':') else { bail!("--lora-scaled: expected FNAME:SCALE, found '{}'", item.display()) };
            let s = String::from_utf8_lossy(&bytes[colon + 1..]).into_owned();
            let scale: f32 = match s.trim().parse() {
                Ok(v) if f32::is_finite(v) => v,
                _ => bail!("--lora-scaled: '{s}' is not a number (expected FNAME:SCALE)"),
            };
            out.push(LoraSpec { path: crate::cli::flags::path_of_bytes(&bytes[..colon]), scale });
        }
    }
    Ok(out)
}
