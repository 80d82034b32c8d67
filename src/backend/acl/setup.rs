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
use std::time::{Duration, Instant};

use crate::backend::acl::device::AclBackend;
use crate::backend::acl::endpoint::{
    check_distinct, check_peer, intra_roce_enabled, intra_server, two_rank_table,
};
use crate::backend::acl::hccl::HcclComm;
use crate::backend::acl::path::{HcclLink, Topology};
use crate::backend::LinkIds;
use crate::bail;
use crate::status::{Error, Result, Status};
use crate::transport::wire::DeviceEndpoint;

/// This side's device endpoint for one link being set up.
pub struct LocalEnd {
    /// What is sent to the peer.
    pub endpoint: DeviceEndpoint,
}

/// Derives this instance's endpoint for a link whose local IP is `local_ip`
/// (see `backend::acl::endpoint`). Errors: `ParamInvalid` when the device's
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
pub fn prepare(acl: &AclBackend, h: &HcclLink, timeout: Duration) -> Result<()> {
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
