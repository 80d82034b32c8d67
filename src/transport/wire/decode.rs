//! The frame decoder. Nothing here indexes or unwraps: every read goes
//! through `Reader::take`, which returns `Truncated` when the payload is too
//! short, and every count is bounded against the remaining payload before
//! anything is allocated.

use super::*;

pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(super) fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], WireError> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(WireError::Truncated(what))?;
        self.buf = rest;
        Ok(*head)
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(u8::from_le_bytes(self.array::<1>(what)?))
    }
    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array::<2>(what)?))
    }
    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array::<4>(what)?))
    }
    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array::<8>(what)?))
    }
    pub(super) fn i64(&mut self, what: &'static str) -> Result<i64, WireError> {
        Ok(i64::from_le_bytes(self.array::<8>(what)?))
    }

    pub(super) fn bool(&mut self, what: &'static str) -> Result<bool, WireError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Invalid(what)),
        }
    }

    pub(super) fn opt_u64(&mut self, what: &'static str) -> Result<Option<u64>, WireError> {
        if self.bool(what)? {
            Ok(Some(self.u64(what)?))
        } else {
            Ok(None)
        }
    }

    pub(super) fn string(&mut self, what: &'static str) -> Result<String, WireError> {
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
    pub(super) fn count(
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

    pub(super) fn segments(&mut self) -> Result<Vec<Segment>, WireError> {
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

    pub(super) fn pools(&mut self) -> Result<Vec<PoolInfo>, WireError> {
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

    pub(super) fn tag(&mut self, what: &'static str) -> Result<[u8; TAG_LEN], WireError> {
        self.array::<TAG_LEN>(what)
    }

    pub(super) fn opt_tag(
        &mut self,
        what: &'static str,
    ) -> Result<Option<[u8; TAG_LEN]>, WireError> {
        if self.bool(what)? {
            Ok(Some(self.tag(what)?))
        } else {
            Ok(None)
        }
    }

    pub(super) fn identity(&mut self) -> Result<Identity, WireError> {
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

    pub(super) fn device(&mut self) -> Result<Option<DeviceEndpoint>, WireError> {
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

    pub(super) fn entry(&mut self) -> Result<CacheEntry, WireError> {
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

    pub(super) fn key(&mut self) -> Result<CacheKey, WireError> {
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

pub(super) fn decode_body(msg_type: u16, r: &mut Reader<'_>) -> Result<Msg, WireError> {
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
        18 => Msg::OpenConns {
            count: r.u32("count")?,
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
        14 => Msg::Join(Join {
            auth_mac: r.opt_tag("auth_mac")?,
            cluster_id: r.u64("cluster_id")?,
            server_cluster_id: r.u64("server_cluster_id")?,
            role: r.u32("role")?,
            remote_accessible: r.bool("remote_accessible")?,
            comm_name: r.string("comm_name")?,
            device: r.device()?,
            identity: r.identity()?,
        }),
        15 => Msg::JoinAck {
            status: r.u32("status")?,
            message: r.string("message")?,
            ack: JoinAck {
                cluster_id: r.u64("cluster_id")?,
                role: r.u32("role")?,
                link_token: r.u64("link_token")?,
                device: r.device()?,
                identity: r.identity()?,
                pools: r.pools()?,
            },
        },
        16 => Msg::Pools { pools: r.pools()? },
        other => return Err(WireError::UnknownType(other)),
    })
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

/// Decodes one complete frame: `frame` must be exactly header + payload.
#[cfg(any(test, feature = "testing"))]
pub fn decode_frame(frame: &[u8]) -> Result<(Header, Msg), WireError> {
    let (head, payload) = frame
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(WireError::Truncated("header"))?;
    let header = decode_header(head)?;
    let msg = decode_payload(&header, payload)?;
    Ok((header, msg))
}
