//! A link to one remote cluster: its TCP connections, the one-sided local path
//! when the peer shares this host, the peer's cache table (remote-accessible
//! mode), and in-flight accounting so unlink/finalize can wait for transfers.
//!
//! The client's first connection is the link's *control* connection: it
//! carries the handshake and the unlink, never bulk data, so a transfer
//! timeout (which drops its connection) cannot end the link. Either side
//! closing it, or keepalive finding the peer dead, ends the link on both ends.
//! Both ends read it on the control plane's poller and may send requests on
//! it ([`Link::control_request`], one at a time per side, each reply matched
//! by the tag its request carried). A link whose bytes move one-sidedly
//! (same process or same host) sends its small requests (tables, key
//! resolutions, notifications) there too, so it needs no other connection.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::backend::{DataPath, PathInfo};
use crate::cache::types::CacheView;
use crate::stats::{LinkStats, Path};
use crate::status::Result;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::tcp::{check_reply, hangup, Conn, ConnOpts};
use crate::transport::wire::{CacheEntry, Msg};
use crate::{bail, err};

mod conns;
pub use conns::ConnGuard;

/// Most connections a client opens for its own requests on one link.
pub const MAX_FORWARD_CONNS: usize = 8;
/// A request connection of a client unused this long is closed; the next
/// transfer that needs it opens it again (within its own deadline). Long
/// against the gaps between a serving system's transfers, short against the
/// life of an idle link (its descriptors on both ends).
pub const DATA_IDLE_CLOSE: Duration = Duration::from_secs(30);

static IDLE_CLOSE_MS: AtomicU64 = AtomicU64::new(DATA_IDLE_CLOSE.as_millis() as u64);

/// Sets how long an unused request connection stays open, for the whole
/// process ([`DATA_IDLE_CLOSE`] by default; tests shorten it).
#[doc(hidden)]
#[cfg(any(test, feature = "testing"))]
pub fn set_data_idle_close(d: Duration) {
    IDLE_CLOSE_MS.store(d.as_millis() as u64, Ordering::Relaxed);
}

fn data_idle_close() -> Duration {
    Duration::from_millis(IDLE_CLOSE_MS.load(Ordering::Relaxed))
}

/// One link (either side).
pub struct Link {
    /// The peer's cluster id (proven in the handshake).
    pub remote_cluster_id: u64,
    /// The peer's role when it linked (prompt / decoder / mix).
    pub remote_role: u32,
    /// Shared secret attaching extra connections to this link.
    pub token: u64,
    /// True on the side that dialed (the client).
    pub we_dialed: bool,
    /// The server endpoint (client side), for opening more connections.
    pub remote_addr: SocketAddr,
    /// The one-sided data path to the peer's memory (a backend's: same
    /// process or host, HCCL), set once during link setup; none: TCP.
    path: OnceLock<LinkPath>,
    /// Registry generation when the link was created.
    pub generation: u64,
    /// Our cluster id (sent when attaching connections).
    pub local_cluster_id: u64,
    /// Rank-table comm this link belongs to (`llmdd_link`); 0 = link_clusters.
    pub comm_id: u64,
    /// Transfers may use the link. A comm's links become ready when the whole
    /// comm is linked (status OK); link_clusters links are ready at once.
    ready: AtomicBool,
    conn_opts: ConnOpts,
    /// Connections on which this side sends requests.
    /// With when each was last returned (closed after [`DATA_IDLE_CLOSE`]).
    idle: Mutex<Vec<(Conn, Instant)>>,
    conns: AtomicUsize,
    conn_cv: Condvar,
    /// Forward connections the client may open (lowered when the server
    /// refuses one: its `llmdd.MaxConnsPerLink`).
    forward_cap: AtomicUsize,
    /// Server: a request for reverse connections (`OpenConns`) is under way.
    asking: AtomicBool,
    /// Client: reverse connections open (the server's requests arrive there).
    reverse_open: Arc<AtomicUsize>,
    /// Every live socket of this link, shut down at teardown (weak: a
    /// connection that ends releases its descriptor at once).
    sockets: Mutex<Vec<Weak<TcpStream>>>,
    /// The sending handle of the control connection (its reading side is
    /// on the poller), held here on either side.
    control: Mutex<Option<Conn>>,
    /// The request this side awaits on the control connection (one at a
    /// time: `call_turn`), and its reply once delivered.
    call: Mutex<Call>,
    call_cv: Condvar,
    call_turn: Mutex<()>,
    /// The control connection's socket on either side, for liveness checks.
    control_sock: OnceLock<Weak<TcpStream>>,
    table: Mutex<Option<Arc<PeerTable>>>,
    /// Transfers this side started and requests it is serving (counted
    /// without a lock; `idle_cv` wakes the threads waiting for none).
    inflight: InFlight,
    idle_cv: Condvar,
    /// A non-forced unlink is under way: no new transfer starts.
    draining: AtomicBool,
    /// Why the link died (its peer is gone: same-host pidfd readable, control
    /// connection closed or errored), if it did. Transfers then fail before
    /// moving a byte; the entry stays until unlink or a new link_clusters
    /// replaces it.
    dead: OnceLock<String>,
    closed: AtomicBool,
    /// Counters of the operations on this link (`crate::stats`).
    pub stats: LinkStats,
    /// When the link was created (ns since the Unix epoch).
    pub created_unix_ns: u64,
}

/// The peer's cache table as fetched (remote-accessible mode), with the
/// planner's view of each entry made once: a transfer that resolves its
/// source here copies no addresses. Derefs to the entries.
#[derive(Debug)]
pub struct PeerTable {
    entries: Vec<CacheEntry>,
    /// `entries[i].view()`: the peer's entries are checked once, here.
    views: Vec<Result<CacheView>>,
}

impl PeerTable {
    /// The table of `entries`, each entry's view made now.
    pub fn new(entries: Vec<CacheEntry>) -> PeerTable {
        let views = entries.iter().map(CacheEntry::view).collect();
        PeerTable { entries, views }
    }

    /// The planner's view of entry `i`, or why the peer's entry is invalid
    /// (`CacheEntry::view`); `None` past the end of the table.
    pub fn view(&self, i: usize) -> Option<Result<&CacheView>> {
        Some(self.views.get(i)?.as_ref().map_err(Clone::clone))
    }
}

impl std::ops::Deref for PeerTable {
    type Target = [CacheEntry];
    fn deref(&self) -> &[CacheEntry] {
        &self.entries
    }
}

/// A link's data path with what it is, read without a call.
struct LinkPath {
    info: PathInfo,
    path: Box<dyn DataPath>,
}

impl LinkPath {
    fn new(path: Box<dyn DataPath>) -> LinkPath {
        LinkPath {
            info: path.info(),
            path,
        }
    }
}

/// Parameters for building a link.
pub struct LinkParts {
    /// The peer's cluster id.
    pub remote_cluster_id: u64,
    /// The peer's role.
    pub remote_role: u32,
    /// The server's link token (attaches connections).
    pub token: u64,
    /// True on the dialling side.
    pub we_dialed: bool,
    /// The server endpoint (client side).
    pub remote_addr: SocketAddr,
    /// The one-sided path the handshake found (same process or host).
    pub path: Option<Box<dyn DataPath>>,
    /// Registry generation at link time.
    pub generation: u64,
    /// This instance's cluster id.
    pub local_cluster_id: u64,
    /// The rank-table comm of the link; 0 for link_clusters.
    pub comm_id: u64,
    /// Socket options of its connections.
    pub conn: ConnOpts,
}

impl Link {
    /// Creates a link with no connections yet.
    pub fn new(p: LinkParts) -> Link {
        let now = crate::stats::unix_ns();
        Link {
            remote_cluster_id: p.remote_cluster_id,
            remote_role: p.remote_role,
            token: p.token,
            we_dialed: p.we_dialed,
            remote_addr: p.remote_addr,
            path: p
                .path
                .map(|p| OnceLock::from(LinkPath::new(p)))
                .unwrap_or_default(),
            generation: p.generation,
            local_cluster_id: p.local_cluster_id,
            comm_id: p.comm_id,
            ready: AtomicBool::new(p.comm_id == 0),
            conn_opts: p.conn,
            idle: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
            conn_cv: Condvar::new(),
            forward_cap: AtomicUsize::new(MAX_FORWARD_CONNS),
            asking: AtomicBool::new(false),
            reverse_open: Arc::new(AtomicUsize::new(0)),
            sockets: Mutex::new(Vec::new()),
            control: Mutex::new(None),
            call: Mutex::new(Call::default()),
            call_cv: Condvar::new(),
            call_turn: Mutex::new(()),
            control_sock: OnceLock::new(),
            table: Mutex::new(None),
            inflight: InFlight::default(),
            idle_cv: Condvar::new(),
            draining: AtomicBool::new(false),
            dead: OnceLock::new(),
            closed: AtomicBool::new(false),
            stats: LinkStats::since(now),
            created_unix_ns: now,
        }
    }

    /// How this link moves bytes (set up before the link is used).
    pub fn path(&self) -> Path {
        self.path.get().map_or(Path::Tcp, |p| p.info.kind)
    }

    /// The one-sided data path, if the link has one (else it uses TCP).
    pub fn data_path(&self) -> Option<&dyn DataPath> {
        self.path.get().map(|p| &*p.path)
    }

    /// Makes this link move bytes over `p` (once, during link setup; a
    /// second one is closed).
    pub fn set_path(&self, p: Box<dyn DataPath>) {
        if let Err(p) = self.path.set(LinkPath::new(p)) {
            p.path.close();
        }
    }

    /// True unless the link's data path refuses TCP bulk reads and writes
    /// (its memory is not host-addressable).
    pub fn serves_tcp_bulk(&self) -> bool {
        self.path.get().map_or(true, |p| p.info.serves_tcp_bulk)
    }

    /// True once torn down.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The peer process of a same-host link (its exit kills the link).
    pub fn peer_process(&self) -> Option<&PeerProcess> {
        self.data_path().and_then(|p| p.peer_process())
    }

    /// True when transfers may use the link (see `ready`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks a comm's link usable for transfers (the comm reached OK).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Remembers a socket so teardown can shut it down.
    pub fn track(&self, conn: &Conn) {
        self.try_track(conn, usize::MAX);
    }

    /// [`Link::track`] unless the link already has `max` live connections
    /// (then false and nothing is tracked).
    pub fn try_track(&self, conn: &Conn, max: usize) -> bool {
        let mut v = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|w| w.strong_count() > 0);
        if v.len() >= max {
            return false;
        }
        v.push(conn.weak());
        drop(v);
        if self.is_closed() {
            conn.shutdown();
        }
        true
    }

    /// Live connections of this link on this side.
    pub fn conn_count(&self) -> usize {
        let v = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        v.iter().filter(|w| w.strong_count() > 0).count()
    }

    /// Keeps `writer` (see [`Conn::writer`]) as the sending handle of the
    /// control connection, whose reading side goes to the poller.
    pub fn set_control_writer(&self, writer: Conn) {
        *self.control.lock().unwrap_or_else(|p| p.into_inner()) = Some(writer);
    }

    /// True when the small requests of this link go on its control
    /// connection: its bytes move one-sidedly, so it has no data connection.
    pub fn requests_on_control(&self) -> bool {
        self.path.get().is_some_and(|p| p.info.requests_on_control)
    }

    /// Hands the reply `msg` that arrived on the control connection with
    /// `tag` to the request awaiting it; a reply nobody awaits (its request
    /// timed out) is dropped.
    pub fn deliver_reply(&self, tag: u32, msg: Msg) {
        let mut c = self.call.lock().unwrap_or_else(|p| p.into_inner());
        if c.awaiting == Some(tag) && c.reply.is_none() {
            c.reply = Some(msg);
            self.call_cv.notify_all();
        } else {
            crate::log_debug!(
                "link to cluster {}: dropped a late or unrequested reply {}",
                self.remote_cluster_id,
                msg.msg_type()
            );
        }
    }

    /// Remembers `conn` as the control connection (its socket, for liveness
    /// checks) and tracks it.
    pub fn watch_control(&self, conn: &Conn) {
        let _ = self.control_sock.set(conn.weak());
        self.track(conn);
    }

    /// The control connection's socket, while it lives.
    pub fn control_socket(&self) -> Option<Arc<TcpStream>> {
        self.control_sock.get().and_then(Weak::upgrade)
    }

    /// Why the peer is known to be gone, if it is: the link died or was torn
    /// down, or its control connection is closed or errored.
    pub fn peer_gone(&self) -> Option<String> {
        if let Some(why) = self.dead.get() {
            return Some(why.clone());
        }
        if self.is_closed() {
            return Some("the link was torn down".into());
        }
        match self.control_socket() {
            Some(s) => hangup(&s),
            None if self.control_sock.get().is_some() => {
                Some("its control connection has ended".into())
            }
            None => None,
        }
    }

    /// [`Link::peer_gone`], waiting up to `grace` for a hang-up already on
    /// its way (a client that force-unlinked and links again at once).
    pub fn peer_gone_within(&self, grace: Duration) -> Option<String> {
        let until = Instant::now() + grace;
        loop {
            if let Some(why) = self.peer_gone() {
                return Some(why);
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            let s = self.control_socket()?;
            let ms = (until - now).as_millis().clamp(1, 100) as i32;
            let mut p = libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&*s),
                events: libc::POLLRDHUP,
                revents: 0,
            };
            // SAFETY: one valid pollfd (the Arc keeps the fd open).
            unsafe { libc::poll(&mut p, 1, ms) };
        }
    }

    /// Marks the link dead: its peer is gone (`why`: what was seen — its
    /// process exited, its control connection closed or errored). From now on
    /// transfers return `LLM_LINK_FAILED` naming `why` before moving a byte;
    /// the peer's pool mappings are dropped (once copies using them have
    /// returned) and every socket is shut down. The link stays in its table
    /// until unlink, or link_clusters to that cluster, replaces it (the
    /// server drops it when its control connection ends). The first reason
    /// wins; a link torn down on this side already is marked silently.
    pub fn mark_dead(&self, why: &str) {
        if self.dead.set(why.to_string()).is_err() {
            return;
        }
        if self.is_closed() {
            // Torn down on this side already: nothing to report.
        } else if self.we_dialed {
            crate::log_warn!(
                "link to cluster {} is dead ({why}); its transfers fail until it is linked again or unlinked",
                self.remote_cluster_id
            );
        } else {
            crate::log_warn!(
                "link from cluster {} is dead ({why}); dropping our side",
                self.remote_cluster_id
            );
        }
        if let Some(p) = self.data_path() {
            p.peer_gone();
        }
        self.teardown(Duration::ZERO);
    }

    /// Why the link died, if it did.
    pub fn dead_reason(&self) -> Option<&str> {
        self.dead.get().map(String::as_str)
    }

    /// True once the link's peer is known gone ([`Link::mark_dead`]).
    pub fn is_dead(&self) -> bool {
        self.dead.get().is_some()
    }

    /// The error of a transfer over a dead link.
    pub fn dead_error(&self) -> crate::Error {
        err!(
            LinkFailed,
            "the link to cluster {} is dead ({}); link_clusters again or unlink it",
            self.remote_cluster_id,
            self.dead_reason().unwrap_or("its peer is gone")
        )
    }

    /// True while a non-forced unlink waits for transfers.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Stops new transfers and waits up to `wait` for those in flight (and
    /// requests being served); true if none is left.
    pub fn drain(&self, wait: Duration) -> bool {
        // SeqCst, as the counts: see `Link::begin`.
        self.draining.store(true, Ordering::SeqCst);
        self.wait_idle(wait, true) == 0
    }

    /// Waits up to `wait` until no transfer of this side (and, with
    /// `serving`, no request it serves) is in flight; returns how many are left.
    fn wait_idle(&self, wait: Duration, serving: bool) -> usize {
        let f = &self.inflight;
        let left = || {
            f.own.load(Ordering::SeqCst)
                + if serving {
                    f.serving.load(Ordering::SeqCst)
                } else {
                    0
                }
        };
        let until = Instant::now() + wait;
        let mut g = f.lock.lock().unwrap_or_else(|p| p.into_inner());
        // Announced before the counts are read (both SeqCst): a guard whose
        // decrement this read misses sees the waiter and wakes it, under the
        // lock this thread holds until it waits.
        f.waiters.fetch_add(1, Ordering::SeqCst);
        let out = loop {
            let n = left();
            let now = Instant::now();
            if n == 0 || now >= until {
                break n;
            }
            g = self
                .idle_cv
                .wait_timeout(g, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        f.waiters.fetch_sub(1, Ordering::SeqCst);
        drop(g);
        out
    }

    /// Lets transfers start again (a non-forced unlink that failed).
    pub fn undrain(&self) {
        self.draining.store(false, Ordering::Release);
    }

    /// Shuts down every connection except the control one (cuts transfers
    /// still in flight when an unlink's wait ran out).
    pub fn shutdown_data(&self) {
        let control = self.control_socket();
        let v = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        for s in v.iter().filter_map(Weak::upgrade) {
            if control.as_ref().is_some_and(|c| Arc::ptr_eq(c, &s)) {
                continue;
            }
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Sends `msg` on the control connection and waits until `deadline` for
    /// its reply (either side; one request at a time per side).
    pub fn control_request(&self, msg: &Msg, deadline: Instant) -> Result<Msg> {
        let _turn = self.call_turn.lock().unwrap_or_else(|p| p.into_inner());
        let tag = {
            let mut c = self.call.lock().unwrap_or_else(|p| p.into_inner());
            c.seq = c.seq.wrapping_add(1).max(1);
            c.awaiting = Some(c.seq);
            c.reply = None;
            c.seq
        };
        let sent = {
            let mut g = self.control.lock().unwrap_or_else(|p| p.into_inner());
            match g.as_mut() {
                Some(w) => {
                    let r = w.send_tagged(msg, tag, Some(deadline));
                    if w.is_broken() {
                        // Half a frame may have gone out: the stream is lost.
                        w.shutdown();
                    }
                    r
                }
                None => Err(err!(
                    LinkFailed,
                    "the link to cluster {} has no control connection",
                    self.remote_cluster_id
                )),
            }
        };
        let mut c = self.call.lock().unwrap_or_else(|p| p.into_inner());
        let out = match sent {
            Err(e) => Err(e),
            Ok(()) => loop {
                if let Some(m) = c.reply.take() {
                    break Ok(m);
                }
                if self.is_closed() || self.is_dead() {
                    break Err(err!(
                        LinkFailed,
                        "the link to cluster {} ended before its reply",
                        self.remote_cluster_id
                    ));
                }
                let now = Instant::now();
                if now >= deadline {
                    break Err(err!(
                        Timeout,
                        "no reply from cluster {} in time",
                        self.remote_cluster_id
                    ));
                }
                // Bounded steps: a link torn down meanwhile is noticed.
                let step = (deadline - now).min(Duration::from_millis(100));
                c = self
                    .call_cv
                    .wait_timeout(c, step)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            },
        };
        c.awaiting = None;
        out
    }

    /// Fails if the link is closed or being torn down (dead: `LLM_LINK_FAILED`
    /// with the reason).
    pub fn check_open(&self) -> Result<()> {
        if self.is_dead() {
            return Err(self.dead_error());
        }
        if self.is_closed() {
            bail!(
                NotYetLink,
                "link to cluster {} is closed",
                self.remote_cluster_id
            );
        }
        Ok(())
    }

    /// The peer's cache table, if fetched.
    pub fn cached_table(&self) -> Option<Arc<PeerTable>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stores the peer's cache table (fetched once per link).
    pub fn set_table(&self, t: Arc<PeerTable>) {
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }

    /// Counts a transfer in flight until the guard drops; fails if the link
    /// is closed, dead or draining.
    pub fn begin(self: &Arc<Self>) -> Result<InflightGuard> {
        // Counted first, the flags read after, all SeqCst: a teardown or
        // drain stores its flag and then reads the count (`wait_idle`), so
        // either it sees this transfer and waits for it, or this transfer
        // sees the flag and fails (its guard uncounts it). No lock is taken.
        self.inflight.own.fetch_add(1, Ordering::SeqCst);
        let guard = InflightGuard {
            link: self.clone(),
            serving: false,
        };
        if self.is_dead() {
            return Err(self.dead_error());
        }
        if self.closed.load(Ordering::SeqCst) {
            bail!(
                NotYetLink,
                "link to cluster {} is closed",
                self.remote_cluster_id
            );
        }
        if self.draining.load(Ordering::SeqCst) {
            bail!(
                NotYetLink,
                "link to cluster {} is being unlinked",
                self.remote_cluster_id
            );
        }
        Ok(guard)
    }

    /// Transfers this side started that are in flight now.
    pub fn in_flight(&self) -> usize {
        self.inflight.own.load(Ordering::SeqCst)
    }

    /// Counts a request this side is serving (a non-forced unlink waits for
    /// it; teardown does not).
    pub fn serving(self: &Arc<Self>) -> InflightGuard {
        self.inflight.serving.fetch_add(1, Ordering::SeqCst);
        InflightGuard {
            link: self.clone(),
            serving: true,
        }
    }

    /// Marks the link closed, waits up to `wait` for this side's transfers in
    /// flight, then shuts every socket down (waking the threads serving them).
    pub fn teardown(&self, wait: Duration) {
        // SeqCst, as the counts: see `Link::begin`.
        self.closed.store(true, Ordering::SeqCst);
        let left = self.wait_idle(wait, false);
        if left > 0 {
            crate::log_warn!(
                "tearing down link to cluster {} with {left} transfer(s) still in flight",
                self.remote_cluster_id
            );
        }
        let sockets: Vec<_> = self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for s in sockets.iter().filter_map(Weak::upgrade) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        if let Some(c) = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            c.shutdown();
        }
        self.conn_cv.notify_all();
        self.call_cv.notify_all();
        if let Some(p) = self.data_path() {
            p.close();
        }
    }
}

/// The request a side awaits on its control connection.
#[derive(Default)]
struct Call {
    /// Tag of the last request sent (never 0: untagged frames answer none).
    seq: u32,
    awaiting: Option<u32>,
    reply: Option<Msg>,
}

impl crate::transport::poller::Tick for Link {
    /// Closes the request connections this client has not used for
    /// [`DATA_IDLE_CLOSE`] (the next transfer opens what it needs again).
    fn tick(&self, now: Instant) -> bool {
        if self.is_closed() {
            return false;
        }
        let limit = data_idle_close();
        let closed: Vec<Conn> = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            let mut i = 0;
            while i < idle.len() {
                if now.saturating_duration_since(idle[i].1) >= limit {
                    out.push(idle.swap_remove(i).0);
                } else {
                    i += 1;
                }
            }
            out
        };
        if !closed.is_empty() {
            self.conns.fetch_sub(closed.len(), Ordering::AcqRel);
            crate::log_debug!(
                "link to cluster {}: closed {} idle connection(s)",
                self.remote_cluster_id,
                closed.len()
            );
            for c in closed {
                c.shutdown();
            }
            self.conn_cv.notify_all();
        }
        true
    }
}

/// A TCP link to cluster 2 from cluster 1 with no connection yet, for unit
/// tests; `we_dialed`: this side is its client.
#[cfg(test)]
pub(crate) fn test_link(we_dialed: bool, conn: ConnOpts) -> Arc<Link> {
    Arc::new(Link::new(LinkParts {
        remote_cluster_id: 2,
        remote_role: 0,
        token: 1,
        we_dialed,
        remote_addr: SocketAddr::from(([127, 0, 0, 1], 1)),
        path: None,
        generation: 0,
        local_cluster_id: 1,
        comm_id: 0,
        conn,
    }))
}

/// Transfers a link side started, and requests it is serving: atomic
/// counts, so a transfer's start and end take no lock (they are the hot
/// path); the lock only pairs waiters with their wake-up.
#[derive(Default)]
struct InFlight {
    own: AtomicUsize,
    serving: AtomicUsize,
    /// Threads in `wait_idle`: a guard that takes a count to zero wakes
    /// them, and only when there are any (a notify is a system call).
    waiters: AtomicUsize,
    /// Held by a waiter from its check of the counts until it waits, and by
    /// a guard that notifies, so no wake-up falls between the two.
    lock: Mutex<()>,
}

/// Keeps a transfer (or a served request) counted as in flight.
pub struct InflightGuard {
    link: Arc<Link>,
    serving: bool,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let f = &self.link.inflight;
        let c = if self.serving { &f.serving } else { &f.own };
        // SeqCst: see `Link::wait_idle`.
        if c.fetch_sub(1, Ordering::SeqCst) == 1 && f.waiters.load(Ordering::SeqCst) > 0 {
            let _g = f.lock.lock().unwrap_or_else(|p| p.into_inner());
            self.link.idle_cv.notify_all();
        }
    }
}

/// Sends a request and returns the reply: on the control connection for a
/// link without data connections ([`Link::requests_on_control`]), else on a
/// pooled connection.
pub fn request(link: &Arc<Link>, msg: &Msg, deadline: Instant) -> Result<Msg> {
    if link.requests_on_control() {
        link.check_open()?;
        return link.control_request(msg, deadline);
    }
    let mut g = link.take_conn(deadline)?;
    let c = g.conn();
    c.send(msg, Some(deadline))?;
    c.recv(Some(deadline)).map_err(|e| {
        if e.status == crate::Status::Timeout {
            err!(
                Timeout,
                "no reply from cluster {} in time",
                link.remote_cluster_id
            )
        } else {
            e
        }
    })
}

#[cfg(test)]
mod inflight_tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    const OPTS: ConnOpts = ConnOpts {
        spin: Duration::ZERO,
        dead_peer: Duration::ZERO,
    };

    #[test]
    fn a_peer_table_checks_each_entry_once_and_lends_its_view() {
        let entry = |cache_id: i64, kind: u8| CacheEntry {
            cache_id,
            kind,
            placement: 0,
            data_type: 0,
            shape: vec![4, 8],
            tensor_bytes: 4096,
            addrs: vec![0x1000, 0x9000],
            req_keys: Vec::new(),
            blocks_model: None,
        };
        let t = PeerTable::new(vec![entry(1, 1), entry(2, 9)]);
        assert_eq!(t.len(), 2);
        assert_eq!(t[1].cache_id, 2);
        let v = t.view(0).unwrap().unwrap();
        assert_eq!(*v, entry(1, 1).view().unwrap());
        assert_eq!(
            (v.addrs.as_slice(), v.dim0, v.tensor_bytes),
            (&[0x1000, 0x9000][..], 4, 4096)
        );
        // Lent: the same view each time.
        assert!(std::ptr::eq(v, t.view(0).unwrap().unwrap()));
        let e = t.view(1).unwrap().unwrap_err();
        assert_eq!(e.status, crate::Status::LinkFailed);
        assert!(e.message.contains("peer sent cache kind 9"), "{e}");
        assert!(t.view(2).is_none());
    }

    #[test]
    fn teardown_waits_for_a_transfer_in_flight_and_refuses_new_ones() {
        let link = test_link(true, OPTS);
        let g = link.begin().unwrap();
        assert_eq!(link.in_flight(), 1);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            drop(g);
        });
        let t0 = Instant::now();
        link.teardown(Duration::from_secs(10));
        let waited = t0.elapsed();
        t.join().unwrap();
        assert!(waited >= Duration::from_millis(40), "{waited:?}");
        // Woken by the guard, not by the timeout.
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(link.in_flight(), 0);
        let e = link.begin().err().expect("a closed link refuses transfers");
        assert!(e.message.contains("is closed"), "{e}");
        assert_eq!(link.in_flight(), 0, "a refused transfer is not counted");
    }

    #[test]
    fn a_drain_racing_transfers_never_misses_one_nor_a_wake_up() {
        let link = test_link(true, OPTS);
        let stop = Arc::new(AtomicBool::new(false));
        let busy: Vec<_> = (0..3)
            .map(|_| {
                let (link, stop) = (link.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(g) = link.begin() {
                            // Held a moment, so that drains often wait.
                            let t = Instant::now();
                            while t.elapsed() < Duration::from_micros(200) {
                                std::hint::spin_loop();
                            }
                            drop(g);
                        }
                        std::thread::yield_now();
                    }
                })
            })
            .collect();
        for _ in 0..200 {
            let t0 = Instant::now();
            assert!(link.drain(Duration::from_secs(5)), "transfers left");
            assert!(t0.elapsed() < Duration::from_secs(2), "a lost wake-up");
            assert!(link.begin().is_err());
            link.undrain();
            // Let transfers begin, so that the next drain has some to wait for.
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.store(true, Ordering::Relaxed);
        for t in busy {
            t.join().unwrap();
        }
        assert_eq!(link.in_flight(), 0);
        let _served = link.serving();
        assert!(
            !link.drain(Duration::from_millis(20)),
            "a served request counts"
        );
    }
}
