//! `rllama extract-lora`: an adapter from the difference of a tuned model and
//! its base (none of llama.cpp, ik_llama.cpp, candle has it).

use crate::gguf::GgufFile;
use crate::lora::extract::{extract, ExtractParams, DEFAULT_TENSORS};
use crate::quantize_model::Progress;
use anyhow::{bail, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Extract a LoRA adapter (llama.cpp's format) whose BASE + adapter approximates TUNED, by a truncated SVD of each matrix's difference")]
pub struct ExtractLoraArgs {
    #[arg(short = 'm', long = "model", value_name = "TUNED", help = "the tuned model")]
    model: Option<PathBuf>,
    #[arg(long = "base", value_name = "BASE", help = "the base model")]
    base: Option<PathBuf>,
    #[arg(short = 'o', long = "output", value_name = "OUT.gguf", help = "adapter file to write")]
    output: Option<PathBuf>,
    #[arg(long = "rank", value_name = "R", help = "rank per matrix (the largest with --energy)")]
    rank: Option<usize>,
    #[arg(long = "tensors", value_name = "REGEX", default_value = DEFAULT_TENSORS, help = "which matrices get a pair")]
    tensors: String,
    #[arg(long = "energy", value_name = "F", help = "per matrix the smallest rank keeping this share (0..1] of the difference's Frobenius norm")]
    energy: Option<f64>,
    #[arg(short = 't', long = "threads", value_name = "N", help = "threads (default: every core)")]
    threads: Option<usize>,
}

struct Bar(ProgressBar);

impl Progress for Bar {
    fn line(&mut self, s: &str) {
        self.0.suspend(|| eprintln!("{s}"));
    }
    fn advance(&mut self, bytes: u64) {
        self.0.inc(bytes);
    }
}

pub fn run(prog: &str, args: Vec<OsString>) -> Result<()> {
    let Some((a, _)) = super::flags::parse::<ExtractLoraArgs>(prog, args)? else { return Ok(()) };
    let (Some(tuned), Some(base), Some(out), Some(rank)) = (a.model, a.base, a.output, a.rank) else {
        bail!("error: -m TUNED, --base BASE, -o OUT.gguf and --rank R are required (see {prog} --help)")
    };
    if let Some(f) = a.energy {
        if !(f > 0.0 && f <= 1.0) {
            bail!("error: --energy {f}: expected a share in (0, 1]");
        }
    }
    let tensors = regex::Regex::new(&a.tensors).map_err(|e| anyhow::anyhow!("error: --tensors: {e}"))?;
    if out.is_dir() {
        bail!("error: cannot write {}: it is a directory", out.display());
    }
    super::options::set_threads(a.threads);
    let (gt, gb) = (GgufFile::open(&tuned)?, GgufFile::open(&base)?);
    let total = std::fs::metadata(&tuned).map(|m| m.len()).unwrap_or(0) + std::fs::metadata(&base).map(|m| m.len()).unwrap_or(0);
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ProgressBar::new(total) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut p = Bar(bar);
    let (w, reports) = extract(&gt, &gb, &ExtractParams { rank, energy: a.energy, tensors }, &mut p)?;
    p.0.finish_and_clear();
    let tmp = crate::tmpfile::beside(&out)?;
    std::fs::write(tmp.path(), w.to_bytes())?;
    crate::tmpfile::persist(tmp, &out)?;
    let n = reports.iter().filter(|r| r.rank > 0).count();
    let mean = reports.iter().map(|r| r.kept).sum::<f64>() / reports.len().max(1) as f64;
    eprintln!("extract-lora: {n} pairs (of {} matrices), mean share of the difference kept {:.2}%", reports.len(), 100.0 * mean);
    println!("done, output file is {}", out.display());
    Ok(())
}
