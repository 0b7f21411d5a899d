//! Flags through clap, spoken the way llama.cpp users type them.
//!
//! Before clap parses, a single-dash long spelling that names one of the
//! command's long flags or aliases (`-ngl`, `-no-cnv`, `-md`, `-sys`, `-ub`,
//! ...) becomes its double-dash form; values that follow a flag are never
//! touched (a prompt may start with `-`). Every value may start with `-`
//! (`-n -1`), a repeated flag keeps its last value (as llama.cpp's parser),
//! and clap's errors are folded into one `error:` line with its "did you
//! mean" suggestion.

use anyhow::{anyhow, Result};
use clap::error::{ContextKind, ErrorKind};
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches};
use std::collections::HashMap;
use std::ffi::OsString;

/// For each long name and alias of `cmd`: whether the flag takes a value.
fn long_names(cmd: &Command) -> HashMap<String, bool> {
    let mut m = HashMap::new();
    for a in cmd.get_arguments() {
        let takes = a.get_action().takes_values();
        for n in a.get_long().into_iter().chain(a.get_all_aliases().unwrap_or_default()) {
            m.insert(n.to_string(), takes);
        }
    }
    m
}

/// Short flags of `cmd` and whether each takes a value.
fn short_names(cmd: &Command) -> HashMap<char, bool> {
    let mut m = HashMap::new();
    for a in cmd.get_arguments() {
        let takes = a.get_action().takes_values();
        for c in a.get_short_and_visible_aliases().unwrap_or_default() {
            m.insert(c, takes);
        }
    }
    m
}

/// llama.cpp's single-dash long flags in their double-dash form.
pub fn normalize(cmd: &Command, args: Vec<OsString>) -> Vec<OsString> {
    let (longs, shorts) = (long_names(cmd), short_names(cmd));
    let mut out = Vec::with_capacity(args.len());
    let mut value_next = false;
    for a in args {
        if value_next {
            value_next = false;
            out.push(a);
            continue;
        }
        // not UTF-8: a value or a path, never one of our flags
        let Some(a) = a.to_str().map(str::to_string) else {
            out.push(a);
            continue;
        };
        if let Some(rest) = a.strip_prefix("--") {
            let (name, has_value) = match rest.split_once('=') {
                Some((n, _)) => (n, true),
                None => (rest, false),
            };
            value_next = !has_value && longs.get(name).copied().unwrap_or(false);
            out.push(a.into());
        } else if let Some(rest) = a.strip_prefix('-').filter(|r| r.chars().count() >= 2 && !r.starts_with(|c: char| c.is_ascii_digit())) {
            let (name, has_value) = match rest.split_once('=') {
                Some((n, _)) => (n, true),
                None => (rest, false),
            };
            match longs.get(name) {
                Some(&takes) => {
                    value_next = takes && !has_value;
                    out.push(format!("-{a}").into());
                }
                None => out.push(a.into()),
            }
        } else {
            let mut chars = a.chars();
            if let (Some('-'), Some(c), None) = (chars.next(), chars.next(), chars.next()) {
                value_next = shorts.get(&c).copied().unwrap_or(false);
            }
            out.push(a.into());
        }
    }
    out
}

/// The command of `T` as rllama parses it: named `prog`, values may start
/// with `-`, repeated flags keep the last value.
pub fn command<T: CommandFactory>(prog: &str) -> Command {
    T::command().name(prog.to_string()).bin_name(prog.to_string()).args_override_self(true).mut_args(|a| {
        if a.get_action().takes_values() {
            a.allow_hyphen_values(true)
        } else {
            a
        }
    })
}

/// Parse `args` (without the program name) into `T`, with the matches for
/// order-dependent choices. None when help was printed.
pub fn parse<T: CommandFactory + FromArgMatches>(prog: &str, args: Vec<OsString>) -> Result<Option<(T, ArgMatches)>> {
    parse_with(prog, args, |c| c)
}

/// `parse` for the front-ends that take llama.cpp's common flags: those
/// without a field of `T` are accepted with no effect, at their neutral
/// value, or refused in one line (`compat`).
pub fn parse_llama<T: CommandFactory + FromArgMatches>(prog: &str, args: Vec<OsString>) -> Result<Option<(T, ArgMatches)>> {
    let Some((t, m)) = parse_with(prog, args, llama_command)? else { return Ok(None) };
    super::compat::check(&m, super::compat::LLAMA_FLAGS)?;
    Ok(Some((t, m)))
}

/// A command with llama.cpp's common flags added (`parse_llama`).
pub fn llama_command(cmd: Command) -> Command {
    super::compat::add(cmd, super::compat::LLAMA_FLAGS)
}

/// `parse`, with the command adjusted first (e.g. a help text built at run time).
pub fn parse_with<T: CommandFactory + FromArgMatches>(
    prog: &str,
    args: Vec<OsString>,
    adjust: impl FnOnce(Command) -> Command,
) -> Result<Option<(T, ArgMatches)>> {
    let cmd = adjust(command::<T>(prog));
    let args = normalize(&cmd, args);
    let m = match cmd.try_get_matches_from(std::iter::once(OsString::from(prog)).chain(args)) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return Ok(None);
        }
        Err(e) => return Err(one_line(prog, &e)),
    };
    let t = T::from_arg_matches(&m).map_err(|e| one_line(prog, &e))?;
    Ok(Some((t, m)))
}

/// A clap error as one `error:` line (with clap's suggestion, if any).
fn one_line(prog: &str, e: &clap::Error) -> anyhow::Error {
    let ctx = |k| e.get(k).map(|v| v.to_string());
    match e.kind() {
        ErrorKind::UnknownArgument => {
            let arg = ctx(ContextKind::InvalidArg).unwrap_or_default();
            let hint = match ctx(ContextKind::SuggestedArg) {
                Some(s) => format!(" (did you mean {s}?)"),
                None => String::new(),
            };
            anyhow!("error: invalid argument: {arg}{hint} (see {prog} --help)")
        }
        _ => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            anyhow!("error: {first} (see {prog} --help)")
        }
    }
}

/// The bytes of an argument as the program received them (on Unix any bytes;
/// elsewhere the lossy text), so prompts need not be UTF-8.
pub fn os_bytes(s: &std::ffi::OsStr) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        s.as_bytes().to_vec()
    }
    #[cfg(not(unix))]
    {
        s.to_string_lossy().into_owned().into_bytes()
    }
}

/// An argument as text: invalid UTF-8 read as llama.cpp reads it (each bad
/// byte U+FFFD).
pub fn os_text(s: &std::ffi::OsStr) -> String {
    crate::tokenizer::text_from_bytes(&os_bytes(s))
}

/// A comma-separated list of paths (llama-bench's `-m a.gguf,b.gguf`), split
/// on the byte `,` so paths need not be UTF-8.
pub fn split_paths(s: &std::ffi::OsStr) -> Vec<std::path::PathBuf> {
    os_bytes(s).split(|&b| b == b',').map(path_of_bytes).collect()
}

/// A path from raw argument bytes (any bytes on Unix).
pub fn path_of_bytes(b: &[u8]) -> std::path::PathBuf {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b))
    }
    #[cfg(not(unix))]
    {
        std::path::PathBuf::from(String::from_utf8_lossy(b).into_owned())
    }
}

/// Which of several flags came last on the command line (for "last one
/// wins" groups such as `-p` / `-f`); None if none was given.
pub fn last_of<'a>(m: &ArgMatches, ids: &[&'a str]) -> Option<&'a str> {
    let given = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    ids.iter().filter(|&&id| given(id)).filter_map(|&id| m.indices_of(id).and_then(|mut i| i.next_back()).map(|i| (i, id))).max().map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct T {
        #[arg(short = 'n', long = "n-predict")]
        n: Option<i64>,
        #[arg(short = 'p', long = "prompt")]
        p: Option<String>,
        #[arg(long = "n-gpu-layers", alias = "ngl")]
        ngl: Option<String>,
        #[arg(long = "no-conversation", alias = "no-cnv")]
        no_cnv: bool,
    }

    fn parse_t(args: &[&str]) -> Result<T> {
        Ok(parse::<T>("t", args.iter().map(OsString::from).collect())?.unwrap().0)
    }

    #[test]
    fn llama_cpp_spellings() {
        let t = parse_t(&["-ngl", "99", "-no-cnv", "-n", "-1", "-p", "-ngl is a prompt"]).unwrap();
        assert_eq!(t.ngl.as_deref(), Some("99"));
        assert!(t.no_cnv);
        assert_eq!(t.n, Some(-1));
        assert_eq!(t.p.as_deref(), Some("-ngl is a prompt"));
        // last value wins, --flag=value works
        let t = parse_t(&["-n", "3", "--n-predict=5", "--prompt=a", "-p", "b"]).unwrap();
        assert_eq!((t.n, t.p.as_deref()), (Some(5), Some("b")));
    }

    /// clap's own consistency checks (duplicate ids, bad aliases) on every
    /// front-end's flags: release builds skip them.
    #[test]
    fn every_command_is_consistent() {
        llama_command(command::<crate::cli::cli_args::CliArgs>("rllama cli")).debug_assert();
        for c in crate::cli::all_commands() {
            c.debug_assert();
        }
    }

    #[test]
    fn errors_are_one_line_with_a_suggestion() {
        let e = format!("{:#}", parse_t(&["--n-predic", "4"]).unwrap_err());
        assert!(e.starts_with("error: invalid argument: --n-predic") && e.contains("did you mean --n-predict"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = format!("{:#}", parse_t(&["-n", "many"]).unwrap_err());
        assert!(e.starts_with("error: ") && e.contains("many") && !e.contains('\n'), "{e}");
    }
}
