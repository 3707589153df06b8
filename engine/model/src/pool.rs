//! The model's compute threads: a fixed pool whose workers spin between the
//! hundreds of short parallel loops one engine step runs (a 30-layer model
//! splits ~150 matmuls and attentions per step), like ggml's threadpool.
//!
//! Why not rayon: a decode step of a small model is ~10 ms cut into ~150
//! parallel regions of tens of microseconds each. rayon's idle workers go to
//! sleep within microseconds and every region then pays a futex wake-up (and
//! the caller, outside the pool, a condvar round trip): a quarter of a batch-1
//! step went to the kernel scheduler. Here the calling thread takes part in the
//! work and the workers spin on an epoch counter while regions keep coming,
//! parking only after [`IDLE_PARK`] without work, so an idle server burns no CPU.
//!
//! Threads: [`set_threads`] (`candela serve --threads`) before the first
//! parallel loop, else `CANDELA_NUM_THREADS`, else the available parallelism.
//! The count includes the calling thread: `2` is the caller plus one worker.
//!
//! One caller at a time drives the pool; a second concurrent caller (another
//! model in the same process, a nested loop) runs its loop inline, which gives
//! the same results since every job computes its own outputs.

use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long a worker spins without work before parking.
const IDLE_PARK: Duration = Duration::from_micros(100);

type Job = &'static (dyn Fn(usize) + Sync);

/// The shared pool: the calling thread plus `threads - 1` spinning workers.
pub struct Pool {
    shared: &'static Shared,
    threads: usize,
}

struct Shared {
    /// Serializes callers; a caller that cannot take it runs inline.
    caller: Mutex<()>,
    /// Bumped (Release) after `job` and `len` are written; workers wait on it.
    epoch: Padded<AtomicUsize>,
    /// The current loop body, lifetime-erased; valid while `busy > 0`.
    job: UnsafeCell<Option<Job>>,
    len: AtomicUsize,
    /// Next job index to claim, `grain` at a time.
    next: Padded<AtomicUsize>,
    grain: AtomicUsize,
    /// Workers that have not finished the current epoch.
    busy: Padded<AtomicUsize>,
    /// A job panicked on a worker; the caller re-raises.
    panicked: AtomicBool,
    /// Parked workers, and the lock/condvar they park on.
    parked: AtomicUsize,
    park_lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: `job` is written only by the caller holding `caller`, before the
// Release bump of `epoch`, and read by workers after an Acquire load of it; the
// caller does not return (or unwind) until `busy` is back to zero.
unsafe impl Sync for Shared {}

static THREADS: OnceLock<usize> = OnceLock::new();
static POOL: OnceLock<Pool> = OnceLock::new();

/// Fixes the pool's thread count (caller included). Errors if the pool already
/// runs with a different count.
pub fn set_threads(threads: usize) -> crate::Result<()> {
    let threads = threads.max(1);
    let set = *THREADS.get_or_init(|| threads);
    if set != threads {
        return Err(crate::Error::InvalidInput(format!(
            "compute threads already set to {set}, cannot change to {threads}"
        )));
    }
    Ok(())
}

/// The process-wide pool, started on first use.
pub fn global() -> &'static Pool {
    POOL.get_or_init(|| {
        let threads = *THREADS.get_or_init(|| {
            std::env::var("CANDELA_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0)
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        });
        Pool::new(threads)
    })
}

impl Pool {
    fn new(threads: usize) -> Self {
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            caller: Mutex::new(()),
            epoch: Padded(AtomicUsize::new(0)),
            job: UnsafeCell::new(None),
            len: AtomicUsize::new(0),
            next: Padded(AtomicUsize::new(0)),
            grain: AtomicUsize::new(1),
            busy: Padded(AtomicUsize::new(0)),
            panicked: AtomicBool::new(false),
            parked: AtomicUsize::new(0),
            park_lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        for i in 1..threads {
            std::thread::Builder::new()
                .name(format!("candela-compute-{i}"))
                .spawn(move || worker(shared))
                .expect("spawning a compute thread");
        }
        Self { shared, threads }
    }

    /// Threads that run a loop, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..len)` across the pool; returns when every call has returned.
    /// Panics in `f` are re-raised here after all threads have left the loop.
    pub fn for_each(&self, len: usize, f: impl Fn(usize) + Sync) {
        if len <= 1 || self.threads == 1 {
            return (0..len).for_each(f);
        }
        let s = self.shared;
        let _caller = match s.caller.try_lock() {
            Ok(g) => g,
            // A loop body panicked on this lock's last holder; the state is reset below.
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return (0..len).for_each(f),
        };
        let f: &(dyn Fn(usize) + Sync) = &f;
        // SAFETY: `Finish` below keeps this frame (and `f`) alive until every
        // worker has left the loop, so the erased lifetime is never outlived.
        let job: Job = unsafe { std::mem::transmute(f) };
        unsafe { *s.job.get() = Some(job) };
        s.len.store(len, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        // Claims of several indices when there are many small jobs, so threads do
        // not queue on one cache line; still ~64 claims per thread for balance.
        s.grain
            .store((len / (64 * self.threads)).max(1), Ordering::Relaxed);
        s.busy.store(self.threads - 1, Ordering::Relaxed);
        s.panicked.store(false, Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.parked.load(Ordering::SeqCst) > 0 {
            let _g = s.park_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let finish = Finish(s);
        run_jobs(s, job);
        drop(finish);
        if s.panicked.swap(false, Ordering::Relaxed) {
            resume_unwind(Box::new("a compute thread panicked"));
        }
    }

    /// Runs `f(i, chunk_i)` over `data` cut into `chunk`-long pieces (the last may
    /// be shorter), across the pool.
    pub fn for_chunks_mut<T: Send>(
        &self,
        data: &mut [T],
        chunk: usize,
        f: impl Fn(usize, &mut [T]) + Sync,
    ) {
        let chunk = chunk.max(1);
        let len = data.len();
        let base = SendPtr(data.as_mut_ptr());
        self.for_each(len.div_ceil(chunk), |i| {
            let start = i * chunk;
            let n = chunk.min(len - start);
            // SAFETY: chunk `i` covers `start..start + n` and each index is run
            // exactly once, so the pieces are disjoint and inside `data`.
            let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
            f(i, piece);
        });
    }
}

/// Waits (spinning, then yielding) for the workers to leave the current loop;
/// a drop guard so an unwinding caller still waits before `f` goes away.
struct Finish(&'static Shared);

impl Drop for Finish {
    fn drop(&mut self) {
        let mut spins = 0u32;
        while self.0.busy.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 4096 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A raw pointer handed to jobs that touch disjoint elements.
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: users only write disjoint elements from different jobs.
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub(crate) fn get(self) -> *mut T {
        self.0
    }
}

fn run_jobs(s: &Shared, job: Job) {
    let len = s.len.load(Ordering::Relaxed);
    let grain = s.grain.load(Ordering::Relaxed);
    loop {
        let start = s.next.fetch_add(grain, Ordering::Relaxed);
        if start >= len {
            return;
        }
        (start..(start + grain).min(len)).for_each(job);
    }
}

/// Keeps a hot atomic on its own cache line (no false sharing between the
/// counter every thread claims from and the ones threads spin on).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

fn worker(s: &'static Shared) {
    // The epoch the pool was created with (not a fresh load: a loop published
    // before this thread got here must still be run).
    let mut seen = 0;
    loop {
        let mut idle_since: Option<Instant> = None;
        let mut spins = 0u32;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            spins = spins.wrapping_add(1);
            std::hint::spin_loop();
            if !spins.is_multiple_of(1024) {
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < IDLE_PARK {
                continue;
            }
            let g = s.park_lock.lock().unwrap_or_else(|e| e.into_inner());
            s.parked.fetch_add(1, Ordering::SeqCst);
            // Re-checked after announcing ourselves parked: a caller that bumped the
            // epoch before seeing `parked` > 0 is seen here instead (SeqCst order).
            let g = if s.epoch.load(Ordering::SeqCst) == seen {
                s.wake.wait(g).unwrap_or_else(|e| e.into_inner())
            } else {
                g
            };
            s.parked.fetch_sub(1, Ordering::SeqCst);
            drop(g);
            idle_since = None;
        }
        // SAFETY: written before the epoch bump we just observed (Acquire), and
        // kept alive by the caller until we decrement `busy`.
        let job = unsafe { *s.job.get() };
        if let Some(job) = job
            && catch_unwind(AssertUnwindSafe(|| run_jobs(s, job))).is_err()
        {
            s.panicked.store(true, Ordering::Relaxed);
        }
        s.busy.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_index_runs_exactly_once() {
        let pool = Pool::new(3);
        for len in [0usize, 1, 2, 7, 1000] {
            let hits: Vec<AtomicU64> = (0..len).map(|_| AtomicU64::new(0)).collect();
            pool.for_each(len, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "len {len}"
            );
        }
    }

    #[test]
    fn chunks_cover_the_slice_disjointly() {
        let pool = Pool::new(2);
        let mut v = vec![0usize; 1003];
        pool.for_chunks_mut(&mut v, 10, |i, c| c.iter_mut().for_each(|x| *x += i + 1));
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, j / 10 + 1);
        }
    }

    #[test]
    fn workers_wake_after_parking_and_nested_calls_run_inline() {
        let pool = Pool::new(2);
        std::thread::sleep(IDLE_PARK * 5);
        let sum = AtomicU64::new(0);
        pool.for_each(64, |i| {
            // Nested: the caller lock is held, so this runs inline on this thread.
            pool.for_each(4, |j| {
                sum.fetch_add((i * 4 + j) as u64, Ordering::Relaxed);
            });
        });
        assert_eq!(sum.load(Ordering::Relaxed), (0..256u64).sum::<u64>());
    }

    #[test]
    fn a_panicking_job_is_reraised_and_the_pool_still_works() {
        let pool = Pool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| {
            pool.for_each(100, |i| assert!(i != 57, "job 57"));
        }));
        assert!(r.is_err());
        let n = AtomicU64::new(0);
        pool.for_each(100, |_| {
            n.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(n.load(Ordering::Relaxed), 100);
    }
}
