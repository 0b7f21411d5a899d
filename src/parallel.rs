//! A persistent team of spinning worker threads for the hot loop.
//!
//! A forward pass of a small model is hundreds of short parallel steps
//! (SmolLM2: ~200 matmuls of ~50 µs per token). Waking sleeping threads for
//! each (rayon's par_iter) costs microseconds per step; here workers spin on a
//! generation counter between steps, as ggml's thread pool does, and park on
//! a condition variable only after a while without work. The caller takes
//! part as thread 0. The thread count is rayon's current one, so `-t` (rayon's
//! global pool) and `ThreadPool::install` (rllama bench) both set it.
//!
//! Results never depend on which thread ran which item: callers split work
//! into items whose outputs are disjoint and computed the same way anywhere.

use std::cell::UnsafeCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
use std::sync::{Condvar, Mutex, OnceLock};

/// Spins before a worker parks (a few milliseconds).
const SPIN_LIMIT: u32 = 1 << 18;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Bumped once per job; workers run a job when they see it change.
    gen: AtomicUsize,
    /// Participants of the current job (caller included).
    n_part: AtomicUsize,
    /// Workers that have finished the current job.
    done: AtomicUsize,
    panicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller of `run` while no worker reads
// it (before `gen` is bumped, after every participant reported done), and the
// pointee outlives the job because `run` waits for all participants.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Team {
    shared: &'static Shared,
    spawned: Mutex<usize>,
    /// One job at a time (nested or concurrent callers run inline).
    busy: AtomicBool,
}

fn team() -> &'static Team {
    static T: OnceLock<Team> = OnceLock::new();
    T.get_or_init(|| {
        let shared = Box::leak(Box::new(Shared {
            gen: AtomicUsize::new(0),
            n_part: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        Team { shared, spawned: Mutex::new(0), busy: AtomicBool::new(false) }
    })
}

fn worker(sh: &'static Shared, idx: usize, mut seen: usize) {
    loop {
        let mut spins = 0u32;
        loop {
            let g = sh.gen.load(Acquire);
            if g != seen {
                seen = g;
                break;
            }
            spins += 1;
            if spins < SPIN_LIMIT {
                std::hint::spin_loop();
                continue;
            }
            let guard = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.sleepers.fetch_add(1, SeqCst);
            let mut guard = guard;
            while sh.gen.load(SeqCst) == seen {
                guard = sh.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleepers.fetch_sub(1, SeqCst);
            drop(guard);
            spins = 0;
        }
        let tid = idx + 1;
        if tid < sh.n_part.load(Acquire) {
            // SAFETY: see `Shared`; the job is set before `gen` changed.
            let job = unsafe { (*sh.job.get()).expect("job set") };
            let r = catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(tid) }));
            if r.is_err() {
                sh.panicked.store(true, SeqCst);
            }
            sh.done.fetch_add(1, AcqRel);
        }
    }
}

/// The number of threads parallel steps use (rayon's current count).
pub fn n_threads() -> usize {
    rayon::current_num_threads().max(1)
}

/// Run `f(tid)` on `n` threads (tid 0 = the caller) and wait for all.
pub fn run(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let t = team();
    if n <= 1 || t.busy.swap(true, Acquire) {
        for tid in 0..n.max(1) {
            f(tid);
        }
        return;
    }
    {
        let mut sp = t.spawned.lock().unwrap_or_else(|e| e.into_inner());
        while *sp < n - 1 {
            let idx = *sp;
            let sh = t.shared;
            // the generation before this job: the worker must not miss it
            let seen = sh.gen.load(Acquire);
            std::thread::Builder::new()
                .name(format!("rllama-worker-{idx}"))
                .spawn(move || worker(sh, idx, seen))
                .expect("spawn worker thread");
            *sp += 1;
        }
    }
    let sh = t.shared;
    // SAFETY: no worker reads `job` now (the previous job finished); the
    // lifetime is erased but `f` outlives this call, which waits for all.
    unsafe {
        let job: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f);
        *sh.job.get() = Some(job);
    }
    sh.n_part.store(n, Release);
    sh.done.store(0, Release);
    sh.gen.fetch_add(1, SeqCst);
    if sh.sleepers.load(SeqCst) > 0 {
        let _g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
        sh.wake.notify_all();
    }
    let r = catch_unwind(AssertUnwindSafe(|| f(0)));
    while sh.done.load(Acquire) < n - 1 {
        std::hint::spin_loop();
    }
    t.busy.store(false, Release);
    if r.is_err() || sh.panicked.swap(false, SeqCst) {
        panic!("a parallel task panicked");
    }
}

/// Call `f(i)` for every i < n_items, spread over the team; items are claimed
/// one at a time, so uneven items balance out.
pub fn for_each(n_items: usize, f: impl Fn(usize) + Sync) {
    let nt = n_threads().min(n_items);
    if nt <= 1 {
        (0..n_items).for_each(f);
        return;
    }
    let next = AtomicUsize::new(0);
    run(nt, &|_| loop {
        let i = next.fetch_add(1, Relaxed);
        if i >= n_items {
            break;
        }
        f(i);
    });
}

/// A raw pointer that parallel items use to write disjoint parts of one buffer.
#[derive(Clone, Copy)]
pub struct SendPtr<T>(pub *mut T);
// SAFETY: users write only disjoint elements from different items.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so closures capture the whole Sync wrapper).
    #[inline(always)]
    pub fn get(self) -> *mut T {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_once() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| {
            for n in [0, 1, 2, 7, 1000] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_each(n, |i| {
                    hits[i].fetch_add(1, Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Relaxed) == 1));
            }
        });
    }

    #[test]
    fn nested_runs_inline() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        pool.install(|| {
            let total = AtomicUsize::new(0);
            for_each(4, |_| {
                for_each(3, |_| {
                    total.fetch_add(1, Relaxed);
                });
            });
            assert_eq!(total.load(Relaxed), 12);
        });
    }
}
