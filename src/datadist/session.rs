//! One initialised lifetime of an instance (init … finalize): the
//! composition of its owners (configuration, registry, pools, link table,
//! comms, listeners, link_clusters attempts, tasks, inbox, and the runtime of
//! threads and control-plane use), their shared calls, and finalize, which
//! tears all of it down and joins every thread. The dialling side of link
//! setup is in `session/client.rs`, the serving side in `session/server.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::backend::{Capabilities, Device};
use crate::cache::registry::Registry;
use crate::datadist::attempts::Attempts;
use crate::datadist::comm::Comms;
use crate::datadist::link_table::LinkTable;
use crate::datadist::listener::Listeners;
use crate::datadist::notify::Inbox;
use crate::datadist::options::Config;
use crate::datadist::runtime::Runtime;
use crate::device::pool::Pool;
use crate::err;
use crate::status::{Error, Result};
use crate::transfer::link::Link;
use crate::transfer::serve::ServedCount;
use crate::transfer::task::TaskSet;
use crate::transport::poller;

mod client;
mod server;

/// Server-side concurrent link setups (seed 004).
const MAX_CONCURRENT_SETUPS: usize = 16;

/// The initialised state of an instance.
///
/// A composition of owners (docs/architecture.md, "Who owns what in
/// `Session`"). `config`, `device_pool` and `tasks` are public for the
/// integration tests; the rest is the crate's.
pub struct Session {
    /// This instance's cluster id.
    pub(crate) cluster_id: u64,
    /// The instance's role (prompt / decoder / mix), shared with it.
    pub(crate) role: Arc<AtomicU32>,
    /// The init options.
    pub config: Config,
    /// The backend chosen at init (`llmdd.Backend`).
    pub(crate) backend: Arc<dyn Device>,
    /// Registered and allocated caches.
    pub(crate) registry: Registry,
    /// The device memory pool (`llm.MemPoolConfig`), if configured.
    pub device_pool: Option<Arc<Pool>>,
    /// The host memory pool (`llm.HostMemPoolConfig`), if configured.
    pub(crate) host_pool: Option<Arc<Pool>>,
    /// The link table (`link_table.rs`).
    links: LinkTable,
    /// Listening endpoints, admission, accepted connections in their handshake.
    listeners: Listeners,
    /// Threads, control-plane use, served connections, copy helpers.
    runtime: Runtime,
    /// Rank-table comms (`comm.rs`). Lock order: comms, then a comm's state,
    /// then `links`; `comms` before `listeners`.
    comms: Mutex<Comms>,
    /// Comm id counter of the instance (ids are never reused by an instance).
    comm_ids: Arc<AtomicU64>,
    /// Layer-wise async tasks (transfer_cache_async), cancelled at finalize.
    pub tasks: TaskSet,
    /// link_clusters attempts under way or failed (`attempts.rs`).
    attempts: Attempts,
    /// Notifications received from peers (enabled by a transfer engine).
    pub(crate) inbox: Inbox,
    me: Weak<Session>,
}

impl Session {
    /// Builds the session on `backend`: pools, then the listener if configured.
    pub fn start(
        cluster_id: u64,
        role: Arc<AtomicU32>,
        comm_ids: Arc<AtomicU64>,
        config: Config,
        backend: Arc<dyn Device>,
    ) -> Result<Arc<Session>> {
        let mk_pool = |name: &str, placement, p: Option<crate::device::PoolConfig>| {
            p.map(|p| backend.create_pool(name, placement, p))
                .transpose()
        };
        use crate::cache::types::Placement;
        let device_pool = mk_pool("llmdd-device-pool", Placement::Device, config.device_pool)?;
        let host_pool = mk_pool("llmdd-host-pool", Placement::Host, config.host_pool)?;
        let listen = config.listen;
        let registry = Registry::with_limit(config.max_registered_addrs as usize);
        let listeners = Listeners::new(config.net.max_conns_per_peer, MAX_CONCURRENT_SETUPS);
        let attempts = Attempts::new(config.max_links as usize);
        let s = Arc::new_cyclic(|me| Session {
            cluster_id,
            role,
            config,
            backend,
            registry,
            device_pool,
            host_pool,
            links: LinkTable::default(),
            listeners,
            runtime: Runtime::new(),
            comms: Mutex::new(Comms::default()),
            comm_ids,
            tasks: TaskSet::default(),
            attempts,
            inbox: Inbox::default(),
            me: me.clone(),
        });
        if let Some(addr) = listen {
            s.listen(addr)?;
        }
        Ok(s)
    }

    /// The process's control plane, started if this session is its first user.
    pub(crate) fn reactor(&self) -> Result<Arc<poller::Handle>> {
        self.runtime.reactor()
    }

    /// The count of this session's served connections (`transfer::serve`).
    pub(crate) fn served_count(&self) -> &Arc<ServedCount> {
        self.runtime.served()
    }

    /// What the session's backend can do.
    pub fn caps(&self) -> Capabilities {
        self.backend.capabilities()
    }

    /// The backend the session runs on.
    pub fn device(&self) -> &dyn Device {
        &*self.backend
    }

    pub(crate) fn arc(&self) -> Arc<Session> {
        self.me.upgrade().expect("session alive while in use")
    }

    /// Open connections from `ip` to this instance's listeners.
    pub fn peer_conns(&self, ip: IpAddr) -> usize {
        self.listeners.admission().peer_conns(ip)
    }

    /// True once finalize has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.runtime.is_closing()
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
        self.listeners.addr()
    }

    /// Spawns a tracked thread (joined at finalize), reporting failure.
    pub(crate) fn try_spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.runtime.try_spawn(name, f)
    }

    /// The link transfers to `cluster_id` use, if any: the one this side
    /// dialled while it is open, else the one it accepted (both ends may
    /// link to each other; see `link_table.rs`).
    pub fn link(&self, cluster_id: u64) -> Option<Arc<Link>> {
        self.links.get(cluster_id)
    }

    /// The link this side dialled to `cluster_id` (`we_dialed`), or the one
    /// it accepted from it.
    pub(crate) fn link_dir(&self, cluster_id: u64, we_dialed: bool) -> Option<Arc<Link>> {
        self.links.get_dir(cluster_id, we_dialed)
    }

    /// The cluster ids of the links in the table (each once).
    pub fn link_ids(&self) -> Vec<u64> {
        self.links.clusters()
    }

    /// The link_clusters attempts (`link_state.rs`).
    pub(crate) fn attempts(&self) -> &Attempts {
        &self.attempts
    }

    /// Number of live links (a pair linked both ways counts two).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Adds `link` to the table; an open link to the same cluster in the same
    /// direction is `LLM_ALREADY_LINK` (a closed one is replaced).
    pub(crate) fn insert_link(&self, link: Arc<Link>) -> Result<()> {
        let c = link.remote_cluster_id;
        self.links.insert(link)?;
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
        self.links.remove_exact(link)
    }

    /// Drops the local side of every link to `cluster_id` (force unlink):
    /// the one this side dialled and the one it accepted.
    pub fn drop_link(&self, cluster_id: u64, wait: Duration) -> bool {
        let links = self.links.remove_cluster(cluster_id);
        let any = !links.is_empty();
        for l in links {
            l.teardown(wait);
        }
        any
    }

    // -------------------------------------------------------------- finalize

    /// Tears everything down: async tasks, listener, links, threads, caches, pools.
    pub fn shutdown(&self) {
        self.runtime.begin_close();
        // No new layer or callback from here on; in-flight layers finish (or
        // fail once their link is torn down below).
        self.tasks.cancel_all();
        self.comm_unlink_all(self.config.sync_kv_timeout);
        self.listeners.stop_all();
        let links: Vec<Arc<Link>> = self.links.drain();
        for l in links {
            l.teardown(self.config.sync_kv_timeout);
        }
        self.listeners.shut_pending();
        self.tasks.join_all();
        // Every served connection was shut down above: the poller sees each
        // end within moments, and a request still being handled fails its
        // I/O. None may touch this session's memory after finalize.
        self.runtime
            .stop(self.config.net.io_timeout + Duration::from_secs(5));
        self.registry.clear();
        self.backend.release();
        // The last session of the process joins the copy helpers.
        self.runtime.release_copy_helpers();
    }
}
