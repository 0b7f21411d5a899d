//! Chat templates: the Jinja source stored in the GGUF
//! (`tokenizer.chat_template`), a built-in one chosen by name, or one given on
//! the command line, rendered with minijinja the way llama.cpp renders them
//! (trim_blocks + lstrip_blocks, the globals Hugging Face templates use).

use crate::gguf::GgufFile;
use crate::tokenizer::Tokenizer;
use anyhow::{anyhow, Result};
use minijinja::{context, Environment, Error, ErrorKind, Value};

pub use super::builtin::{builtin, BUILTIN_NAMES, CHATML};

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: &str) -> Self {
        Message { role: role.to_string(), content: content.to_string() }
    }
}

pub struct ChatTemplate {
    pub source: String,
    bos: String,
    eos: String,
    /// The tokenizer adds BOS itself, so a rendered leading BOS is dropped.
    strip_bos: bool,
}

impl ChatTemplate {
    /// `choice`: a built-in name or Jinja source (`--chat-template`); else the
    /// model's template; else ChatML, as llama.cpp.
    pub fn new(choice: Option<&str>, g: &GgufFile, tok: &Tokenizer) -> Result<Self> {
        let source = match choice {
            Some(c) => match builtin(c) {
                Some(t) => t.to_string(),
                // Jinja text given on the command line
                None if c.contains("{%") || c.contains("{{") => c.to_string(),
                // a name, but not one of ours (llama-completion's wording)
                None => anyhow::bail!("error: the supplied chat template is not supported: {c} (built-in names: {BUILTIN_NAMES}; or give Jinja text)"),
            },
            None => g.get_str("tokenizer.chat_template").unwrap_or(CHATML).to_string(),
        };
        let text = |id: Option<u32>| id.map(|i| tok.token_text(i).to_string()).unwrap_or_default();
        let t = ChatTemplate { source, bos: text(tok.bos), eos: text(tok.eos), strip_bos: tok.add_bos };
        // fail now, with the template's own message, not at the first turn
        t.render(&[Message::new("user", "test")], true)?;
        Ok(t)
    }

    pub fn from_source(source: &str, bos: &str, eos: &str, strip_bos: bool) -> Self {
        ChatTemplate { source: source.to_string(), bos: bos.to_string(), eos: eos.to_string(), strip_bos }
    }

    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = Environment::new();
        env.set_syntax(minijinja::syntax::SyntaxConfig::builder().trim_blocks(true).lstrip_blocks(true).build().expect("default delimiters"));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<Value, Error> { Err(Error::new(ErrorKind::InvalidOperation, msg)) });
        env.add_function("strftime_now", |fmt: String| -> Result<Value, Error> { Ok(Value::from(strftime_now(&fmt))) });
        let tmpl = env.template_from_str(&self.source).map_err(|e| anyhow!("chat template: {e}"))?;
        let msgs: Vec<Value> = messages.iter().map(|m| context! { role => m.role.clone(), content => m.content.clone() }).collect();
        let out = tmpl
            .render(context! {
                messages => msgs,
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.clone(),
                eos_token => self.eos.clone(),
            })
            .map_err(|e| anyhow!("chat template: {e}"))?;
        Ok(match out.strip_prefix(self.bos.as_str()) {
            Some(rest) if self.strip_bos && !self.bos.is_empty() => rest.to_string(),
            _ => out,
        })
    }
}

/// The current UTC time formatted with the strftime specifiers chat templates
/// use (%Y %m %d %e %H %M %S %y %j %B %b %A %a %p %I %%).
pub fn strftime_now(fmt: &str) -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    strftime(fmt, secs)
}

pub fn strftime(fmt: &str, unix: i64) -> String {
    const MONTHS: [&str; 12] = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"];
    const DAYS: [&str; 7] = ["Thursday", "Friday", "Saturday", "Sunday", "Monday", "Tuesday", "Wednesday"];
    let days = unix.div_euclid(86400);
    let sod = unix.rem_euclid(86400);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    let (y, m, d) = civil_from_days(days);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    const CUM: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = CUM[(m - 1) as usize] + d + if leap && m > 2 { 1 } else { 0 };
    let wd = days.rem_euclid(7) as usize;
    let mut out = String::new();
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('Y') => out += &y.to_string(),
            Some('y') => out += &format!("{:02}", y % 100),
            Some('m') => out += &format!("{m:02}"),
            Some('d') => out += &format!("{d:02}"),
            Some('e') => out += &format!("{d:2}"),
            Some('H') => out += &format!("{h:02}"),
            Some('I') => out += &format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 }),
            Some('p') => out += if h < 12 { "AM" } else { "PM" },
            Some('M') => out += &format!("{mi:02}"),
            Some('S') => out += &format!("{s:02}"),
            Some('j') => out += &format!("{yday:03}"),
            Some('B') => out += MONTHS[(m - 1) as usize],
            Some('b') => out += &MONTHS[(m - 1) as usize][..3],
            Some('A') => out += DAYS[wd],
            Some('a') => out += &DAYS[wd][..3],
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 in the proleptic
/// Gregorian calendar (Howard Hinnant's civil-from-days).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_known_dates() {
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", 0), "1970-01-01 00:00:00");
        // 2024-02-29 13:05:09 UTC, a Thursday
        assert_eq!(strftime("%d %b %Y %A %j %I%p", 1709211909), "29 Feb 2024 Thursday 060 01PM");
        assert_eq!(strftime("%e %B %%", 1709211909), "29 February %");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::from_source("{{ raise_exception('no system role') }}", "", "", false);
        let e = t.render(&[], false).unwrap_err().to_string();
        assert!(e.contains("no system role"), "{e}");
    }

    #[test]
    fn gemma_builtin_folds_the_system_prompt() {
        let t = ChatTemplate::from_source(builtin("gemma").unwrap(), "<bos>", "<eos>", true);
        let m = [Message::new("system", "Be brief."), Message::new("user", "Hi"), Message::new("assistant", "Hello!")];
        assert_eq!(
            t.render(&m, true).unwrap(),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>model\n"
        );
    }
}
