//! The host backend's wire protocol (design.md §4): framed, versioned,
//! little-endian, every length bounded.
//!
//! A frame is a 16-byte header followed by `payload_len` bytes of structured
//! payload. `Read`'s reply and `Write` additionally carry `total` bytes of bulk
//! data *after* the frame; the bulk bytes are not part of `payload_len` and are
//! read by the transport directly into destination memory.
//!
//! Header layout (little-endian):
//! `magic: u32 = MAGIC | version: u16 = VERSION | msg_type: u16 | payload_len: u32 | tag: u32`

use crate::cache::types::{CacheKey, Segment};

/// Frame magic, "LLDD" read as a little-endian u32.
pub const MAGIC: u32 = u32::from_le_bytes(*b"LLDD");
/// Protocol version; a peer with another version is refused in the handshake.
/// 2: `Hello` carries the rank-table comm name; `Hello`/`HelloAck` carry the
/// sender's HCCL device endpoint (acl backend).
/// 3: the handshake proves instead of claiming (docs/security.md): `Hello` /
/// `HelloAck` exchange nonces (and link-auth MACs) and nothing identifying;
/// `Join` / `JoinAck` carry the instance fields plus identity proofs; the pid
/// and identity fd only go to a peer whose host tag matched, pool layouts
/// (`JoinAck`, `Pools`) only to a peer proven to be on this host.
pub const VERSION: u16 = 3;
/// Size of the frame header in bytes.
pub const HEADER_LEN: usize = 16;
/// Largest structured payload accepted (bulk data is bounded separately).
pub const MAX_PAYLOAD: u32 = 16 << 20;
/// Longest string field.
pub const MAX_STRING: usize = 4096;
/// Most segments in one `Read`/`Write`.
pub const MAX_SEGMENTS: usize = 1 << 20;
/// Most cache entries in a `Table`.
pub const MAX_ENTRIES: usize = 65_536;
/// Most tensor addresses (or key bindings) in one cache entry.
pub const MAX_ADDRS: usize = 65_536;
/// Most memory pools announced in a handshake.
pub const MAX_POOLS: usize = 16;
/// Length of nonces, MACs, proofs and host tags.
pub const TAG_LEN: usize = 32;
/// Highest message type number (types are 1 ..= `MAX_TYPE`).
pub const MAX_TYPE: u16 = 17;

/// The decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub msg_type: u16,
    pub payload_len: u32,
    pub tag: u32,
}

/// Why a frame was rejected. A rejected frame always drops the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad magic 0x{0:08x}")]
    BadMagic(u32),
    #[error("unsupported protocol version {0}")]
    BadVersion(u16),
    #[error("unknown message type {0}")]
    UnknownType(u16),
    #[error("payload length {0} exceeds the limit")]
    TooLarge(u64),
    #[error("payload truncated while reading {0}")]
    Truncated(&'static str),
    #[error("field {0} out of bounds")]
    OutOfBounds(&'static str),
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    #[error("invalid value for {0}")]
    Invalid(&'static str),
}

/// A shared-memory pool the sender offers for mapping by a same-host peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolInfo {
    /// File descriptor number of the pool's memfd in the sender's process.
    pub fd: u32,
    /// Base virtual address of the pool in the sender's process.
    pub base: u64,
    /// Pool size in bytes.
    pub size: u64,
}

/// Where a same-host verifier finds the sender's identity secret: its pid and
/// the fd number of its sealed identity memfd (`transport::identity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub pid: u32,
    pub fd: u32,
}

/// The sender's identity proof for the one-sided paths (`transport::identity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// HMAC of the sender's host id over the transcript: equal to the
    /// verifier's own only on the same kernel and pid namespace.
    pub host_tag: [u8; TAG_LEN],
    /// HMAC of the sender's process secret over the transcript.
    pub proof: [u8; TAG_LEN],
    /// Present only when the sender saw the verifier's host tag match.
    pub claim: Option<Claim>,
}

/// Where a peer's HCCL communicator can reach this instance's device (acl
/// backend): one entry of the generated two-rank table (docs/ascend.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceEndpoint {
    /// Rank-table `server_id` (the host's IP).
    pub server_id: String,
    /// Rank-table `device_id` (the physical device id).
    pub device_id: u32,
    /// Rank-table `device_ip` (the device NIC's IP).
    pub device_ip: String,
    /// Rank-table `device_port`; 0: none (HCCL's default port).
    pub device_port: u16,
    /// Rank-table 1.2 `super_device_id` (A3).
    pub super_device_id: Option<u32>,
    /// Rank-table 1.2 `super_pod_id` of the server (A3).
    pub super_pod_id: Option<String>,
}

/// One cache as published in the owner's table or returned by `Resolve`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub cache_id: i64,
    /// `CacheKind` as u8.
    pub kind: u8,
    /// `Placement` as u32.
    pub placement: u32,
    /// `DataType` code.
    pub data_type: u32,
    pub shape: Vec<i64>,
    pub tensor_bytes: u64,
    pub addrs: Vec<u64>,
    /// Request-key bindings `(req_id, model_id, slot)` (no prefix keys).
    pub req_keys: Vec<(u64, u64, u64)>,
    /// Model id of the blocks key bound to this cache, if any.
    pub blocks_model: Option<u64>,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Client → server, first frame of the control connection: the client's
    /// challenge. Nothing identifying.
    Hello {
        /// The client holds a link secret and expects the server to prove it.
        auth: bool,
        nonce: [u8; TAG_LEN],
    },
    /// Server → client answer to `Hello`: its challenge, its host tag and,
    /// with link authentication, its proof of the secret. A non-zero status
    /// refuses the connection (nothing else is meaningful then).
    HelloAck {
        status: u32,
        message: String,
        nonce: [u8; TAG_LEN],
        host_tag: [u8; TAG_LEN],
        auth_mac: Option<[u8; TAG_LEN]>,
    },
    /// Client → server after `HelloAck`: the link request.
    Join {
        /// The client's proof of the link secret (link authentication).
        auth_mac: Option<[u8; TAG_LEN]>,
        cluster_id: u64,
        /// The cluster the client means to link to: a server with another
        /// id refuses at once, before its link table is consulted.
        server_cluster_id: u64,
        role: u32,
        remote_accessible: bool,
        /// Rank-table comm this link belongs to (`llmdd_link`); empty for
        /// `link_clusters`.
        comm_name: String,
        /// The client's device endpoint: present iff it runs the acl backend.
        device: Option<DeviceEndpoint>,
        identity: Identity,
    },
    /// Server → client reply to `Join`.
    JoinAck {
        status: u32,
        message: String,
        cluster_id: u64,
        role: u32,
        link_token: u64,
        /// The server's device endpoint: present iff it runs the acl backend.
        device: Option<DeviceEndpoint>,
        identity: Identity,
        /// The server's memfd pools, only if the client proved to be on this host.
        pools: Vec<PoolInfo>,
    },
    /// Client → server after `JoinAck`: the client's memfd pools (empty
    /// unless the server proved to be on this host).
    Pools { pools: Vec<PoolInfo> },
    /// Client → server, first frame of an extra data connection.
    /// `reverse` = the server will send requests on it (client serves).
    Attach {
        cluster_id: u64,
        link_token: u64,
        reverse: bool,
    },
    /// Generic reply: a status and a message.
    Reply { status: u32, message: String },
    /// Client → server: tear down both sides of the link.
    Unlink,
    /// Ask for the peer's cache table (remote-cache-accessible mode).
    GetTable,
    /// The peer's cache table.
    Table {
        status: u32,
        entries: Vec<CacheEntry>,
    },
    /// Resolve a key against the owner's current tables.
    Resolve { key: CacheKey },
    /// Reply to `Resolve`: the cache and the slot the key names.
    Resolved {
        status: u32,
        message: String,
        entry: Option<CacheEntry>,
        slot: u64,
    },
    /// Drop a one-shot request key after a successful pull.
    Consume { req_id: u64, model_id: u64 },
    /// Read these remote segments (`dst` is ignored, `src` is the owner's address).
    /// The reply is `ReadData` followed by `total` bulk bytes when status is 0.
    Read { segments: Vec<Segment>, total: u64 },
    /// Reply header of a `Read`.
    ReadData {
        status: u32,
        message: String,
        total: u64,
    },
    /// Write to these remote segments (`src` ignored, `dst` is the owner's
    /// address); `total` bulk bytes follow the frame. Reply: `Reply`.
    Write { segments: Vec<Segment>, total: u64 },
    /// A byte-addressed engine's notification (`SendNotify`): a name and a
    /// message, each at most [`MAX_STRING`] bytes. Reply: `Reply`.
    Notify { name: String, msg: String },
}

impl Msg {
    /// The message type number carried in the header.
    pub fn msg_type(&self) -> u16 {
        match self {
            Msg::Hello { .. } => 1,
            Msg::HelloAck { .. } => 2,
            Msg::Attach { .. } => 3,
            Msg::Reply { .. } => 4,
            Msg::Unlink => 5,
            Msg::GetTable => 6,
            Msg::Table { .. } => 7,
            Msg::Resolve { .. } => 8,
            Msg::Resolved { .. } => 9,
            Msg::Consume { .. } => 10,
            Msg::Read { .. } => 11,
            Msg::ReadData { .. } => 12,
            Msg::Write { .. } => 13,
            Msg::Join { .. } => 14,
            Msg::JoinAck { .. } => 15,
            Msg::Pools { .. } => 16,
            Msg::Notify { .. } => 17,
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

/// Parses a 16-byte header, checking magic, version, known type and length bound.
pub fn decode_header(buf: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
    let mut r = Reader::new(buf);
    let magic = r.u32("magic")?;
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = r.u16("version")?;
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let msg_type = r.u16("msg_type")?;
    if !(1..=MAX_TYPE).contains(&msg_type) {
        return Err(WireError::UnknownType(msg_type));
    }
    let payload_len = r.u32("payload_len")?;
    if payload_len > MAX_PAYLOAD {
        return Err(WireError::TooLarge(u64::from(payload_len)));
    }
    let tag = r.u32("tag")?;
    Ok(Header {
        msg_type,
        payload_len,
        tag,
    })
}

/// Parses the payload of a frame whose header was accepted. Every count and
/// length is bounded and the payload must be consumed exactly.
pub fn decode_payload(header: &Header, payload: &[u8]) -> Result<Msg, WireError> {
    if header.payload_len > MAX_PAYLOAD {
        return Err(WireError::TooLarge(u64::from(header.payload_len)));
    }
    let expected = header.payload_len as usize;
    if payload.len() < expected {
        return Err(WireError::Truncated("payload"));
    }
    if payload.len() > expected {
        return Err(WireError::Trailing(payload.len() - expected));
    }
    let mut r = Reader::new(payload);
    let msg = decode_body(header.msg_type, &mut r)?;
    if r.remaining() != 0 {
        return Err(WireError::Trailing(r.remaining()));
    }
    Ok(msg)
}

/// Total frame size (header + structured payload, excluding bulk data).
pub fn frame_len(header: &Header) -> usize {
    HEADER_LEN + header.payload_len as usize
}

/// Encodes `msg` into a fresh buffer (see [`encode`]).
pub fn encode_to_vec(msg: &Msg, tag: u32) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, tag, &mut out);
    out
}

/// Decodes one complete frame: `frame` must be exactly header + payload.
pub fn decode_frame(frame: &[u8]) -> Result<(Header, Msg), WireError> {
    let (head, payload) = frame
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(WireError::Truncated("header"))?;
    let header = decode_header(head)?;
    let msg = decode_payload(&header, payload)?;
    Ok((header, msg))
}

/// Number of bulk bytes that follow this message's frame on the stream:
/// `total` for `Write` and for a successful (`status == 0`) `ReadData`, else 0.
pub fn bulk_len(msg: &Msg) -> u64 {
    match msg {
        Msg::Write { total, .. } => *total,
        Msg::ReadData {
            status: 0, total, ..
        } => *total,
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// Encoding helpers.

/// Smallest encoded size of each repeated element, used to bound counts
/// against the remaining payload before allocating.
const SEGMENT_WIRE: usize = 24;
const POOL_WIRE: usize = 4 + 8 + 8;
/// host tag + proof + claim flag.
const IDENTITY_MIN_WIRE: usize = 2 * TAG_LEN + 1;
const REQ_KEY_WIRE: usize = 24;
/// cache_id + kind + placement + data_type + shape count + tensor_bytes
/// + addrs count + req_keys count + blocks_model flag.
const ENTRY_MIN_WIRE: usize = 8 + 1 + 4 + 4 + 4 + 8 + 4 + 4 + 1;
/// Most dimensions of a shape on the wire (`cache::types::MAX_DIMS`).
const MAX_SHAPE_DIMS: usize = 31;

fn put_u8(out: &mut Vec<u8>, v: u8) {
    out.push(v);
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_le_bytes());
}
fn put_bool(out: &mut Vec<u8>, v: bool) {
    out.push(u8::from(v));
}
fn put_count(out: &mut Vec<u8>, n: usize) {
    put_u32(out, u32::try_from(n).unwrap_or(u32::MAX));
}
fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_STRING);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = s.as_bytes().get(..end).unwrap_or_default();
    put_count(out, bytes.len());
    out.extend_from_slice(bytes);
}
fn put_opt_u64(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(x) => {
            put_u8(out, 1);
            put_u64(out, x);
        }
        None => put_u8(out, 0),
    }
}
fn put_segments(out: &mut Vec<u8>, segs: &[Segment]) {
    put_count(out, segs.len());
    out.reserve(segs.len() * SEGMENT_WIRE);
    for s in segs {
        put_u64(out, s.dst);
        put_u64(out, s.src);
        put_u64(out, s.len);
    }
}
fn put_pools(out: &mut Vec<u8>, pools: &[PoolInfo]) {
    put_count(out, pools.len());
    for pool in pools {
        put_u32(out, pool.fd);
        put_u64(out, pool.base);
        put_u64(out, pool.size);
    }
}
fn put_tag(out: &mut Vec<u8>, t: &[u8; TAG_LEN]) {
    out.extend_from_slice(t);
}
fn put_opt_tag(out: &mut Vec<u8>, t: &Option<[u8; TAG_LEN]>) {
    match t {
        Some(t) => {
            put_u8(out, 1);
            put_tag(out, t);
        }
        None => put_u8(out, 0),
    }
}
fn put_identity(out: &mut Vec<u8>, id: &Identity) {
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
fn put_device(out: &mut Vec<u8>, d: &Option<DeviceEndpoint>) {
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
fn put_entry(out: &mut Vec<u8>, e: &CacheEntry) {
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
fn put_key(out: &mut Vec<u8>, k: &CacheKey) {
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

fn encode_body(msg: &Msg, out: &mut Vec<u8>) {
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
        Msg::Join {
            auth_mac,
            cluster_id,
            server_cluster_id,
            role,
            remote_accessible,
            comm_name,
            device,
            identity,
        } => {
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
            cluster_id,
            role,
            link_token,
            device,
            identity,
            pools,
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

// ---------------------------------------------------------------------------
// Decoding helpers. Nothing here indexes or unwraps: every read goes through
// `take`, which returns `Truncated` when the payload is too short.

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated(what))?;
        self.buf = rest;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_le_bytes(self.array::<1>(what)?))
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array::<2>(what)?))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array::<4>(what)?))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array::<8>(what)?))
    }
    fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array::<8>(what)?))
    }

    fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid(what)),
        }
    }

    fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, WireError> {
        if self.bool(what)? {
            Ok(Some(self.u64(what)?))
        } else {
            Ok(None)
        }
    }

    fn string(&mut self, what: &'static str) -> Result<String, WireError> {
        let len = self.u32(what)? as usize;
        if len > MAX_STRING {
            return Err(WireError::OutOfBounds(what));
        }
        let bytes = self.take(len, what)?;
        let s = std::str::from_utf8(bytes).map_err(|_| WireError::Invalid(what))?;
        Ok(s.to_owned())
    }

    /// Reads a u32 element count, checks it against `max` and checks that the
    /// rest of the payload can hold `count * min_size` bytes, so the caller can
    /// allocate `count` elements without trusting the peer.
    fn count(
        &mut self,
        what: &'static str,
        max: usize,
        min_size: usize,
    ) -> Result<usize, WireError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(WireError::OutOfBounds(what));
        }
        let need = n
            .checked_mul(min_size)
            .ok_or(WireError::OutOfBounds(what))?;
        if need > self.remaining() {
            return Err(WireError::Truncated(what));
        }
        Ok(n)
    }

    fn segments(&mut self) -> Result<Vec<Segment>, WireError> {
        let n = self.count("segments", MAX_SEGMENTS, SEGMENT_WIRE)?;
        let mut segs = Vec::with_capacity(n);
        for _ in 0..n {
            let dst = self.u64("segment.dst")?;
            let src = self.u64("segment.src")?;
            let len = self.u64("segment.len")?;
            if len == 0 {
                return Err(WireError::Invalid("segment.len"));
            }
            segs.push(Segment { dst, src, len });
        }
        Ok(segs)
    }

    fn pools(&mut self) -> Result<Vec<PoolInfo>, WireError> {
        let n = self.count("pools", MAX_POOLS, POOL_WIRE)?;
        let mut pools = Vec::with_capacity(n);
        for _ in 0..n {
            let fd = self.u32("pool.fd")?;
            let base = self.u64("pool.base")?;
            let size = self.u64("pool.size")?;
            pools.push(PoolInfo { fd, base, size });
        }
        Ok(pools)
    }

    fn tag(&mut self, what: &'static str) -> Result<[u8; TAG_LEN], WireError> {
        self.array::<TAG_LEN>(what)
    }

    fn opt_tag(&mut self, what: &'static str) -> Result<Option<[u8; TAG_LEN]>, WireError> {
        if self.bool(what)? {
            Ok(Some(self.tag(what)?))
        } else {
            Ok(None)
        }
    }

    fn identity(&mut self) -> Result<Identity, WireError> {
        if self.remaining() < IDENTITY_MIN_WIRE {
            return Err(WireError::Truncated("identity"));
        }
        let host_tag = self.tag("identity.host_tag")?;
        let proof = self.tag("identity.proof")?;
        let claim = if self.bool("identity.claim")? {
            Some(Claim {
                pid: self.u32("identity.pid")?,
                fd: self.u32("identity.fd")?,
            })
        } else {
            None
        };
        Ok(Identity {
            host_tag,
            proof,
            claim,
        })
    }

    fn device(&mut self) -> Result<Option<DeviceEndpoint>, WireError> {
        if !self.bool("device")? {
            return Ok(None);
        }
        let server_id = self.string("device.server_id")?;
        let device_id = self.u32("device.device_id")?;
        let device_ip = self.string("device.device_ip")?;
        let device_port = u16::try_from(self.u32("device.device_port")?)
            .map_err(|_| WireError::Invalid("device.device_port"))?;
        let super_device_id = Some(self.u32("device.super_device_id")?).filter(|&v| v != u32::MAX);
        let super_pod_id = Some(self.string("device.super_pod_id")?).filter(|v| !v.is_empty());
        Ok(Some(DeviceEndpoint {
            server_id,
            device_id,
            device_ip,
            device_port,
            super_device_id,
            super_pod_id,
        }))
    }

    fn entry(&mut self) -> Result<CacheEntry, WireError> {
        let cache_id = self.i64("cache_id")?;
        let kind = self.u8("kind")?;
        let placement = self.u32("placement")?;
        let data_type = self.u32("data_type")?;
        let n = self.count("shape", MAX_ADDRS.min(MAX_SHAPE_DIMS), 8)?;
        let mut shape = Vec::with_capacity(n);
        for _ in 0..n {
            shape.push(self.i64("shape")?);
        }
        let tensor_bytes = self.u64("tensor_bytes")?;
        let n = self.count("addrs", MAX_ADDRS, 8)?;
        let mut addrs = Vec::with_capacity(n);
        for _ in 0..n {
            addrs.push(self.u64("addrs")?);
        }
        let n = self.count("req_keys", MAX_ADDRS, REQ_KEY_WIRE)?;
        let mut req_keys = Vec::with_capacity(n);
        for _ in 0..n {
            let req = self.u64("req_keys")?;
            let model = self.u64("req_keys")?;
            let slot = self.u64("req_keys")?;
            req_keys.push((req, model, slot));
        }
        let blocks_model = self.opt_u64("blocks_model")?;
        Ok(CacheEntry {
            cache_id,
            kind,
            placement,
            data_type,
            shape,
            tensor_bytes,
            addrs,
            req_keys,
            blocks_model,
        })
    }

    fn key(&mut self) -> Result<CacheKey, WireError> {
        match self.u8("key.tag")? {
            0 => Ok(CacheKey::Req {
                cluster_id: self.u64("key.cluster_id")?,
                req_id: self.u64("key.req_id")?,
                model_id: self.u64("key.model_id")?,
                prefix_id: self.u64("key.prefix_id")?,
            }),
            1 => Ok(CacheKey::IdIndex {
                cluster_id: self.u64("key.cluster_id")?,
                cache_id: self.i64("key.cache_id")?,
                batch_index: self.u32("key.batch_index")?,
            }),
            2 => Ok(CacheKey::Blocks {
                cluster_id: self.u64("key.cluster_id")?,
                model_id: self.u64("key.model_id")?,
            }),
            _ => Err(WireError::Invalid("key.tag")),
        }
    }
}

/// Checks that `total` is the (non-overflowing) sum of the segment lengths.
fn check_total(segments: &[Segment], total: u64) -> Result<(), WireError> {
    let sum = segments
        .iter()
        .try_fold(0u64, |acc, s| acc.checked_add(s.len))
        .ok_or(WireError::Invalid("total"))?;
    if sum != total {
        return Err(WireError::Invalid("total"));
    }
    Ok(())
}

fn decode_body(msg_type: u16, r: &mut Reader<'_>) -> Result<Msg, WireError> {
    Ok(match msg_type {
        1 => Msg::Hello {
            auth: r.bool("auth")?,
            nonce: r.tag("nonce")?,
        },
        2 => Msg::HelloAck {
            status: r.u32("status")?,
            message: r.string("message")?,
            nonce: r.tag("nonce")?,
            host_tag: r.tag("host_tag")?,
            auth_mac: r.opt_tag("auth_mac")?,
        },
        3 => Msg::Attach {
            cluster_id: r.u64("cluster_id")?,
            link_token: r.u64("link_token")?,
            reverse: r.bool("reverse")?,
        },
        4 => Msg::Reply {
            status: r.u32("status")?,
            message: r.string("message")?,
        },
        5 => Msg::Unlink,
        6 => Msg::GetTable,
        7 => {
            let status = r.u32("status")?;
            let n = r.count("entries", MAX_ENTRIES, ENTRY_MIN_WIRE)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                entries.push(r.entry()?);
            }
            Msg::Table { status, entries }
        }
        8 => Msg::Resolve { key: r.key()? },
        9 => Msg::Resolved {
            status: r.u32("status")?,
            message: r.string("message")?,
            entry: if r.bool("entry")? {
                Some(r.entry()?)
            } else {
                None
            },
            slot: r.u64("slot")?,
        },
        10 => Msg::Consume {
            req_id: r.u64("req_id")?,
            model_id: r.u64("model_id")?,
        },
        17 => Msg::Notify {
            name: r.string("name")?,
            msg: r.string("msg")?,
        },
        11 | 13 => {
            let segments = r.segments()?;
            let total = r.u64("total")?;
            check_total(&segments, total)?;
            if msg_type == 11 {
                Msg::Read { segments, total }
            } else {
                Msg::Write { segments, total }
            }
        }
        12 => Msg::ReadData {
            status: r.u32("status")?,
            message: r.string("message")?,
            total: r.u64("total")?,
        },
        14 => Msg::Join {
            auth_mac: r.opt_tag("auth_mac")?,
            cluster_id: r.u64("cluster_id")?,
            server_cluster_id: r.u64("server_cluster_id")?,
            role: r.u32("role")?,
            remote_accessible: r.bool("remote_accessible")?,
            comm_name: r.string("comm_name")?,
            device: r.device()?,
            identity: r.identity()?,
        },
        15 => Msg::JoinAck {
            status: r.u32("status")?,
            message: r.string("message")?,
            cluster_id: r.u64("cluster_id")?,
            role: r.u32("role")?,
            link_token: r.u64("link_token")?,
            device: r.device()?,
            identity: r.identity()?,
            pools: r.pools()?,
        },
        16 => Msg::Pools { pools: r.pools()? },
        other => return Err(WireError::UnknownType(other)),
    })
}

#[cfg(test)]
mod tests;
