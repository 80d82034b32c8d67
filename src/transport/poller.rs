//! The process's control plane: one epoll thread ("llmdd-poll") and a fixed
//! pool of workers ("llmdd-work") serve every connection of every link of
//! every instance in the process, and watch what the liveness checks need
//! (peer pidfds, dialled control connections). Threads do not grow with links.
//!
//! - A served connection is registered one-shot. When it is readable the
//!   poll thread reads what has arrived of the next frame without blocking
//!   ([`Conn::poll_frame`]: header checked and payload bounded before anything
//!   grows), so a peer that sends half a frame and stalls costs a buffer, not
//!   a thread; a frame, once begun, must complete within its service's frame
//!   timeout (`llmdd.IoTimeoutMs`), else the connection is dropped.
//! - A complete request goes to a worker, which runs the service's handler
//!   (bulk Read/Write may occupy it until done, within the request's
//!   deadline), spins `llmdd.BusyPollUs` for a next request on the same
//!   connection, then re-arms it.
//! - A watch (a descriptor and a [`Watcher`]) fires once on a worker; the
//!   watcher says whether to look again (after a delay) or stop.
//! - [`Tick`]s run on the poll thread every [`TICK`] (idle-connection and
//!   table sweeps; they must not block).
//!
//! The reactor starts when the first instance of the process needs it and
//! stops (threads joined, descriptors closed) when the last one that used it
//! is finalized ([`Handle`]).
//!
//! Built on `rustix`'s epoll: typed, safe wrappers over the syscalls, with the
//! full set of interest flags (a dialled control connection is watched for
//! hang-ups only, `EPOLLRDHUP`, while its owner reads its replies).

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};

use crate::status::{Error, Result};
use crate::transport::tcp::{Conn, FrameReader};
use crate::transport::wire::Msg;
use crate::{err, log_warn};

/// How often the [`Tick`]s run.
pub const TICK: Duration = Duration::from_secs(1);
/// Key of the wake-up eventfd.
const WAKE: u64 = 0;

/// What serves the requests of one connection.
pub trait Service: Send + Sync {
    /// Handles one request on a worker. `Ok(false)` ends the connection
    /// quietly (the handler finished it); an error ends it with
    /// [`Service::ended`].
    fn handle(&self, conn: &mut Conn, msg: Msg) -> Result<bool>;
    /// The connection ended: closed, broken, a frame too slow or malformed,
    /// or a handler error (`why`). Called once, on a worker.
    fn ended(&self, why: Error);
}

/// What a watched descriptor stands for.
pub trait Watcher: Send + Sync {
    /// The descriptor fired (runs on a worker): `Some(d)` looks again after
    /// `d`, `None` stops watching.
    fn fired(&self) -> Option<Duration>;
}

/// Periodic work on the poll thread (must not block).
pub trait Tick: Send + Sync {
    /// Runs every [`TICK`]; false drops the tick.
    fn tick(&self, now: Instant) -> bool;
}

/// A descriptor a watch keeps open while it is registered.
pub type WatchedFd = Arc<dyn AsFd + Send + Sync>;

struct Served {
    conn: Conn,
    reader: FrameReader,
    svc: Arc<dyn Service>,
    frame_timeout: Duration,
    /// The request handed to a worker with the connection.
    request: Option<Msg>,
}

struct Watch {
    fd: WatchedFd,
    flags: EventFlags,
    watcher: Arc<dyn Watcher>,
}

enum Entry {
    Served(Box<Served>),
    Watch(Watch),
}

impl Entry {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Entry::Served(s) => s.conn.as_fd(),
            Entry::Watch(w) => w.fd.as_fd(),
        }
    }
}

enum Job {
    Request(u64, Box<Served>),
    Ended(Arc<dyn Service>, Error),
    Fire(u64, Watch),
}

/// The process-wide poller and its workers (started on first use).
pub struct Reactor {
    epfd: OwnedFd,
    wake: OwnedFd,
    /// Registered entries not held by a worker, by key.
    entries: Mutex<HashMap<u64, Entry>>,
    /// Keys whose frame has begun to arrive (checked against their timeout).
    partial: Mutex<Vec<u64>>,
    /// Watches to re-arm at a time.
    rearm: Mutex<Vec<(Instant, u64)>>,
    ticks: Mutex<Vec<Weak<dyn Tick>>>,
    next: AtomicU64,
    jobs: Mutex<VecDeque<Job>>,
    jobs_cv: Condvar,
    workers: usize,
    stopping: AtomicBool,
    /// Which start of the reactor this is (1, 2, … in the process).
    generation: u64,
    /// The process that started it: a forked child inherits the state but
    /// not the threads, and its epoll descriptor is the parent's instance.
    pid: u32,
}

/// The running reactor and how many [`Handle`]s use it.
struct Running {
    reactor: Arc<Reactor>,
    users: usize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn running() -> &'static Mutex<Option<Running>> {
    static R: OnceLock<Mutex<Option<Running>>> = OnceLock::new();
    R.get_or_init(Mutex::default)
}

/// A use of the reactor (one per instance that serves or watches anything);
/// the last one dropped stops it.
pub struct Handle(Arc<Reactor>);

impl Handle {
    /// The reactor itself (for state that must not keep it alive: `Weak`).
    pub fn arc(&self) -> &Arc<Reactor> {
        &self.0
    }
}

impl std::ops::Deref for Handle {
    type Target = Reactor;
    fn deref(&self) -> &Reactor {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let mut g = running().lock().unwrap_or_else(|p| p.into_inner());
        let last = match g.as_mut() {
            Some(r) if Arc::ptr_eq(&r.reactor, &self.0) => {
                r.users -= 1;
                r.users == 0
            }
            _ => false,
        };
        if !last {
            return;
        }
        let r = g.take().expect("checked above");
        drop(g);
        r.reactor.stopping.store(true, Ordering::Release);
        r.reactor.wake();
        r.reactor.jobs_cv.notify_all();
        let me = std::thread::current().id();
        for t in r.threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        // Whatever is still registered (watches of links gone) goes now.
        let left = std::mem::take(&mut *r.reactor.lock_entries());
        drop(left);
        // No instance is left: the liveness page and its thread go too.
        crate::transport::live::release();
    }
}

/// A handle on the reactor, starting it if it is not running.
pub fn acquire() -> Result<Handle> {
    static STARTS: AtomicU64 = AtomicU64::new(0);
    let mut g = running().lock().unwrap_or_else(|p| p.into_inner());
    if g.as_ref()
        .is_some_and(|r| r.reactor.pid != std::process::id())
    {
        // A forked child: its copy of the parent's reactor has no threads,
        // and registering on the inherited epoll descriptor would feed the
        // parent's poller. Close the copies and start afresh; nothing else of
        // the copy is touched (its threads never existed here).
        let old = g.take().expect("checked above");
        // SAFETY: closing this process's copies of two inherited descriptors
        // that nothing here uses; the copy is forgotten, never dropped.
        unsafe {
            libc::close(old.reactor.epfd.as_raw_fd());
            libc::close(old.reactor.wake.as_raw_fd());
        }
        std::mem::forget(old);
    }
    if let Some(r) = g.as_mut() {
        r.users += 1;
        return Ok(Handle(r.reactor.clone()));
    }
    let generation = STARTS.fetch_add(1, Ordering::Relaxed) + 1;
    let (reactor, threads) = Reactor::start(generation)?;
    *g = Some(Running {
        reactor: reactor.clone(),
        users: 1,
        threads,
    });
    Ok(Handle(reactor))
}

/// Workers of the pool: two more than the cores, at least 4, at most 32.
fn worker_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    (cores + 2).clamp(4, 32)
}

fn served_flags() -> EventFlags {
    EventFlags::IN | EventFlags::RDHUP | EventFlags::ONESHOT
}

impl Reactor {
    fn start(generation: u64) -> Result<(Arc<Reactor>, Vec<std::thread::JoinHandle<()>>)> {
        let epfd = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| err!(Failed, "epoll_create1 failed: {e}"))?;
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )
        .map_err(|e| err!(Failed, "eventfd failed: {e}"))?;
        epoll::add(&epfd, &wake, EventData::new_u64(WAKE), EventFlags::IN)
            .map_err(|e| err!(Failed, "epoll_ctl failed: {e}"))?;
        let r = Arc::new(Reactor {
            epfd,
            wake,
            entries: Mutex::new(HashMap::new()),
            partial: Mutex::new(Vec::new()),
            rearm: Mutex::new(Vec::new()),
            ticks: Mutex::new(Vec::new()),
            next: AtomicU64::new(WAKE + 1),
            jobs: Mutex::new(VecDeque::new()),
            jobs_cv: Condvar::new(),
            workers: worker_count(),
            stopping: AtomicBool::new(false),
            generation,
            pid: std::process::id(),
        });
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .stack_size(256 * 1024)
                .spawn(f)
                .map_err(|e| err!(Failed, "cannot start a control-plane thread: {e}"))
        };
        let mut threads = Vec::new();
        let started = (|| -> Result<()> {
            for i in 0..r.workers {
                let w = r.clone();
                threads.push(spawn(
                    format!("llmdd-work-{i}"),
                    Box::new(move || w.work()),
                )?);
            }
            let w = r.clone();
            threads.push(spawn("llmdd-poll".into(), Box::new(move || w.poll()))?);
            Ok(())
        })();
        if let Err(e) = started {
            r.stopping.store(true, Ordering::Release);
            r.wake();
            r.jobs_cv.notify_all();
            for t in threads {
                let _ = t.join();
            }
            return Err(e);
        }
        Ok((r, threads))
    }

    /// Which start of the reactor this is (state kept for a reactor must not
    /// outlive it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    fn lock_entries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn push(&self, job: Job) {
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(job);
        self.jobs_cv.notify_one();
    }

    fn wake(&self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    /// Serves the requests arriving on `conn` with `svc` until it ends; a
    /// frame, once begun, must complete within `frame_timeout`. On failure
    /// the connection is dropped and `svc.ended` runs (on this thread).
    pub fn serve(&self, conn: Conn, svc: Arc<dyn Service>, frame_timeout: Duration) {
        let key = self.key();
        let s = Box::new(Served {
            conn,
            reader: FrameReader::default(),
            svc,
            frame_timeout,
            request: None,
        });
        let mut m = self.lock_entries();
        let added = epoll::add(
            &self.epfd,
            s.conn.as_fd(),
            EventData::new_u64(key),
            served_flags(),
        );
        match added {
            Ok(()) => {
                m.insert(key, Entry::Served(s));
            }
            Err(e) => {
                drop(m);
                let svc = s.svc.clone();
                drop(s);
                svc.ended(err!(Failed, "cannot register a connection: {e}"));
            }
        }
    }

    /// Watches `fd` for `flags` (one-shot); `watcher` runs on a worker each
    /// time it fires.
    /// Returns the watch's key (for [`Reactor::unwatch`]).
    pub fn watch(
        &self,
        fd: WatchedFd,
        flags: EventFlags,
        watcher: Arc<dyn Watcher>,
    ) -> Result<u64> {
        let key = self.key();
        let flags = flags | EventFlags::ONESHOT;
        let mut m = self.lock_entries();
        epoll::add(&self.epfd, fd.as_fd(), EventData::new_u64(key), flags)
            .map_err(|e| err!(Failed, "cannot watch a descriptor: {e}"))?;
        m.insert(key, Entry::Watch(Watch { fd, flags, watcher }));
        Ok(key)
    }

    /// Stops the watch `key` and releases its descriptor, unless it is
    /// firing right now (then its watcher decides).
    pub fn unwatch(&self, key: u64) {
        let mut m = self.lock_entries();
        if let Some(Entry::Watch(w)) = m.get(&key) {
            let _ = epoll::delete(&self.epfd, w.fd.as_fd());
            m.remove(&key);
        }
    }

    /// Runs `t` every [`TICK`] on the poll thread while it lives.
    pub fn add_tick(&self, t: Weak<dyn Tick>) {
        self.ticks.lock().unwrap_or_else(|p| p.into_inner()).push(t);
    }

    /// Puts an entry a worker held back, armed again.
    fn rearm(&self, key: u64, e: Entry) {
        let flags = match &e {
            Entry::Served(_) => served_flags(),
            Entry::Watch(w) => w.flags,
        };
        let mut m = self.lock_entries();
        let r = epoll::modify(&self.epfd, e.fd(), EventData::new_u64(key), flags);
        match r {
            Ok(()) => {
                m.insert(key, e);
            }
            Err(err) => {
                drop(m);
                self.finish(e, err!(Failed, "cannot re-arm a connection: {err}"));
            }
        }
    }

    /// Unregisters `e` and reports its end.
    fn finish(&self, e: Entry, why: Error) {
        let _ = epoll::delete(&self.epfd, e.fd());
        match e {
            Entry::Served(s) => {
                let svc = s.svc.clone();
                drop(s);
                svc.ended(why);
            }
            Entry::Watch(_) => {}
        }
    }

    // ------------------------------------------------------------ poll thread

    fn poll(&self) {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
        let mut next_tick = Instant::now() + TICK;
        while !self.stopping.load(Ordering::Acquire) {
            let now = Instant::now();
            let until = self.next_deadline().map_or(next_tick, |d| d.min(next_tick));
            let wait = until.saturating_duration_since(now);
            let ts = rustix::time::Timespec {
                tv_sec: wait.as_secs() as _,
                tv_nsec: wait.subsec_nanos() as _,
            };
            events.clear();
            match epoll::wait(&self.epfd, spare_capacity(&mut events), Some(&ts)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    log_warn!("the control plane's poller failed: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            }
            for ev in events.iter() {
                let key = ev.data.u64();
                if key == WAKE {
                    let mut b = [0u8; 8];
                    let _ = rustix::io::read(&self.wake, &mut b);
                    continue;
                }
                self.ready(key);
            }
            let now = Instant::now();
            self.expire(now);
            if now >= next_tick {
                next_tick = now + TICK;
                self.run_ticks(now);
            }
        }
    }

    /// The earliest partial-frame deadline or watch re-arm time.
    fn next_deadline(&self) -> Option<Instant> {
        let m = self.lock_entries();
        let p = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        let frames = p.iter().filter_map(|k| match m.get(k) {
            Some(Entry::Served(s)) => s.reader.started().map(|t| t + s.frame_timeout),
            _ => None,
        });
        let r = self.rearm.lock().unwrap_or_else(|p| p.into_inner());
        frames.chain(r.iter().map(|(t, _)| *t)).min()
    }

    /// Reads what arrived on `key` (a served connection) or fires its watch.
    fn ready(&self, key: u64) {
        let Some(e) = self.lock_entries().remove(&key) else {
            return;
        };
        let mut s = match e {
            Entry::Served(s) => s,
            Entry::Watch(w) => return self.push(Job::Fire(key, w)),
        };
        match s.conn.poll_frame(&mut s.reader) {
            Ok(Some(msg)) => {
                s.request = Some(msg);
                self.push(Job::Request(key, s))
            }
            Ok(None) => {
                let begun = s.reader.started().is_some();
                self.rearm(key, Entry::Served(s));
                let mut p = self.partial.lock().unwrap_or_else(|p| p.into_inner());
                if begun && !p.contains(&key) {
                    p.push(key);
                }
            }
            Err(why) => self.end_async(Entry::Served(s), why),
        }
    }

    /// Unregisters `e` now and reports its end on a worker.
    fn end_async(&self, e: Entry, why: Error) {
        let _ = epoll::delete(&self.epfd, e.fd());
        if let Entry::Served(s) = e {
            let svc = s.svc.clone();
            drop(s);
            self.push(Job::Ended(svc, why));
        }
    }

    /// Drops connections whose frame is overdue; re-arms watches due.
    fn expire(&self, now: Instant) {
        let overdue: Vec<(u64, Entry)> = {
            let mut m = self.lock_entries();
            let mut p = self.partial.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            p.retain(|k| match m.get(k) {
                Some(Entry::Served(s)) => match s.reader.started() {
                    Some(t) if now >= t + s.frame_timeout => {
                        out.push((*k, m.remove(k).expect("looked up above")));
                        false
                    }
                    Some(_) => true,
                    None => false,
                },
                // Held by a worker (it completed) or gone.
                _ => false,
            });
            out
        };
        for (_, e) in overdue {
            let why = match &e {
                Entry::Served(s) => err!(
                    Timeout,
                    "a frame from {} did not complete within {} ms",
                    s.conn.peer(),
                    s.frame_timeout.as_millis()
                ),
                Entry::Watch(_) => err!(Timeout, "watch expired"),
            };
            self.end_async(e, why);
        }
        let due: Vec<u64> = {
            let mut r = self.rearm.lock().unwrap_or_else(|p| p.into_inner());
            let (due, later): (Vec<_>, Vec<_>) = r.drain(..).partition(|(t, _)| *t <= now);
            *r = later;
            due.into_iter().map(|(_, k)| k).collect()
        };
        for k in due {
            let m = self.lock_entries();
            if let Some(e) = m.get(&k) {
                let flags = match e {
                    Entry::Watch(w) => w.flags,
                    Entry::Served(_) => served_flags(),
                };
                let _ = epoll::modify(&self.epfd, e.fd(), EventData::new_u64(k), flags);
            }
        }
    }

    fn run_ticks(&self, now: Instant) {
        let ticks: Vec<Arc<dyn Tick>> = {
            let mut t = self.ticks.lock().unwrap_or_else(|p| p.into_inner());
            t.retain(|w| w.strong_count() > 0);
            t.iter().filter_map(Weak::upgrade).collect()
        };
        let mut dropped = Vec::new();
        for t in &ticks {
            if !t.tick(now) {
                dropped.push(Arc::as_ptr(t) as *const () as usize);
            }
        }
        if !dropped.is_empty() {
            let mut t = self.ticks.lock().unwrap_or_else(|p| p.into_inner());
            t.retain(|w| !dropped.contains(&(w.as_ptr() as *const () as usize)));
        }
    }

    // ---------------------------------------------------------------- workers

    fn work(&self) {
        loop {
            let job = {
                let mut q = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(j) = q.pop_front() {
                        break j;
                    }
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    q = self.jobs_cv.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            // A panicking handler costs its connection, not the worker.
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run(job)));
            if r.is_err() {
                log_warn!("a control-plane handler panicked; its connection was dropped");
            }
        }
    }

    fn run(&self, job: Job) {
        match job {
            Job::Ended(svc, why) => svc.ended(why),
            Job::Fire(key, w) => match w.watcher.fired() {
                None => {
                    let _ = epoll::delete(&self.epfd, w.fd.as_fd());
                }
                Some(after) if after.is_zero() => self.rearm(key, Entry::Watch(w)),
                Some(after) => {
                    // Kept disarmed until the poll thread re-arms it.
                    self.lock_entries().insert(key, Entry::Watch(w));
                    self.rearm
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((Instant::now() + after, key));
                    self.wake();
                }
            },
            Job::Request(key, mut s) => match s.request.take() {
                Some(msg) => self.serve_requests(key, s, msg),
                None => self.rearm(key, Entry::Served(s)),
            },
        }
    }

    /// Handles `msg`, then any request that follows within the busy-poll
    /// spin, then hands the connection back to the poll thread.
    fn serve_requests(&self, key: u64, mut s: Box<Served>, mut msg: Msg) {
        loop {
            match s.svc.handle(&mut s.conn, msg) {
                Ok(true) => {}
                Ok(false) => {
                    let _ = epoll::delete(&self.epfd, s.conn.as_fd());
                    return;
                }
                Err(e) => return self.finish(Entry::Served(s), e),
            }
            if s.conn.is_broken() {
                let e = err!(LinkFailed, "the connection is out of sync");
                return self.finish(Entry::Served(s), e);
            }
            // Spin for a next request only while no other work waits.
            let idle = self
                .jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty();
            let spin = if idle { s.conn.spin() } else { Duration::ZERO };
            let until = Instant::now() + spin;
            msg = loop {
                match s.conn.poll_frame(&mut s.reader) {
                    Ok(Some(m)) => break m,
                    Ok(None) if Instant::now() < until => std::hint::spin_loop(),
                    Ok(None) => {
                        let begun = s.reader.started().is_some();
                        self.rearm(key, Entry::Served(s));
                        if begun {
                            self.partial
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(key);
                            self.wake();
                        }
                        return;
                    }
                    Err(e) => return self.finish(Entry::Served(s), e),
                }
            };
        }
    }
}
