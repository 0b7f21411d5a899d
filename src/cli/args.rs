//! A small parser for llama.cpp-style flags: single-dash multi-letter flags
//! (`-ngl`, `-no-cnv`), `--flag value` and `--flag=value`. clap does not model
//! single-dash long flags, which llama.cpp users type every day.

use anyhow::{bail, Result};
use std::str::FromStr;

pub struct Args {
    args: Vec<String>,
    i: usize,
    pending: Option<String>,
    pub prog: String,
}

impl Args {
    pub fn new(prog: &str, args: Vec<String>) -> Self {
        Args { args, i: 0, pending: None, prog: prog.to_string() }
    }

    /// The next flag (or positional argument), with any `=value` part held back for `value()`.
    pub fn next_flag(&mut self) -> Option<String> {
        let a = self.args.get(self.i)?.clone();
        self.i += 1;
        self.pending = None;
        if a.starts_with("--") {
            if let Some((f, v)) = a.split_once('=') {
                self.pending = Some(v.to_string());
                return Some(f.to_string());
            }
        }
        Some(a)
    }

    pub fn value(&mut self, flag: &str) -> Result<String> {
        if let Some(v) = self.pending.take() {
            return Ok(v);
        }
        match self.args.get(self.i) {
            Some(v) => {
                self.i += 1;
                Ok(v.clone())
            }
            None => bail!("error: flag {flag} needs a value"),
        }
    }

    pub fn parse<T: FromStr>(&mut self, flag: &str) -> Result<T> {
        let v = self.value(flag)?;
        match v.parse() {
            Ok(x) => Ok(x),
            Err(_) => bail!("error: invalid value {v:?} for {flag}"),
        }
    }

    pub fn unknown(&self, flag: &str) -> anyhow::Error {
        anyhow::anyhow!("error: invalid argument: {flag} (see {} --help)", self.prog)
    }
}

/// Process llama.cpp's `-e` escapes: \n \r \t \' \" \\ \xHH.
pub fn process_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\'') => out.push('\''),
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let h: String = it.clone().take(2).collect();
                if h.len() == 2 && h.chars().all(|c| c.is_ascii_hexdigit()) {
                    it.next();
                    it.next();
                    out.push(u8::from_str_radix(&h, 16).unwrap() as char);
                } else {
                    out.push_str("\\x");
                }
            }
            Some(o) => {
                out.push('\\');
                out.push(o);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_llama_cpp() {
        assert_eq!(process_escapes(r"a\nb\tc\\d\x41\q"), "a\nb\tc\\dA\\q");
    }

    #[test]
    fn single_dash_long_flags_and_equals() {
        let mut a = Args::new("t", vec!["-no-cnv".into(), "--temp=0.5".into(), "-n".into(), "3".into()]);
        assert_eq!(a.next_flag().as_deref(), Some("-no-cnv"));
        assert_eq!(a.next_flag().as_deref(), Some("--temp"));
        assert_eq!(a.parse::<f32>("--temp").unwrap(), 0.5);
        assert_eq!(a.next_flag().as_deref(), Some("-n"));
        assert_eq!(a.parse::<i32>("-n").unwrap(), 3);
        assert!(a.next_flag().is_none());
    }
}
