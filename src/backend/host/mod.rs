//! The host backend: host memory pools (`device::pool::Pool`, memfd-backed
//! and shareable with same-host peers), memcpy for local copies, and the
//! one-sided paths of links to this process or to a proven same-host peer
//! ([`same_host`]). Links to other hosts use TCP, the engine's own path.

pub mod same_host;

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Capabilities, Device, Factory};
use crate::cache::types::{Placement, Plan};
use crate::device::config::{DeviceConfig, PoolConfig};
use crate::device::pool::Pool;
use crate::status::Result;
use crate::transport::local;

pub use same_host::{local_path, same_host};

/// The host backend's factory (it always opens).
pub static FACTORY: HostFactory = HostFactory;

/// Opens the host backend.
pub struct HostFactory;

impl Factory for HostFactory {
    fn name(&self) -> &'static str {
        "host"
    }

    fn open(&self, _config: &DeviceConfig) -> Result<Result<Arc<dyn Device>>> {
        Ok(Ok(Arc::new(HostDevice)))
    }
}

/// Host memory; TCP, same-host one-sided copies or memcpy between peers.
#[derive(Debug)]
pub struct HostDevice;

impl Device for HostDevice {
    fn name(&self) -> &'static str {
        "host"
    }

    /// `LLMDD_BACKEND_HOST`.
    fn abi_code(&self) -> u32 {
        0
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            same_host_paths: true,
            hccl_links: false,
            register_before_link: false,
        }
    }

    fn create_pool(&self, name: &str, _placement: Placement, cfg: PoolConfig) -> Result<Arc<Pool>> {
        Pool::new(name, cfg.memory_size, cfg.page_shift).map(Arc::new)
    }

    fn copy_local(
        &self,
        plan: &Plan,
        _src: Placement,
        _dst: Placement,
        _pageable: bool,
        _timeout: Duration,
    ) -> Result<()> {
        // SAFETY: a plan: both sides are this process's caches or host
        // memory the caller named.
        unsafe { local::memcpy_segments(plan) };
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
