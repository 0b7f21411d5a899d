//! Tokenizers configured from GGUF vocabularies, as llama.cpp runs them:
//! special tokens are split out of the text first (control tokens only when
//! `parse_special`), the rest goes to the model-specific algorithm.

mod bpe;
mod spm;
mod text_index;

use crate::gguf::GgufFile;
use anyhow::{bail, Result};

pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
pub const TOKEN_TYPE_UNUSED: i32 = 5;
pub const TOKEN_TYPE_BYTE: i32 = 6;

enum Algo {
    Bpe(Box<bpe::Bpe>),
    Spm(spm::Spm),
}

pub struct Tokenizer {
    pub model: String,
    pub pre: String,
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub eot: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// SentencePiece: put a space before text that starts the prompt or
    /// follows a special token.
    pub add_space_prefix: bool,
    /// End-of-generation tokens.
    pub eog: Vec<u32>,
    /// Special tokens (control, user-defined, unknown) longest text first.
    special: Vec<u32>,
    algo: Algo,
}

/// A string array of the metadata, borrowed.
fn str_array<'a>(g: &'a GgufFile, key: &str) -> Result<Vec<&'a str>> {
    let Some(v) = g.get(key) else { bail!("missing metadata {key}") };
    let Some(a) = v.as_array() else { bail!("metadata {key} is not an array") };
    a.iter().map(|x| x.as_str().ok_or_else(|| anyhow::anyhow!("metadata {key}: not all elements are strings"))).collect()
}

impl Tokenizer {
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model").unwrap_or("").to_string();
        let pre = g.get_str("tokenizer.ggml.pre").unwrap_or("default").to_string();
        let tokens: Vec<String> = str_array(g, "tokenizer.ggml.tokens")?.into_iter().map(String::from).collect();
        let n = tokens.len();
        let types: Vec<i32> = match g.get("tokenizer.ggml.token_type").and_then(|v| v.as_array()) {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1) as i32).collect(),
            None => vec![TOKEN_TYPE_NORMAL; n],
        };
        if types.len() != n {
            bail!("tokenizer.ggml.token_type has {} entries for {} tokens", types.len(), n);
        }
        let id = |key: &str| -> Result<Option<u32>> {
            match g.get_i64(key) {
                None => Ok(None),
                Some(v) if v >= 0 && (v as usize) < n => Ok(Some(v as u32)),
                Some(v) if v < 0 => Ok(None),
                Some(v) => bail!("metadata {key}: token id {v} is outside the vocabulary of {n}"),
            }
        };
        // (algorithm, default add_bos, default BOS/EOS ids)
        let (algo, def_bos, def_ids) = match model.as_str() {
            "gpt2" => {
                let merges = str_array(g, "tokenizer.ggml.merges")?;
                (Algo::Bpe(Box::new(bpe::Bpe::new(&tokens, &merges, &pre)?)), false, (None, None))
            }
            "llama" => {
                let scores: Vec<f32> = match g.get("tokenizer.ggml.scores").and_then(|v| v.as_array()) {
                    Some(a) => a.iter().map(|v| v.as_f64().unwrap_or(0.0) as f32).collect(),
                    None => vec![0.0; n],
                };
                let ok = |i: u32| (i as usize) < n;
                (Algo::Spm(spm::Spm::new(&tokens, scores)?), true, (Some(1).filter(|&i| ok(i)), Some(2).filter(|&i| ok(i))))
            }
            other => bail!("tokenizer model {other:?} is not supported (supported: gpt2, llama)"),
        };
        let bos = id("tokenizer.ggml.bos_token_id")?.or(def_ids.0);
        let eos = id("tokenizer.ggml.eos_token_id")?.or(def_ids.1);
        let is_spm = matches!(algo, Algo::Spm(_));
        let add_space_prefix = g.get_bool("tokenizer.ggml.add_space_prefix").unwrap_or(is_spm);
        let mut eot = id("tokenizer.ggml.eot_token_id")?;
        let eom = id("tokenizer.ggml.eom_token_id")?;
        let add_bos = g.get_bool("tokenizer.ggml.add_bos_token").unwrap_or(def_bos);
        let add_eos = g.get_bool("tokenizer.ggml.add_eos_token").unwrap_or(false);

        let mut types = types;
        let mut eog: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
        const EOG_TEXTS: &[&str] = &[
            "<|eot_id|>",
            "<|im_end|>",
            "<|end|>",
            "<end_of_turn>",
            "<|endoftext|>",
            "<|eom_id|>",
            "<EOT>",
            "_<EOT>",
            "<|end_of_text|>",
            "<｜end▁of▁sentence｜>",
        ];
        for (i, t) in tokens.iter().enumerate() {
            if EOG_TEXTS.contains(&t.as_str()) {
                if eot.is_none() && t != "<|endoftext|>" && t != "<|end_of_text|>" {
                    eot = Some(i as u32);
                }
                if !eog.contains(&(i as u32)) {
                    eog.push(i as u32);
                }
                types[i] = TOKEN_TYPE_CONTROL;
            }
        }
        let mut special: Vec<u32> = (0..n as u32)
            .filter(|&i| matches!(types[i as usize], TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED | TOKEN_TYPE_UNKNOWN))
            .filter(|&i| !tokens[i as usize].is_empty())
            .collect();
        special.sort_by(|&a, &b| tokens[b as usize].len().cmp(&tokens[a as usize].len()));
        Ok(Tokenizer { model, pre, tokens, types, bos, eos, eot, add_bos, add_eos, add_space_prefix, eog, special, algo })
    }

    pub fn n_vocab(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_eog(&self, t: u32) -> bool {
        self.eog.contains(&t)
    }

    /// Tokenize like `llama_tokenize(text, add_special, parse_special)`.
    pub fn encode(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        self.encode_bytes(text.as_bytes(), add_special, parse_special)
    }

    /// Tokenize bytes that need not be UTF-8, as llama.cpp does with its
    /// `std::string` prompts: SentencePiece works on the bytes (a symbol is as
    /// long as its lead byte says, and what is not a token falls back to byte
    /// tokens); byte-level BPE reads each byte that does not start a complete
    /// sequence as U+FFFD (see `text_from_bytes`).
    pub fn encode_bytes(&self, text: &[u8], add_special: bool, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        let mut prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Frag::Token(t) => {
                    out.push(t);
                    prev_special = true;
                }
                Frag::Text(s) => {
                    match &self.algo {
                        Algo::Bpe(b) => b.encode(&text_from_bytes(s), &mut out)?,
                        Algo::Spm(m) => {
                            let mut t = Vec::with_capacity(s.len() + 3);
                            if self.add_space_prefix && prev_special {
                                t.push(b' ');
                            }
                            t.extend_from_slice(s);
                            m.encode(&escape_spaces(&t), &mut out)?;
                        }
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            if let Some(e) = self.eos {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Split the text around special tokens, longest token text first.
    fn partition<'a>(&self, text: &'a [u8], parse_special: bool) -> Vec<Frag<'a>> {
        let mut frags = vec![Frag::Text(text)];
        for &id in &self.special {
            let ty = self.types[id as usize];
            if !parse_special && (ty == TOKEN_TYPE_CONTROL || ty == TOKEN_TYPE_UNKNOWN) {
                continue;
            }
            let pat = self.tokens[id as usize].as_bytes();
            let finder = memchr::memmem::Finder::new(pat);
            let mut next = Vec::with_capacity(frags.len());
            for f in frags {
                match f {
                    Frag::Text(mut s) => {
                        while let Some(p) = finder.find(s) {
                            if p > 0 {
                                next.push(Frag::Text(&s[..p]));
                            }
                            next.push(Frag::Token(id));
                            s = &s[p + pat.len()..];
                        }
                        if !s.is_empty() {
                            next.push(Frag::Text(s));
                        }
                    }
                    t => next.push(t),
                }
            }
            frags = next;
        }
        frags
    }

    /// The bytes a token stands for (`llama_token_to_piece`); control tokens
    /// give nothing unless `special`.
    pub fn token_bytes(&self, id: u32, special: bool) -> Vec<u8> {
        let Some(text) = self.tokens.get(id as usize) else { return Vec::new() };
        let ty = self.types[id as usize];
        match ty {
            TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN if !special => Vec::new(),
            TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_USER_DEFINED => text.as_bytes().to_vec(),
            TOKEN_TYPE_NORMAL => match &self.algo {
                Algo::Bpe(_) => bpe::decode_byte_level(text),
                Algo::Spm(_) => text.replace('\u{2581}', " ").into_bytes(),
            },
            TOKEN_TYPE_BYTE => match spm::byte_of_token(text) {
                Some(b) => vec![b],
                None => bpe::decode_byte_level(text),
            },
            _ => Vec::new(), // unused
        }
    }

    /// Lossy text of a sequence of tokens.
    pub fn decode(&self, ids: &[u32], special: bool) -> String {
        let mut b = Vec::new();
        for &i in ids {
            b.extend(self.token_bytes(i, special));
        }
        String::from_utf8_lossy(&b).into_owned()
    }

    pub fn token_text(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map(|s| s.as_str()).unwrap_or("")
    }
}

enum Frag<'a> {
    Text(&'a [u8]),
    Token(u32),
}

/// SentencePiece's space escape: every space becomes `▁` (U+2581).
fn escape_spaces(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + s.len() / 2);
    for &b in s {
        match b {
            b' ' => out.extend_from_slice("\u{2581}".as_bytes()),
            b => out.push(b),
        }
    }
    out
}

/// Bytes as text the way llama.cpp's `unicode_cpts_from_utf8` reads them: a
/// lead byte followed by enough continuation bytes is one code point (its
/// value taken from the bits, overlong forms included); any other byte is
/// U+FFFD on its own, and reading goes on at the next byte. (Rust's lossy
/// conversion would give one U+FFFD for a whole broken sequence.) Code
/// points a Rust string cannot hold (surrogates, above U+10FFFF) are U+FFFD too.
pub fn text_from_bytes(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let lead = b[i];
        let (len, bits) = match lead {
            0x00..=0x7F => (1, lead as u32),
            0xC0..=0xDF => (2, (lead & 0x1F) as u32),
            0xE0..=0xEF => (3, (lead & 0x0F) as u32),
            0xF0..=0xF7 => (4, (lead & 0x07) as u32),
            _ => (0, 0),
        };
        let tail = b.get(i + 1..i + len.max(1));
        match tail.filter(|t| len > 0 && t.iter().all(|&c| c & 0xC0 == 0x80)) {
            Some(t) => {
                let cpt = t.iter().fold(bits, |acc, &c| (acc << 6) | (c & 0x3F) as u32);
                out.push(char::from_u32(cpt).unwrap_or(char::REPLACEMENT_CHARACTER));
                i += len;
            }
            None => {
                out.push(char::REPLACEMENT_CHARACTER);
                i += 1;
            }
        }
    }
    out
}

/// Streaming detokenizer: collects token bytes and releases only complete
/// UTF-8 characters, so a multi-byte character split over tokens is never
/// printed in halves.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) => match e.error_len() {
                // an invalid sequence (not just an unfinished one): flush lossily
                Some(_) => {
                    let s = String::from_utf8_lossy(&self.pending).into_owned();
                    self.pending.clear();
                    return s;
                }
                None => e.valid_up_to(),
            },
        };
        let s = String::from_utf8(self.pending[..valid].to_vec()).unwrap();
        self.pending.drain(..valid);
        s
    }
    /// Whatever is left at the end (lossy).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::{text_from_bytes, Utf8Stream};

    #[test]
    fn bytes_read_as_llama_cpp_reads_them() {
        // each byte of a broken sequence is its own U+FFFD (Rust's lossy
        // conversion gives one for `e6 97`)
        assert_eq!(text_from_bytes(b"\xe6\x97 x\xf0\x9f\x98"), "\u{FFFD}\u{FFFD} x\u{FFFD}\u{FFFD}\u{FFFD}");
        assert_eq!(text_from_bytes(b"caf\xc3\xa9\xff"), "caf\u{e9}\u{FFFD}");
        // overlong forms decode to their value; out-of-range code points are U+FFFD
        assert_eq!(text_from_bytes(b"\xc1\x81\xc0\x80"), "A\0");
        assert_eq!(text_from_bytes(b"\xf7\xbf\xbf\xbf\xed\xa0\x80"), "\u{FFFD}\u{FFFD}");
        assert_eq!(text_from_bytes(b"\xe2\x82"), "\u{FFFD}\u{FFFD}");
    }

    #[test]
    fn stream_never_splits_a_character() {
        let mut s = Utf8Stream::default();
        let e = "é".as_bytes(); // 2 bytes
        let j = "日".as_bytes(); // 3 bytes
        assert_eq!(s.push(&e[..1]), "");
        assert_eq!(s.push(&e[1..]), "é");
        assert_eq!(s.push(&j[..2]), "");
        assert_eq!(s.push(&[j[2], b'a']), "日a");
        assert_eq!(s.push(&[0xE6]), "");
        assert_eq!(s.finish(), "\u{FFFD}");
    }
}
