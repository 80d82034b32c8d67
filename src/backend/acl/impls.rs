//! The acl backend behind the backend traits: its factory, `Device` for
//! [`AclBackend`] and `Communicator` for [`HcclComm`] (its `DataPath`,
//! `HcclLink`, is in `path.rs`).

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::acl::device::AclBackend;
use crate::backend::acl::endpoint::LocalDevice;
use crate::backend::acl::hccl::HcclComm;
use crate::backend::acl::path::HcclLink;
use crate::backend::acl::setup;
use crate::backend::{Capabilities, Communicator, DataPath, Device, Factory, LinkIds};
use crate::cache::types::{Placement, Plan};
use crate::device::config::{DeviceConfig, PoolConfig};
use crate::device::pool::Pool;
use crate::err;
use crate::status::{Error, Result};
use crate::transport::wire::DeviceEndpoint;

/// The acl backend's factory.
pub static FACTORY: AclFactory = AclFactory;

/// Opens the acl backend: loads the Ascend runtime and opens `llm.DeviceId`.
pub struct AclFactory;

impl Factory for AclFactory {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn open(&self, config: &DeviceConfig) -> Result<Result<Arc<dyn Device>>> {
        let rt = match AclBackend::bring_up(config) {
            Ok(rt) => rt,
            Err(e) => return Ok(Err(e)),
        };
        let local = LocalDevice::parse(config.local_comm_res.as_deref())?;
        Ok(match AclBackend::open(rt, local, config) {
            Ok(a) => Ok(Arc::new(a)),
            Err(e) => Err(Error::new(
                e.status,
                format!("Ascend device {}: {}", config.device_id, e.message),
            )),
        })
    }
}

/// The acl backend of `d`, if it is the one.
#[cfg(any(test, feature = "testing"))]
pub fn of(d: &dyn Device) -> Option<&AclBackend> {
    d.as_any().downcast_ref()
}

/// The HCCL path of a link's data path `p`, if it is one.
pub fn hccl_link(p: Option<&dyn DataPath>) -> Option<&HcclLink> {
    p?.as_any().downcast_ref()
}

impl Communicator for HcclComm {
    fn rank(&self) -> u32 {
        HcclComm::rank(self)
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl Device for AclBackend {
    fn name(&self) -> &'static str {
        "acl"
    }

    /// `LLMDD_BACKEND_ACL`.
    fn abi_code(&self) -> u32 {
        1
    }

    fn report(&self) -> Option<String> {
        Some(AclBackend::report(self))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            same_host_paths: false,
            hccl_links: true,
            register_before_link: true,
        }
    }

    /// One ACL allocation registered with HCCL.
    fn create_pool(&self, _name: &str, placement: Placement, cfg: PoolConfig) -> Result<Arc<Pool>> {
        AclBackend::create_pool(self, placement, cfg)
    }

    /// ACL memcpy (device memory is not host-addressable).
    fn copy_local(
        &self,
        plan: &Plan,
        src: Placement,
        dst: Placement,
        pageable: bool,
        timeout: Duration,
    ) -> Result<()> {
        self.copy(plan, src, dst, pageable, timeout)
    }

    /// HCCL registrations, bound by links created from now on.
    fn register_memory(
        &self,
        id: i64,
        addrs: &[u64],
        len: u64,
        placement: Placement,
    ) -> Result<()> {
        self.register_cache(id, addrs, len, placement)
    }

    fn unregister_memory(&self, id: i64) {
        self.unregister_cache(id);
    }

    fn release(&self) {
        AclBackend::release(self);
    }

    /// The device endpoint for the local IP, its port reserved.
    fn offer(&self, ip: &dyn Fn() -> IpAddr) -> Result<Option<DeviceEndpoint>> {
        setup::local_end(self, ip()).map(|e| Some(e.endpoint))
    }

    /// When both ends offered a device endpoint: this side's communicator
    /// of the link (rank 1), every registered region bound.
    fn client_path(
        &self,
        mine: Option<DeviceEndpoint>,
        theirs: Option<&DeviceEndpoint>,
        ids: LinkIds,
        deadline: Instant,
    ) -> Result<Option<Box<dyn DataPath>>> {
        let (Some(mine), Some(theirs)) = (mine, theirs) else {
            return Ok(None);
        };
        let mine = setup::LocalEnd { endpoint: mine };
        let h = setup::create(self, mine, theirs, false, ids, deadline)?;
        Ok(Some(Box::new(h)))
    }

    /// Our communicator of the link (rank 0), bounded by
    /// `llmdd.HcclPrepareTimeout`.
    fn server_path(
        &self,
        theirs: Option<&DeviceEndpoint>,
        ip: &dyn Fn() -> IpAddr,
        ids: LinkIds,
    ) -> Result<Option<(DeviceEndpoint, Box<dyn DataPath>)>> {
        let Some(theirs) = theirs else {
            return Ok(None);
        };
        let mine = setup::local_end(self, ip())?;
        let ours = mine.endpoint.clone();
        let until = Instant::now() + self.prepare_timeout();
        let h = setup::create(self, mine, theirs, true, ids, until)?;
        Ok(Some((ours, Box::new(h))))
    }

    /// `HcclCommPrepare` of a link's own communicator; `None`: bounded by
    /// `llmdd.HcclPrepareTimeout` (HCCL's connect timeout, 120 s by default:
    /// the client prepares within its link timeout or gives up, and then
    /// this fails).
    fn prepare_path(&self, path: &dyn DataPath, timeout: Option<Duration>) -> Result<()> {
        let Some(h) = hccl_link(Some(path)) else {
            return Ok(());
        };
        setup::prepare(self, h, timeout.unwrap_or_else(|| self.prepare_timeout()))
    }

    /// Created from the user's rank table (`HcclCommInitClusterInfoMemConfig`),
    /// bound to every registered region and prepared (full mesh). Errors are
    /// `LinkFailed` with the vendor message.
    fn communicator(
        &self,
        rank_table: &str,
        rank: u32,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<dyn Communicator>>> {
        let comm = HcclComm::create(
            self.context(),
            rank_table,
            rank,
            &self.comm_config(name.to_string()),
            deadline,
        )
        .map_err(|e| {
            err!(
                LinkFailed,
                "creating the HCCL communicator {name} from the rank table failed ({}): {}",
                e.status.name(),
                e.message
            )
        })?;
        for r in self.regions() {
            comm.bind(&r).map_err(|e| {
                err!(
                    LinkFailed,
                    "binding memory to the HCCL communicator {name} failed ({}): {}",
                    e.status.name(),
                    e.message
                )
            })?;
        }
        let comm = Arc::new(comm);
        let left = deadline.saturating_duration_since(Instant::now());
        comm.prepare(left.max(Duration::from_secs(1)))
            .map_err(|e| {
                err!(
                    LinkFailed,
                    "HcclCommPrepare of the communicator {name} failed ({}): {}",
                    e.status.name(),
                    e.message
                )
            })?;
        Ok(Some(comm))
    }

    /// The comm's communicator, shared, with the peer's rank.
    fn comm_path(
        &self,
        comm: &Arc<dyn Communicator>,
        remote_rank: u32,
        remote_cluster: u64,
        endpoints: (Option<&DeviceEndpoint>, Option<&DeviceEndpoint>),
    ) -> Option<Box<dyn DataPath>> {
        let comm = comm.clone().into_any().downcast::<HcclComm>().ok()?;
        let topology = match endpoints {
            (Some(a), Some(b)) => setup::topology(a, b),
            _ => Default::default(),
        };
        Some(Box::new(HcclLink::shared(
            self.context().clone(),
            comm,
            remote_rank,
            remote_cluster,
            topology,
        )))
    }

    /// With the device bound on this thread.
    fn drop_communicator(&self, comm: Arc<dyn Communicator>) {
        if let Err(e) = self.context().bind_thread() {
            crate::log_warn!("destroying a comm's HCCL communicator: {}", e.message);
        }
        drop(comm);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
