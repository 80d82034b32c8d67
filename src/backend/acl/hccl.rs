//! HCCL one-sided transport: a communicator built from a rank table, registered
//! memory made known to peers, and batched one-sided get/put on an ACL stream.
//!
//! Memory is registered once per process and device ([`GlobalMem`],
//! `HcclRegisterGlobalMem`) and bound to every communicator that should reach
//! it ([`HcclComm::bind`]). Typical use (both ranks, same order of calls):
//! `create` → `bind` (each region) → `prepare` → `submit` → `Stream::synchronize`.
//!
//! HCCL contracts kept here (docs/ascend.md):
//! - communicator creation and destruction are serialised process-wide (HCCL's
//!   init is not parallel-safe), and a transient `HCCL_E_UNAVAIL` / `HCCL_E_AGAIN`
//!   from an init racing some other HCCL user is retried until the deadline;
//! - an identical range registered twice gets one handle from HCCL (no
//!   reference count), so [`GlobalMem::register`] shares one registration per
//!   range and deregisters it with the last user; a handle is bound at most once
//!   per communicator;
//! - at most 256 descriptors go into one batch call (`HCCL_ONE_SIDED_MAX_DESC_NUM`).

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::backend::acl::runtime::{AclContext, Stream};
use crate::cache::types::{Placement, Segment};
use crate::status::Result;
use crate::sys::ascend_bindings as b;
use crate::sys::loader::AscendRuntime;
use crate::{bail, hccl_fn};

/// Most descriptors one `HcclBatchGet` / `HcclBatchPut` accepts.
pub(crate) const MAX_DESCS_PER_CALL: usize = b::HCCL_ONE_SIDED_MAX_DESC_NUM as usize;

/// Options for [`HcclComm::create`].
#[derive(Clone, Debug, Default)]
pub struct CommConfig {
    /// Communicator name (unique on the device; 1..=127 bytes; HCCL refuses an
    /// empty one).
    pub name: String,
    /// HCCL buffer size in MB; `None` leaves the HCCL default.
    pub buffer_size_mb: Option<u32>,
    /// HCCL execution timeout in seconds; `None` leaves the HCCL default.
    pub exec_timeout_s: Option<i32>,
    /// RDMA traffic class (`llm.RdmaTrafficClass`); `None` leaves HCCL's (env) default.
    pub rdma_traffic_class: Option<u32>,
    /// RDMA service level (`llm.RdmaServiceLevel`); `None` leaves HCCL's (env) default.
    pub rdma_service_level: Option<u32>,
}

/// Serialises `HcclCommInitClusterInfoMemConfig` and `HcclCommDestroy` in the
/// process (HIXL: "the underlying hccl library does not support parallel
/// HcclCommInitClusterInfoMemConfig calls").
static COMM_LIFECYCLE: Mutex<()> = Mutex::new(());

/// Key of one registration: runtime, device, placement, range.
type RegKey = (usize, i32, u8, u64, u64);

/// Live registrations of the process, so that an identical range shares one.
fn registrations() -> &'static Mutex<HashMap<RegKey, Weak<GlobalMem>>> {
    static REGS: OnceLock<Mutex<HashMap<RegKey, Weak<GlobalMem>>>> = OnceLock::new();
    REGS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A region registered for one-sided access in this process
/// (`HcclRegisterGlobalMem`) on one device; deregistered when the last
/// reference drops. Bind it to communicators with [`HcclComm::bind`]; a
/// communicator keeps the regions it bound alive and unbinds them before it is
/// destroyed.
pub struct GlobalMem {
    ctx: Arc<AclContext>,
    handle: *mut c_void,
    key: RegKey,
    addr: u64,
    len: u64,
    placement: Placement,
}

// SAFETY: the handle is an opaque token HCCL accepts from any thread; it is only
// passed to HCCL calls, and deregistered exactly once (on drop).
unsafe impl Send for GlobalMem {}
// SAFETY: see `Send`; nothing is mutated after construction.
unsafe impl Sync for GlobalMem {}

impl std::fmt::Debug for GlobalMem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalMem")
            .field("addr", &format_args!("0x{:x}", self.addr))
            .field("len", &self.len)
            .field("placement", &self.placement)
            .finish()
    }
}

impl GlobalMem {
    /// Registers `[addr, addr+len)` of `placement` memory with HCCL on `ctx`'s
    /// device, or returns the live registration of exactly that range.
    /// Errors: `ParamInvalid` for an empty, null or overflowing range, and from
    /// HCCL for a range overlapping another registration; the mapped HCCL status
    /// otherwise.
    pub fn register(
        ctx: &Arc<AclContext>,
        addr: u64,
        len: u64,
        placement: Placement,
    ) -> Result<Arc<GlobalMem>> {
        if addr == 0 || len == 0 {
            bail!(
                ParamInvalid,
                "cannot register an empty or null region (0x{addr:x}, {len})"
            );
        }
        if addr.checked_add(len).is_none() {
            bail!(ParamInvalid, "region 0x{addr:x}+{len} overflows");
        }
        let rt = ctx.runtime();
        let reg = hccl_fn!(rt, HcclRegisterGlobalMem)?;
        let key = (
            rt.acl_identity(),
            ctx.device_id(),
            placement as u8,
            addr,
            len,
        );
        // Held across the HCCL call so a concurrent drop of the same range
        // cannot deregister the handle HCCL is about to hand out again.
        let mut regs = registrations().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(live) = regs.get(&key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        ctx.bind_thread()?;
        let mem = b::HcclMem {
            type_: mem_type(placement),
            addr: addr as *mut c_void,
            size: len,
        };
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: `mem` and `handle` are valid for the call.
        let code = unsafe { reg(&mem, &mut handle) };
        rt.check_hccl(
            code,
            format_args!("HcclRegisterGlobalMem(0x{addr:x}, {len})"),
        )?;
        if handle.is_null() {
            bail!(
                Failed,
                "HcclRegisterGlobalMem(0x{addr:x}, {len}) returned success but no handle"
            );
        }
        let g = Arc::new(GlobalMem {
            ctx: Arc::clone(ctx),
            handle,
            key,
            addr,
            len,
            placement,
        });
        regs.insert(key, Arc::downgrade(&g));
        Ok(g)
    }

    /// Start address of the region.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length of the region in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    /// Placement the region was registered with.
    pub fn placement(&self) -> Placement {
        self.placement
    }
}

impl Drop for GlobalMem {
    fn drop(&mut self) {
        let mut regs = registrations().lock().unwrap_or_else(|p| p.into_inner());
        match regs.get(&self.key) {
            // The range was registered again while this one was being dropped:
            // HCCL handed out this same handle, which lives on in that one.
            Some(w) if w.strong_count() > 0 => return,
            Some(_) => {
                regs.remove(&self.key);
            }
            None => {}
        }
        let rt = self.ctx.runtime();
        if let Some(dereg) = rt.hccl.HcclDeregisterGlobalMem {
            if let Err(e) = self.ctx.bind_thread() {
                crate::log_warn!("{}", e.message);
            }
            // SAFETY: a handle from HcclRegisterGlobalMem, no longer bound to any
            // communicator (each communicator holds an Arc until it unbinds).
            let code = unsafe { dereg(self.handle) };
            if let Err(e) = rt.check_hccl(code, "HcclDeregisterGlobalMem") {
                crate::log_warn!("{}", e.message);
            }
        }
    }
}

/// Direction of a batched one-sided operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OneSided {
    /// Remote → local (`HcclBatchGet`).
    Get,
    /// Local → remote (`HcclBatchPut`).
    Put,
}

/// A reusable buffer of one-sided operation descriptors, so that a link can
/// submit batches without allocating per call.
#[derive(Default)]
pub struct DescBuf(Vec<b::HcclOneSideOpDesc>);

// SAFETY: the descriptors hold plain addresses (never dereferenced by Rust); the
// buffer is only handed to HCCL by the thread that owns it.
unsafe impl Send for DescBuf {}

/// A live HCCL communicator. Unbinds its memory, then destroys the communicator,
/// on drop.
pub struct HcclComm {
    ctx: Arc<AclContext>,
    rt: Arc<AscendRuntime>,
    raw: b::HcclComm,
    rank: u32,
    bound: Mutex<Vec<Arc<GlobalMem>>>,
}

// SAFETY: the communicator handle may be used from any thread; mutable bookkeeping
// is behind mutexes. HCCL documents per-communicator calls as thread-safe for
// one-sided operations; callers serialise `create`/drop.
unsafe impl Send for HcclComm {}
// SAFETY: see `Send`.
unsafe impl Sync for HcclComm {}

impl std::fmt::Debug for HcclComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HcclComm")
            .field("rank", &self.rank)
            .finish_non_exhaustive()
    }
}

/// `HcclCommConfigInit` is a header-only inline function in CANN; this is its
/// equivalent: size / magic word / version prefix, then "not set" defaults.
fn init_config(cfg: &CommConfig) -> Result<b::HcclCommConfig> {
    // SAFETY: HcclCommConfig is plain old data; all-zero is a valid bit pattern.
    let mut c: b::HcclCommConfig = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<b::HcclCommConfig>();
    let mut prefix = [0u8; 24];
    prefix[..8].copy_from_slice(&(size as u64).to_ne_bytes());
    prefix[8..12].copy_from_slice(&(b::HCCL_COMM_CONFIG_MAGIC_WORD as u32).to_ne_bytes());
    prefix[12..16].copy_from_slice(&(b::HCCL_COMM_CONFIG_VERSION as u32).to_ne_bytes());
    for (dst, src) in c.reserved.iter_mut().zip(prefix) {
        *dst = src as std::ffi::c_char;
    }
    c.hcclBufferSize = cfg
        .buffer_size_mb
        .unwrap_or(b::HCCL_COMM_BUFFSIZE_CONFIG_NOT_SET as u32);
    c.hcclDeterministic = b::HCCL_COMM_DETERMINISTIC_CONFIG_NOT_SET as u32;
    c.hcclRdmaTrafficClass = cfg
        .rdma_traffic_class
        .unwrap_or(b::HCCL_COMM_TRAFFIC_CLASS_CONFIG_NOT_SET as u32);
    c.hcclRdmaServiceLevel = cfg
        .rdma_service_level
        .unwrap_or(b::HCCL_COMM_SERVICE_LEVEL_CONFIG_NOT_SET as u32);
    c.hcclExecTimeOut = cfg
        .exec_timeout_s
        .unwrap_or(b::HCCL_COMM_EXECTIMEOUT_CONFIG_NOT_SET);
    c.hcclQos = b::HCCL_COMM_QOS_CONFIG_NOT_SET as u32;
    c.hcclSymWinMaxMemSizePerRank = 16;
    let name = cfg.name.as_bytes();
    if name.is_empty() || name.len() >= c.hcclCommName.len() || name.contains(&0) {
        bail!(
            ParamInvalid,
            "communicator name must be 1..{} bytes without NUL",
            c.hcclCommName.len()
        );
    }
    for (dst, src) in c.hcclCommName.iter_mut().zip(name) {
        *dst = *src as std::ffi::c_char;
    }
    Ok(c)
}

fn mem_type(p: Placement) -> b::HcclMemType {
    match p {
        Placement::Device => b::HcclMemType_HCCL_MEM_TYPE_DEVICE,
        Placement::Host => b::HcclMemType_HCCL_MEM_TYPE_HOST,
    }
}

fn whole_seconds(d: Duration) -> i32 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(s.max(1)).unwrap_or(i32::MAX)
}

impl HcclComm {
    /// Creates this rank's communicator from an HCCL rank-table JSON string
    /// (`HcclCommInitClusterInfoMemConfig`) on `ctx`'s device, serialised with
    /// every other creation and destruction in the process. A transient
    /// `HCCL_E_UNAVAIL` / `HCCL_E_AGAIN` is retried with back-off until `deadline`.
    pub fn create(
        ctx: &Arc<AclContext>,
        rank_table_json: &str,
        rank: u32,
        config: &CommConfig,
        deadline: Instant,
    ) -> Result<HcclComm> {
        let runtime = ctx.runtime().clone();
        let init = hccl_fn!(runtime, HcclCommInitClusterInfoMemConfig)?;
        let Ok(table) = CString::new(rank_table_json) else {
            bail!(ParamInvalid, "rank table contains a NUL byte");
        };
        let mut cfg = init_config(config)?;
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut raw: b::HcclComm = std::ptr::null_mut();
            let code = {
                let _one = COMM_LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
                ctx.bind_thread()?;
                // SAFETY: all pointers are valid for the call; `raw` is an out-pointer.
                unsafe { init(table.as_ptr(), rank, &mut cfg, &mut raw) }
            };
            let transient =
                code == b::HcclResult_HCCL_E_UNAVAIL || code == b::HcclResult_HCCL_E_AGAIN;
            if transient && Instant::now() + backoff < deadline {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            runtime.check_hccl(
                code,
                format_args!(
                    "HcclCommInitClusterInfoMemConfig(rank {rank}, \"{}\")",
                    config.name
                ),
            )?;
            if raw.is_null() {
                bail!(
                    Failed,
                    "HcclCommInitClusterInfoMemConfig returned success but no communicator"
                );
            }
            return Ok(HcclComm {
                ctx: Arc::clone(ctx),
                rt: runtime,
                raw,
                rank,
                bound: Mutex::new(Vec::new()),
            });
        }
    }

    /// This rank's id in the communicator.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Makes a registered region reachable through this communicator
    /// (`HcclCommBindMem`); a region already bound is skipped (HCCL refuses a
    /// second bind). Bind before `prepare`: HCCL exchanges bound memory once.
    /// The communicator keeps `mem` alive until it is dropped.
    pub fn bind(&self, mem: &Arc<GlobalMem>) -> Result<()> {
        if mem.key.0 != self.rt.acl_identity() || mem.ctx.device_id() != self.ctx.device_id() {
            bail!(
                ParamInvalid,
                "HcclCommBindMem: region registered with a different runtime or device"
            );
        }
        let mut bound = self.lock_bound();
        if bound.iter().any(|m| m.handle == mem.handle) {
            return Ok(());
        }
        let bind = hccl_fn!(self.rt, HcclCommBindMem)?;
        self.ctx.bind_thread()?;
        // SAFETY: live communicator and a live registration handle.
        let code = unsafe { bind(self.raw, mem.handle) };
        self.rt.check_hccl(
            code,
            format_args!("HcclCommBindMem(0x{:x}, {})", mem.addr, mem.len),
        )?;
        bound.push(Arc::clone(mem));
        Ok(())
    }

    /// Registers `[addr, addr+len)` for one-sided access and binds it to this
    /// communicator (`HcclRegisterGlobalMem` + `HcclCommBindMem`). The
    /// registration ends with the communicator (or its last other user).
    #[cfg(any(test, feature = "testing"))]
    pub fn register(&self, addr: u64, len: u64, placement: Placement) -> Result<()> {
        let mem = GlobalMem::register(&self.ctx, addr, len, placement)?;
        self.bind(&mem)
    }

    /// Sets up connections to every peer and shares bound memory
    /// (`HcclCommPrepare`, full mesh). Blocks up to `timeout` (rounded up to seconds).
    pub fn prepare(&self, timeout: Duration) -> Result<()> {
        let prepare = hccl_fn!(self.rt, HcclCommPrepare)?;
        let cfg = b::HcclPrepareConfig {
            topoType: b::HcclTopoType_HCCL_TOPO_FULLMESH,
            rsvd0: 0,
            rsvd1: 0,
            rsvd2: 0,
        };
        self.ctx.bind_thread()?;
        // SAFETY: live communicator; `cfg` valid for the call.
        let code = unsafe { prepare(self.raw, &cfg, whole_seconds(timeout)) };
        self.rt.check_hccl(code, "HcclCommPrepare")
    }

    /// Queues reads of `(local_addr, remote_addr, len)` segments from `remote_rank`
    /// on `stream` (`HcclBatchGet`). Complete with [`Stream::synchronize`].
    #[cfg(any(test, feature = "testing"))]
    pub fn batch_get(
        &self,
        remote_rank: u32,
        ops: &[(u64, u64, u64)],
        stream: &Stream,
    ) -> Result<()> {
        let mut buf = DescBuf::default();
        self.submit(
            OneSided::Get,
            remote_rank,
            ops.iter().copied(),
            &mut buf,
            stream,
        )
    }

    /// Queues writes of `(local_addr, remote_addr, len)` segments to `remote_rank`
    /// on `stream` (`HcclBatchPut`). Complete with [`Stream::synchronize`].
    #[cfg(any(test, feature = "testing"))]
    pub fn batch_put(
        &self,
        remote_rank: u32,
        ops: &[(u64, u64, u64)],
        stream: &Stream,
    ) -> Result<()> {
        let mut buf = DescBuf::default();
        self.submit(
            OneSided::Put,
            remote_rank,
            ops.iter().copied(),
            &mut buf,
            stream,
        )
    }

    /// Queues the segments of a transfer plan: for `Get` each segment's `dst` is
    /// local and `src` remote, for `Put` the reverse. Uses `buf` as scratch.
    pub fn submit_segments(
        &self,
        op: OneSided,
        remote_rank: u32,
        segs: &[Segment],
        buf: &mut DescBuf,
        stream: &Stream,
    ) -> Result<()> {
        let ops = segs.iter().map(|s| match op {
            OneSided::Get => (s.dst, s.src, s.len),
            OneSided::Put => (s.src, s.dst, s.len),
        });
        self.submit(op, remote_rank, ops, buf, stream)
    }

    /// Queues `(local_addr, remote_addr, len)` operations on `stream` as
    /// `HcclBatchGet` / `HcclBatchPut` calls of at most [`MAX_DESCS_PER_CALL`]
    /// descriptors each, built in `buf` (reused across calls). Nothing is queued
    /// if a segment is invalid; after a failed call the earlier ones (and the
    /// failing call's leading descriptors) may be queued, so the caller drains
    /// the stream either way.
    pub fn submit(
        &self,
        op: OneSided,
        remote_rank: u32,
        ops: impl Iterator<Item = (u64, u64, u64)>,
        buf: &mut DescBuf,
        stream: &Stream,
    ) -> Result<()> {
        let (f, what) = match op {
            OneSided::Get => (hccl_fn!(self.rt, HcclBatchGet)?, "HcclBatchGet"),
            OneSided::Put => (hccl_fn!(self.rt, HcclBatchPut)?, "HcclBatchPut"),
        };
        if remote_rank == self.rank {
            bail!(ParamInvalid, "{what} to own rank {remote_rank}");
        }
        if !Arc::ptr_eq(stream.runtime(), &self.rt) {
            bail!(
                ParamInvalid,
                "{what}: stream belongs to a different runtime"
            );
        }
        let descs = &mut buf.0;
        descs.clear();
        for (i, (local, remote, len)) in ops.enumerate() {
            if local == 0 || remote == 0 || len == 0 {
                bail!(
                    ParamInvalid,
                    "{what}: segment {i} (local 0x{local:x}, remote 0x{remote:x}, len {len}) is empty or null"
                );
            }
            descs.push(b::HcclOneSideOpDesc {
                localAddr: local as *mut c_void,
                remoteAddr: remote as *mut c_void,
                count: len,
                dataType: b::HcclDataType_HCCL_DATA_TYPE_UINT8,
            });
        }
        let total = descs.len();
        for (k, chunk) in descs.chunks_mut(MAX_DESCS_PER_CALL).enumerate() {
            let n = chunk.len() as u32;
            // SAFETY: live communicator and stream; `chunk` outlives the call (HCCL
            // copies the descriptors at submission).
            let code = unsafe { f(self.raw, remote_rank, chunk.as_mut_ptr(), n, stream.raw()) };
            self.rt.check_hccl(
                code,
                format_args!(
                    "{what}({n} of {total} segments from segment {}, remote rank {remote_rank})",
                    k * MAX_DESCS_PER_CALL
                ),
            )?;
        }
        Ok(())
    }

    fn lock_bound(&self) -> std::sync::MutexGuard<'_, Vec<Arc<GlobalMem>>> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for HcclComm {
    fn drop(&mut self) {
        let h = self.rt.hccl;
        if let Err(e) = self.ctx.bind_thread() {
            crate::log_warn!("{}", e.message);
        }
        // Unbind before destroying (HCCL refuses to destroy a communicator with
        // memory bound); each region is deregistered when its last holder (this
        // communicator, other communicators, the backend) drops it.
        let bound = std::mem::take(&mut *self.lock_bound());
        let mut unbound_all = true;
        if let Some(unbind) = h.HcclCommUnbindMem {
            for m in &bound {
                // SAFETY: the handle is bound to this live communicator.
                let code = unsafe { unbind(self.raw, m.handle) };
                if let Err(e) = self.rt.check_hccl(code, "HcclCommUnbindMem") {
                    crate::log_warn!("{}", e.message);
                    unbound_all = false;
                }
            }
        } else {
            unbound_all = bound.is_empty();
        }
        if let (Some(destroy), true) = (h.HcclCommDestroy, unbound_all) {
            let _one = COMM_LIFECYCLE.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: live communicator, destroyed exactly once.
            let code = unsafe { destroy(self.raw) };
            if let Err(e) = self.rt.check_hccl(code, "HcclCommDestroy") {
                crate::log_warn!("{}", e.message);
            }
        } else if !unbound_all {
            crate::log_warn!("leaking an HCCL communicator whose memory could not be unbound");
            // A region still bound must not be deregistered either.
            std::mem::forget(bound);
            return;
        }
        drop(bound);
    }
}
