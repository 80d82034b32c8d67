//! The fuzzing seeds in `fuzz/seeds/frame_decoder` are valid frames of the
//! current protocol, one per message type (scripts/fuzz.sh starts from them).
//! After a wire change, `LLMDD_WRITE_FUZZ_SEEDS=1 cargo test --test fuzz_seeds`
//! rewrites them.

use std::path::PathBuf;

use llmdd::cache::types::{CacheKey, Segment};
use llmdd::testing::wire::{
    self, CacheEntry, Claim, DeviceEndpoint, Identity, Join, JoinAck, Msg, PoolInfo, MAX_TYPE,
    TAG_LEN,
};

fn samples() -> Vec<Msg> {
    let pools = vec![PoolInfo {
        fd: 7,
        base: 0x7f10_0000_0000,
        size: 1 << 20,
    }];
    let identity = Identity {
        host_tag: [0xa5; TAG_LEN],
        proof: [0x3c; TAG_LEN],
        claim: Some(Claim { pid: 4242, fd: 9 }),
    };
    let device = Some(DeviceEndpoint {
        server_id: "10.0.0.1".into(),
        device_id: 3,
        device_ip: "192.168.1.3".into(),
        device_port: 16666,
        super_device_id: Some(19),
        super_pod_id: Some("pod-1".into()),
    });
    let entry = CacheEntry {
        cache_id: 5,
        kind: 1,
        placement: 0,
        data_type: 4,
        shape: vec![16, 4096],
        tensor_bytes: 65536,
        addrs: vec![0x1000, 0x2000],
        req_keys: vec![(1, 0, 0), (2, 0, 1)],
        blocks_model: Some(0),
    };
    let segs = vec![
        Segment {
            dst: 0x1000,
            src: 0x2000,
            len: 4096,
        },
        Segment {
            dst: 0x3000,
            src: 0x4000,
            len: 8192,
        },
    ];
    vec![
        Msg::Hello {
            auth: true,
            nonce: [1; TAG_LEN],
        },
        Msg::HelloAck {
            status: 0,
            message: String::new(),
            nonce: [2; TAG_LEN],
            host_tag: [3; TAG_LEN],
            auth_mac: Some([4; TAG_LEN]),
        },
        Msg::Join(Join {
            auth_mac: Some([5; TAG_LEN]),
            cluster_id: 2,
            server_cluster_id: 1,
            role: 2,
            remote_accessible: false,
            comm_name: "comm-a".into(),
            device: device.clone(),
            identity: identity.clone(),
        }),
        Msg::JoinAck {
            status: 0,
            message: String::new(),
            ack: JoinAck {
                cluster_id: 1,
                role: 1,
                link_token: 99,
                device,
                identity,
                pools: pools.clone(),
            },
        },
        Msg::Pools { pools },
        Msg::Attach {
            cluster_id: 2,
            link_token: 99,
            reverse: true,
        },
        Msg::Reply {
            status: 0x5010_B009,
            message: "refused".into(),
        },
        Msg::Unlink,
        Msg::GetTable,
        Msg::Table {
            status: 0,
            entries: vec![entry.clone(), entry.clone()],
        },
        Msg::Resolve {
            key: CacheKey::Req {
                cluster_id: 1,
                req_id: 7,
                model_id: 0,
                prefix_id: u64::MAX,
            },
        },
        Msg::Resolve {
            key: CacheKey::IdIndex {
                cluster_id: 1,
                cache_id: 5,
                batch_index: 2,
            },
        },
        Msg::Resolve {
            key: CacheKey::Blocks {
                cluster_id: 1,
                model_id: 0,
            },
        },
        Msg::Resolved {
            status: 0,
            message: String::new(),
            entry: Some(entry),
            slot: 1,
        },
        Msg::Consume {
            req_id: 7,
            model_id: 0,
        },
        Msg::Read {
            segments: segs.clone(),
            total: 12288,
        },
        Msg::ReadData {
            status: 0,
            message: String::new(),
            total: 12288,
        },
        Msg::Write {
            segments: segs,
            total: 12288,
        },
        Msg::Notify {
            name: "kv_done".to_owned(),
            msg: "req 7".to_owned(),
        },
        Msg::OpenConns { count: 1 },
    ]
}

#[test]
fn fuzz_seeds_are_frames_of_the_current_protocol() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/frame_decoder");
    let msgs = samples();
    if std::env::var_os("LLMDD_WRITE_FUZZ_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, m) in msgs.iter().enumerate() {
            let name = format!("{i:02}-type{}", m.msg_type());
            std::fs::write(dir.join(name), wire::encode_to_vec(m, i as u32)).unwrap();
        }
    }
    let mut types = std::collections::BTreeSet::new();
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let (_, m) = wire::decode_frame(&bytes).unwrap_or_else(|e| {
            panic!(
                "{} is not a frame of the current protocol ({e}); LLMDD_WRITE_FUZZ_SEEDS=1 rewrites the seeds",
                path.display()
            )
        });
        assert!(
            msgs.contains(&m),
            "{} is not one of the samples",
            path.display()
        );
        types.insert(m.msg_type());
        n += 1;
    }
    assert_eq!(n, msgs.len());
    assert_eq!(types.len(), MAX_TYPE as usize, "one seed per message type");
}
