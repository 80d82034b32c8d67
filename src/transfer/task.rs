//! Layer-wise asynchronous execution (spec §4.4, flow 5): one task per
//! `transfer_cache_async` call, run by two threads.
//!
//! - The **sync thread** calls the user's layer synchronizer for every source
//!   layer some config includes, in ascending order. As soon as it approves
//!   layer `L`, the layer is handed to the transfer thread and the synchronizer
//!   is called for the next layer, so computing layer `L+1` overlaps moving `L`.
//! - The **transfer thread** moves each approved layer, config by config, with
//!   the executor it was given (the caller binds links, plans and timeouts).
//!
//! Outcome rules (spec §4.4 and §9 item 15): the synchronizer refusing layer `L`
//! gives every config containing `L` `LLM_PARAM_INVALID` and stops the
//! synchronizer (layers it approved before still move); the first failing
//! transfer records its status for its config and stops everything; a config
//! becomes `LLM_SUCCESS` when its last layer is done; configs cut short get
//! `LLM_FAILED`; configs none of whose layers started are "not started".
//!
//! The engine is generic over the work item `W` so its state machine is tested
//! without a network; it never sees a raw pointer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use crate::status::{Error, Result, Status};
use crate::{bail, err};

/// Stack of the thread that calls user callbacks (user code runs on it).
const SYNC_STACK: usize = 2 << 20;
/// Stack of the transfer thread.
const TRANSFER_STACK: usize = 512 << 10;

/// The work of one source layer: the layer index and, per config containing
/// it, that config's index and its work item.
pub struct Layer<W> {
    pub index: u32,
    pub parts: Vec<(usize, W)>,
}

/// Everything a task will do, computed before it starts.
pub struct TaskSpec<W> {
    /// Number of configs (results are reported per config).
    pub num_configs: usize,
    /// Layers in ascending order of `index`; each config appears in at least one.
    pub layers: Vec<Layer<W>>,
}

/// Final state of one config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigResult {
    /// The config finished (`Success`) or failed with this status.
    Done(Status),
    /// None of the config's layers started (Python `None`).
    NotStarted,
}

/// The user's layer synchronizer: returns true once layer `L` may be sent.
pub type SyncFn = Box<dyn FnMut(u32) -> bool + Send>;

#[derive(Default)]
struct State {
    /// Status per config, once known.
    status: Vec<Option<Status>>,
    /// Whether any layer of the config began to move.
    started: Vec<bool>,
    /// Layers still to move per config.
    remaining: Vec<usize>,
    /// The first failure, chronologically, with its message.
    first_failure: Option<Error>,
    /// No byte will move any more and results are final.
    done: bool,
    /// Both threads have returned (no callback running, nothing in flight).
    exited: bool,
}

/// State shared by a task's handle and its threads.
pub struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// Set by cancel (task_free, finalize): no new callback, no new layer.
    cancel: AtomicBool,
    /// Set on the first transfer failure or cancel: queued layers are dropped.
    halt: AtomicBool,
    /// The thread that calls the synchronizer (to detect calls from inside it).
    sync_thread: Mutex<Option<ThreadId>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, st: &mut State, cfg: Option<usize>, e: Error) {
        if let Some(c) = cfg {
            if st.status[c].is_none() {
                st.status[c] = Some(e.status);
            }
        }
        if st.first_failure.is_none() {
            st.first_failure = Some(e);
        }
    }

    fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
        self.halt.store(true, Ordering::Release);
    }

    /// Waits until `pred` holds or `deadline` passes; returns whether it holds.
    fn wait_for(&self, deadline: Option<Instant>, pred: impl Fn(&State) -> bool) -> bool {
        let mut st = self.lock();
        loop {
            if pred(&st) {
                return true;
            }
            st = match deadline {
                None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// The set of tasks of one session: spawns their threads, and at finalize
/// cancels every running task and joins its threads.
#[derive(Default)]
pub struct TaskSet {
    inner: Mutex<TaskSetInner>,
}

#[derive(Default)]
struct TaskSetInner {
    closed: bool,
    tasks: Vec<(Weak<Shared>, JoinHandle<()>)>,
}

impl TaskSet {
    fn lock(&self) -> MutexGuard<'_, TaskSetInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cancels every running task; no task can start afterwards.
    pub fn cancel_all(&self) {
        let mut g = self.lock();
        g.closed = true;
        for (w, _) in &g.tasks {
            if let Some(s) = w.upgrade() {
                s.cancel();
            }
        }
    }

    /// Joins every task thread (after `cancel_all`); waits for callbacks that
    /// are running to return. A task thread calling this skips itself.
    pub fn join_all(&self) {
        let tasks = std::mem::take(&mut self.lock().tasks);
        let me = std::thread::current().id();
        for (_, h) in tasks {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }

    /// Number of tasks whose threads have not finished (for tests).
    pub fn running(&self) -> usize {
        self.lock()
            .tasks
            .iter()
            .filter(|(_, h)| !h.is_finished())
            .count()
    }
}

/// A running or finished task. Dropping it does not stop it; call
/// [`Task::cancel_and_wait`] for that.
pub struct Task {
    shared: Arc<Shared>,
    num_configs: usize,
}

impl Task {
    /// Starts `spec`: the sync thread calls `sync` per layer, the transfer
    /// thread calls `exec` per (config, layer) part. `exec` and the work items
    /// are dropped when the task's threads end.
    pub fn start<W, E>(set: &TaskSet, spec: TaskSpec<W>, sync: SyncFn, exec: E) -> Result<Task>
    where
        W: Send + Sync + 'static,
        E: Fn(&W) -> Result<()> + Send + 'static,
    {
        let n = spec.num_configs;
        let mut remaining = vec![0usize; n];
        for l in &spec.layers {
            for (c, _) in &l.parts {
                if *c >= n {
                    bail!(Failed, "internal: layer part names config {c} of {n}");
                }
                remaining[*c] += 1;
            }
        }
        if remaining.contains(&0) {
            bail!(Failed, "internal: a config has no layer to move");
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                status: vec![None; n],
                started: vec![false; n],
                remaining,
                ..State::default()
            }),
            cv: Condvar::new(),
            cancel: AtomicBool::new(false),
            halt: AtomicBool::new(false),
            sync_thread: Mutex::new(None),
        });
        let mut g = set.lock();
        if g.closed {
            bail!(Failed, "the instance is finalizing");
        }
        // Reap finished tasks so the list stays small.
        let (done, live): (Vec<_>, Vec<_>) = std::mem::take(&mut g.tasks)
            .into_iter()
            .partition(|(_, h)| h.is_finished());
        g.tasks = live;
        for (_, h) in done {
            let _ = h.join();
        }
        let s = shared.clone();
        let h = std::thread::Builder::new()
            .name("llmdd-task-sync".into())
            .stack_size(SYNC_STACK)
            .spawn(move || run_task(s, spec, sync, exec))
            .map_err(|e| err!(Failed, "cannot start the task thread: {e}"))?;
        g.tasks.push((Arc::downgrade(&shared), h));
        Ok(Task {
            shared,
            num_configs: n,
        })
    }

    /// Number of configs.
    pub fn num_configs(&self) -> usize {
        self.num_configs
    }

    /// Waits until the results are final (`None` = forever); false on timeout.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let forever = timeout.is_none() || deadline.is_none();
        self.shared
            .wait_for(if forever { None } else { deadline }, |s| s.done)
    }

    /// `CacheTask.synchronize`: `Timeout` if still running after `timeout`;
    /// else the first failure; else `Failed` if a config never started; else Ok.
    pub fn synchronize(&self, timeout: Option<Duration>) -> Result<()> {
        if !self.wait(timeout) {
            bail!(
                Timeout,
                "the task is still running after {} ms",
                timeout.unwrap_or_default().as_millis()
            );
        }
        let st = self.shared.lock();
        if let Some(e) = &st.first_failure {
            return Err(e.clone());
        }
        if let Some(c) = st.status.iter().position(|s| s.is_none()) {
            bail!(Failed, "config {c} never started");
        }
        if let Some(c) = st.status.iter().position(|s| *s != Some(Status::Success)) {
            bail!(Failed, "config {c} did not finish");
        }
        Ok(())
    }

    /// `CacheTask.get_results`: one result per config, or `None` if the task
    /// is still running after `timeout`.
    pub fn results(&self, timeout: Option<Duration>) -> Option<Vec<ConfigResult>> {
        if !self.wait(timeout) {
            return None;
        }
        let st = self.shared.lock();
        Some(
            st.status
                .iter()
                .map(|s| match s {
                    Some(s) => ConfigResult::Done(*s),
                    None => ConfigResult::NotStarted,
                })
                .collect(),
        )
    }

    /// Cancels the task (no new callback, no new layer) and waits until the
    /// callback currently running and the layer in flight have returned.
    /// Called from inside the task's own callback it only cancels.
    pub fn cancel_and_wait(&self) {
        self.shared.cancel();
        let me = std::thread::current().id();
        let own = *self
            .shared
            .sync_thread
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if own == Some(me) {
            return;
        }
        self.shared.wait_for(None, |s| s.exited);
    }
}

/// Marks the task finished (results final) and, when `exited`, both threads gone.
fn finish(shared: &Shared, exited: bool) {
    let mut st = shared.lock();
    if !st.done {
        st.done = true;
        if st.status.iter().any(|s| s.is_none()) && st.first_failure.is_none() {
            let e = if shared.cancel.load(Ordering::Acquire) {
                err!(
                    Failed,
                    "the task was cancelled (llmdd_task_free or llmdd_finalize)"
                )
            } else {
                err!(Failed, "the task ended before every config finished")
            };
            shared.fail(&mut st, None, e);
        }
        for c in 0..st.status.len() {
            if st.status[c].is_none() && st.started[c] {
                st.status[c] = Some(Status::Failed);
            }
        }
    }
    if exited {
        st.exited = true;
    }
    drop(st);
    shared.cv.notify_all();
}

fn run_task<W, E>(shared: Arc<Shared>, spec: TaskSpec<W>, mut sync: SyncFn, exec: E)
where
    W: Send + Sync + 'static,
    E: Fn(&W) -> Result<()> + Send + 'static,
{
    *shared.sync_thread.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(std::thread::current().id());
    // Whatever happens below, waiters are released when this thread ends.
    let _exit = ExitGuard(&shared);
    let layers = spec.layers;
    let (tx, rx) = crossbeam_channel::bounded::<usize>(layers.len().max(1));
    std::thread::scope(|sc| {
        let (sh, ls) = (&shared, &layers);
        let transfer = std::thread::Builder::new()
            .name("llmdd-task-xfer".into())
            .stack_size(TRANSFER_STACK)
            .spawn_scoped(sc, move || {
                let r = catch_unwind(AssertUnwindSafe(|| transfer_loop(sh, ls, &rx, &exec)));
                if r.is_err() {
                    internal_failure(sh, "the transfer thread panicked");
                }
                // Drop the executor (links, source cache) before reporting.
                drop(exec);
                finish(sh, false);
            });
        if let Err(e) = transfer {
            let mut st = shared.lock();
            shared.fail(
                &mut st,
                None,
                err!(Failed, "cannot start the transfer thread: {e}"),
            );
            drop(st);
            return;
        }
        for (i, l) in layers.iter().enumerate() {
            if shared.cancel.load(Ordering::Acquire) || shared.halt.load(Ordering::Acquire) {
                break;
            }
            let approved = match catch_unwind(AssertUnwindSafe(|| sync(l.index))) {
                Ok(a) => a,
                Err(_) => {
                    let mut st = shared.lock();
                    let e = err!(
                        Failed,
                        "internal error: the layer synchronizer panicked at layer {}",
                        l.index
                    );
                    for (c, _) in &l.parts {
                        shared.fail(&mut st, Some(*c), e.clone());
                    }
                    break;
                }
            };
            if !approved {
                let mut st = shared.lock();
                let e = err!(
                    ParamInvalid,
                    "the layer synchronizer returned false for layer {}",
                    l.index
                );
                for (c, _) in &l.parts {
                    shared.fail(&mut st, Some(*c), e.clone());
                }
                break;
            }
            if shared.cancel.load(Ordering::Acquire) {
                break;
            }
            // Cannot block: the channel holds every layer.
            if tx.send(i).is_err() {
                break;
            }
        }
        drop(tx);
    });
    // The callback will not be called again: release it before reporting
    // (the guard then marks the task exited).
    drop(sync);
    drop(layers);
}

/// Marks the task finished and its threads exited when the sync thread ends,
/// even by a panic, so no waiter can hang.
struct ExitGuard<'a>(&'a Shared);

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            internal_failure(self.0, "the task thread panicked");
        }
        finish(self.0, true);
    }
}

/// Records an internal failure (a panic) as the task's failure and stops it.
fn internal_failure(shared: &Shared, what: &str) {
    let mut st = shared.lock();
    shared.fail(&mut st, None, err!(Failed, "internal error: {what}"));
    drop(st);
    shared.halt.store(true, Ordering::Release);
}

fn transfer_loop<W, E>(
    shared: &Shared,
    layers: &[Layer<W>],
    rx: &crossbeam_channel::Receiver<usize>,
    exec: &E,
) where
    E: Fn(&W) -> Result<()>,
{
    for i in rx.iter() {
        let l = &layers[i];
        for (c, w) in &l.parts {
            if shared.halt.load(Ordering::Acquire) {
                return;
            }
            shared.lock().started[*c] = true;
            let r = exec(w);
            let mut st = shared.lock();
            match r {
                Ok(()) => {
                    st.remaining[*c] -= 1;
                    if st.remaining[*c] == 0 && st.status[*c].is_none() {
                        st.status[*c] = Some(Status::Success);
                    }
                }
                Err(e) => {
                    let e = Error::new(
                        e.status,
                        format!("config {c}, layer {}: {}", l.index, e.message),
                    );
                    shared.fail(&mut st, Some(*c), e);
                    shared.halt.store(true, Ordering::Release);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::mpsc;

    type Log = Arc<Mutex<Vec<String>>>;

    /// A spec over `layers` source layers where config c covers `ranges[c]`;
    /// the work item is (config, layer).
    fn spec(ranges: &[(u32, u32)], layers: u32) -> TaskSpec<(usize, u32)> {
        TaskSpec {
            num_configs: ranges.len(),
            layers: (0..layers)
                .filter_map(|l| {
                    let parts: Vec<_> = ranges
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.0 <= l && l < r.1)
                        .map(|(c, _)| (c, (c, l)))
                        .collect();
                    (!parts.is_empty()).then_some(Layer { index: l, parts })
                })
                .collect(),
        }
    }

    fn logging_exec(
        log: &Log,
        fail_at: Option<(usize, u32)>,
    ) -> impl Fn(&(usize, u32)) -> Result<()> + Send + 'static {
        let log = log.clone();
        move |&(c, l)| {
            log.lock().unwrap().push(format!("x{c}.{l}"));
            if fail_at == Some((c, l)) {
                bail!(Timeout, "injected");
            }
            Ok(())
        }
    }

    fn logging_sync(log: &Log, refuse: Option<u32>) -> SyncFn {
        let log = log.clone();
        Box::new(move |l| {
            log.lock().unwrap().push(format!("s{l}"));
            refuse != Some(l)
        })
    }

    const FOREVER: Option<Duration> = None;
    use ConfigResult::*;

    #[test]
    fn async_task_all_succeed_in_layer_order() {
        let set = TaskSet::default();
        let log = Log::default();
        let t = Task::start(
            &set,
            spec(&[(0, 3), (2, 5)], 6),
            logging_sync(&log, None),
            logging_exec(&log, None),
        )
        .unwrap();
        t.synchronize(FOREVER).unwrap();
        assert_eq!(
            t.results(FOREVER).unwrap(),
            vec![Done(Status::Success), Done(Status::Success)]
        );
        let log = log.lock().unwrap().clone();
        // Layer 5 is in no config: never synchronized.
        let syncs: Vec<_> = log.iter().filter(|e| e.starts_with('s')).collect();
        assert_eq!(syncs, ["s0", "s1", "s2", "s3", "s4"]);
        let xfers: Vec<_> = log.iter().filter(|e| e.starts_with('x')).collect();
        assert_eq!(xfers, ["x0.0", "x0.1", "x0.2", "x1.2", "x1.3", "x1.4"]);
        // Every layer is transferred only after its synchronizer returned.
        for l in 0..5 {
            let s = log.iter().position(|e| *e == format!("s{l}")).unwrap();
            let x = log
                .iter()
                .position(|e| e.starts_with('x') && e.ends_with(&format!(".{l}")))
                .unwrap();
            assert!(s < x, "{log:?}");
        }
        set.cancel_all();
        set.join_all();
    }

    #[test]
    fn async_task_sync_refusal_fails_configs_containing_the_layer() {
        let set = TaskSet::default();
        let log = Log::default();
        // c0: [0,2) done before layer 3; c1: [1,5) contains 3; c2: [4,6) never starts.
        let t = Task::start(
            &set,
            spec(&[(0, 2), (1, 5), (4, 6)], 6),
            logging_sync(&log, Some(3)),
            logging_exec(&log, None),
        )
        .unwrap();
        let e = t.synchronize(FOREVER).unwrap_err();
        assert_eq!(e.status, Status::ParamInvalid);
        assert!(e.message.contains("layer 3"), "{}", e.message);
        assert_eq!(
            t.results(FOREVER).unwrap(),
            vec![
                Done(Status::Success),
                Done(Status::ParamInvalid),
                NotStarted
            ]
        );
        t.cancel_and_wait();
        let log = log.lock().unwrap().clone();
        assert_eq!(log.iter().rfind(|e| e.starts_with('s')).unwrap(), "s3");
        // Layers approved before the refusal still moved; nothing after.
        assert!(log.contains(&"x1.2".to_string()));
        assert!(!log.iter().any(|e| e.ends_with(".3") || e.ends_with(".4")));
    }

    #[test]
    fn async_task_transfer_failure_stops_everything() {
        let set = TaskSet::default();
        let log = Log::default();
        // c0: [0,4), c1: [1,3) fails at layer 2, c2: [5,6).
        let t = Task::start(
            &set,
            spec(&[(0, 4), (1, 3), (5, 6)], 6),
            logging_sync(&log, None),
            logging_exec(&log, Some((1, 2))),
        )
        .unwrap();
        let e = t.synchronize(FOREVER).unwrap_err();
        assert_eq!(e.status, Status::Timeout);
        assert!(e.message.contains("config 1, layer 2"), "{}", e.message);
        assert_eq!(
            t.results(FOREVER).unwrap(),
            vec![Done(Status::Failed), Done(Status::Timeout), NotStarted]
        );
        t.cancel_and_wait();
        let log = log.lock().unwrap().clone();
        assert!(!log.iter().any(|e| e == "x0.3" || e == "x2.5"), "{log:?}");
    }

    /// A synchronizer that blocks until the test releases each layer.
    fn gated_sync(calls: &Arc<AtomicU32>) -> (SyncFn, mpsc::Sender<bool>) {
        let (tx, rx) = mpsc::channel::<bool>();
        let calls = calls.clone();
        let f: SyncFn = Box::new(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            rx.recv().unwrap_or(false)
        });
        (f, tx)
    }

    #[test]
    fn async_task_timeout_then_success() {
        let set = TaskSet::default();
        let calls = Arc::new(AtomicU32::new(0));
        let (sync, release) = gated_sync(&calls);
        let log = Log::default();
        let t = Task::start(&set, spec(&[(0, 2)], 2), sync, logging_exec(&log, None)).unwrap();
        let e = t.synchronize(Some(Duration::from_millis(30))).unwrap_err();
        assert_eq!(e.status, Status::Timeout);
        assert!(t.results(Some(Duration::ZERO)).is_none());
        release.send(true).unwrap();
        release.send(true).unwrap();
        t.synchronize(FOREVER).unwrap();
        assert_eq!(
            t.results(Some(Duration::ZERO)).unwrap(),
            vec![Done(Status::Success)]
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        t.cancel_and_wait();
    }

    #[test]
    fn async_task_cancel_waits_for_callback_and_stops() {
        let set = TaskSet::default();
        let calls = Arc::new(AtomicU32::new(0));
        let (sync, release) = gated_sync(&calls);
        let log = Log::default();
        let t = Task::start(
            &set,
            spec(&[(0, 4), (2, 4)], 4),
            sync,
            logging_exec(&log, None),
        )
        .unwrap();
        release.send(true).unwrap(); // layer 0
        while calls.load(Ordering::SeqCst) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The callback for layer 1 is running; release it shortly after cancel.
        let rel = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let _ = release.send(true);
            release
        });
        let t0 = Instant::now();
        t.cancel_and_wait();
        assert!(
            t0.elapsed() >= Duration::from_millis(40),
            "did not wait for the callback"
        );
        drop(rel.join().unwrap());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "no callback after cancel");
        let e = t.synchronize(FOREVER).unwrap_err();
        assert_eq!(e.status, Status::Failed);
        assert_eq!(
            t.results(FOREVER).unwrap(),
            vec![Done(Status::Failed), NotStarted]
        );
        assert!(!log.lock().unwrap().iter().any(|e| e.ends_with(".1")));
        set.join_all();
        assert_eq!(set.running(), 0);
    }

    #[test]
    fn async_task_set_cancels_on_finalize_and_refuses_new_tasks() {
        let set = TaskSet::default();
        let calls = Arc::new(AtomicU32::new(0));
        let (sync, release) = gated_sync(&calls);
        let log = Log::default();
        let t = Task::start(&set, spec(&[(0, 3)], 3), sync, logging_exec(&log, None)).unwrap();
        while calls.load(Ordering::SeqCst) < 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        set.cancel_all();
        release.send(true).unwrap();
        set.join_all();
        assert_eq!(set.running(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            t.synchronize(Some(Duration::ZERO)).unwrap_err().status,
            Status::Failed
        );
        let e = Task::start(
            &set,
            spec(&[(0, 1)], 1),
            logging_sync(&log, None),
            logging_exec(&log, None),
        )
        .err()
        .unwrap();
        assert_eq!(e.status, Status::Failed);
        drop(release);
    }

    #[test]
    fn async_task_panics_end_the_task_instead_of_hanging_it() {
        let set = TaskSet::default();
        let exec = |&(_, l): &(usize, u32)| -> Result<()> {
            if l == 1 {
                panic!("executor bug");
            }
            Ok(())
        };
        let t = Task::start(&set, spec(&[(0, 3)], 3), Box::new(|_| true), exec).unwrap();
        let e = t.synchronize(Some(Duration::from_secs(10))).unwrap_err();
        assert_eq!(e.status, Status::Failed);
        assert!(e.message.contains("panicked"), "{}", e.message);
        t.cancel_and_wait();
        let sync: SyncFn = Box::new(|l| if l == 1 { panic!("callback bug") } else { true });
        let log = Log::default();
        let t = Task::start(&set, spec(&[(0, 3)], 3), sync, logging_exec(&log, None)).unwrap();
        let e = t.synchronize(Some(Duration::from_secs(10))).unwrap_err();
        assert!(e.message.contains("synchronizer panicked"), "{}", e.message);
        assert_eq!(t.results(None).unwrap(), vec![Done(Status::Failed)]);
        t.cancel_and_wait();
        set.join_all();
    }

    #[test]
    fn async_task_cancel_from_inside_the_callback_does_not_deadlock() {
        let set = TaskSet::default();
        let slot: Arc<Mutex<Option<Arc<Task>>>> = Arc::default();
        let calls = Arc::new(AtomicU32::new(0));
        let (s2, c2) = (slot.clone(), calls.clone());
        let sync: SyncFn = Box::new(move |_| {
            c2.fetch_add(1, Ordering::SeqCst);
            let t = loop {
                if let Some(t) = s2.lock().unwrap().clone() {
                    break t;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            t.cancel_and_wait(); // must return at once: we are the task's own thread
            true
        });
        let log = Log::default();
        let t = Arc::new(
            Task::start(&set, spec(&[(0, 3)], 3), sync, logging_exec(&log, None)).unwrap(),
        );
        *slot.lock().unwrap() = Some(t.clone());
        assert_eq!(t.synchronize(FOREVER).unwrap_err().status, Status::Failed);
        slot.lock().unwrap().take();
        t.cancel_and_wait();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(log.lock().unwrap().is_empty(), "a cancelled layer moved");
        set.join_all();
    }
}
