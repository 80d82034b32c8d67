//! The host backend: host memory pools (`device::pool::Pool`, memfd-backed
//! and shareable with same-host peers), memcpy for local copies, and the
//! one-sided paths of links to this process or to a proven same-host peer
//! ([`same_host`]). Links to other hosts use TCP, the engine's own path.

pub mod same_host;

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{Capabilities, Communicator, DataPath, Device, Factory, LinkIds};
use crate::cache::types::{Placement, Plan};
use crate::device::config::{DeviceConfig, PoolConfig};
use crate::device::pool::Pool;
use crate::status::Result;
use crate::transport::local;
use crate::transport::wire::DeviceEndpoint;

pub use same_host::{local_path, same_host, SameHostPath, SameProcessPath};

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

    fn report(&self) -> Option<String> {
        None
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

    fn register_memory(&self, _: i64, _: &[u64], _: u64, _: Placement) -> Result<()> {
        Ok(())
    }

    fn unregister_memory(&self, _id: i64) {}

    fn release(&self) {}

    fn offer(&self, _ip: &dyn Fn() -> IpAddr) -> Result<Option<DeviceEndpoint>> {
        Ok(None)
    }

    fn client_path(
        &self,
        _mine: Option<DeviceEndpoint>,
        _theirs: Option<&DeviceEndpoint>,
        _ids: LinkIds,
        _deadline: Instant,
    ) -> Result<Option<Box<dyn DataPath>>> {
        Ok(None)
    }

    fn server_path(
        &self,
        _theirs: Option<&DeviceEndpoint>,
        _ip: &dyn Fn() -> IpAddr,
        _ids: LinkIds,
    ) -> Result<Option<(DeviceEndpoint, Box<dyn DataPath>)>> {
        Ok(None)
    }

    fn prepare_path(&self, _path: &dyn DataPath, _timeout: Option<Duration>) -> Result<()> {
        Ok(())
    }

    fn communicator(
        &self,
        _rank_table: &str,
        _rank: u32,
        _name: &str,
        _deadline: Instant,
    ) -> Result<Option<Arc<dyn Communicator>>> {
        Ok(None)
    }

    fn comm_path(
        &self,
        _comm: &Arc<dyn Communicator>,
        _remote_rank: u32,
        _remote_cluster: u64,
        _endpoints: (Option<&DeviceEndpoint>, Option<&DeviceEndpoint>),
    ) -> Option<Box<dyn DataPath>> {
        None
    }

    fn drop_communicator(&self, comm: Arc<dyn Communicator>) {
        drop(comm);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
