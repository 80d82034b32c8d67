//! One initialised lifetime of an instance (init … finalize): configuration,
//! registry, pools, link table, the listening endpoint and every thread the
//! instance runs. Finalize tears all of it down and joins every thread.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cache::registry::Registry;
use crate::datadist::acl_link::{self, LinkIds};
use crate::datadist::admission::{self, Admission, PendingSlot, SpareFd};
use crate::datadist::comm::{Comm, Comms};
use crate::datadist::handshake::{join_refusal, JoinFields, JoinRequest};
use crate::datadist::link_state::Attempts;
use crate::datadist::link_table::LinkTable;
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
use crate::transport::tcp::{check_reply, eventfd, notify, poll_fd, Conn};
use crate::transport::wire::{self, Msg};
use crate::{bail, err, log_debug, log_info, log_warn};

/// Server-side concurrent link setups (seed 004).
const MAX_CONCURRENT_SETUPS: usize = 16;
/// Bound on a peer's handshake (serving-side I/O: `llmdd.IoTimeoutMs`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a Hello for a cluster with a live link waits for that link's
/// control connection to hang up (a client that force-unlinked and links
/// again at once) before it is refused as `LLM_ALREADY_LINK`.
const STALE_LINK_GRACE: Duration = Duration::from_millis(100);
/// The least time a non-forced unlink waits for the peer's answer to
/// `Unlink`, whatever is left of its timeout: the peer answers once its serving
/// threads have seen the cut data connections, which on a loaded machine takes
/// far more than a short unlink timeout (a dead peer is noticed at once).
const UNLINK_REPLY_FLOOR: Duration = Duration::from_secs(2);

/// The listening endpoint and its accept thread.
struct Listener {
    addr: SocketAddr,
    wake: i32,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn stop(mut self) {
        notify(self.wake);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: closing our eventfd.
        unsafe { libc::close(self.wake) };
    }
}

/// A small counting semaphore.
struct Slots {
    used: Mutex<usize>,
    cv: Condvar,
}

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
    /// link_clusters attempts under way or failed (`link_state.rs`).
    attempts: Mutex<Attempts>,
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
            setups: Slots {
                used: Mutex::new(0),
                cv: Condvar::new(),
            },
            comms: Mutex::new(Comms::default()),
            comm_ids,
            comm_listeners: Mutex::new(HashMap::new()),
            tasks: TaskSet::default(),
            served: Arc::default(),
            reactor: Mutex::new(None),
            attempts: Mutex::new(Attempts::default()),
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
            .map(|l| l.addr)
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

    /// Binds `addr` and starts its accept thread. `comm_only`: a listener
    /// bound for rank-table comms, which refuses link_clusters handshakes
    /// (only `llm.ListenIpInfo` makes an instance a server).
    fn bind_listener(&self, addr: SocketAddr, comm_only: bool) -> Result<Listener> {
        let l =
            TcpListener::bind(addr).map_err(|e| err!(Failed, "cannot listen on {addr}: {e}"))?;
        l.set_nonblocking(true)
            .map_err(|e| err!(Failed, "cannot configure listener: {e}"))?;
        let bound = l.local_addr().unwrap_or(addr);
        let wake = eventfd()?;
        let me = self.me.clone();
        let thread = std::thread::Builder::new()
            .name("llmdd-accept".into())
            .spawn(move || accept_loop(me, l, wake, comm_only));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: closing our eventfd.
                unsafe { libc::close(wake) };
                bail!(Failed, "cannot start accept thread: {e}");
            }
        };
        log_info!("cluster {} listening on {bound}", self.cluster_id);
        Ok(Listener {
            addr: bound,
            wake,
            thread: Some(thread),
        })
    }

    /// Starts listening on `addr` (replacing any current listener).
    pub fn listen(&self, addr: SocketAddr) -> Result<()> {
        let l = self.bind_listener(addr, false)?;
        let old = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(l);
        if let Some(o) = old {
            o.stop();
        }
        Ok(())
    }

    /// A listener on `addr` for a comm: `None` when the instance's own
    /// listener (`llm.ListenIpInfo`) already serves that endpoint, else a
    /// reference on a comm listener (bound now, or shared with another comm),
    /// released with [`Session::release_listener`].
    pub(crate) fn acquire_listener(&self, addr: SocketAddr) -> Result<Option<SocketAddr>> {
        if let Some(main) = self.listen_addr() {
            if main.port() == addr.port() && (main.ip() == addr.ip() || main.ip().is_unspecified())
            {
                return Ok(None);
            }
        }
        let mut m = self
            .comm_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = m.get_mut(&addr) {
            *n += 1;
            return Ok(Some(addr));
        }
        let l = self.bind_listener(addr, true)?;
        m.insert(addr, (l, 1));
        Ok(Some(addr))
    }

    /// Drops a comm's reference on its listener; the last one closes it.
    pub(crate) fn release_listener(&self, addr: SocketAddr) {
        let mut m = self
            .comm_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let last = match m.get_mut(&addr) {
            Some((_, n)) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        let l = if last { m.remove(&addr) } else { None };
        drop(m);
        if let Some((l, _)) = l {
            l.stop();
        }
    }

    /// Stops listening (becomes a client).
    pub fn stop_listening(&self) {
        let l = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(l) = l {
            l.stop();
        }
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
    pub(crate) fn attempts(&self) -> std::sync::MutexGuard<'_, Attempts> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
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
        self.forget_attempt(c);
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

    // ---------------------------------------------------------------- client

    /// Client side of link_clusters for one peer. `local_ip` (the cluster's
    /// local ip info) names this side's device IP on the acl backend.
    pub fn connect(
        &self,
        remote_cluster_id: u64,
        addr: SocketAddr,
        local_ip: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<()> {
        if self.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        if remote_cluster_id == self.cluster_id {
            bail!(
                ParamInvalid,
                "remote_cluster_id {remote_cluster_id} is this instance's own cluster id"
            );
        }
        self.clear_dead_link(remote_cluster_id)?;
        if let Some(c) = self.comm_of(remote_cluster_id) {
            bail!(
                AlreadyLink,
                "cluster {remote_cluster_id} is a member of rank-table comm {} (\"{}\"); unlink it first",
                c.id,
                c.name()
            );
        }
        self.dial(remote_cluster_id, addr, local_ip, timeout, None)
    }

    /// Before link_clusters to `cluster`: a live link there is
    /// `LLM_ALREADY_LINK`; one whose peer is proven gone (dead, or its control
    /// connection hung up) is dropped so that linking again just works.
    fn clear_dead_link(&self, cluster: u64) -> Result<()> {
        let Some(old) = self.link_dir(cluster, true) else {
            return Ok(());
        };
        match old.peer_gone() {
            Some(why) => {
                log_info!("replacing the dead link to cluster {cluster} ({why})");
                if self.remove_exact(&old) {
                    old.teardown(Duration::ZERO);
                }
                Ok(())
            }
            None => bail!(AlreadyLink, "a link to cluster {cluster} already exists"),
        }
    }

    /// Dials the server at `addr`: handshake, extra connections, then the
    /// link joins the table (and `comm`, for a rank-table link). For a comm,
    /// failures before the handshake is accepted (nothing listening yet, the
    /// peer has no such comm yet, no answer in time) are `LLM_NOT_YET_LINK`
    /// so the caller retries. `local_ip` names this side's device IP on the acl
    /// backend (else the control connection's local address is used).
    pub(crate) fn dial(
        &self,
        remote_cluster_id: u64,
        addr: SocketAddr,
        local_ip: Option<IpAddr>,
        timeout: Duration,
        comm: Option<&Arc<Comm>>,
    ) -> Result<()> {
        if self.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        if self.link_count() >= self.config.max_links as usize {
            bail!(
                LinkFailed,
                "this instance already has {} links (the limit)",
                self.config.max_links
            );
        }
        let retryable = |e: Error| match comm {
            Some(_) => Error::new(Status::NotYetLink, e.message),
            None => e,
        };
        let deadline = Instant::now() + timeout;
        let conn_opts = self.config.conn_opts();
        let mut control = Conn::connect(&addr, timeout, conn_opts).map_err(retryable)?;
        let generation = self.registry.generation();
        // A link_clusters link gets its own two-rank communicator (reserve our
        // device port now); a rank-table comm's links share the comm's
        // communicator, so they only announce the member's table endpoint.
        let acl_end = match (self.acl(), comm) {
            (Some(acl), None) => {
                let ip = local_ip
                    .or_else(|| control.local_addr().map(|a| a.ip()))
                    .unwrap_or(addr.ip());
                Some(acl_link::local_end(acl, ip)?)
            }
            _ => None,
        };
        let our_device = match comm {
            Some(c) => c.spec.local_member().device.clone(),
            None => acl_end.as_ref().map(|e| e.endpoint.clone()),
        };
        let fields = JoinFields {
            comm_name: comm.map(|c| c.name().to_string()).unwrap_or_default(),
            device: our_device.clone(),
        };
        let joined = self.client_handshake(
            &mut control,
            remote_cluster_id,
            addr,
            fields,
            deadline,
            &retryable,
        )?;
        acl_link::check_backends(our_device.is_some(), joined.server_device.as_ref(), false)?;
        let (remote_role, token, server_device) =
            (joined.remote_role, joined.token, joined.server_device);
        let link = Arc::new(Link::new(LinkParts {
            remote_cluster_id,
            remote_role,
            token,
            we_dialed: true,
            remote_addr: addr,
            local_path: joined.local_path,
            peer_pools: joined.peer_pools,
            generation,
            local_cluster_id: self.cluster_id,
            comm_id: comm.map_or(0, |c| c.id),
            conn: conn_opts,
        }));
        // Build the rest of the link; on failure tell the server to drop it.
        let built = (|| -> Result<()> {
            if let (Some(acl), Some(end), Some(theirs)) = (self.acl(), acl_end, &server_device) {
                let ids = LinkIds {
                    server_cluster: remote_cluster_id,
                    client_cluster: self.cluster_id,
                    token,
                };
                let h = Arc::new(acl_link::create(acl, end, theirs, false, ids, deadline)?);
                link.set_hccl(h.clone());
                acl_link::prepare(acl, &h, deadline.saturating_duration_since(Instant::now()))?;
            }
            // The control connection carries no bulk data (link.rs); it is
            // read on the poller from now on. A link whose bytes move
            // one-sidedly sends its requests there and needs nothing else.
            // Else the request connections (striping) open now so transfers
            // never pay for a connect, then the reverse connections on which
            // the server sends its requests.
            link.watch_control(&control);
            link.set_control_writer(control.writer());
            serve(self.arc(), link.clone(), control, true);
            if link.requests_on_control() {
                return Ok(());
            }
            drop(link.take_conns(self.config.data_connections as usize, deadline)?);
            // Request connections left unused close, and reopen on demand.
            let tick: std::sync::Weak<dyn poller::Tick> = Arc::downgrade(&link) as _;
            self.reactor()?.add_tick(tick);
            for _ in 0..self.config.data_connections {
                let left = deadline.saturating_duration_since(Instant::now());
                let mut c = Conn::connect(&addr, left, conn_opts)?;
                c.send(
                    &Msg::Attach {
                        cluster_id: self.cluster_id,
                        link_token: token,
                        reverse: true,
                    },
                    Some(deadline),
                )?;
                match c.recv(Some(deadline))? {
                    Msg::Reply { status, message } => {
                        check_reply(status, &message, "attaching a reverse connection")?
                    }
                    m => bail!(LinkFailed, "unexpected reply {} to Attach", m.msg_type()),
                }
                link.track(&c);
                serve(self.arc(), link.clone(), c, false);
            }
            Ok(())
        })();
        if let Err(e) = built {
            link.teardown(Duration::ZERO);
            let e = if e.status == Status::Timeout {
                err!(
                    LinkFailed,
                    "link setup with {addr} timed out after {} ms",
                    timeout.as_millis()
                )
            } else {
                e
            };
            return Err(e);
        }
        let installed = match comm {
            Some(c) => self.comm_adopt(c, &link, true),
            None => self.insert_plain_link(link.clone(), false),
        }
        // Its peer process (same host) and its control connection: the link
        // is marked dead the moment either is gone.
        .and_then(|_| liveness::watch(self.reactor()?.arc(), &link));
        if let Err(e) = installed {
            self.remove_exact(&link);
            link.teardown(Duration::ZERO);
            return Err(e);
        }
        log_info!(
            "cluster {} linked to cluster {remote_cluster_id} at {addr}",
            self.cluster_id
        );
        Ok(())
    }

    /// Adds a link_clusters link to the table unless its cluster is (now)
    /// reserved by a rank-table comm. An open link to the cluster is
    /// `LLM_ALREADY_LINK` (on the accepting side, `replace_stale_link` has
    /// already removed one whose peer is gone; a live one is never replaced,
    /// and neither is a link this side dialled: both ends may dial).
    fn insert_plain_link(&self, link: Arc<Link>, server: bool) -> Result<()> {
        let t = self.comms();
        let c = link.remote_cluster_id;
        if let Some(comm) = t.of_cluster(c) {
            bail!(
                AlreadyLink,
                "cluster {c} is a member of rank-table comm {} (\"{}\")",
                comm.id,
                comm.name()
            );
        }
        if server {
            return self.insert_link(link);
        }
        self.insert_link(link).map_err(|_| {
            err!(
                AlreadyLink,
                "a link to cluster {c} was created concurrently"
            )
        })
    }

    /// Client side of a non-forced unlink: stop new transfers and wait (up to
    /// `timeout`) for those in flight, tell the server on the control
    /// connection (it waits for what it still serves), then drop ours. A link
    /// whose server is proven gone is just dropped (nothing to tell).
    pub fn disconnect(&self, remote_cluster_id: u64, timeout: Duration) -> Result<()> {
        let Some(link) = self.link_dir(remote_cluster_id, true) else {
            return Ok(());
        };
        if let Some(why) = link.peer_gone() {
            log_info!("unlinking cluster {remote_cluster_id}, whose link is already gone ({why})");
            if self.remove_exact(&link) {
                link.teardown(Duration::ZERO);
            }
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        if !link.drain(timeout) {
            log_warn!(
                "unlinking cluster {remote_cluster_id}: transfers still in flight after {} ms are cut",
                timeout.as_millis()
            );
            link.shutdown_data();
        }
        let reply = link.control_request(
            &Msg::Unlink,
            deadline.max(Instant::now() + UNLINK_REPLY_FLOOR),
        );
        let failed = match reply {
            Ok(Msg::Reply { status: 0, .. }) => None,
            Ok(Msg::Reply { message, .. }) => Some(format!("cluster {remote_cluster_id} refused the unlink: {message}; force-unlink both ends")),
            Ok(m) => Some(format!("unexpected reply {} to Unlink", m.msg_type())),
            Err(e) => match link.peer_gone() {
                // The server dropped the link meanwhile: it is unlinked.
                Some(_) => None,
                None => Some(format!("could not reach cluster {remote_cluster_id} to unlink ({}); force-unlink both ends", e.message)),
            },
        };
        if let Some(why) = failed {
            link.undrain();
            bail!(UnlinkFailed, "{why}");
        }
        if self.remove_exact(&link) {
            link.teardown(deadline.saturating_duration_since(Instant::now()));
        }
        Ok(())
    }

    // ---------------------------------------------------------------- server

    fn acquire_setup(&self) {
        let mut u = self.setups.used.lock().unwrap_or_else(|p| p.into_inner());
        while *u >= MAX_CONCURRENT_SETUPS {
            u = self.setups.cv.wait(u).unwrap_or_else(|p| p.into_inner());
        }
        *u += 1;
    }

    fn release_setup(&self) {
        *self.setups.used.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.setups.cv.notify_one();
    }

    /// Takes an accepted connection in: admission caps (per peer address,
    /// handshakes in progress), socket options, then a thread for its first
    /// frame. Whatever cannot be taken in is refused with a reason.
    fn admit(&self, stream: TcpStream, peer: SocketAddr, comm_only: bool) {
        let (peer_slot, pending) = match self.admission.admit(peer.ip()) {
            Ok(slots) => slots,
            Err(why) => {
                // Nothing identifying goes to an unproven peer (not even
                // our cluster id): the reason alone.
                admission::refuse(&stream, Status::LinkFailed, &why);
                log_refusal(Some(peer), &format!("cluster {}: {why}", self.cluster_id));
                return;
            }
        };
        let mut conn = match Conn::new(stream, self.config.conn_opts()) {
            Ok(c) => c,
            Err(e) => {
                log_debug!("dropping connection from {peer}: {}", e.message);
                return;
            }
        };
        conn.hold(Box::new(peer_slot));
        let id = self.next_pending.fetch_add(1, Ordering::Relaxed);
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, conn.weak());
        let sock = conn.shared();
        let s = self.arc();
        let started = self.try_spawn("llmdd-conn", move || {
            s.incoming(conn, id, pending, comm_only)
        });
        if let Err(e) = started {
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
            let why = format!("the server is out of threads ({})", e.message);
            admission::refuse(&sock, Status::LinkFailed, &why);
            log_refusal(Some(peer), &format!("cluster {}: {why}", self.cluster_id));
        }
    }

    /// Handles a freshly accepted connection: handshake or attach, then serve.
    fn incoming(
        self: Arc<Self>,
        mut conn: Conn,
        pending_id: u64,
        pending: PendingSlot,
        comm_only: bool,
    ) {
        let deadline = Some(Instant::now() + HANDSHAKE_TIMEOUT);
        let first = conn.recv(deadline);
        let pending = std::cell::Cell::new(Some(pending));
        let unpend = |s: &Session| {
            s.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pending_id);
            drop(pending.take());
        };
        match first {
            Ok(Msg::Hello { auth, nonce }) => {
                let Some(d) = deadline else { return };
                // The challenge (and link authentication) runs outside the
                // setup slots: a peer that never answers holds none.
                let req = match self.server_challenge(&mut conn, auth, nonce, d) {
                    Ok(r) => r,
                    Err(e) => {
                        unpend(&self);
                        log_debug!("handshake from {} ended: {}", conn.peer(), e.message);
                        return;
                    }
                };
                let cluster_id = req.cluster_id;
                self.acquire_setup();
                let r = if comm_only && req.comm_name.is_empty() {
                    Err(err!(
                        ParamInvalid,
                        "this endpoint of cluster {} serves rank-table comms only; link_clusters needs its llm.ListenIpInfo",
                        self.cluster_id
                    ))
                } else {
                    // A fresh bound: waiting for a setup slot does not eat it.
                    self.accept_link(&mut conn, &req, Instant::now() + HANDSHAKE_TIMEOUT)
                };
                self.release_setup();
                unpend(&self);
                match r {
                    Ok(link) => serve(self, link, conn, true),
                    Err(e) => {
                        if e.status == Status::NotYetLink {
                            // A rank-table dialer that came early; it retries.
                            log_debug!(
                                "not yet accepting cluster {cluster_id} at {}: {}",
                                conn.peer(),
                                e.message
                            );
                        } else {
                            // Any peer can cause these (a forged cluster id
                            // is refused as ALREADY_LINK): rate-limited.
                            crate::log::rate::warn_refusal(format_args!(
                                "refused link from cluster {cluster_id} at {}: {}",
                                conn.peer(),
                                e.message
                            ));
                        }
                        let _ = conn.send(&join_refusal(&e), deadline);
                    }
                }
            }
            Ok(Msg::Attach {
                cluster_id,
                link_token,
                reverse,
            }) => {
                unpend(&self);
                self.attach(conn, cluster_id, link_token, reverse, deadline);
            }
            Ok(m) => {
                unpend(&self);
                let why = format!("its first frame has type {}", m.msg_type());
                log_dropped(conn.peer(), &why);
            }
            Err(e) => {
                unpend(&self);
                log_dropped(conn.peer(), &e.message);
            }
        }
    }

    /// Server side of `Attach`: one more connection of an existing link, up to
    /// `llmdd.MaxConnsPerLink` per link. `reverse`: the server sends its
    /// requests on it; else it is served like the control connection.
    fn attach(
        self: Arc<Self>,
        mut conn: Conn,
        cluster_id: u64,
        link_token: u64,
        reverse: bool,
        deadline: Option<Instant>,
    ) {
        let link = self
            .link_dir(cluster_id, false)
            .filter(|l| l.token == link_token && !l.is_closed());
        let Some(link) = link else {
            log_dropped(conn.peer(), "Attach with an unknown link token");
            let _ = conn.reply(Status::NotYetLink, "unknown link", deadline);
            return;
        };
        let max = self.config.net.max_conns_per_link;
        if !link.try_track(&conn, max as usize) {
            let why = format!(
                "cluster {}: a link may have at most {max} connections (llmdd.MaxConnsPerLink)",
                self.cluster_id
            );
            log_refusal(Some(conn.peer()), &why);
            let _ = conn.reply(Status::LinkFailed, &why, deadline);
            return;
        }
        // Counted before the peer hears it attached: the peer may send us
        // work at once, and a request then waits for this connection.
        if reverse {
            link.expect_request_conn();
        }
        if conn.reply(Status::Success, "", deadline).is_err() {
            if reverse {
                link.drop_expected_conn();
            }
            return;
        }
        if reverse {
            conn.set_frame_limit(wire::MAX_PAYLOAD);
            link.add_request_conn(conn);
            if link.comm_id != 0 {
                self.comm_peer_ready(&link);
            }
        } else {
            serve(self, link, conn, false);
        }
    }

    /// Server side of a `Hello` for `cluster` (a link_clusters client). A
    /// link this side dialled to that cluster does not matter (both ends may
    /// link to each other). A closed accepted link is dropped, and so is one whose peer is
    /// proven gone (control connection closed or errored, waiting up to
    /// [`STALE_LINK_GRACE`] for a hang-up under way); a live one is kept and
    /// the newcomer refused with `LLM_ALREADY_LINK`, so a second process
    /// claiming the cluster id cannot take over a real client's link.
    fn replace_stale_link(&self, cluster: u64) -> Result<()> {
        let Some(old) = self.link_dir(cluster, false) else {
            return Ok(());
        };
        match old.peer_gone_within(STALE_LINK_GRACE) {
            Some(why) => {
                log_info!("replacing the stale link from cluster {cluster} ({why})");
                if self.remove_exact(&old) {
                    old.teardown(Duration::ZERO);
                }
                Ok(())
            }
            // The message goes to the newcomer: it names neither this
            // server's cluster id nor the real client's address.
            None => bail!(
                AlreadyLink,
                "there already is a live link from cluster {cluster}; a client with that cluster id must unlink (or be found dead within llmdd.DeadPeerTimeoutMs) first"
            ),
        }
    }

    /// Server side of the handshake after the challenge: checks the link
    /// request, verifies the client's identity, answers `JoinAck` and reads
    /// the client's `Pools`. A non-empty `comm_name`: a rank-table dialer,
    /// matched to our pending comm of that name (`comm.rs`).
    fn accept_link(
        &self,
        conn: &mut Conn,
        req: &JoinRequest,
        deadline: Instant,
    ) -> Result<Arc<Link>> {
        let (cluster_id, role, remote_accessible) =
            (req.cluster_id, req.role, req.remote_accessible);
        let (comm_name, device) = (req.comm_name.as_str(), req.device.as_ref());
        if self.closing.load(Ordering::Acquire) {
            bail!(LinkFailed, "server is finalizing");
        }
        if cluster_id == self.cluster_id {
            bail!(
                LinkFailed,
                "peer uses this server's own cluster id {cluster_id}"
            );
        }
        if remote_accessible != self.config.remote_cache_accessible {
            bail!(
                ParamInvalid,
                "remote-cache-accessible mode differs: client {}, server {}",
                remote_accessible,
                self.config.remote_cache_accessible
            );
        }
        acl_link::check_backends(self.acl().is_some(), device, true)?;
        let comm = if comm_name.is_empty() {
            if let Some(c) = self.comm_of(cluster_id) {
                bail!(
                    AlreadyLink,
                    "cluster {cluster_id} is a member of rank-table comm {} (\"{}\") here",
                    c.id,
                    c.name()
                );
            }
            self.replace_stale_link(cluster_id)?;
            None
        } else {
            Some(self.pending_comm(comm_name, cluster_id)?)
        };
        if self.link_count() >= self.config.max_links as usize {
            bail!(
                LinkFailed,
                "server already has {} links (the limit)",
                self.config.max_links
            );
        }
        let local_path = self.judge_client(req, conn.peer())?;
        let token = local::random_u64();
        let link = Arc::new(Link::new(LinkParts {
            remote_cluster_id: cluster_id,
            remote_role: role,
            token,
            we_dialed: false,
            remote_addr: conn.peer(),
            local_path,
            peer_pools: Vec::new(),
            generation: self.registry.generation(),
            local_cluster_id: self.cluster_id,
            comm_id: comm.as_ref().map_or(0, |c| c.id),
            conn: self.config.conn_opts(),
        }));
        link.watch_control(conn);
        // Either side may send its own requests on the control connection,
        // as soon as the link is in the table.
        link.set_control_writer(conn.writer());
        // acl backend: create our communicator before answering, so the
        // client's prepare finds our port listening.
        // A rank-table comm's links get the comm's shared communicator once
        // the comm is set up (`comm.rs`); here we only announce our endpoint.
        let mut our_device = comm
            .as_ref()
            .and_then(|c| c.spec.local_member().device.clone());
        if let (Some(acl), Some(theirs), None) = (self.acl(), device, &comm) {
            let ip = match self.listen_addr().map(|a| a.ip()) {
                Some(ip) if !ip.is_unspecified() => ip,
                _ => conn
                    .local_addr()
                    .map(|a| a.ip())
                    .unwrap_or(conn.peer().ip()),
            };
            let end = acl_link::local_end(acl, ip)?;
            our_device = Some(end.endpoint.clone());
            let ids = LinkIds {
                server_cluster: self.cluster_id,
                client_cluster: cluster_id,
                token,
            };
            let setup = Instant::now() + acl.prepare_timeout();
            link.set_hccl(Arc::new(acl_link::create(
                acl, end, theirs, true, ids, setup,
            )?));
        }
        let installed = match &comm {
            Some(c) => self.comm_adopt(c, &link, false),
            // A server replaces what it accepted from that cluster (stale links).
            None => self.insert_plain_link(link.clone(), true),
        };
        if let Err(e) = installed {
            // The refusal still goes out on `conn`; only the communicator goes.
            if let Some(h) = link.hccl() {
                h.close();
            }
            return Err(e);
        }
        let ack = self.join_ack(req, &link, our_device);
        let sent = conn
            .send(&ack, Some(deadline))
            .and_then(|_| self.receive_pools(conn, &link, deadline))
            .and_then(|_| liveness::watch(self.reactor()?.arc(), &link));
        if let Err(e) = sent {
            self.remove_exact(&link);
            link.teardown(Duration::ZERO);
            return Err(e);
        }
        if let (Some(h), Some(acl)) = (link.hccl(), self.acl()) {
            // Bounded by llmdd.HcclPrepareTimeout (HCCL's connect timeout, 120 s
            // by default): the client prepares within its link timeout or gives
            // up (then this fails and the link is dropped).
            if let Err(e) = acl_link::prepare(acl, h, acl.prepare_timeout()) {
                self.remove_exact(&link);
                link.teardown(Duration::ZERO);
                return Err(e);
            }
        }
        if link.comm_id != 0 && link.requests_on_control() {
            // No reverse connection will follow (`attach`): the dialer's side
            // is complete once its Pools arrived.
            self.comm_peer_ready(&link);
        }
        log_info!(
            "cluster {} accepted link from cluster {cluster_id}",
            self.cluster_id
        );
        Ok(link)
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

fn accept_loop(me: Weak<Session>, l: TcpListener, wake: i32, comm_only: bool) {
    let lfd = l.as_raw_fd();
    let mut spare = SpareFd::open();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: lfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        loop {
            match l.accept() {
                Ok((stream, peer)) => {
                    let Some(s) = me.upgrade() else { return };
                    if s.closing.load(Ordering::Acquire) {
                        return;
                    }
                    s.admit(stream, peer, comm_only);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if admission::is_fd_exhaustion(&e) => {
                    let Some(s) = me.upgrade() else { return };
                    if !refuse_for_lack_of_fds(&l, &mut spare, s.cluster_id, &e) {
                        // Not even the spare could make room: try again soon.
                        let _ = poll_fd(wake, libc::POLLIN, 10);
                        break;
                    }
                }
                Err(e) => {
                    log_refusal(None, &format!("accept failed: {e}"));
                    let _ = poll_fd(wake, libc::POLLIN, 10);
                    break;
                }
            }
        }
    }
}

/// The process is out of file descriptors: closes the spare one to accept a
/// waiting connection and answer it with a refusal (so the client fails at
/// once, not after its link timeout), then reopens the spare. False if there
/// was no spare or no connection could be accepted.
fn refuse_for_lack_of_fds(
    l: &TcpListener,
    spare: &mut SpareFd,
    cluster: u64,
    cause: &std::io::Error,
) -> bool {
    let mut refused = false;
    if spare.release() {
        if let Ok((stream, peer)) = l.accept() {
            let why = format!("the server is out of file descriptors ({cause}); try again later");
            admission::refuse(&stream, Status::LinkFailed, &why);
            log_refusal(Some(peer), &format!("cluster {cluster}: {why}"));
            refused = true;
        }
    }
    if !spare.restore() && !refused {
        log_refusal(None, &format!("accept failed: {cause}"));
    }
    refused
}

/// Logs a refused connection at warn level, within the process-wide budget
/// of refusal lines (`log::rate`: a peer can make them happen at any rate).
fn log_refusal(peer: Option<SocketAddr>, why: &str) {
    log_limited("refused a connection", peer, why);
}

/// Logs a connection dropped before it joined a link (bad or no first frame).
fn log_dropped(peer: SocketAddr, why: &str) {
    log_limited("dropped a connection before its handshake", Some(peer), why);
}

fn log_limited(what: &str, peer: Option<SocketAddr>, why: &str) {
    let from = peer.map(|p| format!(" from {p}")).unwrap_or_default();
    crate::log::rate::warn_refusal(format_args!("{what}{from}: {why}"));
}
