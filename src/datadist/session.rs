//! One initialised lifetime of an instance (init … finalize): configuration,
//! registry, pools, link table, the listening endpoint and every thread the
//! instance runs. Finalize tears all of it down and joins every thread.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cache::registry::Registry;
use crate::datadist::acl_link::{self, LinkIds};
use crate::datadist::admission::Admission;
use crate::datadist::attempts::Attempts;
use crate::datadist::comm::Comms;
use crate::datadist::link_table::LinkTable;
use crate::datadist::listener::{Listener, Slots};
use crate::datadist::liveness;
use crate::datadist::notify::Inbox;
use crate::datadist::options::Config;
use crate::device::acl_backend::AclBackend;
use crate::device::pool::Pool;
use crate::device::Backend;
use crate::status::{Error, Result, Status};
use crate::transfer::link::{Link, LinkParts};
use crate::transfer::serve::{serve, ServedCount};
use crate::transfer::task::TaskSet;
use crate::transport::local;
use crate::transport::poller;
use crate::transport::tcp::{check_reply, Conn};
use crate::transport::wire::{self, Msg};
use crate::{bail, err, log_debug, log_info, log_warn};

mod client;
mod server;

/// Server-side concurrent link setups (seed 004).
const MAX_CONCURRENT_SETUPS: usize = 16;

/// The initialised state of an instance.
pub struct Session {
    pub cluster_id: u64,
    pub role: Arc<AtomicU32>,
    pub config: Config,
    /// The backend chosen at init (`llmdd.Backend`).
    pub backend: Backend,
    pub registry: Registry,
    pub device_pool: Option<Arc<Pool>>,
    pub host_pool: Option<Arc<Pool>>,
    links: Mutex<LinkTable>,
    listener: Mutex<Option<Listener>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Accepted sockets not yet attached to a link (weak: shut down at
    /// finalize while they live, never kept open).
    pending: Mutex<HashMap<u64, Weak<TcpStream>>>,
    /// Connection caps of the listeners (per peer address, handshakes).
    admission: Arc<Admission>,
    next_pending: AtomicU64,
    closing: AtomicBool,
    setups: Slots,
    /// Rank-table comms (`comm.rs`). Lock order: comms, then a comm's state,
    /// then `links`; `comms` before `comm_listeners` and `listener`.
    comms: Mutex<Comms>,
    /// Comm id counter of the instance (ids are never reused by an instance).
    comm_ids: Arc<AtomicU64>,
    /// Listeners bound for comms (endpoint → listener, number of comms using it).
    comm_listeners: Mutex<HashMap<SocketAddr, (Listener, usize)>>,
    /// Layer-wise async tasks (transfer_cache_async), cancelled at finalize.
    pub tasks: TaskSet,
    /// Connections of this session served by the control plane's poller;
    /// finalize waits for them to end.
    served: Arc<ServedCount>,
    /// This session's use of the process's control plane (taken on first
    /// need, released at finalize: the last user stops it).
    reactor: Mutex<Option<Arc<poller::Handle>>>,
    /// link_clusters attempts under way or failed (`attempts.rs`).
    attempts: Attempts,
    /// Notifications received from peers (enabled by a transfer engine).
    pub inbox: Inbox,
    /// Keeps the process's copy helpers alive until finalize.
    copy_helpers: Mutex<Option<crate::transport::parallel::Users>>,
    me: Weak<Session>,
}

impl Session {
    /// Builds the session on `backend`: pools, then the listener if configured.
    pub fn start(
        cluster_id: u64,
        role: Arc<AtomicU32>,
        comm_ids: Arc<AtomicU64>,
        config: Config,
        backend: Backend,
    ) -> Result<Arc<Session>> {
        let mk_pool = |name: &str,
                       placement: crate::cache::types::Placement,
                       p: Option<crate::datadist::options::PoolConfig>|
         -> Result<Option<Arc<Pool>>> {
            p.map(|p| match backend.acl() {
                Some(acl) => acl.create_pool(placement, p),
                None => Pool::new(name, p.memory_size, p.page_shift).map(Arc::new),
            })
            .transpose()
        };
        use crate::cache::types::Placement;
        let device_pool = mk_pool("llmdd-device-pool", Placement::Device, config.device_pool)?;
        let host_pool = mk_pool("llmdd-host-pool", Placement::Host, config.host_pool)?;
        let listen = config.listen;
        let registry = Registry::with_limit(config.max_registered_addrs as usize);
        let admission = Admission::new(config.net.max_conns_per_peer);
        let attempts = Attempts::new(config.max_links as usize);
        let s = Arc::new_cyclic(|me| Session {
            cluster_id,
            role,
            config,
            backend,
            registry,
            device_pool,
            host_pool,
            links: Mutex::new(LinkTable::default()),
            listener: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            admission,
            next_pending: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            setups: Slots::new(MAX_CONCURRENT_SETUPS),
            comms: Mutex::new(Comms::default()),
            comm_ids,
            comm_listeners: Mutex::new(HashMap::new()),
            tasks: TaskSet::default(),
            served: Arc::default(),
            reactor: Mutex::new(None),
            attempts,
            inbox: Inbox::default(),
            copy_helpers: Mutex::new(Some(crate::transport::parallel::Users::new())),
            me: me.clone(),
        });
        if let Some(addr) = listen {
            s.listen(addr)?;
        }
        Ok(s)
    }

    /// The process's control plane, started if this session is its first user.
    pub(crate) fn reactor(&self) -> Result<Arc<poller::Handle>> {
        let mut g = self.reactor.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = g.as_ref() {
            return Ok(h.clone());
        }
        if self.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        let h = Arc::new(poller::acquire()?);
        *g = Some(h.clone());
        Ok(h)
    }

    /// The count of this session's served connections (`transfer::serve`).
    pub(crate) fn served_count(&self) -> &Arc<ServedCount> {
        &self.served
    }

    /// The acl backend's state, if the session runs on it.
    pub fn acl(&self) -> Option<&Arc<AclBackend>> {
        self.backend.acl()
    }

    pub(crate) fn arc(&self) -> Arc<Session> {
        self.me.upgrade().expect("session alive while in use")
    }

    /// Open connections from `ip` to this instance's listeners.
    pub fn peer_conns(&self, ip: IpAddr) -> usize {
        self.admission.peer_conns(ip)
    }

    /// True once finalize has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// The comm table (see the lock order on the field).
    pub(crate) fn comms(&self) -> std::sync::MutexGuard<'_, Comms> {
        self.comms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new comm id (1, 2, … per instance).
    pub(crate) fn next_comm_id(&self) -> u64 {
        self.comm_ids.fetch_add(1, Ordering::Relaxed)
    }

    /// The endpoint this instance listens on, if it is a server.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|l| l.addr())
    }

    /// Spawns a tracked thread (joined at finalize), reporting failure.
    pub(crate) fn try_spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let mut t = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|h| !h.is_finished());
        let h = std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(256 * 1024)
            .spawn(f)
            .map_err(|e| err!(Failed, "could not spawn thread {name}: {e}"))?;
        t.push(h);
        Ok(())
    }

    /// The link transfers to `cluster_id` use, if any: the one this side
    /// dialled while it is open, else the one it accepted (both ends may
    /// link to each other; see `link_table.rs`).
    pub fn link(&self, cluster_id: u64) -> Option<Arc<Link>> {
        self.lock_links().get(cluster_id).cloned()
    }

    /// The link this side dialled to `cluster_id` (`we_dialed`), or the one
    /// it accepted from it.
    pub(crate) fn link_dir(&self, cluster_id: u64, we_dialed: bool) -> Option<Arc<Link>> {
        self.lock_links().get_dir(cluster_id, we_dialed).cloned()
    }

    /// The cluster ids of the links in the table (each once).
    pub fn link_ids(&self) -> Vec<u64> {
        self.lock_links().clusters()
    }

    /// The link_clusters attempts (`link_state.rs`).
    pub(crate) fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// Number of live links (a pair linked both ways counts two).
    pub fn link_count(&self) -> usize {
        self.lock_links().len()
    }

    fn lock_links(&self) -> std::sync::MutexGuard<'_, LinkTable> {
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `link` to the table; an open link to the same cluster in the same
    /// direction is `LLM_ALREADY_LINK` (a closed one is replaced).
    pub(crate) fn insert_link(&self, link: Arc<Link>) -> Result<()> {
        let c = link.remote_cluster_id;
        self.lock_links().insert(link)?;
        // A link supersedes a failed link_clusters to that cluster (`link_state.rs`).
        self.attempts.forget(c);
        Ok(())
    }

    /// Why there is no usable link to `cluster_id`, for a refused transfer.
    pub(crate) fn not_linked(&self, cluster_id: u64) -> Error {
        match self.comm_of(cluster_id) {
            Some(c) => c.not_ready(cluster_id),
            None => err!(NotYetLink, "no link to cluster {cluster_id}"),
        }
    }

    /// Removes `link` from the table if it is still the current one.
    pub(crate) fn remove_exact(&self, link: &Arc<Link>) -> bool {
        self.lock_links().remove_exact(link)
    }

    /// Drops the local side of every link to `cluster_id` (force unlink):
    /// the one this side dialled and the one it accepted.
    pub fn drop_link(&self, cluster_id: u64, wait: Duration) -> bool {
        let links = self.lock_links().remove_cluster(cluster_id);
        let any = !links.is_empty();
        for l in links {
            l.teardown(wait);
        }
        any
    }

    // -------------------------------------------------------------- finalize

    /// Tears everything down: async tasks, listener, links, threads, caches, pools.
    pub fn shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        // No new layer or callback from here on; in-flight layers finish (or
        // fail once their link is torn down below).
        self.tasks.cancel_all();
        self.comm_unlink_all(self.config.sync_kv_timeout);
        self.stop_listening();
        let extra: Vec<Listener> = self
            .comm_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, (l, _))| l)
            .collect();
        for l in extra {
            l.stop();
        }
        let links: Vec<Arc<Link>> = self.links.lock().unwrap_or_else(|p| p.into_inner()).drain();
        for l in links {
            l.teardown(self.config.sync_kv_timeout);
        }
        let pending: Vec<_> = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, w)| w)
            .collect();
        for s in pending.iter().filter_map(Weak::upgrade) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        self.tasks.join_all();
        // Every served connection was shut down above: the poller sees each
        // end within moments, and a request still being handled fails its
        // I/O. None may touch this session's memory after finalize.
        let bound = self.config.net.io_timeout + Duration::from_secs(5);
        if !self.served.wait_zero(bound) {
            log_warn!(
                "finalize: connections still served after {} ms",
                bound.as_millis()
            );
        }
        // The last user stops the control plane (joins its threads).
        let reactor = self
            .reactor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        drop(reactor);
        let threads: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        self.registry.clear();
        if let Some(acl) = self.acl() {
            acl.release();
        }
        // The last session of the process joins the copy helpers.
        drop(
            self.copy_helpers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
    }
}
