//! SentencePiece-style tokenization (`tokenizer.ggml.model = llama`) as
//! llama.cpp runs it: the text (spaces shown as `▁`) starts as one symbol per
//! UTF-8 character (as many bytes as the lead byte says, so invalid UTF-8 is
//! bytes too); the adjacent pair whose concatenation is the vocabulary
//! token with the highest score is merged, over and over; symbols that are not
//! tokens fall back to `<0xXX>` byte tokens.

use super::text_index::TextIndex;
use anyhow::{bail, Result};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub struct Spm {
    ids: TextIndex,
    scores: Vec<f32>,
    /// Token for each byte value (`<0xXX>`, else the byte itself as text).
    byte_tokens: Vec<Option<u32>>,
}

#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: isize,
    next: isize,
}

struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// The heap's top: the highest score, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score.total_cmp(&o.score).then(o.left.cmp(&self.left))
    }
}

impl Spm {
    pub fn new(tokens: &[String], scores: Vec<f32>) -> Result<Self> {
        if scores.len() != tokens.len() {
            bail!("tokenizer.ggml.scores has {} entries for {} tokens", scores.len(), tokens.len());
        }
        // a repeated text maps to its last id, as in llama.cpp
        let ids = TextIndex::new(tokens.iter().map(|t| t.as_bytes()));
        let byte_tokens = (0..=255u8)
            .map(|b| {
                ids.get(format!("<0x{b:02X}>").as_bytes()).or_else(|| {
                    let s = [b];
                    std::str::from_utf8(&s).ok().and_then(|s| ids.get(s.as_bytes()))
                })
            })
            .collect();
        Ok(Spm { ids, scores, byte_tokens })
    }

    /// Append the tokens of `text` (already escaped: spaces as `▁`).
    pub fn encode(&self, text: &[u8], out: &mut Vec<u32>) -> Result<()> {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        let mut start = 0;
        while start < text.len() {
            let len = utf8_len(text[start]).min(text.len() - start);
            let i = syms.len();
            let next = if start + len == text.len() { -1 } else { i as isize + 1 };
            syms.push(Symbol { start, len, prev: i as isize - 1, next });
            start += len;
        }
        let mut heap = BinaryHeap::new();
        let add = |syms: &[Symbol], heap: &mut BinaryHeap<Bigram>, l: isize, r: isize| {
            if l < 0 || r < 0 {
                return;
            }
            let (a, b) = (syms[l as usize], syms[r as usize]);
            let s = &text[a.start..a.start + a.len + b.len];
            if let Some(id) = self.ids.get(s) {
                heap.push(Bigram { left: l as usize, right: r as usize, score: self.scores[id as usize], size: s.len() });
            }
        };
        for i in 1..syms.len() {
            add(&syms, &mut heap, i as isize - 1, i as isize);
        }
        while let Some(bg) = heap.pop() {
            let (l, r) = (syms[bg.left], syms[bg.right]);
            // stale: one side was merged away since this pair was queued
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            syms[bg.left].len += r.len;
            syms[bg.right].len = 0;
            syms[bg.left].next = r.next;
            if r.next >= 0 {
                syms[r.next as usize].prev = bg.left as isize;
            }
            add(&syms, &mut heap, syms[bg.left].prev, bg.left as isize);
            add(&syms, &mut heap, bg.left as isize, syms[bg.left].next);
        }
        // Every merged symbol is a token; single characters that are not fall
        // back to bytes.
        let mut i = if syms.is_empty() { -1 } else { 0 };
        while i >= 0 {
            let s = syms[i as usize];
            let piece = &text[s.start..s.start + s.len];
            if let Some(id) = self.ids.get(piece) {
                out.push(id);
            } else {
                for &b in piece {
                    match self.byte_tokens[b as usize] {
                        Some(id) => out.push(id),
                        None => bail!("the vocabulary has no token for byte 0x{b:02X}"),
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }
}

/// The length of a UTF-8 sequence from its lead byte alone (llama.cpp's
/// `unicode_len_utf8`: continuation bytes count 1, 0xF8.. count 4).
fn utf8_len(lead: u8) -> usize {
    const BY_HIGH_NIBBLE: [usize; 16] = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4];
    BY_HIGH_NIBBLE[(lead >> 4) as usize]
}

/// `<0xXX>` → the byte.
pub fn byte_of_token(text: &str) -> Option<u8> {
    let h = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if h.len() != 2 {
        return None;
    }
    u8::from_str_radix(h, 16).ok()
}
