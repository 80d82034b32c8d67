//! The acl backend of one session: the loaded Ascend runtime and device, memory
//! pools in ACL memory, HCCL registration of every cache and pool (so links can
//! bind them), and local copies with `aclrtMemcpyAsync` on pooled streams.
//!
//! Lifetime: created at `init` (when the backend is selected), released at
//! `finalize` after every link is gone. llmdd calls `aclInit` if nobody did, and
//! never `aclFinalize` / `aclrtResetDevice`: the device belongs to the process.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backend::acl::endpoint::{is_a3_soc, DeviceIdentity, LocalDevice};
use crate::backend::acl::hccl::{CommConfig, GlobalMem};
use crate::backend::acl::nic::{self, HCCN_CONF, HCCN_CONF_ENV};
use crate::backend::acl::runtime::{AclContext, MemcpyKind, Stream};
use crate::cache::types::{Placement, Segment};
use crate::device::config::{DeviceConfig, PoolConfig};
use crate::device::pool::Pool;
use crate::status::{Error, Result, Status};
use crate::sys::ascend_bindings as b;
use crate::sys::loader::AscendRuntime;

/// ACL symbols the backend calls (besides one of the two stream-sync functions).
pub const REQUIRED_ACL: &[&str] = &[
    "aclInit",
    "aclrtSetDevice",
    "aclrtMalloc",
    "aclrtMallocHost",
    "aclrtFree",
    "aclrtFreeHost",
    "aclrtMemcpyAsync",
    "aclrtCreateStream",
    "aclrtDestroyStream",
];

/// Alignment `aclrtMemcpyAsync` needs for both addresses of a device-to-device
/// copy (acl_rt.h); other copies go through synchronous `aclrtMemcpy`.
pub const D2D_ASYNC_ALIGN: u64 = 64;

/// Alignment HCCS needs for the start of a device region not allocated by
/// `aclrtMalloc` (HIXL CacheManager docs; 2 MB pages).
pub(crate) const HCCS_REGION_ALIGN: u64 = 2 << 20;

/// HCCL symbols the backend calls.
pub const REQUIRED_HCCL: &[&str] = &[
    "HcclCommInitClusterInfoMemConfig",
    "HcclCommDestroy",
    "HcclRegisterGlobalMem",
    "HcclDeregisterGlobalMem",
    "HcclCommBindMem",
    "HcclCommUnbindMem",
    "HcclCommPrepare",
    "HcclBatchGet",
    "HcclBatchPut",
];

/// The ACL copy direction for memory of placement `src` to `dst`.
pub fn memcpy_kind(src: Placement, dst: Placement) -> MemcpyKind {
    match (src, dst) {
        (Placement::Host, Placement::Host) => MemcpyKind::HostToHost,
        (Placement::Host, Placement::Device) => MemcpyKind::HostToDevice,
        (Placement::Device, Placement::Host) => MemcpyKind::DeviceToHost,
        (Placement::Device, Placement::Device) => MemcpyKind::DeviceToDevice,
    }
}

/// State of the acl backend of one session.
pub struct AclBackend {
    ctx: Arc<AclContext>,
    local: LocalDevice,
    identity: DeviceIdentity,
    rdma_traffic_class: u32,
    rdma_service_level: u32,
    prepare_timeout: Duration,
    /// HCCL registrations of registered caches, by cache id (one per tensor).
    caches: Mutex<HashMap<i64, Vec<Arc<GlobalMem>>>>,
    /// HCCL registrations of the memory pools.
    pools: Mutex<Vec<Arc<GlobalMem>>>,
    /// Streams for local copies, reused across calls.
    streams: Mutex<Vec<Stream>>,
}

impl std::fmt::Debug for AclBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclBackend")
            .field("runtime", self.ctx.runtime())
            .field("device_id", &self.ctx.device_id())
            .finish_non_exhaustive()
    }
}

impl AclBackend {
    /// Loads the runtime (`llmdd.AscendLibDir`, else `LLMDD_ASCEND_LIB_DIR`, else
    /// the default search) and checks every symbol the backend needs, and that
    /// the HCCL ones are not CANN 9.0 compatibility stubs.
    /// Errors: `FeatureNotEnabled` naming the libraries / symbols that are
    /// missing or stubbed.
    pub fn bring_up(config: &DeviceConfig) -> Result<Arc<AscendRuntime>> {
        let dir = config.ascend_lib_dir.as_deref().map(Path::new);
        let rt = Arc::new(AscendRuntime::load(dir)?);
        rt.require(REQUIRED_ACL, REQUIRED_HCCL)?;
        rt.check_not_stubs(REQUIRED_HCCL)?;
        if rt.acl.aclrtSynchronizeStreamWithTimeout.is_none()
            && rt.acl.aclrtSynchronizeStream.is_none()
        {
            return Err(Error::new(
                Status::FeatureNotEnabled,
                format!(
                    "{} exports neither aclrtSynchronizeStreamWithTimeout nor aclrtSynchronizeStream",
                    rt.acl_path().display()
                ),
            ));
        }
        Ok(rt)
    }

    /// Opens `config.device_id` on a loaded runtime (initialising ACL) and reads
    /// the device's identity: physical id, SoC, A3 super-pod ids, NIC address.
    /// `local` holds the device endpoint hints of `llm.LocalCommRes`
    /// ([`LocalDevice::parse`]); a `device_id` there must be the physical id.
    /// Errors: the mapped ACL status when the device cannot be opened;
    /// `ParamInvalid` for a `llm.LocalCommRes` that names another device.
    pub fn open(
        rt: Arc<AscendRuntime>,
        local: LocalDevice,
        config: &DeviceConfig,
    ) -> Result<AclBackend> {
        let ctx = Arc::new(AclContext::open(rt, config.device_id)?);
        let identity = Self::identity(&ctx, config);
        local.check(&identity)?;
        Ok(AclBackend {
            ctx,
            local,
            identity,
            rdma_traffic_class: config.rdma_traffic_class,
            rdma_service_level: config.rdma_service_level,
            prepare_timeout: config.acl.prepare_timeout,
            caches: Mutex::new(HashMap::new()),
            pools: Mutex::new(Vec::new()),
            streams: Mutex::new(Vec::new()),
        })
    }

    /// What the runtime and the host say about `ctx`'s device.
    fn identity(ctx: &AclContext, config: &DeviceConfig) -> DeviceIdentity {
        let soc = ctx.soc_name();
        let a3 = soc.as_deref().is_some_and(is_a3_soc);
        let super_device_id = a3
            .then(|| ctx.device_info(b::aclrtDevAttr_ACL_DEV_ATTR_SUPER_POD_DEVICE_ID))
            .flatten()
            .and_then(|v| u32::try_from(v).ok());
        let super_pod_id = a3
            .then(|| ctx.device_info(b::aclrtDevAttr_ACL_DEV_ATTR_SUPER_POD_ID))
            .flatten()
            .map(|v| v.to_string());
        let (conf, explicit) = match (&config.acl.hccn_conf, std::env::var_os(HCCN_CONF_ENV)) {
            (Some(p), _) => (p.into(), true),
            (None, Some(p)) if !p.is_empty() => (p.into(), true),
            _ => (std::path::PathBuf::from(HCCN_CONF), false),
        };
        let nic = match ctx.physical_id() {
            Some(phy) => nic::nic_ip(phy, &conf, explicit),
            None => Err("the physical device id is unknown".to_string()),
        };
        DeviceIdentity {
            logical_id: ctx.device_id().max(0) as u32,
            physical_id: ctx.physical_id(),
            soc,
            super_device_id,
            super_pod_id,
            nic,
        }
    }

    /// One line for logs and the bring-up check: libraries, versions, device.
    pub fn report(&self) -> String {
        let rt = self.runtime();
        let versions: Vec<String> = ["cann", "runtime", "hcomm"]
            .iter()
            .filter_map(|p| rt.version(p).map(|v| format!("{p} {v}")))
            .collect();
        let id = &self.identity;
        let phy = id
            .physical_id
            .map_or("unknown".to_string(), |p| p.to_string());
        let nic = match &id.nic {
            Ok((ip, src)) => format!("{ip} (from {src})"),
            Err(why) => format!("none ({why})"),
        };
        let mut line = format!(
            "{}; versions: {}; device {} -> physical {phy}; SoC {}; NIC {nic}",
            rt.describe(),
            if versions.is_empty() {
                "unknown".to_string()
            } else {
                versions.join(", ")
            },
            id.logical_id,
            id.soc.as_deref().unwrap_or("unknown"),
        );
        if let (Some(d), Some(p)) = (id.super_device_id, &id.super_pod_id) {
            line.push_str(&format!("; super_device_id {d}, super_pod_id {p}"));
        }
        line
    }

    /// The device's identity (physical id, SoC, super-pod ids, NIC address).
    pub fn identity_info(&self) -> &DeviceIdentity {
        &self.identity
    }

    /// How long the listening side of a link waits in `HcclCommPrepare`
    /// (`llmdd.HcclPrepareTimeout`).
    pub fn prepare_timeout(&self) -> Duration {
        self.prepare_timeout
    }

    /// The device context.
    pub fn context(&self) -> &Arc<AclContext> {
        &self.ctx
    }

    /// The loaded runtime.
    pub fn runtime(&self) -> &Arc<AscendRuntime> {
        self.ctx.runtime()
    }

    /// Device endpoint hints from `llm.LocalCommRes`.
    pub fn local_device(&self) -> &LocalDevice {
        &self.local
    }

    /// Communicator options for a new link's communicator named `name`.
    pub fn comm_config(&self, name: String) -> CommConfig {
        CommConfig {
            name,
            rdma_traffic_class: Some(self.rdma_traffic_class),
            rdma_service_level: Some(self.rdma_service_level),
            ..CommConfig::default()
        }
    }

    /// Creates a memory pool in one ACL allocation (`aclrtMalloc` for DEVICE,
    /// `aclrtMallocHost` for HOST) and registers it with HCCL.
    /// Errors: `OutOfMemory` when the allocation fails; the mapped HCCL status
    /// when the registration fails.
    pub fn create_pool(&self, placement: Placement, cfg: PoolConfig) -> Result<Arc<Pool>> {
        let pool = Arc::new(Pool::with_acl(
            self.ctx.clone(),
            placement,
            cfg.memory_size,
            cfg.page_shift,
        )?);
        let mem = GlobalMem::register(&self.ctx, pool.base(), pool.size(), placement)?;
        self.lock_pools().push(mem);
        Ok(pool)
    }

    /// Registers every tensor (`tensor_bytes` at each of `addrs`, in
    /// `placement`) of registered, user-owned cache `id` with HCCL so that
    /// links created from now on can bind it. Allocated caches live in a pool,
    /// which is registered as a whole: callers pass only registered caches.
    pub fn register_cache(
        &self,
        id: i64,
        addrs: &[u64],
        tensor_bytes: u64,
        placement: Placement,
    ) -> Result<()> {
        let mut regs = Vec::with_capacity(addrs.len());
        for &a in addrs {
            // An identical range (the same memory registered again, or two
            // tensors at one address) shares its registration.
            regs.push(GlobalMem::register(&self.ctx, a, tensor_bytes, placement)?);
        }
        self.lock_caches().insert(id, regs);
        Ok(())
    }

    /// Drops the HCCL registrations of cache `id` (no link may have it bound).
    pub fn unregister_cache(&self, id: i64) {
        let regs = self.lock_caches().remove(&id);
        if regs.is_some() {
            self.bind_quietly();
        }
        drop(regs);
    }

    /// Binds the device on this thread before HCCL/ACL cleanup calls; a failure
    /// is logged (cleanup goes on).
    fn bind_quietly(&self) {
        if let Err(e) = self.ctx.bind_thread() {
            crate::log_warn!("{}", e.message);
        }
    }

    /// Every registered region once (pools first, then caches by id), for
    /// binding to a new link's communicator.
    pub fn regions(&self) -> Vec<Arc<GlobalMem>> {
        let mut out: Vec<Arc<GlobalMem>> = self.lock_pools().clone();
        let caches = self.lock_caches();
        let mut ids: Vec<&i64> = caches.keys().collect();
        ids.sort_unstable();
        for id in ids {
            for r in &caches[id] {
                if !out.iter().any(|o| Arc::ptr_eq(o, r)) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// Device regions that HCCS may refuse: registered caches (not pools, which
    /// come from `aclrtMalloc`) whose start is not 2 MB aligned. Named in the
    /// warning and in the message of a failed intra-server link.
    pub fn hccs_misaligned(&self) -> Vec<(u64, u64)> {
        let caches = self.lock_caches();
        let mut out: Vec<(u64, u64)> = caches
            .values()
            .flatten()
            .filter(|r| r.placement() == Placement::Device && r.addr() % HCCS_REGION_ALIGN != 0)
            .map(|r| (r.addr(), r.size()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Releases every registration and stream (finalize, after all links).
    /// Pools are freed when the session drops them.
    pub fn release(&self) {
        self.bind_quietly();
        self.lock_caches().clear();
        self.lock_pools().clear();
        self.streams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Copies `segs` from memory of placement `src` to memory of placement `dst`
    /// with `aclrtMemcpyAsync` on a pooled stream, waiting at most `timeout`.
    /// `pageable`: one side is host memory that may not be pinned (an unregistered
    /// host description); ACL copies such memory only synchronously, so each
    /// segment goes through `aclrtMemcpy` instead. A device-to-device segment
    /// whose addresses are not both 64-byte aligned (what `aclrtMemcpyAsync`
    /// needs) is copied with `aclrtMemcpy` too, after the queued ones.
    /// Errors: `Timeout` when the stream does not drain in time; the mapped ACL
    /// status otherwise.
    pub fn copy(
        &self,
        segs: &crate::cache::types::Plan,
        src: Placement,
        dst: Placement,
        pageable: bool,
        timeout: Duration,
    ) -> Result<()> {
        if segs.is_empty() {
            return Ok(());
        }
        self.ctx.bind_thread()?;
        let kind = memcpy_kind(src, dst);
        if pageable {
            for s in segs {
                self.ctx.memcpy_sync(s.dst, s.src, s.len as usize, kind)?;
            }
            return Ok(());
        }
        let stream = match self.streams.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            Some(s) => s,
            None => self.ctx.create_stream()?,
        };
        let aligned = |s: &Segment| {
            kind != MemcpyKind::DeviceToDevice || (s.dst | s.src) % D2D_ASYNC_ALIGN == 0
        };
        // In plan order: a misaligned segment first drains what is queued, so
        // copies that depend on each other (copy_blocks chains) keep their order.
        let mut queued = Ok(());
        let mut synced = Ok(());
        for s in segs {
            if aligned(s) {
                queued = stream.memcpy_async(s.dst, s.src, s.len as usize, kind);
            } else {
                synced = stream.synchronize(timeout);
                if synced.is_ok() {
                    synced = self.ctx.memcpy_sync(s.dst, s.src, s.len as usize, kind);
                }
            }
            if queued.is_err() || synced.is_err() {
                break;
            }
        }
        // Drain what was queued even after a failed submission.
        if synced.is_ok() {
            synced = stream.synchronize(timeout);
        } else {
            let _ = stream.synchronize(timeout);
        }
        match (queued, synced) {
            (Ok(()), Ok(())) => {
                self.streams
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(stream);
                Ok(())
            }
            // A stream that failed or timed out is dropped, not reused.
            (Err(e), _) | (Ok(()), Err(e)) => Err(if e.status == Status::Timeout {
                Error::new(
                    Status::Timeout,
                    format!(
                        "local copy did not finish within {} ms: {}",
                        timeout.as_millis(),
                        e.message
                    ),
                )
            } else {
                e
            }),
        }
    }

    fn lock_caches(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Vec<Arc<GlobalMem>>>> {
        self.caches.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_pools(&self) -> std::sync::MutexGuard<'_, Vec<Arc<GlobalMem>>> {
        self.pools.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memcpy_kinds_follow_placement() {
        use Placement::*;
        assert_eq!(memcpy_kind(Host, Device), MemcpyKind::HostToDevice);
        assert_eq!(memcpy_kind(Device, Host), MemcpyKind::DeviceToHost);
        assert_eq!(memcpy_kind(Device, Device), MemcpyKind::DeviceToDevice);
        assert_eq!(memcpy_kind(Host, Host), MemcpyKind::HostToHost);
    }
}
