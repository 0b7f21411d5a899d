//! Front-ends: parse flags, print llama.cpp-style output. No maths here.
pub mod args;
pub mod bench;
pub mod chat;
pub mod cli_args;
pub mod compat;
pub mod completion;
pub mod export_lora;
pub mod extract_lora;
pub mod flags;
pub mod generate;
pub mod graft;
pub mod options;
pub mod perplexity;
pub mod quantize;
pub mod speculative;
pub mod tokenize;

use anyhow::Result;
use std::ffi::OsString;

const USAGE: &str = "usage: rllama <command> [flags]\n\ncommands:\n  cli        generate text (llama-cli / llama-completion)\n  tokenize   show token ids (llama-tokenize)\n  bench      measure prompt and generation speed (llama-bench)\n  perplexity perplexity and KL divergence over a text (llama-perplexity)\n  quantize   convert a GGUF file to another quantization type (llama-quantize)\n  speculative generate with drafts: a draft model or n-gram lookups (llama-speculative)\n  export-lora merge LoRA adapters into a model (llama-export-lora)\n  extract-lora a LoRA adapter from a tuned model and its base (SVD of the difference)\n  graft      fit exit heads on calibration text for early-exit drafting (--spec-heads)\n\nThe binary also runs as llama-cli, llama-completion, llama-tokenize, llama-bench, llama-perplexity, llama-quantize, llama-speculative, llama-export-lora when called by those names.";

/// Every front-end's flags as clap commands (tests check their consistency).
pub fn all_commands() -> Vec<clap::Command> {
    vec![
        flags::llama_command(flags::command::<cli_args::CliArgs>("rllama cli")),
        flags::command::<bench::BenchArgs>("rllama bench"),
        flags::llama_command(flags::command::<perplexity::PplArgs>("rllama perplexity")),
        flags::command::<tokenize::TokenizeArgs>("rllama tokenize"),
        flags::command::<quantize::QuantizeArgs>("rllama quantize"),
        flags::command::<export_lora::ExportLoraArgs>("rllama export-lora"),
        flags::command::<extract_lora::ExtractLoraArgs>("rllama extract-lora"),
        flags::command::<graft::GraftArgs>("rllama graft"),
    ]
}

/// Which front-end a program name (multicall symlink) stands for.
pub fn command_for_program(name: &str) -> Option<&'static str> {
    let base = std::path::Path::new(name).file_name()?.to_str()?;
    let base = base.strip_suffix(".exe").unwrap_or(base);
    Some(match base {
        "llama-cli" => "cli-cnv",
        "llama-completion" | "llama-simple" => "cli",
        "llama-tokenize" => "tokenize",
        "llama-bench" => "bench",
        "llama-perplexity" => "perplexity",
        "llama-quantize" => "quantize",
        "llama-speculative" | "llama-speculative-simple" => "speculative",
        "llama-export-lora" => "export-lora",
        "llama-server" => "server",
        _ => return None,
    })
}

/// The version line (`--version`, as llama.cpp prints its own).
pub fn version() -> String {
    let commit = option_env!("RLLAMA_GIT_COMMIT").unwrap_or("unknown");
    format!("version: {} ({commit})\nbuilt with rustc for {}-{}", env!("CARGO_PKG_VERSION"), std::env::consts::ARCH, std::env::consts::OS)
}

/// Run the front-end named by the program name or the first argument.
/// Arguments are OS strings: one that is not UTF-8 where text is expected
/// gets an error line, never a panic.
pub fn main_with_args(argv: Vec<OsString>) -> Result<()> {
    let prog = argv.first().map(|p| p.to_string_lossy().into_owned()).unwrap_or_else(|| "rllama".into());
    let (cmd, rest) = match command_for_program(&prog) {
        Some(c) => (c.to_string(), argv[1..].to_vec()),
        None => match argv.get(1) {
            Some(c) => (c.to_string_lossy().into_owned(), argv[2..].to_vec()),
            None => {
                println!("{USAGE}");
                return Ok(());
            }
        },
    };
    if rest.iter().any(|a| a == "--version") {
        println!("{}", version());
        return Ok(());
    }
    match cmd.as_str() {
        "tokenize" => tokenize::run("rllama tokenize", rest),
        "bench" => bench::run("rllama bench", rest),
        "perplexity" => perplexity::run("rllama perplexity", rest),
        "quantize" => quantize::run("rllama quantize", rest),
        "speculative" => completion::run_speculative("rllama speculative", rest),
        "export-lora" => export_lora::run("rllama export-lora", rest),
        "extract-lora" => extract_lora::run("rllama extract-lora", rest),
        "graft" => graft::run("rllama graft", rest),
        "cli" | "completion" => completion::run("rllama cli", rest, false),
        "cli-cnv" => completion::run("llama-cli", rest, true),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        "--version" | "version" => {
            println!("{}", version());
            Ok(())
        }
        "server" => anyhow::bail!("error: the server (llama-server) is not part of rllama yet"),
        other => anyhow::bail!("error: unknown command {other:?} (see rllama --help)"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn multicall_names() {
        assert_eq!(super::command_for_program("/usr/bin/llama-completion"), Some("cli"));
        assert_eq!(super::command_for_program("llama-tokenize"), Some("tokenize"));
        assert_eq!(super::command_for_program("llama-cli"), Some("cli-cnv"));
        assert_eq!(super::command_for_program("rllama"), None);
    }
}
