//! Persistent helper threads that let one transfer use several cores (a large
//! same-host copy split in halves, a TCP transfer striped over connections)
//! without starting a thread per call.
//!
//! [`join`] runs the parts `0..n` of one job: the caller and the helpers take
//! parts from a shared counter until none is left, so a helper that is busy,
//! slow to wake or missing costs only parallelism, never progress; the caller
//! returns once every part ran and no helper still refers to the job (which
//! lives on the caller's stack). Every part runs even when one fails (parts
//! are independent ranges or connections); the first error recorded is
//! returned, and a part that panics counts as failed.
//!
//! Threads: none until a job first wants them, then at most [`MAX_HELPERS`]
//! process-wide (as many as the widest job asked for), shared by every
//! instance of the process. They live while an instance does: each session
//! holds a [`Users`] guard, and the last one dropped stops and joins them, so
//! finalize leaves no thread behind.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};

use crate::err;
use crate::status::{Error, Result};

/// Most helper threads of the process (a job of more parts than helpers + 1
/// runs the rest as helpers free up).
pub(crate) const MAX_HELPERS: usize = 7;
/// Stack of a helper (copies and socket I/O only).
const STACK: usize = 256 << 10;

/// One job: `n` parts of `f`, claimed through `next`. Lives on the stack of
/// the thread in [`join`], which waits for `refs` to reach 0 before it returns.
struct Batch<'a> {
    f: &'a (dyn Fn(usize) -> Result<()> + Sync),
    n: usize,
    next: AtomicUsize,
    /// Helpers currently holding a reference to this batch.
    refs: AtomicUsize,
    err: Mutex<Option<Error>>,
    caller: Thread,
}

impl Batch<'_> {
    /// Runs parts until none is left to claim.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::AcqRel);
            if i >= self.n {
                return;
            }
            let r = catch_unwind(AssertUnwindSafe(|| (self.f)(i)))
                .unwrap_or_else(|_| Err(err!(Failed, "a transfer part panicked")));
            if let Err(e) = r {
                let mut g = self.err.lock().unwrap_or_else(|p| p.into_inner());
                if g.is_none() {
                    *g = Some(e);
                }
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.next.load(Ordering::Acquire) >= self.n
    }
}

/// The address of a published [`Batch`]. A helper dereferences it only while
/// it holds the state lock and finds the address still queued (the owner
/// retracts it under that lock before waiting), or after counting itself in
/// `refs` under that lock (the owner waits for `refs == 0`).
#[derive(Clone, Copy, PartialEq, Eq)]
struct BatchPtr(usize);

impl BatchPtr {
    /// # Safety
    /// The batch must still be alive (see the type's rules).
    unsafe fn get<'b>(self) -> &'b Batch<'b> {
        // SAFETY: the caller upholds the type's liveness rules.
        unsafe { &*(self.0 as *const Batch<'b>) }
    }
}

#[derive(Default)]
struct State {
    users: usize,
    queue: VecDeque<BatchPtr>,
    threads: Vec<JoinHandle<()>>,
    /// The process the threads belong to (0: none started yet).
    pid: u32,
    stop: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    users: 0,
    queue: VecDeque::new(),
    threads: Vec::new(),
    pid: 0,
    stop: false,
});
static WAKE: Condvar = Condvar::new();

/// The state, forgetting helpers inherited through `fork` (they do not run
/// in the child: joining them would wait forever; the child starts its own).
fn lock() -> MutexGuard<'static, State> {
    let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
    if g.pid != 0 && g.pid != std::process::id() {
        for t in g.threads.drain(..) {
            std::mem::forget(t);
        }
        g.queue.clear();
        g.pid = 0;
    }
    g
}

/// Keeps the helpers alive while held (one per session). Dropping the last
/// one stops the helpers and joins them.
pub struct Users(());

impl Users {
    /// Registers one more user of the helpers.
    pub fn new() -> Users {
        lock().users += 1;
        Users(())
    }
}

impl Default for Users {
    fn default() -> Self {
        Users::new()
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        let threads = {
            let mut g = lock();
            g.users -= 1;
            if g.users > 0 || g.threads.is_empty() {
                return;
            }
            g.stop = true;
            std::mem::take(&mut g.threads)
        };
        WAKE.notify_all();
        let me = std::thread::current().id();
        for t in threads {
            // A helper never drops a Users guard, so it is never `me`.
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        lock().stop = false;
    }
}

/// Helper threads running now (for tests and the scale figures).
#[cfg(test)]
pub fn helper_count() -> usize {
    lock().threads.len()
}

/// Runs `f(0)`, …, `f(n - 1)`, on this thread and on up to `n - 1` helpers
/// at once; returns when all have run (an error of one of them, if any).
/// Without a live [`Users`] guard (or when no helper can start) every part
/// runs on this thread.
pub fn join(n: usize, f: &(dyn Fn(usize) -> Result<()> + Sync)) -> Result<()> {
    if n <= 1 {
        return if n == 1 { f(0) } else { Ok(()) };
    }
    let batch = Batch {
        f,
        n,
        next: AtomicUsize::new(0),
        refs: AtomicUsize::new(0),
        err: Mutex::new(None),
        caller: std::thread::current(),
    };
    let ptr = BatchPtr(&batch as *const Batch<'_> as usize);
    let published = {
        let mut g = lock();
        let want = (n - 1).min(MAX_HELPERS);
        if g.users > 0 && !g.stop {
            while g.threads.len() < want {
                match std::thread::Builder::new()
                    .name("llmdd-copy".into())
                    .stack_size(STACK)
                    .spawn(helper)
                {
                    Ok(h) => {
                        g.threads.push(h);
                        g.pid = std::process::id();
                    }
                    Err(e) => {
                        crate::log_warn!("cannot start a copy helper thread ({e}); parts run here");
                        break;
                    }
                }
            }
        }
        let ok = !g.threads.is_empty() && !g.stop;
        if ok {
            g.queue.push_back(ptr);
        }
        ok
    };
    if published {
        for _ in 0..n - 1 {
            WAKE.notify_one();
        }
    }
    let mine = catch_unwind(AssertUnwindSafe(|| batch.work()));
    if published {
        // Retract: no helper finds the batch any more; then wait for those
        // that took it (they hold `refs`) to let go of it.
        lock().queue.retain(|p| *p != ptr);
        while batch.refs.load(Ordering::Acquire) != 0 {
            std::thread::park();
        }
    }
    if let Err(p) = mine {
        std::panic::resume_unwind(p);
    }
    match batch.err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn helper() {
    let mut g = lock();
    loop {
        if g.stop {
            return;
        }
        let Some(&ptr) = g.queue.front() else {
            g = WAKE.wait(g).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        // SAFETY: `ptr` is queued and the lock is held: its owner has not
        // retracted it, so the batch is alive (BatchPtr's rules).
        let b = unsafe { ptr.get() };
        if b.exhausted() {
            g.queue.pop_front();
            continue;
        }
        b.refs.fetch_add(1, Ordering::AcqRel);
        drop(g);
        b.work();
        let caller = b.caller.clone();
        // After this the owner may return and the batch be gone.
        b.refs.fetch_sub(1, Ordering::AcqRel);
        caller.unpark();
        g = lock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    // The helper set is process-wide: tests that count threads serialize.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn every_part_runs_once_on_up_to_n_threads() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let u = Users::new();
        for n in [0usize, 1, 2, 3, 8, 100] {
            let hits: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
            join(n, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
        assert_eq!(helper_count(), MAX_HELPERS);
        drop(u);
        assert_eq!(helper_count(), 0, "the last user joins the helpers");
    }

    #[test]
    fn parts_run_in_parallel_and_threads_are_reused() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let _u = Users::new();
        // Two parts that each wait for the other: only finishes in parallel.
        let seen = AtomicU64::new(0);
        for _ in 0..200 {
            seen.store(0, Ordering::SeqCst);
            join(2, &|_| {
                seen.fetch_add(1, Ordering::SeqCst);
                let t = std::time::Instant::now();
                while seen.load(Ordering::SeqCst) < 2 {
                    assert!(t.elapsed().as_secs() < 30, "parts did not overlap");
                    std::hint::spin_loop();
                }
                Ok(())
            })
            .unwrap();
        }
        assert!(helper_count() >= 1 && helper_count() <= MAX_HELPERS);
    }

    #[test]
    fn errors_and_panics_come_back_and_all_parts_still_run() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let _u = Users::new();
        let ran = AtomicU64::new(0);
        let e = join(4, &|i| {
            ran.fetch_add(1, Ordering::Relaxed);
            if i == 2 {
                Err(err!(LinkFailed, "part two"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(e.status, crate::status::Status::LinkFailed);
        assert_eq!(ran.load(Ordering::Relaxed), 4);
        let e = join(3, &|i| {
            if i == 1 {
                panic!("a part that panics");
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(e.status, crate::status::Status::Failed);
    }

    #[test]
    fn helpers_inherited_through_fork_are_forgotten_not_joined() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        // As a forked child sees it: a handle of a thread of another pid.
        let ghost = std::thread::spawn(|| ());
        {
            let mut g = STATE.lock().unwrap_or_else(|p| p.into_inner());
            g.threads.push(ghost);
            g.pid = std::process::id().wrapping_add(1);
        }
        let g = lock();
        assert!(g.threads.is_empty(), "inherited handles must be dropped");
        assert_eq!(g.pid, 0);
    }

    #[test]
    fn without_a_user_everything_runs_here() {
        let _s = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        if lock().users > 0 {
            return; // another test module holds a session
        }
        let me = std::thread::current().id();
        join(5, &|_| {
            assert_eq!(std::thread::current().id(), me);
            Ok(())
        })
        .unwrap();
        assert_eq!(helper_count(), 0);
    }
}
