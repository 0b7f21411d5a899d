//! Token ids by text, built in a few milliseconds for vocabularies of
//! 150-260k tokens: the texts are copied once into one arena and an
//! open-addressing table holds ids (a `HashMap<String, u32>` allocates and
//! hashes every text, which cost tens of milliseconds at every start-up).

const EMPTY: u32 = u32::MAX;

pub struct TextIndex {
    arena: Vec<u8>,
    /// Text `i` is `arena[starts[i]..starts[i + 1]]`.
    starts: Vec<u32>,
    slots: Vec<u32>,
    mask: usize,
}

/// The multiplier of the token tables' hashes (2^64 / the golden ratio).
pub const HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// A word-at-a-time multiplicative hash (good high and low bits, as the
/// table masks the low ones).
pub fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = HASH_MUL;
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        h = (h ^ u64::from_le_bytes(c.try_into().unwrap())).wrapping_mul(K).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(29);
    }
    h ^= h >> 31;
    h.wrapping_mul(K) ^ (h >> 29)
}

impl TextIndex {
    /// Index texts by position; a text given twice maps to its last id, as
    /// llama.cpp's `token_to_id` map does.
    pub fn new<'a>(texts: impl Iterator<Item = &'a [u8]> + Clone) -> Self {
        let (n, bytes) = texts.clone().fold((0usize, 0usize), |(n, b), t| (n + 1, b + t.len()));
        let mut arena = Vec::with_capacity(bytes);
        let mut starts = Vec::with_capacity(n + 1);
        starts.push(0u32);
        for t in texts {
            arena.extend_from_slice(t);
            starts.push(arena.len() as u32);
        }
        let cap = (n * 2).next_power_of_two().max(16);
        let mut ix = TextIndex { arena, starts, slots: vec![EMPTY; cap], mask: cap - 1 };
        for id in 0..n as u32 {
            let slot = ix.find(ix.text(id));
            ix.slots[slot] = id;
        }
        ix
    }

    fn text(&self, id: u32) -> &[u8] {
        &self.arena[self.starts[id as usize] as usize..self.starts[id as usize + 1] as usize]
    }

    /// The slot that holds `text`, or the empty slot where it would go.
    fn find(&self, text: &[u8]) -> usize {
        let mut slot = hash_bytes(text) as usize & self.mask;
        loop {
            let id = self.slots[slot];
            if id == EMPTY || self.text(id) == text {
                return slot;
            }
            slot = (slot + 1) & self.mask;
        }
    }

    pub fn get(&self, text: &[u8]) -> Option<u32> {
        let id = self.slots[self.find(text)];
        (id != EMPTY).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_text_and_no_other() {
        let texts: Vec<String> = (0..5000).map(|i| format!("t{i}")).chain(["".into(), "t7".into()]).collect();
        let ix = TextIndex::new(texts.iter().map(|s| s.as_bytes()));
        for (i, t) in texts.iter().enumerate().take(5000) {
            let want = if t == "t7" { 5001 } else { i as u32 };
            assert_eq!(ix.get(t.as_bytes()), Some(want), "{t}");
        }
        assert_eq!(ix.get(b""), Some(5000));
        assert_eq!(ix.get(b"t5000"), None);
        assert_eq!(ix.get(b"a longer text than eight bytes"), None);
    }
}
