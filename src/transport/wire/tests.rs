//! Unit tests of `wire`.

use super::encode::*;
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
        Msg::Join(Join {
            auth_mac: None,
            cluster_id: 0xabcdef,
            server_cluster_id: 0x123456,
            role: 1,
            remote_accessible: true,
            comm_name: String::new(),
            device: None,
            identity: identity(true),
        }),
        Msg::Join(Join {
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
        }),
        Msg::JoinAck {
            status: 0,
            message: "welcome".to_owned(),
            ack: JoinAck {
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
        Msg::OpenConns { count: 2 },
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
                    Msg::Join(Join {
                        auth_mac,
                        cluster_id,
                        server_cluster_id,
                        role,
                        remote_accessible,
                        comm_name,
                        device,
                        identity,
                    })
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
                        ack: JoinAck {
                            cluster_id,
                            role,
                            link_token,
                            device,
                            identity,
                            pools,
                        },
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
        any::<u32>().prop_map(|count| Msg::OpenConns { count }),
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
