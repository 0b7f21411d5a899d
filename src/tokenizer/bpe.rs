//! GPT-2 style byte-level BPE (`tokenizer.ggml.model = gpt2`): the
//! pre-tokenizer regexes llama.cpp uses for each `tokenizer.ggml.pre` value
//! (run by the `tokenizers` crate's `Split`), then the merges.

use super::text_index::{hash_bytes, TextIndex, HASH_MUL};
use anyhow::{anyhow, Result};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer, SplitDelimiterBehavior};

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

/// Byte-level BPE: the text is split by the pre-tokenizer's regexes, each
/// piece starts as one symbol per byte (GPT-2's byte tokens) and the adjacent
/// pair of lowest merge rank is merged, leftmost first, over and over (as
/// llama.cpp's `llm_tokenizer_bpe_session` does). A queue holds the candidate
/// pairs, so a piece of n bytes takes O(n log n), however it is built.
pub struct Bpe {
    pre: Sequence,
    /// `(left id, right id)` -> (rank, merged id).
    merges: HashMap<u64, (u32, u32), BuildHasherDefault<PairHasher>>,
    /// The token of each byte (GPT-2's printable character for it).
    byte_ids: [Option<u32>; 256],
}

fn pair(a: u32, b: u32) -> u64 {
    (a as u64) << 32 | b as u64
}

/// A multiplicative hash for the merge table's u64 pairs.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = hash_bytes(bytes);
    }
    fn write_u64(&mut self, x: u64) {
        let h = (x ^ x >> 29).wrapping_mul(HASH_MUL);
        self.0 = h ^ h >> 32;
    }
}

const NONE: usize = usize::MAX;
/// The id of a symbol merged into its left neighbour.
const DEAD: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: usize,
    next: usize,
}

impl Bpe {
    pub fn new(tokens: &[String], merges: &[&str], pre: &str) -> Result<Self> {
        let ids = TextIndex::new(tokens.iter().map(|t| t.as_bytes()));
        let mut table = HashMap::with_capacity_and_hasher(merges.len(), BuildHasherDefault::default());
        let mut joined = Vec::new();
        for (rank, m) in merges.iter().enumerate() {
            // llama.cpp splits at the first space after the first character
            let Some(at) = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i) else {
                return Err(anyhow!("tokenizer.ggml.merges[{rank}]: {m:?} is not two tokens separated by a space"));
            };
            let (a, b) = (&m[..at], &m[at + 1..]);
            joined.clear();
            joined.extend_from_slice(a.as_bytes());
            joined.extend_from_slice(b.as_bytes());
            // A merge of texts that are not tokens can never apply to
            // symbols that are; the first of repeated merges keeps its rank.
            if let (Some(l), Some(r), Some(to)) = (ids.get(a.as_bytes()), ids.get(b.as_bytes()), ids.get(&joined)) {
                table.entry(pair(l, r)).or_insert((rank as u32, to));
            }
        }
        let chars = byte_chars();
        let byte_ids = std::array::from_fn(|b| ids.get(chars[b].encode_utf8(&mut [0; 4]).as_bytes()));
        let mut pts: Vec<PreTokenizerWrapper> = Vec::new();
        for re in pre_regexes(pre) {
            let pat = SplitPattern::Regex(re.to_string());
            let s = Split::new(pat, SplitDelimiterBehavior::Isolated, false).map_err(|e| anyhow!("pre-tokenizer regex: {e}"))?;
            pts.push(s.into());
        }
        Ok(Bpe { pre: Sequence::new(pts), merges: table, byte_ids })
    }

    pub fn encode(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut pieces = PreTokenizedString::from(text);
        self.pre.pre_tokenize(&mut pieces).map_err(|e| anyhow!("tokenizing: {e}"))?;
        let mut syms = Vec::new();
        let mut queue = BinaryHeap::new();
        for (piece, _, _) in pieces.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            self.encode_piece(piece.as_bytes(), &mut syms, &mut queue, out);
        }
        Ok(())
    }

    fn encode_piece(&self, piece: &[u8], syms: &mut Vec<Symbol>, queue: &mut BinaryHeap<Reverse<(u32, usize, u32)>>, out: &mut Vec<u32>) {
        syms.clear();
        queue.clear();
        // a byte without a token is left out, as the `tokenizers` crate did
        for id in piece.iter().filter_map(|&b| self.byte_ids[b as usize]) {
            let i = syms.len();
            syms.push(Symbol { id, prev: i.wrapping_sub(1), next: i + 1 });
        }
        let Some(last) = syms.last_mut() else { return };
        last.next = NONE;
        let candidate = |syms: &[Symbol], queue: &mut BinaryHeap<_>, l: usize| {
            if l == NONE || syms[l].next == NONE {
                return;
            }
            if let Some(&(rank, to)) = self.merges.get(&pair(syms[l].id, syms[syms[l].next].id)) {
                queue.push(Reverse((rank, l, to)));
            }
        };
        for l in 0..syms.len() - 1 {
            candidate(syms, queue, l);
        }
        while let Some(Reverse((_, l, to))) = queue.pop() {
            let r = syms[l].next;
            // stale: the left symbol was merged away, or is now another pair
            if syms[l].id == DEAD || r == NONE || self.merges.get(&pair(syms[l].id, syms[r].id)).is_none_or(|m| m.1 != to) {
                continue;
            }
            let after = syms[r].next;
            syms[l].id = to;
            syms[l].next = after;
            syms[r].id = DEAD;
            if after != NONE {
                syms[after].prev = l;
            }
            candidate(syms, queue, syms[l].prev);
            candidate(syms, queue, l);
        }
        out.extend(syms.iter().map(|s| s.id).filter(|&id| id != DEAD));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bpe(tokens: &[&str], merges: &[&str]) -> Bpe {
        let t: Vec<String> = tokens.iter().map(|s| s.to_string()).collect();
        Bpe::new(&t, merges, "gpt-2").unwrap()
    }

    fn ids(b: &Bpe, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        b.encode(text, &mut out).unwrap();
        out
    }

    #[test]
    fn lowest_rank_first_then_leftmost() {
        let b = bpe(&["a", "b", "c", "ab", "bc", "abc", "aa"], &["b c", "a b", "a bc", "a a"]);
        assert_eq!(ids(&b, "abc"), [5], "b+c (rank 0) before a+b (rank 1), then a+bc");
        assert_eq!(ids(&b, "ab"), [3]);
        assert_eq!(ids(&b, "aaa"), [6, 0], "equal ranks merge leftmost first");
        assert_eq!(ids(&b, "cab"), [2, 3]);
    }

    #[test]
    fn a_long_piece_is_merged_in_one_pass() {
        let b = bpe(&["a", "aa", "aaaa"], &["a a", "aa aa"]);
        // (merging by scanning for the best pair each time would take minutes)
        let got = ids(&b, &"a".repeat(200_001));
        assert_eq!(got.len(), 50_001);
        assert!(got[..50_000].iter().all(|&i| i == 2) && got[50_000] == 0);
    }

    #[test]
    fn merges_of_unknown_texts_are_ignored_and_bad_lines_refused() {
        let b = bpe(&["a", "b"], &["a b", "x y"]);
        assert_eq!(ids(&b, "ab"), [0, 1]);
        let t = vec!["a".to_string()];
        assert!(Bpe::new(&t, &["ab"], "gpt-2").is_err());
    }
}
