//! The byte-addressed transfer engine (HIXL's `hixl::Hixl`): an llmdd
//! session named by its `"ip:port"` engine name, raw memory registration,
//! connect/disconnect (sync and async, with a state per remote engine),
//! descriptor-list transfers (sync and async, READ or WRITE) and
//! notifications that are delivered after the data they follow has landed.
//!
//! It sits on the datadist session and the transfer executor: a registration
//! is a registered, remote-accessible segment of the session's registry (the
//! serving side checks every remote read and write against it, as for
//! caches); a connection is a link of the session's link table, keyed by the
//! cluster id derived from the engine name ([`name::EngineName::id`]); a
//! descriptor list is checked and turned into one plan for
//! [`crate::transfer::exec::run`] (HCCL on the acl backend; same process,
//! same host one-sided, or TCP on the host backend). On the acl backend a
//! registration is also bound to HCCL, before the first connection.
//!
//! Two engines may connect to each other: each `Connect` makes this engine's
//! own link (the link table holds one per direction), each `Disconnect` ends
//! only that one, and transfers run on it.

pub mod desc;
pub mod name;
pub mod request;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::cache::types::{CacheDesc, CacheKind, DataType, Placement, Segment};
use crate::datadist::link::{request as link_request, Link};
use crate::datadist::notify::{self, Notice};
use crate::datadist::options::Options;
use crate::datadist::session::Session;
use crate::datadist::Instance;
use crate::stats::Direction;
use crate::status::{Result, Status};
use crate::transfer::exec::{self, Dir};
use crate::transfer::pool::{Job, Kind, Pool, Slot};
use crate::transport::tcp::check_reply;
use crate::transport::wire::Msg;
use crate::{bail, err, log_info};

pub use desc::{Op, OpDesc, Ranges};
pub use name::EngineName;
pub use request::{Outcome, ReqStatus, Request};

/// HIXL's `AsyncConnectStatus` (its enum order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ConnState {
    NotConnect = 0,
    ConnectPending = 1,
    Connecting = 2,
    Connected = 3,
    ConnectFailed = 4,
    DisconnectPending = 5,
    Disconnecting = 6,
}

/// HIXL's `GetCapability`: `AUTO_CONNECT` (0) is supported;
/// `CLIENT_SERVER_COMM` (1, the HIXL-CS C interface) and unknown features
/// are not; a negative feature is `PARAM_INVALID`.
pub fn capability(feature: i32) -> Result<bool> {
    match feature {
        0 => Ok(true),
        f if f < 0 => bail!(ParamInvalid, "feature type {f} is negative"),
        _ => Ok(false),
    }
}

/// Default timeout of asynchronous transfers (HIXL's `TransferAsync` takes
/// none): `llm.SyncKvCacheWaitTime` of the engine's options, else this.
pub const DEFAULT_ASYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// An async plan is executed in chunks of at most this many segments, and
/// cancellation is checked between chunks.
const CHUNK_SEGMENTS: usize = 16_384;
/// ... and of at most this many bytes.
const CHUNK_BYTES: u64 = 64 << 20;
/// A one-sided async request (same process or same host) of at most this
/// many bytes and without a notification runs inside `TransferAsync`: its
/// copy takes less time than handing it to a worker thread would.
const INLINE_BYTES: u64 = 256 << 10;
/// Most requests an engine holds at once (posted and not yet reported).
pub const MAX_REQUESTS: usize = 65_536;

/// The HIXL option names (`hixl_types.h`) an engine accepts.
pub const HIXL_OPTIONS: [&str; 7] = [
    "EnableUseFabricMem",
    "RdmaTrafficClass",
    "RdmaServiceLevel",
    "BufferPool",
    "GlobalResourceConfig",
    "AutoConnect",
    "LocalCommRes",
];

/// What this engine knows about one remote engine.
struct Peer {
    name: EngineName,
    state: ConnState,
    /// Why the last connect failed (CONNECT_FAILED).
    reason: String,
    /// The link last used with it and the memory it had registered then.
    view: Option<(Weak<Link>, Arc<Ranges>)>,
}

/// Registered local memory.
#[derive(Default)]
struct LocalMem {
    /// Registry cache id → (address, length).
    regs: BTreeMap<i64, (u64, u64)>,
    ranges: Arc<Ranges>,
}

/// A transfer engine.
pub struct Engine {
    name: EngineName,
    inst: Instance,
    session: Arc<Session>,
    auto_connect: bool,
    async_timeout: Duration,
    mem: RwLock<LocalMem>,
    peers: Mutex<HashMap<String, Peer>>,
    reqs: Mutex<VecDeque<Arc<Request>>>,
    next_seq: AtomicU64,
    pool: Pool,
    closed: AtomicBool,
    me: Weak<Engine>,
}

thread_local! {
    /// Plan buffer of synchronous transfers (no allocation per call).
    static PLAN: RefCell<Vec<Segment>> = const { RefCell::new(Vec::new()) };
}

fn parse_flag(key: &str, v: &str) -> Result<bool> {
    match v.trim() {
        "1" | "true" | "True" => Ok(true),
        "0" | "false" | "False" => Ok(false),
        _ => bail!(ParamInvalid, "option {key} must be 0 or 1 (got {v:?})"),
    }
}

/// Translates HIXL options into the session's options. `llm.*` / `llmdd.*`
/// keys pass through (llmdd's own knobs, e.g. `llmdd.SameHost`).
fn session_options(name: &EngineName, hixl: &Options) -> Result<(Options, bool)> {
    let mut o = Options::new();
    let mut auto = false;
    for (k, v) in hixl {
        match k.as_str() {
            "AutoConnect" => auto = parse_flag(k, v)?,
            "EnableUseFabricMem" => {
                parse_flag(k, v)?;
            }
            "RdmaTrafficClass" => {
                o.insert("llm.RdmaTrafficClass".into(), v.clone());
            }
            "RdmaServiceLevel" => {
                o.insert("llm.RdmaServiceLevel".into(), v.clone());
            }
            "GlobalResourceConfig" => {
                o.insert("llm.GlobalResourceConfig".into(), v.clone());
            }
            // Host paths need no staging buffer pool and no device
            // communication resources: accepted, without effect (docs/hixl.md).
            "BufferPool" | "LocalCommRes" => {}
            "llm.ListenIpInfo"
            | "llm.listenIpInfo"
            | "llm.TransferBackend"
            | "llm.EnableRemoteCacheAccessible"
            | "llm.LocalCommRes"
            | "llm.Role" => bail!(
                ParamInvalid,
                "option {k} is set by the engine itself (its name is its listen endpoint)"
            ),
            k2 if k2.starts_with("llm.") || k2.starts_with("llmdd.") || k2.starts_with("ge.") => {
                o.insert(k.clone(), v.clone());
            }
            _ => bail!(
                ParamInvalid,
                "option {k:?} is not a HIXL option ({}) nor an llm./llmdd. option",
                HIXL_OPTIONS.join(", ")
            ),
        }
    }
    o.entry("llm.DeviceId".into()).or_insert_with(|| "0".into());
    if let Some(a) = name.addr() {
        o.insert("llm.ListenIpInfo".into(), a.to_string());
    }
    Ok((o, auto))
}

impl Engine {
    /// `Initialize(local_engine, options)`: a session named `local_engine`
    /// that listens on it when the name has a port.
    pub fn new(local_engine: &str, options: &Options) -> Result<Arc<Engine>> {
        let name = EngineName::parse("local_engine", local_engine)?;
        let (opts, auto_connect) = session_options(&name, options)?;
        let inst = Instance::new(3, name.id())?;
        inst.init(&opts)?;
        let session = inst.session()?;
        session.inbox.enable(notify::DEFAULT_CAPACITY);
        let async_timeout = if opts.contains_key("llm.SyncKvCacheWaitTime") {
            session.config.sync_kv_timeout
        } else {
            DEFAULT_ASYNC_TIMEOUT
        };
        let pool = Pool::new(Pool::default_slots());
        pool.set_spin(session.config.busy_poll);
        log_info!("transfer engine {} started", name.text);
        Ok(Arc::new_cyclic(|me| Engine {
            name,
            inst,
            session,
            auto_connect,
            async_timeout,
            mem: RwLock::new(LocalMem::default()),
            peers: Mutex::new(HashMap::new()),
            reqs: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(1),
            pool,
            closed: AtomicBool::new(false),
            me: me.clone(),
        }))
    }

    /// The engine's canonical name.
    pub fn name(&self) -> &str {
        &self.name.text
    }

    /// The address the engine listens on, if it does.
    pub fn listen_addr(&self) -> Option<std::net::SocketAddr> {
        self.session.listen_addr()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            bail!(Failed, "engine {} is finalized", self.name.text);
        }
        Ok(())
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Peer>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    // ------------------------------------------------------------ memory

    /// `RegisterMem`: `[addr, addr + len)` becomes reachable by connected
    /// engines and usable as local memory of transfers. `mem_type`: 0 =
    /// MEM_DEVICE, 1 = MEM_HOST (both host-addressable on the host backend).
    /// Returns the registration's id.
    pub fn register_mem(&self, addr: u64, len: u64, mem_type: u32) -> Result<i64> {
        self.check_open()?;
        let placement = match mem_type {
            0 => Placement::Device,
            1 => Placement::Host,
            _ => bail!(
                ParamInvalid,
                "mem type {mem_type} is not MEM_DEVICE (0) or MEM_HOST (1)"
            ),
        };
        if addr == 0 {
            bail!(ParamInvalid, "mem.addr is 0");
        }
        if len == 0 || len > i64::MAX as u64 {
            bail!(ParamInvalid, "mem.len {len} is out of range");
        }
        if addr.checked_add(len).is_none() {
            bail!(ParamInvalid, "mem.addr + mem.len overflows");
        }
        let desc = CacheDesc {
            placement,
            num_tensors: 1,
            data_type: DataType::Uint8,
            shape: vec![len as i64],
            batch_dim_index: 0,
            seq_len_dim_index: -1,
        };
        let mut m = self.mem.write().unwrap_or_else(|p| p.into_inner());
        let acl = self.session.acl();
        if acl.is_some() && self.session.link_count() > 0 {
            // HCCL exchanges the bound memory once per link (as for caches).
            bail!(
                ParamInvalid,
                "on the acl backend memory must be registered before any connection ({} link(s) exist)",
                self.session.link_count()
            );
        }
        let rec = self.session.registry.register(
            &desc,
            &[addr],
            CacheKind::Batch,
            &[],
            None,
            Some(true),
        )?;
        if let Some(acl) = acl {
            if let Err(e) = acl.register_cache(&rec) {
                let _ = self.session.registry.unregister(rec.id);
                return Err(e);
            }
        }
        m.regs.insert(rec.id, (addr, len));
        m.ranges = Arc::new(Ranges::new(m.regs.values().copied()));
        Ok(rec.id)
    }

    /// `DeregisterMem`: the memory is no longer reachable by peers (TCP
    /// requests for it are refused from now on).
    pub fn deregister_mem(&self, id: i64) -> Result<()> {
        self.check_open()?;
        let mut m = self.mem.write().unwrap_or_else(|p| p.into_inner());
        if self.session.acl().is_some() && self.session.link_count() > 0 {
            bail!(
                ExistLink,
                "on the acl backend memory is deregistered after every connection ended ({} link(s) exist)",
                self.session.link_count()
            );
        }
        if m.regs.remove(&id).is_none() {
            bail!(
                ParamInvalid,
                "mem handle is not registered with this engine"
            );
        }
        self.session.registry.unregister(id)?;
        if let Some(acl) = self.session.acl() {
            acl.unregister_cache(id);
        }
        m.ranges = Arc::new(Ranges::new(m.regs.values().copied()));
        Ok(())
    }

    fn local_ranges(&self) -> Arc<Ranges> {
        self.mem
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .ranges
            .clone()
    }

    // ------------------------------------------------------------ connect

    fn remote_name(&self, remote: &str) -> Result<EngineName> {
        let n = EngineName::parse("remote_engine", remote)?;
        if n.port == 0 {
            bail!(
                ParamInvalid,
                "remote_engine {remote:?} has no port: only engines named \"ip:port\" listen"
            );
        }
        if n.id() == self.name.id() {
            bail!(ParamInvalid, "remote_engine {remote:?} is this engine");
        }
        Ok(n)
    }

    /// This engine's own link to `n`: the one it dialled, if still usable,
    /// else a new one dialled within `timeout`. (Both engines may connect to
    /// each other: each side's link is its own, see `link_table.rs`.)
    fn establish(&self, n: &EngineName, timeout: Duration) -> Result<Arc<Link>> {
        let id = n.id();
        let usable = |l: &Arc<Link>| !l.is_closed() && l.peer_gone().is_none();
        if let Some(l) = self.session.link_dir(id, true).filter(usable) {
            return Ok(l);
        }
        let addr = n.addr().ok_or_else(|| err!(ParamInvalid, "no port"))?;
        self.session.connect(id, addr, None, timeout)?;
        self.session
            .link_dir(id, true)
            .ok_or_else(|| err!(LinkFailed, "the link to {} closed at once", n.text))
    }

    /// Moves `n` into state `next` (a connect or disconnect begins), or says
    /// why it may not begin.
    fn begin_state(&self, n: &EngineName, next: ConnState) -> Result<()> {
        let mut p = self.peers();
        let connecting = matches!(next, ConnState::Connecting | ConnState::ConnectPending);
        // A connect sees a dead link as CONNECT_FAILED (and replaces it); a
        // disconnect may still end a link whose peer died.
        let cur = match p.get(&n.text) {
            None => ConnState::NotConnect,
            Some(x) if connecting => self.state_of(x).0,
            Some(x) => x.state,
        };
        match cur {
            ConnState::Connected if connecting => {
                bail!(AlreadyLink, "already connected to {}", n.text)
            }
            ConnState::ConnectPending
            | ConnState::Connecting
            | ConnState::DisconnectPending
            | ConnState::Disconnecting => bail!(
                ProcessingLink,
                "a connect or disconnect with {} is in progress",
                n.text
            ),
            ConnState::NotConnect | ConnState::ConnectFailed if !connecting => {
                bail!(NotYetLink, "not connected to {}", n.text)
            }
            _ => {}
        }
        let e = p.entry(n.text.clone()).or_insert_with(|| Peer {
            name: n.clone(),
            state: ConnState::NotConnect,
            reason: String::new(),
            view: None,
        });
        e.state = next;
        e.reason.clear();
        Ok(())
    }

    fn set_state(&self, n: &EngineName, r: &Result<()>, ok: ConnState) {
        let mut p = self.peers();
        if let Some(e) = p.get_mut(&n.text) {
            match r {
                Ok(()) if ok == ConnState::NotConnect => {
                    p.remove(&n.text);
                }
                Ok(()) => e.state = ok,
                Err(err) => {
                    e.state = ConnState::ConnectFailed;
                    e.reason = err.message.clone();
                }
            }
        }
    }

    fn do_connect(&self, n: &EngineName, timeout: Duration) -> Result<()> {
        {
            let mut p = self.peers();
            if let Some(e) = p.get_mut(&n.text) {
                e.state = ConnState::Connecting;
            }
        }
        let r = self.establish(n, timeout).map(|_| ());
        self.set_state(n, &r, ConnState::Connected);
        r
    }

    fn do_disconnect(&self, n: &EngineName, timeout: Duration) -> Result<()> {
        {
            let mut p = self.peers();
            if let Some(e) = p.get_mut(&n.text) {
                e.state = ConnState::Disconnecting;
            }
        }
        let id = n.id();
        // Only this engine's own link ends; one the peer dialled is the peer's.
        let r = match self.session.link_dir(id, true) {
            Some(_) => self.session.disconnect(id, timeout).or_else(|e| {
                crate::log_warn!(
                    "disconnect from {}: {}; dropping our side",
                    n.text,
                    e.message
                );
                self.session.drop_link(id, Duration::ZERO);
                Ok(())
            }),
            _ => Ok(()),
        };
        self.set_state(n, &Ok(()), ConnState::NotConnect);
        r
    }

    fn timeout_of(ms: i32) -> Result<Duration> {
        if ms <= 0 {
            bail!(ParamInvalid, "timeout must be > 0 ms (got {ms})");
        }
        Ok(Duration::from_millis(ms as u64))
    }

    /// `Connect(remote_engine, timeout)`.
    pub fn connect(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        self.begin_state(&n, ConnState::Connecting)?;
        self.do_connect(&n, t)
    }

    /// `Disconnect(remote_engine, timeout)`.
    pub fn disconnect(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        self.begin_state(&n, ConnState::Disconnecting)?;
        self.do_disconnect(&n, t)
    }

    fn arc(&self) -> Arc<Engine> {
        self.me.upgrade().expect("engine alive while in use")
    }

    /// `ConnectAsync`: CONNECT_PENDING now, CONNECTING on a pool worker, then
    /// CONNECTED or CONNECT_FAILED.
    pub fn connect_async(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        // As HIXL: connecting to a connected engine ends CONNECTED.
        if self.peers().get(&n.text).map(|p| p.state) == Some(ConnState::Connected) {
            return Ok(());
        }
        self.begin_state(&n, ConnState::ConnectPending)?;
        let job = ConnJob {
            engine: self.arc(),
            name: n.clone(),
            timeout: t,
            connect: true,
        };
        self.pool
            .submit(Arc::new(job), Kind::Callback)
            .inspect_err(|e| {
                self.set_state(&n, &Err(e.clone()), ConnState::Connected);
            })
    }

    /// `DisconnectAsync`: DISCONNECT_PENDING now, DISCONNECTING on a pool
    /// worker, then NOT_CONNECT.
    pub fn disconnect_async(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        self.begin_state(&n, ConnState::DisconnectPending)?;
        let job = ConnJob {
            engine: self.arc(),
            name: n,
            timeout: t,
            connect: false,
        };
        self.pool.submit(Arc::new(job), Kind::Callback)
    }

    fn state_of(&self, p: &Peer) -> (ConnState, String) {
        if p.state == ConnState::Connected {
            if let Some(l) = self.session.link_dir(p.name.id(), true) {
                if let Some(why) = l.peer_gone() {
                    return (ConnState::ConnectFailed, why);
                }
            }
        }
        (p.state, p.reason.clone())
    }

    /// `GetAsyncConnectStatus(remote_engine)`: the state and, for
    /// CONNECT_FAILED, why. A connected engine whose link died reads
    /// CONNECT_FAILED.
    pub fn connect_status(&self, remote: &str) -> Result<(ConnState, String)> {
        self.check_open()?;
        let n = EngineName::parse("remote_engine", remote)?;
        let p = self.peers();
        Ok(match p.get(&n.text) {
            Some(x) => self.state_of(x),
            None => (ConnState::NotConnect, String::new()),
        })
    }

    /// `GetAsyncConnectStatus(map)`: every remote engine this engine knows of.
    pub fn connect_statuses(&self) -> Result<Vec<(String, ConnState)>> {
        self.check_open()?;
        let p = self.peers();
        let mut v: Vec<(String, ConnState)> = p
            .values()
            .map(|x| (x.name.text.clone(), self.state_of(x).0))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }

    // ------------------------------------------------------------ transfer

    /// The link to a connected `n` (connecting first with `AutoConnect`),
    /// dialling again if the peer's own link was disconnected by it.
    fn link_for(&self, n: &EngineName, deadline: Instant) -> Result<Arc<Link>> {
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let state = self.peers().get(&n.text).map(|p| p.state);
        match state {
            Some(ConnState::Connected) => {}
            _ if self.auto_connect => {
                self.begin_state(n, ConnState::Connecting)?;
                self.do_connect(n, left())?;
            }
            _ => bail!(
                NotYetLink,
                "engine {} is not connected to {} (Connect first)",
                self.name.text,
                n.text
            ),
        }
        match self.session.link_dir(n.id(), true) {
            Some(l) if l.is_dead() => Err(l.dead_error()),
            Some(l) if !l.is_closed() => Ok(l),
            _ => self.establish(n, left()),
        }
    }

    /// The memory `n` has registered, as last fetched over `link`; fetched
    /// again when the link changed or `refresh`.
    fn remote_ranges(
        &self,
        n: &EngineName,
        link: &Arc<Link>,
        refresh: bool,
        deadline: Instant,
    ) -> Result<Arc<Ranges>> {
        if !refresh {
            let p = self.peers();
            if let Some((w, r)) = p.get(&n.text).and_then(|x| x.view.as_ref()) {
                if w.upgrade().is_some_and(|l| Arc::ptr_eq(&l, link)) {
                    return Ok(r.clone());
                }
            }
        }
        let entries = match link_request(link, &Msg::GetTable, deadline)? {
            Msg::Table { status, entries } => {
                check_reply(status, "", "fetching the peer's registered memory")?;
                entries
            }
            m => bail!(LinkFailed, "unexpected reply {} to GetTable", m.msg_type()),
        };
        let r = Arc::new(Ranges::new(
            entries
                .iter()
                .flat_map(|e| e.addrs.iter().map(move |&a| (a, e.tensor_bytes))),
        ));
        if let Some(x) = self.peers().get_mut(&n.text) {
            x.view = Some((Arc::downgrade(link), r.clone()));
        }
        Ok(r)
    }

    /// Checks a descriptor list against both sides' registered memory and
    /// builds its plan into `plan`; returns the link to run it on.
    fn prepare(
        &self,
        remote: &str,
        op: Op,
        descs: &[OpDesc],
        deadline: Instant,
        plan: &mut Vec<Segment>,
    ) -> Result<(EngineName, Arc<Link>)> {
        self.check_open()?;
        let n = self.remote_name(remote)?;
        desc::check_list(descs)?;
        if let Some(i) = self.local_ranges().first_outside(descs, |d| d.local_addr) {
            let d = &descs[i];
            bail!(
                ParamInvalid,
                "op_descs[{i}] local [0x{:x}, +{}) is outside the memory registered with this engine",
                d.local_addr,
                d.len
            );
        }
        let link = self.link_for(&n, deadline)?;
        let mut r = self.remote_ranges(&n, &link, false, deadline)?;
        if r.first_outside(descs, |d| d.remote_addr).is_some() {
            // The peer may have registered more since we looked.
            r = self.remote_ranges(&n, &link, true, deadline)?;
        }
        if let Some(i) = r.first_outside(descs, |d| d.remote_addr) {
            let d = &descs[i];
            bail!(
                ParamInvalid,
                "op_descs[{i}] remote [0x{:x}, +{}) is outside the memory {} registered",
                d.remote_addr,
                d.len,
                n.text
            );
        }
        desc::plan_into(descs, op, plan);
        Ok((n, link))
    }

    /// Runs a checked plan, then sends `notice` (after the last byte landed).
    fn execute(
        &self,
        p: Planned<'_>,
        cancel: Option<&AtomicBool>,
        notice: Option<&Notice>,
    ) -> Result<()> {
        // One operation of the link's statistics (`crate::stats`).
        let (dir, sdir) = match p.op {
            Op::Read => (Dir::Read, Direction::Pull),
            Op::Write => (Dir::Write, Direction::Push),
        };
        let mut stat = p.link.stats.start(sdir);
        stat.set_bytes(p.plan.iter().map(|s| s.len).sum());
        let r = (|| {
            let _g = p.link.begin()?;
            let stripes = self.session.config.data_connections as usize;
            let r = match cancel {
                None => exec::run(p.link, p.plan, dir, p.deadline, stripes),
                Some(flag) => run_chunked(p.link, p.plan, dir, p.deadline, stripes, flag),
            };
            r.map_err(|e| match e.status {
                Status::Timeout => err!(
                    Timeout,
                    "transfer with {} did not finish within its timeout",
                    p.name.text
                ),
                _ => e,
            })?;
            if let Some(nt) = notice {
                send_notice(p.link, nt, p.deadline)?;
            }
            Ok(())
        })();
        stat.finish(p.link.path(), &r);
        r
    }

    /// `TransferSync(remote_engine, op, op_descs, timeout)`, optionally
    /// followed by a notification delivered after the data landed.
    pub fn transfer(
        &self,
        remote: &str,
        op: Op,
        descs: &[OpDesc],
        timeout_ms: i32,
        notice: Option<&Notice>,
    ) -> Result<()> {
        let deadline = Instant::now() + Self::timeout_of(timeout_ms)?;
        if let Some(nt) = notice {
            notify::check_sizes(&nt.name, &nt.msg)?;
        }
        PLAN.with(|p| {
            // A re-entrant use (never expected) falls back to a fresh buffer.
            let mut own = Vec::new();
            let mut guard = p.try_borrow_mut();
            let plan = match guard.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut own,
            };
            let (n, link) = self.prepare(remote, op, descs, deadline, plan)?;
            let p = Planned {
                name: &n,
                link: &link,
                plan,
                op,
                deadline,
            };
            self.execute(p, None, notice)
        })
    }

    /// `TransferAsync`: checks the list now (errors are returned here), then
    /// runs it on the engine's worker pool. `timeout_ms` < 0: the engine's
    /// default ([`DEFAULT_ASYNC_TIMEOUT`]).
    pub fn transfer_async(
        &self,
        remote: &str,
        op: Op,
        descs: &[OpDesc],
        timeout_ms: i32,
        notice: Option<Notice>,
        user_data: usize,
    ) -> Result<Arc<Request>> {
        let timeout = match timeout_ms {
            t if t < 0 => self.async_timeout,
            t => Self::timeout_of(t)?,
        };
        let deadline = Instant::now() + timeout;
        if let Some(nt) = &notice {
            notify::check_sizes(&nt.name, &nt.msg)?;
        }
        {
            let q = self.reqs.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= MAX_REQUESTS {
                bail!(
                    OutOfMemory,
                    "{MAX_REQUESTS} requests are outstanding; query their status first"
                );
            }
        }
        let mut plan = Vec::new();
        let (name, link) = self.prepare(remote, op, descs, deadline, &mut plan)?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let req = Arc::new(Request::new(seq, user_data));
        let bytes: u64 = plan.iter().map(|s| s.len).sum();
        if notice.is_none()
            && bytes <= INLINE_BYTES
            && link.local_path.is_some()
            && link.hccl().is_none()
        {
            let p = Planned {
                name: &name,
                link: &link,
                plan: &plan,
                op,
                deadline,
            };
            req.finish(self.execute(p, None, None));
            self.reqs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(req.clone());
            return Ok(req);
        }
        let job = TransferJob {
            engine: self.arc(),
            req: req.clone(),
            name,
            link,
            plan,
            op,
            deadline,
            notice,
        };
        self.reqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(req.clone());
        if let Err(e) = self.pool.submit(Arc::new(job), Kind::Transfer) {
            self.forget(&req);
            return Err(e);
        }
        Ok(req)
    }

    /// Drops `req` from the engine's list (its status was reported final).
    pub fn forget(&self, req: &Arc<Request>) {
        let mut q = self.reqs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = q.iter().position(|r| Arc::ptr_eq(r, req)) {
            q.remove(i);
        }
    }

    /// `GetTransferStatus(args, results)`: up to `max` requests in posting
    /// order; finished ones are reported once and dropped, waiting ones are
    /// reported unless `skip_waiting`.
    pub fn poll(&self, max: usize, skip_waiting: bool) -> Vec<(Arc<Request>, ReqStatus)> {
        let mut out = Vec::new();
        let mut q = self.reqs.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = 0;
        while i < q.len() && out.len() < max {
            match q[i].outcome() {
                Some(o) => {
                    let r = q.remove(i).expect("index in range");
                    out.push((r, o.status));
                }
                None => {
                    if !skip_waiting {
                        out.push((q[i].clone(), ReqStatus::Waiting));
                    }
                    i += 1;
                }
            }
        }
        out
    }

    // ------------------------------------------------------------ notify

    /// `SendNotify(remote_engine, notify, timeout)`.
    pub fn send_notify(&self, remote: &str, notice: &Notice, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let deadline = Instant::now() + Self::timeout_of(timeout_ms)?;
        notify::check_sizes(&notice.name, &notice.msg)?;
        let n = self.remote_name(remote)?;
        let link = self.link_for(&n, deadline)?;
        let _g = link.begin()?;
        send_notice(&link, notice, deadline)
    }

    /// The oldest received notification, removed.
    pub fn next_notify(&self) -> Option<Notice> {
        self.session.inbox.pop()
    }

    /// Puts back a notification the caller could not take.
    pub fn unpop_notify(&self, n: Notice) {
        self.session.inbox.unpop(n)
    }

    /// `GetNotifies`: every received notification, oldest first.
    pub fn take_notifies(&self) -> Vec<Notice> {
        self.session.inbox.drain()
    }

    // ------------------------------------------------------------ finalize

    /// `Finalize`: fails every unfinished request, closes every link and the
    /// listener, and joins every thread. Idempotent.
    pub fn finalize(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let reqs: Vec<Arc<Request>> = self
            .reqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        for r in &reqs {
            r.cancel();
        }
        self.inst.finalize();
        self.pool.shutdown();
        for r in &reqs {
            r.finish(Err(err!(Failed, "the engine was finalized")));
        }
        log_info!("transfer engine {} finalized", self.name.text);
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.finalize();
    }
}

/// A checked plan and where it runs.
struct Planned<'a> {
    name: &'a EngineName,
    link: &'a Arc<Link>,
    plan: &'a [Segment],
    op: Op,
    deadline: Instant,
}

fn send_notice(link: &Arc<Link>, n: &Notice, deadline: Instant) -> Result<()> {
    let msg = Msg::Notify {
        name: n.name.clone(),
        msg: n.msg.clone(),
    };
    match link_request(link, &msg, deadline)? {
        Msg::Reply { status, message } => check_reply(status, &message, "notification"),
        m => bail!(LinkFailed, "unexpected reply {} to Notify", m.msg_type()),
    }
}

/// Runs `plan` in chunks, stopping at a chunk boundary once `cancel` is set.
fn run_chunked(
    link: &Arc<Link>,
    plan: &[Segment],
    dir: Dir,
    deadline: Instant,
    stripes: usize,
    cancel: &AtomicBool,
) -> Result<()> {
    let mut rest = plan;
    while !rest.is_empty() {
        if cancel.load(Ordering::Acquire) {
            bail!(Failed, "the request was cancelled");
        }
        let mut n = 0;
        let mut bytes = 0u64;
        while n < rest.len() && n < CHUNK_SEGMENTS && (n == 0 || bytes + rest[n].len <= CHUNK_BYTES)
        {
            bytes += rest[n].len;
            n += 1;
        }
        exec::run(link, &rest[..n], dir, deadline, stripes)?;
        rest = &rest[n..];
    }
    Ok(())
}

/// An async transfer on the pool.
struct TransferJob {
    engine: Arc<Engine>,
    req: Arc<Request>,
    name: EngineName,
    link: Arc<Link>,
    plan: Vec<Segment>,
    op: Op,
    deadline: Instant,
    notice: Option<Notice>,
}

impl Job for TransferJob {
    fn run(self: Arc<Self>, _slot: &mut Slot<'_>) {
        let r = if self.req.is_cancelled() {
            Err(err!(Failed, "the request was cancelled"))
        } else {
            let p = Planned {
                name: &self.name,
                link: &self.link,
                plan: &self.plan,
                op: self.op,
                deadline: self.deadline,
            };
            self.engine
                .execute(p, Some(self.req.cancel_flag()), self.notice.as_ref())
        };
        self.req.finish(r);
    }
}

impl Drop for TransferJob {
    fn drop(&mut self) {
        // A job dropped unrun (pool shut down) still ends its request.
        self.req
            .finish(Err(err!(Failed, "the engine was finalized")));
    }
}

/// An async connect or disconnect on the pool.
struct ConnJob {
    engine: Arc<Engine>,
    name: EngineName,
    timeout: Duration,
    connect: bool,
}

impl Job for ConnJob {
    fn run(self: Arc<Self>, _slot: &mut Slot<'_>) {
        if self.engine.closed.load(Ordering::Acquire) {
            return;
        }
        let _ = if self.connect {
            self.engine.do_connect(&self.name, self.timeout)
        } else {
            self.engine.do_disconnect(&self.name, self.timeout)
        };
    }
}
