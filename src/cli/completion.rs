//! `rllama cli` (aliases `llama-completion`, `llama-cli`): raw completion with
//! llama-completion's stdout (prompt, then the generated text) and its perf
//! block on stderr; chat and interactive modes go to `chat`.

use super::generate::{stream_reply, Setup, Stop};
use super::options::{parse, print_perf, CliOpts};
use crate::tokenizer::Utf8Stream;
use anyhow::{bail, Result};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

pub fn run(prog: &str, args: Vec<std::ffi::OsString>, conversation_default: bool) -> Result<()> {
    let Some(o) = parse(prog, args, conversation_default)? else { return Ok(()) };
    let Some(model_path) = o.model.clone() else { bail!("error: a model is required (-m MODEL)") };
    if o.conversation || o.interactive {
        return super::chat::run(&o, &model_path);
    }
    generate(&o, &model_path)
}

/// `rllama speculative` (llama-speculative, llama-speculative-simple):
/// completion that requires something to draft with: a draft model or an
/// n-gram `--spec-type`.
pub fn run_speculative(prog: &str, args: Vec<std::ffi::OsString>) -> Result<()> {
    let Some(o) = super::options::parse(prog, args, false)? else { return Ok(()) };
    let Some(model_path) = o.model.clone() else { bail!("error: a model is required (-m MODEL)") };
    if o.draft.types.is_empty() {
        bail!("error: a draft model is required (-md FILE), or an n-gram --spec-type");
    }
    generate(&o, &model_path)
}

/// Raw completion through the decode loop, with a draft model when `-md` is given.
pub fn generate(o: &CliOpts, model_path: &Path) -> Result<()> {
    let setup = Setup::load(o, model_path)?;
    let (tok, n_ctx) = (&setup.tok, setup.n_ctx);
    let prompt_toks = tok.encode_bytes(&o.prompt, true, true)?;
    if prompt_toks.is_empty() {
        bail!("error: the prompt is empty");
    }
    if prompt_toks.len() > n_ctx.saturating_sub(4) {
        bail!("error: prompt is too long ({} tokens, max {})", prompt_toks.len(), n_ctx.saturating_sub(4));
    }
    let mut drafter = setup.drafters(o)?;
    let mut gen = setup.generator(o, drafter.as_mut())?;
    let mut out = std::io::stdout().lock();
    let mut stream = Utf8Stream::default();
    for &t in &prompt_toks {
        let s = stream.push(&tok.token_bytes(t, false));
        out.write_all(s.as_bytes())?;
    }
    out.flush()?;
    drop(out);
    let t_enc = Instant::now();
    gen.prompt(&prompt_toks)?;
    let enc_s = t_enc.elapsed().as_secs_f64();
    let t_dec = Instant::now();
    let reply = stream_reply(&mut gen, tok, stream, o.n_predict, &[], &|| false)?;
    let dec_s = t_dec.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    match reply.stop {
        Stop::Eog => out.write_all(b" [end of text]\n")?,
        Stop::ContextFull => eprintln!("\ncontext full ({n_ctx} tokens), stopping generation"),
        _ => {}
    }
    out.write_all(b"\n\n")?;
    out.flush()?;
    let (perf, stats, n_draft) = (gen.sess.perf.clone(), gen.stats.clone(), gen.len.n_max);
    if let Some(lx) = &gen.sess.lossy {
        eprintln!("{}", lx.summary());
    }
    drop(gen);
    if let Some(d) = &drafter {
        super::speculative::print_stats(n_draft, &stats, d, prompt_toks.len(), enc_s, reply.n_tokens as i64, dec_s);
    }
    print_perf(&perf, setup.t_load_ms, setup.t_start);
    Ok(())
}
