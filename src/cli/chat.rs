//! Conversation (`-cnv`, the `llama-cli` default) and raw interactive (`-i`)
//! modes of `rllama cli`. Each turn renders the whole conversation with the
//! chat template, keeps the KV cache for the tokens it shares with what was
//! already evaluated and processes only the rest. Replies stop at the
//! end-of-generation tokens or a reverse prompt; Ctrl-C stops the reply, a
//! second Ctrl-C (or one while waiting for input), `/exit` or EOF ends.

use super::completion::{print_perf, set_threads, CliOpts};
use crate::chat::{common_prefix, ChatTemplate, Message};
use crate::decode::{Perf, Session};
use crate::model::Model;
use crate::sampling::Sampler;
use crate::tokenizer::{Tokenizer, Utf8Stream};
use anyhow::{bail, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Instant;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static READING: AtomicBool = AtomicBool::new(false);

fn install_ctrl_c() {
    let _ = ctrlc::set_handler(|| {
        if READING.load(SeqCst) || INTERRUPTED.load(SeqCst) {
            println!();
            std::process::exit(130);
        }
        INTERRUPTED.store(true, SeqCst);
    });
}

/// Read one user message as llama.cpp's console does: a line ending in `\`
/// flips whether input continues (so does `--multiline-input`), a line ending
/// in `/` always submits. None at EOF.
fn read_input(multiline: bool) -> Option<String> {
    READING.store(true, SeqCst);
    let stdin = std::io::stdin();
    let mut buf = String::new();
    let mut got_any = false;
    loop {
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => got_any = true,
        }
        while line.ends_with('\n') || line.ends_with('\r') {
            line.pop();
        }
        let mut more = multiline;
        if line.ends_with('/') {
            line.pop();
            buf.push_str(&line);
            buf.push('\n');
            break;
        }
        if line.ends_with('\\') {
            line.pop();
            more = !more;
        }
        buf.push_str(&line);
        buf.push('\n');
        if !more {
            break;
        }
    }
    READING.store(false, SeqCst);
    got_any.then_some(buf)
}

enum Stop {
    Eog,
    Reverse(usize),
    Limit,
    ContextFull,
    Interrupted,
}

struct Reply {
    text: String,
    stop: Stop,
}

/// Sample and print tokens until a stop condition; the sampled end token is
/// not evaluated. `cached` gets every evaluated token.
fn generate(sess: &mut Session, tok: &Tokenizer, sampler: &mut Sampler, mut logits: Vec<f32>, o: &CliOpts, cached: &mut Vec<u32>) -> Result<Reply> {
    let mut out = std::io::stdout().lock();
    let mut stream = Utf8Stream::default();
    let mut text = String::new();
    let mut n = 0i64;
    let stop = loop {
        if INTERRUPTED.swap(false, SeqCst) {
            break Stop::Interrupted;
        }
        if o.n_predict >= 0 && n >= o.n_predict {
            break Stop::Limit;
        }
        if sess.kv.len >= sess.n_ctx() {
            break Stop::ContextFull;
        }
        let ts = Instant::now();
        let next = sampler.sample(&logits);
        sampler.accept(next);
        sess.perf.t_sample_ms += ts.elapsed().as_secs_f64() * 1e3;
        sess.perf.n_sample += 1;
        if tok.is_eog(next) && !o.ignore_eos {
            break Stop::Eog;
        }
        let piece = stream.push(&tok.token_bytes(next, false));
        out.write_all(piece.as_bytes())?;
        out.flush()?;
        text.push_str(&piece);
        n += 1;
        logits = sess.step(next)?;
        cached.push(next);
        if let Some(i) = o.reverse_prompts.iter().position(|r| !r.is_empty() && text.ends_with(r.as_str())) {
            break Stop::Reverse(i);
        }
    };
    let rest = stream.finish();
    out.write_all(rest.as_bytes())?;
    text.push_str(&rest);
    out.flush()?;
    Ok(Reply { text, stop })
}

fn turn_timings(before: &Perf, after: &Perf) -> String {
    let tps = |t: f64, n: usize| if t > 0.0 { n as f64 * 1e3 / t } else { 0.0 };
    format!(
        "[ Prompt: {:.1} t/s | Generation: {:.1} t/s ]",
        tps(after.t_prompt_ms - before.t_prompt_ms, after.n_prompt - before.n_prompt),
        tps(after.t_eval_ms - before.t_eval_ms, after.n_eval - before.n_eval)
    )
}

/// Evaluate `toks` after keeping the longest cached prefix; the logits of the
/// last token. At least one token is always evaluated.
fn feed(sess: &mut Session, cached: &mut Vec<u32>, toks: &[u32]) -> Result<Vec<f32>> {
    let keep = common_prefix(cached, toks).min(toks.len().saturating_sub(1));
    sess.kv.truncate(keep);
    cached.truncate(keep);
    let logits = sess.prompt(&toks[keep..])?;
    cached.extend_from_slice(&toks[keep..]);
    Ok(logits)
}

pub fn run(o: &CliOpts, model_path: &str) -> Result<()> {
    set_threads(o.threads);
    let t_start = Instant::now();
    let model = Model::load(std::path::Path::new(model_path))?;
    let tok = Tokenizer::from_gguf(&model.g)?;
    let n_ctx = if o.n_ctx == 0 { model.cfg.n_ctx_train } else { o.n_ctx };
    let t_load_ms = t_start.elapsed().as_secs_f64() * 1e3;
    let mut sess = Session::new(&model, n_ctx, o.n_batch.min(o.n_ubatch));
    let mut sampler = Sampler::new(o.sampling.clone());
    install_ctrl_c();
    if o.conversation {
        conversation(o, &model, &tok, &mut sess, &mut sampler)?;
    } else {
        interactive(o, &tok, &mut sess, &mut sampler)?;
    }
    print_perf(&sess.perf, t_load_ms, t_start);
    Ok(())
}

fn conversation(o: &CliOpts, model: &Model, tok: &Tokenizer, sess: &mut Session, sampler: &mut Sampler) -> Result<()> {
    if o.chat_template.is_none() && model.g.get_str("tokenizer.chat_template").is_none() {
        eprintln!(
            "note: the model has no chat template; using chatml as llama.cpp does (choose another with --chat-template {})",
            crate::chat::template::BUILTIN_NAMES
        );
    }
    let tmpl = ChatTemplate::new(o.chat_template.as_deref(), &model.g, tok)?;
    let system: Vec<Message> = if o.system_prompt.is_empty() { Vec::new() } else { vec![Message::new("system", &o.system_prompt)] };
    let mut msgs = system.clone();
    let mut cached: Vec<u32> = Vec::new();
    let mut first = (!o.prompt.is_empty()).then(|| o.prompt.clone());
    if std::io::stdin().is_terminal() {
        println!("rllama chat: {} ({} tokens of context)", model.cfg.arch, sess.n_ctx());
        println!("  /exit or Ctrl+C     stop or exit\n  /regen              regenerate the last response\n  /clear              clear the chat history");
    }
    loop {
        let mut out = std::io::stdout().lock();
        let input = match first.take() {
            Some(p) => {
                writeln!(out, "\n> {p}")?;
                p
            }
            None => {
                write!(out, "\n> ")?;
                out.flush()?;
                drop(out);
                match read_input(o.multiline) {
                    Some(s) => {
                        if !std::io::stdin().is_terminal() {
                            // as llama-cli: piped input is echoed
                            print!("{s}");
                        }
                        s
                    }
                    None => break,
                }
            }
        };
        let input = input.strip_suffix('\n').unwrap_or(&input).to_string();
        if input.is_empty() {
            continue;
        }
        if input.starts_with("/exit") {
            break;
        } else if input.starts_with("/clear") {
            msgs = system.clone();
            println!("Chat history cleared.");
            continue;
        } else if input.starts_with("/regen") {
            if msgs.last().map(|m| m.role == "assistant").unwrap_or(false) {
                msgs.pop();
            } else {
                eprintln!("Error: No message to regenerate.");
                continue;
            }
        } else {
            msgs.push(Message::new("user", &input));
        }
        let text = tmpl.render(&msgs, true)?;
        let toks = tok.encode(&text, true, true)?;
        if toks.len() >= sess.n_ctx() {
            eprintln!(
                "Error: the conversation ({} tokens) no longer fits the context ({} tokens); /clear to start over or use a larger -c",
                toks.len(),
                sess.n_ctx()
            );
            msgs.pop();
            continue;
        }
        let before = sess.perf.clone();
        let logits = feed(sess, &mut cached, &toks)?;
        let reply = generate(sess, tok, sampler, logits, o, &mut cached)?;
        let mut content = reply.text;
        match reply.stop {
            Stop::Reverse(i) => {
                let r = &o.reverse_prompts[i];
                content.truncate(content.len() - r.len());
            }
            Stop::ContextFull => eprintln!("\n[context full: {} tokens; /clear to start over]", sess.n_ctx()),
            _ => {}
        }
        if !content.ends_with('\n') {
            println!();
        }
        msgs.push(Message::new("assistant", &content));
        if o.show_timings {
            println!("\n{}", turn_timings(&before, &sess.perf));
        }
        if o.single_turn {
            break;
        }
    }
    println!("\n\nExiting...");
    Ok(())
}

/// Raw interactive mode: the prompt is completed, then each input (with
/// --in-prefix / --in-suffix) is appended as plain text and generation goes on.
fn interactive(o: &CliOpts, tok: &Tokenizer, sess: &mut Session, sampler: &mut Sampler) -> Result<()> {
    let mut cached: Vec<u32> = Vec::new();
    let mut pending = tok.encode(&o.prompt, true, true)?;
    let mut out = std::io::stdout().lock();
    out.write_all(o.prompt.as_bytes())?;
    out.flush()?;
    drop(out);
    loop {
        if !pending.is_empty() {
            if sess.kv.len + pending.len() >= sess.n_ctx() {
                bail!("the context is full ({} tokens)", sess.n_ctx());
            }
            let logits = sess.prompt(&pending)?;
            cached.extend_from_slice(&pending);
            let reply = generate(sess, tok, sampler, logits, o, &mut cached)?;
            if let Stop::ContextFull = reply.stop {
                eprintln!("\n[context full: {} tokens]", sess.n_ctx());
                break;
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(b"\n> ")?;
        out.write_all(o.in_prefix.as_bytes())?;
        out.flush()?;
        drop(out);
        let Some(input) = read_input(o.multiline) else { break };
        let input = input.strip_suffix('\n').unwrap_or(&input);
        if input.starts_with("/exit") {
            break;
        }
        let text = format!("{}{}{}", o.in_prefix, input, o.in_suffix);
        pending = tok.encode(&text, false, true)?;
        print!("{}", o.in_suffix);
    }
    println!();
    Ok(())
}
