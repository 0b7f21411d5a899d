//! Byte buffers aligned to a cache line, and the huge-page pool the repacked
//! weights live in.
//!
//! Generation streams every weight once per token; on 4 KiB pages that is a
//! TLB miss per 4 KiB (and the hardware prefetchers stop at each page). Big
//! buffers are anonymous maps advised to use transparent huge pages, started
//! and ended on 2 MiB boundaries; weight matrices smaller than that share
//! such maps (`AlignedBytes::weights`), so they sit in huge pages too. Qwen
//! 0.5B Q4_K_M (most matrices under 4 MiB): 141 of 466 MB of repacked
//! weights were in huge pages; tg64 -t 1 with all of them in huge pages,
//! 5 interleaved runs, median 51.1 -> 55.6 t/s.

use std::sync::{Arc, Mutex, Weak};

/// A byte buffer aligned to a cache line (64 bytes): activation blocks need
/// 2- or 4-byte alignment, the fast kernels' 64-byte loads whole lines.
#[derive(Default)]
pub struct AlignedBytes {
    store: Store,
    len: usize,
}

#[derive(Default)]
enum Store {
    #[default]
    Empty,
    Lines(Vec<Line>),
    /// `cap` bytes at offset `off` of a huge-page map (shared with other
    /// buffers when pooled; the parts are disjoint).
    Huge {
        map: Arc<HugeMap>,
        off: usize,
        cap: usize,
    },
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Buffers from this size on get a huge-page map of their own.
const HUGE_PAGE_MIN: usize = 4 << 20;
/// A transparent huge page (x86-64).
const HUGE_PAGE: usize = 2 << 20;
/// Size of the maps weight matrices share; bigger matrices than a quarter
/// of it get their own.
const POOL_MAP: usize = 32 << 20;

/// An anonymous map from a huge-page boundary, advised to use huge pages.
struct HugeMap {
    _map: memmap2::MmapMut,
    /// The first huge-page boundary in the map, `len` bytes usable.
    base: *mut u8,
    len: usize,
}

// SAFETY: the map lives as long as the struct; buffers write only their own
// disjoint parts of it (through `AlignedBytes`'s exclusive borrows).
unsafe impl Send for HugeMap {}
unsafe impl Sync for HugeMap {}

impl HugeMap {
    fn new(len: usize) -> Option<Arc<HugeMap>> {
        let len = len.next_multiple_of(HUGE_PAGE);
        let mut m = memmap2::MmapOptions::new().len(len + HUGE_PAGE).map_anon().ok()?;
        let off = (m.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - m.as_ptr() as usize;
        #[cfg(target_os = "linux")]
        let _ = m.advise_range(memmap2::Advice::HugePage, off, len);
        // SAFETY: off < HUGE_PAGE, inside the map.
        let base = unsafe { m.as_mut_ptr().add(off) };
        Some(Arc::new(HugeMap { _map: m, base, len }))
    }
}

/// The map weights are being placed in, and its first free byte.
static POOL: Mutex<(Weak<HugeMap>, usize)> = Mutex::new((Weak::new(), 0));

impl Store {
    fn with_capacity(len: usize) -> Store {
        if len >= HUGE_PAGE_MIN {
            if let Some(map) = HugeMap::new(len) {
                let cap = map.len;
                return Store::Huge { map, off: 0, cap };
            }
        }
        Store::Lines(vec![Line([0; 64]); len.div_ceil(64)])
    }
    /// `len` zero bytes in the weight pool (or a map of their own).
    fn pooled(len: usize) -> Store {
        let need = len.next_multiple_of(64);
        if need > POOL_MAP / 4 {
            return Store::with_capacity(len);
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let current = pool.0.upgrade().filter(|m| m.len - pool.1 >= need);
        let map = match current {
            Some(m) => m,
            None => match HugeMap::new(POOL_MAP) {
                Some(m) => {
                    *pool = (Arc::downgrade(&m), 0);
                    m
                }
                None => return Store::with_capacity(len),
            },
        };
        let off = pool.1;
        pool.1 += need;
        Store::Huge { map, off, cap: need }
    }
    fn capacity(&self) -> usize {
        match self {
            Store::Empty => 0,
            Store::Lines(v) => v.len() * 64,
            Store::Huge { cap, .. } => *cap,
        }
    }
    fn ptr(&self) -> *mut u8 {
        match self {
            Store::Empty => std::ptr::NonNull::<Line>::dangling().as_ptr() as *mut u8,
            Store::Lines(v) => v.as_ptr() as *mut u8,
            // SAFETY: off + cap <= map.len.
            Store::Huge { map, off, .. } => unsafe { map.base.add(*off) },
        }
    }
}

impl Clone for AlignedBytes {
    fn clone(&self) -> Self {
        let mut c = AlignedBytes::new(self.len);
        c.as_mut_slice().copy_from_slice(self.as_slice());
        c
    }
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn new(len: usize) -> Self {
        AlignedBytes { store: Store::with_capacity(len), len }
    }
    /// `len` zero bytes for weights kept as long as the model: placed in
    /// maps shared by such buffers, so small matrices sit in huge pages too.
    pub fn weights(len: usize) -> Self {
        AlignedBytes { store: Store::pooled(len), len }
    }
    /// Grow or shrink to `len` bytes (contents up to the old length kept).
    pub fn resize(&mut self, len: usize) {
        if self.store.capacity() < len {
            let s = Store::with_capacity(len);
            // SAFETY: both buffers hold at least `self.len` bytes and do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(self.store.ptr(), s.ptr(), self.len) };
            self.store = s;
        }
        self.len = len;
    }
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: plain-byte storage of at least `len` bytes (aligned dangling when empty).
        unsafe { std::slice::from_raw_parts(self.store.ptr(), self.len) }
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, exclusive borrow; a pooled buffer's bytes are its own.
        unsafe { std::slice::from_raw_parts_mut(self.store.ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pooled weight buffers are zeroed, 64-byte aligned, disjoint, and keep
    /// their bytes while others are written and dropped.
    #[test]
    fn pooled_buffers_are_disjoint_and_zeroed() {
        let sizes = [100, 4096, 3 << 20, 1, 9 << 20, 5 << 20, 64];
        let mut bufs: Vec<AlignedBytes> = sizes.iter().map(|&n| AlignedBytes::weights(n)).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            assert_eq!(b.as_slice().len(), sizes[i]);
            assert_eq!(b.as_slice().as_ptr() as usize % 64, 0);
            assert!(b.as_slice().iter().all(|&x| x == 0));
            b.as_mut_slice().fill(i as u8 + 1);
        }
        bufs.remove(2);
        let fresh = AlignedBytes::weights(1 << 20);
        assert!(fresh.as_slice().iter().all(|&x| x == 0));
        for b in &bufs {
            let v = b.as_slice()[0];
            assert!(b.as_slice().iter().all(|&x| x == v), "a buffer was overwritten");
        }
    }
}
