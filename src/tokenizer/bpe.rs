//! GPT-2 style byte-level BPE (`tokenizer.ggml.model = gpt2`) on the
//! `tokenizers` crate, with the pre-tokenizer regexes llama.cpp uses for each
//! `tokenizer.ggml.pre` value.

use anyhow::{anyhow, Result};
use std::collections::HashMap;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{SplitDelimiterBehavior, Tokenizer};

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str =
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str =
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The regexes llama.cpp applies, in order, for a `tokenizer.ggml.pre` name.
pub fn pre_regexes(pre: &str) -> Vec<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "superbpe" | "trillion" => vec![LLAMA3],
        "qwen2" | "deepseek-r1-qwen" | "hunyuan" | "kormo" => vec![QWEN2],
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => vec![r"\p{N}", GPT2],
        "falcon" => vec![r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "jina-v2-code" | "roberta-bpe" | "mpt" | "olmo" | "jais"
        | "stablelm2" | "poro-chat" | "viking" | "bloom" | "gpt3-finnish" => {
            vec![GPT2]
        }
        // llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT
        _ => vec![r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    }
}

pub struct Bpe {
    tok: Tokenizer,
}

/// GPT-2's byte <-> printable-char table.
fn byte_chars() -> [char; 256] {
    let mut t = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        t[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap()
        };
    }
    t
}

fn char_to_byte() -> &'static HashMap<char, u8> {
    static M: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    M.get_or_init(|| byte_chars().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect())
}

/// Bytes of a byte-level BPE token text; characters outside the table are kept as UTF-8.
pub fn decode_byte_level(text: &str) -> Vec<u8> {
    let m = char_to_byte();
    let mut out = Vec::with_capacity(text.len());
    for c in text.chars() {
        match m.get(&c) {
            Some(&b) => out.push(b),
            None => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out
}

impl Bpe {
    pub fn new(tokens: &[String], merges: &[String], pre: &str) -> Result<Self> {
        let vocab: tokenizers::models::bpe::Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let mut mv = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let Some((a, b)) = m.split_once(' ') else {
                return Err(anyhow!("tokenizer.ggml.merges[{i}]: {m:?} is not two tokens separated by a space"));
            };
            mv.push((a.to_string(), b.to_string()));
        }
        let model = BPE::builder().vocab_and_merges(vocab, mv).ignore_merges(false).build().map_err(|e| anyhow!("building BPE vocabulary: {e}"))?;
        let mut pts: Vec<PreTokenizerWrapper> = Vec::new();
        for re in pre_regexes(pre) {
            let pat = SplitPattern::Regex(re.to_string());
            let s = Split::new(pat, SplitDelimiterBehavior::Isolated, false).map_err(|e| anyhow!("pre-tokenizer regex: {e}"))?;
            pts.push(s.into());
        }
        pts.push(ByteLevel::new(false, false, false).into());
        let mut tok = Tokenizer::new(model);
        tok.with_pre_tokenizer(Some(Sequence::new(pts)));
        Ok(Bpe { tok })
    }

    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let enc = self.tok.encode_fast(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?;
        out.extend_from_slice(enc.get_ids());
        Ok(())
    }
}
