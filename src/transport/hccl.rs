//! HCCL one-sided transport: a communicator built from a rank table, registered
//! memory made known to peers, and batched one-sided get/put on an ACL stream.
//!
//! Memory is registered once per process ([`GlobalMem`], `HcclRegisterGlobalMem`)
//! and bound to every communicator that should reach it ([`HcclComm::bind`]).
//! Typical use (both ranks, same order of calls):
//! `create` → `bind` (each region) → `prepare` (or `exchange_mem_desc`) →
//! `submit` / `batch_get` / `batch_put` → `Stream::synchronize`.

use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::types::{Placement, Segment};
use crate::device::acl::Stream;
use crate::status::Result;
use crate::sys::ascend_bindings as b;
use crate::sys::loader::AscendRuntime;
use crate::{bail, hccl_fn};

/// Options for [`HcclComm::create`].
#[derive(Clone, Debug, Default)]
pub struct CommConfig {
    /// Communicator name (unique in the process; at most 127 bytes). Empty: HCCL default.
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

/// A region registered for one-sided access in this process
/// (`HcclRegisterGlobalMem`); deregistered when the last reference drops. Bind it
/// to communicators with [`HcclComm::bind`]; a communicator keeps the regions it
/// bound alive and unbinds them before it is destroyed.
pub struct GlobalMem {
    rt: Arc<AscendRuntime>,
    handle: *mut c_void,
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
    /// Registers `[addr, addr+len)` of `placement` memory with HCCL.
    /// Errors: `ParamInvalid` for an empty, null or overflowing range; the mapped
    /// HCCL status otherwise.
    pub fn register(
        runtime: &Arc<AscendRuntime>,
        addr: u64,
        len: u64,
        placement: Placement,
    ) -> Result<GlobalMem> {
        if addr == 0 || len == 0 {
            bail!(
                ParamInvalid,
                "cannot register an empty or null region (0x{addr:x}, {len})"
            );
        }
        if addr.checked_add(len).is_none() {
            bail!(ParamInvalid, "region 0x{addr:x}+{len} overflows");
        }
        let reg = hccl_fn!(runtime, HcclRegisterGlobalMem)?;
        let mem = b::HcclMem {
            type_: mem_type(placement),
            addr: addr as *mut c_void,
            size: len,
        };
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: `mem` and `handle` are valid for the call.
        let code = unsafe { reg(&mem, &mut handle) };
        runtime.check_hccl(
            code,
            format_args!("HcclRegisterGlobalMem(0x{addr:x}, {len})"),
        )?;
        if handle.is_null() {
            bail!(
                Failed,
                "HcclRegisterGlobalMem(0x{addr:x}, {len}) returned success but no handle"
            );
        }
        Ok(GlobalMem {
            rt: Arc::clone(runtime),
            handle,
            addr,
            len,
            placement,
        })
    }

    /// Start address of the region.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Length of the region in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: empty regions cannot be registered.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Placement the region was registered with.
    pub fn placement(&self) -> Placement {
        self.placement
    }
}

impl Drop for GlobalMem {
    fn drop(&mut self) {
        if let Some(dereg) = self.rt.hccl.HcclDeregisterGlobalMem {
            // SAFETY: a handle from HcclRegisterGlobalMem, no longer bound to any
            // communicator (each communicator holds an Arc until it unbinds).
            let code = unsafe { dereg(self.handle) };
            if let Err(e) = self.rt.check_hccl(code, "HcclDeregisterGlobalMem") {
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
    rt: Arc<AscendRuntime>,
    raw: b::HcclComm,
    rank: u32,
    bound: Mutex<Vec<Arc<GlobalMem>>>,
    descs: Mutex<Vec<b::HcclMemDesc>>,
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
    if name.len() >= c.hcclCommName.len() || name.contains(&0) {
        bail!(
            ParamInvalid,
            "communicator name must be under {} bytes without NUL",
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
    /// (`HcclCommInitClusterInfoMemConfig`).
    pub fn create(
        runtime: Arc<AscendRuntime>,
        rank_table_json: &str,
        rank: u32,
        config: &CommConfig,
    ) -> Result<HcclComm> {
        let init = hccl_fn!(runtime, HcclCommInitClusterInfoMemConfig)?;
        let Ok(table) = CString::new(rank_table_json) else {
            bail!(ParamInvalid, "rank table contains a NUL byte");
        };
        let mut cfg = init_config(config)?;
        let mut raw: b::HcclComm = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; `raw` is an out-pointer.
        let code = unsafe { init(table.as_ptr(), rank, &mut cfg, &mut raw) };
        runtime.check_hccl(
            code,
            format_args!("HcclCommInitClusterInfoMemConfig(rank {rank})"),
        )?;
        if raw.is_null() {
            bail!(
                Failed,
                "HcclCommInitClusterInfoMemConfig returned success but no communicator"
            );
        }
        Ok(HcclComm {
            rt: runtime,
            raw,
            rank,
            bound: Mutex::new(Vec::new()),
            descs: Mutex::new(Vec::new()),
        })
    }

    /// This rank's id in the communicator.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Makes a registered region reachable through this communicator
    /// (`HcclCommBindMem`). Bind before `prepare`; the communicator keeps `mem`
    /// alive until it is dropped.
    pub fn bind(&self, mem: &Arc<GlobalMem>) -> Result<()> {
        if !Arc::ptr_eq(&mem.rt, &self.rt) {
            bail!(
                ParamInvalid,
                "HcclCommBindMem: region registered with a different runtime"
            );
        }
        let bind = hccl_fn!(self.rt, HcclCommBindMem)?;
        // SAFETY: live communicator and a live registration handle.
        let code = unsafe { bind(self.raw, mem.handle) };
        self.rt.check_hccl(
            code,
            format_args!("HcclCommBindMem(0x{:x}, {})", mem.addr, mem.len),
        )?;
        self.lock_bound().push(Arc::clone(mem));
        Ok(())
    }

    /// Registers `[addr, addr+len)` for one-sided access and binds it to this
    /// communicator (`HcclRegisterGlobalMem` + `HcclCommBindMem`). The
    /// registration ends with the communicator.
    pub fn register(&self, addr: u64, len: u64, placement: Placement) -> Result<()> {
        let mem = Arc::new(GlobalMem::register(&self.rt, addr, len, placement)?);
        self.bind(&mem)
    }

    /// Describes every registered region to `remote_rank` and receives its
    /// descriptors (`HcclRegisterMem` + `HcclExchangeMemDesc`). Both ranks must call
    /// it. Returns how many descriptors the peer sent.
    pub fn exchange_mem_desc(&self, remote_rank: u32, timeout: Duration) -> Result<usize> {
        if remote_rank == self.rank {
            bail!(
                ParamInvalid,
                "cannot exchange descriptors with own rank {remote_rank}"
            );
        }
        let register = hccl_fn!(self.rt, HcclRegisterMem)?;
        let exchange = hccl_fn!(self.rt, HcclExchangeMemDesc)?;
        let mut local: Vec<b::HcclMemDesc> = Vec::new();
        for r in self.lock_bound().iter() {
            // SAFETY: plain old data.
            let mut d: b::HcclMemDesc = unsafe { std::mem::zeroed() };
            // SAFETY: live communicator; `d` is a valid out-pointer.
            let code = unsafe {
                register(
                    self.raw,
                    remote_rank,
                    mem_type(r.placement) as i32,
                    r.addr as *mut c_void,
                    r.len,
                    &mut d,
                )
            };
            self.rt.check_hccl(
                code,
                format_args!("HcclRegisterMem(0x{:x}, {})", r.addr, r.len),
            )?;
            local.push(d);
        }
        // Room for up to 256 peer descriptors (more is reported through actual_num).
        // SAFETY: plain old data.
        let mut remote: Vec<b::HcclMemDesc> = vec![unsafe { std::mem::zeroed() }; 256];
        let mut local_descs = b::HcclMemDescs {
            array: local.as_mut_ptr(),
            arrayLength: local.len() as u32,
        };
        let mut remote_descs = b::HcclMemDescs {
            array: remote.as_mut_ptr(),
            arrayLength: remote.len() as u32,
        };
        let mut actual = 0u32;
        // SAFETY: both arrays outlive the call; lengths match the vectors.
        let code = unsafe {
            exchange(
                self.raw,
                remote_rank,
                &mut local_descs,
                whole_seconds(timeout),
                &mut remote_descs,
                &mut actual,
            )
        };
        self.lock_descs().extend(local.iter().copied());
        self.rt.check_hccl(
            code,
            format_args!("HcclExchangeMemDesc(remote rank {remote_rank})"),
        )?;
        Ok(actual as usize)
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
        // SAFETY: live communicator; `cfg` valid for the call.
        let code = unsafe { prepare(self.raw, &cfg, whole_seconds(timeout)) };
        self.rt.check_hccl(code, "HcclCommPrepare")
    }

    /// Queues reads of `(local_addr, remote_addr, len)` segments from `remote_rank`
    /// on `stream` (`HcclBatchGet`). Complete with [`Stream::synchronize`].
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

    /// Queues `(local_addr, remote_addr, len)` operations on `stream` as one
    /// `HcclBatchGet` / `HcclBatchPut`, building the descriptors in `buf`
    /// (reused across calls). Nothing is queued if a segment is invalid.
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
        if descs.is_empty() {
            return Ok(());
        }
        let Ok(n) = u32::try_from(descs.len()) else {
            bail!(ParamInvalid, "{what}: {} segments exceed u32", descs.len());
        };
        // SAFETY: live communicator and stream; `descs` outlives the call (HCCL
        // copies the descriptors at submission).
        let code = unsafe { f(self.raw, remote_rank, descs.as_mut_ptr(), n, stream.raw()) };
        self.rt.check_hccl(
            code,
            format_args!("{what}({n} segments, remote rank {remote_rank})"),
        )
    }

    fn lock_bound(&self) -> std::sync::MutexGuard<'_, Vec<Arc<GlobalMem>>> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_descs(&self) -> std::sync::MutexGuard<'_, Vec<b::HcclMemDesc>> {
        self.descs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for HcclComm {
    fn drop(&mut self) {
        let h = self.rt.hccl;
        let descs = std::mem::take(&mut *self.lock_descs());
        if let Some(dereg) = h.HcclDeregisterMem {
            for mut d in descs {
                // SAFETY: live communicator; descriptor from HcclRegisterMem.
                let _ = unsafe { dereg(self.raw, &mut d) };
            }
        }
        // Unbind before destroying; each region is deregistered when its last
        // holder (this communicator, other communicators, the backend) drops it.
        let bound = std::mem::take(&mut *self.lock_bound());
        if let Some(unbind) = h.HcclCommUnbindMem {
            for m in &bound {
                // SAFETY: the handle is bound to this live communicator.
                let code = unsafe { unbind(self.raw, m.handle) };
                if let Err(e) = self.rt.check_hccl(code, "HcclCommUnbindMem") {
                    crate::log_warn!("{}", e.message);
                }
            }
        }
        if let Some(destroy) = h.HcclCommDestroy {
            // SAFETY: live communicator, destroyed exactly once.
            let code = unsafe { destroy(self.raw) };
            if let Err(e) = self.rt.check_hccl(code, "HcclCommDestroy") {
                crate::log_warn!("{}", e.message);
            }
        }
        drop(bound);
    }
}
