//! The serving side of link setup: admission of an accepted connection,
//! its first frame, then the handshake of a link_clusters client or a
//! rank-table dialer (challenge, link authentication, the checks of its
//! `Join`, `JoinAck`, its `Pools`), or `Attach` of a link's further
//! connections. Each step has its deadline; whatever is refused is answered
//! with its status and message and logged (rate-limited: any peer can cause
//! it).

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::frames::{self, First, HelloAck, Join, JoinAck};
use super::{judge, map_pools, unknown_endpoint, LinkComm, LinkHost};
use crate::backend::{self, host as host_backend, LinkIds};
use crate::log::rate::warn_refusal;
use crate::status::{Error, Result, Status};
use crate::transfer::admission::{self, PendingSlot};
use crate::transfer::link::{Link, LinkParts};
use crate::transfer::listener::{log_dropped, log_refusal};
use crate::transfer::liveness;
use crate::transfer::serve::serve;
use crate::transport::identity::{self, random_tag, Side, Tag, Transcript};
use crate::transport::local;
use crate::transport::tcp::Conn;
use crate::transport::wire::{self, DeviceEndpoint};
use crate::{bail, err, log_debug, log_info};

/// Bound on a peer's handshake (serving-side I/O: `llmdd.IoTimeoutMs`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client's link request, after the challenge (and link authentication).
struct JoinRequest {
    /// What the client sent (its secret's MAC already checked).
    join: Join,
    transcript: Transcript,
}

/// Takes an accepted connection in: admission caps (per peer address,
/// handshakes in progress), socket options, then a thread for its first
/// frame. Whatever cannot be taken in is refused with a reason.
/// `comm_only`: it arrived on a listener bound for rank-table comms.
pub(crate) fn admit<H: LinkHost>(
    host: &Arc<H>,
    stream: TcpStream,
    peer: SocketAddr,
    comm_only: bool,
) {
    let (peer_slot, pending) = match host.listeners().admission().admit(peer.ip()) {
        Ok(slots) => slots,
        Err(why) => {
            // Nothing identifying goes to an unproven peer (not even
            // our cluster id): the reason alone.
            admission::refuse(&stream, Status::LinkFailed, &why);
            log_refusal(Some(peer), &format!("cluster {}: {why}", host.cluster_id()));
            return;
        }
    };
    let mut conn = match Conn::new(stream, host.conn_opts()) {
        Ok(c) => c,
        Err(e) => {
            log_debug!("dropping connection from {peer}: {}", e.message);
            return;
        }
    };
    conn.hold(Box::new(peer_slot));
    let id = host.listeners().pend(conn.weak());
    let sock = conn.shared();
    let h = host.clone();
    let started = host.spawn("llmdd-conn", move || {
        incoming(h, conn, id, pending, comm_only)
    });
    if let Err(e) = started {
        host.listeners().unpend(id);
        let why = format!("the server is out of threads ({})", e.message);
        admission::refuse(&sock, Status::LinkFailed, &why);
        log_refusal(Some(peer), &format!("cluster {}: {why}", host.cluster_id()));
    }
}

/// Handles a freshly accepted connection: handshake or attach, then serve.
fn incoming<H: LinkHost>(
    host: Arc<H>,
    mut conn: Conn,
    pending_id: u64,
    pending: PendingSlot,
    comm_only: bool,
) {
    let deadline = Some(Instant::now() + HANDSHAKE_TIMEOUT);
    let first = frames::first(&mut conn, deadline);
    let pending = std::cell::Cell::new(Some(pending));
    let unpend = |h: &H| {
        h.listeners().unpend(pending_id);
        drop(pending.take());
    };
    match first {
        Ok(First::Hello { auth, nonce }) => {
            let Some(d) = deadline else { return };
            // The challenge (and link authentication) runs outside the
            // setup slots: a peer that never answers holds none.
            let req = match challenge(&*host, &mut conn, auth, nonce, d) {
                Ok(r) => r,
                Err(e) => {
                    unpend(&host);
                    log_debug!("handshake from {} ended: {}", conn.peer(), e.message);
                    return;
                }
            };
            let cluster_id = req.join.cluster_id;
            host.listeners().setups().acquire();
            let r = if comm_only && req.join.comm_name.is_empty() {
                Err(err!(
                    ParamInvalid,
                    "this endpoint of cluster {} serves rank-table comms only; link_clusters needs its llm.ListenIpInfo",
                    host.cluster_id()
                ))
            } else {
                // A fresh bound: waiting for a setup slot does not eat it.
                accept_link(&*host, &mut conn, &req, Instant::now() + HANDSHAKE_TIMEOUT)
            };
            host.listeners().setups().release();
            unpend(&host);
            match r {
                Ok(link) => serve(host, link, conn, true),
                Err(e) => {
                    if e.status == Status::NotYetLink {
                        // A rank-table dialer that came early; it retries.
                        log_debug!(
                            "not yet accepting cluster {cluster_id} at {}: {}",
                            conn.peer(),
                            e.message
                        );
                    } else {
                        // Any peer can cause these (a forged cluster id
                        // is refused as ALREADY_LINK): rate-limited.
                        warn_refusal(format_args!(
                            "refused link from cluster {cluster_id} at {}: {}",
                            conn.peer(),
                            e.message
                        ));
                    }
                    frames::refuse_join(&mut conn, &e, deadline);
                }
            }
        }
        Ok(First::Attach {
            cluster_id,
            link_token,
            reverse,
        }) => {
            unpend(&host);
            attach(host, conn, cluster_id, link_token, reverse, deadline);
        }
        Ok(First::Other(t)) => {
            unpend(&host);
            let why = format!("its first frame has type {t}");
            log_dropped(conn.peer(), &why);
        }
        Err(e) => {
            unpend(&host);
            log_dropped(conn.peer(), &e.message);
        }
    }
}

/// Server side of `Attach`: one more connection of an existing link, up to
/// `llmdd.MaxConnsPerLink` per link. `reverse`: the server sends its
/// requests on it; else it is served like the control connection.
fn attach<H: LinkHost>(
    host: Arc<H>,
    mut conn: Conn,
    cluster_id: u64,
    link_token: u64,
    reverse: bool,
    deadline: Option<Instant>,
) {
    let link = host
        .accepted_link(cluster_id)
        .filter(|l| l.token == link_token && !l.is_closed());
    let Some(link) = link else {
        log_dropped(conn.peer(), "Attach with an unknown link token");
        let _ = conn.reply(Status::NotYetLink, "unknown link", deadline);
        return;
    };
    let max = host.max_conns_per_link();
    if !link.try_track(&conn, max as usize) {
        let why = format!(
            "cluster {}: a link may have at most {max} connections (llmdd.MaxConnsPerLink)",
            host.cluster_id()
        );
        log_refusal(Some(conn.peer()), &why);
        let _ = conn.reply(Status::LinkFailed, &why, deadline);
        return;
    }
    // Counted before the peer hears it attached: the peer may send us
    // work at once, and a request then waits for this connection.
    if reverse {
        link.expect_request_conn();
    }
    if conn.reply(Status::Success, "", deadline).is_err() {
        if reverse {
            link.drop_expected_conn();
        }
        return;
    }
    if reverse {
        conn.set_frame_limit(wire::MAX_PAYLOAD);
        link.add_request_conn(conn);
    } else {
        serve(host, link, conn, false);
    }
}

/// Server side, first phase: answers the client's `Hello` with our
/// challenge (refusing a client whose link-authentication setting differs
/// from ours), then reads its `Join` and checks its proof of the secret.
fn challenge<H: LinkHost>(
    host: &H,
    c: &mut Conn,
    auth: bool,
    nonce_c: Tag,
    deadline: Instant,
) -> Result<JoinRequest> {
    let key = host.link_key();
    let peer = c.peer();
    match (key.is_some(), auth) {
        (true, false) => {
            let msg = "this server requires link authentication: set the same llmdd.LinkSecret (or llmdd.LinkSecretFile) on both ends";
            frames::refuse_hello(c, Status::ParamInvalid, msg, deadline);
            warn_refusal(format_args!("refused a connection from {peer}: the client does not authenticate (llmdd.LinkSecret is set here)"));
            bail!(ParamInvalid, "{msg}");
        }
        (false, true) => {
            let msg =
                "this server has no llmdd.LinkSecret; set the same secret on both ends, or none";
            frames::refuse_hello(c, Status::ParamInvalid, msg, deadline);
            warn_refusal(format_args!("refused a connection from {peer}: the client authenticates but llmdd.LinkSecret is not set here"));
            bail!(ParamInvalid, "{msg}");
        }
        _ => {}
    }
    let nonce_s = random_tag();
    let t = Transcript::new(
        &nonce_c,
        &nonce_s,
        peer,
        c.local_addr().unwrap_or_else(unknown_endpoint),
    );
    let ack = HelloAck {
        nonce: nonce_s,
        host_tag: identity::host_tag(Side::Server, &t),
        auth_mac: key.map(|k| k.server_mac(&nonce_c, &nonce_s)),
    };
    frames::send_hello_ack(c, ack, deadline)?;
    let join = frames::recv_join(c, deadline)?;
    if let Some(k) = key {
        if !join
            .auth_mac
            .is_some_and(|m| k.check_client(&nonce_c, &nonce_s, &m))
        {
            let e = err!(
                LinkFailed,
                "link authentication failed: the client's proof does not match this server's llmdd.LinkSecret"
            );
            return Err(refuse_join(c, deadline, e, format_args!(
                "refused link from {peer}: link authentication failed (wrong or no llmdd.LinkSecret)"
            )));
        }
    }
    let server_cluster_id = join.server_cluster_id;
    if server_cluster_id != host.cluster_id() {
        // Meant for another cluster (a wrong endpoint): refused
        // before the link table is consulted, naming only the
        // cluster the client asked for.
        let e = err!(
            LinkFailed,
            "this endpoint is not cluster {server_cluster_id}"
        );
        return Err(refuse_join(
            c,
            deadline,
            e,
            format_args!("refused link from {peer}: it is meant for cluster {server_cluster_id}"),
        ));
    }
    Ok(JoinRequest {
        join,
        transcript: t,
    })
}

/// Server side of the handshake after the challenge: checks the link
/// request, verifies the client's identity, answers `JoinAck` and reads the
/// client's `Pools`. A non-empty `comm_name`: a rank-table dialer, matched
/// to the instance's pending comm of that name ([`LinkHost::accepting`]).
fn accept_link<H: LinkHost>(
    host: &H,
    conn: &mut Conn,
    req: &JoinRequest,
    deadline: Instant,
) -> Result<Arc<Link>> {
    let (cluster_id, role, remote_accessible) = (
        req.join.cluster_id,
        req.join.role,
        req.join.remote_accessible,
    );
    let (comm_name, device) = (req.join.comm_name.as_str(), req.join.device.as_ref());
    if host.is_closing() {
        bail!(LinkFailed, "server is finalizing");
    }
    if cluster_id == host.cluster_id() {
        bail!(
            LinkFailed,
            "peer uses this server's own cluster id {cluster_id}"
        );
    }
    if remote_accessible != host.remote_accessible() {
        bail!(
            ParamInvalid,
            "remote-cache-accessible mode differs: client {}, server {}",
            remote_accessible,
            host.remote_accessible()
        );
    }
    backend::check_offers(host.backend().capabilities().hccl_links, device, true)?;
    let comm = host.accepting(cluster_id, comm_name)?;
    let who = format!("cluster {cluster_id} at {}", conn.peer());
    let local_path = judge(
        host,
        Side::Client,
        &req.transcript,
        &req.join.identity,
        &who,
    )?;
    let token = local::random_u64();
    let link = Arc::new(Link::new(LinkParts {
        remote_cluster_id: cluster_id,
        remote_role: role,
        token,
        we_dialed: false,
        remote_addr: conn.peer(),
        path: local_path.map(|v| host_backend::local_path(v, Vec::new())),
        generation: host.generation(),
        local_cluster_id: host.cluster_id(),
        comm_id: comm.as_ref().map_or(0, |c| c.comm_id()),
        conn: host.conn_opts(),
    }));
    link.watch_control(conn);
    // Either side may send its own requests on the control connection,
    // as soon as the link is in the table.
    link.set_control_writer(conn.writer());
    // acl backend: create our communicator before answering, so the
    // client's prepare finds our port listening.
    // A rank-table comm's links get the comm's shared communicator once
    // the comm is set up (`comm.rs`); here we only announce our endpoint.
    let mut our_device = comm.as_ref().and_then(|c| c.local_device());
    if comm.is_none() {
        let ip = || match host.listeners().addr().map(|a| a.ip()) {
            Some(ip) if !ip.is_unspecified() => ip,
            _ => conn
                .local_addr()
                .map(|a| a.ip())
                .unwrap_or(conn.peer().ip()),
        };
        let ids = LinkIds {
            server_cluster: host.cluster_id(),
            client_cluster: cluster_id,
            token,
        };
        if let Some((ours, p)) = host.backend().server_path(device, &ip, ids)? {
            link.set_path(p);
            our_device = Some(ours);
        }
    }
    // A server replaces what it accepted from that cluster (stale links).
    if let Err(e) = host.install(&link, comm.as_deref()) {
        // The refusal still goes out on `conn`; only the communicator goes.
        if let Some(p) = link.data_path() {
            p.close();
        }
        return Err(e);
    }
    let sent = send_join_ack(host, conn, req, &link, our_device, deadline)
        .and_then(|_| receive_pools(host, conn, &link, deadline))
        .and_then(|_| liveness::watch(host.reactor()?.arc(), &link));
    if let Err(e) = sent {
        host.remove_link(&link);
        link.teardown(Duration::ZERO);
        return Err(e);
    }
    // On failure (the client gave up) the link is dropped.
    let prepared = match link.data_path() {
        Some(p) => host.backend().prepare_path(p, None),
        None => Ok(()),
    };
    if let Err(e) = prepared {
        host.remove_link(&link);
        link.teardown(Duration::ZERO);
        return Err(e);
    }
    if !link.requests_on_control() {
        // Reverse connections open when this side first needs one
        // (`Link::take_conn` asks the client) and close when unused.
        let tick: std::sync::Weak<dyn crate::transport::poller::Tick> = Arc::downgrade(&link) as _;
        if let Err(e) = host.reactor().map(|r| r.add_tick(tick)) {
            host.remove_link(&link);
            link.teardown(Duration::ZERO);
            return Err(e);
        }
    }
    if link.comm_id != 0 {
        // The dialer's side is complete once its Pools arrived (and, on
        // the acl backend, both ends prepared HCCL above).
        host.comm_peer_ready(&link);
    }
    log_info!(
        "cluster {} accepted link from cluster {cluster_id}",
        host.cluster_id()
    );
    Ok(link)
}

/// Server: sends the `JoinAck` accepting `req` with `link`.
fn send_join_ack<H: LinkHost>(
    host: &H,
    c: &mut Conn,
    req: &JoinRequest,
    link: &Link,
    device: Option<DeviceEndpoint>,
    deadline: Instant,
) -> Result<()> {
    let disclose = host.one_sided()
        && identity::same_host_tag(Side::Client, &req.transcript, &req.join.identity.host_tag);
    let pools = match link.peer_process() {
        Some(_) => host.pool_infos(),
        None => Vec::new(),
    };
    let ack = JoinAck {
        cluster_id: host.cluster_id(),
        role: host.role(),
        link_token: link.token,
        device,
        identity: identity::ours(Side::Server, &req.transcript, disclose),
        pools,
    };
    frames::send_join_ack(c, ack, deadline)
}

/// Server, after `JoinAck`: reads the client's `Pools` and maps them when
/// the client proved to be on this host.
fn receive_pools<H: LinkHost>(
    host: &H,
    c: &mut Conn,
    link: &Arc<Link>,
    deadline: Instant,
) -> Result<()> {
    let pools = frames::recv_pools(c, link.remote_cluster_id, deadline)?;
    let maps = map_pools(host, link.peer_process(), &pools);
    if let (false, Some(p)) = (maps.is_empty(), host_backend::same_host(link.data_path())) {
        p.set_pools(maps);
    }
    Ok(())
}

/// Answers a `Join` with the refusal `e`, logs `why` (rate-limited: any peer
/// can cause it) and returns `e`.
fn refuse_join(c: &mut Conn, deadline: Instant, e: Error, why: std::fmt::Arguments<'_>) -> Error {
    frames::refuse_join(c, &e, Some(deadline));
    warn_refusal(why);
    e
}
