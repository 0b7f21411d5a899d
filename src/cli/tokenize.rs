//! `rllama tokenize` (alias `llama-tokenize`).

use super::flags::{last_of, os_bytes, parse};
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use clap::Parser;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;

/// `rllama tokenize` flags (llama-tokenize's).
#[derive(Parser, Debug)]
#[command(about = "Show the token ids of a text (llama-tokenize)")]
pub struct TokenizeArgs {
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    model: Option<PathBuf>,
    #[arg(short = 'p', long = "prompt", value_name = "TEXT")]
    prompt: Option<OsString>,
    #[arg(short = 'f', long = "file", value_name = "FILE", help = "read the text from a file")]
    file: Option<PathBuf>,
    #[arg(long = "stdin", help = "read the text from standard input")]
    stdin: bool,
    #[arg(long = "ids", help = "print only the ids, as a list")]
    ids: bool,
    #[arg(long = "no-bos", help = "do not add the BOS token")]
    no_bos: bool,
    #[arg(long = "no-parse-special", help = "special-token text is plain text")]
    no_parse_special: bool,
    #[arg(long = "show-count", help = "print the number of tokens")]
    show_count: bool,
    #[arg(long = "log-disable", help = "accepted, no effect")]
    log_disable: bool,
    #[arg(long = "no-escape", help = "accepted, no effect")]
    no_escape: bool,
}

pub fn run(prog: &str, args: Vec<std::ffi::OsString>) -> Result<()> {
    let Some((a, m)) = parse::<TokenizeArgs>(prog, args)? else { return Ok(()) };
    let Some(model) = a.model else { bail!("error: a model is required (-m MODEL; see {prog} --help)") };
    // the text is bytes, as llama.cpp takes it (invalid UTF-8 included)
    let prompt = match last_of(&m, &["prompt", "file", "stdin"]) {
        Some("file") => {
            let p = a.file.unwrap_or_default();
            match std::fs::read(&p) {
                Ok(b) => b,
                Err(e) => bail!("error: cannot read {}: {e}", p.display()),
            }
        }
        Some("stdin") => {
            let mut s = Vec::new();
            std::io::stdin().read_to_end(&mut s).map_err(|e| anyhow::anyhow!("error: cannot read standard input: {e}"))?;
            s
        }
        Some(_) => a.prompt.as_deref().map(os_bytes).unwrap_or_default(),
        None => bail!("error: a prompt is required (-p, -f or --stdin; see {prog} --help)"),
    };
    let (no_bos, parse_special, ids_only, show_count) = (a.no_bos, !a.no_parse_special, a.ids, a.show_count);
    let g = GgufFile::open(&model)?;
    let tok = Tokenizer::from_gguf(&g)?;
    let ids = tok.encode_bytes(&prompt, !no_bos, parse_special)?;
    let mut out = std::io::stdout().lock();
    if ids_only {
        let s: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
        writeln!(out, "[{}]", s.join(", "))?;
    } else {
        for &i in &ids {
            let piece = String::from_utf8_lossy(&tok.token_bytes(i, true)).into_owned();
            writeln!(out, "{i:6} -> '{piece}'")?;
        }
    }
    if show_count {
        writeln!(out, "Total number of tokens: {}", ids.len())?;
    }
    Ok(())
}
