//! The flags of `rllama cli` / `llama-cli` / `rllama speculative` as clap
//! sees them (llama.cpp's names, aliases and defaults), turned into `CliOpts`.

use super::flags::last_of;
use super::flags::{os_bytes, os_text};
use super::options::{CliOpts, DraftOpts};
use crate::decode::drafters::{NgramOpts, SpecType};
use crate::sampling::SamplerParams;
use anyhow::{bail, Result};
use clap::{ArgMatches, Args, Parser};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

const AFTER: &str = "In a chat: /exit (or EOF, or a second Ctrl-C) ends, /clear starts over, /regen redoes the last reply; \
Ctrl-C stops the current reply. A line ending in \\ continues on the next line.
llama.cpp's single-dash spellings work too: -ngl, -no-cnv, -cnv, -sys, -sysf, -st, -mli, -md, -cd, -td, -ub, -tb, -fa.";

#[derive(Parser, Debug)]
#[command(about = "Generate text with a GGUF model (llama-completion / llama-cli)", after_help = AFTER)]
pub struct CliArgs {
    #[arg(short = 'm', long = "model", value_name = "FILE", help_heading = "Model")]
    model: Option<PathBuf>,
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 4096, help = "context size (0 = the model's)", help_heading = "Model")]
    n_ctx: usize,
    #[arg(short = 'b', long = "batch-size", value_name = "N", default_value_t = 2048, help_heading = "Model")]
    n_batch: usize,
    #[arg(long = "ubatch-size", alias = "ub", value_name = "N", default_value_t = 512, help = "tokens per forward pass (-ub)", help_heading = "Model")]
    n_ubatch: usize,
    #[arg(
        short = 't',
        long = "threads",
        visible_alias = "threads-batch",
        alias = "tb",
        value_name = "N",
        help = "threads (default: every core)",
        help_heading = "Model"
    )]
    threads: Option<usize>,
    #[arg(
        long = "n-gpu-layers",
        visible_alias = "gpu-layers",
        alias = "ngl",
        value_name = "N",
        help = "accepted (-ngl); rllama runs on the CPU",
        help_heading = "Model"
    )]
    gpu_layers: Option<String>,
    #[arg(long = "exact", help = "llama.cpp's rounding, bit for bit (default: fast kernels; also RLLAMA_EXACT=1)", help_heading = "Model")]
    exact: bool,
    #[arg(long = "lora", value_name = "FNAME", action = clap::ArgAction::Append, help = "LoRA adapter (repeatable, comma-separated)", help_heading = "Model")]
    lora: Vec<OsString>,
    #[arg(
        long = "lora-scaled",
        value_name = "FNAME:SCALE",
        action = clap::ArgAction::Append,
        help = "LoRA adapter with a user-defined scale (repeatable, comma-separated pairs)",
        help_heading = "Model"
    )]
    lora_scaled: Vec<OsString>,
    #[arg(long = "flash-attn", alias = "fa", value_name = "on|off|auto", help = "accepted (-fa); attention is always fused", help_heading = "Model")]
    flash_attn: Option<String>,

    #[arg(short = 'p', long = "prompt", value_name = "TEXT", help_heading = "Prompt")]
    prompt: Option<OsString>,
    #[arg(short = 'f', long = "file", value_name = "FILE", help = "read the prompt from a file", help_heading = "Prompt")]
    file: Option<PathBuf>,
    #[arg(short = 'n', long = "n-predict", visible_alias = "predict", value_name = "N", default_value_t = -1, help = "tokens to generate (-1 = until the end)", help_heading = "Prompt")]
    n_predict: i64,
    #[arg(
        short = 'e',
        long = "escape",
        overrides_with = "no_escape",
        help = "process escapes (\\n, \\t, \\xHH, ...) in the prompt (default)",
        help_heading = "Prompt"
    )]
    escape: bool,
    #[arg(long = "no-escape", overrides_with = "escape", help_heading = "Prompt")]
    no_escape: bool,
    #[arg(long = "ignore-eos", help = "never stop at end-of-generation tokens", help_heading = "Prompt")]
    ignore_eos: bool,

    #[arg(short = 's', long = "seed", value_name = "N", default_value_t = -1, help = "random seed (-1 = random)", help_heading = "Sampling")]
    seed: i64,
    #[arg(long = "temp", value_name = "T", default_value_t = 0.8, help = "temperature (0 = greedy)", help_heading = "Sampling")]
    temp: f32,
    #[arg(long = "top-k", value_name = "K", default_value_t = 40, help_heading = "Sampling")]
    top_k: i32,
    #[arg(long = "top-p", value_name = "P", default_value_t = 0.95, help_heading = "Sampling")]
    top_p: f32,
    #[arg(long = "min-p", value_name = "P", default_value_t = 0.05, help_heading = "Sampling")]
    min_p: f32,
    #[arg(long = "repeat-penalty", value_name = "X", default_value_t = 1.0, help_heading = "Sampling")]
    repeat_penalty: f32,
    #[arg(long = "repeat-last-n", value_name = "N", default_value_t = 64, help_heading = "Sampling")]
    repeat_last_n: i32,
    #[arg(long = "presence-penalty", value_name = "X", default_value_t = 0.0, help_heading = "Sampling")]
    presence_penalty: f32,
    #[arg(long = "frequency-penalty", value_name = "X", default_value_t = 0.0, help_heading = "Sampling")]
    frequency_penalty: f32,

    #[arg(
        long = "conversation",
        alias = "cnv",
        overrides_with = "no_conversation",
        help = "chat with the model's template (-cnv; default as llama-cli)",
        help_heading = "Chat"
    )]
    conversation: bool,
    #[arg(
        long = "no-conversation",
        alias = "no-cnv",
        overrides_with = "conversation",
        help = "raw completion (-no-cnv; default as rllama cli)",
        help_heading = "Chat"
    )]
    no_conversation: bool,
    #[arg(short = 'i', long = "interactive", visible_alias = "interactive-first", help = "raw interactive mode", help_heading = "Chat")]
    interactive: bool,
    #[arg(long = "single-turn", alias = "st", help = "one reply, then exit (-st)", help_heading = "Chat")]
    single_turn: bool,
    #[arg(long = "system-prompt", alias = "sys", value_name = "TEXT", help = "(-sys)", help_heading = "Chat")]
    system_prompt: Option<OsString>,
    #[arg(long = "system-prompt-file", alias = "sysf", value_name = "FILE", help = "(-sysf)", help_heading = "Chat")]
    system_prompt_file: Option<PathBuf>,
    #[arg(long = "chat-template", value_name = "NAME|JINJA", help = "built-in name or Jinja text", help_heading = "Chat")]
    chat_template: Option<OsString>,
    #[arg(long = "chat-template-file", value_name = "FILE", help_heading = "Chat")]
    chat_template_file: Option<PathBuf>,
    #[arg(short = 'r', long = "reverse-prompt", value_name = "TEXT", action = clap::ArgAction::Append, help = "stop the reply at this text (repeatable)", help_heading = "Chat")]
    reverse_prompt: Vec<OsString>,
    #[arg(long = "in-prefix", value_name = "TEXT", default_value = "", help_heading = "Chat")]
    in_prefix: OsString,
    #[arg(long = "in-suffix", value_name = "TEXT", default_value = "", help_heading = "Chat")]
    in_suffix: OsString,
    #[arg(long = "multiline-input", alias = "mli", help = "(-mli)", help_heading = "Chat")]
    multiline: bool,
    #[arg(long = "show-timings", overrides_with = "no_show_timings", help = "timings after each reply (default)", help_heading = "Chat")]
    show_timings: bool,
    #[arg(long = "no-show-timings", overrides_with = "show_timings", help_heading = "Chat")]
    no_show_timings: bool,

    #[command(flatten)]
    draft: DraftArgs,

    /// Accepted for compatibility; no effect.
    #[arg(long = "log-disable", help_heading = "Accepted, no effect")]
    log_disable: bool,
    #[arg(long = "verbose-prompt", help_heading = "Accepted, no effect")]
    verbose_prompt: bool,
    #[arg(long = "no-warmup", help_heading = "Accepted, no effect")]
    no_warmup: bool,
    #[arg(long = "no-display-prompt", help_heading = "Accepted, no effect")]
    no_display_prompt: bool,
    #[arg(long = "in-prefix-bos", help_heading = "Accepted, no effect")]
    in_prefix_bos: bool,
    #[arg(long = "jinja", help_heading = "Accepted, no effect")]
    jinja: bool,
    #[arg(long = "no-jinja", help_heading = "Accepted, no effect")]
    no_jinja: bool,
    #[arg(long = "simple-io", help_heading = "Accepted, no effect")]
    simple_io: bool,
    #[arg(long = "color", alias = "co", help_heading = "Accepted, no effect")]
    color: bool,
}

/// The draft flags (llama.cpp's new and old spellings).
#[derive(Args, Debug)]
pub struct DraftArgs {
    #[arg(
        long = "model-draft",
        visible_alias = "spec-draft-model",
        alias = "md",
        value_name = "FILE",
        help = "draft model for speculative decoding (-md)",
        help_heading = "Speculative"
    )]
    draft_model: Option<PathBuf>,
    #[arg(long = "spec-draft-n-max", visible_aliases = ["draft-max", "draft", "draft-n"], value_name = "N", default_value_t = 16, help = "most tokens drafted per round", help_heading = "Speculative")]
    draft_n_max: usize,
    #[arg(long = "spec-draft-n-min", visible_alias = "draft-min", value_name = "N", default_value_t = 0, help_heading = "Speculative")]
    draft_n_min: usize,
    #[arg(
        long = "spec-draft-p-min",
        visible_alias = "draft-p-min",
        value_name = "P",
        default_value_t = 0.0,
        help = "stop drafting below this draft probability",
        help_heading = "Speculative"
    )]
    draft_p_min: f32,
    #[arg(
        long = "ctx-size-draft",
        visible_alias = "spec-draft-ctx-size",
        alias = "cd",
        value_name = "N",
        help = "draft context (-cd; default: the target's)",
        help_heading = "Speculative"
    )]
    draft_n_ctx: Option<usize>,
    #[arg(
        long = "threads-draft",
        visible_alias = "spec-draft-threads",
        alias = "td",
        value_name = "N",
        help = "accepted (-td); one thread pool serves both models",
        help_heading = "Speculative"
    )]
    draft_threads: Option<String>,
    #[arg(
        long = "spec-type",
        value_name = "TYPES",
        help = "comma-separated speculative types: none, ngram-simple, ngram-map-k, ngram-mod, ngram-lookup (ngram: the best), early-exit (--spec-heads), draft-mtp (--spec-heads with an MTP head), draft-simple (-md)",
        help_heading = "Speculative"
    )]
    spec_type: Vec<String>,
    #[arg(long = "spec-ngram-simple-size-n", value_name = "N", default_value_t = 12, value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Speculative")]
    ngram_simple_n: u16,
    #[arg(long = "spec-ngram-simple-size-m", value_name = "N", default_value_t = 48, value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Speculative")]
    ngram_simple_m: u16,
    #[arg(long = "spec-ngram-simple-min-hits", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), help = "accepted (ngram-simple uses the first hit)", help_heading = "Speculative")]
    ngram_simple_min_hits: u16,
    #[arg(long = "spec-ngram-map-k-size-n", value_name = "N", default_value_t = 12, value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Speculative")]
    ngram_map_k_n: u16,
    #[arg(long = "spec-ngram-map-k-size-m", value_name = "N", default_value_t = 48, value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Speculative")]
    ngram_map_k_m: u16,
    #[arg(long = "spec-ngram-map-k-min-hits", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), help = "accepted (keys-only maps use the first hit)", help_heading = "Speculative")]
    ngram_map_k_min_hits: u16,
    #[arg(long = "spec-ngram-mod-n-match", value_name = "N", default_value_t = 24, value_parser = clap::value_parser!(u16).range(1..=1024), help_heading = "Speculative")]
    ngram_mod_n_match: u16,
    #[arg(long = "spec-ngram-mod-n-min", value_name = "N", default_value_t = 48, value_parser = clap::value_parser!(u16).range(0..=1024), help_heading = "Speculative")]
    ngram_mod_n_min: u16,
    #[arg(long = "spec-ngram-mod-n-max", value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u16).range(0..=1024), help_heading = "Speculative")]
    ngram_mod_n_max: u16,
    #[arg(long = "spec-ngram-lookup-n-min", value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64), help = "shortest n-gram ngram-lookup backs off to", help_heading = "Speculative")]
    ngram_lookup_n_min: u16,
    #[arg(long = "spec-ngram-lookup-n-max", value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u16).range(1..=64), help = "longest n-gram ngram-lookup tries first", help_heading = "Speculative")]
    ngram_lookup_n_max: u16,
    #[arg(long = "spec-ngram-lookup-draft-max", value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64), help = "most tokens an ngram-lookup round drafts", help_heading = "Speculative")]
    ngram_lookup_draft_max: u16,
    #[arg(
        long = "spec-heads",
        value_name = "HEADS.gguf",
        help = "heads file (rllama graft): exit heads for early-exit, an MTP head for draft-mtp",
        help_heading = "Speculative"
    )]
    spec_heads: Option<PathBuf>,
    #[arg(
        long = "spec-exit-layer",
        value_name = "L[+T]",
        help = "early-exit drafts only with this exit of the heads file (the first L layers, plus the last T) (default: each round the exit expected fastest)",
        help_heading = "Speculative"
    )]
    spec_exit_layer: Option<crate::heads::ExitSpec>,
    #[arg(
        long = "spec-draft-vocab",
        value_name = "K",
        help = format!("drafts over the first K tokens of the heads file's draft vocabulary (0: all; default: for an MTP head the size its graft weighed, else {}; all for -md)", crate::heads::DEFAULT_DRAFT_VOCAB),
        help_heading = "Speculative"
    )]
    spec_draft_vocab: Option<usize>,
    #[arg(
        long = "early-exit-threshold",
        value_name = "P",
        help = "lossy early exit: a token leaves at the first exit head (--spec-heads) whose top probability reaches P",
        help_heading = "Speculative"
    )]
    early_exit_threshold: Option<f32>,
    #[arg(long = "threads-batch-draft", alias = "tbd", value_name = "N", help = "accepted (-tbd)", help_heading = "Speculative")]
    draft_threads_batch: Option<String>,
    #[arg(
        long = "n-gpu-layers-draft",
        visible_alias = "gpu-layers-draft",
        alias = "ngld",
        value_name = "N",
        help = "accepted (-ngld)",
        help_heading = "Speculative"
    )]
    draft_gpu_layers: Option<String>,
}

impl TryFrom<DraftArgs> for DraftOpts {
    type Error = anyhow::Error;
    fn try_from(d: DraftArgs) -> Result<Self> {
        let mut types = SpecType::parse_list(&d.spec_type)?;
        // accepted: the first hit drafts (as llama.cpp's keys-only lookups)
        let _ = (d.ngram_simple_min_hits, d.ngram_map_k_min_hits);
        if d.draft_model.is_some() && !types.contains(&SpecType::DraftSimple) {
            // -md alone means draft-simple (llama.cpp infers it from the file)
            types.push(SpecType::DraftSimple);
        } else if d.draft_model.is_none() && types.contains(&SpecType::DraftSimple) {
            bail!("error: --spec-type draft-simple needs a draft model (-md FILE)");
        }
        if d.ngram_lookup_n_min > d.ngram_lookup_n_max {
            bail!("error: --spec-ngram-lookup-n-min {} is above --spec-ngram-lookup-n-max {}", d.ngram_lookup_n_min, d.ngram_lookup_n_max);
        }
        let ngram = NgramOpts {
            simple_n: d.ngram_simple_n.into(),
            simple_m: d.ngram_simple_m.into(),
            map_k_n: d.ngram_map_k_n.into(),
            map_k_m: d.ngram_map_k_m.into(),
            mod_n_match: d.ngram_mod_n_match.into(),
            mod_n_min: d.ngram_mod_n_min.into(),
            mod_n_max: d.ngram_mod_n_max.into(),
            lookup_n_min: d.ngram_lookup_n_min.into(),
            lookup_n_max: d.ngram_lookup_n_max.into(),
            lookup_draft_max: d.ngram_lookup_draft_max.into(),
            draft_vocab: d.spec_draft_vocab,
            mtp_p_min: d.draft_p_min,
            ..Default::default()
        };
        super::options::check_exit_threshold(d.early_exit_threshold, d.spec_heads.as_deref())?;
        if types.contains(&SpecType::EarlyExit) && d.spec_heads.is_none() {
            bail!("error: --spec-type early-exit needs exit heads (--spec-heads HEADS.gguf, written by rllama graft)");
        }
        Ok(DraftOpts {
            model: d.draft_model,
            n_max: d.draft_n_max,
            n_min: d.draft_n_min,
            p_min: d.draft_p_min,
            n_ctx: d.draft_n_ctx.filter(|&c| c > 0),
            types,
            ngram,
            heads: d.spec_heads,
            exit_layer: d.spec_exit_layer,
            threshold: d.early_exit_threshold,
        })
    }
}

fn read_bytes(what: &str, p: &Path) -> Result<Vec<u8>> {
    match std::fs::read(p) {
        Ok(b) => Ok(b),
        Err(e) => bail!("error: cannot read {what} {}: {e}", p.display()),
    }
}

/// A file's text, invalid UTF-8 read as llama.cpp reads it.
fn read_text(what: &str, p: &Path) -> Result<String> {
    Ok(crate::tokenizer::text_from_bytes(&read_bytes(what, p)?))
}

impl CliArgs {
    /// The options, with "last one wins" between paired flags as llama.cpp.
    pub fn into_opts(self, m: &ArgMatches, conversation_default: bool) -> Result<CliOpts> {
        if self.exact {
            crate::quant::fast::set_exact(true);
        }
        if self.gpu_layers.is_some() {
            eprintln!("note: rllama runs on the CPU only; the GPU layer count (-ngl) is ignored");
        }
        let prompt = match last_of(m, &["prompt", "file"]) {
            Some("file") => read_bytes("prompt file", self.file.as_deref().unwrap_or(Path::new("")))?,
            _ => self.prompt.as_deref().map(os_bytes).unwrap_or_default(),
        };
        let system_prompt = match last_of(m, &["system_prompt", "system_prompt_file"]) {
            Some("system_prompt_file") => read_text("system prompt file", self.system_prompt_file.as_deref().unwrap_or(Path::new("")))?,
            _ => self.system_prompt.as_deref().map(os_text).unwrap_or_default(),
        };
        let chat_template = match last_of(m, &["chat_template", "chat_template_file"]) {
            Some("chat_template_file") => Some(read_text("chat template file", self.chat_template_file.as_deref().unwrap_or(Path::new("")))?),
            _ => self.chat_template.as_deref().map(os_text),
        };
        let conversation = if self.conversation {
            true
        } else if self.no_conversation {
            false
        } else {
            conversation_default
        };
        let sampling = SamplerParams {
            seed: self.seed as u32,
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_last_n: self.repeat_last_n,
            repeat_penalty: self.repeat_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
        };
        let lora = crate::lora::parse_specs(&self.lora, &self.lora_scaled)?;
        Ok(CliOpts {
            lora,
            model: self.model,
            prompt,
            n_predict: self.n_predict,
            n_ctx: self.n_ctx,
            n_batch: self.n_batch,
            n_ubatch: self.n_ubatch,
            threads: self.threads,
            sampling,
            escape: !self.no_escape,
            ignore_eos: self.ignore_eos,
            conversation,
            interactive: self.interactive,
            single_turn: self.single_turn,
            system_prompt,
            chat_template,
            reverse_prompts: self.reverse_prompt.iter().map(|r| os_text(r)).collect(),
            in_prefix: os_text(&self.in_prefix),
            in_suffix: os_text(&self.in_suffix),
            multiline: self.multiline,
            show_timings: !self.no_show_timings,
            draft: self.draft.try_into()?,
        })
    }
}
