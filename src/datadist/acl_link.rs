//! Link setup on the acl backend. The control plane stays the TCP handshake;
//! on top of it each side sends its device endpoint (`Hello` / `HelloAck`),
//! both build the same two-rank table (rank 0 = the server, rank 1 = the
//! client), create their communicator, bind every registered region and run
//! `HcclCommPrepare` concurrently.
//!
//! Order: the client reserves its endpoint and sends `Hello`; the server
//! reserves its endpoint, creates its communicator, answers `HelloAck`, then
//! prepares; the client creates its communicator and prepares. Both ends must
//! run the same backend: a mismatch refuses the link (`ParamInvalid`), like a
//! mismatch of the remote-cache-accessible mode.

use std::net::IpAddr;
use std::sync::Arc;

use crate::bail;
use crate::device::acl_backend::AclBackend;
use crate::device::endpoint::{check_peer, two_rank_table, PortReservation};
use crate::status::{Error, Result, Status};
use crate::transfer::hccl_path::HcclLink;
use crate::transport::hccl::HcclComm;
use crate::transport::wire::DeviceEndpoint;

/// This side's device endpoint for one link being set up, with the port it
/// holds until the communicator exists.
pub struct LocalEnd {
    /// What is sent to the peer.
    pub endpoint: DeviceEndpoint,
    reservation: Option<PortReservation>,
}

/// Derives this instance's endpoint for a link whose local IP is `local_ip`
/// (see `device::endpoint`).
pub fn local_end(acl: &AclBackend, local_ip: IpAddr) -> Result<LocalEnd> {
    let (endpoint, reservation) = acl
        .local_device()
        .endpoint(acl.context().device_id(), local_ip)?;
    Ok(LocalEnd {
        endpoint,
        reservation,
    })
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
/// the client) and binds every registered region. The peer's side must be
/// created too before [`HcclLink::prepare`] can finish on either.
/// Errors: `LinkFailed` carrying the HCCL/ACL message.
pub fn create(
    acl: &AclBackend,
    mine: LocalEnd,
    theirs: &DeviceEndpoint,
    we_are_server: bool,
    ids: LinkIds,
) -> Result<HcclLink> {
    let (rank, remote_rank, remote_cluster) = if we_are_server {
        (0, 1, ids.client_cluster)
    } else {
        (1, 0, ids.server_cluster)
    };
    let ranks = if we_are_server {
        [&mine.endpoint, theirs]
    } else {
        [theirs, &mine.endpoint]
    };
    let table = two_rank_table(ranks);
    let name = format!(
        "llmdd-{}-{}-{:x}",
        ids.server_cluster, ids.client_cluster, ids.token
    );
    let LocalEnd { reservation, .. } = mine;
    // The communicator binds our port itself: release the reservation now.
    drop(reservation);
    let built = (|| -> Result<HcclLink> {
        acl.context().bind_thread()?;
        let comm = HcclComm::create(
            acl.runtime().clone(),
            &table,
            rank,
            &acl.comm_config(name.clone()),
        )?;
        HcclLink::new(
            acl.context().clone(),
            comm,
            remote_rank,
            remote_cluster,
            &acl.regions(),
        )
    })();
    let h = built.map_err(|e| link_failed("creating the HCCL communicator", e))?;
    crate::log_info!(
        "HCCL communicator {name}: rank {rank} of 2, peer cluster {remote_cluster} at device {}:{}",
        theirs.device_ip,
        theirs.device_port
    );
    Ok(h)
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

/// Runs `HcclCommPrepare` for a link, mapping failures to `LinkFailed`.
pub fn prepare(h: &Arc<HcclLink>, timeout: std::time::Duration) -> Result<()> {
    h.prepare(timeout)
        .map_err(|e| link_failed("preparing the HCCL communicator", e))
}
