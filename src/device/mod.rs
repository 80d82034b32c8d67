//! Memory owners and backend selection: host memory pools (the embedded default) and
//! the dlopen'd Ascend runtime (ACL + HCCL).

pub mod acl;
pub mod acl_backend;
pub mod config;
pub mod endpoint;
pub mod nic;
pub mod pool;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::types::{Placement, Plan};
use crate::device::acl_backend::AclBackend;
use crate::device::endpoint::LocalDevice;
use crate::device::pool::Pool;
use crate::log_info;
use crate::status::{Error, Result};
use crate::transport::local;
pub use config::{AclOptions, BackendChoice, DeviceConfig, PoolConfig};

/// The backend an instance runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Host memory; TCP, same-host one-sided copies or memcpy between peers.
    Host,
    /// ACL memory and HCCL one-sided transfers.
    Acl(Arc<AclBackend>),
}

/// What the backend an instance runs on can do: the questions the API layer
/// asks instead of testing which backend it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Peers on this host may move bytes one-sidedly (memcpy, mapped pools,
    /// `process_vm_readv`): the memory is host-addressable.
    pub same_host_paths: bool,
    /// Links move bytes over HCCL communicators: each end announces a device
    /// endpoint in the handshake, and a rank table names device IPs.
    pub hccl_links: bool,
    /// Remote-accessible memory must be registered before any link exists
    /// (each link binds the registered memory once, when it is created).
    pub register_before_link: bool,
}

impl Backend {
    /// The acl backend's state, if that is the backend.
    pub fn acl(&self) -> Option<&Arc<AclBackend>> {
        match self {
            Backend::Acl(a) => Some(a),
            Backend::Host => None,
        }
    }

    /// What this backend can do.
    pub fn capabilities(&self) -> Capabilities {
        let acl = self.acl().is_some();
        Capabilities {
            same_host_paths: !acl,
            hccl_links: acl,
            register_before_link: acl,
        }
    }

    /// A memory pool of `cfg.memory_size` bytes for `placement`: one ACL
    /// allocation registered with HCCL on acl, a shareable host pool
    /// (`name`) on host.
    pub fn create_pool(
        &self,
        name: &str,
        placement: Placement,
        cfg: PoolConfig,
    ) -> Result<Arc<Pool>> {
        match self.acl() {
            Some(acl) => acl.create_pool(placement, cfg),
            None => Pool::new(name, cfg.memory_size, cfg.page_shift).map(Arc::new),
        }
    }

    /// Copies `plan` between two local memories of placements `src` and `dst`
    /// within `timeout`: ACL memcpy on acl, memcpy on host. `pageable`: one
    /// side is unregistered (possibly unpinned) host memory.
    pub fn copy_local(
        &self,
        plan: &Plan,
        src: Placement,
        dst: Placement,
        pageable: bool,
        timeout: Duration,
    ) -> Result<()> {
        match self.acl() {
            Some(acl) => acl.copy(plan, src, dst, pageable, timeout),
            None => {
                // SAFETY: a plan: both sides are this process's caches or
                // host memory the caller named.
                unsafe { local::memcpy_segments(plan) };
                Ok(())
            }
        }
    }

    /// Drops what the backend holds for registered cache `id` (its HCCL
    /// registrations on acl; nothing on host).
    pub fn unregister_cache(&self, id: i64) {
        if let Some(acl) = self.acl() {
            acl.unregister_cache(id);
        }
    }

    /// Releases the backend's registrations and streams (finalize, after all
    /// links); nothing on host.
    pub fn release(&self) {
        if let Some(acl) = self.acl() {
            acl.release();
        }
    }
}

/// Picks the backend for `config` (`llmdd.Backend`) and logs the choice.
///
/// - `host`: the host backend.
/// - `acl`: the Ascend runtime must load, export every symbol the backend
///   needs, and open `llm.DeviceId`; otherwise init fails (`FeatureNotEnabled`
///   naming the libraries and paths tried or the missing symbols; the mapped ACL
///   status when the device cannot be opened).
/// - `auto` (default): acl when all of that succeeds, else host (the reason is
///   logged at info level).
///
/// Once the runtime has loaded, a malformed `llm.LocalCommRes` fails init
/// (`ParamInvalid`) with either choice.
pub fn select_backend(config: &DeviceConfig) -> Result<Backend> {
    let explicit = match config.backend {
        BackendChoice::Host => {
            log_info!("using the host backend (llmdd.Backend=host)");
            return Ok(Backend::Host);
        }
        BackendChoice::Acl => true,
        BackendChoice::Auto => false,
    };
    let fallback = |what: &str, e: Error| -> Result<Backend> {
        if explicit {
            return Err(Error::new(
                e.status,
                format!("llmdd.Backend=acl: {what}{}", e.message),
            ));
        }
        log_info!(
            "using the host backend (llmdd.Backend=auto): {what}{}",
            e.message
        );
        Ok(Backend::Host)
    };
    let rt = match AclBackend::bring_up(config) {
        Ok(rt) => rt,
        Err(e) => return fallback("", e),
    };
    let local = LocalDevice::parse(config.local_comm_res.as_deref())?;
    match AclBackend::open(rt, local, config) {
        Ok(a) => {
            log_info!(
                "using the acl backend (llmdd.Backend={}; {})",
                if explicit { "acl" } else { "auto" },
                a.report()
            );
            Ok(Backend::Acl(Arc::new(a)))
        }
        Err(e) => fallback(&format!("Ascend device {}: ", config.device_id), e),
    }
}
