//! Per-layer key/value cache, stored as f16 (llama.cpp's default cache type).
//!
//! Each layer owns its length: layers 0..L can run ahead of layers L..N
//! (early-exit drafting writes its first layers before verification writes
//! all of them). Writing rows at positions p..p+n leaves that layer holding
//! exactly 0..p+n; `remove_from` forgets positions p.. for a range of layers
//! (speculative rollback, chat prefix reuse).

use anyhow::{bail, Result};
use half::f16;
use std::ops::Range;

const GIB: f64 = (1u64 << 30) as f64;

/// Bytes of RAM (Linux: MemTotal), if known.
fn physical_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    kb.checked_mul(1024)
}

fn memory_note() -> String {
    match physical_memory() {
        Some(m) => format!(" (this machine has {:.1} GiB)", m as f64 / GIB),
        None => String::new(),
    }
}

/// `n` zeroed u16s, or None when the allocation fails (pages are zeroed
/// lazily by the system, as `vec![0; n]` does).
fn zeroed(n: usize) -> Option<Vec<u16>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u16>(n).ok()?;
    // SAFETY: the layout is non-zero sized; a non-null result is an
    // allocation of exactly `n` u16s, zeroed, owned by the returned Vec.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut u16;
        (!p.is_null()).then(|| Vec::from_raw_parts(p, n, n))
    }
}

pub struct KvCache {
    pub n_ctx: usize,
    pub k_dim: usize,
    pub v_dim: usize,
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    /// Positions filled, per layer.
    lens: Vec<usize>,
}

impl KvCache {
    /// A cache for `n_ctx` positions, or an error saying what was asked and
    /// what the machine has (sizes are checked, the allocation is fallible).
    pub fn new(n_layer: usize, n_ctx: usize, k_dim: usize, v_dim: usize) -> Result<Self> {
        let per_layer = n_ctx.checked_mul(k_dim + v_dim).and_then(|e| e.checked_mul(std::mem::size_of::<u16>()));
        let total = per_layer.and_then(|b| b.checked_mul(n_layer));
        let too_big = |what: String| anyhow::anyhow!("the KV cache for a context of {n_ctx} tokens needs {what}{}; use a smaller -c", memory_note());
        let Some(total) = total else { return Err(too_big("more bytes than can be counted".into())) };
        if physical_memory().is_some_and(|m| total as u64 > m) {
            return Err(too_big(format!("{:.1} GiB", total as f64 / GIB)));
        }
        let alloc = |n: usize| zeroed(n).ok_or_else(|| too_big(format!("{:.1} GiB", total as f64 / GIB)));
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for _ in 0..n_layer {
            k.push(alloc(n_ctx * k_dim)?);
            v.push(alloc(n_ctx * v_dim)?);
        }
        Ok(KvCache { n_ctx, k_dim, v_dim, k, v, lens: vec![0; n_layer] })
    }

    pub fn n_layer(&self) -> usize {
        self.lens.len()
    }

    /// Positions layer `layer` holds.
    pub fn len(&self, layer: usize) -> usize {
        self.lens[layer]
    }

    /// Positions every layer holds (where the next full forward starts).
    pub fn seq_len(&self) -> usize {
        self.lens.iter().copied().min().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.seq_len() == 0
    }

    /// Forget positions `pos..` in `layers`.
    pub fn remove_from(&mut self, pos: usize, layers: Range<usize>) {
        for l in &mut self.lens[layers] {
            *l = (*l).min(pos);
        }
    }

    /// Forget positions `len..` in every layer.
    pub fn truncate(&mut self, len: usize) {
        self.remove_from(len, 0..self.lens.len());
    }

    /// Check that `n` rows can be written at `pos..` of `layer` (no gap, room).
    pub fn check_write(&self, layer: usize, pos: usize, n: usize) -> Result<()> {
        if pos > self.lens[layer] {
            bail!("layer {layer}: writing position {pos} would leave a gap after {} cached positions", self.lens[layer]);
        }
        if pos + n > self.n_ctx {
            bail!("the context is full: {pos} + {n} tokens exceed the context size {}", self.n_ctx);
        }
        Ok(())
    }

    /// Store `n` rows of keys and values (f32, rounded to f16) at positions
    /// `pos..pos + n` of `layer`; the layer then holds exactly `0..pos + n`.
    /// Callers check with `check_write` first.
    pub fn store(&mut self, layer: usize, pos: usize, n: usize, k: &[f32], v: &[f32]) {
        let (kd, vd) = (self.k_dim, self.v_dim);
        for (o, &x) in self.k[layer][pos * kd..(pos + n) * kd].iter_mut().zip(&k[..n * kd]) {
            *o = f16::from_f32(x).to_bits();
        }
        for (o, &x) in self.v[layer][pos * vd..(pos + n) * vd].iter_mut().zip(&v[..n * vd]) {
            *o = f16::from_f32(x).to_bits();
        }
        self.lens[layer] = pos + n;
    }

    /// Keys and values (f16 bits) of positions `pos..pos + n` of `layer`.
    pub fn rows_f16(&self, layer: usize, pos: usize, n: usize) -> (&[u16], &[u16]) {
        let (kd, vd) = (self.k_dim, self.v_dim);
        (&self.k[layer][pos * kd..(pos + n) * kd], &self.v[layer][pos * vd..(pos + n) * vd])
    }

    /// `store` of keys and values already f16 (`rows_f16`'s, e.g. of another
    /// cache of the same dimensions).
    pub fn store_f16(&mut self, layer: usize, pos: usize, n: usize, k: &[u16], v: &[u16]) {
        let (kd, vd) = (self.k_dim, self.v_dim);
        self.k[layer][pos * kd..(pos + n) * kd].copy_from_slice(&k[..n * kd]);
        self.v[layer][pos * vd..(pos + n) * vd].copy_from_slice(&v[..n * vd]);
        self.lens[layer] = pos + n;
    }

    pub fn k_layer(&self, layer: usize) -> &[u16] {
        &self.k[layer]
    }
    pub fn v_layer(&self, layer: usize) -> &[u16] {
        &self.v[layer]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_keep_their_own_length() {
        let mut kv = KvCache::new(4, 8, 2, 2).unwrap();
        let rows = [1.0f32; 6];
        for l in 0..4 {
            kv.store(l, 0, 3, &rows, &rows);
        }
        // the first two layers run ahead (early exit)
        for l in 0..2 {
            kv.check_write(l, 3, 2).unwrap();
            kv.store(l, 3, 2, &rows, &rows);
        }
        assert_eq!((kv.len(0), kv.len(1), kv.len(2), kv.seq_len()), (5, 5, 3, 3));
        assert!(kv.check_write(2, 4, 1).is_err(), "a gap must be refused");
        assert!(kv.check_write(0, 5, 4).is_err(), "past the context");
        kv.remove_from(4, 0..2);
        assert_eq!((kv.len(0), kv.len(3)), (4, 3));
        kv.truncate(1);
        assert_eq!((0..4).map(|l| kv.len(l)).collect::<Vec<_>>(), vec![1; 4]);
    }

    #[test]
    fn f16_rows_copy_between_caches() {
        let mut a = KvCache::new(2, 8, 2, 3).unwrap();
        let (k, v): (Vec<f32>, Vec<f32>) = ((0..8).map(|i| i as f32 * 0.3).collect(), (0..12).map(|i| -(i as f32) * 0.7).collect());
        a.store(1, 0, 4, &k, &v);
        let mut b = KvCache::new(2, 8, 2, 3).unwrap();
        b.store(1, 0, 4, &[9.0; 8], &[9.0; 12]);
        // positions 1..3 of a into b, which then holds 0..3
        let (kb, vb) = a.rows_f16(1, 1, 2);
        let (kb, vb) = (kb.to_vec(), vb.to_vec());
        b.store_f16(1, 1, 2, &kb, &vb);
        assert_eq!(b.len(1), 3);
        assert_eq!(b.rows_f16(1, 1, 2), a.rows_f16(1, 1, 2));
        assert_eq!(b.rows_f16(1, 0, 1).0, &[f16::from_f32(9.0).to_bits(); 2]);
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_errors() {
        for n_ctx in [100_000_000usize, 4_294_967_296, usize::MAX / 2] {
            let e = KvCache::new(24, n_ctx, 128, 128).err().expect("refused");
            assert!(format!("{e:#}").contains("KV cache"), "{e:#}");
        }
    }
}
