//! `rllama bench` (alias `llama-bench`): llama-bench's tests, statistics and
//! output formats. pp = one prompt of random tokens processed in batches; tg =
//! one token per step; pg = both; each test warmed up once, then repeated -r
//! times, reporting the mean and sample standard deviation of per-repetition
//! tokens per second.

use crate::decode::Session;
use crate::model::Model;
use anyhow::{bail, Context, Result};
use clap::{ArgAction, Parser};
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::time::Instant;

mod output;
mod spec;
use output::*;

const AFTER: &str = "Several values: comma lists, or ranges first-last, first-last+step, first-last*mult.
llama-bench's single-dash spellings work too: -pg, -ub, -oe, -ngl, -fa, -mmp, -sm, -mg, -nkvo, -ctk, -ctv, -embd.";

/// `rllama bench` flags (llama-bench's).
#[derive(Parser, Debug)]
#[command(about = "Measure prompt and generation speed (llama-bench)", after_help = AFTER)]
pub struct BenchArgs {
    #[arg(short = 'm', long = "model", value_name = "FILE", action = ArgAction::Append, help = "model(s): repeat, or comma separated")]
    model: Vec<std::ffi::OsString>,
    #[arg(short = 'p', long = "n-prompt", value_name = "N", action = ArgAction::Append, help = "prompt tokens [default: 512]")]
    n_prompt: Vec<String>,
    #[arg(short = 'n', long = "n-gen", value_name = "N", action = ArgAction::Append, help = "generated tokens [default: 128]")]
    n_gen: Vec<String>,
    #[arg(long = "pg", value_name = "PP,TG", action = ArgAction::Append, help = "prompt then generation (-pg)")]
    pg: Vec<String>,
    #[arg(short = 'd', long = "n-depth", value_name = "N", action = ArgAction::Append, help = "tokens in the KV cache before the test [default: 0]")]
    n_depth: Vec<String>,
    #[arg(short = 'b', long = "batch-size", value_name = "N", action = ArgAction::Append, help = "[default: 2048]")]
    n_batch: Vec<String>,
    #[arg(long = "ubatch-size", alias = "ub", value_name = "N", action = ArgAction::Append, help = "(-ub) [default: 512]")]
    n_ubatch: Vec<String>,
    #[arg(short = 't', long = "threads", value_name = "N", action = ArgAction::Append, help = "[default: every core]")]
    threads: Vec<String>,
    #[arg(short = 'r', long = "repetitions", value_name = "N", default_value_t = 5)]
    reps: usize,
    #[arg(short = 'o', long = "output", value_name = "FMT", default_value = "md", help = "md|csv|json|jsonl")]
    output: String,
    #[arg(long = "output-err", alias = "oe", value_name = "FMT", default_value = "none", help = "(-oe) md|csv|json|jsonl|none, on stderr")]
    output_err: String,
    #[arg(long = "no-warmup")]
    no_warmup: bool,
    #[arg(long = "progress", help = "progress lines on stderr")]
    progress: bool,
    #[arg(long = "exact", help = "llama.cpp's rounding, bit for bit (default: fast kernels; also RLLAMA_EXACT=1)")]
    exact: bool,
    #[arg(long = "lora", value_name = "FNAME", action = ArgAction::Append, help = "LoRA adapter on every model (repeatable, comma-separated; llama-bench has none)")]
    lora: Vec<std::ffi::OsString>,
    #[arg(long = "lora-scaled", value_name = "FNAME:SCALE", action = ArgAction::Append, help = "LoRA adapter with a user-defined scale")]
    lora_scaled: Vec<std::ffi::OsString>,
    #[arg(long = "spec-type", value_name = "LIST", action = ArgAction::Append, help = "also a tg row with these speculative types drafting (e.g. draft-mtp: tg128+mtp), greedy on --spec-prompt")]
    spec_type: Vec<String>,
    #[arg(long = "spec-heads", value_name = "HEADS.gguf", help = "heads file (rllama graft) for early-exit and draft-mtp")]
    spec_heads: Option<std::path::PathBuf>,
    #[arg(long = "spec-prompt", value_name = "TEXT", help = "the request the drafting tg row answers (chat-formatted)")]
    spec_prompt: Option<String>,
    #[arg(
        long = "spec-draft-p-min",
        visible_alias = "draft-p-min",
        value_name = "P",
        default_value_t = 0.0,
        help = "draft-mtp rounds stop below this draft probability"
    )]
    draft_p_min: f32,
    #[arg(
        long = "spec-draft-vocab",
        value_name = "K",
        help = format!("drafting over the first K tokens of the heads file's draft vocabulary (0: all; default: for an MTP head the size its graft weighed, else {})", crate::heads::DEFAULT_DRAFT_VOCAB)
    )]
    spec_draft_vocab: Option<usize>,
    #[arg(short = 'v', long = "verbose", help = "accepted, no effect")]
    verbose: bool,
    #[arg(long = "cache-type-k", alias = "ctk", value_name = "TYPE", default_value = "f16", help = "(-ctk) only f16")]
    cache_type_k: String,
    #[arg(long = "cache-type-v", alias = "ctv", value_name = "TYPE", default_value = "f16", help = "(-ctv) only f16")]
    cache_type_v: String,
    #[arg(long = "n-gpu-layers", alias = "ngl", value_name = "N", help_heading = "Accepted, no effect (CPU only)")]
    ngl: Option<String>,
    #[arg(long = "flash-attn", alias = "fa", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    fa: Option<String>,
    #[arg(long = "mmap", alias = "mmp", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    mmap: Option<String>,
    #[arg(long = "split-mode", alias = "sm", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    split_mode: Option<String>,
    #[arg(long = "main-gpu", alias = "mg", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    main_gpu: Option<String>,
    #[arg(long = "no-kv-offload", alias = "nkvo", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    nkvo: Option<String>,
    #[arg(long = "embeddings", alias = "embd", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    embd: Option<String>,
    #[arg(long = "numa", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    numa: Option<String>,
    #[arg(long = "prio", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    prio: Option<String>,
    #[arg(long = "delay", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    delay: Option<String>,
    #[arg(long = "poll", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    poll: Option<String>,
    #[arg(long = "repack", value_name = "X", help_heading = "Accepted, no effect (CPU only)")]
    repack: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Format {
    None,
    Md,
    Csv,
    Json,
    Jsonl,
}

fn parse_format(s: &str) -> Result<Format> {
    Ok(match s {
        "none" => Format::None,
        "md" => Format::Md,
        "csv" => Format::Csv,
        "json" => Format::Json,
        "jsonl" => Format::Jsonl,
        _ => bail!("error: unknown output format {s:?} (md, csv, json, jsonl)"),
    })
}

/// Most values one list flag may expand to (each is a whole benchmark run).
const MAX_LIST: usize = 10_000;

/// llama-bench's integer lists: `a,b,c`, `first-last`, `first-last+step`, `first-last*mult`.
pub fn parse_int_range(s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let bad = || anyhow::anyhow!("error: invalid range {s:?}");
        let (first, rest) = match part.find('-') {
            Some(i) => (&part[..i], Some(&part[i + 1..])),
            None => (part, None),
        };
        let first: usize = first.parse().map_err(|_| bad())?;
        let (last, op, step) = match rest {
            None => (first, '+', 1),
            Some(r) => match r.find(['+', '*']) {
                Some(i) => (r[..i].parse::<usize>().map_err(|_| bad())?, r.as_bytes()[i] as char, r[i + 1..].parse::<usize>().map_err(|_| bad())?),
                None => (r.parse::<usize>().map_err(|_| bad())?, '+', 1),
            },
        };
        let mut i = first;
        while i <= last {
            if out.len() >= MAX_LIST {
                bail!("error: the range {s:?} has more than {MAX_LIST} values");
            }
            out.push(i);
            let next = if op == '+' { i.checked_add(step) } else { i.checked_mul(step) };
            let Some(next) = next else { break };
            if next <= i {
                bail!("error: invalid range {s:?}");
            }
            i = next;
        }
    }
    Ok(out)
}

pub struct BenchOpts {
    pub models: Vec<std::path::PathBuf>,
    pub n_prompt: Vec<usize>,
    pub n_gen: Vec<usize>,
    pub n_pg: Vec<(usize, usize)>,
    pub n_depth: Vec<usize>,
    pub n_batch: Vec<usize>,
    pub n_ubatch: Vec<usize>,
    pub threads: Vec<usize>,
    pub reps: usize,
    pub output: Format,
    pub output_err: Format,
    pub warmup: bool,
    pub progress: bool,
    /// LoRA adapters applied to every model.
    pub lora: Vec<crate::lora::LoraSpec>,
    /// Speculative types of the extra tg row (none: no such row).
    pub spec: Vec<crate::decode::drafters::SpecType>,
    pub spec_heads: Option<std::path::PathBuf>,
    pub spec_prompt: String,
    /// Drafting's probability cut-off (`--draft-p-min`).
    pub draft_p_min: f32,
    /// Rows of the heads' draft vocabulary drafted over (`--spec-draft-vocab`).
    pub draft_vocab: Option<usize>,
}

fn default_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4)
}

/// All values of a list flag (each one a comma list or range).
fn int_lists(v: &[String]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for s in v {
        out.extend(parse_int_range(s)?);
        if out.len() > MAX_LIST {
            bail!("error: more than {MAX_LIST} values in one list");
        }
    }
    Ok(out)
}

pub fn parse(prog: &str, args: Vec<std::ffi::OsString>) -> Result<Option<BenchOpts>> {
    let Some((a, _)) = super::flags::parse::<BenchArgs>(prog, args)? else { return Ok(None) };
    if a.exact {
        crate::quant::fast::set_exact(true);
    }
    for (f, v) in [("-ctk", &a.cache_type_k), ("-ctv", &a.cache_type_v)] {
        if v != "f16" {
            bail!("error: {f} {v}: only f16 is supported by rllama bench");
        }
    }
    let mut n_pg = Vec::new();
    for v in &a.pg {
        let p: Vec<&str> = v.split(',').collect();
        let (Some(pp), Some(tg), 2) = (p.first().and_then(|x| x.parse().ok()), p.get(1).and_then(|x| x.parse().ok()), p.len()) else {
            bail!("error: invalid value {v:?} for -pg (expected PP,TG)")
        };
        n_pg.push((pp, tg));
    }
    let mut o = BenchOpts {
        lora: crate::lora::parse_specs(&a.lora, &a.lora_scaled)?,
        models: a.model.iter().flat_map(|m| super::flags::split_paths(m)).collect(),
        n_prompt: int_lists(&a.n_prompt)?,
        n_gen: int_lists(&a.n_gen)?,
        n_pg,
        n_depth: int_lists(&a.n_depth)?,
        n_batch: int_lists(&a.n_batch)?,
        n_ubatch: int_lists(&a.n_ubatch)?,
        threads: int_lists(&a.threads)?,
        reps: a.reps,
        output: parse_format(&a.output)?,
        output_err: parse_format(&a.output_err)?,
        warmup: !a.no_warmup,
        progress: a.progress,
        spec: crate::decode::drafters::SpecType::parse_list(&a.spec_type)?,
        spec_heads: a.spec_heads,
        spec_prompt: a.spec_prompt.unwrap_or_else(|| spec::DEFAULT_PROMPT.to_string()),
        draft_p_min: a.draft_p_min,
        draft_vocab: a.spec_draft_vocab,
    };
    if o.models.is_empty() {
        bail!("error: a model is required (-m MODEL)");
    }
    if o.reps == 0 {
        bail!("error: -r must be at least 1");
    }
    if o.n_prompt.is_empty() {
        o.n_prompt.push(512);
    }
    if o.n_gen.is_empty() {
        o.n_gen.push(128);
    }
    for (v, d) in [(&mut o.n_depth, 0), (&mut o.n_batch, 2048), (&mut o.n_ubatch, 512), (&mut o.threads, default_threads())] {
        if v.is_empty() {
            v.push(d);
        }
    }
    if o.n_batch.contains(&0) || o.n_ubatch.contains(&0) || o.threads.contains(&0) {
        bail!("error: -b, -ub and -t must be at least 1");
    }
    Ok(Some(o))
}

/// One test to run: llama-bench's cmd_params_instance, the parts rllama has.
#[derive(Clone, Debug)]
struct Instance {
    model: std::path::PathBuf,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    n_batch: usize,
    n_ubatch: usize,
    threads: usize,
    /// A tg row with drafting on.
    spec: bool,
}

fn instances(o: &BenchOpts) -> Vec<Instance> {
    let mut v = Vec::new();
    for m in &o.models {
        for &n_batch in &o.n_batch {
            for &n_ubatch in &o.n_ubatch {
                for &threads in &o.threads {
                    for &n_depth in &o.n_depth {
                        let base = Instance { model: m.clone(), n_prompt: 0, n_gen: 0, n_depth, n_batch, n_ubatch, threads, spec: false };
                        let tests = o
                            .n_prompt
                            .iter()
                            .filter(|&&p| p > 0)
                            .map(|&p| (p, 0))
                            .chain(o.n_gen.iter().filter(|&&g| g > 0).map(|&g| (0, g)))
                            .chain(o.n_pg.iter().copied().filter(|&(p, g)| p > 0 || g > 0));
                        for (p, g) in tests {
                            v.push(Instance { n_prompt: p, n_gen: g, ..base.clone() });
                            if p == 0 && g > 0 && n_depth == 0 && !o.spec.is_empty() {
                                v.push(Instance { n_prompt: p, n_gen: g, spec: true, ..base.clone() });
                            }
                        }
                    }
                }
            }
        }
    }
    v
}

/// A finished test: llama-bench's `test` record.
pub struct TestResult {
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    inst_n_batch: usize,
    inst_n_ubatch: usize,
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    n_depth: usize,
    test_time: String,
    samples_ns: Vec<u64>,
    /// Drafting types of a speculative tg row (`tg128+mtp`).
    spec: Option<String>,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Sample standard deviation (n - 1), 0 for fewer than two samples, as llama-bench.
fn stdev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    let sq = v.iter().map(|x| x * x).sum::<f64>();
    ((sq - v.len() as f64 * m * m) / (v.len() as f64 - 1.0)).max(0.0).sqrt()
}

impl TestResult {
    /// The record of instance `inst` of model `m` with its timings.
    fn new(m: &Model, inst: &Instance, samples_ns: Vec<u64>) -> TestResult {
        TestResult {
            model_filename: inst.model.display().to_string(),
            model_type: model_desc(m),
            model_size: m.g.tensors.iter().map(|t| t.n_bytes as u64).sum(),
            model_n_params: m.n_params(),
            inst_n_batch: inst.n_batch,
            inst_n_ubatch: inst.n_ubatch,
            n_threads: inst.threads,
            n_prompt: inst.n_prompt,
            n_gen: inst.n_gen,
            n_depth: inst.n_depth,
            test_time: utc_now_rfc3339(),
            samples_ns,
            spec: None,
        }
    }

    fn ts(&self) -> Vec<f64> {
        let n = (self.n_prompt + self.n_gen) as f64;
        self.samples_ns.iter().map(|&t| 1e9 * n / t as f64).collect()
    }
    fn ns(&self) -> Vec<f64> {
        self.samples_ns.iter().map(|&t| t as f64).collect()
    }
    pub fn avg_ts(&self) -> f64 {
        mean(&self.ts())
    }
    pub fn stdev_ts(&self) -> f64 {
        stdev(&self.ts())
    }
    fn test_name(&self) -> String {
        let mut s = if self.n_prompt > 0 && self.n_gen == 0 {
            format!("pp{}", self.n_prompt)
        } else if self.n_gen > 0 && self.n_prompt == 0 {
            format!("tg{}", self.n_gen)
        } else {
            format!("pp{}+tg{}", self.n_prompt, self.n_gen)
        };
        if let Some(l) = &self.spec {
            s += &format!("+{l}");
        }
        if self.n_depth > 0 {
            s += &format!(" @ d{}", self.n_depth);
        }
        s
    }

    /// (field, value, kind) in llama-bench's field order; kind: s string, i int, b bool, f float.
    fn fields(&self) -> Vec<(&'static str, String, char)> {
        let n = |x: usize| x.to_string();
        vec![
            ("build_commit", BUILD_COMMIT.to_string(), 's'),
            ("build_number", "0".into(), 'i'),
            ("cpu_info", cpu_info(), 's'),
            ("gpu_info", String::new(), 's'),
            ("backends", "CPU".into(), 's'),
            ("model_filename", self.model_filename.clone(), 's'),
            ("model_type", self.model_type.clone(), 's'),
            ("model_size", self.model_size.to_string(), 'i'),
            ("model_n_params", self.model_n_params.to_string(), 'i'),
            ("n_batch", n(self.inst_n_batch), 'i'),
            ("n_ubatch", n(self.inst_n_ubatch), 'i'),
            ("n_threads", n(self.n_threads), 'i'),
            ("cpu_mask", "0x0".into(), 's'),
            ("cpu_strict", "0".into(), 'b'),
            ("poll", "50".into(), 'i'),
            ("type_k", "f16".into(), 's'),
            ("type_v", "f16".into(), 's'),
            ("n_gpu_layers", "-1".into(), 'i'),
            ("n_cpu_moe", "0".into(), 'i'),
            ("split_mode", "layer".into(), 's'),
            ("main_gpu", "0".into(), 'i'),
            ("no_kv_offload", "0".into(), 'b'),
            ("flash_attn", "-1".into(), 'i'),
            ("devices", "auto".into(), 's'),
            ("tensor_split", "0.00".into(), 's'),
            ("tensor_buft_overrides", "none".into(), 's'),
            ("load_mode", "auto".into(), 's'),
            ("lazy_mode", "auto".into(), 's'),
            ("embeddings", "0".into(), 'b'),
            ("no_op_offload", "0".into(), 'i'),
            ("no_host", "0".into(), 'b'),
            ("repack", "1".into(), 'b'),
            ("fit_target", "0".into(), 'i'),
            ("fit_min_ctx", "0".into(), 'i'),
            ("n_prompt", n(self.n_prompt), 'i'),
            ("n_gen", n(self.n_gen), 'i'),
            ("n_depth", n(self.n_depth), 'i'),
            ("test_time", self.test_time.clone(), 's'),
            ("avg_ns", format!("{}", mean(&self.ns()) as u64), 'i'),
            ("stddev_ns", format!("{}", stdev(&self.ns()) as u64), 'i'),
            ("avg_ts", format!("{:.6}", self.avg_ts()), 'f'),
            ("stddev_ts", format!("{:.6}", self.stdev_ts()), 'f'),
        ]
    }
}

/// llama.cpp's model description: `<arch> <size class> <file type>`.
pub fn model_desc(m: &Model) -> String {
    let c = &m.cfg;
    let size = match (c.arch.as_str(), c.n_layer) {
        ("llama", 16 | 22) => "1B",
        ("llama", 26 | 28) => "3B",
        ("llama", 30) => "256M",
        ("llama", 32) => {
            if c.n_vocab == 49152 {
                "3B"
            } else if c.n_vocab < 40000 {
                "7B"
            } else {
                "8B"
            }
        }
        ("llama", 36) => "8B",
        ("llama", 40) => "13B",
        ("qwen2", 24) => {
            if c.n_embd == 1024 {
                "0.5B"
            } else {
                "1B"
            }
        }
        ("qwen2", 28) => {
            if c.n_embd == 1536 {
                "1.5B"
            } else {
                "7B"
            }
        }
        ("qwen2", 32) => "7B",
        ("qwen2", 36) => "3B",
        ("gemma3", 18) => "270M",
        ("gemma3", 26) => "1B",
        ("gemma3", 34) => "4B",
        ("gemma3", 48) => "12B",
        ("gemma3", 62) => "27B",
        _ => "?B",
    };
    format!("{} {size} {}", c.arch, ftype_name(m))
}

fn ftype_name(m: &Model) -> String {
    let names = [
        (0, "all F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (7, "Q8_0"),
        (8, "Q5_0"),
        (9, "Q5_1"),
        (10, "Q2_K - Medium"),
        (11, "Q3_K - Small"),
        (12, "Q3_K - Medium"),
        (13, "Q3_K - Large"),
        (14, "Q4_K - Small"),
        (15, "Q4_K - Medium"),
        (16, "Q5_K - Small"),
        (17, "Q5_K - Medium"),
        (18, "Q6_K"),
        (21, "Q2_K - Small"),
        (25, "IQ4_NL - 4.5 bpw"),
        (30, "IQ4_XS - 4.25 bpw"),
        (32, "BF16"),
    ];
    match m.g.get_i64("general.file_type") {
        Some(ft) => names.iter().find(|n| n.0 == ft).map(|n| n.1.to_string()).unwrap_or_else(|| "unknown, may not work".into()),
        None => "all F32".into(),
    }
}

fn utc_now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, mth, d) = crate::chat::template::civil_from_days(days);
    format!("{y:04}-{mth:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Random tokens for a prompt as llama-bench feeds them: BOS first when the model adds one.
fn prompt_tokens(m: &Model, rng: &mut rand::rngs::StdRng, n: usize, bos: Option<u32>) -> Vec<u32> {
    let nv = m.cfg.n_vocab as u32;
    (0..n).map(|i| if i == 0 { bos.unwrap_or_else(|| rng.gen_range(0..nv)) } else { rng.gen_range(0..nv) }).collect()
}

fn run_prompt(s: &mut Session, rng: &mut rand::rngs::StdRng, n: usize, bos: Option<u32>) -> Result<()> {
    let toks = prompt_tokens(s.model, rng, n, bos);
    s.prompt(&toks)?;
    Ok(())
}

fn run_gen(s: &mut Session, rng: &mut rand::rngs::StdRng, n: usize, bos: Option<u32>) -> Result<()> {
    let nv = s.model.cfg.n_vocab as u32;
    let mut t = bos.unwrap_or_else(|| rng.gen_range(0..nv));
    for _ in 0..n {
        s.step(t)?;
        t = rng.gen_range(0..nv);
    }
    Ok(())
}

/// A speculative tg row: `o.reps` greedy generations of `inst.n_gen` tokens.
fn run_spec_instance(m: &Model, tok: &crate::tokenizer::Tokenizer, heads: Option<&crate::heads::Heads>, inst: &Instance, o: &BenchOpts) -> Result<TestResult> {
    let prompt = spec::prompt_tokens(m, tok, &o.spec_prompt)?;
    let err = |e: anyhow::Error| anyhow::anyhow!("error: {e:#}");
    // the test's name, as its row and stderr lines give it
    let test = format!("tg{}+{}", inst.n_gen, spec::label(&o.spec));
    if o.warmup {
        spec::run(m, tok, heads, o, &prompt, 4, true).map_err(err)?;
    }
    // Each drafting run is paired with a plain greedy generation of the same
    // request, in alternating order: the machine's speed drifts by tens of
    // percent within minutes, and a pair sees the same drift. The plain
    // run's text also checks that drafting is lossless.
    let (mut runs, mut plain) = (Vec::new(), Vec::new());
    for i in 0..o.reps {
        let mut pair = [None, None];
        for drafting in if i % 2 == 0 { [false, true] } else { [true, false] } {
            pair[drafting as usize] = Some(spec::run(m, tok, heads, o, &prompt, inst.n_gen, drafting).map_err(err)?);
        }
        let [Some(p), Some(d)] = pair else { unreachable!("both runs of a pair ran") };
        if p.tokens != d.tokens {
            let at = p.tokens.iter().zip(&d.tokens).position(|(a, b)| a != b).unwrap_or(0);
            bail!("error: {test}: drafting changed the greedy output (first at generated token {at})");
        }
        plain.push(p.ns);
        runs.push(d);
    }
    // the counts of every repetition (the length policy follows measured
    // times, so repetitions of the same greedy text draft differently)
    let mut total: Vec<spec::Tally> = Vec::new();
    for spec::Run { tallies, .. } in &runs {
        for (i, t) in tallies.iter().enumerate() {
            match total.get_mut(i) {
                Some(s) => s.add(t),
                None => total.push(t.clone()),
            }
        }
    }
    for t in &total {
        eprintln!("{test}: {} (over {} runs)", t.line(), runs.len());
    }
    let samples: Vec<u64> = runs.into_iter().map(|r| r.ns).collect();
    if !samples.is_empty() {
        eprintln!("{}", spec::speedup_line(&test, &plain, &samples, inst.n_gen));
    }
    // spec instances have no prompt and no depth
    Ok(TestResult { spec: Some(spec::label(&o.spec)), ..TestResult::new(m, inst, samples) })
}

#[allow(clippy::too_many_arguments)]
fn run_instance(
    m: &Model,
    adapters: &Option<std::sync::Arc<crate::ops::linear::AdapterSet>>,
    inst: &Instance,
    o: &BenchOpts,
    bos: Option<u32>,
    rng: &mut rand::rngs::StdRng,
    idx: usize,
    total: usize,
) -> Result<TestResult> {
    let n_ctx = inst.n_prompt + inst.n_gen + inst.n_depth;
    let mut s = Session::new(m, n_ctx.max(1), inst.n_batch.min(inst.n_ubatch)).map_err(|e| anyhow::anyhow!("error: {e:#}"))?;
    s.scratch.set_adapters(adapters.clone());
    let progress = |what: &str| {
        if o.progress {
            eprintln!("llama-bench: benchmark {idx}/{total}: {what}");
        }
    };
    if o.warmup {
        if inst.n_prompt > 0 {
            progress("warmup prompt run");
            run_prompt(&mut s, rng, inst.n_prompt, bos)?;
        }
        if inst.n_gen > 0 {
            progress("warmup generation run");
            if s.n_past() >= n_ctx {
                s.kv.truncate(0);
            }
            run_gen(&mut s, rng, 1, bos)?;
        }
    }
    let mut samples = Vec::with_capacity(o.reps);
    for i in 0..o.reps {
        s.kv.truncate(0);
        if inst.n_depth > 0 {
            progress(&format!("depth run {}/{}", i + 1, o.reps));
            run_prompt(&mut s, rng, inst.n_depth, bos)?;
        }
        let t0 = Instant::now();
        if inst.n_prompt > 0 {
            progress(&format!("prompt run {}/{}", i + 1, o.reps));
            run_prompt(&mut s, rng, inst.n_prompt, bos)?;
        }
        if inst.n_gen > 0 {
            progress(&format!("generation run {}/{}", i + 1, o.reps));
            run_gen(&mut s, rng, inst.n_gen, bos)?;
        }
        samples.push((t0.elapsed().as_nanos() as u64).max(1));
    }
    Ok(TestResult::new(m, inst, samples))
}

pub fn run(prog: &str, args: Vec<std::ffi::OsString>) -> Result<()> {
    let Some(o) = parse(prog, args)? else { return Ok(()) };
    let insts = instances(&o);
    if let Some(&t) = o.threads.iter().max() {
        if t > super::options::MAX_THREADS {
            bail!("error: -t {t}: at most {} threads", super::options::MAX_THREADS);
        }
        super::options::warn_oversubscribed(t);
    }
    let mut p = Printer::new(o.output, Box::new(std::io::stdout()), &o);
    let mut pe = Printer::new(o.output_err, Box::new(std::io::stderr()), &o);
    p.header()?;
    pe.header()?;
    // llama-bench seeds nothing: std::rand's default stream. Ours is fixed too.
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    type Loaded = (
        std::path::PathBuf,
        Model,
        Option<u32>,
        Option<std::sync::Arc<crate::ops::linear::AdapterSet>>,
        crate::tokenizer::Tokenizer,
        Option<crate::heads::Heads>,
    );
    let mut loaded: Option<Loaded> = None;
    for (i, inst) in insts.iter().enumerate() {
        if o.progress {
            eprintln!("llama-bench: benchmark {}/{}: starting", i + 1, insts.len());
        }
        if loaded.as_ref().map(|l| &l.0) != Some(&inst.model) {
            drop(loaded.take());
            let m = Model::load(&inst.model).with_context(|| format!("error: failed to load model '{}'", inst.model.display()))?;
            let tok = crate::tokenizer::Tokenizer::from_gguf(&m.g)?;
            let bos = if tok.add_bos { tok.bos } else { None };
            let adapters = crate::lora::session_adapters(&m, &o.lora)?;
            let heads = match &o.spec_heads {
                Some(h) => Some(crate::heads::Heads::load(h, &m).map_err(|e| anyhow::anyhow!("error: {e:#}"))?),
                None => None,
            };
            loaded = Some((inst.model.clone(), m, bos, adapters, tok, heads));
        }
        let Some((_, m, bos, adapters, tok, heads)) = loaded.as_ref() else { bail!("error: no model loaded") };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(inst.threads).build()?;
        let r = if inst.spec {
            pool.install(|| run_spec_instance(m, tok, heads.as_ref(), inst, &o))?
        } else {
            pool.install(|| run_instance(m, adapters, inst, &o, *bos, &mut rng, i + 1, insts.len()))?
        };
        p.test(&r)?;
        pe.test(&r)?;
    }
    p.footer()?;
    pe.footer()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_ranges_like_llama_bench() {
        assert_eq!(parse_int_range("1,2,4").unwrap(), vec![1, 2, 4]);
        assert_eq!(parse_int_range("1-4").unwrap(), vec![1, 2, 3, 4]);
        assert_eq!(parse_int_range("1-9+4").unwrap(), vec![1, 5, 9]);
        assert_eq!(parse_int_range("1-16*2").unwrap(), vec![1, 2, 4, 8, 16]);
        assert_eq!(parse_int_range("8,1-2").unwrap(), vec![8, 1, 2]);
        assert!(parse_int_range("1-4*1").is_err());
        assert!(parse_int_range("x").is_err());
        assert!(parse_int_range("").is_err());
    }

    #[test]
    fn sample_stdev() {
        assert_eq!(stdev(&[1.0]), 0.0);
        assert!((stdev(&[1.0, 2.0, 3.0, 4.0]) - 1.2909944).abs() < 1e-6);
    }

    #[test]
    fn printf_g_style() {
        assert_eq!(fmt_ts(297.624123), "297.624");
        assert_eq!(fmt_ts(1234567.0), "1.23457e+06");
        assert_eq!(fmt_ts(50.0), "50");
    }

    #[test]
    fn rfc3339() {
        let s = utc_now_rfc3339();
        assert_eq!(s.len(), 20);
        assert!(s.ends_with('Z'));
    }
}
