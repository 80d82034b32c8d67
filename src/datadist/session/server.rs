//! The serving side of link setup: the instance's listeners, admission of
//! accepted connections, the handshake of a link_clusters client or a
//! rank-table dialer, and `Attach` of a link's further connections.

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::Session;
use crate::backend::{self, host, LinkIds};
use crate::datadist::admission::{self, PendingSlot};
use crate::datadist::handshake::JoinRequest;
use crate::datadist::listener::{log_dropped, log_refusal, Admit, Listener};
use crate::datadist::liveness;
use crate::status::{Result, Status};
use crate::transfer::handshake::{self as frames, First};
use crate::transfer::link::{Link, LinkParts};
use crate::transfer::serve::serve;
use crate::transport::local;
use crate::transport::tcp::Conn;
use crate::transport::wire;
use crate::{bail, err, log_debug, log_info};

/// Bound on a peer's handshake (serving-side I/O: `llmdd.IoTimeoutMs`).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a Hello for a cluster with a live link waits for that link's
/// control connection to hang up (a client that force-unlinked and links
/// again at once) before it is refused as `LLM_ALREADY_LINK`.
const STALE_LINK_GRACE: Duration = Duration::from_millis(100);

impl Admit for Session {
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn is_closing(&self) -> bool {
        Session::is_closing(self)
    }

    /// Takes an accepted connection in: admission caps (per peer address,
    /// handshakes in progress), socket options, then a thread for its first
    /// frame. Whatever cannot be taken in is refused with a reason.
    fn admit(&self, stream: TcpStream, peer: SocketAddr, comm_only: bool) {
        let (peer_slot, pending) = match self.listeners.admission().admit(peer.ip()) {
            Ok(slots) => slots,
            Err(why) => {
                // Nothing identifying goes to an unproven peer (not even
                // our cluster id): the reason alone.
                admission::refuse(&stream, Status::LinkFailed, &why);
                log_refusal(Some(peer), &format!("cluster {}: {why}", self.cluster_id));
                return;
            }
        };
        let mut conn = match Conn::new(stream, self.config.conn_opts()) {
            Ok(c) => c,
            Err(e) => {
                log_debug!("dropping connection from {peer}: {}", e.message);
                return;
            }
        };
        conn.hold(Box::new(peer_slot));
        let id = self.listeners.pend(conn.weak());
        let sock = conn.shared();
        let s = self.arc();
        let started = self.try_spawn("llmdd-conn", move || {
            s.incoming(conn, id, pending, comm_only)
        });
        if let Err(e) = started {
            self.listeners.unpend(id);
            let why = format!("the server is out of threads ({})", e.message);
            admission::refuse(&sock, Status::LinkFailed, &why);
            log_refusal(Some(peer), &format!("cluster {}: {why}", self.cluster_id));
        }
    }
}

impl Session {
    /// Binds `addr` and starts its accept thread. `comm_only`: a listener
    /// bound for rank-table comms, which refuses link_clusters handshakes
    /// (only `llm.ListenIpInfo` makes an instance a server).
    fn bind_listener(&self, addr: SocketAddr, comm_only: bool) -> Result<Listener> {
        let host: Weak<dyn Admit> = self.me.clone();
        let l = Listener::bind(addr, comm_only, host)?;
        log_info!("cluster {} listening on {}", self.cluster_id, l.addr());
        Ok(l)
    }

    /// Starts listening on `addr` (replacing any current listener).
    pub fn listen(&self, addr: SocketAddr) -> Result<()> {
        let l = self.bind_listener(addr, false)?;
        self.listeners.set_main(l);
        Ok(())
    }

    /// A listener on `addr` for a comm: `None` when the instance's own
    /// listener (`llm.ListenIpInfo`) already serves that endpoint, else a
    /// reference on a comm listener (bound now, or shared with another comm),
    /// released with [`Session::release_listener`].
    pub(crate) fn acquire_listener(&self, addr: SocketAddr) -> Result<Option<SocketAddr>> {
        self.listeners
            .acquire_comm(addr, || self.bind_listener(addr, true))
    }

    /// Drops a comm's reference on its listener; the last one closes it.
    pub(crate) fn release_listener(&self, addr: SocketAddr) {
        self.listeners.release_comm(addr)
    }

    /// Stops listening (becomes a client).
    pub fn stop_listening(&self) {
        self.listeners.stop_main()
    }

    /// Handles a freshly accepted connection: handshake or attach, then serve.
    fn incoming(
        self: Arc<Self>,
        mut conn: Conn,
        pending_id: u64,
        pending: PendingSlot,
        comm_only: bool,
    ) {
        let deadline = Some(Instant::now() + HANDSHAKE_TIMEOUT);
        let first = frames::first(&mut conn, deadline);
        let pending = std::cell::Cell::new(Some(pending));
        let unpend = |s: &Session| {
            s.listeners.unpend(pending_id);
            drop(pending.take());
        };
        match first {
            Ok(First::Hello { auth, nonce }) => {
                let Some(d) = deadline else { return };
                // The challenge (and link authentication) runs outside the
                // setup slots: a peer that never answers holds none.
                let req = match self.server_challenge(&mut conn, auth, nonce, d) {
                    Ok(r) => r,
                    Err(e) => {
                        unpend(&self);
                        log_debug!("handshake from {} ended: {}", conn.peer(), e.message);
                        return;
                    }
                };
                let cluster_id = req.join.cluster_id;
                self.listeners.setups().acquire();
                let r = if comm_only && req.join.comm_name.is_empty() {
                    Err(err!(
                        ParamInvalid,
                        "this endpoint of cluster {} serves rank-table comms only; link_clusters needs its llm.ListenIpInfo",
                        self.cluster_id
                    ))
                } else {
                    // A fresh bound: waiting for a setup slot does not eat it.
                    self.accept_link(&mut conn, &req, Instant::now() + HANDSHAKE_TIMEOUT)
                };
                self.listeners.setups().release();
                unpend(&self);
                match r {
                    Ok(link) => serve(self, link, conn, true),
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
                            crate::log::rate::warn_refusal(format_args!(
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
                unpend(&self);
                self.attach(conn, cluster_id, link_token, reverse, deadline);
            }
            Ok(First::Other(t)) => {
                unpend(&self);
                let why = format!("its first frame has type {t}");
                log_dropped(conn.peer(), &why);
            }
            Err(e) => {
                unpend(&self);
                log_dropped(conn.peer(), &e.message);
            }
        }
    }

    /// Server side of `Attach`: one more connection of an existing link, up to
    /// `llmdd.MaxConnsPerLink` per link. `reverse`: the server sends its
    /// requests on it; else it is served like the control connection.
    fn attach(
        self: Arc<Self>,
        mut conn: Conn,
        cluster_id: u64,
        link_token: u64,
        reverse: bool,
        deadline: Option<Instant>,
    ) {
        let link = self
            .link_dir(cluster_id, false)
            .filter(|l| l.token == link_token && !l.is_closed());
        let Some(link) = link else {
            log_dropped(conn.peer(), "Attach with an unknown link token");
            let _ = conn.reply(Status::NotYetLink, "unknown link", deadline);
            return;
        };
        let max = self.config.net.max_conns_per_link;
        if !link.try_track(&conn, max as usize) {
            let why = format!(
                "cluster {}: a link may have at most {max} connections (llmdd.MaxConnsPerLink)",
                self.cluster_id
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
            serve(self, link, conn, false);
        }
    }

    /// Server side of a `Hello` for `cluster` (a link_clusters client). A
    /// link this side dialled to that cluster does not matter (both ends may
    /// link to each other). A closed accepted link is dropped, and so is one whose peer is
    /// proven gone (control connection closed or errored, waiting up to
    /// [`STALE_LINK_GRACE`] for a hang-up under way); a live one is kept and
    /// the newcomer refused with `LLM_ALREADY_LINK`, so a second process
    /// claiming the cluster id cannot take over a real client's link.
    fn replace_stale_link(&self, cluster: u64) -> Result<()> {
        let Some(old) = self.link_dir(cluster, false) else {
            return Ok(());
        };
        match old.peer_gone_within(STALE_LINK_GRACE) {
            Some(why) => {
                log_info!("replacing the stale link from cluster {cluster} ({why})");
                if self.remove_exact(&old) {
                    old.teardown(Duration::ZERO);
                }
                Ok(())
            }
            // The message goes to the newcomer: it names neither this
            // server's cluster id nor the real client's address.
            None => bail!(
                AlreadyLink,
                "there already is a live link from cluster {cluster}; a client with that cluster id must unlink (or be found dead within llmdd.DeadPeerTimeoutMs) first"
            ),
        }
    }

    /// Server side of the handshake after the challenge: checks the link
    /// request, verifies the client's identity, answers `JoinAck` and reads
    /// the client's `Pools`. A non-empty `comm_name`: a rank-table dialer,
    /// matched to our pending comm of that name (`comm.rs`).
    fn accept_link(
        &self,
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
        if self.is_closing() {
            bail!(LinkFailed, "server is finalizing");
        }
        if cluster_id == self.cluster_id {
            bail!(
                LinkFailed,
                "peer uses this server's own cluster id {cluster_id}"
            );
        }
        if remote_accessible != self.config.remote_cache_accessible {
            bail!(
                ParamInvalid,
                "remote-cache-accessible mode differs: client {}, server {}",
                remote_accessible,
                self.config.remote_cache_accessible
            );
        }
        backend::check_offers(self.caps().hccl_links, device, true)?;
        let comm = if comm_name.is_empty() {
            if let Some(c) = self.comm_of(cluster_id) {
                bail!(
                    AlreadyLink,
                    "cluster {cluster_id} is a member of rank-table comm {} (\"{}\") here",
                    c.id,
                    c.name()
                );
            }
            self.replace_stale_link(cluster_id)?;
            None
        } else {
            Some(self.pending_comm(comm_name, cluster_id)?)
        };
        if self.link_count() >= self.config.max_links as usize {
            bail!(
                LinkFailed,
                "server already has {} links (the limit)",
                self.config.max_links
            );
        }
        let local_path = self.judge_client(req, conn.peer())?;
        let token = local::random_u64();
        let link = Arc::new(Link::new(LinkParts {
            remote_cluster_id: cluster_id,
            remote_role: role,
            token,
            we_dialed: false,
            remote_addr: conn.peer(),
            path: local_path.map(|v| host::local_path(v, Vec::new())),
            generation: self.registry.generation(),
            local_cluster_id: self.cluster_id,
            comm_id: comm.as_ref().map_or(0, |c| c.id),
            conn: self.config.conn_opts(),
        }));
        link.watch_control(conn);
        // Either side may send its own requests on the control connection,
        // as soon as the link is in the table.
        link.set_control_writer(conn.writer());
        // acl backend: create our communicator before answering, so the
        // client's prepare finds our port listening.
        // A rank-table comm's links get the comm's shared communicator once
        // the comm is set up (`comm.rs`); here we only announce our endpoint.
        let mut our_device = comm
            .as_ref()
            .and_then(|c| c.spec.local_member().device.clone());
        if comm.is_none() {
            let ip = || match self.listen_addr().map(|a| a.ip()) {
                Some(ip) if !ip.is_unspecified() => ip,
                _ => conn
                    .local_addr()
                    .map(|a| a.ip())
                    .unwrap_or(conn.peer().ip()),
            };
            let ids = LinkIds {
                server_cluster: self.cluster_id,
                client_cluster: cluster_id,
                token,
            };
            if let Some((ours, p)) = self.backend.server_path(device, &ip, ids)? {
                link.set_path(p);
                our_device = Some(ours);
            }
        }
        let installed = match &comm {
            Some(c) => self.comm_adopt(c, &link, false),
            // A server replaces what it accepted from that cluster (stale links).
            None => self.insert_plain_link(link.clone(), true),
        };
        if let Err(e) = installed {
            // The refusal still goes out on `conn`; only the communicator goes.
            if let Some(p) = link.data_path() {
                p.close();
            }
            return Err(e);
        }
        let sent = self
            .send_join_ack(conn, req, &link, our_device, deadline)
            .and_then(|_| self.receive_pools(conn, &link, deadline))
            .and_then(|_| liveness::watch(self.reactor()?.arc(), &link));
        if let Err(e) = sent {
            self.remove_exact(&link);
            link.teardown(Duration::ZERO);
            return Err(e);
        }
        // On failure (the client gave up) the link is dropped.
        let prepared = match link.data_path() {
            Some(p) => self.backend.prepare_path(p, None),
            None => Ok(()),
        };
        if let Err(e) = prepared {
            self.remove_exact(&link);
            link.teardown(Duration::ZERO);
            return Err(e);
        }
        if !link.requests_on_control() {
            // Reverse connections open when this side first needs one
            // (`Link::take_conn` asks the client) and close when unused.
            let tick: std::sync::Weak<dyn crate::transport::poller::Tick> =
                Arc::downgrade(&link) as _;
            if let Err(e) = self.reactor().map(|r| r.add_tick(tick)) {
                self.remove_exact(&link);
                link.teardown(Duration::ZERO);
                return Err(e);
            }
        }
        if link.comm_id != 0 {
            // The dialer's side is complete once its Pools arrived (and, on
            // the acl backend, both ends prepared HCCL above).
            self.comm_peer_ready(&link);
        }
        log_info!(
            "cluster {} accepted link from cluster {cluster_id}",
            self.cluster_id
        );
        Ok(link)
    }
}
