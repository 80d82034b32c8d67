//! The link handshake (wire protocol 3, docs/security.md): nothing is claimed,
//! everything is proven, and nothing identifying reaches a peer before it has
//! proven what it needs to.
//!
//! ```text
//! client                                   server
//! Hello    {auth?, nonce_c}          →
//!                                    ←     HelloAck {nonce_s, host tag, auth MAC?}
//! Join     {auth MAC?, cluster, server cluster, role, mode, comm, device,
//!           identity: host tag, proof, claim iff the server's host tag matched} →
//!                                    ←     JoinAck {status, cluster, role, token, device,
//!                                           identity (claim iff the client's host tag matched),
//!                                           pools iff the client proved it is on this host}
//! Pools    {pools iff the server proved it is on this host} →
//! ```
//!
//! With `llmdd.LinkSecret` both sides answer the other's nonce with an HMAC of
//! the secret before anything else is exchanged; a side without the secret, or
//! with another one, is refused. Identity proofs (`transport::identity`) are
//! bound to both nonces and to the control connection's endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{host, DataPath};
use crate::datadist::session::Session;
use crate::device::pool::PeerMapping;
use crate::log::rate::warn_refusal;
use crate::status::{Error, Result, Status};
use crate::transfer::handshake::{self as frames, HelloAck, Join, JoinAck};
use crate::transfer::link::Link;
use crate::transport::identity::{self, random_tag, Side, Tag, Transcript, Verdict};
use crate::transport::local::LocalPath;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::tcp::Conn;
use crate::transport::wire::{DeviceEndpoint, Identity, PoolInfo};
use crate::{bail, err, log_debug, log_info};

/// What the client sends in its `Join` besides the proofs.
pub(crate) struct JoinFields {
    pub comm_name: String,
    pub device: Option<DeviceEndpoint>,
}

/// What the client learnt in the handshake.
pub(crate) struct Joined {
    pub remote_role: u32,
    pub token: u64,
    pub server_device: Option<DeviceEndpoint>,
    /// The one-sided path the handshake found (same process or host).
    pub path: Option<Box<dyn DataPath>>,
}

/// A client's link request, after the challenge (and link authentication).
pub(crate) struct JoinRequest {
    /// What the client sent (its secret's MAC already checked).
    pub join: Join,
    transcript: Transcript,
}

/// Endpoint used when a socket cannot report its own (the proofs then fail:
/// no one-sided path, TCP).
fn unknown_endpoint() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

impl Session {
    /// One-sided paths are on (`llmdd.SameHost`) and possible (host backend).
    fn one_sided(&self) -> bool {
        self.config.same_host && self.caps().same_host_paths
    }

    /// Our memfd pools, as announced to a peer proven to be on this host.
    fn pool_infos(&self) -> Vec<PoolInfo> {
        [&self.device_pool, &self.host_pool]
            .into_iter()
            .flatten()
            .filter_map(|p| {
                p.fd().map(|fd| PoolInfo {
                    fd: fd as u32,
                    base: p.base(),
                    size: p.size(),
                })
            })
            .collect()
    }

    /// What a verified peer gets: the one-sided path, or an error when it
    /// claimed an identity it could not prove (`who` names it in messages).
    fn judge(
        &self,
        side: Side,
        t: &Transcript,
        id: &Identity,
        who: &str,
    ) -> Result<Option<LocalPath>> {
        if !self.one_sided() {
            return Ok(None);
        }
        match identity::verify(side, t, id) {
            Verdict::SameProcess => Ok(Some(LocalPath::SameProcess)),
            Verdict::SameHost(p) => {
                log_debug!("{who} is pid {} of this host (proven)", p.pid());
                Ok(Some(LocalPath::SameHost(p)))
            }
            Verdict::Remote(why) => {
                log_info!("no same-host path to {who} ({why}); using TCP");
                Ok(None)
            }
            Verdict::Forged(why) => bail!(
                LinkFailed,
                "{who} failed the same-host identity proof: {why}"
            ),
        }
    }

    /// Maps the pools a verified same-host peer announced (each checked
    /// against its memfd and `llmdd.PeerPoolMaxBytes`); a pool that fails is
    /// reached with process_vm_readv/writev instead.
    fn map_pools(&self, peer: Option<&PeerProcess>, pools: &[PoolInfo]) -> Vec<PeerMapping> {
        let Some(p) = peer else {
            return Vec::new();
        };
        pools
            .iter()
            .filter_map(
                |info| match PeerMapping::open(p, info, self.config.peer_pool_max) {
                    Ok(m) => Some(m),
                    Err(e) => {
                        log_info!("not mapping a pool of pid {}: {}", p.pid(), e.message);
                        None
                    }
                },
            )
            .collect()
    }

    // ---------------------------------------------------------------- client

    /// Client side of the handshake on `c` (connected to `addr`), up to and
    /// including the `Pools` message. `io` maps I/O failures (a rank-table
    /// dialer retries them).
    pub(crate) fn client_handshake(
        &self,
        c: &mut Conn,
        remote_cluster_id: u64,
        addr: SocketAddr,
        fields: JoinFields,
        deadline: Instant,
        io: &dyn Fn(Error) -> Error,
    ) -> Result<Joined> {
        let key = self.config.link_key.as_ref();
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
        let disclose = self.one_sided() && identity::same_host_tag(Side::Server, &t, &server_host);
        let join = Join {
            auth_mac: key.map(|k| k.client_mac(&nonce_c, &nonce_s)),
            cluster_id: self.cluster_id,
            server_cluster_id: remote_cluster_id,
            role: self.role.load(std::sync::atomic::Ordering::Relaxed),
            remote_accessible: self.config.remote_cache_accessible,
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
        let local_path = self.judge(Side::Server, &t, &id, &who)?;
        let peer = match &local_path {
            Some(LocalPath::SameHost(p)) => Some(p),
            _ => None,
        };
        let peer_pools = self.map_pools(peer, &pools);
        let ours = match peer {
            Some(_) => self.pool_infos(),
            None => Vec::new(),
        };
        frames::send_pools(c, ours, deadline).map_err(io)?;
        Ok(Joined {
            remote_role,
            token,
            server_device,
            path: local_path.map(|v| host::local_path(v, peer_pools)),
        })
    }

    // ---------------------------------------------------------------- server

    /// Server side, first phase: answers the client's `Hello` with our
    /// challenge (refusing a client whose link-authentication setting differs
    /// from ours), then reads its `Join` and checks its proof of the secret.
    pub(crate) fn server_challenge(
        &self,
        c: &mut Conn,
        auth: bool,
        nonce_c: Tag,
        deadline: Instant,
    ) -> Result<JoinRequest> {
        let key = self.config.link_key.as_ref();
        let peer = c.peer();
        match (key.is_some(), auth) {
            (true, false) => {
                let msg = "this server requires link authentication: set the same llmdd.LinkSecret (or llmdd.LinkSecretFile) on both ends";
                frames::refuse_hello(c, Status::ParamInvalid, msg, deadline);
                warn_refusal(format_args!("refused a connection from {peer}: the client does not authenticate (llmdd.LinkSecret is set here)"));
                bail!(ParamInvalid, "{msg}");
            }
            (false, true) => {
                let msg = "this server has no llmdd.LinkSecret; set the same secret on both ends, or none";
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
        if server_cluster_id != self.cluster_id {
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
                format_args!(
                    "refused link from {peer}: it is meant for cluster {server_cluster_id}"
                ),
            ));
        }
        Ok(JoinRequest {
            join,
            transcript: t,
        })
    }

    /// Server: the one-sided path to the client of `req` (`Err` when it
    /// claimed an identity it could not prove).
    pub(crate) fn judge_client(
        &self,
        req: &JoinRequest,
        peer: SocketAddr,
    ) -> Result<Option<LocalPath>> {
        let who = format!("cluster {} at {peer}", req.join.cluster_id);
        self.judge(Side::Client, &req.transcript, &req.join.identity, &who)
    }

    /// Server: sends the `JoinAck` accepting `req` with `link`.
    pub(crate) fn send_join_ack(
        &self,
        c: &mut Conn,
        req: &JoinRequest,
        link: &Link,
        device: Option<DeviceEndpoint>,
        deadline: Instant,
    ) -> Result<()> {
        let disclose = self.one_sided()
            && identity::same_host_tag(Side::Client, &req.transcript, &req.join.identity.host_tag);
        let pools = match link.peer_process() {
            Some(_) => self.pool_infos(),
            None => Vec::new(),
        };
        let ack = JoinAck {
            cluster_id: self.cluster_id,
            role: self.role.load(std::sync::atomic::Ordering::Relaxed),
            link_token: link.token,
            device,
            identity: identity::ours(Side::Server, &req.transcript, disclose),
            pools,
        };
        frames::send_join_ack(c, ack, deadline)
    }

    /// Server, after `JoinAck`: reads the client's `Pools` and maps them when
    /// the client proved to be on this host.
    pub(crate) fn receive_pools(
        &self,
        c: &mut Conn,
        link: &Arc<Link>,
        deadline: Instant,
    ) -> Result<()> {
        let pools = frames::recv_pools(c, link.remote_cluster_id, deadline)?;
        let maps = self.map_pools(link.peer_process(), &pools);
        if let (false, Some(p)) = (maps.is_empty(), host::same_host(link.data_path())) {
            p.set_pools(maps);
        }
        Ok(())
    }
}

/// Answers a `Join` with the refusal `e`, logs `why` (rate-limited: any peer
/// can cause it) and returns `e`.
fn refuse_join(c: &mut Conn, deadline: Instant, e: Error, why: std::fmt::Arguments<'_>) -> Error {
    frames::refuse_join(c, &e, Some(deadline));
    warn_refusal(why);
    e
}
