//! `rllama cli` (aliases `llama-completion`, `llama-cli`): raw completion with
//! llama-completion's stdout (prompt, then the generated text) and its perf
//! block on stderr.

use super::args::{process_escapes, Args};
use crate::decode::generator::Generator;
use crate::decode::speculative::{DraftLength, DraftModel, Drafter};
use crate::decode::Session;
use crate::model::Model;
use crate::sampling::{Sampler, SamplerParams};
use crate::tokenizer::{Tokenizer, Utf8Stream};
use anyhow::{bail, Result};
use std::io::Write;
use std::time::Instant;

const HELP: &str = "usage: rllama cli -m MODEL [-p PROMPT | -f FILE] [-n N] [-c N] [-b N] [-t N] [-s SEED]
  sampling: --temp T --top-k K --top-p P --min-p P --repeat-penalty X --repeat-last-n N
            --presence-penalty X --frequency-penalty X
  chat:     -cnv/--conversation, -no-cnv/--no-conversation, -sys/--system-prompt TEXT,
            --chat-template NAME|JINJA, --chat-template-file FILE, -st/--single-turn,
            -i/--interactive, -r/--reverse-prompt TEXT, --in-prefix TEXT, --in-suffix TEXT,
            --multiline-input, --no-show-timings
  draft:    -md/--model-draft FILE, --spec-draft-n-max N (--draft-max/--draft/--draft-n),
            --spec-draft-n-min N (--draft-min), --spec-draft-p-min P (--draft-p-min), -cd N, -td N
  other:    -e/--escape, --no-escape, --ignore-eos, --log-disable, --verbose-prompt

In a chat: /exit (or EOF, or a second Ctrl-C) ends, /clear starts over, /regen redoes the
last reply; Ctrl-C stops the current reply. A line ending in \\ continues on the next line.";

pub struct CliOpts {
    pub model: Option<String>,
    pub prompt: String,
    pub n_predict: i64,
    pub n_ctx: usize,
    pub n_batch: usize,
    /// Tokens per forward pass (llama.cpp's micro-batch).
    pub n_ubatch: usize,
    pub threads: Option<usize>,
    pub sampling: SamplerParams,
    pub escape: bool,
    pub ignore_eos: bool,
    pub conversation: bool,
    pub interactive: bool,
    pub single_turn: bool,
    pub system_prompt: String,
    /// `--chat-template` (a built-in name or Jinja) or a template file's text.
    pub chat_template: Option<String>,
    pub reverse_prompts: Vec<String>,
    pub in_prefix: String,
    pub in_suffix: String,
    pub multiline: bool,
    pub show_timings: bool,
    /// Speculative decoding (`-md DRAFT` and the draft flags).
    pub draft: super::speculative::DraftOpts,
}

impl Default for CliOpts {
    fn default() -> Self {
        CliOpts {
            model: None,
            prompt: String::new(),
            n_predict: -1,
            n_ctx: 4096,
            n_batch: 2048,
            n_ubatch: 512,
            threads: None,
            sampling: SamplerParams::default(),
            escape: true,
            ignore_eos: false,
            conversation: false,
            interactive: false,
            single_turn: false,
            system_prompt: String::new(),
            chat_template: None,
            reverse_prompts: Vec::new(),
            in_prefix: String::new(),
            in_suffix: String::new(),
            multiline: false,
            show_timings: true,
            draft: Default::default(),
        }
    }
}

pub fn parse(mut a: Args, conversation_default: bool) -> Result<Option<CliOpts>> {
    let mut o = CliOpts { conversation: conversation_default, ..Default::default() };
    while let Some(f) = a.next_flag() {
        match f.as_str() {
            "-m" | "--model" => o.model = Some(a.value(&f)?),
            "-p" | "--prompt" => o.prompt = a.value(&f)?,
            "-f" | "--file" => {
                let p = a.value(&f)?;
                match std::fs::read(&p) {
                    Ok(b) => o.prompt = String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => bail!("error: cannot read prompt file {p}: {e}"),
                }
            }
            "-n" | "--n-predict" | "--predict" => o.n_predict = a.parse(&f)?,
            "-c" | "--ctx-size" => o.n_ctx = a.parse(&f)?,
            "-b" | "--batch-size" => o.n_batch = a.parse(&f)?,
            "-ub" | "--ubatch-size" => o.n_ubatch = a.parse(&f)?,
            "-t" | "--threads" | "-tb" | "--threads-batch" => o.threads = Some(a.parse(&f)?),
            "-s" | "--seed" => o.sampling.seed = a.parse::<i64>(&f).map(|s| s as u32)?,
            "--temp" => o.sampling.temp = a.parse(&f)?,
            "--top-k" => o.sampling.top_k = a.parse(&f)?,
            "--top-p" => o.sampling.top_p = a.parse(&f)?,
            "--min-p" => o.sampling.min_p = a.parse(&f)?,
            "--repeat-penalty" => o.sampling.repeat_penalty = a.parse(&f)?,
            "--repeat-last-n" => o.sampling.repeat_last_n = a.parse(&f)?,
            "--presence-penalty" => o.sampling.presence_penalty = a.parse(&f)?,
            "--frequency-penalty" => o.sampling.frequency_penalty = a.parse(&f)?,
            "-e" | "--escape" => o.escape = true,
            "--no-escape" => o.escape = false,
            "--ignore-eos" => o.ignore_eos = true,
            "-no-cnv" | "--no-conversation" => o.conversation = false,
            "-cnv" | "--conversation" => o.conversation = true,
            "-i" | "--interactive" | "--interactive-first" => o.interactive = true,
            "-st" | "--single-turn" => o.single_turn = true,
            "-sys" | "--system-prompt" => o.system_prompt = a.value(&f)?,
            "-sysf" | "--system-prompt-file" => {
                let p = a.value(&f)?;
                match std::fs::read(&p) {
                    Ok(b) => o.system_prompt = String::from_utf8_lossy(&b).into_owned(),
                    Err(e) => bail!("error: cannot read system prompt file {p}: {e}"),
                }
            }
            "--chat-template" => o.chat_template = Some(a.value(&f)?),
            "--chat-template-file" => {
                let p = a.value(&f)?;
                match std::fs::read(&p) {
                    Ok(b) => o.chat_template = Some(String::from_utf8_lossy(&b).into_owned()),
                    Err(e) => bail!("error: cannot read chat template file {p}: {e}"),
                }
            }
            "-r" | "--reverse-prompt" => o.reverse_prompts.push(a.value(&f)?),
            "--in-prefix" => o.in_prefix = a.value(&f)?,
            "--in-suffix" => o.in_suffix = a.value(&f)?,
            "--in-prefix-bos" | "--jinja" | "--no-jinja" | "--simple-io" | "--color" | "-co" => {}
            "-mli" | "--multiline-input" => o.multiline = true,
            "--show-timings" => o.show_timings = true,
            "--no-show-timings" => o.show_timings = false,
            "--log-disable" | "--verbose-prompt" | "--no-warmup" | "--no-display-prompt" => {}
            // accepted for compatibility; their values change nothing on the CPU
            "-fa" | "--flash-attn" | "-ngl" | "--gpu-layers" | "--n-gpu-layers" => {
                a.value(&f)?;
            }
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            _ if o.draft.parse_flag(&f, &mut a)? => {}
            _ => return Err(a.unknown(&f)),
        }
    }
    if o.escape {
        o.prompt = process_escapes(&o.prompt);
        o.in_prefix = process_escapes(&o.in_prefix);
        o.in_suffix = process_escapes(&o.in_suffix);
        o.reverse_prompts = o.reverse_prompts.iter().map(|r| process_escapes(r)).collect();
    }
    Ok(Some(o))
}

pub fn set_threads(t: Option<usize>) {
    let n = t.filter(|&n| n > 0).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4));
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
}

pub fn run(a: Args, conversation_default: bool) -> Result<()> {
    let Some(o) = parse(a, conversation_default)? else { return Ok(()) };
    let Some(model_path) = o.model.clone() else { bail!("error: a model is required (-m MODEL)") };
    if o.conversation || o.interactive {
        return super::chat::run(&o, &model_path);
    }
    generate(&o, &model_path)
}

/// Raw completion through the decode loop (`decode::generator`), with a
/// draft model when `-md` is given.
pub fn generate(o: &CliOpts, model_path: &str) -> Result<()> {
    set_threads(o.threads);
    let t_start = Instant::now();
    let model = Model::load(std::path::Path::new(model_path))?;
    let tok = Tokenizer::from_gguf(&model.g)?;
    let draft_model = match &o.draft.model {
        Some(p) => {
            let d = Model::load(std::path::Path::new(p))?;
            super::speculative::check_compatible(&tok, &Tokenizer::from_gguf(&d.g)?)?;
            Some(d)
        }
        None => None,
    };
    let n_ctx = if o.n_ctx == 0 { model.cfg.n_ctx_train } else { o.n_ctx };
    let t_load_ms = t_start.elapsed().as_secs_f64() * 1e3;

    let prompt_toks = tok.encode(&o.prompt, true, true)?;
    if prompt_toks.is_empty() {
        bail!("error: the prompt is empty");
    }
    if prompt_toks.len() > n_ctx.saturating_sub(4) {
        bail!("error: prompt is too long ({} tokens, max {})", prompt_toks.len(), n_ctx.saturating_sub(4));
    }
    let n_batch = o.n_batch.min(o.n_ubatch).max(1);
    let mut drafter = draft_model.as_ref().map(|d| DraftModel::new(d, o.draft.n_ctx.unwrap_or(n_ctx), n_batch, o.draft.p_min));
    let len = if drafter.is_some() { DraftLength::new(o.draft.n_max, o.draft.n_min) } else { DraftLength::new(0, 0) };
    let mut gen = Generator::new(Session::new(&model, n_ctx, n_batch), Sampler::new(o.sampling.clone()), drafter.as_mut().map(|d| d as &mut dyn Drafter), len);
    if o.ignore_eos {
        gen.banned = tok.eog.clone();
    }
    let mut out = std::io::stdout().lock();
    let mut stream = Utf8Stream::default();
    for &t in &prompt_toks {
        let s = stream.push(&tok.token_bytes(t, false));
        out.write_all(s.as_bytes())?;
    }
    out.flush()?;
    let t_enc = Instant::now();
    gen.prompt(&prompt_toks)?;
    let enc_s = t_enc.elapsed().as_secs_f64();
    let t_dec = Instant::now();
    let mut n_gen = 0i64;
    let mut ended = false;
    'gen: while o.n_predict < 0 || n_gen < o.n_predict {
        if gen.context_full() {
            eprintln!("\ncontext full ({n_ctx} tokens), stopping generation");
            break;
        }
        for t in gen.next()? {
            if tok.is_eog(t) {
                ended = true;
                break 'gen;
            }
            let s = stream.push(&tok.token_bytes(t, false));
            out.write_all(s.as_bytes())?;
            n_gen += 1;
            if o.n_predict >= 0 && n_gen >= o.n_predict {
                break 'gen;
            }
        }
        out.flush()?;
    }
    let dec_s = t_dec.elapsed().as_secs_f64();
    out.write_all(stream.finish().as_bytes())?;
    if ended {
        out.write_all(b" [end of text]\n")?;
    }
    out.write_all(b"\n\n")?;
    out.flush()?;
    let (perf, stats) = (gen.sess.perf.clone(), gen.stats.clone());
    drop(gen);
    if let Some(d) = &drafter {
        super::speculative::print_stats(o, &stats, d, prompt_toks.len(), enc_s, n_gen, dec_s);
    }
    print_perf(&perf, t_load_ms, t_start);
    Ok(())
}

pub fn print_perf(p: &crate::decode::Perf, t_load_ms: f64, t_start: Instant) {
    let per = |t: f64, n: usize| if n > 0 { t / n as f64 } else { 0.0 };
    let tps = |t: f64, n: usize| if t > 0.0 { 1e3 / t * n as f64 } else { 0.0 };
    let total = t_start.elapsed().as_secs_f64() * 1e3;
    eprintln!();
    eprintln!(
        "common_perf_print:    sampling time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
        p.t_sample_ms,
        p.n_sample,
        per(p.t_sample_ms, p.n_sample),
        tps(p.t_sample_ms, p.n_sample)
    );
    eprintln!("common_perf_print:        load time = {:10.2} ms", t_load_ms);
    eprintln!(
        "common_perf_print: prompt eval time = {:10.2} ms / {:5} tokens ({:8.2} ms per token, {:8.2} tokens per second)",
        p.t_prompt_ms,
        p.n_prompt,
        per(p.t_prompt_ms, p.n_prompt),
        tps(p.t_prompt_ms, p.n_prompt)
    );
    eprintln!(
        "common_perf_print:        eval time = {:10.2} ms / {:5} runs   ({:8.2} ms per token, {:8.2} tokens per second)",
        p.t_eval_ms,
        p.n_eval,
        per(p.t_eval_ms, p.n_eval),
        tps(p.t_eval_ms, p.n_eval)
    );
    eprintln!("common_perf_print:       total time = {:10.2} ms / {:5} tokens", total, p.n_prompt + p.n_eval);
    eprintln!();
    eprintln!("[ Prompt: {:.1} t/s | Generation: {:.1} t/s ]", tps(p.t_prompt_ms, p.n_prompt), tps(p.t_eval_ms, p.n_eval));
}
