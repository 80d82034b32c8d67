//! Layer-wise asynchronous execution (spec §4.4, flow 5): one task per
//! `transfer_cache_async` call, run by two drivers on the session's worker
//! pool ([`super::pool`]).
//!
//! - The **callback driver** calls the user's layer synchronizer for every
//!   source layer some config includes, in ascending order, one call at a
//!   time. As soon as it approves layer `L`, the layer is handed to the
//!   transfer driver and the synchronizer is called for the next layer, so
//!   computing layer `L+1` overlaps moving `L`. After the last approval it
//!   moves the remaining layers itself when a transfer slot is free (no hand-off).
//! - The **transfer driver** moves approved layers in order, config by
//!   config, with the executor it was given (the caller binds links, plans
//!   and timeouts). It runs while approved layers wait and is queued again by
//!   the next approval.
//!
//! Outcome rules (spec §4.4 and §9 item 15): the synchronizer refusing layer `L`
//! gives every config containing `L` `LLM_PARAM_INVALID` and stops the
//! synchronizer (layers it approved before still move); the first failing
//! transfer records its status for its config and stops everything; a config
//! becomes `LLM_SUCCESS` when its last layer is done; configs cut short get
//! `LLM_FAILED`; configs none of whose layers started are "not started". A
//! panic in the synchronizer or the executor fails the task ("internal error").
//!
//! Cancellation (task free, finalize) never needs a worker: queued drivers are
//! revoked on the spot, and only a callback or layer already running is waited
//! for. The engine is generic over the work item `W` so its state machine is
//! tested without a network; it never sees a raw pointer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use crate::status::{Error, Result, Status};
use crate::transfer::pool::{spin_until, Job, Kind, Pool, Slot};
use crate::{bail, err};

/// Busy-poll window before sleeping, until the session sets its own
/// (`llmdd.BusyPollUs`, whose default this is).
const DEFAULT_SPIN: Duration = Duration::from_micros(50);

/// The work of one source layer: the layer index and, per config containing
/// it, that config's index and its work item.
pub struct Layer<W> {
    /// The source layer index.
    pub index: u32,
    /// `(config index, work item)` for each config that includes the layer.
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

/// Where one of a task's two drivers is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Driver {
    Idle,
    /// Submitted to the pool, not yet picked up (cancel revokes it).
    Queued,
    Running,
}

/// Progress of one config.
#[derive(Clone, Copy)]
struct Cfg {
    /// Status, once known.
    status: Option<Status>,
    /// Whether any layer of the config began to move.
    started: bool,
    /// Layers still to move.
    remaining: usize,
}

struct State {
    cfgs: Vec<Cfg>,
    /// The first failure, chronologically, with its message.
    first_failure: Option<Error>,
    num_layers: usize,
    /// Index (into the spec's layers) of the next layer to synchronize.
    next_cb: usize,
    /// Layers `[0, approved)` were approved; `[0, moved)` were handled by the
    /// transfer driver.
    approved: usize,
    moved: usize,
    /// The synchronizer will not be called again.
    sync_over: bool,
    cb: Driver,
    xfer: Driver,
    /// The synchronizer; taken by the callback driver while it calls it.
    sync: Option<SyncFn>,
    /// The thread inside the synchronizer (to detect calls from inside it).
    cb_thread: Option<ThreadId>,
    /// Set by cancel (task free, finalize): no new callback, no new layer.
    cancelled: bool,
    /// Set on the first transfer failure or cancel: approved layers are dropped.
    halted: bool,
    /// No byte will move any more: the work is being released, then results
    /// are final.
    finishing: bool,
    done: bool,
    /// Both drivers are gone for good (no callback running, nothing in flight).
    exiting: bool,
    exited: bool,
    /// Threads sleeping on the condvar.
    waiters: usize,
    /// Entry in the task set.
    slot: usize,
}

/// The part of a task its handle sees.
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// Mirrors of `done`, `exited` and `halted`, polled without the lock.
    done: AtomicBool,
    exited: AtomicBool,
    halt: AtomicBool,
    /// Busy-poll window of a waiter before it sleeps.
    spin: Duration,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fail(&self, st: &mut State, cfg: Option<usize>, e: Error) {
        if let Some(c) = cfg {
            if st.cfgs[c].status.is_none() {
                st.cfgs[c].status = Some(e.status);
            }
        }
        if st.first_failure.is_none() {
            st.first_failure = Some(e);
        }
    }

    fn notify(&self, st: &State) {
        if st.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Waits until `flag` (set together with `pred`) holds or `deadline`
    /// passes, busy-polling for up to `spin` first; returns whether it holds.
    fn wait_for(
        &self,
        deadline: Option<Instant>,
        flag: &AtomicBool,
        pred: fn(&State) -> bool,
    ) -> bool {
        if flag.load(Ordering::Acquire) {
            return true;
        }
        let spin = match deadline {
            None => self.spin,
            Some(d) => self.spin.min(d.saturating_duration_since(Instant::now())),
        };
        if !spin.is_zero() && spin_until(flag, spin) {
            return true;
        }
        let mut st = self.lock();
        loop {
            if pred(&st) {
                return true;
            }
            st.waiters += 1;
            st = match deadline {
                None => self.cv.wait(st).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        st.waiters -= 1;
                        return false;
                    }
                    self.cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
            st.waiters -= 1;
        }
    }
}

/// What the drivers share and drop as soon as results are final: the plans
/// (with the links they use) and the executor (with the source cache).
struct Work<W, E> {
    layers: Vec<Layer<W>>,
    exec: E,
}

/// One task: its state, its work, and the set it belongs to.
struct Core<W, E> {
    shared: Shared,
    work: Mutex<Option<Arc<Work<W, E>>>>,
    set: Arc<SetShared>,
}

/// What the task set and a task handle do with a task of any work type.
trait Control: Send + Sync {
    fn shared(&self) -> &Shared;
    /// No new callback, no new layer; revokes queued drivers.
    fn cancel(&self);
}

/// The tasks of one session and the pool their drivers run on. Finalize
/// cancels every task ([`TaskSet::cancel_all`]) and then stops the pool
/// ([`TaskSet::join_all`]).
pub struct TaskSet {
    shared: Arc<SetShared>,
}

struct SetShared {
    reg: Mutex<Registry>,
    pool: Pool,
    /// Busy-poll window (ns) of waiters and idle workers.
    spin_ns: AtomicU64,
}

/// Live tasks: slots reused through a free list.
#[derive(Default)]
struct Registry {
    closed: bool,
    slots: Vec<Option<Arc<dyn Control>>>,
    free: Vec<usize>,
    live: usize,
}

impl Default for TaskSet {
    fn default() -> Self {
        TaskSet::new(Pool::default_slots())
    }
}

impl SetShared {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.reg.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unregister(&self, slot: usize) {
        let t = {
            let mut r = self.lock();
            let t = r.slots.get_mut(slot).and_then(Option::take);
            if t.is_some() {
                r.free.push(slot);
                r.live -= 1;
            }
            t
        };
        drop(t);
    }
}

impl TaskSet {
    /// A set whose pool runs at most `slots` transfers at once.
    pub fn new(slots: usize) -> TaskSet {
        TaskSet {
            shared: Arc::new(SetShared {
                reg: Mutex::new(Registry::default()),
                pool: Pool::new(slots),
                spin_ns: AtomicU64::new(DEFAULT_SPIN.as_nanos() as u64),
            }),
        }
    }

    /// Sets how long waiters and idle workers busy-poll before they sleep
    /// (`llmdd.BusyPollUs`; 0 = never).
    pub fn set_busy_poll(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.shared.spin_ns.store(ns, Ordering::Relaxed);
        self.shared.pool.set_spin(d);
    }

    /// Cancels every running task; no task can start afterwards.
    pub fn cancel_all(&self) {
        let live: Vec<Arc<dyn Control>> = {
            let mut r = self.shared.lock();
            r.closed = true;
            r.slots.iter().flatten().cloned().collect()
        };
        for t in live {
            t.cancel();
        }
    }

    /// Cancels every task (if not done yet) and stops the pool: waits for
    /// callbacks and layers that are running to return and joins the
    /// workers. A worker calling this (from inside a callback) skips itself.
    pub fn join_all(&self) {
        self.cancel_all();
        self.shared.pool.shutdown();
    }

    /// Number of tasks that have not exited yet (for tests).
    pub fn running(&self) -> usize {
        self.shared.lock().live
    }

    /// Worker threads of the pool (for tests).
    pub fn threads(&self) -> usize {
        self.shared.pool.threads()
    }
}

impl Drop for TaskSet {
    fn drop(&mut self) {
        self.join_all();
    }
}

/// A running or finished task. Dropping it does not stop it; call
/// [`Task::cancel_and_wait`] for that.
pub struct Task {
    core: Arc<dyn Control>,
    num_configs: usize,
}

impl Task {
    /// Starts `spec` on the set's pool: the callback driver calls `sync` per
    /// layer, the transfer driver calls `exec` per (config, layer) part.
    /// `exec` and the work items are dropped once the results are final.
    pub fn start<W, E>(set: &TaskSet, spec: TaskSpec<W>, sync: SyncFn, exec: E) -> Result<Task>
    where
        W: Send + Sync + 'static,
        E: Fn(&W) -> Result<()> + Send + Sync + 'static,
    {
        let n = spec.num_configs;
        let mut cfgs = vec![
            Cfg {
                status: None,
                started: false,
                remaining: 0
            };
            n
        ];
        for l in &spec.layers {
            for (c, _) in &l.parts {
                if *c >= n {
                    bail!(Failed, "internal: layer part names config {c} of {n}");
                }
                cfgs[*c].remaining += 1;
            }
        }
        if cfgs.iter().any(|c| c.remaining == 0) {
            bail!(Failed, "internal: a config has no layer to move");
        }
        let set_shared = set.shared.clone();
        let spin = Duration::from_nanos(set_shared.spin_ns.load(Ordering::Relaxed));
        let core = Arc::new(Core {
            shared: Shared {
                state: Mutex::new(State {
                    cfgs,
                    first_failure: None,
                    num_layers: spec.layers.len(),
                    next_cb: 0,
                    approved: 0,
                    moved: 0,
                    sync_over: false,
                    cb: Driver::Queued,
                    xfer: Driver::Idle,
                    sync: Some(sync),
                    cb_thread: None,
                    cancelled: false,
                    halted: false,
                    finishing: false,
                    done: false,
                    exiting: false,
                    exited: false,
                    waiters: 0,
                    slot: 0,
                }),
                cv: Condvar::new(),
                done: AtomicBool::new(false),
                exited: AtomicBool::new(false),
                halt: AtomicBool::new(false),
                spin,
            },
            work: Mutex::new(Some(Arc::new(Work {
                layers: spec.layers,
                exec,
            }))),
            set: set_shared,
        });
        {
            let mut r = set.shared.lock();
            if r.closed {
                bail!(Failed, "the instance is finalizing");
            }
            let c: Arc<dyn Control> = core.clone();
            let slot = match r.free.pop() {
                Some(i) => {
                    r.slots[i] = Some(c);
                    i
                }
                None => {
                    r.slots.push(Some(c));
                    r.slots.len() - 1
                }
            };
            r.live += 1;
            // Under the registry lock, so cancel_all cannot end the task
            // before it knows its slot.
            core.shared.lock().slot = slot;
        }
        if let Err(e) = set.shared.pool.submit(core.clone(), Kind::Callback) {
            core.cancel();
            return Err(e);
        }
        Ok(Task {
            core,
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
        let sh = self.core.shared();
        sh.wait_for(if forever { None } else { deadline }, &sh.done, |s| s.done)
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
        let st = self.core.shared().lock();
        if let Some(e) = &st.first_failure {
            return Err(e.clone());
        }
        if let Some(c) = st.cfgs.iter().position(|c| c.status.is_none()) {
            bail!(Failed, "config {c} never started");
        }
        if let Some(c) = st
            .cfgs
            .iter()
            .position(|c| c.status != Some(Status::Success))
        {
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
        let st = self.core.shared().lock();
        Some(
            st.cfgs
                .iter()
                .map(|c| match c.status {
                    Some(s) => ConfigResult::Done(s),
                    None => ConfigResult::NotStarted,
                })
                .collect(),
        )
    }

    /// Cancels the task (no new callback, no new layer) and waits until the
    /// callback currently running and the layer in flight have returned.
    /// Called from inside the task's own callback it only cancels.
    pub fn cancel_and_wait(&self) {
        let sh = self.core.shared();
        let own = sh.lock().cb_thread == Some(std::thread::current().id());
        self.core.cancel();
        if !own {
            sh.wait_for(None, &sh.exited, |s| s.exited);
        }
    }
}

impl<W, E> Control for Core<W, E>
where
    W: Send + Sync + 'static,
    E: Fn(&W) -> Result<()> + Send + Sync + 'static,
{
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn cancel(&self) {
        let mut st = self.shared.lock();
        if st.exiting {
            return;
        }
        st.cancelled = true;
        st.halted = true;
        self.shared.halt.store(true, Ordering::Release);
        if st.cb == Driver::Queued {
            st.cb = Driver::Idle;
            st.sync_over = true;
        }
        if st.xfer == Driver::Queued {
            st.xfer = Driver::Idle;
        }
        self.settle(st);
    }
}

impl<W, E> Job for Core<W, E>
where
    W: Send + Sync + 'static,
    E: Fn(&W) -> Result<()> + Send + Sync + 'static,
{
    fn run(self: Arc<Self>, slot: &mut Slot<'_>) {
        {
            let mut st = self.shared.lock();
            let d = match slot.kind() {
                Kind::Callback => &mut st.cb,
                Kind::Transfer => &mut st.xfer,
            };
            if *d != Driver::Queued {
                return; // revoked by cancel
            }
            *d = Driver::Running;
        }
        let r = catch_unwind(AssertUnwindSafe(|| match slot.kind() {
            Kind::Callback => self.drive_callbacks(slot),
            Kind::Transfer => self.drive_transfers(),
        }));
        if r.is_err() {
            // A bug in the engine itself: end the task rather than hang it.
            let mut st = self.shared.lock();
            let e = err!(Failed, "internal error: the async task engine panicked");
            self.shared.fail(&mut st, None, e);
            st.halted = true;
            self.shared.halt.store(true, Ordering::Release);
            match slot.kind() {
                Kind::Callback => {
                    st.cb = Driver::Idle;
                    st.sync_over = true;
                }
                Kind::Transfer => st.xfer = Driver::Idle,
            }
            self.settle(st);
        }
    }
}

impl<W, E> Core<W, E>
where
    W: Send + Sync + 'static,
    E: Fn(&W) -> Result<()> + Send + Sync + 'static,
{
    fn work(&self) -> Option<Arc<Work<W, E>>> {
        self.work.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls the synchronizer layer after layer until it is over, handing
    /// each approved layer to the transfer driver.
    fn drive_callbacks(self: &Arc<Self>, slot: &mut Slot<'_>) {
        let sh = &self.shared;
        loop {
            let mut st = sh.lock();
            let work = match self.work() {
                Some(w) if !(st.cancelled || st.halted || st.next_cb >= st.num_layers) => w,
                _ => {
                    st.sync_over = true;
                    st.cb = Driver::Idle;
                    return self.settle(st);
                }
            };
            let i = st.next_cb;
            let index = work.layers[i].index;
            drop(work);
            let Some(mut f) = st.sync.take() else {
                st.sync_over = true;
                st.cb = Driver::Idle;
                return self.settle(st);
            };
            st.cb_thread = Some(std::thread::current().id());
            drop(st);
            let r = slot.in_callback(|| catch_unwind(AssertUnwindSafe(|| f(index))));
            let mut st = sh.lock();
            st.cb_thread = None;
            st.sync = Some(f);
            let refused = match r {
                Ok(true) => None,
                Ok(false) => Some(err!(
                    ParamInvalid,
                    "the layer synchronizer returned false for layer {index}"
                )),
                Err(_) => Some(err!(
                    Failed,
                    "internal error: the layer synchronizer panicked at layer {index}"
                )),
            };
            if let Some(e) = refused {
                // Results already final (a transfer failed meanwhile) stay so.
                if let Some(w) = self.work().filter(|_| !st.done) {
                    for (c, _) in &w.layers[i].parts {
                        sh.fail(&mut st, Some(*c), e.clone());
                    }
                }
                st.sync_over = true;
                st.cb = Driver::Idle;
                return self.settle(st);
            }
            if st.cancelled || st.halted {
                st.sync_over = true;
                st.cb = Driver::Idle;
                return self.settle(st);
            }
            st.next_cb = i + 1;
            st.approved = i + 1;
            let last = st.next_cb == st.num_layers;
            let mut submit = false;
            if st.xfer == Driver::Idle {
                if last && slot.trade_for_transfer() {
                    // Nothing left to synchronize: move the rest here.
                    st.sync_over = true;
                    st.cb = Driver::Idle;
                    st.xfer = Driver::Running;
                    drop(st);
                    return self.drive_transfers();
                }
                st.xfer = Driver::Queued;
                submit = true;
            }
            if last {
                st.sync_over = true;
                st.cb = Driver::Idle;
            }
            drop(st);
            if submit {
                if let Err(e) = self.set.pool.submit(self.clone(), Kind::Transfer) {
                    let mut st = sh.lock();
                    sh.fail(&mut st, None, e);
                    st.halted = true;
                    sh.halt.store(true, Ordering::Release);
                    st.xfer = Driver::Idle;
                    st.sync_over = true;
                    st.cb = Driver::Idle;
                    return self.settle(st);
                }
            }
            if last {
                return;
            }
        }
    }

    /// Moves approved layers in order until none is waiting.
    fn drive_transfers(&self) {
        let sh = &self.shared;
        'run: loop {
            let Some(work) = self.work() else {
                break 'run;
            };
            loop {
                let st = sh.lock();
                if st.halted || st.moved >= st.approved {
                    break;
                }
                let i = st.moved;
                drop(st);
                let layer = &work.layers[i];
                for (c, w) in &layer.parts {
                    if sh.halt.load(Ordering::Acquire) {
                        break;
                    }
                    sh.lock().cfgs[*c].started = true;
                    let r = catch_unwind(AssertUnwindSafe(|| (work.exec)(w)));
                    let mut st = sh.lock();
                    let e = match r {
                        Ok(Ok(())) => {
                            let cf = &mut st.cfgs[*c];
                            cf.remaining -= 1;
                            if cf.remaining == 0 && cf.status.is_none() {
                                cf.status = Some(Status::Success);
                            }
                            continue;
                        }
                        Ok(Err(e)) => (
                            Some(*c),
                            Error::new(
                                e.status,
                                format!("config {c}, layer {}: {}", layer.index, e.message),
                            ),
                        ),
                        Err(_) => (
                            None,
                            err!(
                                Failed,
                                "internal error: the transfer of config {c}, layer {} panicked",
                                layer.index
                            ),
                        ),
                    };
                    sh.fail(&mut st, e.0, e.1);
                    st.halted = true;
                    sh.halt.store(true, Ordering::Release);
                }
                sh.lock().moved = i + 1;
            }
            // Release the work before going idle, so that ending the task
            // frees the plans and the executor; then look again, since a
            // layer approved meanwhile found this driver still running.
            drop(work);
            let st = sh.lock();
            if !st.halted && st.moved < st.approved {
                continue 'run;
            }
            break 'run;
        }
        let mut st = sh.lock();
        st.xfer = Driver::Idle;
        self.settle(st);
    }

    /// Called whenever a driver goes idle or the task is cancelled: makes the
    /// results final once no byte will move, and ends the task once no
    /// driver is left.
    fn settle<'a>(&'a self, mut st: MutexGuard<'a, State>) {
        let sh = &self.shared;
        if !st.done
            && !st.finishing
            && st.xfer == Driver::Idle
            && (st.halted || (st.sync_over && st.moved >= st.approved))
        {
            // Plans, links and the source cache go before results are final,
            // dropped outside the lock (nothing can move any more).
            st.finishing = true;
            let work = self.work.lock().unwrap_or_else(|p| p.into_inner()).take();
            drop(st);
            drop(work);
            st = sh.lock();
            if st.cfgs.iter().any(|c| c.status.is_none()) && st.first_failure.is_none() {
                let e = if st.cancelled {
                    err!(
                        Failed,
                        "the task was cancelled (llmdd_task_free or llmdd_finalize)"
                    )
                } else {
                    err!(Failed, "the task ended before every config finished")
                };
                sh.fail(&mut st, None, e);
            }
            for c in st.cfgs.iter_mut() {
                if c.status.is_none() && c.started {
                    c.status = Some(Status::Failed);
                }
            }
            st.done = true;
            sh.done.store(true, Ordering::Release);
            sh.notify(&st);
        }
        if st.done && !st.exiting && st.cb == Driver::Idle && st.xfer == Driver::Idle {
            st.exiting = true;
            // The callback will not be called again: release it first.
            let f = st.sync.take();
            drop(st);
            drop(f);
            let mut st = sh.lock();
            st.exited = true;
            sh.exited.store(true, Ordering::Release);
            sh.notify(&st);
            let slot = st.slot;
            drop(st);
            self.set.unregister(slot);
        }
    }
}

#[cfg(test)]
mod tests;
