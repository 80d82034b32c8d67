//! The worker pool of the async task engine ([`super::task`]): persistent
//! threads, owned by one session's task set, that run the drivers of all of
//! that session's tasks, so starting a task starts no thread.
//!
//! Two kinds of job, with separate limits:
//! - a **transfer** job moves layers. At most `slots` run at once (the
//!   machine's cores, 2 to 8: copies are CPU-bound, and on 2 vCPUs more would
//!   only compete with the caller); further transfer jobs wait. A runnable
//!   transfer job that finds no idle worker starts one at once.
//! - a **callback** job runs a task's layer synchronizer: user code that may
//!   block for as long as the model computes a layer, or forever. It takes an
//!   idle worker, else the next worker that finishes its job; up to
//!   [`MAX_CALLBACKS`] run at once.
//!
//! Workers take the oldest job they may run. A worker counts as *stuck* when
//! it has been inside a user callback for [`GROW_AFTER`] and is asleep there
//! (its thread is not runnable: `/proc/self/task/TID/stat`), or on one job
//! for [`STUCK_AFTER`] whatever it does (a transfer to a peer that stalls, a
//! callback that spins). A callback that is merely preempted on a busy
//! machine is not blocked, and starting threads for it would only add load. When a job has to
//! wait and every worker is stuck, a worker is started (at once, or by the
//! monitor once the job has waited [`GROW_AFTER`]), doubling the pool at
//! most per round. So callbacks that block cannot hold back other tasks'
//! callbacks or transfers for more than a few milliseconds, while a burst of
//! short tasks, or a worker the OS preempted, is served by the workers there
//! are: only time inside user code counts as blocked so soon.
//!
//! Threads: none until the first job, then `slots` workers and the monitor.
//! Workers beyond `slots` that stay idle for [`RETIRE`] exit, so a steady
//! stream of tasks reuses the same threads. An idle worker busy-polls for
//! `spin` (`llmdd.BusyPollUs`) before it sleeps, one worker at a time, so a
//! task submitted shortly after another one ran does not pay a wake-up
//! (≈ 50 µs on a 2-vCPU VM).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::err;
use crate::status::Result;

/// Callbacks that may run at once in one pool; a further callback job waits
/// until one returns.
pub(crate) const MAX_CALLBACKS: usize = 1024;
/// A worker inside a user callback this long counts as blocked; a job
/// waiting this long while every worker is stuck grows the pool.
pub(crate) const GROW_AFTER: Duration = Duration::from_millis(1);
/// A worker on one job this long counts as stuck, whatever the job does.
pub(crate) const STUCK_AFTER: Duration = Duration::from_millis(100);
/// A worker beyond the pool's `slots` exits after this long without work.
pub(crate) const RETIRE: Duration = Duration::from_secs(10);
/// Stack of a worker (user callbacks run on it).
const STACK: usize = 2 << 20;

/// What a job does, and so which limit it counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Calls user code (the layer synchronizer).
    Callback,
    /// Moves layers.
    Transfer,
}

/// A unit of work the pool runs on one of its threads.
pub trait Job: Send + Sync + 'static {
    /// Runs the job; `slot` is the limit it counts against, which it may
    /// trade for a transfer slot ([`Slot::trade_for_transfer`]).
    fn run(self: Arc<Self>, slot: &mut Slot<'_>);
}

/// The limit a running job counts against, on the worker running it.
pub struct Slot<'a> {
    inner: &'a Inner,
    kind: Kind,
    worker: usize,
}

impl Slot<'_> {
    /// The kind of slot held.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Runs user code that may block (a layer synchronizer): while it runs
    /// for more than [`GROW_AFTER`], this worker counts as blocked.
    pub fn in_callback<R>(&mut self, f: impl FnOnce() -> R) -> R {
        self.inner.lock().busy[self.worker].in_callback = Some(Instant::now());
        let r = f();
        self.inner.lock().busy[self.worker].in_callback = None;
        r
    }

    /// Trades a callback slot for a transfer slot when one is free and no
    /// transfer job waits for it; true if the job now holds a transfer slot.
    pub fn trade_for_transfer(&mut self) -> bool {
        if self.kind == Kind::Transfer {
            return true;
        }
        let mut g = self.inner.lock();
        let cb_waits = g.running_cb >= MAX_CALLBACKS && !g.callbacks.is_empty();
        if g.running_xfer < self.inner.slots && g.transfers.is_empty() && !cb_waits {
            g.running_cb -= 1;
            g.running_xfer += 1;
            self.kind = Kind::Transfer;
            return true;
        }
        false
    }
}

/// A pool of worker threads (see the module documentation).
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    sched: Mutex<Sched>,
    /// Parked workers wait here.
    cv: Condvar,
    /// The monitor waits here.
    mon_cv: Condvar,
    /// Set when a job is handed to the spinning worker.
    hit: AtomicBool,
    /// Busy-poll window of an idle worker, in ns.
    spin_ns: AtomicU64,
    /// Transfer jobs that may run at once; workers kept when idle.
    slots: usize,
}

/// What one worker is doing.
#[derive(Clone, Copy, Default)]
struct Busy {
    /// Since when it runs its current job (None: no job).
    job: Option<Instant>,
    /// Since when it is inside a user callback.
    in_callback: Option<Instant>,
}

impl Busy {
    /// True if the worker (thread `tid`) is stuck (module documentation).
    fn stuck(&self, now: Instant, tid: i32) -> bool {
        let since =
            |t: Option<Instant>, d| t.is_some_and(|t| now.saturating_duration_since(t) >= d);
        since(self.job, STUCK_AFTER) || (since(self.in_callback, GROW_AFTER) && asleep(tid))
    }
}

/// True unless thread `tid` of this process is running or runnable (state
/// `R` in `/proc/self/task/TID/stat`); an unreadable state counts as asleep,
/// which errs towards starting a worker, as before this check existed.
fn asleep(tid: i32) -> bool {
    use std::io::Read;
    if tid <= 0 {
        return true;
    }
    let mut buf = [0u8; 512];
    let n = match std::fs::File::open(format!("/proc/self/task/{tid}/stat"))
        .and_then(|mut f| f.read(&mut buf))
    {
        Ok(n) => n,
        Err(_) => return true,
    };
    // `pid (comm) S ...`: the state follows the last ')' (comm may hold one).
    let b = &buf[..n];
    match b.iter().rposition(|&c| c == b')') {
        Some(i) => b.get(i + 2) != Some(&b'R'),
        None => true,
    }
}

#[derive(Default)]
struct Sched {
    /// Queued jobs with the time they were queued.
    callbacks: VecDeque<(Instant, Arc<dyn Job>)>,
    transfers: VecDeque<(Instant, Arc<dyn Job>)>,
    running_cb: usize,
    running_xfer: usize,
    /// Live workers, and those started that have not looked for work yet.
    threads: usize,
    starting: usize,
    /// Per worker id: what it is doing, and its thread id (0 until known).
    busy: Vec<Busy>,
    tids: Vec<i32>,
    free_ids: Vec<usize>,
    /// Parked workers, and wake-ups handed to them not yet taken.
    idle: usize,
    tokens: usize,
    /// A worker busy-polls for work; `claimed`: a job was handed to it.
    spinning: bool,
    claimed: bool,
    /// The monitor waits without a deadline (nothing to watch).
    mon_asleep: bool,
    started: bool,
    shutdown: bool,
    handles: Vec<JoinHandle<()>>,
}

impl Sched {
    /// Takes the oldest job that may run now.
    fn pop(&mut self, slots: usize) -> Option<(Arc<dyn Job>, Kind)> {
        let cb = self
            .callbacks
            .front()
            .filter(|_| self.running_cb < MAX_CALLBACKS)
            .map(|(t, _)| *t);
        let xf = self
            .transfers
            .front()
            .filter(|_| self.running_xfer < slots)
            .map(|(t, _)| *t);
        let kind = match (cb, xf) {
            (Some(c), Some(x)) if x < c => Kind::Transfer,
            (Some(_), _) => Kind::Callback,
            (None, Some(_)) => Kind::Transfer,
            (None, None) => return None,
        };
        let job = match kind {
            Kind::Callback => {
                self.running_cb += 1;
                self.callbacks.pop_front()
            }
            Kind::Transfer => {
                self.running_xfer += 1;
                self.transfers.pop_front()
            }
        };
        job.map(|(_, j)| (j, kind))
    }

    /// Queued jobs that may run now and have waited at least `d`.
    fn late(&self, now: Instant, d: Duration, slots: usize) -> usize {
        let old = |q: &VecDeque<(Instant, Arc<dyn Job>)>| {
            q.iter()
                .take_while(|(t, _)| now.saturating_duration_since(*t) >= d)
                .count()
        };
        let cb = old(&self.callbacks).min(MAX_CALLBACKS.saturating_sub(self.running_cb));
        let xf = old(&self.transfers).min(slots.saturating_sub(self.running_xfer));
        cb + xf
    }

    fn release(&mut self, kind: Kind) {
        match kind {
            Kind::Callback => self.running_cb -= 1,
            Kind::Transfer => self.running_xfer -= 1,
        }
    }

    /// Hands a runnable job to the spinning worker or a parked one.
    fn claim(&mut self, inner: &Inner) -> bool {
        if self.spinning && !self.claimed {
            self.claimed = true;
            inner.hit.store(true, Ordering::Release);
            return true;
        }
        if self.idle > self.tokens {
            self.tokens += 1;
            inner.cv.notify_one();
            return true;
        }
        false
    }

    /// Workers on a job that are not stuck (they will be back soon).
    fn unstuck(&self, now: Instant) -> usize {
        self.busy
            .iter()
            .zip(&self.tids)
            .filter(|(b, &tid)| b.job.is_some() && !b.stuck(now, tid))
            .count()
    }

    /// Workers about to look for a job: starting, or woken for one.
    fn pending(&self) -> usize {
        self.starting + self.tokens + usize::from(self.spinning && self.claimed)
    }

    /// Idle workers no job has been handed to.
    fn unclaimed(&self) -> usize {
        self.idle - self.tokens + usize::from(self.spinning && !self.claimed)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Sched> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spin(&self) -> Duration {
        Duration::from_nanos(self.spin_ns.load(Ordering::Relaxed))
    }
}

/// Starts a worker (under the pool's lock, so shutdown cannot miss its handle).
fn spawn_worker(inner: &Arc<Inner>, g: &mut Sched) -> std::io::Result<()> {
    let id = match g.free_ids.pop() {
        Some(id) => id,
        None => {
            g.busy.push(Busy::default());
            g.tids.push(0);
            g.busy.len() - 1
        }
    };
    let i = inner.clone();
    let spawned = std::thread::Builder::new()
        .name("llmdd-task".into())
        .stack_size(STACK)
        .spawn(move || worker(i, id));
    let h = match spawned {
        Ok(h) => h,
        Err(e) => {
            g.free_ids.push(id);
            return Err(e);
        }
    };
    g.threads += 1;
    g.starting += 1;
    g.handles.retain(|h| !h.is_finished());
    g.handles.push(h);
    Ok(())
}

impl Pool {
    /// A pool allowing `slots` transfer jobs at once (at least 1); no thread
    /// starts until the first job.
    pub fn new(slots: usize) -> Pool {
        Pool {
            inner: Arc::new(Inner {
                sched: Mutex::new(Sched::default()),
                cv: Condvar::new(),
                mon_cv: Condvar::new(),
                hit: AtomicBool::new(false),
                spin_ns: AtomicU64::new(0),
                slots: slots.max(1),
            }),
        }
    }

    /// Transfer slots for this machine: its cores, 2 to 8.
    pub fn default_slots() -> usize {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8)
    }

    /// Sets how long an idle worker busy-polls before it sleeps.
    pub fn set_spin(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.inner.spin_ns.store(ns, Ordering::Relaxed);
    }

    /// Live worker threads (the monitor not counted).
    pub fn threads(&self) -> usize {
        self.inner.lock().threads
    }

    /// Starts the workers and the monitor on first use.
    fn start(&self, g: &mut Sched) -> Result<()> {
        g.started = true;
        for _ in 0..self.inner.slots {
            if let Err(e) = spawn_worker(&self.inner, g) {
                if g.threads == 0 {
                    g.started = false;
                    return Err(err!(Failed, "cannot start a task worker thread: {e}"));
                }
                crate::log_warn!("cannot start a task worker thread: {e}");
            }
        }
        let i = self.inner.clone();
        match std::thread::Builder::new()
            .name("llmdd-task-mon".into())
            .stack_size(64 << 10)
            .spawn(move || monitor(i))
        {
            Ok(h) => g.handles.push(h),
            Err(e) => crate::log_warn!(
                "cannot start the task pool monitor ({e}); blocked callbacks may delay other tasks"
            ),
        }
        Ok(())
    }

    /// Queues `job` as `kind` and makes sure a worker will run it once its
    /// limit allows. Fails only when no worker exists and none can start.
    /// After [`Pool::shutdown`] the job is dropped.
    pub fn submit(&self, job: Arc<dyn Job>, kind: Kind) -> Result<()> {
        let inner = &self.inner;
        let mut g = inner.lock();
        if g.shutdown {
            drop(g);
            drop(job);
            return Ok(());
        }
        if !g.started {
            if let Err(e) = self.start(&mut g) {
                drop(g);
                drop(job);
                return Err(e);
            }
        }
        let runnable = match kind {
            Kind::Callback => {
                g.callbacks.push_back((Instant::now(), job));
                g.running_cb < MAX_CALLBACKS
            }
            Kind::Transfer => {
                g.transfers.push_back((Instant::now(), job));
                g.running_xfer < inner.slots
            }
        };
        if !runnable || g.claim(inner) {
            // Not runnable: a worker of this kind takes it when it is done.
            return Ok(());
        }
        // Every worker is busy. If all are stuck, start one now; otherwise
        // the job waits for a worker to finish, and the monitor steps in if
        // none does soon.
        if g.pending() + g.unstuck(Instant::now()) == 0 {
            if let Err(e) = spawn_worker(inner, &mut g) {
                crate::log_warn!(
                    "cannot start a task worker thread ({e}); the job waits for a busy one"
                );
            }
        }
        if g.mon_asleep {
            inner.mon_cv.notify_one();
        }
        Ok(())
    }

    /// Stops the pool: queued jobs are dropped, workers exit once their job
    /// returns, and every thread but the calling one is joined.
    pub fn shutdown(&self) {
        let (handles, jobs) = {
            let mut g = self.inner.lock();
            g.shutdown = true;
            let g = &mut *g;
            let mut jobs: Vec<_> = g.callbacks.drain(..).map(|(_, j)| j).collect();
            jobs.extend(g.transfers.drain(..).map(|(_, j)| j));
            (std::mem::take(&mut g.handles), jobs)
        };
        drop(jobs);
        self.inner.hit.store(true, Ordering::Release);
        self.inner.cv.notify_all();
        self.inner.mon_cv.notify_all();
        let me = std::thread::current().id();
        for h in handles {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Busy-polls `flag` for up to `d`, calling `sched_yield` between polls so a
/// runnable thread on this CPU is not held up; true if it was set. (On the
/// 2-vCPU KVM machine a `pause` loop measured slower: a one-block task took
/// 20 µs with 5 µs of `pause` spinning before yielding, 9 µs without.)
pub fn spin_until(flag: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if flag.load(Ordering::Acquire) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::yield_now();
    }
}

fn worker(inner: Arc<Inner>, id: usize) {
    // SAFETY: plain syscall without arguments.
    let tid = unsafe { libc::gettid() };
    let mut g = inner.lock();
    g.tids[id] = tid;
    g.starting -= 1;
    let mut spun = false;
    loop {
        if g.shutdown {
            g.threads -= 1;
            g.free_ids.push(id);
            return;
        }
        if let Some((job, kind)) = g.pop(inner.slots) {
            g.busy[id].job = Some(Instant::now());
            drop(g);
            let mut slot = Slot {
                inner: &inner,
                kind,
                worker: id,
            };
            // Jobs end their task on a panic; this only keeps the worker.
            let _ = catch_unwind(AssertUnwindSafe(|| job.run(&mut slot)));
            let kind = slot.kind;
            g = inner.lock();
            g.release(kind);
            g.busy[id] = Busy::default();
            spun = false;
            continue;
        }
        let spin = inner.spin();
        if !spun && !g.spinning && !spin.is_zero() {
            g.spinning = true;
            g.claimed = false;
            inner.hit.store(false, Ordering::Relaxed);
            drop(g);
            spin_until(&inner.hit, spin);
            g = inner.lock();
            g.spinning = false;
            spun = true;
            continue;
        }
        g.idle += 1;
        loop {
            let (ng, t) = inner
                .cv
                .wait_timeout(g, RETIRE)
                .unwrap_or_else(|p| p.into_inner());
            g = ng;
            if g.tokens > 0 {
                g.tokens -= 1;
                break;
            }
            if g.shutdown {
                break;
            }
            if t.timed_out() && g.threads > inner.slots {
                g.idle -= 1;
                g.threads -= 1;
                g.free_ids.push(id);
                return;
            }
        }
        g.idle -= 1;
        spun = false;
    }
}

/// Starts workers when jobs have waited [`GROW_AFTER`] and no worker is
/// free or about to be (all are stuck in callbacks or long jobs): one per
/// late job, at most doubling the pool per round.
fn monitor(inner: Arc<Inner>) {
    let mut g = inner.lock();
    loop {
        if g.shutdown {
            return;
        }
        if g.callbacks.is_empty() && g.transfers.is_empty() {
            g.mon_asleep = true;
            g = inner.mon_cv.wait(g).unwrap_or_else(|p| p.into_inner());
            g.mon_asleep = false;
            continue;
        }
        let now = Instant::now();
        let late = g.late(now, GROW_AFTER, inner.slots);
        if late > 0 && g.unstuck(now) + g.pending() + g.unclaimed() == 0 {
            let room = (MAX_CALLBACKS + inner.slots).saturating_sub(g.threads);
            let n = late.min(g.threads.max(inner.slots)).min(room);
            for _ in 0..n {
                if let Err(e) = spawn_worker(&inner, &mut g) {
                    crate::log_warn!("cannot start a task worker thread for a waiting job: {e}");
                    break;
                }
            }
        }
        g = inner
            .mon_cv
            .wait_timeout(g, GROW_AFTER)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::mpsc;

    /// A job that reports its kind and then blocks until released.
    struct Gate {
        ran: mpsc::Sender<Kind>,
        release: Mutex<mpsc::Receiver<()>>,
    }

    impl Job for Gate {
        fn run(self: Arc<Self>, slot: &mut Slot<'_>) {
            let _ = self.ran.send(slot.kind());
            let wait = || {
                let _ = self.release.lock().unwrap().recv();
            };
            match slot.kind() {
                Kind::Callback => slot.in_callback(wait),
                Kind::Transfer => wait(),
            }
        }
    }

    fn gate() -> (Arc<Gate>, mpsc::Receiver<Kind>, mpsc::Sender<()>) {
        let (ran, ran_rx) = mpsc::channel();
        let (rel_tx, rel) = mpsc::channel();
        let g = Arc::new(Gate {
            ran,
            release: Mutex::new(rel),
        });
        (g, ran_rx, rel_tx)
    }

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn pool_tells_a_sleeping_thread_from_a_running_one() {
        // SAFETY: plain syscall.
        let me = unsafe { libc::gettid() };
        assert!(!asleep(me), "the calling thread is running");
        let (tx, rx) = mpsc::channel::<i32>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let h = std::thread::spawn(move || {
            // SAFETY: plain syscall.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = stop_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let end = Instant::now() + T;
        while !asleep(tid) {
            assert!(
                Instant::now() < end,
                "a thread blocked in recv never reads as asleep"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        stop_tx.send(()).unwrap();
        h.join().unwrap();
        assert!(asleep(0), "an unknown thread counts as asleep");
    }

    #[test]
    fn pool_callbacks_never_wait_for_busy_workers() {
        let pool = Pool::new(2);
        let mut held = Vec::new();
        // More blocked callbacks than transfer slots: each still runs.
        for _ in 0..6 {
            let (g, ran, rel) = gate();
            pool.submit(g, Kind::Callback).unwrap();
            assert_eq!(ran.recv_timeout(T).unwrap(), Kind::Callback);
            held.push(rel);
        }
        // Transfers still run next to them.
        let (g, ran, rel) = gate();
        pool.submit(g, Kind::Transfer).unwrap();
        assert_eq!(ran.recv_timeout(T).unwrap(), Kind::Transfer);
        assert_eq!(pool.threads(), 7);
        drop(rel);
        drop(held);
        pool.shutdown();
        assert_eq!(pool.threads(), 0);
    }

    #[test]
    fn pool_transfers_beyond_the_slots_wait_in_order() {
        let pool = Pool::new(2);
        let (a, ran_a, rel_a) = gate();
        let (b, ran_b, rel_b) = gate();
        let (c, ran_c, rel_c) = gate();
        pool.submit(a, Kind::Transfer).unwrap();
        pool.submit(b, Kind::Transfer).unwrap();
        ran_a.recv_timeout(T).unwrap();
        ran_b.recv_timeout(T).unwrap();
        pool.submit(c, Kind::Transfer).unwrap();
        assert!(ran_c.recv_timeout(Duration::from_millis(50)).is_err());
        drop(rel_a);
        ran_c.recv_timeout(T).unwrap();
        drop((rel_b, rel_c));
        pool.shutdown();
    }

    struct Count(Arc<AtomicUsize>);

    impl Job for Count {
        fn run(self: Arc<Self>, _: &mut Slot<'_>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn pool_reuses_its_threads_and_survives_panics() {
        struct Boom;
        impl Job for Boom {
            fn run(self: Arc<Self>, _: &mut Slot<'_>) {
                // A panic without the hook's (slow) report.
                std::panic::resume_unwind(Box::new("job bug"));
            }
        }
        let wait_for = |n: &AtomicUsize, want: usize| {
            let end = Instant::now() + T;
            while n.load(Ordering::SeqCst) < want {
                assert!(
                    Instant::now() < end,
                    "jobs lost: {}",
                    n.load(Ordering::SeqCst)
                );
                std::thread::yield_now();
            }
        };
        let kind = |i: usize| {
            if i % 2 == 0 {
                Kind::Callback
            } else {
                Kind::Transfer
            }
        };
        let pool = Pool::new(2);
        pool.set_spin(Duration::from_micros(50));
        let n = Arc::new(AtomicUsize::new(0));
        // One job after another, as a caller starting task after task.
        for i in 0..2000 {
            if i % 500 == 0 {
                pool.submit(Arc::new(Boom), Kind::Callback).unwrap();
            }
            pool.submit(Arc::new(Count(n.clone())), kind(i)).unwrap();
            wait_for(&n, i + 1);
        }
        assert_eq!(pool.threads(), 2, "the pool grew for sequential jobs");
        // A burst: served by the workers there are, not one thread per job.
        for i in 0..2000 {
            pool.submit(Arc::new(Count(n.clone())), kind(i)).unwrap();
        }
        wait_for(&n, 4000);
        assert!(
            pool.threads() < 64,
            "{} threads for a burst",
            pool.threads()
        );
        pool.shutdown();
        assert_eq!(pool.threads(), 0);
    }

    #[test]
    fn pool_shutdown_drops_queued_jobs_and_refuses_new_ones() {
        let pool = Pool::new(1);
        let (a, ran_a, rel_a) = gate();
        pool.submit(a, Kind::Transfer).unwrap();
        ran_a.recv_timeout(T).unwrap();
        let n = Arc::new(AtomicUsize::new(0));
        pool.submit(Arc::new(Count(n.clone())), Kind::Transfer)
            .unwrap();
        let rel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            drop(rel_a);
        });
        pool.shutdown();
        rel.join().unwrap();
        pool.submit(Arc::new(Count(n.clone())), Kind::Callback)
            .unwrap();
        assert_eq!(n.load(Ordering::SeqCst), 0);
        assert_eq!(Arc::strong_count(&n), 1, "queued jobs were not dropped");
    }
}
