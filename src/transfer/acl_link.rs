//! Link setup on the acl backend. The control plane stays the TCP handshake;
//! on top of it each side sends its device endpoint (`Hello` / `HelloAck`),
//! both build the same two-rank table (rank 0 = the server, rank 1 = the
//! client), create their communicator, bind every registered region and run
//! `HcclCommPrepare` concurrently.
//!
//! Order: the client derives its endpoint and sends `Hello`; the server
//! derives its endpoint, creates its communicator, answers `HelloAck`, then
//! prepares (for `llmdd.HcclPrepareTimeout`); the client creates its
//! communicator and prepares (for what is left of its link timeout). Both ends
//! must run the same backend: a mismatch refuses the link (`ParamInvalid`),
//! like a mismatch of the remote-cache-accessible mode. Two ends naming the
//! same device are refused before HCCL sees the table.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::device::acl_backend::AclBackend;
use crate::device::endpoint::{
    check_distinct, check_peer, intra_roce_enabled, intra_server, two_rank_table,
};
use crate::device::Backend;
use crate::status::{Error, Result, Status};
use crate::transfer::hccl_path::{HcclLink, Topology};
use crate::transfer::link::Link;
use crate::transport::hccl::HcclComm;
use crate::transport::wire::DeviceEndpoint;
use crate::{bail, err};

/// This side's device endpoint for one link being set up.
pub struct LocalEnd {
    /// What is sent to the peer.
    pub endpoint: DeviceEndpoint,
}

/// Derives this instance's endpoint for a link whose local IP is `local_ip`
/// (see `device::endpoint`). Errors: `ParamInvalid` when the device's
/// physical id or NIC address is unknown.
pub fn local_end(acl: &AclBackend, local_ip: IpAddr) -> Result<LocalEnd> {
    let endpoint = acl.local_device().endpoint(acl.identity_info(), local_ip)?;
    Ok(LocalEnd { endpoint })
}

/// How two ends of a link reach each other: over HCCS when they share a
/// server (A2) or super pod (A3), unless `HCCL_INTRA_ROCE_ENABLE=1`.
pub fn topology(a: &DeviceEndpoint, b: &DeviceEndpoint) -> Topology {
    Topology {
        hccs: intra_server(a, b) && !intra_roce_enabled(),
    }
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

/// Checks that both ends run the same backend. `ours` / `theirs`: whether each
/// end sent a device endpoint (acl backend).
pub fn check_backends(
    ours: bool,
    theirs: Option<&DeviceEndpoint>,
    we_are_server: bool,
) -> Result<()> {
    let name = |acl: bool| if acl { "acl" } else { "host" };
    if ours != theirs.is_some() {
        let (server, client) = if we_are_server {
            (ours, theirs.is_some())
        } else {
            (theirs.is_some(), ours)
        };
        bail!(
            ParamInvalid,
            "the two ends run different backends (server: {}, client: {}); set llmdd.Backend alike on both",
            name(server),
            name(client)
        );
    }
    if let Some(t) = theirs {
        check_peer(t)?;
    }
    Ok(())
}

/// Creates this side's communicator of the link (rank 0 on the server, 1 on
/// the client) and binds every registered region, within `deadline`. The
/// peer's side must be created too before [`HcclLink::prepare`] can finish on
/// either. Errors: `LinkFailed` carrying the HCCL/ACL message.
pub fn create(
    acl: &AclBackend,
    mine: LocalEnd,
    theirs: &DeviceEndpoint,
    we_are_server: bool,
    ids: LinkIds,
    deadline: Instant,
) -> Result<HcclLink> {
    let (rank, remote_rank, remote_cluster) = if we_are_server {
        (0, 1, ids.client_cluster)
    } else {
        (1, 0, ids.server_cluster)
    };
    check_distinct(&mine.endpoint, theirs)?;
    let ranks = if we_are_server {
        [&mine.endpoint, theirs]
    } else {
        [theirs, &mine.endpoint]
    };
    let table = two_rank_table(ranks);
    let topo = topology(&mine.endpoint, theirs);
    let name = format!(
        "llmdd-{}-{}-{:x}",
        ids.server_cluster, ids.client_cluster, ids.token
    );
    if topo.hccs {
        let bad = acl.hccs_misaligned();
        if !bad.is_empty() {
            crate::log_warn!(
                "link to cluster {remote_cluster} runs over HCCS, which may refuse device regions not from \
                 aclrtMalloc whose start is not 2 MB aligned: {}",
                describe_regions(&bad)
            );
        }
    }
    let built = (|| -> Result<HcclLink> {
        let comm = HcclComm::create(
            acl.context(),
            &table,
            rank,
            &acl.comm_config(name.clone()),
            deadline,
        )?;
        HcclLink::new(
            acl.context().clone(),
            comm,
            remote_rank,
            remote_cluster,
            &acl.regions(),
            topo,
        )
    })();
    let h = built.map_err(|e| link_failed("creating the HCCL communicator", e))?;
    crate::log_info!(
        "HCCL communicator {name}: rank {rank} of 2, peer cluster {remote_cluster} at device {} of {} ({}){}",
        theirs.device_id,
        theirs.server_id,
        theirs.device_ip,
        if topo.hccs { ", over HCCS" } else { ", over RDMA" }
    );
    Ok(h)
}

/// This side's offer for a link_clusters link's own communicator: on the
/// acl backend the device endpoint for the local IP `ip()` names (its port
/// reserved), sent in `Hello`; `None` on a backend without HCCL links.
pub fn offer(backend: &Backend, ip: impl FnOnce() -> IpAddr) -> Result<Option<LocalEnd>> {
    match backend.acl() {
        Some(acl) => local_end(acl, ip()).map(Some),
        None => Ok(None),
    }
}

/// The dialling side, once the server answered: when both ends offered a
/// device endpoint, creates this side's communicator of `link` and prepares
/// it, within `deadline`; nothing otherwise.
pub fn open_client(
    backend: &Backend,
    mine: Option<LocalEnd>,
    theirs: Option<&DeviceEndpoint>,
    link: &Link,
    ids: LinkIds,
    deadline: Instant,
) -> Result<()> {
    if let (Some(acl), Some(mine), Some(theirs)) = (backend.acl(), mine, theirs) {
        let h = Arc::new(create(acl, mine, theirs, false, ids, deadline)?);
        link.set_hccl(h.clone());
        prepare(acl, &h, deadline.saturating_duration_since(Instant::now()))?;
    }
    Ok(())
}

/// The serving side, before it answers a client that offered a device
/// endpoint: derives ours for the local IP `ip()` and creates our
/// communicator of `link` (so the client's prepare finds our port
/// listening), bounded by `llmdd.HcclPrepareTimeout`. The endpoint to
/// announce in `HelloAck`; `None` when there is no communicator to create.
pub fn open_server(
    backend: &Backend,
    theirs: Option<&DeviceEndpoint>,
    ip: impl FnOnce() -> IpAddr,
    link: &Link,
    ids: LinkIds,
) -> Result<Option<DeviceEndpoint>> {
    let (Some(acl), Some(theirs)) = (backend.acl(), theirs) else {
        return Ok(None);
    };
    let mine = local_end(acl, ip())?;
    let ours = mine.endpoint.clone();
    let setup = Instant::now() + acl.prepare_timeout();
    link.set_hccl(Arc::new(create(acl, mine, theirs, true, ids, setup)?));
    Ok(Some(ours))
}

/// The serving side, after `JoinAck`: prepares `link`'s communicator if it
/// has one, bounded by `llmdd.HcclPrepareTimeout` (HCCL's connect timeout,
/// 120 s by default: the client prepares within its link timeout or gives
/// up, and then this fails).
pub fn prepare_server(backend: &Backend, link: &Link) -> Result<()> {
    match (link.hccl(), backend.acl()) {
        (Some(h), Some(acl)) => prepare(acl, h, acl.prepare_timeout()),
        _ => Ok(()),
    }
}

/// A rank-table comm's one communicator, once every pair of its members is
/// linked: on the acl backend, created from the user's rank table with this
/// member's `rank` (`HcclCommInitClusterInfoMemConfig`), bound to every
/// registered region and prepared (full mesh) before `deadline`; `None` on a
/// backend without HCCL links. Errors are `LinkFailed` with the vendor message.
pub fn comm_communicator(
    backend: &Backend,
    rank_table: &str,
    rank: u32,
    name: &str,
    deadline: Instant,
) -> Result<Option<Arc<HcclComm>>> {
    let Some(acl) = backend.acl() else {
        return Ok(None);
    };
    let comm = HcclComm::create(
        acl.context(),
        rank_table,
        rank,
        &acl.comm_config(name.to_string()),
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
    for r in acl.regions() {
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

/// The data path of one link of a rank-table comm: the comm's communicator
/// `comm`, shared, with the peer's rank (`None` off the acl backend).
pub fn comm_link_path(
    backend: &Backend,
    comm: &Arc<HcclComm>,
    remote_rank: u32,
    remote_cluster: u64,
    topology: Topology,
) -> Option<Arc<HcclLink>> {
    let acl = backend.acl()?;
    Some(Arc::new(HcclLink::shared(
        acl.context().clone(),
        comm.clone(),
        remote_rank,
        remote_cluster,
        topology,
    )))
}

/// Drops a comm's communicator with the device bound on this thread (the
/// last reference destroys it).
pub fn drop_comm(backend: &Backend, h: Arc<HcclComm>) {
    if let Some(acl) = backend.acl() {
        if let Err(e) = acl.context().bind_thread() {
            crate::log_warn!("destroying a comm's HCCL communicator: {}", e.message);
        }
    }
    drop(h);
}

/// "0x…+len, …" for a warning.
fn describe_regions(r: &[(u64, u64)]) -> String {
    let mut parts: Vec<String> = r
        .iter()
        .take(8)
        .map(|(a, n)| format!("0x{a:x}+{n}"))
        .collect();
    if r.len() > 8 {
        parts.push(format!("and {} more", r.len() - 8));
    }
    parts.join(", ")
}

/// Turns a vendor error during link setup into `LinkFailed` (spec §4.1: comm
/// failure), keeping the vendor's message.
pub fn link_failed(what: &str, e: Error) -> Error {
    if e.status == Status::LinkFailed {
        return e;
    }
    Error::new(
        Status::LinkFailed,
        format!("{what} failed ({}): {}", e.status.name(), e.message),
    )
}

/// Runs `HcclCommPrepare` for a link, mapping failures to `LinkFailed`; over
/// HCCS a failure names the device regions HCCS may have refused.
pub fn prepare(acl: &AclBackend, h: &Arc<HcclLink>, timeout: Duration) -> Result<()> {
    h.prepare(timeout).map_err(|e| {
        let mut e = link_failed("preparing the HCCL communicator", e);
        let bad = acl.hccs_misaligned();
        if h.topology().hccs && !bad.is_empty() {
            e.message.push_str(&format!(
                "; over HCCS, device regions not allocated by aclrtMalloc must start 2 MB aligned, and these do not: {}",
                describe_regions(&bad)
            ));
        }
        e
    })
}
