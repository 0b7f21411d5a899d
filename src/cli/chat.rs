//! Conversation (`-cnv`, the `llama-cli` default) and raw interactive (`-i`)
//! modes of `rllama cli`, on the same Generator as completion (so `-md`
//! drafting works here too). Each turn renders the whole conversation with the
//! chat template, rewinds the generator to the tokens it shares with what was
//! already evaluated and appends only the rest. Replies stop at the
//! end-of-generation tokens or a reverse prompt; Ctrl-C stops the reply, a
//! second Ctrl-C (or one while waiting for input), `/exit` or EOF ends.

use super::generate::{stream_reply, Reply, Setup, Stop};
use super::options::{print_perf, CliOpts};
use crate::chat::{common_prefix, ChatTemplate, Message};
use crate::decode::generator::Generator;
use crate::decode::Perf;
use crate::tokenizer::{Tokenizer, Utf8Stream};
use anyhow::{bail, Result};
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
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

fn turn_timings(before: &Perf, after: &Perf) -> String {
    let tps = |t: f64, n: usize| if t > 0.0 { n as f64 * 1e3 / t } else { 0.0 };
    format!(
        "[ Prompt: {:.1} t/s | Generation: {:.1} t/s ]",
        tps(after.t_prompt_ms - before.t_prompt_ms, after.n_prompt - before.n_prompt),
        tps(after.t_eval_ms - before.t_eval_ms, after.n_eval - before.n_eval)
    )
}

/// Totals for the speculative statistics block.
#[derive(Default)]
struct Totals {
    n_input: usize,
    enc_s: f64,
    n_gen: usize,
    dec_s: f64,
}

impl Totals {
    /// Append `toks` (timed as prompt work).
    fn append(&mut self, gen: &mut Generator, toks: &[u32]) -> Result<()> {
        let t0 = Instant::now();
        gen.append(toks)?;
        self.enc_s += t0.elapsed().as_secs_f64();
        self.n_input += toks.len();
        Ok(())
    }

    /// One reply, streamed (timed as generation).
    fn reply(&mut self, gen: &mut Generator, tok: &Tokenizer, o: &CliOpts) -> Result<Reply> {
        let t0 = Instant::now();
        let r = stream_reply(gen, tok, Utf8Stream::default(), o.n_predict, &o.reverse_prompts, &|| INTERRUPTED.swap(false, SeqCst))?;
        self.dec_s += t0.elapsed().as_secs_f64();
        self.n_gen += r.n_tokens;
        Ok(r)
    }
}

pub fn run(o: &CliOpts, model_path: &Path) -> Result<()> {
    let setup = Setup::load(o, model_path)?;
    let mut drafter = setup.drafters(o)?;
    let mut gen = setup.generator(o, drafter.as_mut())?;
    let mut totals = Totals::default();
    install_ctrl_c();
    if o.conversation {
        conversation(o, &setup, &mut gen, &mut totals)?;
    } else {
        interactive(o, &setup.tok, &mut gen, &mut totals)?;
    }
    let (perf, stats, n_draft) = (gen.sess.perf.clone(), gen.stats.clone(), gen.len.n_max);
    if let Some(lx) = &gen.sess.lossy {
        eprintln!("{}", lx.summary());
    }
    drop(gen);
    if let Some(d) = &drafter {
        super::speculative::print_stats(n_draft, &stats, d, totals.n_input, totals.enc_s, totals.n_gen as i64, totals.dec_s);
    }
    print_perf(&perf, setup.t_load_ms, setup.t_start);
    Ok(())
}

fn conversation(o: &CliOpts, setup: &Setup, gen: &mut Generator, totals: &mut Totals) -> Result<()> {
    let (model, tok) = (&setup.model, &setup.tok);
    if o.chat_template.is_none() && model.g.get_str("tokenizer.chat_template").is_none() {
        eprintln!(
            "note: the model has no chat template; using chatml as llama.cpp does (choose another with --chat-template {})",
            crate::chat::template::BUILTIN_NAMES
        );
    }
    let tmpl = ChatTemplate::new(o.chat_template.as_deref(), &model.g, tok)?;
    let system: Vec<Message> = if o.system_prompt.is_empty() { Vec::new() } else { vec![Message::new("system", &o.system_prompt)] };
    let mut msgs = system.clone();
    // where the last reply's tokens start in the generator's history
    let mut reply_start = None;
    let mut first = (!o.prompt.is_empty()).then(|| crate::tokenizer::text_from_bytes(&o.prompt));
    let n_ctx = gen.sess.n_ctx();
    if std::io::stdin().is_terminal() {
        println!("rllama chat: {} ({} tokens of context)", model.cfg.arch, n_ctx);
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
            gen.rewind(0);
            reply_start = None;
            println!("Chat history cleared.");
            continue;
        } else if input.starts_with("/regen") {
            match (msgs.last().map(|m| m.role == "assistant").unwrap_or(false), reply_start) {
                (true, Some(start)) => {
                    msgs.pop();
                    gen.rewind(start);
                }
                _ => {
                    eprintln!("Error: No message to regenerate.");
                    continue;
                }
            }
        } else {
            msgs.push(Message::new("user", &input));
        }
        let text = tmpl.render(&msgs, true)?;
        let toks = tok.encode(&text, true, true)?;
        if toks.is_empty() || toks.len() >= n_ctx {
            eprintln!("Error: the conversation ({} tokens) no longer fits the context ({n_ctx} tokens); /clear to start over or use a larger -c", toks.len());
            msgs.pop();
            continue;
        }
        let before = gen.sess.perf.clone();
        // keep what the cache shares with the new text; at least one token is evaluated
        let keep = common_prefix(gen.history(), &toks).min(toks.len() - 1);
        gen.rewind(keep);
        totals.append(gen, &toks[keep..])?;
        reply_start = Some(toks.len());
        let reply = totals.reply(gen, tok, o)?;
        let content = &reply.text[..reply.cut];
        if reply.stop == Stop::ContextFull {
            eprintln!("\n[context full: {n_ctx} tokens; /clear to start over]");
        }
        if !reply.text.ends_with('\n') {
            println!();
        }
        msgs.push(Message::new("assistant", content));
        if o.show_timings {
            println!("\n{}", turn_timings(&before, &gen.sess.perf));
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
fn interactive(o: &CliOpts, tok: &Tokenizer, gen: &mut Generator, totals: &mut Totals) -> Result<()> {
    let mut pending = tok.encode_bytes(&o.prompt, true, true)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&o.prompt)?;
    out.flush()?;
    drop(out);
    loop {
        if !pending.is_empty() {
            if gen.history().len() + pending.len() >= gen.sess.n_ctx() {
                bail!("the context is full ({} tokens)", gen.sess.n_ctx());
            }
            totals.append(gen, &pending)?;
            let reply = totals.reply(gen, tok, o)?;
            if reply.stop == Stop::ContextFull {
                eprintln!("\n[context full: {} tokens]", gen.sess.n_ctx());
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
