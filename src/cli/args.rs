//! llama.cpp's `-e` escape processing of prompt text (the flags themselves
//! are parsed by clap, see `flags`).

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
}
