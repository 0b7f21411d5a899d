//! Matrix products of quantized weights with f32 activations, as ggml does
//! them: the activations are first quantized to the weight type's activation
//! format, then each output is one `vec_dot`. Work is split over rows (crate::parallel);
//! each weight row is read once and dotted with every token of the batch.

use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::parallel::{self, SendPtr};
use crate::quant::fast::{self, acts32, FastKernels};
use crate::quant::{kernels, AlignedBytes, TypeKernels};
use anyhow::{bail, Result};
use std::sync::Arc;

/// Where a matrix's bytes live: a GGUF file (zero-copy view into its
/// mapping) or memory of its own. Either way shared, so a matrix can come
/// from any file (a second model, an adapter, an exit or MTP head) and
/// outlive the borrow of the file it was read from.
#[derive(Clone)]
enum Storage {
    File(Arc<GgufFile>, usize),
    Heap(Arc<AlignedBytes>),
}

/// A 2-D weight matrix: `rows` rows of `cols` elements of type `ty`.
#[derive(Clone)]
pub struct QMatrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    bytes: Storage,
    pub kern: TypeKernels,
    /// The rows repacked for `kern.gemm_packed` (see `pack`).
    packed: Option<Arc<AlignedBytes>>,
    /// The rows in tiles for a batch-invariant kernel (see `pack`): fast
    /// mode's, or exact mode's where ggml's rounding does not depend on the
    /// batch either (`fast::exact_as_fast`, `fast::exact_lanes`).
    fast: Option<(FastKernels, Arc<AlignedBytes>)>,
    /// Exact mode: the rows in tiles for kernels with ggml's rounding
    /// (`fast::exact_tiles`; see `pack`).
    exact_tiles: Option<(fast::ExactTiles, Arc<AlignedBytes>)>,
}

/// How the rows of a product are rounded. ggml's kernels round a row
/// differently depending on the batch it is in; llama.cpp multiplies the whole
/// batch even where only some rows are kept (the last layer's outputs).
#[derive(Clone, Copy, Debug)]
pub enum Batch<'a> {
    /// The rows are one whole batch, in order.
    Whole,
    /// The rows stand for tokens `ids` of a batch of `n` tokens.
    Rows(usize, &'a [usize]),
    /// Every row rounded as a one-token step would round it.
    Steps,
}

impl QMatrix {
    fn new(name: &str, ty: GgmlType, dims: &[u64], bytes: Storage) -> Result<Self> {
        if dims.is_empty() || dims.len() > 2 && dims[2..].iter().any(|&d| d != 1) {
            bail!("tensor {name}: expected a matrix, found dims {dims:?}");
        }
        let Some(kern) = kernels(ty) else { bail!("tensor {name}: type {} cannot be a weight", ty.name()) };
        let cols = dims[0] as usize;
        let rows = dims.get(1).copied().unwrap_or(1) as usize;
        let Some(row_bytes) = ty.row_bytes(cols) else { bail!("tensor {name}: {cols} columns do not fill whole {} blocks", ty.name()) };
        Ok(QMatrix { name: name.to_string(), ty, rows, cols, row_bytes, bytes, kern, packed: None, fast: None, exact_tiles: None })
    }

    /// The tensor `t` of file `g`, sharing the file's mapping.
    pub fn from_file(g: &Arc<GgufFile>, t: &TensorInfo) -> Result<Self> {
        let m = Self::new(&t.name, t.ty, &t.dims, Storage::File(g.clone(), t.offset))?;
        if m.rows * m.row_bytes > t.n_bytes {
            bail!("tensor {}: {} bytes, too few for {} rows", t.name, t.n_bytes, m.rows);
        }
        Ok(m)
    }

    /// A matrix over bytes of its own (`rows` rows of `cols` elements of `ty`).
    pub fn from_bytes(name: &str, ty: GgmlType, cols: usize, rows: usize, data: &[u8]) -> Result<Self> {
        let mut own = AlignedBytes::new(data.len());
        own.as_mut_slice().copy_from_slice(data);
        let m = Self::new(name, ty, &[cols as u64, rows as u64], Storage::Heap(Arc::new(own)))?;
        if data.len() != m.rows * m.row_bytes {
            bail!("matrix {name}: {} bytes for {rows} rows of {} bytes", data.len(), m.row_bytes);
        }
        Ok(m)
    }

    /// Copy the rows into a layout made for this machine's kernels: in fast
    /// mode (`crate::quant::fast`) tiles of 8 or 16 rows for a batch-invariant
    /// kernel, where the type has one; in exact mode the tiles of the kernel
    /// that rounds as llama.cpp's repacked matrices (`fast::exact_tiles`,
    /// `fast::exact_as_fast`), else (or without one) the packed layout of
    /// `crate::quant::pack_rows` for the 32-element block types (a 4-row
    /// tile then reads one sequential stream). Costs a copy of the matrix at
    /// load; RLLAMA_NO_REPACK=1 keeps the zero-copy mmap (and rounds Q4_0
    /// and IQ4_NL as ggml's `vec_dot`, as llama.cpp's `--no-repack`).
    pub fn pack(&mut self) {
        if std::env::var_os("RLLAMA_NO_REPACK").is_some() {
            return;
        }
        if !fast::exact() {
            if let Some(k) = fast::kernels(self.ty) {
                self.fast = Some((k, Arc::new((k.pack)(self.data(), self.rows, self.row_bytes))));
                return;
            }
        } else if let Some(e) = fast::exact_tiles(self.ty) {
            self.exact_tiles = Some((e, Arc::new((e.gemv.pack)(self.data(), self.rows, self.row_bytes))));
            return;
        } else if let Some(k) = fast::exact_as_fast(self.ty, self.rows).or_else(|| fast::exact_lanes(self.ty)) {
            // both batch-invariant, as llama.cpp's kernels for these types
            self.fast = Some((k, Arc::new((k.pack)(self.data(), self.rows, self.row_bytes))));
            return;
        }
        if self.kern.gemm_packed.is_none() {
            return;
        }
        let p = crate::quant::pack_rows(self.data(), self.rows, self.row_bytes, self.ty.block_bytes());
        self.packed = Some(Arc::new(p));
    }

    pub fn data(&self) -> &[u8] {
        let len = self.rows * self.row_bytes;
        match &self.bytes {
            Storage::File(g, off) => g.tensor_data_at(*off, len),
            Storage::Heap(b) => &b.as_slice()[..len],
        }
    }

    pub fn row(&self, r: usize) -> &[u8] {
        &self.data()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantize one row (e.g. an embedding lookup).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        (self.kern.dequantize)(self.row(r), &mut out[..self.cols]);
    }

    /// The whole matrix as f32 rows.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut v = vec![0f32; self.rows * self.cols];
        (self.kern.dequantize)(&self.data()[..self.rows * self.row_bytes], &mut v);
        v
    }

    /// Bytes of one activation row in this matrix's activation format.
    pub fn act_row_bytes(&self) -> usize {
        self.kern.act.row_bytes(self.cols).unwrap()
    }
}

/// Activations quantized for one weight type.
#[derive(Default)]
pub struct QuantizedActs {
    pub buf: AlignedBytes,
    pub row_bytes: usize,
    pub n: usize,
    pub act: Option<GgmlType>,
}

/// Quantize `n` rows of `x` (each `w.cols` long) into `w`'s activation format.
pub fn quantize_acts(w: &QMatrix, x: &[f32], n: usize, q: &mut QuantizedActs) {
    let rb = w.act_row_bytes();
    let act = w.kern.act;
    q.buf.resize(acts32::buffer_bytes(act, n, rb, w.cols));
    q.row_bytes = rb;
    q.n = n;
    q.act = Some(act);
    let f = w.kern.quantize_act;
    let cols = w.cols;
    let nb = cols / 32;
    let sides = acts32::act_block(act).map(|_| acts32::sides_offset(n, rb));
    let p = SendPtr(q.buf.as_mut_slice().as_mut_ptr());
    // row t and (32-element types) its sides: disjoint per row
    let one = |t: usize| {
        // SAFETY: row t of the buffer and its sides, disjoint per t, inside
        // the buffer sized above (sides 64-byte aligned: Side is 16 bytes).
        let o = unsafe { std::slice::from_raw_parts_mut(p.get().add(t * rb), rb) };
        f(&x[t * cols..(t + 1) * cols], o);
        if let Some(off) = sides {
            let s = unsafe { std::slice::from_raw_parts_mut((p.get().add(off) as *mut acts32::Side).add(t * nb), nb) };
            acts32::write_sides(act, o, s);
        }
    };
    if n >= 4 {
        parallel::for_each(n, one);
    } else {
        (0..n).for_each(one);
    }
}

/// out[t * w.rows + r] = W[r] . x[t] for t < q.n, with `x` already quantized.
pub fn matmul_q(w: &QMatrix, q: &QuantizedActs, out: &mut [f32]) {
    matmul_q_in_batch(w, q, out, Batch::Whole)
}

/// `matmul_q` with the rows rounded as `batch` says.
pub fn matmul_q_in_batch(w: &QMatrix, q: &QuantizedActs, out: &mut [f32], batch: Batch) {
    let n = q.n;
    // The kernels index the weights and activations by these sizes unchecked:
    // check them once here, for every caller.
    assert_eq!(q.act, Some(w.kern.act), "{}: activations quantized for another type", w.name);
    assert_eq!(q.row_bytes, w.act_row_bytes(), "{}: activation rows of another width", w.name);
    assert!(q.buf.as_slice().len() >= n * q.row_bytes, "{}: too few activation bytes", w.name);
    assert!(out.len() >= n * w.rows, "{}: output too small", w.name);
    // every token of the batch, in order: the plain case
    let batch = match batch {
        Batch::Rows(nb, ids) if nb == n && ids.iter().enumerate().all(|(i, &t)| i == t) => Batch::Whole,
        Batch::Rows(_, ids) => {
            assert!(ids.len() >= n, "{}: a batch id per row", w.name);
            batch
        }
        Batch::Steps if n == 1 => Batch::Whole,
        b => b,
    };
    if let Some((k, tiles)) = &w.fast {
        return matmul_fast(w, k, tiles, q, out);
    }
    let batch = if n > 1 && round_as_steps() { Batch::Steps } else { batch };
    if let Some((e, tiles)) = &w.exact_tiles {
        // ggml's GEMM for a batch's first n - n % 4 tokens, its GEMV for the rest
        let groups4 = |nb: usize, t: usize| t < crate::quant::groups4_len(nb);
        let split = match batch {
            Batch::Whole => Some(crate::quant::groups4_len(n)),
            Batch::Steps => Some(0),
            Batch::Rows(nb, ids) if ids[..n].iter().all(|&i| !groups4(nb, i)) => Some(0),
            Batch::Rows(nb, ids) if ids[..n].iter().all(|&i| groups4(nb, i)) => Some(n),
            Batch::Rows(..) => None,
        };
        if let Some(g) = split {
            tiled(w, &e.gemv, e.groups4, tiles, q, 0..g, out);
            tiled(w, &e.gemv, e.gemv.gemm, tiles, q, g..n, out);
            return;
        }
    }
    let whole = matches!(batch, Batch::Whole);
    let data = w.data();
    let acts = q.buf.as_slice();
    let rb = q.row_bytes;
    let kern = w.kern;
    let wrb = w.row_bytes;
    let rows = w.rows;
    let ptr = SendPtr(out.as_mut_ptr());
    // Memory-bound small batches: one contiguous range of rows per thread
    // (a single long stream each; interleaved 64-row chunks halved SmolLM2's
    // -t 2 generation, 160 -> 300 t/s). Compute-bound batches: small chunks
    // claimed dynamically, so a preempted core does not hold up the step.
    let nt = parallel::n_threads();
    let chunk = if n < 16 { rows.div_ceil(nt).next_multiple_of(4) } else { (rows / (nt * 8)).clamp(4, 64).next_multiple_of(4) };
    // the gemm kernels round as a whole batch of n; rows kept from a bigger
    // batch go pair by pair unless the rounding does not depend on the batch
    let same = matches!(kern.batch, crate::quant::BatchDot::Same);
    let gemm = match (&w.packed, kern.gemm_packed, kern.gemm) {
        // packed rows (chunks start at multiples of 4 rows: whole groups)
        (Some(p), Some(f), _) if whole || same => Some((p.as_slice(), f)),
        (_, _, Some(f)) if whole || same => Some((data, f)),
        _ => None,
    };
    if let Some((wdata, gemm)) = gemm {
        parallel::for_each(rows.div_ceil(chunk), |c| {
            let (r0, r1) = (c * chunk, ((c + 1) * chunk).min(rows));
            // SAFETY: rows r0..r1 of the weights, all q.n activation rows, and
            // outputs (t, r) for r in r0..r1 only: disjoint across items, in bounds.
            unsafe { gemm(&wdata[r0 * wrb..r1 * wrb], wrb, r1 - r0, acts, rb, n, ptr.get().add(r0), rows) };
        });
        return;
    }
    parallel::for_each(rows.div_ceil(chunk), |c| {
        let p = ptr;
        for r in c * chunk..((c + 1) * chunk).min(rows) {
            let wr = &data[r * wrb..(r + 1) * wrb];
            for t in 0..n {
                let dot = match batch {
                    Batch::Rows(nb, ids) => kern.dot_for(nb, ids[t]),
                    Batch::Steps => kern.dot_for(1, 0),
                    Batch::Whole => kern.dot_for(n, t),
                };
                let v = dot(wr, &acts[t * rb..(t + 1) * rb]);
                // SAFETY: (t, r) pairs are disjoint across tasks and within bounds (asserted above).
                unsafe { *p.get().add(t * rows + r) = v };
            }
        }
    });
}

/// RLLAMA_ROUND_AS_STEPS=1: exact kernels round every row as a one-token
/// step, i.e. what llama.cpp computes when it evaluates tokens one at a time.
/// Its distance from batch rounding (KL divergence) is the scale for fast
/// mode's (tests/fast_mode.rs).
fn round_as_steps() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("RLLAMA_ROUND_AS_STEPS").is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Up to 8 tokens, each thread owns one contiguous range of the tiles, cut
/// into this many chunks: it runs its own chunks in order (one stream
/// through memory, prefetched up to the range's end), then takes chunks
/// left in the other ranges (`parallel::for_each_owned`), so a thread whose
/// core is shared (a busy machine, a slower virtual CPU) hands over work
/// rather than making every matmul wait for it.
/// - Earlier, 4 ranges per thread claimed in turn from one counter: Qwen
///   1.5B Q4_K_M tg32 at -t 2 on a 2-core EPYC (Zen 1) with a busy loop on
///   the second core: 5.5-5.7 t/s with one range per thread, 6.1 with 4.
/// - But then a thread's ranges lay apart: each a new stream whose first
///   64 KB the software prefetch (`PREFETCH_L2_BYTES` ahead) missed, and
///   whose last 64 KB of prefetches fetched the other thread's tiles. On a
///   2-core Zen 4, tg128 -t 2, interleaved rounds: Qwen 0.5B Q8_0 41-46 t/s
///   with 4 ranges claimed in turn, 42-53 with one range per thread, 45-57
///   owned (ik_llama.cpp -rtr 1 in the same rounds: 45-61); SmolLM2 Q4_1
///   200-232 -> 216-229; Qwen 1.5B Q4_K_M tg64 25.6-27.9 -> 26.8-33.5. With a busy
///   loop on one core (Qwen 0.5B Q8_0 tg64): 21.8-22.0 t/s in turn, 22.2-24.4
///   owned.
const SMALL_BATCH_RANGES: usize = 4;

/// The fast kernel: every row rounded the same in any batch, so `batch` is
/// not needed. Up to 8 tokens (memory-bound) a contiguous range of tiles
/// per thread (`SMALL_BATCH_RANGES`); more, chunks of 4 tiles claimed
/// dynamically (a chunk's weights stay in L2 while every token passes over
/// them). Which thread runs a range never changes its results.
fn matmul_fast(w: &QMatrix, k: &FastKernels, tiles: &AlignedBytes, q: &QuantizedActs, out: &mut [f32]) {
    tiled(w, k, k.gemm, tiles, q, 0..q.n, out)
}

/// Tokens `toks` of `q` times the tiles (`k`'s layout) through `gemm`, into
/// their rows of `out`.
fn tiled(w: &QMatrix, k: &FastKernels, gemm: fast::FastGemmFn, tiles: &AlignedBytes, q: &QuantizedActs, toks: std::ops::Range<usize>, out: &mut [f32]) {
    const CHUNK_TILES: usize = 4;
    let (n, rows) = (toks.len(), w.rows);
    if n == 0 {
        return;
    }
    let nb = w.cols / w.ty.block_elems();
    let ntiles = rows.div_ceil(k.rows);
    let tile_bytes = k.geometry.tile_bytes(nb);
    assert!(tiles.as_slice().len() >= ntiles * tile_bytes, "{}: tiles too short", w.name);
    let rb = q.row_bytes;
    let acts = &q.buf.as_slice()[toks.start * rb..toks.end * rb];
    let data = tiles.as_slice();
    let ptr = SendPtr(out[toks.start * rows..].as_mut_ptr());
    // tiles t0..t1, prefetching up to tile `end`
    let run = |t0: usize, t1: usize, end: usize| {
        let r0 = t0 * k.rows;
        // SAFETY: tiles t0..end (checked above), all n activation rows
        // (checked by the caller), outputs (t, r) for rows of tiles t0..t1
        // only: disjoint across items and below `rows`.
        unsafe { gemm(&data[t0 * tile_bytes..end * tile_bytes], nb, t1 - t0, acts, rb, n, ptr.get().add(r0), rows, rows - r0) };
    };
    if n <= 8 {
        parallel::for_each_owned(ntiles, SMALL_BATCH_RANGES, |r, end| run(r.start, r.end, end));
    } else {
        parallel::for_each(ntiles.div_ceil(CHUNK_TILES), |c| {
            let (t0, t1) = (c * CHUNK_TILES, ((c + 1) * CHUNK_TILES).min(ntiles));
            run(t0, t1, t1)
        });
    }
}

/// Quantize and multiply in one call.
pub fn matmul(w: &QMatrix, x: &[f32], n: usize, q: &mut QuantizedActs, out: &mut [f32]) {
    quantize_acts(w, x, n, q);
    matmul_q(w, q, out);
}
