//! The serving side of a link: answers a peer's requests against this
//! instance's registry, within the access rules of `datadist::access`: every
//! table, key resolution and remote read/write covers only caches the peer may
//! reach, checked before a byte moves; a refusal is answered with its status
//! and message and logged (rate-limited).

use std::sync::Arc;

use crate::cache::registry::Resolved;
use crate::datadist::access::Access;
use crate::datadist::session::{serve_deadline, server_unlink, Session};
use crate::log::rate::warn_refusal;
use crate::status::{Result, Status};
use crate::transfer::link::Link;
use crate::transport::tcp::Conn;
use crate::transport::wire::Msg;
use crate::{bail, err};

/// Handles one request; `Ok(false)` ends the connection cleanly.
pub fn handle(session: &Session, link: &Arc<Link>, conn: &mut Conn, msg: Msg) -> Result<bool> {
    let deadline = Some(serve_deadline(session));
    let access = Access::of(session.config.remote_cache_accessible, link);
    let refused = |what: &str, e: &crate::Error| {
        warn_refusal(format_args!(
            "refused {what} from cluster {}: {}",
            link.remote_cluster_id, e.message
        ))
    };
    match msg {
        Msg::GetTable => {
            // Request/response mode publishes the current table (keys resolve
            // against it anyway); remote-cache-accessible mode only what the
            // link may see.
            let generation = if access.remote_mode {
                link.generation
            } else {
                u64::MAX
            };
            let entries = session.registry.table(generation);
            conn.send(&Msg::Table { status: 0, entries }, deadline)?;
        }
        Msg::Resolve { key } => {
            let resolved = session.registry.resolve(&key).and_then(|r| {
                // acl: the peer can reach only memory bound to the link's communicator.
                crate::datadist::acl_rules::check_bound(&r.record, link)?;
                if let Err(why) = access.check(&r.record) {
                    let e = err!(KvCacheNotExist, "cache {} {why}", r.record.id);
                    refused("a key resolution", &e);
                    return Err(e);
                }
                Ok(r)
            });
            if resolved.is_err() {
                link.stats.refused();
            }
            let reply = match resolved {
                Ok(Resolved { record, slot, .. }) => Msg::Resolved {
                    status: 0,
                    message: String::new(),
                    entry: Some(session.registry.entry(&record)),
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
        Msg::Consume { req_id, model_id } => match access.check_consume() {
            Ok(()) => {
                let key = crate::cache::types::BindKey {
                    is_prefix: false,
                    id: req_id,
                    model_id,
                };
                session.registry.consume(&key);
                conn.reply(Status::Success, "", deadline)?;
            }
            Err(e) => {
                link.stats.refused();
                refused("a key consumption", &e);
                conn.reply(e.status, &e.message, deadline)?;
            }
        },
        Msg::Read { total, .. } | Msg::Write { total, .. } if link.hccl().is_some() => {
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
        Msg::Read { segments, total } => match session
            .registry
            .check_local(&segments, false, |r| access.check(r))
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
        Msg::Write { segments, total } => match session
            .registry
            .check_local(&segments, true, |r| access.check(r))
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
        Msg::Notify { name, msg } => match session.inbox.push(name, msg) {
            // Queued only now: the sender sends it after its transfer's
            // last byte was applied here, so the data has landed.
            Ok(()) => conn.reply(Status::Success, "", deadline)?,
            Err(e) => {
                refused("a notification", &e);
                conn.reply(e.status, &e.message, deadline)?;
            }
        },
        Msg::Unlink => {
            if link.we_dialed {
                bail!(LinkFailed, "server sent Unlink to a client");
            }
            server_unlink(session, link);
            let _ = conn.reply(Status::Success, "", deadline);
            link.teardown(session.config.sync_kv_timeout);
            return Ok(false);
        }
        other => bail!(LinkFailed, "unexpected request type {}", other.msg_type()),
    }
    Ok(true)
}
