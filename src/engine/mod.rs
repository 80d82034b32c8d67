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

mod connect;
pub mod desc;
pub mod name;
pub mod request;
mod transfer;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::cache::types::Dir;
use crate::cache::types::{CacheDesc, CacheKind, DataType, Placement, Segment};
use crate::datadist::notify::{self, Notice};
use crate::datadist::options::Options;
use crate::datadist::session::Session;
use crate::datadist::Instance;
use crate::stats::Direction;
use crate::status::{Result, Status};
use crate::transfer::exec;
use crate::transfer::link::Link;
use crate::transfer::pool::{Job, Kind, Pool, Slot};
use crate::transfer::rpc;
use crate::{bail, err, log_info};

pub use desc::{Op, OpDesc, Ranges};
pub use name::EngineName;
pub use request::{Outcome, ReqStatus, Request};

/// HIXL's `AsyncConnectStatus` (its enum order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ConnState {
    /// No connection to the remote engine.
    NotConnect = 0,
    /// A connect was requested and has not started.
    ConnectPending = 1,
    /// The connect is under way.
    Connecting = 2,
    /// Connected: transfers may use it.
    Connected = 3,
    /// The last connect failed.
    ConnectFailed = 4,
    /// A disconnect was requested and has not started.
    DisconnectPending = 5,
    /// The disconnect is under way.
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
pub(crate) const MAX_REQUESTS: usize = 65_536;

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
        let device = self.session.device();
        if device.capabilities().register_before_link && self.session.link_count() > 0 {
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
        let rec = self.session.caches().backend_register(rec)?;
        m.regs.insert(rec.id, (addr, len));
        m.ranges = Arc::new(Ranges::new(m.regs.values().copied()));
        Ok(rec.id)
    }

    /// `DeregisterMem`: the memory is no longer reachable by peers (TCP
    /// requests for it are refused from now on).
    pub fn deregister_mem(&self, id: i64) -> Result<()> {
        self.check_open()?;
        let mut m = self.mem.write().unwrap_or_else(|p| p.into_inner());
        if self.session.caps().register_before_link && self.session.link_count() > 0 {
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
        self.session.device().unregister_memory(id);
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
