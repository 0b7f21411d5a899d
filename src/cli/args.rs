//! llama.cpp's `-e` escape processing of prompt text (the flags themselves
//! are parsed by clap, see `flags`).

/// Process llama.cpp's `-e` escapes: \n \r \t \' \" \\ \xHH (any byte,
/// as llama.cpp's `string_process_escapes`: `\xff` is the byte 0xFF).
pub fn process_escapes(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = s.get(i) else {
            out.push(b'\\');
            break;
        };
        i += 1;
        match e {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'\'' | b'"' | b'\\' => out.push(e),
            b'x' => match s.get(i..i + 2).and_then(two_char_strtol16) {
                Some(b) => {
                    out.push(b);
                    i += 2;
                }
                None => out.extend_from_slice(b"\\x"),
            },
            o => out.extend_from_slice(&[b'\\', o]),
        }
    }
    out
}

/// The byte of `\xHH` as llama.cpp reads the two characters: C's `strtol(HH,
/// 16)` must consume both, so besides two hex digits a leading space or sign
/// counts too (`\x-1` is 0xFF, `\x 9` is 0x09).
fn two_char_strtol16(h: &[u8]) -> Option<u8> {
    let hex = |c: u8| (c as char).to_digit(16);
    match (h[0], h[1]) {
        (a, b) if hex(a).is_some() && hex(b).is_some() => Some((hex(a)? * 16 + hex(b)?) as u8),
        (b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r' | b'+', d) => hex(d).map(|v| v as u8),
        (b'-', d) => hex(d).map(|v| (v as u8).wrapping_neg()),
        _ => None,
    }
}

/// `process_escapes` on text that stays text (affixes, reverse prompts).
pub fn process_escapes_text(s: &str) -> String {
    crate::tokenizer::text_from_bytes(&process_escapes(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_llama_cpp() {
        assert_eq!(process_escapes(br"a\nb\tc\\d\x41\q"), b"a\nb\tc\\dA\\q");
        // \xHH is a byte, not the character U+00HH
        assert_eq!(process_escapes(br"hi \xff\xC3\xa9"), b"hi \xff\xc3\xa9");
        assert_eq!(process_escapes(br"\x4 \xg1\"), br"\x4 \xg1\");
        assert_eq!(process_escapes(br"\x+1\x-1\x 9"), b"\x01\xff\x09");
    }
}
