//! llama-bench's output: the markdown table, csv, json and jsonl records,
//! build and CPU fields.

use super::*;

pub(super) const BUILD_COMMIT: &str = match option_env!("RLLAMA_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

pub(super) fn cpu_info() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub(super) fn json_value(v: &str, kind: char) -> String {
    match kind {
        's' => serde_json::Value::String(v.to_string()).to_string(),
        'b' => (if v == "0" { "false" } else { "true" }).to_string(),
        _ => v.to_string(),
    }
}

pub(super) fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

pub(super) fn fmt_ts(x: f64) -> String {
    // C's %g with 6 significant digits, as std::to_string of a double is not: llama-bench joins samples_ts with operator<<.
    let s = format!("{x:.5e}");
    let (m, e) = s.split_once('e').unwrap();
    let e: i32 = e.parse().unwrap();
    if (-5..6).contains(&e) {
        let decimals = (5 - e).max(0) as usize;
        let t = format!("{x:.decimals$}");
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            t
        }
    } else {
        let m = m.trim_end_matches('0').trim_end_matches('.');
        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
    }
}

/// Markdown columns: llama-bench shows threads for the CPU backend, n_batch /
/// n_ubatch only when they differ from the defaults.
pub(super) fn md_columns(o: &BenchOpts) -> Vec<(&'static str, &'static str, i32)> {
    let mut c = vec![("model", "model", -30), ("size", "size", 10), ("params", "params", 10), ("backend", "backend", -10), ("n_threads", "threads", 7)];
    if o.n_batch != [2048] {
        c.push(("n_batch", "n_batch", 7));
    }
    if o.n_ubatch != [512] {
        c.push(("n_ubatch", "n_ubatch", 8));
    }
    c.push(("test", "test", 15));
    c.push(("t/s", "t/s", 20));
    c
}

pub struct Printer<'a> {
    fmt: Format,
    out: Box<dyn Write + 'a>,
    first: bool,
    cols: Vec<(&'static str, &'static str, i32)>,
}

pub(super) fn pad(s: &str, w: i32) -> String {
    let n = s.chars().count();
    let wa = w.unsigned_abs() as usize;
    if n >= wa {
        s.to_string()
    } else if w < 0 {
        format!("{s}{}", " ".repeat(wa - n))
    } else {
        format!("{}{s}", " ".repeat(wa - n))
    }
}

impl<'a> Printer<'a> {
    pub fn new(fmt: Format, out: Box<dyn Write + 'a>, o: &BenchOpts) -> Self {
        Printer { fmt, out, first: true, cols: md_columns(o) }
    }

    pub fn header(&mut self) -> Result<()> {
        match self.fmt {
            Format::Md => {
                let mut l1 = String::from("|");
                let mut l2 = String::from("|");
                for &(_, name, w) in &self.cols {
                    l1 += &format!(" {} |", pad(name, w));
                    l2 += &format!(" {}{} |", "-".repeat(w.unsigned_abs() as usize - 1), if w > 0 { ':' } else { '-' });
                }
                writeln!(self.out, "{l1}\n{l2}")?;
            }
            Format::Csv => {
                let dummy = TestResult::dummy();
                let names: Vec<&str> = dummy.fields().iter().map(|f| f.0).collect();
                writeln!(self.out, "{}", names.join(","))?;
            }
            Format::Json => writeln!(self.out, "[")?,
            Format::Jsonl | Format::None => {}
        }
        self.out.flush()?;
        Ok(())
    }

    pub fn test(&mut self, t: &TestResult) -> Result<()> {
        match self.fmt {
            Format::Md => {
                let mut line = String::from("|");
                for &(key, _, w) in &self.cols {
                    let v = match key {
                        "model" => t.model_type.clone(),
                        "size" => {
                            let s = t.model_size as f64;
                            if t.model_size < 1 << 30 {
                                format!("{:.2} MiB", s / 1048576.0)
                            } else {
                                format!("{:.2} GiB", s / 1073741824.0)
                            }
                        }
                        "params" => {
                            let p = t.model_n_params as f64;
                            if t.model_n_params < 1_000_000_000 {
                                format!("{:.2} M", p / 1e6)
                            } else {
                                format!("{:.2} B", p / 1e9)
                            }
                        }
                        "backend" => "CPU".into(),
                        "n_threads" => t.n_threads.to_string(),
                        "n_batch" => t.inst_n_batch.to_string(),
                        "n_ubatch" => t.inst_n_ubatch.to_string(),
                        "test" => t.test_name(),
                        _ => format!("{:.2} ± {:.2}", t.avg_ts(), t.stdev_ts()),
                    };
                    line += &format!(" {} |", pad(&v, w));
                }
                writeln!(self.out, "{line}")?;
            }
            Format::Csv => {
                let vals: Vec<String> = t.fields().iter().map(|(_, v, _)| format!("\"{}\"", v.replace('"', "\"\""))).collect();
                writeln!(self.out, "{}", vals.join(","))?;
            }
            Format::Json => {
                if !self.first {
                    writeln!(self.out, ",")?;
                }
                writeln!(self.out, "  {{")?;
                for (k, v, kind) in t.fields() {
                    writeln!(self.out, "    \"{k}\": {},", json_value(&v, kind))?;
                }
                writeln!(self.out, "    \"samples_ns\": [ {} ],", join(&t.samples_ns))?;
                let ts: Vec<String> = t.ts().iter().map(|&x| fmt_ts(x)).collect();
                writeln!(self.out, "    \"samples_ts\": [ {} ]", ts.join(", "))?;
                write!(self.out, "  }}")?;
            }
            Format::Jsonl => {
                let mut line = String::from("{");
                for (k, v, kind) in t.fields() {
                    line += &format!("\"{k}\": {}, ", json_value(&v, kind));
                }
                let ts: Vec<String> = t.ts().iter().map(|&x| fmt_ts(x)).collect();
                line += &format!("\"samples_ns\": [ {} ],\"samples_ts\": [ {} ]}}", join(&t.samples_ns), ts.join(", "));
                writeln!(self.out, "{line}")?;
            }
            Format::None => {}
        }
        self.first = false;
        self.out.flush()?;
        Ok(())
    }

    pub fn footer(&mut self) -> Result<()> {
        match self.fmt {
            Format::Md => writeln!(self.out, "\nbuild: {BUILD_COMMIT} (0)")?,
            Format::Json => writeln!(self.out, "\n]")?,
            _ => {}
        }
        self.out.flush()?;
        Ok(())
    }
}

impl TestResult {
    fn dummy() -> Self {
        TestResult {
            model_filename: String::new(),
            model_type: String::new(),
            model_size: 0,
            model_n_params: 0,
            inst_n_batch: 0,
            inst_n_ubatch: 0,
            n_threads: 0,
            n_prompt: 0,
            n_gen: 0,
            n_depth: 0,
            test_time: String::new(),
            samples_ns: vec![],
            spec: None,
        }
    }
}
