//! `rllama perplexity` (alias `llama-perplexity`): perplexity over a text file,
//! saving base log-probabilities (`--kl-divergence-base`) and KL divergence
//! against them (`--kl-divergence`), with llama-perplexity's output: progress
//! and the KLD table on stdout, the rest on stderr.

use super::options::set_threads;
use crate::model::Model;
use crate::perplexity::logits_file::LogitsReader;
use crate::perplexity::logprob::{covariance, mean_and_uncertainty, median, percentile, KldSums};
use crate::perplexity::{self as ppl};
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Context, Result};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// `rllama perplexity` flags (llama-perplexity's).
#[derive(Parser, Debug)]
#[command(about = "Perplexity and KL divergence over a text (llama-perplexity)")]
pub struct PplArgs {
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    model: Option<PathBuf>,
    #[arg(short = 'f', long = "file", value_name = "FILE", help = "the text")]
    file: Option<PathBuf>,
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 512, help = "tokens per chunk")]
    n_ctx: usize,
    #[arg(short = 'b', long = "batch-size", value_name = "N", default_value_t = 2048)]
    n_batch: usize,
    #[arg(long = "chunks", value_name = "N", default_value_t = -1, help = "chunks to score (-1 = all)")]
    chunks: i64,
    #[arg(short = 't', long = "threads", visible_alias = "threads-batch", alias = "tb", value_name = "N", help = "[default: every core]")]
    threads: Option<usize>,
    #[arg(
        long = "kl-divergence-base",
        visible_alias = "save-all-logits",
        value_name = "FILE",
        help = "save the base model's log-probabilities, or with --kl-divergence read them"
    )]
    logits_file: Option<PathBuf>,
    #[arg(long = "kl-divergence", help = "KL divergence against --kl-divergence-base FILE")]
    kl_divergence: bool,
    #[arg(long = "ppl-output-type", value_name = "0|1", default_value_t = 0, help = "progress as [i]ppl (0) or one line per chunk (1)")]
    output_type: u32,
    #[arg(long = "exact", help = "llama.cpp's rounding, bit for bit (default: fast kernels; also RLLAMA_EXACT=1)")]
    exact: bool,
    #[arg(long = "lora", value_name = "FNAME", action = clap::ArgAction::Append, help = "LoRA adapter (repeatable, comma-separated)")]
    lora: Vec<std::ffi::OsString>,
    #[arg(long = "lora-scaled", value_name = "FNAME:SCALE", action = clap::ArgAction::Append, help = "LoRA adapter with a user-defined scale (repeatable, comma-separated pairs)")]
    lora_scaled: Vec<std::ffi::OsString>,
    #[arg(long = "spec-heads", value_name = "HEADS.gguf", help = "exit heads (rllama graft) for --early-exit-threshold")]
    spec_heads: Option<PathBuf>,
    #[arg(
        long = "early-exit-threshold",
        value_name = "P",
        help = "lossy early exit: scored tokens leave at the first exit head whose top probability reaches P"
    )]
    early_exit_threshold: Option<f32>,
    #[arg(long = "ppl-stride", value_name = "N", default_value_t = 0, help = "only 0 (strided perplexity is not supported)")]
    stride: i64,
    #[arg(long = "ubatch-size", alias = "ub", value_name = "N", help_heading = "Accepted, no effect")]
    ubatch: Option<String>,
    #[arg(long = "n-gpu-layers", visible_alias = "gpu-layers", alias = "ngl", value_name = "N", help_heading = "Accepted, no effect")]
    ngl: Option<String>,
    #[arg(short = 's', long = "seed", value_name = "N", help_heading = "Accepted, no effect")]
    seed: Option<String>,
    #[arg(long = "flash-attn", alias = "fa", value_name = "X", help_heading = "Accepted, no effect")]
    fa: Option<String>,
    #[arg(long = "log-disable", help_heading = "Accepted, no effect")]
    log_disable: bool,
    #[arg(long = "no-mmap", help_heading = "Accepted, no effect")]
    no_mmap: bool,
    #[arg(long = "mlock", help_heading = "Accepted, no effect")]
    mlock: bool,
    #[arg(short = 'e', long = "escape", help_heading = "Accepted, no effect")]
    escape: bool,
    #[arg(long = "no-escape", help_heading = "Accepted, no effect")]
    no_escape: bool,
}

struct Opts {
    model: Option<PathBuf>,
    lora: Vec<crate::lora::LoraSpec>,
    /// The text's bytes (llama-perplexity tokenizes them as they are).
    text: Option<Vec<u8>>,
    n_ctx: usize,
    n_batch: usize,
    chunks: Option<usize>,
    threads: Option<usize>,
    logits_file: Option<PathBuf>,
    kl_divergence: bool,
    output_type: u32,
    heads: Option<PathBuf>,
    threshold: Option<f32>,
}

fn parse(prog: &str, args: Vec<std::ffi::OsString>) -> Result<Option<Opts>> {
    let Some((a, _)) = super::flags::parse_llama::<PplArgs>(prog, args)? else { return Ok(None) };
    if a.exact {
        crate::quant::fast::set_exact(true);
    }
    if a.output_type > 1 {
        bail!("error: --ppl-output-type takes 0 or 1");
    }
    if a.stride > 0 {
        bail!("error: --ppl-stride > 0 (strided perplexity) is not supported by rllama; use the default 0");
    }
    if a.n_ctx == 0 {
        bail!("error: perplexity tool requires '--ctx-size' > 0");
    }
    super::options::check_exit_threshold(a.early_exit_threshold, a.spec_heads.as_deref())?;
    let text = match &a.file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("error: cannot read {}", p.display()))?),
        None => None,
    };
    Ok(Some(Opts {
        lora: crate::lora::parse_specs(&a.lora, &a.lora_scaled)?,
        model: a.model,
        text,
        n_ctx: a.n_ctx,
        n_batch: a.n_batch,
        chunks: (a.chunks >= 0).then_some(a.chunks as usize),
        threads: a.threads,
        logits_file: a.logits_file,
        kl_divergence: a.kl_divergence,
        output_type: a.output_type,
        heads: a.spec_heads,
        threshold: a.early_exit_threshold,
    }))
}

pub fn run(prog: &str, args: Vec<std::ffi::OsString>) -> Result<()> {
    let Some(o) = parse(prog, args)? else { return Ok(()) };
    let Some(model_path) = o.model.clone() else { bail!("error: a model is required (-m MODEL; see {prog} --help)") };
    if o.kl_divergence && o.logits_file.is_none() {
        bail!("error: --kl-divergence needs the base model's file: --kl-divergence-base FILE");
    }
    if !o.kl_divergence && o.text.is_none() {
        bail!("error: a text file is required (-f FILE; see {prog} --help)");
    }
    // Open the base file before the (slower) model load so a wrong path fails at once.
    let base = match (&o.logits_file, o.kl_divergence) {
        (Some(p), true) => Some(LogitsReader::open(p).map_err(|e| anyhow::anyhow!("error: kl_divergence: {e:#}"))?),
        _ => None,
    };
    set_threads(o.threads);
    let (model, tok) = super::options::load_model(&model_path)?;
    let bos = if tok.add_bos { tok.bos } else { None };
    let adapters = crate::lora::session_adapters(&model, &o.lora)?;
    let heads = match (&o.heads, o.threshold) {
        (Some(p), Some(_)) => Some(super::options::load_heads(p, &model)?),
        _ => None,
    };
    let mut lossy =
        heads.as_ref().zip(o.threshold).map(|(h, p)| crate::decode::early_exit::LossyExit::new(&model, h, p, h.exit_draft_rows(None))).transpose()?;
    if lossy.is_some() {
        eprintln!("note: --early-exit-threshold is lossy: scored tokens may leave the model early");
    }
    let r = match base {
        Some(b) => run_kld(&o, &model, adapters, b, bos, lossy.as_mut()),
        None => run_ppl(&o, &model, adapters, &tok, bos, lossy.as_mut()),
    };
    if let Some(lx) = &lossy {
        eprintln!("{}", lx.summary());
    }
    r
}

/// llama.cpp's batch_size / n_seq for a context of n_ctx.
fn batch_and_seq(n_batch: usize, n_ctx: usize) -> (usize, usize) {
    let n_seq = (n_batch / n_ctx).max(1);
    (n_batch.min(n_seq * n_ctx), n_seq)
}

fn print_eta(tag: &str, t_chunk: f64, n_seq: usize, n_chunk: usize) {
    eprint!("{tag}: {:.2} seconds per pass - ETA ", t_chunk * n_seq.min(n_chunk) as f64);
    let mut total = (t_chunk * n_chunk as f64) as i64;
    let mut out = std::io::stdout().lock();
    if total >= 3600 {
        let _ = write!(out, "{} hours ", total / 3600);
        total %= 3600;
    }
    let _ = writeln!(out, "{:.2} minutes", total as f64 / 60.0);
    let _ = out.flush();
}

fn run_ppl(
    o: &Opts,
    model: &Model,
    adapters: Option<std::sync::Arc<crate::ops::linear::AdapterSet>>,
    tok: &Tokenizer,
    bos: Option<u32>,
    lossy: Option<&mut crate::decode::early_exit::LossyExit>,
) -> Result<()> {
    let text = o.text.as_deref().unwrap_or_default();
    let t0 = Instant::now();
    eprintln!("perplexity: tokenizing the input ..");
    let tokens = tok.encode_bytes(text, true, false)?;
    eprintln!("perplexity: tokenization took {:.4} ms", t0.elapsed().as_secs_f64() * 1e3);
    let n_chunk = ppl::n_chunks(tokens.len(), o.n_ctx, o.chunks)?;
    let (batch, n_seq) = batch_and_seq(o.n_batch, o.n_ctx);
    // Write the base file under a temporary name: a failed run leaves no half file.
    // (a failed run drops `tmp`, which removes it)
    let tmp = match &o.logits_file {
        Some(p) => {
            eprintln!("perplexity: saving all logits to {}", p.display());
            Some(crate::tmpfile::beside(p).with_context(|| format!("error: perplexity: failed to open {} for writing", p.display()))?)
        }
        None => None,
    };
    let mut file = match &tmp {
        Some(t) => Some(std::io::BufWriter::with_capacity(1 << 20, t.reopen().context("error: perplexity: cannot write the logits file")?)),
        None => None,
    };
    eprintln!("perplexity: calculating perplexity over {n_chunk} chunks, n_ctx={}, batch_size={batch}, n_seq={n_seq}", o.n_ctx);
    let mut t_chunk = Instant::now();
    let n_ctx = o.n_ctx;
    let output_type = o.output_type;
    let mut on_chunk = |c: usize, running: f64| {
        if c == 0 {
            print_eta("perplexity", t_chunk.elapsed().as_secs_f64(), n_seq, n_chunk);
        }
        let mut out = std::io::stdout().lock();
        if output_type == 0 {
            let _ = write!(out, "[{}]{:.4},", c + 1, running);
        } else {
            let _ = writeln!(out, "{:8}  {:.4}", c * n_ctx, running);
        }
        let _ = out.flush();
        t_chunk = Instant::now();
    };
    let save = file.as_mut().map(|f| f as &mut dyn Write);
    let r = ppl::perplexity(model, adapters, &tokens, bos, o.n_ctx, Some(n_chunk), o.n_batch, save, lossy, &mut on_chunk);
    let r = r?;
    if let Some(mut f) = file.take() {
        f.flush().context("error: perplexity: cannot write the logits file")?;
    }
    if let (Some(p), Some(t)) = (&o.logits_file, tmp) {
        crate::tmpfile::persist(t, p).map_err(|e| anyhow::anyhow!("error: {e:#}"))?;
    }
    println!();
    match r.ppl_err {
        Some(err) => eprintln!("Final estimate: PPL = {:.4} +/- {:.5}", r.ppl, err),
        None => eprintln!("Unexpected negative standard deviation of log(prob)"),
    }
    println!();
    Ok(())
}

fn run_kld(
    o: &Opts,
    model: &Model,
    adapters: Option<std::sync::Arc<crate::ops::linear::AdapterSet>>,
    mut base: LogitsReader,
    bos: Option<u32>,
    lossy: Option<&mut crate::decode::early_exit::LossyExit>,
) -> Result<()> {
    let (batch, n_seq) = batch_and_seq(o.n_batch, base.n_ctx);
    let n_chunk = base.n_chunk;
    eprintln!("kl_divergence: computing over {n_chunk} chunks, n_ctx={}, batch_size={batch}, n_seq={n_seq}", base.n_ctx);
    let mut t_chunk = Instant::now();
    let mut on_chunk = |c: usize, k: &KldSums| {
        let mut out = std::io::stdout().lock();
        if c == 0 {
            print_eta("kl_divergence", t_chunk.elapsed().as_secs_f64(), n_seq, n_chunk);
            let _ = writeln!(out);
            let _ = writeln!(out, "chunk             PPL               ln(PPL(Q)/PPL(base))          KL Divergence              Δp RMS            Same top p");
        }
        let _ = writeln!(out, "{}", chunk_line(c, k));
        let _ = out.flush();
        t_chunk = Instant::now();
    };
    let mut r =
        ppl::kl_divergence(model, adapters, &mut base, bos, o.n_batch, lossy, &mut on_chunk).map_err(|e| anyhow::anyhow!("error: kl_divergence: {e:#}"))?;
    println!();
    if r.sums.count >= 100 {
        print!("{}", summary(&r.sums, &mut r.kld_values, &mut r.p_diff_values));
    }
    println!();
    Ok(())
}

struct Derived {
    ppl: (f64, f64),
    ppl_base: (f64, f64),
    log_ppl: (f64, f64),
    log_ppl_base: (f64, f64),
    log_ppl_cov: f64,
    ratio: (f64, f64),
    kld: (f64, f64),
    rms_dp: (f64, f64),
    /// Share of tokens with the same top token, and its uncertainty.
    same_top: (f64, f64),
}

fn derive(k: &KldSums) -> Derived {
    let log_ppl = mean_and_uncertainty(k.sum_nll, k.sum_nll2, k.count);
    let log_ppl_base = mean_and_uncertainty(k.sum_nll_base, k.sum_nll_base2, k.count);
    let ppl = log_ppl.0.exp();
    let ppl_base = log_ppl_base.0.exp();
    let log_ppl_cov = covariance(k.sum_nll, k.sum_nll_base, k.sum_nll_nll_base, k.count);
    let ratio_unc = (log_ppl.1 * log_ppl.1 + log_ppl_base.1 * log_ppl_base.1 - 2.0 * log_ppl_cov).sqrt();
    let mse = mean_and_uncertainty(k.sum_p_diff2, k.sum_p_diff4, k.count);
    let rms = mse.0.sqrt();
    let top = k.n_same_top as f64 / k.count as f64;
    Derived {
        ppl: (ppl, ppl * log_ppl.1),
        ppl_base: (ppl_base, ppl_base * log_ppl_base.1),
        log_ppl,
        log_ppl_base,
        log_ppl_cov,
        ratio: (log_ppl.0 - log_ppl_base.0, ratio_unc),
        kld: mean_and_uncertainty(k.sum_kld, k.sum_kld2, k.count),
        rms_dp: (rms, 0.5 / rms * mse.1),
        same_top: (top, (top * (1.0 - top) / (k.count as f64 - 1.0)).sqrt()),
    }
}

/// One row of llama-perplexity's per-chunk KLD table.
fn chunk_line(c: usize, k: &KldSums) -> String {
    let d = derive(k);
    format!(
        "{:4}    {:9.4} ± {:9.4}    {:10.5} ± {:10.5}    {:10.5} ± {:10.5}    {:6.3} ± {:6.3} %    {:6.3} ± {:6.3} %",
        c + 1,
        d.ppl.0,
        d.ppl.1,
        d.ratio.0,
        d.ratio.1,
        d.kld.0,
        d.kld.1,
        100.0 * d.rms_dp.0,
        100.0 * d.rms_dp.1,
        100.0 * d.same_top.0,
        100.0 * d.same_top.1
    )
}

/// llama-perplexity's three statistics blocks after a KLD run.
fn summary(k: &KldSums, kld: &mut [f32], dp: &mut [f32]) -> String {
    kld.sort_by(f32::total_cmp);
    dp.sort_by(f32::total_cmp);
    let d = derive(k);
    let mut s = String::new();
    let mut line = |l: String| {
        s.push_str(&l);
        s.push('\n');
    };
    line("====== Perplexity statistics ======".into());
    line(format!("Mean PPL(Q)                   : {:10.6} ± {:10.6}", d.ppl.0, d.ppl.1));
    line(format!("Mean PPL(base)                : {:10.6} ± {:10.6}", d.ppl_base.0, d.ppl_base.1));
    let cor = d.log_ppl_cov / (d.log_ppl.1 * d.log_ppl_base.1);
    line(format!("Cor(ln(PPL(Q)), ln(PPL(base))): {:6.2}%", 100.0 * cor));
    line(format!("Mean ln(PPL(Q)/PPL(base))     : {:10.6} ± {:10.6}", d.ratio.0, d.ratio.1));
    let r = d.ratio.0.exp();
    line(format!("Mean PPL(Q)/PPL(base)         : {:10.6} ± {:10.6}", r, r * d.ratio.1));
    let ppl_cov = d.ppl.0 * d.ppl_base.0 * d.log_ppl_cov;
    let diff_unc = (d.ppl.1 * d.ppl.1 + d.ppl_base.1 * d.ppl_base.1 - 2.0 * ppl_cov).sqrt();
    line(format!("Mean PPL(Q)-PPL(base)         : {:10.6} ± {:10.6}", d.ppl.0 - d.ppl_base.0, diff_unc));
    line(String::new());
    line("====== KL divergence statistics ======".into());
    line(format!("Mean    KLD: {:10.6} ± {:10.6}", d.kld.0, d.kld.1));
    line(format!("Maximum KLD: {:10.6}", kld[kld.len() - 1]));
    for (name, f) in [("99.9%", 0.999f32), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900)] {
        line(format!("{name}   KLD: {:10.6}", percentile(kld, f)));
    }
    line(format!("Median  KLD: {:10.6}", median(kld)));
    for (name, f) in [("10.0%", 0.100f32), (" 5.0%", 0.050), (" 1.0%", 0.010), (" 0.1%", 0.001)] {
        line(format!("{name}   KLD: {:10.6}", percentile(kld, f)));
    }
    line(format!("Minimum KLD: {:10.6}", kld[0]));
    line(String::new());
    line("====== Token probability statistics ======".into());
    let p = mean_and_uncertainty(k.sum_p_diff, k.sum_p_diff2, k.count);
    line(format!("Mean    Δp: {:6.3} ± {:5.3} %", 100.0 * p.0, 100.0 * p.1));
    line(format!("Maximum Δp: {:6.3}%", 100.0 * dp[dp.len() - 1]));
    for (name, f) in [("99.9%", 0.999f32), ("99.0%", 0.990), ("95.0%", 0.950), ("90.0%", 0.900), ("75.0%", 0.750)] {
        line(format!("{name}   Δp: {:6.3}%", 100.0 * percentile(dp, f)));
    }
    line(format!("Median  Δp: {:6.3}%", 100.0 * median(dp)));
    for (name, f) in [("25.0%", 0.250f32), ("10.0%", 0.100), (" 5.0%", 0.050), (" 1.0%", 0.010), (" 0.1%", 0.001)] {
        line(format!("{name}   Δp: {:6.3}%", 100.0 * percentile(dp, f)));
    }
    line(format!("Minimum Δp: {:6.3}%", 100.0 * dp[0]));
    line(format!("RMS Δp    : {:6.3} ± {:5.3} %", 100.0 * d.rms_dp.0, 100.0 * d.rms_dp.1));
    line(format!("Same top p: {:6.3} ± {:5.3} %", 100.0 * d.same_top.0, 100.0 * d.same_top.1));
    s
}
