//! `rllama graft`: exit heads for early-exit drafting, fitted on calibration
//! text and written to a sidecar heads file (`--spec-heads`).

use crate::heads::graft::{graft_exits, heads_writer, GraftParams, GraftProgress};
use crate::heads::mtp::{graft_mtp, MtpParams};
use crate::heads::ExitSpec;
use crate::model::Model;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    about = "Fit exit heads (hidden state after L blocks -> final hidden state, closed-form ridge) on calibration text and write them to a heads file for --spec-heads"
)]
pub struct GraftArgs {
    #[arg(short = 'm', long = "model", value_name = "MODEL")]
    model: Option<PathBuf>,
    #[arg(short = 'f', long = "file", value_name = "CALIB.txt", help = "calibration text")]
    file: Option<PathBuf>,
    #[arg(
        long = "exit-layers",
        value_name = "L1,L2,...",
        help = "blocks before each exit head; L+T: the first L blocks, then the last T (middle layers skipped)",
        value_delimiter = ','
    )]
    exit_layers: Vec<ExitSpec>,
    #[arg(long = "mtp", help = "also graft a multi-token-prediction head (for --spec-type draft-mtp)")]
    mtp: bool,
    #[arg(
        long = "mtp-type",
        value_name = "TYPE",
        default_value = "q4_k_m",
        help = "type of the MTP head's matrices (f32, f16, q8_0, q4_k, ...; q4_k_m: Q4_K with Q6_K for attn_v and ffn_down); rows a type's blocks do not divide are Q8_0"
    )]
    mtp_type: String,
    #[arg(
        long = "mtp-ff",
        value_name = "N",
        help = "the MTP head's feed-forward width (default: half the model's, rounded up to a multiple of 256); narrower trains and drafts faster"
    )]
    mtp_ff: Option<usize>,
    #[arg(long = "epochs", value_name = "N", default_value_t = 2, help = "MTP head training epochs (0: the closed-form head)")]
    epochs: usize,
    #[arg(long = "lr", value_name = "F", default_value_t = 3e-4, help = "MTP head learning rate (AdamW; cosine decay to a tenth over the run)")]
    lr: f64,
    #[arg(
        long = "train-depth",
        value_name = "N",
        default_value_t = 2,
        help = "MTP draft positions trained: 1 the first only, N also chained N-1 times on the head's own rows, as drafting runs it"
    )]
    train_depth: usize,
    #[arg(
        long = "self-distill",
        value_name = "N",
        default_value_t = crate::heads::mtp::DEFAULT_SELF_DISTILL,
        help = "also train the MTP head on ~N tokens the model generates answering requests (built-in, or --distill-prompts; 1 in 8 answers held out; 0: the calibration text only)"
    )]
    self_distill: usize,
    #[arg(
        long = "distill-prompts",
        value_name = "FILE",
        help = "requests the model answers for --self-distill, one per line (default: built-in code and prose requests)"
    )]
    distill_prompts: Option<PathBuf>,
    #[arg(long = "tokens", value_name = "N", help = "use the first N tokens of the calibration text")]
    max_tokens: Option<usize>,
    #[arg(short = 'o', long = "output", value_name = "HEADS.gguf")]
    output: Option<PathBuf>,
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 512, help = "tokens per chunk")]
    n_ctx: usize,
    #[arg(long = "chunks", value_name = "N", help = "chunks to fit on (default: all but the held-out ones)")]
    chunks: Option<usize>,
    #[arg(long = "holdout", value_name = "N", default_value_t = 2, help = "last chunks held out to report agreement")]
    holdout: usize,
    #[arg(long = "ridge", value_name = "F", default_value_t = 1e-3, help = "ridge strength (share of the mean variance)")]
    ridge: f64,
    #[arg(short = 't', long = "threads", value_name = "N")]
    threads: Option<usize>,
}

struct Bar(ProgressBar, Option<f64>);

impl GraftProgress for Bar {
    fn chunk(&mut self, done: usize, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(done as u64);
    }
    fn line(&mut self, s: &str) {
        self.0.suspend(|| eprintln!("{s}"));
    }
    fn train(&mut self, epoch: usize, step: usize, steps: usize, loss: f64, agree: Option<f64>) {
        self.0.set_length(steps as u64);
        self.0.set_position(step as u64);
        let a = agree.map_or(String::new(), |a| format!(", held-out agreement {:.1}%", 100.0 * a));
        self.0.set_message(format!("training epoch {} loss {loss:.4}{a}", epoch + 1));
        if agree != self.1 {
            // an epoch ended
            self.1 = agree;
            self.0.suspend(|| eprintln!("training: epoch {} ({step}/{steps} steps), loss {loss:.4}{a}", epoch + 1));
        }
    }
}

/// `n` requests in the model's chat format (see `heads::requests`); none
/// without a chat template (calibration snippets are used).
fn distill_prompts(model: &Model, tok: &Tokenizer, text: &str, requests: &[String], n: usize) -> Vec<Vec<u32>> {
    let Ok(tmpl) = crate::chat::template::ChatTemplate::new(None, &model.g, tok) else { return Vec::new() };
    let passages: Vec<&str> = text.split("\n\n").map(str::trim).filter(|p| (200..1500).contains(&p.len())).collect();
    crate::heads::requests::texts(requests, &passages, n)
        .iter()
        .filter_map(|r| {
            let msg = crate::chat::template::Message::new("user", r);
            let rendered = tmpl.render(&[msg], true).ok()?;
            tok.encode(&rendered, true, true).ok()
        })
        .collect()
}

pub fn run(prog: &str, args: Vec<OsString>) -> Result<()> {
    let Some((a, _)) = super::flags::parse::<GraftArgs>(prog, args)? else { return Ok(()) };
    let (Some(mp), Some(fp), Some(out)) = (a.model, a.file, a.output) else {
        bail!("error: -m MODEL, -f CALIB.txt, --exit-layers L1,... (or --mtp) and -o HEADS.gguf are required (see {prog} --help)")
    };
    if !(a.ridge > 0.0 && a.ridge.is_finite()) {
        bail!("error: --ridge {}: expected a positive number", a.ridge);
    }
    if out.is_dir() {
        bail!("error: cannot write {}: it is a directory", out.display());
    }
    for input in [&mp, &fp] {
        if let (Ok(x), Ok(y)) = (std::fs::canonicalize(input), std::fs::canonicalize(&out)) {
            if x == y {
                bail!("error: the heads file would overwrite an input: '{}'", input.display());
            }
        }
    }
    let mtp_ty = match crate::heads::mtp::HeadTypes::from_name(&a.mtp_type) {
        Some(t) if crate::quant::quantize::can_quantize(t.base) && crate::quant::quantize::can_quantize(t.sensitive) => t,
        _ => bail!("error: --mtp-type {}: not a weight type rllama can write", a.mtp_type),
    };
    super::options::set_threads(a.threads);
    let text = match std::fs::read(&fp) {
        Ok(b) => crate::tokenizer::text_from_bytes(&b),
        Err(e) => bail!("error: cannot read calibration file {}: {e}", fp.display()),
    };
    let requests: Vec<String> = match &a.distill_prompts {
        Some(f) => match std::fs::read(f) {
            Ok(b) => crate::tokenizer::text_from_bytes(&b).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
            Err(e) => bail!("error: cannot read --distill-prompts file {}: {e}", f.display()),
        },
        None => Vec::new(),
    };
    let (model, tok) = super::options::load_model(&mp)?;
    if let Some(n) = a.mtp_ff.filter(|&n| n == 0 || n > model.cfg.n_ff) {
        bail!("error: --mtp-ff {n}: the head's feed-forward width must be 1..={} (the model's)", model.cfg.n_ff);
    }
    let mut tokens = tok.encode(&text, true, false)?;
    if let Some(n) = a.max_tokens {
        tokens.truncate(n);
    }
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) { ProgressBar::new(1) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} {eta} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut p = Bar(bar, None);
    let params = GraftParams { exit_layers: a.exit_layers, n_ctx: a.n_ctx, chunks: a.chunks, holdout: a.holdout, ridge: a.ridge };
    let t0 = std::time::Instant::now();
    let mut w = heads_writer(&model, &tokens)?;
    let reports = if params.exit_layers.is_empty() && a.mtp {
        Vec::new()
    } else {
        graft_exits(&model, &tokens, &params, &mut w, &mut p).map_err(|e| anyhow::anyhow!("error: {e}"))?
    };
    let mtp = if a.mtp {
        let mp = MtpParams {
            n_ctx: a.n_ctx,
            chunks: a.chunks,
            holdout: a.holdout,
            ridge: a.ridge,
            ty: mtp_ty,
            epochs: a.epochs,
            lr: a.lr,
            self_distill: a.self_distill,
            depth: a.train_depth,
            train_vocab: crate::heads::DEFAULT_DRAFT_VOCAB,
            distill_prompts: distill_prompts(&model, &tok, &text, &requests, crate::heads::mtp::distill_requests(a.self_distill)),
            stop: (0..model.cfg.n_vocab as u32).filter(|&t| tok.is_eog(t)).collect(),
            n_ff: a.mtp_ff,
        };
        Some(graft_mtp(&model, &tokens, &mp, &mut w, &mut p).map_err(|e| anyhow::anyhow!("error: {e}"))?)
    } else {
        None
    };
    p.0.finish_and_clear();
    let tmp = crate::tmpfile::beside(&out)?;
    std::fs::write(tmp.path(), w.to_bytes())?;
    crate::tmpfile::persist(tmp, &out)?;
    let fit = (tokens.len() / params.n_ctx).saturating_sub(params.holdout).min(params.chunks.unwrap_or(usize::MAX)) * params.n_ctx;
    eprintln!(
        "graft: fitted on {fit} tokens, {:.1} s; top-1 agreement with the full model on {} held-out tokens:",
        t0.elapsed().as_secs_f64(),
        params.holdout * params.n_ctx
    );
    if let Some(m) = &mtp {
        let pos = |v: &[f64]| v.iter().enumerate().map(|(k, a)| format!("draft {}: {:.1}%", k + 1, 100.0 * a)).collect::<Vec<_>>().join(", ");
        let show = |g: &crate::heads::mtp::Agreement| {
            let answers = g.answers.as_ref().map_or(String::new(), |v| format!("; on {} held-out answer tokens: {}", m.held_answers, pos(v)));
            format!("{}{answers}", pos(&g.text))
        };
        eprintln!("  MTP head ({} held-out positions, {} self-distilled tokens): {}", m.held_out, m.distilled, show(&m.agree));
        eprintln!("  acceptance in drafting's rounds replayed, given the drafts before stood (the drafting policy's prior): {}", pos(&m.agree.accept));
        if a.epochs > 0 {
            eprintln!("  (closed-form start: {})", show(&m.agree_start));
        }
        if let Some(k) = m.draft_rows {
            let w: Vec<String> = m.rows_weighed.iter().map(|w| format!("{} rows {:.1}% ({:.1}% of a step)", w.rows, 100.0 * w.agree, 100.0 * w.cost)).collect();
            eprintln!("  draft vocabulary: {k} rows by default (first drafts agreeing on the held-out answers: {})", w.join(", "));
        }
        let times: Vec<String> = m.times.iter().map(|(what, t)| format!("{what} {t:.1} s")).collect();
        eprintln!("  time: {}", times.join(", "));
    }
    for r in &reports {
        eprintln!(
            "  exit {:>5} ({:2} of {} blocks): head {:5.1}%  (logit lens {:5.1}%)",
            r.exit.to_string(),
            r.exit.blocks(),
            model.cfg.n_layer,
            100.0 * r.agree,
            100.0 * r.agree_lens
        );
    }
    println!("done, output file is {}", out.display());
    Ok(())
}
