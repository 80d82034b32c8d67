//! The serving side of a link: the loop that serves every connection of a
//! link on the control plane's poller, and the handler of one request.
//!
//! What a peer may see and touch is the API layer's to decide: the handler
//! asks its [`ServeHost`] (the instance) for the table, key resolutions,
//! consumption, the check of a remote read/write and notifications, each
//! within the access rules, checked before a byte moves; a refusal is
//! answered with its status and message and logged (rate-limited).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::cache::types::{CacheKey, Segment};
use crate::log::rate::warn_refusal;
use crate::status::{Error, Result, Status};
use crate::transfer::link::Link;
use crate::transport::poller::{self, Service};
use crate::transport::tcp::Conn;
use crate::transport::wire::{self, CacheEntry, Msg};
use crate::{bail, log_debug, log_info, log_warn};

/// What the serve loop needs of the instance whose links it serves: the
/// answers to a peer's requests (each within the access rules of that link)
/// and the instance's part in the loop's bookkeeping.
pub trait ServeHost: Send + Sync + 'static {
    /// The process's control plane, taken on first need.
    fn reactor(&self) -> Result<Arc<poller::Handle>>;
    /// The count of this instance's served connections (finalize waits for
    /// none to be left).
    fn served(&self) -> &Arc<ServedCount>;
    /// Bound on serving-side I/O (`llmdd.IoTimeoutMs`): a frame once begun,
    /// and each served request's I/O.
    fn io_timeout(&self) -> Duration;
    /// How long a peer's `Unlink` waits for the link's requests still being
    /// served, and its teardown for transfers in flight (`llm.SyncKvCacheWaitTime`).
    fn unlink_wait(&self) -> Duration;
    /// The cache table `link` may see.
    fn table(&self, link: &Link) -> Vec<CacheEntry>;
    /// The cache and slot `key` names, if `link` may reach it (a refusal of
    /// the access rules is logged here).
    fn resolve(&self, link: &Link, key: &CacheKey) -> Result<(CacheEntry, u64)>;
    /// Consumes the request key (`req_id`, `model_id`) if `link` may.
    fn consume(&self, link: &Link, req_id: u64, model_id: u64) -> Result<()>;
    /// Whether `link` may read (`write`: write) every byte of `segments` of
    /// this instance's registered memory.
    fn check_segments(&self, link: &Link, segments: &[Segment], write: bool) -> Result<()>;
    /// Queues a peer's notification.
    fn notify(&self, name: String, msg: String) -> Result<()>;
    /// Removes `link` from the instance's table if it is still the current
    /// one; true if it was.
    fn remove_link(&self, link: &Arc<Link>) -> bool;
    /// Client: opens up to `count` more reverse connections of `link` (its
    /// server asked, `OpenConns`), within this side's own limit.
    fn open_reverse(&self, link: &Arc<Link>, count: u32, deadline: Instant) -> Result<()>;
}

/// Logs a refused request of `link`'s peer, rate-limited (any peer can make
/// refusals happen at any rate).
pub fn log_refusal(link: &Link, what: &str, e: &Error) {
    warn_refusal(format_args!(
        "refused {what} from cluster {}: {}",
        link.remote_cluster_id, e.message
    ))
}

/// Handles one request; `Ok(false)` ends the connection cleanly.
pub fn handle(host: &dyn ServeHost, link: &Arc<Link>, conn: &mut Conn, msg: Msg) -> Result<bool> {
    let deadline = Some(Instant::now() + host.io_timeout());
    let refused = |what: &str, e: &Error| log_refusal(link, what, e);
    match msg {
        Msg::GetTable => {
            let entries = host.table(link);
            conn.send(&Msg::Table { status: 0, entries }, deadline)?;
        }
        Msg::Resolve { key } => {
            let resolved = host.resolve(link, &key);
            if resolved.is_err() {
                link.stats.refused();
            }
            let reply = match resolved {
                Ok((entry, slot)) => Msg::Resolved {
                    status: 0,
                    message: String::new(),
                    entry: Some(entry),
                    slot,
                },
                Err(e) => Msg::Resolved {
                    status: e.status.code(),
                    message: e.message,
                    entry: None,
                    slot: 0,
                },
            };
            conn.send(&reply, deadline)?;
        }
        Msg::Consume { req_id, model_id } => match host.consume(link, req_id, model_id) {
            Ok(()) => conn.reply(Status::Success, "", deadline)?,
            Err(e) => {
                link.stats.refused();
                refused("a key consumption", &e);
                conn.reply(e.status, &e.message, deadline)?;
            }
        },
        Msg::Read { total, .. } | Msg::Write { total, .. } if !link.serves_tcp_bulk() => {
            // acl links move bytes over HCCL only: device memory is not
            // host-addressable, so it is never served over TCP.
            link.stats.refused();
            if matches!(msg, Msg::Write { .. }) {
                conn.discard(total, deadline)?;
                conn.reply(
                    Status::FeatureNotEnabled,
                    "this link moves data over HCCL, not TCP",
                    deadline,
                )?;
            } else {
                conn.send(
                    &Msg::ReadData {
                        status: Status::FeatureNotEnabled.code(),
                        message: "this link moves data over HCCL, not TCP".into(),
                        total: 0,
                    },
                    deadline,
                )?;
            }
        }
        Msg::Read { segments, total } => match host
            .check_segments(link, &segments, false)
            .inspect_err(|e| refused("a read", e))
        {
            Ok(()) => {
                // Counted before the bytes go out: the peer's pull may return
                // (and its caller read our counters) the moment they arrive.
                link.stats.served(false, total);
                conn.send_with_bulk(
                    &Msg::ReadData {
                        status: 0,
                        message: String::new(),
                        total,
                    },
                    &segments,
                    deadline,
                )?;
            }
            Err(e) => {
                link.stats.refused();
                conn.send(
                    &Msg::ReadData {
                        status: e.status.code(),
                        message: e.message,
                        total: 0,
                    },
                    deadline,
                )?;
            }
        },
        Msg::Write { segments, total } => match host
            .check_segments(link, &segments, true)
            .inspect_err(|e| refused("a write", e))
        {
            Ok(()) => {
                conn.recv_bulk(&segments, deadline)?;
                link.stats.served(true, total);
                conn.reply(Status::Success, "", deadline)?;
            }
            Err(e) => {
                link.stats.refused();
                conn.discard(total, deadline)?;
                conn.reply(e.status, &e.message, deadline)?;
            }
        },
        Msg::Notify { name, msg } => match host.notify(name, msg) {
            // Queued only now: the sender sends it after its transfer's
            // last byte was applied here, so the data has landed.
            Ok(()) => conn.reply(Status::Success, "", deadline)?,
            Err(e) => {
                refused("a notification", &e);
                conn.reply(e.status, &e.message, deadline)?;
            }
        },
        Msg::OpenConns { count } => {
            if !link.we_dialed {
                bail!(LinkFailed, "client sent OpenConns to a server");
            }
            let until = Instant::now() + host.io_timeout();
            match host.open_reverse(link, count, until) {
                Ok(()) => conn.reply(Status::Success, "", deadline)?,
                Err(e) => {
                    refused("a request for connections", &e);
                    conn.reply(e.status, &e.message, deadline)?;
                }
            }
        }
        Msg::Unlink => {
            if link.we_dialed {
                bail!(LinkFailed, "server sent Unlink to a client");
            }
            server_unlink(host, link);
            let _ = conn.reply(Status::Success, "", deadline);
            link.teardown(host.unlink_wait());
            return Ok(false);
        }
        other => bail!(LinkFailed, "unexpected request type {}", other.msg_type()),
    }
    Ok(true)
}

/// Connections of an instance being served, and a wait for none to be left.
#[derive(Default)]
pub struct ServedCount {
    n: Mutex<usize>,
    cv: Condvar,
}

impl ServedCount {
    fn guard(self: &Arc<Self>) -> ServedGuard {
        *self.n.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        ServedGuard(self.clone())
    }

    /// Waits up to `bound` for no served connection to be left.
    pub fn wait_zero(&self, bound: Duration) -> bool {
        let until = Instant::now() + bound;
        let mut n = self.n.lock().unwrap_or_else(|p| p.into_inner());
        while *n > 0 {
            let now = Instant::now();
            if now >= until {
                return false;
            }
            n = self
                .cv
                .wait_timeout(n, until - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }
}

struct ServedGuard(Arc<ServedCount>);

impl Drop for ServedGuard {
    fn drop(&mut self) {
        let mut n = self.0.n.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.cv.notify_all();
        }
    }
}

/// The requests of one connection of a link, served on the control plane's
/// poller. `control` marks the link's first connection on the server: losing
/// it means the client is gone.
struct LinkService {
    host: Arc<dyn ServeHost>,
    link: Arc<Link>,
    control: bool,
    _counted: ServedGuard,
}

impl Service for LinkService {
    fn handle(&self, conn: &mut Conn, msg: Msg) -> Result<bool> {
        let link = &self.link;
        if self.control
            && matches!(
                msg,
                Msg::Reply { .. } | Msg::Table { .. } | Msg::Resolved { .. }
            )
        {
            // The answer to this side's own request on the control connection.
            link.deliver_reply(conn.tag(), msg);
            return Ok(true);
        }
        // An unlink waits for the requests being served (not for itself).
        let _serving = (!matches!(msg, Msg::Unlink)).then(|| link.serving());
        handle(&*self.host, link, conn, msg).inspect_err(|e| {
            if !link.is_closed() {
                log_warn!(
                    "dropping connection from cluster {}: {}",
                    link.remote_cluster_id,
                    e.message
                );
            }
        })
    }

    fn ended(&self, why: Error) {
        let (host, link) = (&self.host, &self.link);
        if !link.is_closed() {
            log_debug!(
                "connection of link to cluster {} ended: {}",
                link.remote_cluster_id,
                why.message
            );
        }
        if self.control && link.we_dialed {
            // The server closed the control connection (unlink, forced
            // unlink, finalize, exit) or keepalive errored it: the link is
            // dead, unless this side's own unlink is under way (which ends it).
            if !link.is_closed() && !link.is_draining() {
                link.mark_dead(&format!("the server ended it: {}", why.message));
            }
            return;
        }
        // A link still in the table whose control connection ended is over;
        // one that is dead (its same-host client exited: `Link::mark_dead`)
        // was torn down already, and only leaves the table here.
        if self.control && host.remove_link(link) {
            if let Some(why) = link.dead_reason() {
                log_info!(
                    "client cluster {} is gone ({why}); freed our side of its link",
                    link.remote_cluster_id
                );
            } else if link.comm_id != 0 {
                // The usual end of a rank-table link: the dialer unlinked first.
                log_info!(
                    "cluster {} closed its side of comm {}; freeing the link",
                    link.remote_cluster_id,
                    link.comm_id
                );
            } else {
                // Routine after a forced unlink on the client (spec flow 2), so info.
                log_info!(
                    "client cluster {} closed its link (forced unlink or exit); freeing our side",
                    link.remote_cluster_id
                );
            }
            link.teardown(Duration::ZERO);
        }
    }
}

/// Serves requests arriving on `conn` until it closes, on the control
/// plane's poller (`transport::poller`). `control` marks the link's first
/// connection on the server. Waiting for a request has no deadline (an idle
/// link is bounded by keepalive); a frame, once begun, must arrive within
/// `llmdd.IoTimeoutMs`, and so must each served request's I/O.
pub fn serve(host: Arc<dyn ServeHost>, link: Arc<Link>, mut conn: Conn, control: bool) {
    conn.set_frame_limit(wire::MAX_PAYLOAD);
    let frame_timeout = host.io_timeout();
    let counted = host.served().guard();
    let reactor = host.reactor();
    let svc = Arc::new(LinkService {
        host,
        link,
        control,
        _counted: counted,
    });
    match reactor {
        Ok(r) => r.serve(conn, svc, frame_timeout),
        Err(e) => {
            drop(conn);
            svc.ended(e);
        }
    }
}

/// Handles `Unlink` on the server: waits (up to `llm.SyncKvCacheWaitTime`)
/// for the requests of the link still being served and for this side's own
/// transfers on it, then drops our side of `link`.
fn server_unlink(host: &dyn ServeHost, link: &Arc<Link>) {
    if !link.drain(host.unlink_wait()) {
        log_warn!(
            "cluster {} unlinks while requests are still in flight; they are cut",
            link.remote_cluster_id
        );
    }
    if host.remove_link(link) {
        log_info!(
            "cluster {} unlinked by cluster {}",
            link.local_cluster_id,
            link.remote_cluster_id
        );
    }
}

#[cfg(test)]
mod tests;
