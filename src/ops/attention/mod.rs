//! Attention over an F16 KV cache the way ggml's CPU flash-attention kernel
//! computes it for F16 K/V: the query rounded to f16, scores in f32, an
//! online softmax, and the value accumulator held in f16.

use half::f16;

#[cfg(target_arch = "x86_64")]
mod regs;

#[inline]
fn h2f(b: u16) -> f32 {
    f16::from_bits(b).to_f32()
}
#[inline]
fn f2h(x: f32) -> u16 {
    f16::from_f32(x).to_bits()
}

/// f16 vector kernels of the attention loop, SIMD when available.
pub mod f16v {
    use super::{f2h, h2f};
    #[cfg(target_arch = "x86_64")]
    use crate::quant::simd::{avx2, has_avx2};

    /// f16 dot product in ggml's AVX-512 summation order: four 16-lane fused
    /// multiply-add accumulators over 64-element steps, reduced pairwise, the
    /// tail added in f64. Matching that order keeps the f16 value accumulator
    /// of the attention on the same roundings as llama.cpp. An AVX2 build's
    /// order with `RLLAMA_GGML_BUILD=avx2` (`ops::ggml_avx2_build`).
    pub fn dot(a: &[u16], b: &[u16]) -> f32 {
        if crate::ops::ggml_avx2_build() {
            return crate::quant::float::dot_f16_avx2_build(a, b);
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: avx2/fma/f16c detected at run time.
            return unsafe { avx2::dot_f16_ggml(a, b) };
        }
        // the scalar twin, the same order
        crate::quant::float::dot_f16(a, b)
    }

    pub fn mad(acc: &mut [u16], v: &[u16], s: f32) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { avx2::mad_f16(acc, v, s) };
        }
        for (a, &x) in acc.iter_mut().zip(v) {
            *a = f2h(h2f(x).mul_add(s, h2f(*a)));
        }
    }
    pub fn scale(acc: &mut [u16], s: f32) {
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            // SAFETY: as above.
            return unsafe { avx2::scale_f16(acc, s) };
        }
        for a in acc.iter_mut() {
            *a = f2h(h2f(*a) * s);
        }
    }
}

/// One query head against the cached positions `kv`, visited in that order
/// (llama.cpp's cell order, `LlamaCells::keys`). `k_at(i)` / `v_at(i)` give
/// the f16 key/value head vectors of position i.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16<'a>(
    q: &[f32],
    kv: impl IntoIterator<Item = usize>,
    k_at: impl Fn(usize) -> &'a [u16],
    v_at: impl Fn(usize) -> &'a [u16],
    scale: f32,
    softcap: f32,
    out: &mut [f32],
    qh: &mut Vec<u16>,
    acc: &mut Vec<u16>,
) {
    let dv = out.len();
    qh.clear();
    qh.extend(q.iter().map(|&x| f2h(x)));
    let (_, s_sum) = attend_f16_partial(qh, kv, &k_at, &v_at, scale, softcap, dv, acc);
    let inv = if s_sum == 0.0 { 0.0 } else { 1.0 / s_sum };
    for d in 0..dv {
        out[d] = h2f(acc[d]) * inv;
    }
}

/// The online softmax of `attend_f16` over the positions `kv`, in that
/// order (the f16 query `qh`): the f16 value accumulator in `acc` (`dv`
/// lanes), and the running maximum and sum of weights (-inf and 0 when `kv`
/// is empty).
#[allow(clippy::too_many_arguments)]
fn attend_f16_partial<'a>(
    qh: &[u16],
    kv: impl IntoIterator<Item = usize>,
    k_at: &impl Fn(usize) -> &'a [u16],
    v_at: &impl Fn(usize) -> &'a [u16],
    scale: f32,
    softcap: f32,
    dv: usize,
    acc: &mut Vec<u16>,
) -> (f32, f32) {
    let dk = qh.len();
    acc.clear();
    acc.resize(dv, 0);
    let mut m = f32::NEG_INFINITY;
    let mut s_sum = 0.0f32;
    for i in kv {
        let k = k_at(i);
        let mut s = f16v::dot(&k[..dk], qh) * scale;
        if softcap != 0.0 {
            s = softcap * s.tanh();
        }
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            let mold = m;
            m = s;
            ms = (mold - m).exp();
            f16v::scale(acc, ms);
        } else {
            vs = (s - m).exp();
        }
        let v = v_at(i);
        f16v::mad(acc, &v[..dv], vs);
        s_sum = s_sum.mul_add(ms, vs); // fused, as ggml's compiled `S = S*ms + vs`
    }
    (m, s_sum)
}

/// Cells of llama.cpp's KV view from which a one-token step splits the keys
/// over its threads (`use_split_kv_path` in ggml's flash attention).
pub const SPLIT_KV_MIN: usize = 512;
/// llama.cpp pads its context and its KV view to multiples of this.
pub const LLAMA_KV_PAD: usize = 256;

/// Where llama.cpp keeps one sequence's positions, written in order from
/// position 0: cell c of its cache of `cells` holds the newest position
/// congruent to c (mod `cells`) up to `last`, the newest one written (a
/// sliding-window cache reuses its cells as a ring once `last` reaches
/// `cells`; a full-context one never does). Its attention visits the keys in
/// cell order, over a view of `n_kv` cells.
#[derive(Clone, Copy, Debug)]
pub struct LlamaCells {
    pub cells: usize,
    pub last: usize,
}

impl LlamaCells {
    /// The position cell `c` holds, if any.
    pub fn pos(&self, c: usize) -> Option<usize> {
        let r = self.last % self.cells;
        let base = self.last - r;
        if c <= r {
            Some(base + c)
        } else {
            (base + c).checked_sub(self.cells)
        }
    }

    /// The positions of the cells `range` that `visible` holds, in cell order.
    pub fn keys(&self, range: std::ops::Range<usize>, visible: std::ops::Range<usize>) -> impl Iterator<Item = usize> {
        let me = *self;
        range.filter_map(move |c| me.pos(c)).filter(move |p| visible.contains(p))
    }

    /// The cells holding the positions `visible` (at most `cells` of them,
    /// all written): one range, or past the ring's turn two, in cell order.
    pub fn cell_ranges(&self, visible: &std::ops::Range<usize>) -> [std::ops::Range<usize>; 2] {
        let r = self.last % self.cells;
        let base = self.last - r;
        // positions base..=last in cells 0..=r, base-cells+r+1..base in r+1..cells
        let cells_of = |lo: usize, hi: usize, first: usize| if lo < hi { lo - first..hi - first } else { 0..0 };
        let newest = cells_of(visible.start.max(base), visible.end, base);
        let older = match base.checked_sub(self.cells) {
            Some(first) => cells_of(visible.start.max(first + r + 1), visible.end.min(base), first),
            None => 0..0,
        };
        [newest, older]
    }

    /// The cells of llama.cpp's KV view (`llama_kv_cache::get_n_kv`): the
    /// used ones padded to `LLAMA_KV_PAD`, at least that, at most the cache.
    pub fn n_kv(&self) -> usize {
        (self.last + 1).min(self.cells).next_multiple_of(LLAMA_KV_PAD).max(LLAMA_KV_PAD).min(self.cells)
    }
}

/// The keys a query sees, as the tiled kernels ask: a range of key
/// indices, or (llama.cpp's sliding-window ring in cell space) two, the
/// second starting at least a tile past the first's end, so a tile holds
/// a contiguous part of at most one of them.
pub trait Visible {
    /// The first key index seen (or past the last, if none).
    fn lo(&self) -> usize;
    /// One past the last key index seen.
    fn hi(&self) -> usize;
    fn sees(&self, p: usize) -> bool;
    /// The seen keys of the tile at t0 (`FA_TILE` keys), relative to t0.
    fn span(&self, t0: usize) -> std::ops::Range<usize>;
}

impl Visible for std::ops::Range<usize> {
    #[inline(always)]
    fn lo(&self) -> usize {
        self.start
    }
    #[inline(always)]
    fn hi(&self) -> usize {
        self.end
    }
    #[inline(always)]
    fn sees(&self, p: usize) -> bool {
        p >= self.start && p < self.end
    }
    #[inline(always)]
    fn span(&self, t0: usize) -> std::ops::Range<usize> {
        self.start.max(t0) - t0..self.end.min(t0 + FA_TILE).max(t0) - t0
    }
}

impl Visible for [std::ops::Range<usize>; 2] {
    fn lo(&self) -> usize {
        if self[0].is_empty() {
            self[1].start
        } else {
            self[0].start
        }
    }
    fn hi(&self) -> usize {
        if self[1].is_empty() {
            self[0].end
        } else {
            self[1].end
        }
    }
    fn sees(&self, p: usize) -> bool {
        self[0].sees(p) || self[1].sees(p)
    }
    fn span(&self, t0: usize) -> std::ops::Range<usize> {
        let a = self[0].span(t0);
        if a.is_empty() {
            self[1].span(t0)
        } else {
            a
        }
    }
}

/// `attend_f16` as llama.cpp computes a one-token step once its KV view
/// holds `n_kv` >= `SPLIT_KV_MIN` cells: the view's cells split into `nth`
/// (its thread count) chunks of ceil(n_kv / nth), each chunk's online
/// softmax alone (`attend_f16_partial` over the `visible` positions its
/// cells hold, in cell order; its f16 accumulator widened), then the chunks
/// merged in order as
/// `ggml_flash_attn_ext_reduce_partials` does (libm `expf`, GCC's fused
/// `acc * scale_old + part * scale_new`), and the result scaled by 1 / sum.
/// With one chunk this equals `attend_f16`; with more the f16 accumulators
/// round differently, so a result depends on the thread count, as
/// llama.cpp's does.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16_split<'a>(
    q: &[f32],
    cells: LlamaCells,
    visible: std::ops::Range<usize>,
    nth: usize,
    k_at: impl Fn(usize) -> &'a [u16],
    v_at: impl Fn(usize) -> &'a [u16],
    scale: f32,
    softcap: f32,
    out: &mut [f32],
    qh: &mut Vec<u16>,
    acc: &mut Vec<u16>,
) {
    let dv = out.len();
    qh.clear();
    qh.extend(q.iter().map(|&x| f2h(x)));
    let n_kv = cells.n_kv();
    let chunk = n_kv.div_ceil(nth.max(1)).max(1);
    let (mut m, mut s_sum) = (f32::NEG_INFINITY, 0f32);
    out.iter_mut().for_each(|x| *x = 0.0);
    for lo in (0..n_kv).step_by(chunk) {
        let keys = cells.keys(lo..(lo + chunk).min(n_kv), visible.clone());
        let (mc, sc) = attend_f16_partial(qh, keys, &k_at, &v_at, scale, softcap, dv, acc);
        if sc == 0.0 {
            continue;
        }
        let m_new = m.max(mc);
        let (s_old, s_new) = ((m - m_new).exp(), (mc - m_new).exp());
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = o.mul_add(s_old, h2f(a) * s_new);
        }
        s_sum = s_sum.mul_add(s_old, sc * s_new);
        m = m_new;
    }
    if s_sum != 0.0 {
        let inv = 1.0 / s_sum;
        out.iter_mut().for_each(|x| *x *= inv);
    }
}

/// One head's rows in a position-major cache: row p is
/// `data[p * stride + offset..][..len]` (f16 bits). The tiled kernels take
/// rows this way, not through a closure per position: two closure calls a
/// key (and two more for the prefetch) were a third of the register
/// kernel's time with the rows in cache.
#[derive(Clone, Copy, Debug)]
pub struct HeadRows<'a> {
    pub data: &'a [u16],
    pub stride: usize,
    pub offset: usize,
    pub len: usize,
}

impl<'a> HeadRows<'a> {
    /// Rows of `len` elements, each `stride` after the last, from `offset`.
    pub fn new(data: &'a [u16], stride: usize, offset: usize, len: usize) -> Self {
        HeadRows { data, stride, offset, len }
    }

    /// Row p.
    #[inline]
    pub fn row(&self, p: usize) -> &'a [u16] {
        &self.data[p * self.stride + self.offset..][..self.len]
    }

    /// Whether rows 0..n all lie inside `data` (so `ptr` may be used for them).
    fn holds(&self, n: usize) -> bool {
        n == 0 || (n - 1).checked_mul(self.stride).and_then(|x| x.checked_add(self.offset + self.len)).is_some_and(|e| e <= self.data.len())
    }

    /// The start of row p.
    ///
    /// # Safety
    /// `holds(p + 1)`.
    #[inline(always)]
    unsafe fn ptr(&self, p: usize) -> *const u16 {
        self.data.as_ptr().add(p * self.stride + self.offset)
    }
}

/// Key positions per tile of ggml's tiled flash attention.
pub const FA_TILE: usize = 64;
/// Bytes per cache line.
const LINE_BYTES: usize = 64;
/// Value lanes accumulated in registers at a time.
const VBLOCK: usize = 64;

/// Queries of one head the way ggml's tiled flash attention computes batches
/// of at least `FA_TILE` queries: each query stays f32, K and V are widened to
/// f32, and the keys go in tiles of 64 positions (aligned at multiples of 64):
/// scores as fused chains over the head dimension, one online-softmax update
/// per tile (libm exp for the rescale, ggml_v_expf and the AVX-512 reduction
/// tree for the weights, their sum in f64), values as fused chains over the
/// tile into an f32 accumulator. `ranges[i]` are the positions query i sees;
/// `out` holds the results, `dv` per query.
pub fn attend_tiled(qs: &[&[f32]], ranges: &[std::ops::Range<usize>], k: HeadRows, v: HeadRows, scale: f32, dv: usize, out: &mut [f32]) {
    attend_tiled_stats(qs, ranges, k, v, scale, dv, out, None)
}

/// `attend_tiled`, also giving each query's running maximum and sum of
/// weights (`stats`), so results over disjoint key ranges can be merged
/// (`merge_segments`).
#[allow(clippy::too_many_arguments)]
pub fn attend_tiled_stats(
    qs: &[&[f32]],
    ranges: &[std::ops::Range<usize>],
    k: HeadRows,
    v: HeadRows,
    scale: f32,
    dv: usize,
    out: &mut [f32],
    stats: Option<&mut [(f32, f32)]>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        let fits = regs::fits(qs.first().map_or(0, |q| q.len()), dv);
        if crate::quant::simd::has_avx512() && fits {
            // SAFETY: avx512f/avx2/fma/f16c detected at run time; sizes checked.
            return unsafe { regs::tiled_regs_avx512(qs, ranges, k, v, scale, dv, out, stats) };
        }
        if crate::quant::simd::has_avx2() && fits {
            // SAFETY: avx2/fma/f16c detected at run time; sizes checked.
            return unsafe { regs::tiled_regs_avx2(qs, ranges, k, v, scale, dv, out, stats) };
        }
    }
    tiled_generic(qs, ranges, &|p| k.row(p), &|p| v.row(p), scale, dv, out, stats)
}

/// `attend_tiled` over llama.cpp's cells instead of positions (`k_at(c)` /
/// `v_at(c)`: the rows cell c holds), each query seeing up to two ranges of
/// cells: a sliding-window cache past its size, where the ring puts the
/// newest positions in its first cells (`LlamaCells`). The same kernel as
/// `attend_tiled`'s generic body, the same bits where one range is given.
pub fn attend_tiled_cells<'a>(
    qs: &[&[f32]],
    visible: &[[std::ops::Range<usize>; 2]],
    k_at: impl Fn(usize) -> &'a [u16],
    v_at: impl Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
) {
    tiled_generic(qs, visible, &k_at, &v_at, scale, dv, out, None)
}

/// The generic tiled body (any `Visible`) compiled for the best ISA the CPU
/// has: `attend_tiled_stats` where the register kernels do not apply, and
/// `attend_tiled_cells`.
#[allow(clippy::too_many_arguments)]
fn tiled_generic<'a, V: Visible>(
    qs: &[&[f32]],
    ranges: &[V],
    k_at: &dyn Fn(usize) -> &'a [u16],
    v_at: &dyn Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
    stats: Option<&mut [(f32, f32)]>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::quant::simd::has_avx512() {
            // SAFETY: avx512f/avx2/fma/f16c detected at run time; the body is plain Rust.
            return unsafe { tiled_avx512(qs, ranges, k_at, v_at, scale, dv, out, stats) };
        }
        if crate::quant::simd::has_avx2() {
            // SAFETY: avx2/fma/f16c detected at run time; the body is plain Rust.
            return unsafe { tiled_fma(qs, ranges, k_at, v_at, scale, dv, out, stats) };
        }
    }
    tiled_body(qs, ranges, k_at, v_at, scale, dv, out, widen_scalar, widen_kt_scalar, exp_scalar, stats)
}

/// Key positions per segment when fast mode splits a long context over
/// work items (flash-decoding); segments start at multiples of this, so a
/// query's arithmetic depends only on its own positions. 256 gives one
/// token on a model with one KV head (Gemma 270M) an item per thread from
/// 512 positions on (tg64 at depth 2048: 87-94 -> 95-100 t/s against 1024).
pub const KEY_SEGMENT: usize = 256;

/// Merge `n` per-segment results (`part(s)`: the normalized output and its
/// (max, sum), segments in order) into `out`.
pub fn merge_segments<'a>(n: usize, part: impl Fn(usize) -> (&'a [f32], (f32, f32)), out: &mut [f32]) {
    let m = (0..n).map(|s| part(s).1).filter(|x| x.1 > 0.0).fold(f32::NEG_INFINITY, |a, x| a.max(x.0));
    out.iter_mut().for_each(|x| *x = 0.0);
    let mut total = 0f32;
    for s in 0..n {
        let (os, (ms, ss)) = part(s);
        if ss <= 0.0 {
            continue;
        }
        let w = ss * (ms - m).exp();
        total += w;
        for (x, &v) in out.iter_mut().zip(os.iter()) {
            *x += w * v;
        }
    }
    let inv = if total > 0.0 { 1.0 / total } else { 0.0 };
    out.iter_mut().for_each(|x| *x *= inv);
}

/// A tile's keys (`rows`, `dk` f16 each) widened into `kt` transposed,
/// kt[d * FA_TILE + j], keys past `rows` zero.
fn widen_kt_scalar(rows: &[&[u16]], dk: usize, kt: &mut [f32]) {
    widen_kt_keys(rows, dk, kt, 0);
}

/// `widen_kt_scalar` for keys j0..FA_TILE.
fn widen_kt_keys(rows: &[&[u16]], dk: usize, kt: &mut [f32], j0: usize) {
    for j in j0..FA_TILE {
        for d in 0..dk {
            kt[d * FA_TILE + j] = rows.get(j).map_or(0.0, |r| h2f(r[d]));
        }
    }
}

/// Keys j0..j0 + 8 of `rows` as pointers for `transpose8_f16`, each row
/// checked to hold at least `dk` elements.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn key_rows8(rows: &[&[u16]], j0: usize, dk: usize) -> [*const u16; 8] {
    std::array::from_fn(|i| {
        let r = rows[j0 + i];
        assert!(r.len() >= dk, "a key row shorter than the head");
        r.as_ptr()
    })
}

/// Dims d0..d0 + 8 of 8 keys' rows, transposed as f16 (SSE2 unpacks):
/// element k holds dim d0 + k of the 8 keys. The row pointers are taken
/// once per 8 keys (`key_rows8`), not re-read and bounds-checked per block
/// of dims.
///
/// # Safety
/// Every row is valid for d0 + 8 elements; the CPU has SSE2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose8_f16(rows: &[*const u16; 8], d0: usize) -> [std::arch::x86_64::__m128i; 8] {
    use std::arch::x86_64::*;
    let a: [__m128i; 8] = std::array::from_fn(|i| _mm_loadu_si128(rows[i].add(d0) as *const __m128i));
    let t: [__m128i; 8] = std::array::from_fn(|i| {
        let (x, y) = (a[i / 2 * 2], a[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm_unpacklo_epi16(x, y)
        } else {
            _mm_unpackhi_epi16(x, y)
        }
    });
    // t[0]: keys 0,1 dims 0-3; t[1]: keys 0,1 dims 4-7; t[2], t[3]: keys 2,3; ...
    let u = [
        _mm_unpacklo_epi32(t[0], t[2]),
        _mm_unpackhi_epi32(t[0], t[2]),
        _mm_unpacklo_epi32(t[1], t[3]),
        _mm_unpackhi_epi32(t[1], t[3]),
        _mm_unpacklo_epi32(t[4], t[6]),
        _mm_unpackhi_epi32(t[4], t[6]),
        _mm_unpacklo_epi32(t[5], t[7]),
        _mm_unpackhi_epi32(t[5], t[7]),
    ];
    // u[k] (k < 4): keys 0-3, dims 2k, 2k+1; u[k + 4]: keys 4-7
    std::array::from_fn(|k| if k % 2 == 0 { _mm_unpacklo_epi64(u[k / 2], u[k / 2 + 4]) } else { _mm_unpackhi_epi64(u[k / 2], u[k / 2 + 4]) })
}

/// `widen_kt_scalar` by 8 x 8 blocks: transposed as f16, then widened 8 keys
/// at a time with F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_kt_f16c_impl(rows: &[&[u16]], dk: usize, kt: &mut [f32]) {
    use std::arch::x86_64::*;
    const T: usize = FA_TILE;
    let n8 = if dk.is_multiple_of(8) { rows.len() / 8 * 8 } else { 0 };
    for j0 in (0..n8).step_by(8) {
        let p = key_rows8(rows, j0, dk);
        for d0 in (0..dk).step_by(8) {
            let x = transpose8_f16(&p, d0);
            for (k, &xk) in x.iter().enumerate() {
                _mm256_storeu_ps(kt.as_mut_ptr().add((d0 + k) * T + j0), _mm256_cvtph_ps(xk));
            }
        }
    }
    widen_kt_keys(rows, dk, kt, n8);
}

#[cfg(target_arch = "x86_64")]
fn widen_kt_f16c(rows: &[&[u16]], dk: usize, kt: &mut [f32]) {
    assert!(kt.len() >= dk * FA_TILE && rows.len() <= FA_TILE && rows.iter().all(|r| r.len() >= dk));
    // SAFETY: only handed to the kernel by callers that detected avx2/f16c;
    // the stores stay inside kt (checked above).
    unsafe { widen_kt_f16c_impl(rows, dk, kt) }
}

/// x[i] = expf_ggml(x[i]), element by element.
fn exp_scalar(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = super::expf_ggml(*v));
}

/// The same values, 8 lanes at a time.
#[cfg(target_arch = "x86_64")]
fn exp_avx2(x: &mut [f32]) {
    // SAFETY: only handed to the kernel by callers that detected avx2/fma.
    unsafe { crate::quant::simd::avx2::exp_ggml(x) }
}

/// f16 to f32, element by element.
fn widen_scalar(src: &[u16], dst: &mut [f32]) {
    for (d, &h) in dst.iter_mut().zip(src) {
        *d = h2f(h);
    }
}

/// f16 to f32 with F16C (the same values as `widen_scalar`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_f16c_impl(src: &[u16], dst: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_cvtph_ps(_mm_loadu_si128(src.as_ptr().add(i) as *const __m128i));
        _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        i += 8;
    }
    widen_scalar(&src[i..n], &mut dst[i..n]);
}

#[cfg(target_arch = "x86_64")]
fn widen_f16c(src: &[u16], dst: &mut [f32]) {
    // SAFETY: only handed to the kernel by callers that detected avx2/f16c.
    unsafe { widen_f16c_impl(src, dst) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiled_fma<'a, V: Visible>(
    qs: &[&[f32]],
    ranges: &[V],
    k_at: &dyn Fn(usize) -> &'a [u16],
    v_at: &dyn Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
    stats: Option<&mut [(f32, f32)]>,
) {
    tiled_body(qs, ranges, k_at, v_at, scale, dv, out, widen_f16c, widen_kt_f16c, exp_avx2, stats)
}

/// The same body with 16-lane vectors (each score and value lane is its own
/// fused chain, so the width does not change a bit).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiled_avx512<'a, V: Visible>(
    qs: &[&[f32]],
    ranges: &[V],
    k_at: &dyn Fn(usize) -> &'a [u16],
    v_at: &dyn Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
    stats: Option<&mut [(f32, f32)]>,
) {
    tiled_body(qs, ranges, k_at, v_at, scale, dv, out, widen_f16c, widen_kt_f16c, exp_avx2, stats)
}

/// One tile's online-softmax step for a query: its scores `sc` (keys
/// t0..t0 + FA_TILE) become weights `w` (exp(score * scale - max) for the
/// keys in `r`, 0 elsewhere); when the running maximum `m` grows, the
/// accumulator `a` and the sum of weights `s_sum` are rescaled; the tile's
/// weights are added to `s_sum` (reduced by 16 lanes, summed in f64). False
/// when no key of the tile counts (the query skips the tile).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_softmax<V: Visible>(
    sc: &[f32; FA_TILE],
    r: &V,
    t0: usize,
    scale: f32,
    m: &mut f32,
    s_sum: &mut f32,
    a: &mut [f32],
    w: &mut [f32; FA_TILE],
    exp: fn(&mut [f32]),
) -> bool {
    for j in 0..FA_TILE {
        let p = t0 + j;
        w[j] = if r.sees(p) { sc[j] * scale } else { f32::NEG_INFINITY };
    }
    // the maximum by 16 lanes (the same value in any order: vectorized,
    // where a sequential fold was 2x the score work of a 64-dim head)
    let mut lanes = [f32::NEG_INFINITY; 16];
    for c in w.chunks_exact(16) {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = l.max(x);
        }
    }
    let tile_max = lanes.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
    if tile_max == f32::NEG_INFINITY {
        return false;
    }
    let m_new = m.max(tile_max);
    if m_new > *m {
        let ms = (*m - m_new).exp();
        a.iter_mut().for_each(|x| *x *= ms);
        *s_sum *= ms;
    }
    *m = m_new;
    w.iter_mut().for_each(|x| *x -= m_new);
    let mut sum = 0.0f64;
    if crate::ops::ggml_avx2_build() {
        // an AVX2 build's ggml_vec_soft_max_f32: its expf, 8 lanes summed
        // as halves, then pairs (movehl), then the two (movehdup)
        for g in w.chunks_mut(8) {
            g.iter_mut().for_each(|x| *x = crate::ops::expf_ggml_avx2(*x));
            let t: [f32; 4] = std::array::from_fn(|l| g[l + 4] + g[l]);
            sum += ((t[0] + t[2]) + (t[1] + t[3])) as f64;
        }
    } else {
        exp(w);
        for g in w.chunks(16) {
            sum += crate::quant::float::reduce16(g.try_into().unwrap()) as f64;
        }
    }
    *s_sum = (*s_sum as f64 + sum) as f32;
    true
}

/// Every cache line of one position's key and value rows into L2 (a hint:
/// a coming tile's, while this one is worked on; into L1 the 256 lines of
/// a Qwen tile filled its miss buffers and stalled the loop).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_rows(k: &[u16], v: &[u16]) {
    for row in [k, v] {
        prefetch_span(row.as_ptr(), row.len());
    }
}

/// Each cache line of the `n` elements from `p` hinted into L2 once (a
/// row of 64 dims is 2 lines; its first element and every 32nd, then its
/// last, hinted 3).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_span(p: *const u16, n: usize) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
    let (mut a, end) = ((p as usize) & !(LINE_BYTES - 1), p as usize + n * std::mem::size_of::<u16>());
    while a < end {
        // SAFETY: prefetching is a hint and does not fault.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(a as *const i8) };
        a += LINE_BYTES;
    }
}

/// The end of a tiled pass: each query's accumulator (`dv` per query) divided
/// by its sum of weights (0 when no key counted), and the running (max, sum)
/// per query in `stats` when asked for.
fn finish(acc: &mut [f32], dv: usize, m: &[f32], s_sum: &[f32], stats: Option<&mut [(f32, f32)]>) {
    for (a, &s) in acc.chunks_mut(dv).zip(s_sum) {
        let inv = if s == 0.0 { 0.0 } else { 1.0 / s };
        a.iter_mut().for_each(|x| *x *= inv);
    }
    if let Some(st) = stats {
        for (x, (&mi, &si)) in st.iter_mut().zip(m.iter().zip(s_sum)) {
            *x = (mi, si);
        }
    }
}

/// The tiled kernel; the loops over keys and over value dimensions are the
/// independent lanes (the compiler vectorises them), each lane a sequential
/// fused chain as in ggml's simd_gemm.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tiled_body<'a, V: Visible>(
    qs: &[&[f32]],
    ranges: &[V],
    k_at: &dyn Fn(usize) -> &'a [u16],
    v_at: &dyn Fn(usize) -> &'a [u16],
    scale: f32,
    dv: usize,
    out: &mut [f32],
    widen: fn(&[u16], &mut [f32]),
    widen_kt: fn(&[&[u16]], usize, &mut [f32]),
    exp: fn(&mut [f32]),
    stats: Option<&mut [(f32, f32)]>,
) {
    const T: usize = FA_TILE;
    let nq = qs.len();
    if nq == 0 {
        return;
    }
    let dk = qs[0].len();
    let lo = ranges.iter().map(|r| r.lo()).min().unwrap_or(0) / T * T;
    let hi = ranges.iter().map(|r| r.hi()).max().unwrap_or(0);
    let mut kt = vec![0f32; dk * T]; // [d][key]
    let mut vt = vec![0f32; T * dv]; // [key][d]
    let mut m = vec![f32::NEG_INFINITY; nq];
    let mut s_sum = vec![0f32; nq];
    let acc = &mut out[..nq * dv];
    acc.iter_mut().for_each(|a| *a = 0.0);
    let mut w = [0f32; T];
    let mut t0 = lo;
    while t0 < hi {
        let n_in = (hi - t0).min(T);
        let mut krows: [&[u16]; T] = [&[]; T];
        for tk in 0..n_in {
            #[cfg(target_arch = "x86_64")]
            if t0 + T + tk < hi {
                // the next tile's rows, while this one is widened
                prefetch_rows(&k_at(t0 + T + tk)[..dk], &v_at(t0 + T + tk)[..dv]);
            }
            krows[tk] = &k_at(t0 + tk)[..dk];
            widen(&v_at(t0 + tk)[..dv], &mut vt[tk * dv..(tk + 1) * dv]);
        }
        widen_kt(&krows[..n_in], dk, &mut kt);
        for (i, q) in qs.iter().enumerate() {
            let r = &ranges[i];
            let span = r.span(t0);
            if span.is_empty() {
                continue;
            }
            let mut sc = [0f32; T];
            for d in 0..dk {
                let qd = q[d];
                let row = &kt[d * T..d * T + T];
                for j in 0..T {
                    sc[j] = qd.mul_add(row[j], sc[j]);
                }
            }
            if !tile_softmax(&sc, r, t0, scale, &mut m[i], &mut s_sum[i], &mut acc[i * dv..(i + 1) * dv], &mut w, exp) {
                continue;
            }
            let a = &mut acc[i * dv..(i + 1) * dv];
            // keys outside the range weigh 0: ggml's fused add of 0 * v
            // changes nothing, so only the range's keys are added; each value
            // lane is one fused chain over the keys, held in registers by
            // blocks of VBLOCK lanes
            let (j0, j1) = (span.start, span.end);
            if dv.is_multiple_of(VBLOCK) {
                for c in (0..dv).step_by(VBLOCK) {
                    let mut loc = [0f32; VBLOCK];
                    loc.copy_from_slice(&a[c..c + VBLOCK]);
                    for j in j0..j1 {
                        let wj = w[j];
                        let vrow = &vt[j * dv + c..j * dv + c + VBLOCK];
                        for d in 0..VBLOCK {
                            loc[d] = wj.mul_add(vrow[d], loc[d]);
                        }
                    }
                    a[c..c + VBLOCK].copy_from_slice(&loc);
                }
            } else {
                for j in j0..j1 {
                    let wj = w[j];
                    let vrow = &vt[j * dv..(j + 1) * dv];
                    for d in 0..dv {
                        a[d] = wj.mul_add(vrow[d], a[d]);
                    }
                }
            }
        }
        t0 += T;
    }
    finish(acc, dv, &m, &s_sum, stats);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys, values (f16) and queries: one row per position or query.
    type Case = (Vec<Vec<u16>>, Vec<Vec<u16>>, Vec<Vec<f32>>);

    /// Keys and values of `n` positions (dim `d`, f16) and `nq` queries.
    fn setup(n: usize, d: usize, nq: usize) -> Case {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut r = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let k = (0..n).map(|_| (0..d).map(|_| f2h(r() * 2.0)).collect()).collect();
        let v = (0..n).map(|_| (0..d).map(|_| f2h(r())).collect()).collect();
        let q = (0..nq).map(|_| (0..d).map(|_| r() * 2.0).collect()).collect();
        (k, v, q)
    }

    /// Rows of `d` elements as one position-major array.
    fn flat(rows: &[Vec<u16>]) -> Vec<u16> {
        rows.concat()
    }

    fn run(qs: &[&[f32]], ranges: &[std::ops::Range<usize>], k: &[Vec<u16>], v: &[Vec<u16>], d: usize) -> Vec<f32> {
        let mut out = vec![0f32; qs.len() * d];
        let (kf, vf) = (flat(k), flat(v));
        attend_tiled(qs, ranges, HeadRows::new(&kf, d, 0, d), HeadRows::new(&vf, d, 0, d), 0.125, d, &mut out);
        out
    }

    /// A query's result is the same bits alone and inside any batch (fast
    /// mode's verification relies on it), and close to the f64 softmax.
    #[test]
    fn tiled_attention_is_batch_invariant_and_accurate() {
        let (n, d) = (200, 64);
        let (k, v, q) = setup(n, d, 40);
        // causal ranges ending anywhere, some with a sliding-window start
        let ranges: Vec<_> = (0..q.len()).map(|i| (if i % 3 == 0 { i * 2 } else { 0 })..(n - 39 + i)).collect();
        let all: Vec<&[f32]> = q.iter().map(|x| x.as_slice()).collect();
        let together = run(&all, &ranges, &k, &v, d);
        for i in 0..q.len() {
            let alone = run(&all[i..i + 1], &ranges[i..i + 1], &k, &v, d);
            assert_eq!(alone, together[i * d..(i + 1) * d], "query {i}: alone differs from the batch");
            let lo = i.saturating_sub(2);
            let some = run(&all[lo..i + 1], &ranges[lo..i + 1], &k, &v, d);
            assert_eq!(some[(i - lo) * d..], together[i * d..(i + 1) * d], "query {i}: a batch of {} differs", i + 1 - lo);
            // f64 reference
            let r = &ranges[i];
            let s: Vec<f64> = r.clone().map(|p| (0..d).map(|e| q[i][e] as f64 * h2f(k[p][e]) as f64).sum::<f64>() * 0.125).collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = w.iter().sum();
            for e in 0..d {
                let want: f64 = r.clone().zip(&w).map(|(p, wi)| wi * h2f(v[p][e]) as f64).sum::<f64>() / z;
                let got = together[i * d + e] as f64;
                assert!((got - want).abs() < 1e-5, "query {i} dim {e}: {got} vs {want}");
            }
        }
    }

    /// Attention over a range split at a segment boundary, merged, equals
    /// the unsplit result to float precision; a segment the range misses
    /// (sum 0) is ignored.
    #[test]
    fn merged_segments_equal_one_pass() {
        let (n, d) = (300, 64);
        let (k, v, q) = setup(n, d, 3);
        let (kf, vf) = (flat(&k), flat(&v));
        for (i, r) in [0..300usize, 17..300, 0..129].into_iter().enumerate() {
            let qi: &[f32] = &q[i];
            let whole = run(&[qi], std::slice::from_ref(&r), &k, &v, d);
            let cut = 128;
            let parts = [r.start..cut.max(r.start), cut.max(r.start)..r.end];
            let mut os = Vec::new();
            let mut sts = Vec::new();
            for pr in &parts {
                let mut o = vec![0f32; d];
                let mut st = [(f32::NEG_INFINITY, 0f32)];
                if pr.start < pr.end {
                    attend_tiled_stats(
                        &[qi],
                        std::slice::from_ref(pr),
                        HeadRows::new(&kf, d, 0, d),
                        HeadRows::new(&vf, d, 0, d),
                        0.125,
                        d,
                        &mut o,
                        Some(&mut st),
                    );
                }
                os.push(o);
                sts.push(st[0]);
            }
            let mut merged = vec![0f32; d];
            merge_segments(2, |s| (&os[s][..], sts[s]), &mut merged);
            for e in 0..d {
                assert!((merged[e] - whole[e]).abs() < 1e-5, "range {r:?} dim {e}: {} vs {}", merged[e], whole[e]);
            }
        }
    }

    /// The register-tile kernels (AVX-512 and AVX2) give the generic tiled
    /// kernel's bits and statistics: head sizes 64-256, 1..9 queries with
    /// causal, windowed and disjoint ranges, lengths off the 8-key
    /// transposition.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn register_tiles_equal_the_generic_kernel() {
        if !crate::quant::simd::has_avx2() {
            eprintln!("skipped: no AVX2 on this machine");
            return;
        }
        let avx512 = crate::quant::simd::has_avx512();
        if !avx512 {
            eprintln!("no AVX-512 on this machine: the AVX2 kernel only");
        }
        for (n, d) in [(131, 64), (200, 128), (300, 256), (64, 64), (7, 64)] {
            let (k, v, q) = setup(n, d, 9);
            // the rows inside a wider cache row (a second head's beside them)
            let wide_rows = |x: &[Vec<u16>]| x.iter().flat_map(|r| r.iter().chain(r.iter()).copied()).collect::<Vec<u16>>();
            let (kw, vw) = (wide_rows(&k), wide_rows(&v));
            let (kh, vh) = (HeadRows::new(&kw, 2 * d, d, d), HeadRows::new(&vw, 2 * d, d, d));
            for nq in 1..=9 {
                let qs: Vec<&[f32]> = q[..nq].iter().map(|x| x.as_slice()).collect();
                let ranges: Vec<_> = (0..nq)
                    .map(|i| {
                        let (a, b) = match i % 4 {
                            0 => (0, n.saturating_sub(i)),
                            1 => (n / 3, n),
                            2 => (i * 5, n / 2 + i),
                            _ => (n - 1, n),
                        };
                        let b = b.clamp(1, n);
                        a.min(b - 1)..b
                    })
                    .collect();
                let (kf, vf) = (|p: usize| k[p].as_slice(), |p: usize| v[p].as_slice());
                let mut want = vec![0f32; nq * d];
                let mut st_w = vec![(0f32, 0f32); nq];
                // SAFETY: avx2/fma/f16c detected above.
                unsafe { tiled_fma(&qs, &ranges, &kf, &vf, 0.125, d, &mut want, Some(&mut st_w)) };
                let bits = |x: &[f32]| x.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                for wide in [false, true] {
                    if wide && !avx512 {
                        continue;
                    }
                    let mut got = vec![0f32; nq * d];
                    let mut st_g = vec![(0f32, 0f32); nq];
                    // SAFETY: the instruction sets detected above.
                    unsafe {
                        if wide {
                            regs::tiled_regs_avx512(&qs, &ranges, kh, vh, 0.125, d, &mut got, Some(&mut st_g));
                        } else {
                            regs::tiled_regs_avx2(&qs, &ranges, kh, vh, 0.125, d, &mut got, Some(&mut st_g));
                        }
                    }
                    assert_eq!(bits(&got), bits(&want), "n {n} d {d} queries {nq} avx512 {wide}: outputs differ");
                    assert_eq!(st_g, st_w, "n {n} d {d} queries {nq} avx512 {wide}: statistics differ");
                }
            }
        }
    }

    /// llama.cpp's cells: positions in order from cell 0 until the cache is
    /// full, then a ring; its KV view padded to 256 cells within the cache.
    #[test]
    fn llama_cells_follow_llama_cpp() {
        let flat = LlamaCells { cells: 2048, last: 299 };
        assert_eq!((flat.pos(0), flat.pos(299), flat.pos(300)), (Some(0), Some(299), None));
        assert_eq!(flat.n_kv(), 512);
        assert_eq!(LlamaCells { cells: 2048, last: 10 }.n_kv(), 256);
        assert_eq!(LlamaCells { cells: 256, last: 100 }.n_kv(), 256);
        let ring = LlamaCells { cells: 1024, last: 1150 };
        assert_eq!((ring.pos(0), ring.pos(126), ring.pos(127), ring.pos(1023)), (Some(1024), Some(1150), Some(127), Some(1023)));
        assert_eq!(ring.n_kv(), 1024);
        // a window of 512: the newest cells first, then the older ones in it
        let keys: Vec<usize> = ring.keys(0..1024, 639..1151).collect();
        assert_eq!(keys.len(), 512);
        assert_eq!((keys[0], keys[126], keys[127], keys[511]), (1024, 1150, 639, 1023));
        // the same keys as cell ranges: cells 0..127 (1024..1151), 639..1024
        assert_eq!(ring.cell_ranges(&(639..1151)), [0..127, 639..1024]);
        assert_eq!(ring.cell_ranges(&(1030..1100)), [6..76, 0..0]);
        assert_eq!(flat.cell_ranges(&(10..200)), [10..200, 0..0]);
        for q in [1024, 1060, 1150] {
            let visible = (q + 1 - 512)..q + 1;
            let [a, b] = ring.cell_ranges(&visible);
            let via: Vec<usize> = a.chain(b).map(|c| ring.pos(c).unwrap()).collect();
            assert_eq!(via, ring.keys(0..1024, visible).collect::<Vec<_>>());
        }
    }

    /// One chunk (one thread) is `attend_f16`; keys all in the first chunk
    /// too; keys across chunks are not (each chunk's f16 accumulator starts
    /// afresh), and more threads make more chunks.
    #[test]
    fn split_attention_is_one_chunk_per_thread() {
        let (n, d) = (600, 64);
        let (k, v, q) = setup(n, d, 1);
        let (ka, va) = (|p: usize| k[p].as_slice(), |p: usize| v[p].as_slice());
        let plain = |cells: LlamaCells, visible: std::ops::Range<usize>| {
            let mut out = vec![0f32; d];
            attend_f16(&q[0], cells.keys(0..cells.n_kv(), visible), ka, va, 0.125, 0.0, &mut out, &mut Vec::new(), &mut Vec::new());
            out
        };
        let split = |cells: LlamaCells, visible: std::ops::Range<usize>, nth: usize| {
            let mut out = vec![0f32; d];
            attend_f16_split(&q[0], cells, visible, nth, ka, va, 0.125, 0.0, &mut out, &mut Vec::new(), &mut Vec::new());
            out
        };
        let cells = LlamaCells { cells: 2048, last: n - 1 };
        assert_eq!(cells.n_kv(), 768);
        assert_eq!(split(cells, 0..n, 1), plain(cells, 0..n));
        // chunks of 384: a window inside the first
        assert_eq!(split(cells, 100..300, 2), plain(cells, 100..300));
        let (two, three) = (split(cells, 0..n, 2), split(cells, 0..n, 3));
        let base = plain(cells, 0..n);
        for other in [&two, &three] {
            assert!(other.iter().zip(&base).any(|(a, b)| a != b), "the chunks were not split");
            assert!(other.iter().zip(&base).all(|(a, b)| (a - b).abs() <= 2e-3), "split results far from the plain ones");
        }
        assert_ne!(two, three);
    }
}
