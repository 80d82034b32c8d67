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

use crate::cache::types::{CacheKey, CacheKind, CacheView, Segment};

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
/// 4: the `Notify` frame (type 17, the transfer engine); a reply echoes its
/// request's `tag` (header field) and, on one-sided links, either end sends
/// requests on the control connection (the poller serves both ends), so a
/// version-3 peer would leave those unanswered: it is refused at `Hello`.
/// 5: `OpenConns` (type 18): TCP data connections open when first needed, so
/// the server asks the client on the control connection for the reverse
/// connections it sends its requests on; a version-4 client would never open
/// them (it opened them at link time): it is refused at `Hello`.
pub const VERSION: u16 = 5;
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
pub const MAX_TYPE: u16 = 18;

/// The decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Message type (1 ..= [`MAX_TYPE`]).
    pub msg_type: u16,
    /// Bytes of structured payload after the header (<= [`MAX_PAYLOAD`]).
    pub payload_len: u32,
    /// Request tag; a reply echoes its request's.
    pub tag: u32,
}

/// Why a frame was rejected. A rejected frame always drops the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The header's magic is not [`MAGIC`].
    #[error("bad magic 0x{0:08x}")]
    BadMagic(u32),
    /// The header's version is not [`VERSION`].
    #[error("unsupported protocol version {0}")]
    BadVersion(u16),
    /// The message type is outside 1 ..= [`MAX_TYPE`].
    #[error("unknown message type {0}")]
    UnknownType(u16),
    /// A payload or bulk length over its bound.
    #[error("payload length {0} exceeds the limit")]
    TooLarge(u64),
    /// The payload ended inside the named field.
    #[error("payload truncated while reading {0}")]
    Truncated(&'static str),
    /// A count or length field over its bound.
    #[error("field {0} out of bounds")]
    OutOfBounds(&'static str),
    /// Bytes left over after the message was decoded.
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
    /// A field with a value outside its domain.
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
    /// The sender's process id.
    pub pid: u32,
    /// The fd number of the sender's identity memfd, in its process.
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
    /// The cache's id on its owner.
    pub cache_id: i64,
    /// `CacheKind` as u8.
    pub kind: u8,
    /// `Placement` as u32.
    pub placement: u32,
    /// `DataType` code.
    pub data_type: u32,
    /// Dimensions (dim 0: batch size or block count).
    pub shape: Vec<i64>,
    /// Bytes per tensor.
    pub tensor_bytes: u64,
    /// Base address of each tensor in the owner's process.
    pub addrs: Vec<u64>,
    /// Request-key bindings `(req_id, model_id, slot)` (no prefix keys).
    pub req_keys: Vec<(u64, u64, u64)>,
    /// Model id of the blocks key bound to this cache, if any.
    pub blocks_model: Option<u64>,
}

impl CacheEntry {
    /// The planner's view of the cache this entry describes; the entry is
    /// the peer's word, so an invalid one is `LLM_LINK_FAILED`.
    pub fn view(&self) -> crate::status::Result<CacheView> {
        let kind = CacheKind::from_u8(self.kind)
            .ok_or_else(|| crate::err!(LinkFailed, "peer sent cache kind {}", self.kind))?;
        let dim0 = self.shape.first().copied().unwrap_or(0);
        if dim0 <= 0 || self.addrs.is_empty() || self.tensor_bytes == 0 {
            return Err(crate::status::Error::new(
                crate::status::Status::LinkFailed,
                format!(
                    "peer sent an invalid description of cache {}",
                    self.cache_id
                ),
            ));
        }
        Ok(CacheView {
            kind,
            addrs: self.addrs.clone(),
            tensor_bytes: self.tensor_bytes,
            dim0: dim0 as u64,
        })
    }
}

/// A client's link request, the fields of the `Join` frame: who it is, what
/// it asks for, and its proofs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// The client's proof of the link secret (link authentication).
    pub auth_mac: Option<[u8; TAG_LEN]>,
    /// The client's cluster id.
    pub cluster_id: u64,
    /// The cluster the client means to link to: a server with another id
    /// refuses at once, before its link table is consulted.
    pub server_cluster_id: u64,
    /// The client's role (prompt / decoder / mix).
    pub role: u32,
    /// The client's remote-cache-accessible mode (both ends must agree).
    pub remote_accessible: bool,
    /// Rank-table comm this link belongs to (`llmdd_link`); empty for
    /// `link_clusters`.
    pub comm_name: String,
    /// The client's device endpoint: present iff it runs the acl backend.
    pub device: Option<DeviceEndpoint>,
    /// The client's identity proof (`transport::identity`).
    pub identity: Identity,
}

/// The fields of a `JoinAck` after its status and message: the server's
/// acceptance of a `Join` (all zero or empty in a refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinAck {
    /// The server's cluster id.
    pub cluster_id: u64,
    /// The server's role.
    pub role: u32,
    /// The link's token (the client's `Attach` names it).
    pub link_token: u64,
    /// The server's device endpoint: present iff it runs the acl backend.
    pub device: Option<DeviceEndpoint>,
    /// The server's identity proof.
    pub identity: Identity,
    /// The server's memfd pools, only if the client proved to be on this host.
    pub pools: Vec<PoolInfo>,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    /// Client → server, first frame of the control connection: the client's
    /// challenge. Nothing identifying.
    Hello {
        /// The client holds a link secret and expects the server to prove it.
        auth: bool,
        /// The client's challenge.
        nonce: [u8; TAG_LEN],
    },
    /// Server → client answer to `Hello`: its challenge, its host tag and,
    /// with link authentication, its proof of the secret. A non-zero status
    /// refuses the connection (nothing else is meaningful then).
    HelloAck {
        /// 0 to go on, else the `LLMDD_*` status refusing the connection.
        status: u32,
        /// Why it refused (empty on success).
        message: String,
        /// The server's challenge.
        nonce: [u8; TAG_LEN],
        /// HMAC of the server's host id over the transcript.
        host_tag: [u8; TAG_LEN],
        /// The server's proof of the link secret, with link authentication.
        auth_mac: Option<[u8; TAG_LEN]>,
    },
    /// Client → server after `HelloAck`: the link request.
    Join(Join),
    /// Server → client reply to `Join`: a status and message, and the
    /// acceptance's fields (zero or empty when the status refuses).
    JoinAck {
        /// 0 when the link is accepted, else the refusing `LLMDD_*` status.
        status: u32,
        /// Why it refused (empty on success).
        message: String,
        /// The acceptance's fields.
        ack: JoinAck,
    },
    /// Client → server after `JoinAck`: the client's memfd pools (empty
    /// unless the server proved to be on this host).
    Pools {
        /// The client's pools (at most [`MAX_POOLS`]).
        pools: Vec<PoolInfo>,
    },
    /// Client → server, first frame of an extra data connection.
    /// `reverse` = the server will send requests on it (client serves).
    Attach {
        /// The client's cluster id.
        cluster_id: u64,
        /// The link's token from `JoinAck`.
        link_token: u64,
        /// The server sends its own requests on this connection.
        reverse: bool,
    },
    /// Generic reply: a status and a message.
    Reply {
        /// 0 on success, else an `LLMDD_*` status.
        status: u32,
        /// Why it failed (empty on success).
        message: String,
    },
    /// Client → server: tear down both sides of the link.
    Unlink,
    /// Ask for the peer's cache table (remote-cache-accessible mode).
    GetTable,
    /// The peer's cache table.
    Table {
        /// 0 on success, else an `LLMDD_*` status.
        status: u32,
        /// The owner's caches (at most [`MAX_ENTRIES`]).
        entries: Vec<CacheEntry>,
    },
    /// Resolve a key against the owner's current tables.
    Resolve {
        /// The key to resolve.
        key: CacheKey,
    },
    /// Reply to `Resolve`: the cache and the slot the key names.
    Resolved {
        /// 0 when the key names a cache, else an `LLMDD_*` status.
        status: u32,
        /// Why it failed (empty on success).
        message: String,
        /// The named cache (`None` on failure).
        entry: Option<CacheEntry>,
        /// The batch slot of `entry` the key names.
        slot: u64,
    },
    /// Drop a one-shot request key after a successful pull.
    Consume {
        /// Request id of the key to drop.
        req_id: u64,
        /// Model id of the key to drop.
        model_id: u64,
    },
    /// Read these remote segments (`dst` is ignored, `src` is the owner's address).
    /// The reply is `ReadData` followed by `total` bulk bytes when status is 0.
    Read {
        /// The segments to read (at most [`MAX_SEGMENTS`]).
        segments: Vec<Segment>,
        /// Sum of the segments' lengths in bytes.
        total: u64,
    },
    /// Reply header of a `Read`.
    ReadData {
        /// 0 when the bulk bytes follow, else an `LLMDD_*` status.
        status: u32,
        /// Why it failed (empty on success).
        message: String,
        /// Bulk bytes following the frame.
        total: u64,
    },
    /// Write to these remote segments (`src` ignored, `dst` is the owner's
    /// address); `total` bulk bytes follow the frame. Reply: `Reply`.
    Write {
        /// The segments to write (at most [`MAX_SEGMENTS`]).
        segments: Vec<Segment>,
        /// Sum of the segments' lengths: the bulk bytes after the frame.
        total: u64,
    },
    /// A byte-addressed engine's notification (`SendNotify`): a name and a
    /// message, each at most [`MAX_STRING`] bytes. Reply: `Reply`.
    Notify {
        /// Notification name.
        name: String,
        /// Notification message.
        msg: String,
    },
    /// Server → client on the control connection of a TCP link: open `count`
    /// more reverse connections (`Attach` with `reverse`), for the server's
    /// own requests. Reply: `Reply`, once they are attached (or why not).
    OpenConns {
        /// Number of reverse connections to open.
        count: u32,
    },
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
            Msg::Join(_) => 14,
            Msg::JoinAck { .. } => 15,
            Msg::Pools { .. } => 16,
            Msg::Notify { .. } => 17,
            Msg::OpenConns { .. } => 18,
        }
    }
}

/// Total frame size (header + structured payload, excluding bulk data).
#[cfg(any(test, feature = "testing"))]
pub fn frame_len(header: &Header) -> usize {
    HEADER_LEN + header.payload_len as usize
}

/// Number of bulk bytes that follow this message's frame on the stream:
/// `total` for `Write` and for a successful (`status == 0`) `ReadData`, else 0.
#[cfg(any(test, feature = "testing"))]
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
// Wire sizes shared by the encoder (encode.rs) and the decoder (decode.rs).

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

mod decode;
mod encode;
#[cfg(any(test, feature = "testing"))]
pub use decode::decode_frame;
pub use decode::{decode_header, decode_payload};
pub use encode::{encode, encode_to_vec};

#[cfg(test)]
mod tests;
