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
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pools(n: usize) -> Vec<PoolInfo> {
        (0..n)
            .map(|i| PoolInfo {
                fd: 10 + i as u32,
                base: 0x7f00_0000_0000 + (i as u64) * 0x1000_0000,
                size: 1 << (20 + i),
            })
            .collect()
    }

    fn identity(claim: bool) -> Identity {
        Identity {
            host_tag: [0xa5; TAG_LEN],
            proof: [0x3c; TAG_LEN],
            claim: claim.then_some(Claim { pid: 4242, fd: 7 }),
        }
    }

    fn entry(i: i64) -> CacheEntry {
        CacheEntry {
            cache_id: i,
            kind: (i % 3) as u8,
            placement: (i % 2) as u32,
            data_type: 27,
            shape: vec![4, 16, 128, i + 1],
            tensor_bytes: 4 * 16 * 128 * 2 * (i as u64 + 1),
            addrs: (0..8).map(|k| 0x1000_0000 * (k + 1) + i as u64).collect(),
            req_keys: vec![(i as u64, 7, 0), (u64::MAX, 9, 3)],
            blocks_model: if i % 2 == 0 { Some(99) } else { None },
        }
    }

    fn segs(n: u64) -> Vec<Segment> {
        (0..n)
            .map(|i| Segment {
                dst: 0x1000 * i,
                src: 0x9000_0000 + 0x1000 * i,
                len: 64 + i,
            })
            .collect()
    }

    fn all_samples() -> Vec<Msg> {
        let s = segs(5);
        let total: u64 = s.iter().map(|x| x.len).sum();
        vec![
            Msg::Hello {
                auth: true,
                nonce: [9; TAG_LEN],
            },
            Msg::HelloAck {
                status: 0,
                message: "welcome".to_owned(),
                nonce: [1; TAG_LEN],
                host_tag: [2; TAG_LEN],
                auth_mac: Some([3; TAG_LEN]),
            },
            Msg::HelloAck {
                status: 5,
                message: "refused".to_owned(),
                nonce: [0; TAG_LEN],
                host_tag: [0; TAG_LEN],
                auth_mac: None,
            },
            Msg::Join {
                auth_mac: None,
                cluster_id: 0xabcdef,
                server_cluster_id: 0x123456,
                role: 1,
                remote_accessible: true,
                comm_name: String::new(),
                device: None,
                identity: identity(true),
            },
            Msg::Join {
                auth_mac: Some([4; TAG_LEN]),
                cluster_id: 3,
                server_cluster_id: 4,
                role: 2,
                remote_accessible: false,
                comm_name: "rank-table comm ✓".to_owned(),
                device: Some(DeviceEndpoint {
                    server_id: "127.0.0.1".to_owned(),
                    device_id: 0,
                    device_ip: "127.0.0.1".to_owned(),
                    device_port: 40000,
                    ..DeviceEndpoint::default()
                }),
                identity: identity(false),
            },
            Msg::JoinAck {
                status: 0,
                message: "welcome".to_owned(),
                cluster_id: 77,
                role: 2,
                link_token: u64::MAX - 1,
                device: Some(DeviceEndpoint {
                    server_id: "10.0.0.7".to_owned(),
                    device_id: 3,
                    device_ip: "192.168.1.3".to_owned(),
                    device_port: 16666,
                    super_device_id: Some(19),
                    super_pod_id: Some("pod-1".to_owned()),
                }),
                identity: identity(true),
                pools: pools(3),
            },
            Msg::Pools { pools: pools(1) },
            Msg::Pools { pools: vec![] },
            Msg::Attach {
                cluster_id: 1,
                link_token: 0x5555_aaaa,
                reverse: true,
            },
            Msg::Reply {
                status: 0x1_0000 + 5,
                message: "cache not found: ключ".to_owned(),
            },
            Msg::Unlink,
            Msg::GetTable,
            Msg::Table {
                status: 0,
                entries: (0..4).map(entry).collect(),
            },
            Msg::Resolve {
                key: CacheKey::Req {
                    cluster_id: 3,
                    req_id: 42,
                    model_id: 1,
                    prefix_id: u64::MAX,
                },
            },
            Msg::Resolve {
                key: CacheKey::IdIndex {
                    cluster_id: 3,
                    cache_id: -5,
                    batch_index: 17,
                },
            },
            Msg::Resolve {
                key: CacheKey::Blocks {
                    cluster_id: 3,
                    model_id: 8,
                },
            },
            Msg::Resolved {
                status: 0,
                message: String::new(),
                entry: Some(entry(6)),
                slot: 3,
            },
            Msg::Resolved {
                status: 11,
                message: "no such key".to_owned(),
                entry: None,
                slot: 0,
            },
            Msg::Consume {
                req_id: 42,
                model_id: 1,
            },
            Msg::Notify {
                name: "kv_done".to_owned(),
                msg: "req 7".to_owned(),
            },
            Msg::Read {
                segments: s.clone(),
                total,
            },
            Msg::ReadData {
                status: 0,
                message: "ok".to_owned(),
                total: 1 << 33,
            },
            Msg::Write { segments: s, total },
        ]
    }

    /// Builds a frame with a hand-written header around `payload`.
    fn raw_frame(msg_type: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&msg_type.to_le_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&9u32.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn header_of(frame: &[u8]) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&frame[..HEADER_LEN]);
        h
    }

    /// Decodes the way the transport does: header, then the rest as payload.
    fn decode_split(frame: &[u8]) -> Result<(Header, Msg), WireError> {
        if frame.len() < HEADER_LEN {
            return Err(WireError::Truncated("header"));
        }
        let header = decode_header(&header_of(frame))?;
        let msg = decode_payload(&header, &frame[HEADER_LEN..])?;
        Ok((header, msg))
    }

    #[test]
    fn round_trip_every_variant() {
        let samples = all_samples();
        let mut seen = std::collections::BTreeSet::new();
        for (i, msg) in samples.iter().enumerate() {
            let tag = 1000 + i as u32;
            let frame = encode_to_vec(msg, tag);
            let (header, back) = decode_split(&frame).unwrap();
            assert_eq!(header.msg_type, msg.msg_type());
            assert_eq!(header.tag, tag);
            assert_eq!(frame_len(&header), frame.len());
            assert_eq!(&back, msg);
            assert_eq!(decode_frame(&frame).unwrap().1, *msg);
            seen.insert(msg.msg_type());
        }
        assert_eq!(
            seen.len(),
            MAX_TYPE as usize,
            "every message type is covered"
        );
    }

    #[test]
    fn encode_appends_and_patches_length() {
        let mut out = vec![1, 2, 3];
        let msg = Msg::Reply {
            status: 1,
            message: "x".repeat(10),
        };
        encode(&msg, 5, &mut out);
        encode(&Msg::Unlink, 6, &mut out);
        assert_eq!(&out[..3], &[1, 2, 3]);
        let first = &out[3..];
        let h = decode_header(&header_of(first)).unwrap();
        assert_eq!(h.payload_len, 4 + 4 + 10);
        let (a, b) = first.split_at(frame_len(&h));
        assert_eq!(decode_frame(a).unwrap().1, msg);
        let (h2, m2) = decode_frame(b).unwrap();
        assert_eq!((h2.tag, h2.payload_len, m2), (6, 0, Msg::Unlink));
    }

    #[test]
    fn header_layout_is_fixed() {
        let frame = encode_to_vec(&Msg::GetTable, 0x0102_0304);
        assert_eq!(
            frame,
            [
                b'L',
                b'L',
                b'D',
                b'D',
                VERSION as u8,
                0,
                6,
                0,
                0,
                0,
                0,
                0,
                4,
                3,
                2,
                1
            ]
        );
    }

    #[test]
    fn long_strings_are_truncated_at_a_char_boundary() {
        let msg = Msg::Reply {
            status: 1,
            message: "é".repeat(MAX_STRING), // 2 bytes each
        };
        let (_, back) = decode_frame(&encode_to_vec(&msg, 0)).unwrap();
        let Msg::Reply { message, .. } = back else {
            panic!("wrong variant")
        };
        assert_eq!(message.len(), MAX_STRING);
        assert_eq!(message, "é".repeat(MAX_STRING / 2));
    }

    #[test]
    fn bulk_len_of_messages() {
        let s = segs(2);
        assert_eq!(
            bulk_len(&Msg::Write {
                segments: s.clone(),
                total: 129
            }),
            129
        );
        assert_eq!(
            bulk_len(&Msg::Read {
                segments: s,
                total: 129
            }),
            0
        );
        let rd = |status| Msg::ReadData {
            status,
            message: String::new(),
            total: 10,
        };
        assert_eq!(bulk_len(&rd(0)), 10);
        assert_eq!(bulk_len(&rd(3)), 0);
        assert_eq!(bulk_len(&Msg::Unlink), 0);
    }

    // ---- crafted errors -------------------------------------------------

    #[test]
    fn bad_magic() {
        let mut frame = encode_to_vec(&Msg::Unlink, 0);
        frame[0] = b'X';
        assert!(matches!(
            decode_header(&header_of(&frame)),
            Err(WireError::BadMagic(_))
        ));
    }

    #[test]
    fn bad_version() {
        let mut frame = encode_to_vec(&Msg::Unlink, 0);
        frame[4] = VERSION as u8 + 1;
        assert_eq!(
            decode_header(&header_of(&frame)),
            Err(WireError::BadVersion(VERSION + 1))
        );
    }

    #[test]
    fn unknown_type() {
        for t in [0u16, MAX_TYPE + 1, 0xffff] {
            let frame = raw_frame(t, &[]);
            assert_eq!(
                decode_header(&header_of(&frame)),
                Err(WireError::UnknownType(t))
            );
            let h = Header {
                msg_type: t,
                payload_len: 0,
                tag: 0,
            };
            assert_eq!(decode_payload(&h, &[]), Err(WireError::UnknownType(t)));
        }
    }

    #[test]
    fn oversized_length() {
        let mut frame = encode_to_vec(&Msg::Unlink, 0);
        frame[8..12].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert_eq!(
            decode_header(&header_of(&frame)),
            Err(WireError::TooLarge(u64::from(MAX_PAYLOAD) + 1))
        );
        frame[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_header(&header_of(&frame)),
            Err(WireError::TooLarge(u64::from(u32::MAX)))
        );
        // A frame of exactly MAX_PAYLOAD is accepted by the header check.
        frame[8..12].copy_from_slice(&MAX_PAYLOAD.to_le_bytes());
        assert!(decode_header(&header_of(&frame)).is_ok());
    }

    #[test]
    fn truncated_payload() {
        let frame = encode_to_vec(&all_samples()[0], 0);
        // Fewer bytes than the header promises.
        assert_eq!(
            decode_split(&frame[..frame.len() - 1]),
            Err(WireError::Truncated("payload"))
        );
        // Header consistent with the shortened payload: a field runs out.
        let short = raw_frame(1, &frame[HEADER_LEN..frame.len() - 3]);
        assert!(matches!(decode_split(&short), Err(WireError::Truncated(_))));
        let short = raw_frame(10, &[0; 15]);
        assert_eq!(decode_split(&short), Err(WireError::Truncated("model_id")));
    }

    #[test]
    fn trailing_bytes() {
        let mut frame = encode_to_vec(
            &Msg::Consume {
                req_id: 1,
                model_id: 2,
            },
            0,
        );
        frame.extend_from_slice(&[0, 0]);
        // More bytes than the header promises.
        assert_eq!(decode_split(&frame), Err(WireError::Trailing(2)));
        // Header covers the extra bytes, but the message does not use them.
        let fixed = raw_frame(10, &frame[HEADER_LEN..]);
        assert_eq!(decode_split(&fixed), Err(WireError::Trailing(2)));
        let empty = raw_frame(5, &[7]);
        assert_eq!(decode_split(&empty), Err(WireError::Trailing(1)));
    }

    #[test]
    fn bool_must_be_zero_or_one() {
        let frame = encode_to_vec(
            &Msg::Attach {
                cluster_id: 1,
                link_token: 2,
                reverse: true,
            },
            0,
        );
        let mut bad = frame.clone();
        let last = bad.len() - 1;
        assert_eq!(bad[last], 1);
        bad[last] = 2;
        assert_eq!(decode_split(&bad), Err(WireError::Invalid("reverse")));
        // Option flag too.
        let frame = encode_to_vec(
            &Msg::Resolved {
                status: 0,
                message: String::new(),
                entry: None,
                slot: 1,
            },
            0,
        );
        let mut bad = frame.clone();
        let flag = HEADER_LEN + 4 + 4;
        assert_eq!(bad[flag], 0);
        bad[flag] = 2;
        assert_eq!(decode_split(&bad), Err(WireError::Invalid("entry")));
    }

    #[test]
    fn bad_utf8() {
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&3u32.to_le_bytes());
        payload.extend_from_slice(&[b'a', 0xff, 0xfe]);
        assert_eq!(
            decode_split(&raw_frame(4, &payload)),
            Err(WireError::Invalid("message"))
        );
    }

    #[test]
    fn string_too_long() {
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&(MAX_STRING as u32 + 1).to_le_bytes());
        payload.extend(std::iter::repeat(b'a').take(MAX_STRING + 1));
        assert_eq!(
            decode_split(&raw_frame(4, &payload)),
            Err(WireError::OutOfBounds("message"))
        );
        // A huge string length with a tiny payload.
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&100u32.to_le_bytes());
        payload.extend_from_slice(b"abc");
        assert_eq!(
            decode_split(&raw_frame(4, &payload)),
            Err(WireError::Truncated("message"))
        );
    }

    #[test]
    fn huge_vec_count_with_tiny_payload() {
        // Within MAX_SEGMENTS but the payload cannot hold that many.
        let mut payload = (MAX_SEGMENTS as u32).to_le_bytes().to_vec();
        payload.extend_from_slice(&[0; 8]);
        assert_eq!(
            decode_split(&raw_frame(11, &payload)),
            Err(WireError::Truncated("segments"))
        );
        // Beyond MAX_SEGMENTS.
        let payload = u32::MAX.to_le_bytes();
        assert_eq!(
            decode_split(&raw_frame(13, &payload)),
            Err(WireError::OutOfBounds("segments"))
        );
        // Table entries.
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&(MAX_ENTRIES as u32).to_le_bytes());
        assert_eq!(
            decode_split(&raw_frame(7, &payload)),
            Err(WireError::Truncated("entries"))
        );
        let mut payload = 0u32.to_le_bytes().to_vec();
        payload.extend_from_slice(&(MAX_ENTRIES as u32 + 1).to_le_bytes());
        assert_eq!(
            decode_split(&raw_frame(7, &payload)),
            Err(WireError::OutOfBounds("entries"))
        );
        // Pools.
        let mut over = Vec::new();
        put_u32(&mut over, MAX_POOLS as u32 + 1);
        assert_eq!(
            decode_split(&raw_frame(16, &over)),
            Err(WireError::OutOfBounds("pools"))
        );
        let mut p = Vec::new();
        put_u32(&mut p, MAX_POOLS as u32);
        assert_eq!(
            decode_split(&raw_frame(16, &p)),
            Err(WireError::Truncated("pools"))
        );
        // An identity cut short.
        let mut j = Vec::new();
        put_u8(&mut j, 0);
        put_u64(&mut j, 1);
        put_u64(&mut j, 2);
        put_u32(&mut j, 1);
        put_bool(&mut j, false);
        put_str(&mut j, "");
        put_u8(&mut j, 0);
        j.extend_from_slice(&[0; 2 * TAG_LEN]);
        assert_eq!(
            decode_split(&raw_frame(14, &j)),
            Err(WireError::Truncated("identity"))
        );
    }

    #[test]
    fn addrs_and_req_keys_bounds() {
        let mut e = entry(1);
        e.addrs.clear();
        e.req_keys.clear();
        let mut p = Vec::new();
        put_u32(&mut p, 0);
        put_u32(&mut p, 1);
        put_entry(&mut p, &e);
        // Locate the addrs count: after cache_id..shape..tensor_bytes.
        let addrs_at = 4 + 4 + 8 + 1 + 4 + 4 + 4 + 8 * e.shape.len() + 8;
        assert_eq!(&p[addrs_at..addrs_at + 4], &[0, 0, 0, 0]);
        let mut bad = p.clone();
        bad[addrs_at..addrs_at + 4].copy_from_slice(&(MAX_ADDRS as u32 + 1).to_le_bytes());
        assert_eq!(
            decode_split(&raw_frame(7, &bad)),
            Err(WireError::OutOfBounds("addrs"))
        );
        let mut bad = p.clone();
        bad[addrs_at..addrs_at + 4].copy_from_slice(&(MAX_ADDRS as u32).to_le_bytes());
        assert_eq!(
            decode_split(&raw_frame(7, &bad)),
            Err(WireError::Truncated("addrs"))
        );
        let keys_at = addrs_at + 4;
        let mut bad = p.clone();
        bad[keys_at..keys_at + 4].copy_from_slice(&(MAX_ADDRS as u32 + 1).to_le_bytes());
        assert_eq!(
            decode_split(&raw_frame(7, &bad)),
            Err(WireError::OutOfBounds("req_keys"))
        );
        assert!(decode_split(&raw_frame(7, &p)).is_ok());
    }

    #[test]
    fn total_mismatch_and_overflow() {
        let s = segs(3);
        let sum: u64 = s.iter().map(|x| x.len).sum();
        for total in [sum + 1, sum - 1, 0] {
            let frame = encode_to_vec(
                &Msg::Read {
                    segments: s.clone(),
                    total,
                },
                0,
            );
            assert_eq!(decode_split(&frame), Err(WireError::Invalid("total")));
        }
        let big = vec![
            Segment {
                dst: 0,
                src: 0,
                len: u64::MAX,
            },
            Segment {
                dst: 0,
                src: 0,
                len: 2,
            },
        ];
        let frame = encode_to_vec(
            &Msg::Write {
                segments: big,
                total: 1,
            },
            0,
        );
        assert_eq!(decode_split(&frame), Err(WireError::Invalid("total")));
        // An empty list with total 0 is consistent.
        let frame = encode_to_vec(
            &Msg::Write {
                segments: vec![],
                total: 0,
            },
            0,
        );
        assert!(decode_split(&frame).is_ok());
    }

    #[test]
    fn zero_length_segment() {
        let mut s = segs(3);
        s[1].len = 0;
        let total = s.iter().map(|x| x.len).sum();
        let frame = encode_to_vec(&Msg::Write { segments: s, total }, 0);
        assert_eq!(decode_split(&frame), Err(WireError::Invalid("segment.len")));
    }

    #[test]
    fn shape_dims_bound() {
        let mut e = entry(2);
        e.shape = vec![1; 31];
        let ok = Msg::Resolved {
            status: 0,
            message: String::new(),
            entry: Some(e.clone()),
            slot: 0,
        };
        assert_eq!(decode_split(&encode_to_vec(&ok, 0)).unwrap().1, ok);
        e.shape = vec![1; 32];
        let bad = Msg::Table {
            status: 0,
            entries: vec![e],
        };
        assert_eq!(
            decode_split(&encode_to_vec(&bad, 0)),
            Err(WireError::OutOfBounds("shape"))
        );
    }

    #[test]
    fn bad_key_tag() {
        let mut payload = vec![3u8];
        payload.extend_from_slice(&[0; 16]);
        assert_eq!(
            decode_split(&raw_frame(8, &payload)),
            Err(WireError::Invalid("key.tag"))
        );
    }

    #[test]
    fn decode_frame_short_header() {
        assert_eq!(decode_frame(&[0; 15]), Err(WireError::Truncated("header")));
    }

    // ---- property tests -------------------------------------------------

    fn text() -> impl Strategy<Value = String> {
        "\\PC{0,24}"
    }

    fn arb_device() -> impl Strategy<Value = Option<DeviceEndpoint>> {
        prop::option::of((text(), any::<u32>(), text(), any::<u16>()).prop_map(
            |(server_id, device_id, device_ip, device_port)| DeviceEndpoint {
                server_id,
                device_id,
                device_ip,
                device_port,
                ..DeviceEndpoint::default()
            },
        ))
    }

    fn arb_pools() -> impl Strategy<Value = Vec<PoolInfo>> {
        prop::collection::vec(
            (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(fd, base, size)| PoolInfo {
                fd,
                base,
                size,
            }),
            0..=MAX_POOLS,
        )
    }

    fn arb_identity() -> impl Strategy<Value = Identity> {
        (
            any::<[u8; TAG_LEN]>(),
            any::<[u8; TAG_LEN]>(),
            any::<Option<(u32, u32)>>(),
        )
            .prop_map(|(host_tag, proof, claim)| Identity {
                host_tag,
                proof,
                claim: claim.map(|(pid, fd)| Claim { pid, fd }),
            })
    }

    fn arb_entry() -> impl Strategy<Value = CacheEntry> {
        (
            (any::<i64>(), any::<u8>(), any::<u32>(), any::<u32>()),
            prop::collection::vec(any::<i64>(), 0..=31),
            any::<u64>(),
            prop::collection::vec(any::<u64>(), 0..16),
            prop::collection::vec(any::<(u64, u64, u64)>(), 0..4),
            any::<Option<u64>>(),
        )
            .prop_map(
                |(
                    (cache_id, kind, placement, data_type),
                    shape,
                    tensor_bytes,
                    addrs,
                    req_keys,
                    blocks_model,
                )| {
                    CacheEntry {
                        cache_id,
                        kind,
                        placement,
                        data_type,
                        shape,
                        tensor_bytes,
                        addrs,
                        req_keys,
                        blocks_model,
                    }
                },
            )
    }

    fn arb_key() -> impl Strategy<Value = CacheKey> {
        prop_oneof![
            any::<(u64, u64, u64, u64)>().prop_map(|(cluster_id, req_id, model_id, prefix_id)| {
                CacheKey::Req {
                    cluster_id,
                    req_id,
                    model_id,
                    prefix_id,
                }
            }),
            any::<(u64, i64, u32)>().prop_map(|(cluster_id, cache_id, batch_index)| {
                CacheKey::IdIndex {
                    cluster_id,
                    cache_id,
                    batch_index,
                }
            }),
            any::<(u64, u64)>().prop_map(|(cluster_id, model_id)| CacheKey::Blocks {
                cluster_id,
                model_id
            }),
        ]
    }

    /// Segments with non-zero lengths whose sum cannot overflow, plus the sum.
    fn arb_segments() -> impl Strategy<Value = (Vec<Segment>, u64)> {
        prop::collection::vec(
            (any::<u64>(), any::<u64>(), 1u64..(1 << 48)).prop_map(|(dst, src, len)| Segment {
                dst,
                src,
                len,
            }),
            0..48,
        )
        .prop_map(|s| {
            let total = s.iter().map(|x| x.len).sum();
            (s, total)
        })
    }

    fn arb_msg() -> impl Strategy<Value = Msg> {
        prop_oneof![
            (any::<bool>(), any::<[u8; TAG_LEN]>())
                .prop_map(|(auth, nonce)| Msg::Hello { auth, nonce }),
            (
                any::<u32>(),
                text(),
                any::<[u8; TAG_LEN]>(),
                any::<[u8; TAG_LEN]>(),
                any::<Option<[u8; TAG_LEN]>>()
            )
                .prop_map(|(status, message, nonce, host_tag, auth_mac)| {
                    Msg::HelloAck {
                        status,
                        message,
                        nonce,
                        host_tag,
                        auth_mac,
                    }
                }),
            (
                any::<Option<[u8; TAG_LEN]>>(),
                any::<(u64, u64, u32, bool)>(),
                text(),
                arb_device(),
                arb_identity()
            )
                .prop_map(
                    |(
                        auth_mac,
                        (cluster_id, server_cluster_id, role, remote_accessible),
                        comm_name,
                        device,
                        identity,
                    )| {
                        Msg::Join {
                            auth_mac,
                            cluster_id,
                            server_cluster_id,
                            role,
                            remote_accessible,
                            comm_name,
                            device,
                            identity,
                        }
                    }
                ),
            (
                any::<(u32, u64, u32, u64)>(),
                text(),
                arb_device(),
                arb_identity(),
                arb_pools()
            )
                .prop_map(
                    |((status, cluster_id, role, link_token), message, device, identity, pools)| {
                        Msg::JoinAck {
                            status,
                            message,
                            cluster_id,
                            role,
                            link_token,
                            device,
                            identity,
                            pools,
                        }
                    }
                ),
            arb_pools().prop_map(|pools| Msg::Pools { pools }),
            any::<(u64, u64, bool)>().prop_map(|(cluster_id, link_token, reverse)| Msg::Attach {
                cluster_id,
                link_token,
                reverse,
            }),
            (any::<u32>(), text()).prop_map(|(status, message)| Msg::Reply { status, message }),
            Just(Msg::Unlink),
            Just(Msg::GetTable),
            (any::<u32>(), prop::collection::vec(arb_entry(), 0..6))
                .prop_map(|(status, entries)| Msg::Table { status, entries }),
            arb_key().prop_map(|key| Msg::Resolve { key }),
            (
                any::<u32>(),
                text(),
                proptest::option::of(arb_entry()),
                any::<u64>()
            )
                .prop_map(|(status, message, entry, slot)| Msg::Resolved {
                    status,
                    message,
                    entry,
                    slot,
                }),
            any::<(u64, u64)>().prop_map(|(req_id, model_id)| Msg::Consume { req_id, model_id }),
            (text(), text()).prop_map(|(name, msg)| Msg::Notify { name, msg }),
            arb_segments().prop_map(|(segments, total)| Msg::Read { segments, total }),
            (any::<u32>(), text(), any::<u64>()).prop_map(|(status, message, total)| {
                Msg::ReadData {
                    status,
                    message,
                    total,
                }
            }),
            arb_segments().prop_map(|(segments, total)| Msg::Write { segments, total }),
        ]
    }

    /// A byte-level edit of a frame.
    #[derive(Clone, Debug)]
    enum Mutation {
        Flip(usize, u8),
        Set(usize, u8),
        Insert(usize, u8),
        Delete(usize),
        Truncate(usize),
    }

    fn arb_mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), 1u8..).prop_map(|(i, m)| Mutation::Flip(i, m)),
            (
                any::<usize>(),
                prop_oneof![Just(0u8), Just(1), Just(2), Just(0xff), any::<u8>()]
            )
                .prop_map(|(i, v)| Mutation::Set(i, v)),
            (any::<usize>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
            any::<usize>().prop_map(Mutation::Delete),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn apply(frame: &mut Vec<u8>, m: &Mutation) {
        let n = frame.len();
        match *m {
            Mutation::Flip(i, x) if n > 0 => frame[i % n] ^= x,
            Mutation::Set(i, v) if n > 0 => frame[i % n] = v,
            Mutation::Insert(i, v) => frame.insert(i % (n + 1), v),
            Mutation::Delete(i) if n > 0 => {
                frame.remove(i % n);
            }
            Mutation::Truncate(i) => frame.truncate(i % (n + 1)),
            _ => {}
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn prop_round_trip(msg in arb_msg(), tag in any::<u32>()) {
            let frame = encode_to_vec(&msg, tag);
            let (header, back) = decode_split(&frame).unwrap();
            prop_assert_eq!(header.tag, tag);
            prop_assert_eq!(header.msg_type, msg.msg_type());
            prop_assert_eq!(frame_len(&header), frame.len());
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn prop_random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode_split(&bytes);
            let _ = decode_frame(&bytes);
        }

        #[test]
        fn prop_random_payload_never_panics(
            msg_type in 0u16..=17,
            payload in prop::collection::vec(any::<u8>(), 0..4096),
        ) {
            // A valid header so the payload decoder sees the random bytes.
            let frame = raw_frame(msg_type, &payload);
            if let Ok((_, msg)) = decode_split(&frame) {
                // Decoding is canonical: an accepted frame re-encodes to itself.
                prop_assert_eq!(encode_to_vec(&msg, 9), frame);
            }
        }

        #[test]
        fn prop_mutated_frames_never_panic(
            msg in arb_msg(),
            muts in prop::collection::vec(arb_mutation(), 1..6),
            fix_len in any::<bool>(),
        ) {
            let mut frame = encode_to_vec(&msg, 7);
            for m in &muts {
                apply(&mut frame, m);
            }
            if fix_len && frame.len() >= HEADER_LEN {
                // Keep the header consistent so the edits reach the payload decoder.
                let len = (frame.len() - HEADER_LEN) as u32;
                frame[8..12].copy_from_slice(&len.to_le_bytes());
            }
            if let Ok((header, back)) = decode_split(&frame) {
                prop_assert_eq!(encode_to_vec(&back, header.tag), frame);
            }
        }
    }
}
