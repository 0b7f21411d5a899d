//! `rllama quantize` (alias `llama-quantize`): SRC [DST] TYPE [nthreads], with
//! llama-quantize's flags, per-tensor lines and size summary, plus a progress
//! bar on a terminal.

use crate::gguf::GgmlType;
use crate::quantize_model::ftype::{Ftype, OPTIONS, UNSUPPORTED};
use crate::quantize_model::plan::Params;
use crate::quantize_model::{mib, prepare, Progress};
use anyhow::{bail, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::time::Instant;

/// The quantization types, as llama-quantize lists them.
fn types_help() -> String {
    let mut s = String::from("allowed quantization types:\n");
    for (name, ft, _, desc) in OPTIONS {
        s.push_str(&format!("  {:2}  or  {:<7} : {}\n", ft.id(), name, desc));
    }
    s.push_str("\nNot supported: --imatrix, --tensor-type, --keep-split, --dry-run.");
    s
}

/// `rllama quantize` flags (llama-quantize's).
#[derive(Parser, Debug)]
#[command(about = "Write a GGUF file in another quantization type (llama-quantize)")]
pub struct QuantizeArgs {
    #[arg(long = "allow-requantize", help = "allow requantizing tensors that have already been quantized")]
    allow_requantize: bool,
    #[arg(long = "leave-output-tensor", help = "leave output.weight un(re)quantized")]
    leave_output_tensor: bool,
    #[arg(long = "pure", help = "disable k-quant mixtures and quantize all tensors to the same type")]
    pure: bool,
    #[arg(long = "output-tensor-type", value_name = "ggml_type", help = "use this ggml_type for the output.weight tensor")]
    output_tensor_type: Option<String>,
    #[arg(long = "token-embedding-type", value_name = "ggml_type", help = "use this ggml_type for the token embeddings tensor")]
    token_embedding_type: Option<String>,
    /// model-f32.gguf [model-quant.gguf] type [nthreads]
    #[arg(value_name = "SRC [DST] TYPE [NTHREADS]", allow_negative_numbers = true)]
    pos: Vec<std::ffi::OsString>,
}

fn parse_type(flag: &str, v: &str) -> Result<GgmlType> {
    match GgmlType::from_name(v) {
        Some(t) if crate::quant::quantize::can_quantize(t) => Ok(t),
        _ => bail!("error: {flag}: unknown or unsupported ggml type {v:?}"),
    }
}

fn parse_ftype(s: &str) -> Result<Option<(Ftype, &'static str)>> {
    if let Some(f) = Ftype::parse(s) {
        return Ok(Some(f));
    }
    if UNSUPPORTED.iter().any(|u| u.eq_ignore_ascii_case(s)) {
        bail!("error: quantization type {s} is not supported by rllama (it needs an importance matrix or a grid rllama does not implement)");
    }
    Ok(None)
}

struct Bar {
    bar: ProgressBar,
}

impl Progress for Bar {
    fn line(&mut self, s: &str) {
        self.bar.suspend(|| eprintln!("{s}"));
    }
    fn advance(&mut self, bytes: u64) {
        self.bar.inc(bytes);
    }
}

pub fn run(prog: &str, args: Vec<std::ffi::OsString>) -> Result<()> {
    let Some((a, _)) = super::flags::parse_with::<QuantizeArgs>(prog, args, |c| c.after_help(types_help()))? else { return Ok(()) };
    let mut p = Params { quantize_output: !a.leave_output_tensor, allow_requantize: a.allow_requantize, pure: a.pure, ..Default::default() };
    if let Some(t) = &a.output_tensor_type {
        p.output_tensor_type = Some(parse_type("--output-tensor-type", t)?);
    }
    if let Some(t) = &a.token_embedding_type {
        p.token_embedding_type = Some(parse_type("--token-embedding-type", t)?);
    }
    // paths need not be UTF-8; the type and thread count are read as text
    let paths = a.pos;
    let pos: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    // clap passes unknown flags on among the positionals (they may be negative numbers)
    if let Some(f) = pos.iter().find(|s| s.starts_with('-') && s.len() > 1 && s.parse::<i64>().is_err()) {
        bail!("error: invalid argument: {f} (see {prog} --help; --imatrix, --tensor-type, --keep-split and --dry-run are not supported)");
    }
    if pos.len() < 2 {
        bail!("error: bad arguments: need SRC [DST] TYPE [nthreads] (see rllama quantize --help)");
    }
    let src = PathBuf::from(&paths[0]);
    // SRC TYPE [n] or SRC DST TYPE [n], as llama-quantize tells them apart.
    let (dst, (ft, ft_name), rest) = match parse_ftype(&pos[1])? {
        Some(f) => {
            let dir = src.parent().map(|d| d.to_path_buf()).unwrap_or_default();
            (dir.join(format!("ggml-model-{}.gguf", f.1)), f, &pos[2..])
        }
        None => {
            let Some(t) = pos.get(2) else { bail!("error: missing quantization type") };
            match parse_ftype(t)? {
                Some(f) => (PathBuf::from(&paths[1]), f, &pos[3..]),
                None => bail!("error: invalid quantization type {t:?} (see rllama quantize --help)"),
            }
        }
    };
    let nthread: Option<usize> = match rest.first() {
        Some(n) => match n.parse::<i64>() {
            Ok(v) => (v > 0).then_some(v as usize),
            Err(_) => bail!("error: invalid nthread {n:?}"),
        },
        None => None,
    };
    if rest.len() > 1 {
        bail!("error: unexpected argument {:?}", rest[1]);
    }
    if !src.is_file() {
        bail!("error: cannot read {}: no such file", src.display());
    }
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(&src), std::fs::canonicalize(&dst)) {
        if a == b {
            bail!("error: input and output files are the same: '{}'", src.display());
        }
    }
    if dst.is_dir() {
        bail!("error: cannot write {}: it is a directory", dst.display());
    }
    match dst.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) if !d.is_dir() => bail!("error: cannot write {}: folder {} does not exist", dst.display(), d.display()),
        _ => {}
    }
    super::options::set_threads(nthread);
    let job = prepare(&src, ft, &p).map_err(|e| anyhow::anyhow!("error: failed to quantize model from '{}': {e:#}", src.display()))?;
    eprint!("main: quantizing '{}' to '{}' as {ft_name}", src.display(), dst.display());
    if let Some(n) = nthread {
        eprint!(" using {n} threads");
    }
    eprintln!();
    let t0 = Instant::now();
    let total = std::fs::metadata(&src).map(|m| m.len()).unwrap_or(0);
    let bar = ProgressBar::new(total);
    bar.set_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {elapsed_precise} ETA {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut prog = Bar { bar };
    let r = job.write(&dst, &mut prog);
    prog.bar.finish_and_clear();
    let r = r.map_err(|e| anyhow::anyhow!("error: failed to quantize model from '{}': {e:#}", src.display()))?;
    let bpw = |b: u64| b as f64 * 8.0 / r.n_elements.max(1) as f64;
    eprintln!("llama_model_quantize_impl: model size  = {:8.2} MiB ({:.2} BPW)", mib(r.size_org), bpw(r.size_org));
    eprintln!("llama_model_quantize_impl: quant size  = {:8.2} MiB ({:.2} BPW)", mib(r.size_new), bpw(r.size_new));
    if r.n_fallback > 0 {
        eprintln!("llama_model_quantize_impl: WARNING: {} of {} tensor(s) required fallback quantization", r.n_fallback, r.n_tensors);
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    println!();
    println!("main: quantize time = {ms:8.2} ms");
    println!("main:    total time = {ms:8.2} ms");
    Ok(())
}
