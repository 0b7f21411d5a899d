//! `rllama export-lora` (alias `llama-export-lora`): LoRA adapters merged into
//! the base model's weights, written as llama-export-lora writes them.

use crate::lora;
use crate::quantize_model::Progress;
use anyhow::{bail, Result};
use clap::{ArgAction, Parser};
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::path::PathBuf;

/// llama-export-lora's default output file.
const DEFAULT_OUT: &str = "ggml-lora-merged-f16.gguf";

#[derive(Parser, Debug)]
#[command(about = "Merge LoRA adapters into a model (llama-export-lora); the merged tensors are written F16")]
pub struct ExportLoraArgs {
    #[arg(short = 'm', long = "model", value_name = "FNAME", help = "base model")]
    model: Option<PathBuf>,
    #[arg(long = "lora", value_name = "FNAME", action = ArgAction::Append, help = "LoRA adapter (repeatable, comma-separated)")]
    lora: Vec<OsString>,
    #[arg(long = "lora-scaled", value_name = "FNAME:SCALE", action = ArgAction::Append, help = "LoRA adapter with a user-defined scale")]
    lora_scaled: Vec<OsString>,
    #[arg(short = 'o', long = "output", visible_alias = "output-file", value_name = "FNAME", default_value = DEFAULT_OUT, help = "output file")]
    output: PathBuf,
    #[arg(
        long = "outtype",
        value_name = "TYPE",
        help = "write the merged model in this llama-quantize type (Q4_K_M, Q8_0, ...) in one pass; default F16 merged tensors as llama-export-lora"
    )]
    outtype: Option<String>,
    #[arg(short = 't', long = "threads", value_name = "N", help = "threads (default: every core)")]
    threads: Option<usize>,
    #[arg(long = "verbose", alias = "v", help = "accepted, no effect")]
    verbose: bool,
}

struct Bar {
    bar: ProgressBar,
    verbose: bool,
}

impl Progress for Bar {
    fn line(&mut self, s: &str) {
        if self.verbose {
            self.bar.suspend(|| eprintln!("{s}"));
        }
    }
    fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

pub fn run(prog: &str, args: Vec<OsString>) -> Result<()> {
    let Some((a, _)) = super::flags::parse::<ExportLoraArgs>(prog, args)? else { return Ok(()) };
    let Some(model) = a.model else { bail!("error: a base model is required (-m FNAME; see {prog} --help)") };
    let specs = lora::parse_specs(&a.lora, &a.lora_scaled)?;
    let outtype = match &a.outtype {
        None => None,
        Some(t) => match crate::quantize_model::ftype::Ftype::parse(t) {
            Some((ft, _)) => Some(ft),
            None => bail!("error: --outtype {t}: unknown or unsupported type (see rllama quantize --help)"),
        },
    };
    if specs.is_empty() {
        bail!("error: at least one adapter is required (--lora FNAME or --lora-scaled FNAME:SCALE)");
    }
    if a.output.is_dir() {
        bail!("error: cannot write {}: it is a directory", a.output.display());
    }
    if let (Ok(x), Ok(y)) = (std::fs::canonicalize(&model), std::fs::canonicalize(&a.output)) {
        if x == y {
            bail!("error: input and output files are the same: '{}'", model.display());
        }
    }
    super::options::set_threads(a.threads);
    let adapters = lora::load_all(&specs)?;
    let total = std::fs::metadata(&model).map(|m| m.len()).unwrap_or(0);
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut p = Bar { bar, verbose: a.verbose };
    let r = match outtype {
        None => lora::export::export(&model, &adapters, &a.output, &mut p)?,
        Some(ft) => lora::export::export_quantized(&model, &adapters, &a.output, ft, &mut p)?,
    };
    p.bar.finish_and_clear();
    eprintln!("run_merge : merged {} tensors with lora adapters", r.n_merged);
    eprintln!("run_merge : wrote {} tensors to output file", r.n_tensors);
    println!("done, output file is {}", a.output.display());
    Ok(())
}
