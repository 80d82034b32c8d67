//! Typed control RPCs over a link: the peer's cache table, key resolution,
//! consuming a one-shot key, a notification, and the non-forced unlink. Each
//! sends its request frame and matches its reply here, so the API layer
//! never builds or matches a wire frame.

use std::sync::Arc;
use std::time::Instant;

use crate::bail;
use crate::cache::types::CacheKey;
use crate::status::{Error, Result, Status};
use crate::transfer::link::{request, Link, PeerTable};
use crate::transport::tcp::check_reply;
use crate::transport::wire::{CacheEntry, Msg};

/// The peer's cache table (`GetTable`). `what` names the fetch in the error
/// of a refusal ("fetching the peer's cache table").
pub fn get_table(link: &Arc<Link>, what: &str, deadline: Instant) -> Result<Vec<CacheEntry>> {
    match request(link, &Msg::GetTable, deadline)? {
        Msg::Table { status, entries } => {
            check_reply(status, "", what)?;
            Ok(entries)
        }
        m => bail!(LinkFailed, "unexpected reply {} to GetTable", m.msg_type()),
    }
}

/// Fetches the peer's cache table (`GetTable`) and caches it on the link.
pub fn refresh_table(link: &Arc<Link>, deadline: Instant) -> Result<Arc<PeerTable>> {
    let t = Arc::new(PeerTable::new(get_table(
        link,
        "fetching the peer's cache table",
        deadline,
    )?));
    link.set_table(t.clone());
    Ok(t)
}

/// The cache and slot `key` names on the peer (`Resolve`). A refusal keeps
/// the peer's status, its message prefixed with the peer's cluster id.
pub fn resolve(link: &Arc<Link>, key: &CacheKey, deadline: Instant) -> Result<(CacheEntry, u64)> {
    match request(link, &Msg::Resolve { key: *key }, deadline)? {
        Msg::Resolved {
            status: 0,
            entry: Some(e),
            slot,
            ..
        } => Ok((e, slot)),
        Msg::Resolved {
            status, message, ..
        } => Err(Error::new(
            Status::from_code(status),
            format!("cluster {}: {message}", link.remote_cluster_id),
        )),
        m => bail!(LinkFailed, "unexpected reply {} to Resolve", m.msg_type()),
    }
}

/// Drops the peer's one-shot request key `(req_id, model_id)` after a
/// successful pull (`Consume`).
pub fn consume(link: &Arc<Link>, req_id: u64, model_id: u64, deadline: Instant) -> Result<()> {
    match request(link, &Msg::Consume { req_id, model_id }, deadline)? {
        Msg::Reply { status, message } => check_reply(status, &message, "consuming the cache key"),
        m => bail!(LinkFailed, "unexpected reply {} to Consume", m.msg_type()),
    }
}

/// Sends a byte-addressed engine's notification `name`/`msg` (`Notify`).
pub fn notify(link: &Arc<Link>, name: &str, msg: &str, deadline: Instant) -> Result<()> {
    let req = Msg::Notify {
        name: name.to_string(),
        msg: msg.to_string(),
    };
    match request(link, &req, deadline)? {
        Msg::Reply { status, message } => check_reply(status, &message, "notification"),
        m => bail!(LinkFailed, "unexpected reply {} to Notify", m.msg_type()),
    }
}

/// The peer's answer to [`unlink`].
pub enum Unlinked {
    /// The peer dropped its side of the link.
    Agreed,
    /// The peer refused, or answered with another frame; the reason, said
    /// in full.
    Refused(String),
}

/// Asks the server to tear down its side of the link (`Unlink`, on the
/// control connection). `Err`: no answer came (the caller decides whether
/// the link is gone anyway).
pub fn unlink(link: &Link, deadline: Instant) -> Result<Unlinked> {
    Ok(match link.control_request(&Msg::Unlink, deadline)? {
        Msg::Reply { status: 0, .. } => Unlinked::Agreed,
        Msg::Reply { message, .. } => Unlinked::Refused(format!(
            "cluster {} refused the unlink: {message}; force-unlink both ends",
            link.remote_cluster_id
        )),
        m => Unlinked::Refused(format!("unexpected reply {} to Unlink", m.msg_type())),
    })
}
