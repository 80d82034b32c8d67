//! The frame encoder: `put_*` helpers and the body of every message.

use super::*;

pub(super) fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(super) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(super) fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(super) fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}
pub(super) fn put_count(out: &mut Vec<u8>, n: usize) {
    put_u32(out, u32::try_from(n).unwrap_or(u32::MAX));
}
pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = s.as_bytes().get(..end).unwrap_or_default();
    put_count(out, bytes.len());
    out.extend_from_slice(bytes);
}
pub(super) fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(x) => {
            put_u8(out, 1);
            put_u64(out, x);
        }
        None => put_u8(out, 0),
    }
}
pub(super) fn put_segments(out: &mut Vec<u8>, segs: &[Segment]) {
    put_count(out, segs.len());
    out.reserve(segs.len() * SEGMENT_WIRE);
    for s in segs {
        put_u64(out, s.dst);
        put_u64(out, s.src);
        put_u64(out, s.len);
    }
}
pub(super) fn put_pools(out: &mut Vec<u8>, pools: &[PoolInfo]) {
    put_count(out, pools.len());
    for pool in pools {
        put_u32(out, pool.fd);
        put_u64(out, pool.base);
        put_u64(out, pool.size);
    }
}
pub(super) fn put_tag(out: &mut Vec<u8>, t: &[u8; TAG_LEN]) {
    out.extend_from_slice(t);
}
pub(super) fn put_opt_tag(out: &mut Vec<u8>, t: &Option<[u8; TAG_LEN]>) {
    match t {
        Some(t) => {
            put_u8(out, 1);
            put_tag(out, t);
        }
        None => put_u8(out, 0),
    }
}
pub(super) fn put_identity(out: &mut Vec<u8>, id: &Identity) {
    put_tag(out, &id.host_tag);
    put_tag(out, &id.proof);
    match id.claim {
        Some(c) => {
            put_u8(out, 1);
            put_u32(out, c.pid);
            put_u32(out, c.fd);
        }
        None => put_u8(out, 0),
    }
}
pub(super) fn put_device(out: &mut Vec<u8>, d: &Option<DeviceEndpoint>) {
    match d {
        Some(d) => {
            put_u8(out, 1);
            put_str(out, &d.server_id);
            put_u32(out, d.device_id);
            put_str(out, &d.device_ip);
            put_u32(out, u32::from(d.device_port));
            put_u32(out, d.super_device_id.unwrap_or(u32::MAX));
            put_str(out, d.super_pod_id.as_deref().unwrap_or(""));
        }
        None => put_u8(out, 0),
    }
}
pub(super) fn put_entry(out: &mut Vec<u8>, e: &CacheEntry) {
    put_i64(out, e.cache_id);
    put_u8(out, e.kind);
    put_u32(out, e.placement);
    put_u32(out, e.data_type);
    put_count(out, e.shape.len());
    for &d in &e.shape {
        put_i64(out, d);
    }
    put_u64(out, e.tensor_bytes);
    put_count(out, e.addrs.len());
    for &a in &e.addrs {
        put_u64(out, a);
    }
    put_count(out, e.req_keys.len());
    for &(req, model, slot) in &e.req_keys {
        put_u64(out, req);
        put_u64(out, model);
        put_u64(out, slot);
    }
    put_opt_u64(out, e.blocks_model);
}
pub(super) fn put_key(out: &mut Vec<u8>, k: &CacheKey) {
    match *k {
        CacheKey::Req {
            cluster_id,
            req_id,
            model_id,
            prefix_id,
        } => {
            put_u8(out, 0);
            put_u64(out, cluster_id);
            put_u64(out, req_id);
            put_u64(out, model_id);
            put_u64(out, prefix_id);
        }
        CacheKey::IdIndex {
            cluster_id,
            cache_id,
            batch_index,
        } => {
            put_u8(out, 1);
            put_u64(out, cluster_id);
            put_i64(out, cache_id);
            put_u32(out, batch_index);
        }
        CacheKey::Blocks {
            cluster_id,
            model_id,
        } => {
            put_u8(out, 2);
            put_u64(out, cluster_id);
            put_u64(out, model_id);
        }
    }
}

pub(super) fn encode_body(msg: &Msg, out: &mut Vec<u8>) {
    match msg {
        Msg::Hello { auth, nonce } => {
            put_bool(out, *auth);
            put_tag(out, nonce);
        }
        Msg::HelloAck {
            status,
            message,
            nonce,
            host_tag,
            auth_mac,
        } => {
            put_u32(out, *status);
            put_str(out, message);
            put_tag(out, nonce);
            put_tag(out, host_tag);
            put_opt_tag(out, auth_mac);
        }
        Msg::Join(Join {
            auth_mac,
            cluster_id,
            server_cluster_id,
            role,
            remote_accessible,
            comm_name,
            device,
            identity,
        }) => {
            put_opt_tag(out, auth_mac);
            put_u64(out, *cluster_id);
            put_u64(out, *server_cluster_id);
            put_u32(out, *role);
            put_bool(out, *remote_accessible);
            put_str(out, comm_name);
            put_device(out, device);
            put_identity(out, identity);
        }
        Msg::JoinAck {
            status,
            message,
            ack:
                JoinAck {
                    cluster_id,
                    role,
                    link_token,
                    device,
                    identity,
                    pools,
                },
        } => {
            put_u32(out, *status);
            put_str(out, message);
            put_u64(out, *cluster_id);
            put_u32(out, *role);
            put_u64(out, *link_token);
            put_device(out, device);
            put_identity(out, identity);
            put_pools(out, pools);
        }
        Msg::Pools { pools } => put_pools(out, pools),
        Msg::Attach {
            cluster_id,
            link_token,
            reverse,
        } => {
            put_u64(out, *cluster_id);
            put_u64(out, *link_token);
            put_bool(out, *reverse);
        }
        Msg::Reply { status, message } => {
            put_u32(out, *status);
            put_str(out, message);
        }
        Msg::Unlink | Msg::GetTable => {}
        Msg::Table { status, entries } => {
            put_u32(out, *status);
            put_count(out, entries.len());
            for e in entries {
                put_entry(out, e);
            }
        }
        Msg::Resolve { key } => put_key(out, key),
        Msg::Resolved {
            status,
            message,
            entry,
            slot,
        } => {
            put_u32(out, *status);
            put_str(out, message);
            match entry {
                Some(e) => {
                    put_u8(out, 1);
                    put_entry(out, e);
                }
                None => put_u8(out, 0),
            }
            put_u64(out, *slot);
        }
        Msg::Consume { req_id, model_id } => {
            put_u64(out, *req_id);
            put_u64(out, *model_id);
        }
        Msg::OpenConns { count } => put_u32(out, *count),
        Msg::Notify { name, msg } => {
            put_str(out, name);
            put_str(out, msg);
        }
        Msg::Read { segments, total } | Msg::Write { segments, total } => {
            put_segments(out, segments);
            put_u64(out, *total);
        }
        Msg::ReadData {
            status,
            message,
            total,
        } => {
            put_u32(out, *status);
            put_str(out, message);
            put_u64(out, *total);
        }
    }
}

/// Appends the frame (header + payload) for `msg` to `out`.
///
/// The header is written first with a zero length and patched once the
/// payload is known. String fields longer than [`MAX_STRING`] are truncated
/// (at a character boundary) so that the frame always decodes; counts and the
/// total payload size are written as they are, and a frame that exceeds the
/// receiver's bounds is rejected by [`decode_header`] / [`decode_payload`].
pub fn encode(msg: &Msg, tag: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&msg.msg_type().to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    encode_body(msg, out);
    let payload_len = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
    if let Some(slot) = out.get_mut(start + 8..start + 12) {
        slot.copy_from_slice(&payload_len.to_le_bytes());
    }
}

/// Encodes `msg` into a fresh buffer (see [`encode`]).
pub fn encode_to_vec(msg: &Msg, tag: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, tag, &mut out);
    out
}
