//! The backends an instance runs on, behind one set of traits: a [`Device`]
//! (memory pools, local copies, registering memory, link and comm setup
//! hooks, what it can do: [`Capabilities`]) and the one-sided [`DataPath`]s
//! of links (what `transfer::exec` calls). Each backend is a folder
//! ([`host`], [`acl`]) with a [`Factory`]; [`registry`] lists them, the one
//! place a backend is registered, and [`select`] picks one for
//! `llmdd.Backend` (both in `registry.rs`: this file is the vocabulary its
//! children implement, so it imports none of them).
//!
//! TCP is not a [`DataPath`]: it runs on the link's own connection pool
//! (`transfer::link`), requests and bytes on connections the link opens,
//! attaches and closes, so it stays the engine's fallback for a link no
//! backend gave a one-sided path.

pub mod acl;
pub mod host;
mod registry;

pub use registry::{check_offers, choices, find, select};

use std::any::Any;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::types::{Dir, Placement, Plan};
use crate::device::config::{DeviceConfig, PoolConfig};
use crate::device::pool::Pool;
use crate::stats::Path;
use crate::status::{Error, Result};
use crate::transport::peer_proc::PeerProcess;
use crate::transport::wire::DeviceEndpoint;

/// Opens one backend.
pub trait Factory: Sync {
    /// The backend's `llmdd.Backend` value.
    fn name(&self) -> &'static str;

    /// Opens the backend for `config`: `Ok(Ok(device))`; `Ok(Err(why))` when
    /// it is unavailable here (auto then tries the next one); `Err` for a
    /// configuration that fails init whichever backend is chosen.
    fn open(&self, config: &DeviceConfig) -> Result<Result<Arc<dyn Device>>>;
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

/// The two clusters of a link and the server's link token; both sides derive
/// the same communicator name from them.
#[derive(Clone, Copy, Debug)]
pub struct LinkIds {
    /// The listening side (rank 0).
    pub server_cluster: u64,
    /// The dialing side (rank 1).
    pub client_cluster: u64,
    /// The server's token for this link.
    pub token: u64,
}

/// The memory and link setup of the backend an instance runs on. The
/// memory-registration and link hooks default to what host memory needs:
/// nothing to register, no one-sided link path (TCP), no comm communicator.
pub trait Device: Send + Sync + std::fmt::Debug {
    /// The backend's `llmdd.Backend` value.
    fn name(&self) -> &'static str;

    /// What `llmdd_get_backend` reports (`LLMDD_BACKEND_*`).
    fn abi_code(&self) -> u32;

    /// A line for the log of the backend's selection, if it has one.
    fn report(&self) -> Option<String> {
        None
    }

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// A memory pool of `cfg.memory_size` bytes for `placement`; `name`
    /// names a shareable host pool.
    fn create_pool(&self, name: &str, placement: Placement, cfg: PoolConfig) -> Result<Arc<Pool>>;

    /// Copies `plan` between two local memories of placements `src` and
    /// `dst` within `timeout`. `pageable`: one side is unregistered (possibly
    /// unpinned) host memory.
    fn copy_local(
        &self,
        plan: &Plan,
        src: Placement,
        dst: Placement,
        pageable: bool,
        timeout: Duration,
    ) -> Result<()>;

    /// Makes registered cache `id` (tensors at `addrs`, `len` bytes each, of
    /// `placement`) reachable by peers' data paths.
    fn register_memory(
        &self,
        id: i64,
        addrs: &[u64],
        len: u64,
        placement: Placement,
    ) -> Result<()> {
        let _ = (id, addrs, len, placement);
        Ok(())
    }

    /// Drops what [`Device::register_memory`] holds for cache `id`.
    fn unregister_memory(&self, id: i64) {
        let _ = id;
    }

    /// Releases the backend's registrations and streams (finalize, after
    /// every link).
    fn release(&self) {}

    /// This side's offer in a link_clusters link's `Hello` (a device endpoint
    /// for the local IP `ip()` names), if the backend builds link data paths.
    fn offer(&self, ip: &dyn Fn() -> IpAddr) -> Result<Option<DeviceEndpoint>> {
        let _ = ip;
        Ok(None)
    }

    /// The dialling side, once the server answered: the link's data path
    /// from both offers (created, not yet prepared), within `deadline`.
    fn client_path(
        &self,
        mine: Option<DeviceEndpoint>,
        theirs: Option<&DeviceEndpoint>,
        ids: LinkIds,
        deadline: Instant,
    ) -> Result<Option<Box<dyn DataPath>>> {
        let _ = (mine, theirs, ids, deadline);
        Ok(None)
    }

    /// The serving side, before it answers a client that offered `theirs`:
    /// our offer for the local IP `ip()` names (sent in `HelloAck`) and the
    /// link's data path (created, so the client's prepare finds it).
    fn server_path(
        &self,
        theirs: Option<&DeviceEndpoint>,
        ip: &dyn Fn() -> IpAddr,
        ids: LinkIds,
    ) -> Result<Option<(DeviceEndpoint, Box<dyn DataPath>)>> {
        let _ = (theirs, ip, ids);
        Ok(None)
    }

    /// Connects `path` with its peer before first use, within `timeout`
    /// (`None`: the backend's own bound for the serving side).
    fn prepare_path(&self, path: &dyn DataPath, timeout: Option<Duration>) -> Result<()> {
        let _ = (path, timeout);
        Ok(())
    }

    /// A rank-table comm's one communicator with this member's `rank`, once
    /// every pair of its members is linked, ready before `deadline`; `None`
    /// on a backend without comm communicators.
    fn communicator(
        &self,
        rank_table: &str,
        rank: u32,
        name: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<dyn Communicator>>> {
        let _ = (rank_table, rank, name, deadline);
        Ok(None)
    }

    /// The data path of one link of a rank-table comm on its communicator
    /// `comm`, to the member of `remote_rank` (endpoints: both members'
    /// table entries, when they name devices).
    fn comm_path(
        &self,
        comm: &Arc<dyn Communicator>,
        remote_rank: u32,
        remote_cluster: u64,
        endpoints: (Option<&DeviceEndpoint>, Option<&DeviceEndpoint>),
    ) -> Option<Box<dyn DataPath>> {
        let _ = (comm, remote_rank, remote_cluster, endpoints);
        None
    }

    /// Drops a comm's communicator (the last reference destroys it).
    fn drop_communicator(&self, comm: Arc<dyn Communicator>) {
        drop(comm);
    }

    /// The backend's own type, for its own code and tests.
    fn as_any(&self) -> &dyn Any;
}

/// A rank-table comm's communicator, shared by its links' data paths.
pub trait Communicator: Send + Sync + std::fmt::Debug {
    /// This member's rank in it.
    fn rank(&self) -> u32;

    /// The backend's own type, shared.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// Why a data path moved no bytes, or moved them too late.
#[derive(Debug)]
pub enum PathError {
    /// The transfer failed.
    Failed(Error),
    /// The peer is gone (`why`): the link is dead.
    PeerGone(String),
    /// The bytes moved, but the deadline passed.
    Late,
}

impl From<Error> for PathError {
    fn from(e: Error) -> PathError {
        PathError::Failed(e)
    }
}

/// The placement rules a path that moves device memory imposes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceRules {
    /// The path runs over HCCS (the stricter placement matrix).
    pub hccs: bool,
}

/// What a data path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// What the link's statistics count its transfers as.
    pub kind: Path,
    /// The link's small requests go on its control connection: it has no
    /// data connections.
    pub requests_on_control: bool,
    /// A peer's TCP bulk read or write may be served on the link (its
    /// memory is host-addressable).
    pub serves_tcp_bulk: bool,
}

/// A link's one-sided data path: how its bytes reach the peer's memory
/// without the link's TCP connections.
pub trait DataPath: Send + Sync + std::fmt::Debug {
    /// What the path is (fixed when it is made; the link keeps a copy, so
    /// asking costs no call).
    fn info(&self) -> PathInfo;

    /// Moves the bytes of `plan` (local side: this process's registered
    /// memory) in `dir` before `deadline`.
    fn transfer(&self, plan: &Plan, dir: Dir, deadline: Instant) -> Result<(), PathError>;

    /// [`DataPath::transfer`], also returning when it ended: the clock read
    /// of its deadline check, which the caller's statistics reuse instead of
    /// reading the clock again. By default a clock read after `transfer`.
    fn transfer_timed(
        &self,
        plan: &Plan,
        dir: Dir,
        deadline: Instant,
    ) -> Result<Instant, PathError> {
        self.transfer(plan, dir, deadline)?;
        Ok(Instant::now())
    }

    /// The rules of a path that reaches only memory registered before it
    /// was set up, in the placements its transport allows (HCCL).
    fn device_rules(&self) -> Option<DeviceRules> {
        None
    }

    /// The peer process whose exit kills the path, to watch.
    fn peer_process(&self) -> Option<&PeerProcess> {
        None
    }

    /// The peer is known gone: drop what maps its memory (once copies
    /// using it returned).
    fn peer_gone(&self) {}

    /// The link is torn down: release what the path holds.
    fn close(&self) {}

    /// The path's own type, for its backend's code and tests.
    fn as_any(&self) -> &dyn Any;
}
