//! One initialised lifetime of an instance (init … finalize): the
//! composition of its owners (configuration, registry, pools, link table,
//! comms, listeners, link_clusters attempts, tasks, inbox, and the runtime of
//! threads and control-plane use), their shared calls, and finalize, which
//! tears all of it down and joins every thread. The instance's part of link
//! setup is in `session/client.rs` (the checks before a dial, unlink) and
//! `session/server.rs` (listeners, stale links); the handshake's steps are
//! the engine's (`transfer::handshake`), asking the instance through
//! `LinkHost` (`datadist/link_host.rs`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::backend::{Capabilities, Device};
use crate::cache::registry::Registry;
use crate::datadist::attempts::Attempts;
use crate::datadist::cache_ops::CacheOps;
use crate::datadist::comm::{Comm, CommOps, Comms};
use crate::datadist::link_table::LinkTable;
use crate::datadist::notify::Inbox;
use crate::datadist::options::Config;
use crate::datadist::peers::Peers;
use crate::datadist::pools::Pools;
use crate::datadist::runtime::Runtime;
use crate::device::pool::Pool;
use crate::status::Result;
use crate::transfer::link::Link;
use crate::transfer::listener::Listeners;
use crate::transfer::serve::ServedCount;
use crate::transfer::task::TaskSet;
use crate::transport::poller;

mod client;
mod comm_host;
mod server;

/// Server-side concurrent link setups (seed 004).
const MAX_CONCURRENT_SETUPS: usize = 16;

/// The initialised state of an instance.
///
/// A composition of owners (docs/architecture.md, "Who owns what in
/// `Session`"), each behind its own type; the fields are the crate's, and
/// the integration tests read them through accessors.
pub struct Session {
    /// This instance's cluster id.
    pub(crate) cluster_id: u64,
    /// The instance's role (prompt / decoder / mix), shared with it.
    pub(crate) role: Arc<AtomicU32>,
    /// The init options.
    pub(crate) config: Config,
    /// The backend chosen at init (`llmdd.Backend`).
    pub(crate) backend: Arc<dyn Device>,
    /// Registered and allocated caches.
    pub(crate) registry: Registry,
    /// The memory pools (`llm.MemPoolConfig`, `llm.HostMemPoolConfig`).
    pub(crate) pools: Pools,
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
    tasks: TaskSet,
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
        let pools = Pools::create(&*backend, config.device_pool, config.host_pool)?;
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
            pools,
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

    /// The cache operations (registration, pools, pull/push/copy, async
    /// transfers) over this session's owners.
    pub fn caches(&self) -> CacheOps<'_> {
        CacheOps {
            config: &self.config,
            registry: &self.registry,
            pools: &self.pools,
            backend: &*self.backend,
            peers: self.peers(),
            tasks: &self.tasks,
        }
    }

    /// The rank-table comm flows over this session's owners.
    pub(crate) fn comm_ops(&self) -> CommOps<'_> {
        CommOps {
            cluster_id: self.cluster_id,
            config: &self.config,
            comms: &self.comms,
            comm_ids: &self.comm_ids,
            links: &self.links,
            attempts: &self.attempts,
            backend: &*self.backend,
            host: self,
        }
    }

    /// Number of comms (any status).
    pub fn comm_count(&self) -> usize {
        self.comms().len()
    }

    /// Comm setups running and queued (for tests and logs).
    pub fn comm_setups(&self) -> (usize, usize) {
        self.comms().setups()
    }

    /// The comm that reserves `cluster_id`, if any.
    pub fn comm_of(&self, cluster_id: u64) -> Option<Arc<Comm>> {
        self.comms().of_cluster(cluster_id).cloned()
    }

    /// The links transfers may use, with the reasons of refusals.
    pub(crate) fn peers(&self) -> Peers<'_> {
        Peers {
            cluster_id: self.cluster_id,
            links: &self.links,
            comms: &self.comms,
        }
    }

    /// The init options.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The device memory pool (`llm.MemPoolConfig`), if configured.
    pub fn device_pool(&self) -> Option<&Arc<Pool>> {
        self.pools.device()
    }

    /// The layer-wise async tasks.
    pub fn tasks(&self) -> &TaskSet {
        &self.tasks
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

    /// The instance's listeners (`transfer::listener`).
    pub(crate) fn listeners(&self) -> &Listeners {
        &self.listeners
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
        self.comm_ops().unlink_all(self.config.sync_kv_timeout);
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
