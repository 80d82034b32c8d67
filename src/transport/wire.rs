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
pub const VERSION: u16 = 1;
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

/// Identity of the sender's process for same-host one-sided transfers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host identity (boot id + pid namespace); equal strings = same kernel.
    pub host_id: String,
    pub pid: u32,
    /// Address of an 8-byte cookie the peer may read with process_vm_readv
    /// to prove it can reach this process's memory.
    pub probe_addr: u64,
    pub probe_cookie: u64,
    pub pools: Vec<PoolInfo>,
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
    /// Client → server, first frame of the control connection.
    Hello {
        cluster_id: u64,
        role: u32,
        remote_accessible: bool,
        process: ProcessInfo,
    },
    /// Server → client reply to `Hello`.
    HelloAck {
        status: u32,
        message: String,
        cluster_id: u64,
        role: u32,
        link_token: u64,
        process: ProcessInfo,
    },
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
    Table { status: u32, entries: Vec<CacheEntry> },
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
        }
    }
}

/// Appends the frame (header + payload) for `msg` to `out`.
pub fn encode(msg: &Msg, tag: u32, out: &mut Vec<u8>) {
    let _ = (msg, tag, out);
    todo!("codec")
}

/// Parses a 16-byte header, checking magic, version, known type and length bound.
pub fn decode_header(buf: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
    let _ = buf;
    todo!("codec")
}

/// Parses the payload of a frame whose header was accepted. Every count and
/// length is bounded and the payload must be consumed exactly.
pub fn decode_payload(header: &Header, payload: &[u8]) -> Result<Msg, WireError> {
    let _ = (header, payload);
    todo!("codec")
}
