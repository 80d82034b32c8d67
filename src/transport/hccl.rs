//! HCCL one-sided transport: a communicator built from a rank table, registered
//! memory made known to peers, and batched one-sided get/put on an ACL stream.
//!
//! Typical use (both ranks, same order of calls):
//! `create` → `register` (each region) → `exchange_mem_desc` and/or `prepare` →
//! `batch_get` / `batch_put` → `Stream::synchronize`.

use std::ffi::{c_void, CString};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::types::Placement;
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
}

/// One registered region: the global-memory handle bound to the communicator.
struct Region {
    handle: *mut c_void,
    addr: u64,
    len: u64,
    placement: Placement,
}

/// A live HCCL communicator. Unbinds and deregisters its memory, then destroys the
/// communicator, on drop.
pub struct HcclComm {
    rt: Arc<AscendRuntime>,
    raw: b::HcclComm,
    rank: u32,
    regions: Mutex<Vec<Region>>,
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
    c.hcclRdmaTrafficClass = b::HCCL_COMM_TRAFFIC_CLASS_CONFIG_NOT_SET as u32;
    c.hcclRdmaServiceLevel = b::HCCL_COMM_SERVICE_LEVEL_CONFIG_NOT_SET as u32;
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
            &format!("HcclCommInitClusterInfoMemConfig(rank {rank})"),
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
            regions: Mutex::new(Vec::new()),
            descs: Mutex::new(Vec::new()),
        })
    }

    /// This rank's id in the communicator.
    pub fn rank(&self) -> u32 {
        self.rank
    }

    /// Registers `[addr, addr+len)` for one-sided access (`HcclRegisterGlobalMem` +
    /// `HcclCommBindMem`). Register before `prepare` / `exchange_mem_desc`.
    pub fn register(&self, addr: u64, len: u64, placement: Placement) -> Result<()> {
        if addr == 0 || len == 0 {
            bail!(
                ParamInvalid,
                "cannot register an empty or null region (0x{addr:x}, {len})"
            );
        }
        if addr.checked_add(len).is_none() {
            bail!(ParamInvalid, "region 0x{addr:x}+{len} overflows");
        }
        let reg = hccl_fn!(self.rt, HcclRegisterGlobalMem)?;
        let bind = hccl_fn!(self.rt, HcclCommBindMem)?;
        let mem = b::HcclMem {
            type_: mem_type(placement),
            addr: addr as *mut c_void,
            size: len,
        };
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: `mem` and `handle` are valid for the call.
        let code = unsafe { reg(&mem, &mut handle) };
        self.rt
            .check_hccl(code, &format!("HcclRegisterGlobalMem(0x{addr:x}, {len})"))?;
        // SAFETY: live communicator and a handle just returned by HCCL.
        let code = unsafe { bind(self.raw, handle) };
        if let Err(e) = self.rt.check_hccl(code, "HcclCommBindMem") {
            if let Some(dereg) = self.rt.hccl.HcclDeregisterGlobalMem {
                // SAFETY: the handle is registered and not bound.
                let _ = unsafe { dereg(handle) };
            }
            return Err(e);
        }
        self.lock_regions().push(Region {
            handle,
            addr,
            len,
            placement,
        });
        Ok(())
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
        for r in self.lock_regions().iter() {
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
            self.rt
                .check_hccl(code, &format!("HcclRegisterMem(0x{:x}, {})", r.addr, r.len))?;
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
            &format!("HcclExchangeMemDesc(remote rank {remote_rank})"),
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
        let get = hccl_fn!(self.rt, HcclBatchGet)?;
        self.batch(remote_rank, ops, stream, get, "HcclBatchGet")
    }

    /// Queues writes of `(local_addr, remote_addr, len)` segments to `remote_rank`
    /// on `stream` (`HcclBatchPut`). Complete with [`Stream::synchronize`].
    pub fn batch_put(
        &self,
        remote_rank: u32,
        ops: &[(u64, u64, u64)],
        stream: &Stream,
    ) -> Result<()> {
        let put = hccl_fn!(self.rt, HcclBatchPut)?;
        self.batch(remote_rank, ops, stream, put, "HcclBatchPut")
    }

    fn batch(
        &self,
        remote_rank: u32,
        ops: &[(u64, u64, u64)],
        stream: &Stream,
        f: b::HcclBatchGet_fn,
        what: &str,
    ) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        if remote_rank == self.rank {
            bail!(ParamInvalid, "{what} to own rank {remote_rank}");
        }
        if !Arc::ptr_eq(stream.runtime(), &self.rt) {
            bail!(
                ParamInvalid,
                "{what}: stream belongs to a different runtime"
            );
        }
        let Ok(n) = u32::try_from(ops.len()) else {
            bail!(ParamInvalid, "{what}: {} segments exceed u32", ops.len());
        };
        let mut descs = Vec::with_capacity(ops.len());
        for (i, &(local, remote, len)) in ops.iter().enumerate() {
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
        // SAFETY: live communicator and stream; `descs` outlives the call (HCCL copies
        // the descriptors at submission).
        let code = unsafe { f(self.raw, remote_rank, descs.as_mut_ptr(), n, stream.raw()) };
        self.rt.check_hccl(
            code,
            &format!("{what}({n} segments, remote rank {remote_rank})"),
        )
    }

    fn lock_regions(&self) -> std::sync::MutexGuard<'_, Vec<Region>> {
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
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
        let regions = std::mem::take(&mut *self.lock_regions());
        for r in regions {
            if let Some(unbind) = h.HcclCommUnbindMem {
                // SAFETY: the handle is bound to this live communicator.
                let _ = unsafe { unbind(self.raw, r.handle) };
            }
            if let Some(dereg) = h.HcclDeregisterGlobalMem {
                // SAFETY: registered handle, no longer bound.
                let _ = unsafe { dereg(r.handle) };
            }
        }
        if let Some(destroy) = h.HcclCommDestroy {
            // SAFETY: live communicator, destroyed exactly once.
            let _ = unsafe { destroy(self.raw) };
        }
    }
}
