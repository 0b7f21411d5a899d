//! Options shared by the generation front-ends (`rllama cli`, chat,
//! `rllama speculative`): the flags, the thread pool, the perf block.

use super::args::{process_escapes, Args};
use crate::sampling::SamplerParams;
use anyhow::{bail, Result};
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
    let mut gpu_note = false;
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
            "-fa" | "--flash-attn" => {
                a.value(&f)?;
            }
            "-ngl" | "--gpu-layers" | "--n-gpu-layers" => {
                a.value(&f)?;
                gpu_note = true;
            }
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            _ if o.draft.parse_flag(&f, &mut a)? => {}
            _ => return Err(a.unknown(&f)),
        }
    }
    if gpu_note {
        eprintln!("note: rllama runs on the CPU only; the GPU layer count (-ngl) is ignored");
    }
    if o.escape {
        o.prompt = process_escapes(&o.prompt);
        o.in_prefix = process_escapes(&o.in_prefix);
        o.in_suffix = process_escapes(&o.in_suffix);
        o.reverse_prompts = o.reverse_prompts.iter().map(|r| process_escapes(r)).collect();
    }
    Ok(Some(o))
}

/// Size the global thread pool: `-t N`, or every available core.
pub fn set_threads(t: Option<usize>) {
    let n = t.filter(|&n| n > 0).unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(4));
    let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
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
