//! A link to one remote cluster: its TCP connections, the one-sided local path
//! when the peer shares this host, the peer's cache table (remote-accessible
//! mode), and in-flight accounting so unlink/finalize can wait for transfers.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use crate::cache::pool::PeerMapping;
use crate::status::Result;
use crate::transfer::hccl_path::HcclLink;
use crate::transport::local::LocalPath;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::tcp::{check_reply, Conn};
use crate::transport::wire::{CacheEntry, Msg};
use crate::{bail, err};

/// Most connections a client opens for its own requests on one link.
pub const MAX_FORWARD_CONNS: usize = 8;

/// One link (either side).
pub struct Link {
    pub remote_cluster_id: u64,
    pub remote_role: u32,
    /// Shared secret attaching extra connections to this link.
    pub token: u64,
    /// True on the side that dialed (the client).
    pub we_dialed: bool,
    /// The server endpoint (client side), for opening more connections.
    pub remote_addr: SocketAddr,
    /// One-sided path to the peer's memory, if it proved it shares this
    /// process or host.
    pub local_path: Option<LocalPath>,
    /// The peer's memory pools mapped here (same host). Copies hold the read
    /// lock; a dead peer's mappings are dropped under the write lock.
    peer_pools: RwLock<Vec<PeerMapping>>,
    /// The peer died (same-host pidfd readable) or closed the control
    /// connection of a one-sided link: transfers fail, no byte moves.
    dead: AtomicBool,
    /// Registry generation when the link was created.
    pub generation: u64,
    /// Our cluster id (sent when attaching connections).
    pub local_cluster_id: u64,
    /// Rank-table comm this link belongs to (`llmdd_link`); 0 = link_clusters.
    pub comm_id: u64,
    /// Transfers may use the link. A comm's links become ready when the whole
    /// comm is linked (status OK); link_clusters links are ready at once.
    ready: AtomicBool,
    spin: Duration,
    /// Connections on which this side sends requests.
    idle: Mutex<Vec<Conn>>,
    conns: AtomicUsize,
    conn_cv: Condvar,
    /// Clones of every socket of this link, shut down at teardown.
    sockets: Mutex<Vec<TcpStream>>,
    table: Mutex<Option<Arc<Vec<CacheEntry>>>>,
    inflight: Mutex<usize>,
    idle_cv: Condvar,
    closed: AtomicBool,
    /// The HCCL data path (acl backend), set once during link setup.
    hccl: OnceLock<Arc<HcclLink>>,
}

/// Parameters for building a link.
pub struct LinkParts {
    pub remote_cluster_id: u64,
    pub remote_role: u32,
    pub token: u64,
    pub we_dialed: bool,
    pub remote_addr: SocketAddr,
    pub local_path: Option<LocalPath>,
    pub peer_pools: Vec<PeerMapping>,
    pub generation: u64,
    pub local_cluster_id: u64,
    pub comm_id: u64,
    pub spin: Duration,
}

impl Link {
    /// Creates a link with no connections yet.
    pub fn new(p: LinkParts) -> Link {
        Link {
            remote_cluster_id: p.remote_cluster_id,
            remote_role: p.remote_role,
            token: p.token,
            we_dialed: p.we_dialed,
            remote_addr: p.remote_addr,
            local_path: p.local_path,
            peer_pools: RwLock::new(p.peer_pools),
            dead: AtomicBool::new(false),
            generation: p.generation,
            local_cluster_id: p.local_cluster_id,
            comm_id: p.comm_id,
            ready: AtomicBool::new(p.comm_id == 0),
            spin: p.spin,
            idle: Mutex::new(Vec::new()),
            conns: AtomicUsize::new(0),
            conn_cv: Condvar::new(),
            sockets: Mutex::new(Vec::new()),
            table: Mutex::new(None),
            inflight: Mutex::new(0),
            idle_cv: Condvar::new(),
            closed: AtomicBool::new(false),
            hccl: OnceLock::new(),
        }
    }

    /// The HCCL data path, if this link moves bytes over HCCL (acl backend).
    pub fn hccl(&self) -> Option<&Arc<HcclLink>> {
        self.hccl.get()
    }

    /// Makes this link move bytes over `h` (once, during link setup).
    pub fn set_hccl(&self, h: Arc<HcclLink>) {
        if let Err(h) = self.hccl.set(h) {
            h.close();
        }
    }

    /// True once torn down.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True once the peer of a one-sided link is known gone ([`Link::mark_dead`]).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// The peer process of a same-host link.
    pub fn peer_process(&self) -> Option<&PeerProcess> {
        match &self.local_path {
            Some(LocalPath::SameHost(p)) => Some(p),
            _ => None,
        }
    }

    /// Marks the link dead (`why`: what was seen): from now on transfers
    /// return `LLM_LINK_FAILED` before moving a byte, and the peer's pool
    /// mappings are dropped (once copies using them have returned).
    pub fn mark_dead(&self, why: &str) {
        if self.dead.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.is_closed() {
            // Torn down here already: nothing to report.
        } else if let Some(p) = self.peer_process().filter(|p| !p.is_alive()) {
            crate::log_warn!(
                "link to cluster {} is dead: its peer process {} exited; its transfers now fail (unlink it)",
                self.remote_cluster_id,
                p.pid()
            );
        } else {
            // The peer unlinked or finalized: routine.
            crate::log_info!(
                "link to cluster {} ended: {why}; its transfers now fail (unlink it)",
                self.remote_cluster_id
            );
        }
        let dropped =
            std::mem::take(&mut *self.peer_pools.write().unwrap_or_else(|p| p.into_inner()));
        drop(dropped);
    }

    /// The error of a transfer over a dead link.
    pub fn dead_error(&self) -> crate::Error {
        let who = match self.peer_process() {
            Some(p) => format!("process {}", p.pid()),
            None => "instance".to_string(),
        };
        err!(
            LinkFailed,
            "the peer {who} of the link to cluster {} is gone; unlink it (force) and link again",
            self.remote_cluster_id
        )
    }

    /// The peer's mapped pools, held for the duration of a copy.
    pub fn pools(&self) -> RwLockReadGuard<'_, Vec<PeerMapping>> {
        self.peer_pools.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs the peer's mapped pools (server side, once the client sent them).
    pub fn set_pools(&self, maps: Vec<PeerMapping>) {
        let mut g = self.peer_pools.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock: `mark_dead` sets the flag before taking it.
        if !self.is_dead() {
            *g = maps;
        }
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
        if let Ok(s) = conn.shutdown_handle() {
            self.sockets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(s);
        }
        if self.is_closed() {
            conn.shutdown();
        }
    }

    /// Adds a connection on which this side sends requests.
    pub fn add_request_conn(&self, conn: Conn) {
        self.track(&conn);
        self.conns.fetch_add(1, Ordering::AcqRel);
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
        self.conn_cv.notify_one();
    }

    /// Opens one more request connection to the server (client side only).
    fn open_forward(&self, deadline: Instant) -> Result<Conn> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut c = Conn::connect(&self.remote_addr, left, self.spin)?;
        c.send(
            &Msg::Attach {
                cluster_id: self.local_cluster_id,
                link_token: self.token,
                reverse: false,
            },
            Some(deadline),
        )?;
        match c.recv(Some(deadline))? {
            Msg::Reply { status, message } => {
                check_reply(status, &message, "attaching a connection")?
            }
            m => bail!(LinkFailed, "unexpected reply {} to Attach", m.msg_type()),
        }
        self.track(&c);
        Ok(c)
    }

    /// Takes a connection for one request, opening a new one (client) when all
    /// are busy, else waiting until `deadline`.
    pub fn take_conn(self: &Arc<Self>, deadline: Instant) -> Result<ConnGuard> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if self.is_closed() {
                bail!(
                    NotYetLink,
                    "link to cluster {} is closed",
                    self.remote_cluster_id
                );
            }
            if let Some(c) = idle.pop() {
                return Ok(ConnGuard {
                    link: self.clone(),
                    conn: Some(c),
                });
            }
            let n = self.conns.load(Ordering::Acquire);
            if self.we_dialed && n < MAX_FORWARD_CONNS {
                self.conns.fetch_add(1, Ordering::AcqRel);
                drop(idle);
                return match self.open_forward(deadline) {
                    Ok(c) => Ok(ConnGuard {
                        link: self.clone(),
                        conn: Some(c),
                    }),
                    Err(e) => {
                        self.conns.fetch_sub(1, Ordering::AcqRel);
                        self.conn_cv.notify_one();
                        Err(e)
                    }
                };
            }
            if n == 0 {
                bail!(
                    LinkFailed,
                    "link to cluster {} has no usable connection left; unlink and link again",
                    self.remote_cluster_id
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    Timeout,
                    "all connections to cluster {} stayed busy",
                    self.remote_cluster_id
                );
            }
            idle = self
                .conn_cv
                .wait_timeout(idle, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Takes up to `n` connections for a striped transfer (at least one).
    pub fn take_conns(self: &Arc<Self>, n: usize, deadline: Instant) -> Result<Vec<ConnGuard>> {
        let mut v = vec![self.take_conn(deadline)?];
        while v.len() < n {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = idle.pop() {
                v.push(ConnGuard {
                    link: self.clone(),
                    conn: Some(c),
                });
                continue;
            }
            let can_open = self.we_dialed && self.conns.load(Ordering::Acquire) < MAX_FORWARD_CONNS;
            drop(idle);
            if !can_open {
                break;
            }
            match self.take_conn(deadline) {
                Ok(c) => v.push(c),
                Err(_) => break,
            }
        }
        Ok(v)
    }

    /// The peer's cache table, if fetched.
    pub fn cached_table(&self) -> Option<Arc<Vec<CacheEntry>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stores the peer's cache table (fetched once per link).
    pub fn set_table(&self, t: Arc<Vec<CacheEntry>>) {
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }

    /// Counts a transfer in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> Result<InflightGuard> {
        let mut n = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_closed() {
            bail!(
                NotYetLink,
                "link to cluster {} is being torn down",
                self.remote_cluster_id
            );
        }
        *n += 1;
        Ok(InflightGuard { link: self.clone() })
    }

    /// Marks the link closed, waits up to `wait` for in-flight transfers, then
    /// shuts every socket down (waking the threads serving them).
    pub fn teardown(&self, wait: Duration) {
        {
            let mut n = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            self.closed.store(true, Ordering::Release);
            let until = Instant::now() + wait;
            while *n > 0 {
                let now = Instant::now();
                if now >= until {
                    crate::log_warn!(
                        "tearing down link to cluster {} with {} transfer(s) still in flight",
                        self.remote_cluster_id,
                        *n
                    );
                    break;
                }
                n = self
                    .idle_cv
                    .wait_timeout(n, until - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.conn_cv.notify_all();
        if let Some(h) = self.hccl.get() {
            h.close();
        }
    }
}

/// A borrowed request connection; returned to the link on drop unless broken.
pub struct ConnGuard {
    link: Arc<Link>,
    conn: Option<Conn>,
}

impl ConnGuard {
    /// The connection.
    pub fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("conn present until drop")
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if c.is_broken() || self.link.is_closed() {
                c.shutdown();
                self.link.conns.fetch_sub(1, Ordering::AcqRel);
            } else {
                self.link
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(c);
            }
            self.link.conn_cv.notify_one();
        }
    }
}

/// Keeps a transfer counted as in flight.
pub struct InflightGuard {
    link: Arc<Link>,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut n = self.link.inflight.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.link.idle_cv.notify_all();
        }
    }
}

/// Sends a request on a pooled connection and returns the reply.
pub fn request(link: &Arc<Link>, msg: &Msg, deadline: Instant) -> Result<Msg> {
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
