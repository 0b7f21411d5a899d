//! llama-perplexity's `--kl-divergence-base` file: "_logits_", n_ctx, n_vocab,
//! n_chunk (i32 each), the n_chunk*n_ctx evaluated token ids (i32), then for
//! every chunk n_ctx-1-n_ctx/2 packed rows of log-probabilities (u16; see
//! `logprob::pack_row`). All little-endian, as both programs write it on x86.

use super::logprob::packed_row_len;
use anyhow::{bail, Context, Result};
use std::io::{BufReader, Read, Write};

const MAGIC: &[u8; 8] = b"_logits_";

pub fn write_header(w: &mut dyn Write, n_ctx: usize, n_vocab: usize, n_chunk: usize, tokens: &[u32]) -> Result<()> {
    let mut buf = Vec::with_capacity(20 + tokens.len() * 4);
    buf.extend_from_slice(MAGIC);
    for v in [n_ctx, n_vocab, n_chunk] {
        buf.extend_from_slice(&(v as i32).to_le_bytes());
    }
    for &t in tokens {
        buf.extend_from_slice(&(t as i32).to_le_bytes());
    }
    w.write_all(&buf)?;
    Ok(())
}

pub fn write_rows(w: &mut dyn Write, rows: &[u16]) -> Result<()> {
    let bytes: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.write_all(&bytes)?;
    Ok(())
}

pub struct LogitsReader {
    pub n_ctx: usize,
    pub n_vocab: usize,
    pub n_chunk: usize,
    pub tokens: Vec<u32>,
    r: BufReader<std::fs::File>,
    buf: Vec<u8>,
}

fn read_i32(r: &mut impl Read, what: &str) -> Result<i32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).with_context(|| format!("failed reading {what}"))?;
    Ok(i32::from_le_bytes(b))
}

impl LogitsReader {
    pub fn open(file: &std::path::Path) -> Result<Self> {
        let path = file.display();
        let f = std::fs::File::open(file).with_context(|| format!("failed to open {path}"))?;
        let len = f.metadata()?.len();
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut magic = [0u8; 8];
        if r.read_exact(&mut magic).is_err() || &magic != MAGIC {
            bail!("{path} does not look like a file containing log-probabilities");
        }
        let n_ctx = read_i32(&mut r, "n_ctx")?;
        let n_vocab = read_i32(&mut r, "n_vocab")?;
        let n_chunk = read_i32(&mut r, "n_chunk")?;
        if n_ctx < 4 || n_vocab < 1 || n_chunk < 1 {
            bail!("{path}: bad header (n_ctx {n_ctx}, n_vocab {n_vocab}, n_chunk {n_chunk})");
        }
        let (n_ctx, n_vocab, n_chunk) = (n_ctx as usize, n_vocab as usize, n_chunk as usize);
        let n_scored = n_ctx - 1 - n_ctx / 2;
        let want = 20 + 4 * (n_ctx as u128 * n_chunk as u128) + 2 * (n_chunk * n_scored) as u128 * packed_row_len(n_vocab) as u128;
        if (len as u128) < want {
            bail!("{path} is truncated: {len} bytes, the header announces {want}");
        }
        let mut raw = vec![0u8; 4 * n_ctx * n_chunk];
        r.read_exact(&mut raw).context("failed reading evaluation tokens")?;
        let tokens: Vec<u32> = raw.chunks_exact(4).map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as u32).collect();
        if let Some(t) = tokens.iter().find(|&&t| t as usize >= n_vocab) {
            bail!("{path}: token id {} is outside the vocabulary of {n_vocab}", *t as i32);
        }
        Ok(LogitsReader { n_ctx, n_vocab, n_chunk, tokens, r, buf: Vec::new() })
    }

    /// The next chunk's packed rows (n_ctx-1-n_ctx/2 rows of packed_row_len values).
    pub fn read_rows(&mut self, out: &mut [u16]) -> std::io::Result<()> {
        self.buf.resize(out.len() * 2, 0);
        self.r.read_exact(&mut self.buf)?;
        for (o, b) in out.iter_mut().zip(self.buf.chunks_exact(2)) {
            *o = u16::from_le_bytes([b[0], b[1]]);
        }
        Ok(())
    }
}
