//! Per-layer key/value cache, stored as f16 (llama.cpp's default cache type).
//! `truncate` rolls back to a shorter sequence (speculative decoding).

pub struct KvCache {
    pub n_ctx: usize,
    pub k_dim: usize,
    pub v_dim: usize,
    k: Vec<Vec<u16>>,
    v: Vec<Vec<u16>>,
    /// Number of positions filled.
    pub len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize, n_ctx: usize, k_dim: usize, v_dim: usize) -> Self {
        KvCache {
            n_ctx,
            k_dim,
            v_dim,
            k: (0..n_layer).map(|_| vec![0u16; n_ctx * k_dim]).collect(),
            v: (0..n_layer).map(|_| vec![0u16; n_ctx * v_dim]).collect(),
            len: 0,
        }
    }

    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn k_row_mut(&mut self, layer: usize, pos: usize) -> &mut [u16] {
        &mut self.k[layer][pos * self.k_dim..(pos + 1) * self.k_dim]
    }
    pub fn v_row_mut(&mut self, layer: usize, pos: usize) -> &mut [u16] {
        &mut self.v[layer][pos * self.v_dim..(pos + 1) * self.v_dim]
    }
    pub fn k_layer(&self, layer: usize) -> &[u16] {
        &self.k[layer]
    }
    pub fn v_layer(&self, layer: usize) -> &[u16] {
        &self.v[layer]
    }
}
