//! What completion and chat share: loading the model (and draft), building
//! the Generator, and the one loop that streams generated text until a stop
//! condition.

use super::options::CliOpts;
use crate::decode::drafters::Drafters;
use crate::decode::generator::Generator;
use crate::decode::speculative::{DraftLength, DraftModel, Drafter};
use crate::decode::Session;
use crate::model::Model;
use crate::sampling::Sampler;
use crate::tokenizer::{Tokenizer, Utf8Stream};
use anyhow::Result;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Most tokens drafted in one round (each round verifies them in one batch).
pub const MAX_DRAFT: usize = 64;

/// The loaded target (and draft) model with its tokenizer.
pub struct Setup {
    pub model: Model,
    pub tok: Tokenizer,
    pub draft: Option<Model>,
    /// Exit heads for early-exit drafting (`--spec-heads`).
    pub heads: Option<crate::heads::Heads>,
    /// The target's LoRA adapters with their scales.
    pub adapters: Option<std::sync::Arc<crate::ops::linear::AdapterSet>>,
    pub n_ctx: usize,
    pub t_start: Instant,
    pub t_load_ms: f64,
}

impl Setup {
    pub fn load(o: &CliOpts, model_path: &Path) -> Result<Self> {
        super::options::set_threads(o.threads);
        let t_start = Instant::now();
        let (model, tok) = super::options::load_model(model_path)?;
        let draft = match &o.draft.model {
            Some(p) => {
                let (d, dtok) = super::options::load_model(p)?;
                super::speculative::check_compatible(&tok, &dtok)?;
                Some(d)
            }
            None => None,
        };
        let heads = o.draft.heads.as_deref().map(|p| super::options::load_heads(p, &model)).transpose()?;
        let adapters = crate::lora::session_adapters(&model, &o.lora)?;
        let n_ctx = if o.n_ctx == 0 { model.cfg.n_ctx_train } else { o.n_ctx };
        let t_load_ms = t_start.elapsed().as_secs_f64() * 1e3;
        Ok(Setup { model, tok, draft, heads, adapters, n_ctx, t_start, t_load_ms })
    }

    pub fn n_batch(&self, o: &CliOpts) -> usize {
        o.n_batch.min(o.n_ubatch).max(1)
    }

    /// The drafters of `--spec-type` (and `-md`); None without any.
    pub fn drafters(&self, o: &CliOpts) -> Result<Option<Drafters<'_>>> {
        let cap = MAX_DRAFT.min(self.n_ctx / 2).max(1);
        let draft = match &self.draft {
            Some(d) => {
                if o.draft.n_max > cap {
                    eprintln!("note: --spec-draft-n-max {} capped at {cap} (context {}, at most {MAX_DRAFT})", o.draft.n_max, self.n_ctx);
                }
                let mut dm = DraftModel::new(d, o.draft.n_ctx.unwrap_or(self.n_ctx), self.n_batch(o), o.draft.p_min)?;
                // with heads and --spec-draft-vocab, the draft model drafts over
                // their draft vocabulary too (not by default: on code it lost
                // more acceptance than it saved time)
                let k = o.draft.ngram.draft_vocab.unwrap_or(0);
                if let Some((out, ids)) = self.heads.as_ref().map(|h| h.draft_output(d, k)).transpose()?.flatten() {
                    dm = dm.with_vocab(out, ids);
                }
                Some((dm, o.draft.n_max.min(cap), o.draft.n_min.min(cap)))
            }
            None => None,
        };
        let heads = self.heads.as_ref().map(|h| (&self.model, h, o.draft.exit_layer));
        let mtp = self.heads.as_ref().and_then(|h| h.mtp.as_ref()).or(self.model.nextn().first());
        let ds = Drafters::from_types(&o.draft.types, &o.draft.ngram, draft, heads, mtp, cap).map_err(|e| anyhow::anyhow!("error: {e}"))?;
        Ok((!ds.is_empty()).then_some(ds))
    }

    /// A generator on the target with the flags' sampler, drafting with `drafters`.
    pub fn generator<'s, 'd>(&'s self, o: &CliOpts, drafters: Option<&'d mut Drafters<'s>>) -> Result<Generator<'s, 'd>> {
        let len = match (drafters.as_ref(), std::env::var("RLLAMA_SPEC_FIXED").ok().and_then(|v| v.parse::<usize>().ok())) {
            (None, _) => DraftLength::new(0, 0),
            // measuring acceptance: every proposal drafted at this length
            (Some(d), Some(k)) => DraftLength::fixed_slots(&vec![(k, 0); d.n_classes()]),
            (Some(d), None) => d.length(),
        };
        let mut sess = Session::new(&self.model, self.n_ctx, self.n_batch(o))?;
        sess.scratch.set_adapters(self.adapters.clone());
        if let (Some(h), Some(p)) = (&self.heads, o.draft.threshold) {
            eprintln!("note: --early-exit-threshold {p} is lossy: tokens may leave the model at an exit head");
            sess.lossy = Some(crate::decode::early_exit::LossyExit::new(&self.model, h, p, h.exit_draft_rows(o.draft.ngram.draft_vocab))?);
        }
        let mut gen = Generator::new(sess, Sampler::new(o.sampling.clone()), drafters.map(|d| d as &mut dyn Drafter), len);
        if o.ignore_eos {
            // llama.cpp's -inf logit bias on every end-of-generation token
            gen.banned = self.tok.eog.iter().copied().filter(|&t| (t as usize) < self.model.cfg.n_vocab).collect();
        }
        Ok(gen)
    }
}

/// Why a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Eog,
    /// Reverse prompt i matched at the end of the text.
    Reverse(usize),
    Limit,
    ContextFull,
    Interrupted,
}

pub struct Reply {
    /// The text printed.
    pub text: String,
    /// With a reverse prompt: the text before it (a char boundary of `text`).
    pub cut: usize,
    pub stop: Stop,
    pub n_tokens: usize,
}

/// Generate and print tokens until an end-of-generation token (not printed,
/// not evaluated), `n_predict` tokens, a reverse prompt at the end of the
/// text, a full context or `interrupted()`.
/// `stream` may hold the incomplete bytes of what was printed before.
pub fn stream_reply(
    gen: &mut Generator,
    tok: &Tokenizer,
    mut stream: Utf8Stream,
    n_predict: i64,
    reverse: &[String],
    interrupted: &dyn Fn() -> bool,
) -> Result<Reply> {
    let mut out = std::io::stdout().lock();
    let mut text = String::new();
    let mut n = 0usize;
    let mut cut = None;
    let limit = |n: usize| n_predict >= 0 && n as i64 >= n_predict;
    let stop = 'gen: loop {
        if interrupted() {
            break Stop::Interrupted;
        }
        if limit(n) {
            break Stop::Limit;
        }
        if gen.context_full() {
            break Stop::ContextFull;
        }
        for t in gen.next()? {
            if tok.is_eog(t) {
                break 'gen Stop::Eog;
            }
            let piece = stream.push(&tok.token_bytes(t, false));
            out.write_all(piece.as_bytes())?;
            text.push_str(&piece);
            n += 1;
            if let Some(i) = reverse.iter().position(|r| !r.is_empty() && text.ends_with(r.as_str())) {
                cut = Some(text.len() - reverse[i].len());
                break 'gen Stop::Reverse(i);
            }
            if limit(n) {
                break 'gen Stop::Limit;
            }
        }
        out.flush()?;
    };
    let rest = stream.finish();
    out.write_all(rest.as_bytes())?;
    out.flush()?;
    text.push_str(&rest);
    let cut = cut.unwrap_or(text.len());
    Ok(Reply { text, cut, stop, n_tokens: n })
}
