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
/// Spins between yields while waiting: a waiting thread gives its core away
/// now and then, so a team larger than the free cores still makes progress.
const SPINS_PER_YIELD: u32 = 1 << 10;
/// Low bits of the job word: the participant count; the rest: the generation.
const PART_BITS: u32 = 16;
const PART_MASK: usize = (1 << PART_BITS) - 1;
/// Most participants of one job (the count must fit its bits of the job word).
pub const MAX_THREADS: usize = PART_MASK;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// The job word: generation (bumped once per job) and participant count
    /// (caller included) published together, as ggml's `n_graph`. A worker
    /// reads both in one load, so it can never pair one job's generation
    /// with another job's count.
    word: AtomicUsize,
    /// Workers that have finished the current job.
    done: AtomicUsize,
    panicked: AtomicBool,
    job: UnsafeCell<Option<Job>>,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

fn word_gen(w: usize) -> usize {
    w >> PART_BITS
}
fn word_parts(w: usize) -> usize {
    w & PART_MASK
}

/// Tests: stall workers right after they observe a new job, the window in
/// which a worker that read the generation and the count separately could
/// pair them wrongly.
#[cfg(test)]
static STALL_WORKERS: AtomicBool = AtomicBool::new(false);

#[inline(always)]
fn test_stall() {
    #[cfg(test)]
    if STALL_WORKERS.load(Relaxed) {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Set while the team has more threads than the machine has cores: a waiting
/// thread then yields at every spin (its core is needed by a thread with work).
static OVERSUBSCRIBED: AtomicBool = AtomicBool::new(false);

/// Cores this process may use.
pub fn available_cores() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// Spin-wait helper: a pause, and every SPINS_PER_YIELD spins (every spin
/// when oversubscribed) a yield.
#[inline]
fn relax(spins: u32) {
    if spins % SPINS_PER_YIELD == SPINS_PER_YIELD - 1 || OVERSUBSCRIBED.load(Relaxed) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

// SAFETY: `job` is written only by the caller of `run` while no worker reads
// it (before the job word changes, after every participant reported done), and the
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
            word: AtomicUsize::new(0),
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
    let tid = idx + 1;
    loop {
        let mut spins = 0u32;
        let w = loop {
            let w = sh.word.load(Acquire);
            if word_gen(w) != seen {
                break w;
            }
            spins += 1;
            if spins < SPIN_LIMIT {
                relax(spins);
                continue;
            }
            let guard = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
            sh.sleepers.fetch_add(1, SeqCst);
            let mut guard = guard;
            while word_gen(sh.word.load(SeqCst)) == seen {
                guard = sh.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
            sh.sleepers.fetch_sub(1, SeqCst);
            drop(guard);
            spins = 0;
        };
        seen = word_gen(w);
        test_stall();
        // The count comes from the same load as the generation: if this job
        // does not include us it may already be over, and we touch nothing.
        if tid < word_parts(w) {
            // SAFETY: see `Shared`; the job is set before the word changed, and
            // it cannot finish (nor be replaced) before this participant reports.
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
    if n <= 1 || n > MAX_THREADS || t.busy.swap(true, Acquire) {
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
            let seen = word_gen(sh.word.load(Acquire));
            std::thread::Builder::new().name(format!("rllama-worker-{idx}")).spawn(move || worker(sh, idx, seen)).expect("spawn worker thread");
            *sp += 1;
        }
    }
    // written only when it changes: this runs for every job, and the workers
    // read the flag while they wait
    let over = n > available_cores();
    if OVERSUBSCRIBED.load(Relaxed) != over {
        OVERSUBSCRIBED.store(over, Relaxed);
    }
    let sh = t.shared;
    // SAFETY: no worker reads `job` now (the previous job finished); the
    // lifetime is erased but `f` outlives this call, which waits for all.
    unsafe {
        let job: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static (dyn Fn(usize) + Sync)>(f);
        *sh.job.get() = Some(job);
    }
    sh.done.store(0, Release);
    let w = sh.word.load(Acquire);
    sh.word.store(((word_gen(w) + 1) << PART_BITS) | n, SeqCst);
    if sh.sleepers.load(SeqCst) > 0 {
        let _g = sh.lock.lock().unwrap_or_else(|e| e.into_inner());
        sh.wake.notify_all();
    }
    let r = catch_unwind(AssertUnwindSafe(|| f(0)));
    let mut spins = 0u32;
    while sh.done.load(Acquire) < n - 1 {
        spins = spins.wrapping_add(1);
        relax(spins);
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

/// An atomic counter on a cache line of its own (threads claim from their
/// own counters without contending for one line).
#[repr(align(128))]
struct Padded(AtomicUsize);

/// Call `f(chunk, owner_end)` over 0..n_items cut into one contiguous range
/// per thread, each range cut into `chunks` chunks: a thread runs its own
/// range's chunks in order (one stream through memory), then claims the
/// chunks left in the others' ranges, one at a time from the front, so a
/// slow thread's work is shared. `owner_end` is the end of the range the
/// chunk belongs to.
pub fn for_each_owned(n_items: usize, chunks: usize, f: impl Fn(std::ops::Range<usize>, usize) + Sync) {
    let nt = n_threads().min(n_items);
    if nt <= 1 {
        if n_items > 0 {
            f(0..n_items, n_items);
        }
        return;
    }
    let bound = |i: usize| i * n_items / nt;
    let next: Vec<Padded> = (0..nt).map(|i| Padded(AtomicUsize::new(bound(i)))).collect();
    run(nt, &|tid| {
        for k in 0..nt {
            let owner = (tid + k) % nt;
            let end = bound(owner + 1);
            let step = (end - bound(owner)).div_ceil(chunks.max(1)).max(1);
            loop {
                let s = next[owner].0.fetch_add(step, Relaxed);
                if s >= end {
                    break;
                }
                f(s..(s + step).min(end), end);
            }
        }
    });
}

/// A raw pointer that parallel items use to write disjoint parts of one buffer.
pub struct SendPtr<T>(pub *mut T);
// Copy for any T (a derive would ask T: Copy; the pointer is copied, not T).
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
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

    /// Every item once, each chunk inside its owner's range, and a slow
    /// thread's chunks taken by the others (thread 0 sleeps in each chunk:
    /// its range must not all be run by thread 0).
    #[test]
    fn owned_ranges_cover_every_item_once_and_share_a_slow_range() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| {
            for (n, chunks) in [(0, 4), (1, 4), (2, 1), (7, 4), (1000, 4), (1000, 1), (10, 100)] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                for_each_owned(n, chunks, |r, end| {
                    assert!(r.start < r.end && r.end <= end && end <= n, "{r:?} of a range ending at {end}, {n} items");
                    r.for_each(|i| {
                        hits[i].fetch_add(1, Relaxed);
                    });
                });
                assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "{n} items in {chunks} chunks per thread");
            }
            // the caller is thread 0 and owns the first range; a job runs
            // inline when another test holds the team, so try a few times
            let first_range = 300 / 3;
            let by_others = AtomicUsize::new(0);
            for _ in 0..20 {
                for_each_owned(300, 10, |r, _| {
                    if std::thread::current().name().is_some_and(|n| n.starts_with("rllama-worker")) {
                        if r.start < first_range {
                            by_others.fetch_add(r.len(), Relaxed);
                        }
                    } else {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                    }
                });
                if by_others.load(Relaxed) > 0 {
                    break;
                }
            }
            assert!(by_others.load(Relaxed) > 0, "no chunk of the slow thread's range was taken");
        });
    }

    /// More threads than cores and a participant count that changes every
    /// job: each participant runs exactly once and `run` returns only after
    /// every closure call has left (a worker that paired one job's generation
    /// with the next job's count ran that job twice and let `run` return
    /// while it was still inside the caller's closure).
    #[test]
    fn stress_changing_participants_more_threads_than_cores() {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let max = (cores * 4).max(6);
        let inside = AtomicUsize::new(0);
        STALL_WORKERS.store(true, SeqCst);
        for job in 0..5_000usize {
            let n = 2 + (job * 7 + job / 3) % (max - 1);
            let hits: Vec<AtomicUsize> = (0..max + 1).map(|_| AtomicUsize::new(0)).collect();
            run(n, &|tid| {
                inside.fetch_add(1, SeqCst);
                hits[tid].fetch_add(1, SeqCst);
                if tid % 3 == 1 {
                    std::thread::yield_now();
                }
                inside.fetch_sub(1, SeqCst);
            });
            assert_eq!(inside.load(SeqCst), 0, "job {job}: run returned while a participant was still running");
            for (tid, h) in hits.iter().enumerate() {
                let want = usize::from(tid < n);
                assert_eq!(h.load(SeqCst), want, "job {job} ({n} participants): thread {tid} ran {} times", h.load(SeqCst));
            }
        }
        STALL_WORKERS.store(false, SeqCst);
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
