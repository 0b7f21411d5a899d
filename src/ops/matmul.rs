//! Matrix products of quantized weights with f32 activations, as ggml does
//! them: the activations are first quantized to the weight type's activation
//! format, then each output is one `vec_dot`. Work is split over rows (crate::parallel);
//! each weight row is read once and dotted with every token of the batch.

use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::parallel::{self, SendPtr};
use crate::quant::{kernels, AlignedBytes, TypeKernels};
use anyhow::{bail, Result};

/// A 2-D weight matrix in the file: `rows` rows of `cols` elements.
#[derive(Clone)]
pub struct QMatrix {
    pub name: String,
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub row_bytes: usize,
    offset: usize,
    pub kern: TypeKernels,
    /// The rows repacked for `kern.gemm_packed` (see `pack`).
    packed: Option<std::sync::Arc<AlignedBytes>>,
}

impl QMatrix {
    pub fn from_info(t: &TensorInfo) -> Result<Self> {
        if t.dims.len() > 2 && t.dims[2..].iter().any(|&d| d != 1) {
            bail!("tensor {}: expected a matrix, found dims {:?}", t.name, t.dims);
        }
        let Some(kern) = kernels(t.ty) else { bail!("tensor {}: type {} cannot be a weight", t.name, t.ty.name()) };
        let cols = t.dims[0] as usize;
        let rows = t.n_rows();
        Ok(QMatrix { name: t.name.clone(), ty: t.ty, rows, cols, row_bytes: t.ty.row_bytes(cols).unwrap(), offset: t.offset, kern, packed: None })
    }

    /// Copy the rows into the packed layout of `crate::quant::pack_rows` when
    /// this machine has a kernel for it (32-element block types): a 4-row
    /// tile then reads one sequential stream. Costs a copy of the matrix at
    /// load; RLLAMA_NO_REPACK=1 keeps the zero-copy mmap.
    pub fn pack(&mut self, g: &GgufFile) {
        if self.kern.gemm_packed.is_none() || std::env::var_os("RLLAMA_NO_REPACK").is_some() {
            return;
        }
        let p = crate::quant::pack_rows(self.data(g), self.rows, self.row_bytes, self.ty.block_bytes());
        self.packed = Some(std::sync::Arc::new(p));
    }

    pub fn data<'a>(&self, g: &'a GgufFile) -> &'a [u8] {
        g.tensor_data_at(self.offset, self.rows * self.row_bytes)
    }

    pub fn row<'a>(&self, g: &'a GgufFile, r: usize) -> &'a [u8] {
        &self.data(g)[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    /// Dequantize one row (e.g. an embedding lookup).
    pub fn dequantize_row(&self, g: &GgufFile, r: usize, out: &mut [f32]) {
        (self.kern.dequantize)(self.row(g, r), &mut out[..self.cols]);
    }

    /// Bytes of one activation row in this matrix's activation format.
    pub fn act_row_bytes(&self) -> usize {
        self.kern.act.row_bytes(self.cols).unwrap()
    }
}

/// Activations quantized for one weight type.
pub struct QuantizedActs {
    pub buf: AlignedBytes,
    pub row_bytes: usize,
    pub n: usize,
    pub act: Option<GgmlType>,
}

impl Default for QuantizedActs {
    fn default() -> Self {
        QuantizedActs { buf: AlignedBytes::default(), row_bytes: 0, n: 0, act: None }
    }
}

/// Quantize `n` rows of `x` (each `w.cols` long) into `w`'s activation format.
pub fn quantize_acts(w: &QMatrix, x: &[f32], n: usize, q: &mut QuantizedActs) {
    let rb = w.act_row_bytes();
    q.buf.resize(rb * n);
    q.row_bytes = rb;
    q.n = n;
    q.act = Some(w.kern.act);
    let f = w.kern.quantize_act;
    let cols = w.cols;
    let buf = q.buf.as_mut_slice();
    if n >= 4 {
        let p = SendPtr(buf.as_mut_ptr());
        parallel::for_each(n, |t| {
            // SAFETY: row t of the buffer, disjoint per item.
            let o = unsafe { std::slice::from_raw_parts_mut(p.get().add(t * rb), rb) };
            f(&x[t * cols..(t + 1) * cols], o)
        });
    } else {
        buf.chunks_mut(rb).zip(x.chunks(cols)).for_each(|(o, x)| f(x, o));
    }
}

/// out[t * w.rows + r] = W[r] . x[t] for t < q.n, with `x` already quantized.
pub fn matmul_q(g: &GgufFile, w: &QMatrix, q: &QuantizedActs, out: &mut [f32]) {
    matmul_q_in_batch(g, w, q, out, None)
}

/// `matmul_q` for rows that stand for tokens `ids` of a batch of `n` tokens:
/// the rounding ggml uses depends on the batch, and llama.cpp multiplies the
/// whole batch where only some rows are kept (the last layer's outputs).
pub fn matmul_q_in_batch(g: &GgufFile, w: &QMatrix, q: &QuantizedActs, out: &mut [f32], batch: Option<(usize, &[usize])>) {
    let n = q.n;
    // every token of the batch, in order: the plain case
    let batch = batch.filter(|&(nb, ids)| !(nb == n && ids.iter().enumerate().all(|(i, &t)| i == t)));
    assert_eq!(q.act, Some(w.kern.act));
    assert!(out.len() >= n * w.rows);
    let data = w.data(g);
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
        (Some(p), Some(f), _) if batch.is_none() || same => Some((p.as_slice(), f)),
        (_, _, Some(f)) if batch.is_none() || same => Some((data, f)),
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
                    Some((nb, ids)) => kern.dot_for(nb, ids[t]),
                    None => kern.dot_for(n, t),
                };
                let v = dot(wr, &acts[t * rb..(t + 1) * rb]);
                // SAFETY: (t, r) pairs are disjoint across tasks and within bounds (asserted above).
                unsafe { *p.get().add(t * rows + r) = v };
            }
        }
    });
}

/// Quantize and multiply in one call.
pub fn matmul(g: &GgufFile, w: &QMatrix, x: &[f32], n: usize, q: &mut QuantizedActs, out: &mut [f32]) {
    quantize_acts(w, x, n, q);
    matmul_q(g, w, q, out);
}
