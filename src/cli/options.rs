//! Options shared by the generation front-ends (`rllama cli`, chat,
//! `rllama speculative`): the flags, the thread pool, the perf block.

use super::args::{process_escapes, process_escapes_text};
use crate::sampling::SamplerParams;
use anyhow::Result;
use std::time::Instant;

/// The draft model and its flags (`-md` and the `--spec-draft-*` family).
#[derive(Clone, Debug)]
pub struct DraftOpts {
    pub model: Option<std::path::PathBuf>,
    pub n_max: usize,
    pub n_min: usize,
    pub p_min: f32,
    pub n_ctx: Option<usize>,
    /// `--spec-type` (draft-simple added by -md), in priority order.
    pub types: Vec<crate::decode::drafters::SpecType>,
    pub ngram: crate::decode::drafters::NgramOpts,
    /// `--spec-heads` (exit heads from rllama graft) and `--spec-exit-layer`.
    pub heads: Option<std::path::PathBuf>,
    pub exit_layer: Option<crate::heads::ExitSpec>,
    /// `--early-exit-threshold` (lossy early exit on one-token steps).
    pub threshold: Option<f32>,
}

impl Default for DraftOpts {
    fn default() -> Self {
        DraftOpts {
            model: None,
            n_max: 16,
            n_min: 0,
            p_min: 0.0,
            n_ctx: None,
            types: Vec::new(),
            ngram: Default::default(),
            heads: None,
            exit_layer: None,
            threshold: None,
        }
    }
}

pub struct CliOpts {
    pub model: Option<std::path::PathBuf>,
    /// The prompt's bytes (not necessarily UTF-8, as llama.cpp takes them).
    pub prompt: Vec<u8>,
    pub n_predict: i64,
    pub n_ctx: usize,
    pub n_batch: usize,
    /// Tokens per forward pass (llama.cpp's micro-batch).
    pub n_ubatch: usize,
    pub threads: Option<usize>,
    pub sampling: SamplerParams,
    pub escape: bool,
    pub ignore_eos: bool,
    pub conversation: bool,
    pub interactive: bool,
    pub single_turn: bool,
    pub system_prompt: String,
    /// `--chat-template` (a built-in name or Jinja) or a template file's text.
    pub chat_template: Option<String>,
    pub reverse_prompts: Vec<String>,
    pub in_prefix: String,
    pub in_suffix: String,
    pub multiline: bool,
    pub show_timings: bool,
    /// Speculative decoding (`-md DRAFT` and the draft flags).
    pub draft: DraftOpts,
    /// LoRA adapters on the target (`--lora`, `--lora-scaled`).
    pub lora: Vec<crate::lora::LoraSpec>,
}

impl Default for CliOpts {
    fn default() -> Self {
        CliOpts {
            model: None,
            prompt: Vec::new(),
            n_predict: -1,
            n_ctx: 4096,
            n_batch: 2048,
            n_ubatch: 512,
            threads: None,
            sampling: SamplerParams::default(),
            escape: true,
            ignore_eos: false,
            conversation: false,
            interactive: false,
            single_turn: false,
            system_prompt: String::new(),
            chat_template: None,
            reverse_prompts: Vec::new(),
            in_prefix: String::new(),
            in_suffix: String::new(),
            multiline: false,
            show_timings: true,
            draft: Default::default(),
            lora: Vec::new(),
        }
    }
}

/// Parse the generation flags (clap, llama.cpp's spellings; see `cli_args`).
/// None when help was printed.
pub fn parse(prog: &str, args: Vec<std::ffi::OsString>, conversation_default: bool) -> Result<Option<CliOpts>> {
    let Some((a, m)) = super::flags::parse_llama::<super::cli_args::CliArgs>(prog, args)? else { return Ok(None) };
    let mut o = a.into_opts(&m, conversation_default)?;
    if o.escape {
        o.prompt = process_escapes(&o.prompt);
        o.in_prefix = process_escapes_text(&o.in_prefix);
        o.in_suffix = process_escapes_text(&o.in_suffix);
        o.reverse_prompts = o.reverse_prompts.iter().map(|r| process_escapes_text(r)).collect();
    }
    Ok(Some(o))
}

/// The model and its tokenizer. The tokenizer (Qwen's 151k tokens and
/// merges: ~0.17 s on a 2-core Zen 1) is built on its own thread while the
/// weights load and repack: time to one token from the command line, 8
/// interleaved runs each, medians, Qwen 0.5B Q4_K_M 0.86 -> 0.76 s, Qwen 1.5B
/// 1.11 -> 1.03 s.
pub fn load_model(path: &std::path::Path) -> Result<(crate::model::Model, crate::tokenizer::Tokenizer)> {
    let g = std::sync::Arc::new(crate::gguf::GgufFile::open(path)?);
    let (model, tok) = std::thread::scope(|s| {
        let tok = s.spawn(|| crate::tokenizer::Tokenizer::from_gguf(&g));
        let model = crate::model::Model::from_gguf(g.clone());
        (model, tok.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
    });
    Ok((model?, tok?))
}

/// Size the global thread pool: `-t N`, or every available core.
/// `--early-exit-threshold P` needs a probability and `--spec-heads`.
pub fn check_exit_threshold(threshold: Option<f32>, heads: Option<&std::path::Path>) -> Result<()> {
    match (threshold, heads) {
        (Some(p), _) if !(p > 0.0 && p <= 1.0) => anyhow::bail!("error: --early-exit-threshold {p}: expected a probability in (0, 1]"),
        (Some(_), None) => anyhow::bail!("error: --early-exit-threshold needs exit heads (--spec-heads HEADS.gguf, written by rllama graft)"),
        _ => Ok(()),
    }
}

/// The heads file of `--spec-heads` for `model` (one `error:` line if not).
pub fn load_heads(path: &std::path::Path, model: &crate::model::Model) -> Result<crate::heads::Heads> {
    crate::heads::Heads::load(path, model).map_err(|e| anyhow::anyhow!("error: {e:#}"))
}

pub fn set_threads(t: Option<usize>) {
    let n = t.filter(|&n| n > 0).unwrap_or_else(crate::parallel::available_cores);
    let n = warn_oversubscribed(n);
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

/// Most threads rllama starts, whatever is asked (each is a real OS thread).
pub const MAX_THREADS: usize = 256;

/// One stderr line when more threads than cores are asked for (it works,
/// waiting threads give their core away, but it is slower than one per core);
/// the count to use (capped at MAX_THREADS).
pub fn warn_oversubscribed(n: usize) -> usize {
    let cores = crate::parallel::available_cores();
    if n > MAX_THREADS {
        eprintln!("warning: {n} threads requested on {cores} available cores; using {MAX_THREADS} (this runs slower than -t {cores})");
        return MAX_THREADS;
    }
    if n > cores {
        eprintln!("warning: {n} threads requested on {cores} available cores; this runs slower than -t {cores}");
    }
    n
}

pub fn print_perf(p: &crate::decode::Perf, t_load_ms: f64, t_start: Instant) {
    let per = |t: f64, n: usize| if n > 0 { t / n as f64 } else { 0.0 };
    let tps = |t: f64, n: usize| if t > 0.0 { 1e3 / t * n as f64 } else { 0.0 };
    let total = t_start.elapsed().as_secs_f64() * 1e3;
    eprintln!();
    eprintln!(
        "common_perf_print:    sampling time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
        p.t_sample_ms,
        p.n_sample,
        per(p.t_sample_ms, p.n_sample),
        tps(p.t_sample_ms, p.n_sample)
    );
    eprintln!("common_perf_print:        load time = {:10.2} ms", t_load_ms);
    eprintln!(
        "common_perf_print: prompt eval time = {:10.2} ms / {:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
        p.t_prompt_ms,
        p.n_prompt,
        per(p.t_prompt_ms, p.n_prompt),
        tps(p.t_prompt_ms, p.n_prompt)
    );
    eprintln!(
        "common_perf_print:        eval time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
        p.t_eval_ms,
        p.n_eval,
        per(p.t_eval_ms, p.n_eval),
        tps(p.t_eval_ms, p.n_eval)
    );
    eprintln!("common_perf_print:       total time = {:10.2} ms / {:5} tokens", total, p.n_prompt + p.n_eval);
    eprintln!();
    eprintln!("[ Prompt: {:.1} t/s | Generation: {:.1} t/s ]", tps(p.t_prompt_ms, p.n_prompt), tps(p.t_eval_ms, p.n_eval));
}
