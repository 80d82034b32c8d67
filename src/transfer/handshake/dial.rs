//! The dialling side of link setup: connect to the server, the client's
//! handshake (up to and including its `Pools`), the link's data paths and
//! its control connection on the poller, then the link joins the instance
//! (its link table, or the rank-table comm it belongs to).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frames::{self, HelloAck, Join, JoinAck};
use super::{judge, map_pools, unknown_endpoint, LinkComm, LinkHost};
use crate::backend::{self, host as host_backend, DataPath, LinkIds};
use crate::status::{Error, Result, Status};
use crate::transfer::link::{Link, LinkParts};
use crate::transfer::liveness;
use crate::transfer::serve::serve;
use crate::transport::identity::{self, random_tag, Side, Transcript};
use crate::transport::local::LocalPath;
use crate::transport::poller;
use crate::transport::tcp::Conn;
use crate::transport::wire::DeviceEndpoint;
use crate::{bail, err, log_info};

/// What the client sends in its `Join` besides the proofs.
struct JoinFields {
    comm_name: String,
    device: Option<DeviceEndpoint>,
}

/// What the client learnt in the handshake.
struct Joined {
    remote_role: u32,
    token: u64,
    server_device: Option<DeviceEndpoint>,
    /// The one-sided path the handshake found (same process or host).
    path: Option<Box<dyn DataPath>>,
}

/// Dials the server of `remote_cluster_id` at `addr`: handshake, data paths,
/// then the link joins the instance (and `comm`, for a rank-table link).
/// For a comm, failures before the handshake is accepted (nothing listening
/// yet, the peer has no such comm yet, no answer in time) are
/// `LLM_NOT_YET_LINK` so the caller retries. `local_ip` names this side's
/// device IP on the acl backend (else the control connection's local
/// address is used).
pub(crate) fn dial<H: LinkHost>(
    host: &Arc<H>,
    remote_cluster_id: u64,
    addr: SocketAddr,
    local_ip: Option<IpAddr>,
    timeout: Duration,
    comm: Option<&Arc<H::Comm>>,
) -> Result<()> {
    let retryable = |e: Error| match comm {
        Some(_) => Error::new(Status::NotYetLink, e.message),
        None => e,
    };
    let deadline = Instant::now() + timeout;
    let conn_opts = host.conn_opts();
    let mut control = Conn::connect(&addr, timeout, conn_opts).map_err(retryable)?;
    let generation = host.generation();
    // A link_clusters link gets its own two-rank communicator (reserve our
    // device port now); a rank-table comm's links share the comm's
    // communicator, so they only announce the member's table endpoint.
    let acl_end = match comm {
        None => host.backend().offer(&|| {
            local_ip
                .or_else(|| control.local_addr().map(|a| a.ip()))
                .unwrap_or(addr.ip())
        })?,
        Some(_) => None,
    };
    let our_device = match comm {
        Some(c) => c.local_device(),
        None => acl_end.clone(),
    };
    let fields = JoinFields {
        comm_name: comm.map(|c| c.comm_name().to_string()).unwrap_or_default(),
        device: our_device.clone(),
    };
    let joined = handshake(
        &**host,
        &mut control,
        remote_cluster_id,
        addr,
        fields,
        deadline,
        &retryable,
    )?;
    backend::check_offers(our_device.is_some(), joined.server_device.as_ref(), false)?;
    let (remote_role, token, server_device) =
        (joined.remote_role, joined.token, joined.server_device);
    let link = Arc::new(Link::new(LinkParts {
        remote_cluster_id,
        remote_role,
        token,
        we_dialed: true,
        remote_addr: addr,
        path: joined.path,
        generation,
        local_cluster_id: host.cluster_id(),
        comm_id: comm.map_or(0, |c| c.comm_id()),
        conn: conn_opts,
    }));
    // Build the rest of the link; on failure tell the server to drop it.
    let built = (|| -> Result<()> {
        let ids = LinkIds {
            server_cluster: remote_cluster_id,
            client_cluster: host.cluster_id(),
            token,
        };
        let path = host
            .backend()
            .client_path(acl_end, server_device.as_ref(), ids, deadline)?;
        if let Some(p) = path {
            link.set_path(p);
            if let Some(p) = link.data_path() {
                let left = deadline.saturating_duration_since(Instant::now());
                host.backend().prepare_path(p, Some(left))?;
            }
        }
        // The control connection carries no bulk data (link.rs); it is
        // read on the poller from now on. A link whose bytes move
        // one-sidedly sends its requests there and needs nothing else.
        // Else data connections open when a transfer first needs them:
        // request connections by this side, reverse connections (on which
        // the server sends its requests) when the server asks
        // (`OpenConns`); both close when unused for a while.
        link.watch_control(&control);
        link.set_control_writer(control.writer());
        serve(host.clone(), link.clone(), control, true);
        if link.requests_on_control() {
            return Ok(());
        }
        let tick: std::sync::Weak<dyn poller::Tick> = Arc::downgrade(&link) as _;
        host.reactor()?.add_tick(tick);
        Ok(())
    })();
    if let Err(e) = built {
        link.teardown(Duration::ZERO);
        let e = if e.status == Status::Timeout {
            err!(
                LinkFailed,
                "link setup with {addr} timed out after {} ms",
                timeout.as_millis()
            )
        } else {
            e
        };
        return Err(e);
    }
    let installed = host
        .install(&link, comm.map(|c| &**c))
        // Its peer process (same host) and its control connection: the link
        // is marked dead the moment either is gone.
        .and_then(|_| liveness::watch(host.reactor()?.arc(), &link));
    if let Err(e) = installed {
        host.remove_link(&link);
        link.teardown(Duration::ZERO);
        return Err(e);
    }
    log_info!(
        "cluster {} linked to cluster {remote_cluster_id} at {addr}",
        host.cluster_id()
    );
    Ok(())
}

/// Client side of the handshake on `c` (connected to `addr`), up to and
/// including the `Pools` message. `io` maps I/O failures (a rank-table
/// dialer retries them).
fn handshake<H: LinkHost>(
    host: &H,
    c: &mut Conn,
    remote_cluster_id: u64,
    addr: SocketAddr,
    fields: JoinFields,
    deadline: Instant,
    io: &dyn Fn(Error) -> Error,
) -> Result<Joined> {
    let key = host.link_key();
    let nonce_c = random_tag();
    let HelloAck {
        nonce: nonce_s,
        host_tag: server_host,
        auth_mac,
    } = frames::hello(c, key.is_some(), nonce_c, addr, deadline, io)?;
    if let Some(k) = key {
        if !auth_mac.is_some_and(|m| k.check_server(&nonce_c, &nonce_s, &m)) {
            // Tell the server why (it logs the refusal), then give up.
            let _ = c.reply(
                Status::LinkFailed,
                "link authentication failed: the server's proof does not match this client's llmdd.LinkSecret",
                Some(deadline),
            );
            bail!(
                LinkFailed,
                "the server at {addr} failed link authentication (its llmdd.LinkSecret differs, or it is not who it claims)"
            );
        }
    }
    let t = Transcript::new(
        &nonce_c,
        &nonce_s,
        c.local_addr().unwrap_or_else(unknown_endpoint),
        c.peer(),
    );
    let disclose = host.one_sided() && identity::same_host_tag(Side::Server, &t, &server_host);
    let join = Join {
        auth_mac: key.map(|k| k.client_mac(&nonce_c, &nonce_s)),
        cluster_id: host.cluster_id(),
        server_cluster_id: remote_cluster_id,
        role: host.role(),
        remote_accessible: host.remote_accessible(),
        comm_name: fields.comm_name,
        device: fields.device,
        identity: identity::ours(Side::Client, &t, disclose),
    };
    let JoinAck {
        cluster_id,
        role: remote_role,
        link_token: token,
        device: server_device,
        identity: id,
        pools,
    } = frames::join(c, join, addr, deadline, io)?;
    if cluster_id != remote_cluster_id {
        bail!(
            LinkFailed,
            "the server at {addr} is cluster {cluster_id}, not the requested {remote_cluster_id}"
        );
    }
    let who = format!("cluster {remote_cluster_id} at {addr}");
    let local_path = judge(host, Side::Server, &t, &id, &who)?;
    let peer = match &local_path {
        Some(LocalPath::SameHost(p)) => Some(p),
        _ => None,
    };
    let peer_pools = map_pools(host, peer, &pools);
    let ours = match peer {
        Some(_) => host.pool_infos(),
        None => Vec::new(),
    };
    frames::send_pools(c, ours, deadline).map_err(io)?;
    Ok(Joined {
        remote_role,
        token,
        server_device,
        path: local_path.map(|v| host_backend::local_path(v, peer_pools)),
    })
}
