//! `rllama tokenize` (alias `llama-tokenize`).

use super::args::Args;
use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use anyhow::{bail, Result};
use std::io::{Read, Write};

const HELP: &str = "usage: rllama tokenize -m MODEL [-p PROMPT | -f FILE | --stdin] [--ids] [--no-bos] [--no-parse-special] [--show-count] [--log-disable]";

pub fn run(mut a: Args) -> Result<()> {
    let (mut model, mut prompt, mut ids_only, mut no_bos, mut parse_special, mut show_count) = (None, None, false, false, true, false);
    while let Some(f) = a.next_flag() {
        match f.as_str() {
            "-m" | "--model" => model = Some(a.value(&f)?),
            "-p" | "--prompt" => prompt = Some(a.value(&f)?),
            "-f" | "--file" => {
                let p = a.value(&f)?;
                match std::fs::read(&p) {
                    Ok(b) => prompt = Some(String::from_utf8_lossy(&b).into_owned()),
                    Err(e) => bail!("error: cannot read {p}: {e}"),
                }
            }
            "--stdin" => {
                let mut s = String::new();
                std::io::stdin().read_to_string(&mut s)?;
                prompt = Some(s);
            }
            "--ids" => ids_only = true,
            "--no-bos" => no_bos = true,
            "--no-parse-special" => parse_special = false,
            "--show-count" => show_count = true,
            "--log-disable" | "--no-escape" => {}
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            _ => return Err(a.unknown(&f)),
        }
    }
    let Some(model) = model else { bail!("error: a model is required (-m MODEL)\n{HELP}") };
    let Some(prompt) = prompt else { bail!("error: a prompt is required (-p, -f or --stdin)\n{HELP}") };
    let g = GgufFile::open(std::path::Path::new(&model))?;
    let tok = Tokenizer::from_gguf(&g)?;
    let ids = tok.encode(&prompt, !no_bos, parse_special)?;
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
