//! llama.cpp's flags that have no feature behind them in rllama, so a
//! llama-cli / llama-perplexity command line still parses: each is accepted
//! with no effect (devices, thread pinning, memory mapping, logging: the
//! output on a CPU does not change), accepted only at llama.cpp's neutral
//! value (samplers rllama lacks, the KV cache type), or refused in one
//! `error:` line that names it as llama.cpp's (grammars, RoPE overrides,
//! downloads, ...) instead of clap's "invalid argument" or, for
//! single-dash spellings such as `-ctk`, a misread cluster of short flags.
//!
//! One table (`LLAMA_FLAGS`); `add` puts its flags on a command (those the
//! command defines itself keep their own meaning), `check` judges the parsed
//! values.

use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// What rllama does with one of llama.cpp's flags.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Accepted, no effect on the output.
    NoEffect,
    /// Accepted at its neutral value only.
    Only(Neutral),
    /// Refused: a feature rllama does not have (with what to do instead, if anything).
    Unsupported(&'static str),
}

/// The values at which a flag does nothing (llama.cpp's defaults).
#[derive(Clone, Copy, Debug)]
pub enum Neutral {
    Text(&'static str),
    Num(f64),
    /// Any number <= this (e.g. top-n-sigma: off at <= 0).
    AtMost(f64),
}

impl Neutral {
    fn holds(self, v: &str) -> bool {
        let num = v.trim().parse::<f64>().ok();
        match self {
            Neutral::Text(t) => v == t,
            Neutral::Num(x) => num == Some(x),
            Neutral::AtMost(x) => num.is_some_and(|n| n <= x),
        }
    }

    fn describe(self) -> String {
        match self {
            Neutral::Text(t) => t.to_string(),
            Neutral::Num(x) => x.to_string(),
            Neutral::AtMost(x) => format!("<= {x}"),
        }
    }
}

/// One flag: its long name, other spellings (llama.cpp's single-dash ones
/// included, without dashes), a short letter, the value it takes.
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub long: &'static str,
    pub aliases: &'static [&'static str],
    pub short: Option<char>,
    pub value: Option<&'static str>,
    pub kind: Kind,
}

const fn flag(long: &'static str, aliases: &'static [&'static str], value: Option<&'static str>, kind: Kind) -> Flag {
    Flag { long, aliases, short: None, value, kind }
}

const fn short(c: char, f: Flag) -> Flag {
    Flag { short: Some(c), ..f }
}

use Kind::{NoEffect, Only, Unsupported};

const N: Option<&str> = Some("N");
const X: Option<&str> = Some("X");
const NONE: Option<&str> = None;
const KV_F16: &str = "rllama's KV cache is f16, llama.cpp's default";
const NO_SAMPLER: &str = "rllama samples with the penalties, top-k, top-p, min-p and temperature";
const NO_ROPE: &str = "rllama uses the model file's RoPE settings";
const LOCAL: &str = "rllama runs local GGUF files: download it and give -m FILE";

/// llama.cpp's common flags (common/arg.cpp) that rllama's generation and
/// perplexity front-ends have no field for.
pub const LLAMA_FLAGS: &[Flag] = &[
    // memory and loading (rllama maps the file and repacks what it runs)
    flag("mlock", &[], NONE, NoEffect),
    flag("no-mmap", &[], NONE, NoEffect),
    flag("mmap", &[], NONE, NoEffect),
    flag("load-mode", &["lm"], X, NoEffect),
    flag("lazy-mode", &["lzm"], X, NoEffect),
    flag("direct-io", &["dio"], NONE, NoEffect),
    flag("no-direct-io", &["ndio"], NONE, NoEffect),
    flag("check-tensors", &[], NONE, NoEffect),
    flag("repack", &[], NONE, NoEffect),
    flag("no-repack", &["nr"], NONE, NoEffect),
    flag("no-host", &[], NONE, NoEffect),
    // devices and offloading (CPU only)
    flag("device", &["dev"], X, NoEffect),
    flag("split-mode", &["sm"], X, NoEffect),
    flag("tensor-split", &["ts"], X, NoEffect),
    flag("main-gpu", &["mg"], X, NoEffect),
    flag("override-tensor", &["ot"], X, NoEffect),
    flag("cpu-moe", &["cmoe"], NONE, NoEffect),
    flag("n-cpu-moe", &["ncmoe"], N, NoEffect),
    flag("no-kv-offload", &["nkvo"], NONE, NoEffect),
    flag("kv-offload", &["kvo"], NONE, NoEffect),
    flag("no-op-offload", &[], NONE, NoEffect),
    flag("op-offload", &[], NONE, NoEffect),
    flag("fit", &[], X, NoEffect),
    flag("fit-target", &["fitt"], X, NoEffect),
    flag("fit-ctx", &["fitc"], N, NoEffect),
    flag("gpu-layers-draft", &["ngld", "n-gpu-layers-draft", "spec-draft-ngl"], N, NoEffect),
    flag("device-draft", &["devd", "spec-draft-device"], X, NoEffect),
    // threads (rllama's own pool; -t sets its size)
    flag("numa", &[], X, NoEffect),
    short('C', flag("cpu-mask", &[], X, NoEffect)),
    flag("cpu-range", &["Cr"], X, NoEffect),
    flag("cpu-strict", &[], X, NoEffect),
    flag("prio", &[], N, NoEffect),
    flag("poll", &[], N, NoEffect),
    flag("cpu-mask-batch", &["Cb"], X, NoEffect),
    flag("cpu-range-batch", &["Crb"], X, NoEffect),
    flag("cpu-strict-batch", &[], X, NoEffect),
    flag("prio-batch", &[], N, NoEffect),
    flag("poll-batch", &[], N, NoEffect),
    // the KV cache: one sequence, its whole context kept, f16
    flag("cache-type-k", &["ctk"], X, Only(Neutral::Text("f16"))),
    flag("cache-type-v", &["ctv"], X, Only(Neutral::Text("f16"))),
    flag("cache-type-k-draft", &["ctkd", "spec-draft-type-k"], X, Only(Neutral::Text("f16"))),
    flag("cache-type-v-draft", &["ctvd", "spec-draft-type-v"], X, Only(Neutral::Text("f16"))),
    flag("kv-unified", &["kvu"], NONE, NoEffect),
    flag("no-kv-unified", &["no-kvu"], NONE, NoEffect),
    flag("swa-full", &[], NONE, NoEffect),
    flag("parallel", &["np"], N, NoEffect),
    flag("cont-batching", &["cb"], NONE, NoEffect),
    flag("no-cont-batching", &["nocb"], NONE, NoEffect),
    flag("defrag-thold", &["dt"], N, NoEffect),
    flag("no-context-shift", &[], NONE, NoEffect),
    flag("keep", &[], N, NoEffect),
    flag("context-shift", &[], NONE, Unsupported("generation stops at the context size, as llama.cpp's default")),
    // logging and timings
    flag("log-file", &[], Some("FNAME"), NoEffect),
    flag("log-colors", &[], X, NoEffect),
    flag("log-prefix", &[], NONE, NoEffect),
    flag("no-log-prefix", &[], NONE, NoEffect),
    flag("log-timestamps", &[], NONE, NoEffect),
    flag("no-log-timestamps", &[], NONE, NoEffect),
    short('v', flag("verbose", &["log-verbose"], NONE, NoEffect)),
    flag("verbosity", &["lv", "log-verbosity"], N, NoEffect),
    flag("perf", &[], NONE, NoEffect),
    flag("no-perf", &[], NONE, NoEffect),
    flag("warmup", &[], NONE, NoEffect),
    flag("offline", &[], NONE, NoEffect),
    // samplers rllama lacks: accepted while off
    flag("typical", &["typical-p"], N, Only(Neutral::Num(1.0))),
    flag("mirostat", &[], N, Only(Neutral::Num(0.0))),
    flag("mirostat-lr", &[], N, NoEffect),
    flag("mirostat-ent", &[], N, NoEffect),
    flag("dry-multiplier", &[], N, Only(Neutral::Num(0.0))),
    flag("dry-base", &[], N, NoEffect),
    flag("dry-allowed-length", &[], N, NoEffect),
    flag("dry-penalty-last-n", &[], N, NoEffect),
    flag("dry-sequence-breaker", &[], X, NoEffect),
    flag("xtc-probability", &[], N, Only(Neutral::Num(0.0))),
    flag("xtc-threshold", &[], N, NoEffect),
    flag("top-nsigma", &["top-n-sigma"], N, Only(Neutral::AtMost(0.0))),
    flag("dynatemp-range", &[], N, Only(Neutral::Num(0.0))),
    flag("dynatemp-exp", &[], N, NoEffect),
    flag("samplers", &[], X, Unsupported(NO_SAMPLER)),
    flag("sampling-seq", &["sampler-seq"], X, Unsupported(NO_SAMPLER)),
    short('l', flag("logit-bias", &[], X, Unsupported(NO_SAMPLER))),
    flag("grammar", &[], X, Unsupported("no grammar-constrained sampling")),
    flag("grammar-file", &[], X, Unsupported("no grammar-constrained sampling")),
    short('j', flag("json-schema", &[], X, Unsupported("no grammar-constrained sampling"))),
    flag("json-schema-file", &["jf"], X, Unsupported("no grammar-constrained sampling")),
    // the model's own settings
    flag("rope-scaling", &[], X, Unsupported(NO_ROPE)),
    flag("rope-scale", &[], N, Unsupported(NO_ROPE)),
    flag("rope-freq-base", &[], N, Unsupported(NO_ROPE)),
    flag("rope-freq-scale", &[], N, Unsupported(NO_ROPE)),
    flag("yarn-orig-ctx", &[], N, Unsupported(NO_ROPE)),
    flag("yarn-ext-factor", &[], N, Unsupported(NO_ROPE)),
    flag("yarn-attn-factor", &[], N, Unsupported(NO_ROPE)),
    flag("yarn-beta-slow", &[], N, Unsupported(NO_ROPE)),
    flag("yarn-beta-fast", &[], N, Unsupported(NO_ROPE)),
    flag("grp-attn-n", &["gan"], N, Unsupported("no self-extend")),
    flag("grp-attn-w", &["gaw"], N, Unsupported("no self-extend")),
    flag("override-kv", &[], X, Unsupported("rllama reads the model file's metadata as it is")),
    flag("control-vector", &[], X, Unsupported("no control vectors (LoRA adapters: --lora)")),
    flag("control-vector-scaled", &[], X, Unsupported("no control vectors (LoRA adapters: --lora)")),
    flag("control-vector-layer-range", &[], X, Unsupported("no control vectors (LoRA adapters: --lora)")),
    // inputs rllama does not take
    flag("hf-repo", &["hf", "hfr"], X, Unsupported(LOCAL)),
    flag("hf-file", &["hff"], X, Unsupported(LOCAL)),
    flag("model-url", &["mu"], X, Unsupported(LOCAL)),
    flag("docker-repo", &["dr"], X, Unsupported(LOCAL)),
    flag("hf-repo-draft", &["hfd", "hfrd", "spec-draft-hf"], X, Unsupported(LOCAL)),
    flag("mmproj", &["mm"], X, Unsupported("text models only")),
    flag("image", &["audio", "video"], X, Unsupported("text models only")),
    flag("binary-file", &["bf"], X, Unsupported("give the prompt as text (-p, -f)")),
    flag("prompt-cache", &[], X, Unsupported("no prompt cache files")),
    flag("prompt-cache-all", &[], NONE, Unsupported("no prompt cache files")),
    flag("prompt-cache-ro", &[], NONE, Unsupported("no prompt cache files")),
    flag("rpc", &[], X, Unsupported("rllama runs on this machine's CPU")),
];

/// `cmd` with the table's flags that it does not define itself (hidden from
/// the flag list; one paragraph of its help names them).
pub fn add(mut cmd: Command, flags: &'static [Flag]) -> Command {
    let taken = |cmd: &Command, f: &Flag| {
        let names: Vec<&str> = std::iter::once(f.long).chain(f.aliases.iter().copied()).collect();
        cmd.get_arguments().any(|a| {
            let mut own = a.get_long().into_iter().chain(a.get_all_aliases().unwrap_or_default());
            own.any(|n| names.contains(&n)) || (f.short.is_some() && a.get_short() == f.short)
        })
    };
    for f in flags {
        if taken(&cmd, f) {
            continue;
        }
        let mut a = Arg::new(f.long).long(f.long).aliases(f.aliases.iter().copied()).hide(true);
        if let Some(c) = f.short {
            a = a.short(c);
        }
        a = match f.value {
            Some(v) => a.value_name(v).num_args(1).allow_hyphen_values(true).action(ArgAction::Set),
            None => a.action(ArgAction::SetTrue),
        };
        cmd = cmd.arg(a);
    }
    let note = "llama.cpp's flags for devices, offloading, thread pinning, memory mapping and logging are \
accepted with no effect (-ngl, -nkvo, -ot, --mlock, --numa, -C, -v, ...); -ctk/-ctv f16 and its other samplers at their \
neutral values (--typical 1, --mirostat 0, --dry-multiplier 0, --xtc-probability 0, --top-nsigma -1, --dynatemp-range 0); \
the rest (grammars, RoPE overrides, downloads) are refused in one error line.";
    let after = match cmd.get_after_help() {
        Some(h) => format!("{h}\n{note}"),
        None => note.to_string(),
    };
    cmd.after_help(after)
}

/// The table's flags given on the command line: an error for a refused one
/// or a value other than the neutral one.
pub fn check(m: &ArgMatches, flags: &[Flag]) -> Result<()> {
    for f in flags {
        // a flag the command defines itself is not in the matches under this id
        if m.try_contains_id(f.long).is_err() || m.value_source(f.long) != Some(ValueSource::CommandLine) {
            continue;
        }
        let value = || m.get_one::<String>(f.long).cloned().unwrap_or_default();
        match f.kind {
            NoEffect => {}
            Only(n) => {
                let v = value();
                if !n.holds(&v) {
                    let why = if f.long.starts_with("cache-type") { KV_F16 } else { NO_SAMPLER };
                    bail!("error: --{} {v} is not supported: {why} (--{} {} is accepted)", f.long, f.long, n.describe());
                }
            }
            Unsupported(why) => bail!("error: --{} is not supported by rllama: {why}", f.long),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in LLAMA_FLAGS {
            for n in std::iter::once(f.long).chain(f.aliases.iter().copied()) {
                assert!(seen.insert(n), "{n} twice");
            }
        }
    }

    #[test]
    fn neutral_values() {
        assert!(Neutral::Num(1.0).holds("1") && Neutral::Num(1.0).holds("1.0") && !Neutral::Num(1.0).holds("0.9"));
        assert!(Neutral::AtMost(0.0).holds("-1") && Neutral::AtMost(0.0).holds("0") && !Neutral::AtMost(0.0).holds("1.5"));
        assert!(Neutral::Text("f16").holds("f16") && !Neutral::Text("f16").holds("q8_0"));
        assert!(!Neutral::Num(0.0).holds("off"));
    }
}
