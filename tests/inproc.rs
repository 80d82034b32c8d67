//! Two instances in one process over 127.0.0.1: link, transfers, unlink.

mod common;

use common::{cluster, count_dir, free_port, in_child_process, init, release_ports};

use std::time::{Duration, Instant};

use llmdd::cache::types::{
    CacheDesc, CacheKey, CacheKind, DataType, LayerSel, Placement, ID_UNSET,
};
use llmdd::datadist::Instance;
use llmdd::Status;

fn desc(n: u32, shape: &[i64]) -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: n,
        data_type: DataType::Uint8,
        shape: shape.to_vec(),
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

fn pair(extra: &[(&str, &str)]) -> (Instance, Instance, u16) {
    let port = free_port();
    let p = Instance::new(1, 100).unwrap();
    let listen = format!("127.0.0.1:{port}");
    let mut pe = vec![("llm.ListenIpInfo", listen.as_str())];
    pe.extend_from_slice(extra);
    init(&p, &pe);
    let d = Instance::new(2, 200).unwrap();
    init(&d, extra);
    (p, d, port)
}

fn blocks_roundtrip(extra: &[(&str, &str)]) {
    let (p, d, port) = pair(extra);
    let ps = p.session().unwrap();
    let ds = d.session().unwrap();
    // 4 tensors (2 layers) x 16 blocks x 4096 bytes
    let mut src: Vec<Vec<u8>> = (0..4)
        .map(|t| (0..16 * 4096).map(|i| (i * 7 + t * 13) as u8).collect())
        .collect();
    let mut dst: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 16 * 4096]).collect();
    let sa: Vec<u64> = src.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    let da: Vec<u64> = dst.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    ps.caches()
        .register_blocks_cache(
            &desc(4, &[16, 4096]),
            &sa,
            Some(CacheKey::Blocks {
                cluster_id: 100,
                model_id: 0,
            }),
            None,
        )
        .unwrap();
    let dc = ds
        .caches()
        .register_blocks_cache(&desc(4, &[16, 4096]), &da, None, None)
        .unwrap();
    let r = d.link_clusters(&[cluster(100, port)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let key = CacheKey::Blocks {
        cluster_id: 100,
        model_id: 0,
    };
    ds.caches()
        .pull_blocks(
            &key,
            dc.id,
            &[1, 2, 3, 9],
            &[0, 1, 2, 15],
            &LayerSel::default(),
        )
        .unwrap();
    for t in 0..4 {
        for (s, dd) in [(1, 0), (2, 1), (3, 2), (9, 15)] {
            assert_eq!(
                &dst[t][dd * 4096..(dd + 1) * 4096],
                &src[t][s * 4096..(s + 1) * 4096]
            );
        }
    }
    // bad block index moves nothing
    let e = ds
        .caches()
        .pull_blocks(&key, dc.id, &[16], &[4], &LayerSel::default())
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(dst[0][4 * 4096..5 * 4096].iter().all(|&b| b == 0));
    // unlink both sides, then relink
    let r = d
        .unlink_clusters(&[cluster(100, port)], 3000, false)
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let t0 = Instant::now();
    while ps.link_count() > 0 && t0.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(ps.link_count(), 0);
    assert_eq!(
        ds.caches()
            .pull_blocks(&key, dc.id, &[1], &[1], &LayerSel::default())
            .unwrap_err()
            .status,
        Status::NotYetLink
    );
    let r = d.link_clusters(&[cluster(100, port)], 3000).unwrap();
    assert!(r[0].is_ok());
    let r = d.link_clusters(&[cluster(100, port)], 3000).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().status, Status::AlreadyLink);
    d.finalize();
    p.finalize();
}

#[test]
fn pull_blocks_tcp() {
    blocks_roundtrip(&[("llmdd.SameHost", "off")]);
}

#[test]
fn pull_blocks_same_process() {
    blocks_roundtrip(&[]);
}

#[test]
fn request_keys_are_one_shot_and_push_works() {
    let (p, d, port) = pair(&[
        ("llm.MemPoolConfig", "{\"memory_size\":16777216}"),
        ("llmdd.SameHost", "off"),
    ]);
    let ps = p.session().unwrap();
    let ds = d.session().unwrap();
    let key = |r| CacheKey::Req {
        cluster_id: 100,
        req_id: r,
        model_id: 0,
        prefix_id: ID_UNSET,
    };
    let pc = ps
        .caches()
        .allocate_cache(&desc(2, &[2, 1024]), &[key(5), key(6)])
        .unwrap();
    for (t, &a) in pc.addrs.iter().enumerate() {
        unsafe { std::ptr::write_bytes(a as *mut u8, 0x40 + t as u8, 2048) };
    }
    let dc = ds
        .caches()
        .allocate_cache(&desc(2, &[2, 1024]), &[])
        .unwrap();
    assert!(d.link_clusters(&[cluster(100, port)], 3000).unwrap()[0].is_ok());
    ds.caches()
        .pull_cache(&key(6), dc.id, 1, -1, &LayerSel::default())
        .unwrap();
    assert_eq!(unsafe { *(dc.addrs[1] as *const u8).add(1024) }, 0x41);
    let e = ds
        .caches()
        .pull_cache(&key(6), dc.id, 1, -1, &LayerSel::default())
        .unwrap_err();
    assert_eq!(
        e.status,
        Status::KvCacheNotExist,
        "one-shot key consumed: {e}"
    );
    ds.caches()
        .pull_cache(&key(5), dc.id, 0, -1, &LayerSel::default())
        .unwrap();
    // push needs remote-accessible mode
    let e = ds
        .caches()
        .push_cache(
            &CacheKey::IdIndex {
                cluster_id: 100,
                cache_id: pc.id,
                batch_index: 0,
            },
            dc.id,
            0,
            -1,
            &LayerSel::default(),
        )
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    let _ = CacheKind::Batch;
}

#[test]
fn link_to_closed_port_fails_fast() {
    let d = Instance::new(2, 7).unwrap();
    init(&d, &[]);
    let port = free_port();
    let t = Instant::now();
    // A timeout far above the bound: failing by refusal, not by timing out,
    // is what is checked, with room for a busy machine's scheduling delay.
    let r = d.link_clusters(&[cluster(1, port)], 30_000).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().status, Status::LinkFailed);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn remote_accessible_push_blocks() {
    let (p, d, port) = pair(&[
        ("llm.EnableRemoteCacheAccessible", "1"),
        ("llmdd.SameHost", "off"),
    ]);
    let ps = p.session().unwrap();
    let ds = d.session().unwrap();
    let mut pbuf: Vec<Vec<u8>> = (0..2).map(|_| vec![0u8; 8 * 512]).collect();
    let mut dbuf: Vec<Vec<u8>> = (0..2).map(|t| vec![t as u8 + 1; 8 * 512]).collect();
    let pa: Vec<u64> = pbuf.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    let da: Vec<u64> = dbuf.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    ps.caches()
        .register_blocks_cache(
            &desc(2, &[8, 512]),
            &pa,
            Some(CacheKey::Blocks {
                cluster_id: 100,
                model_id: 3,
            }),
            None,
        )
        .unwrap();
    let dc = ds
        .caches()
        .register_blocks_cache(&desc(2, &[8, 512]), &da, None, None)
        .unwrap();
    assert!(d.link_clusters(&[cluster(100, port)], 3000).unwrap()[0].is_ok());
    ds.caches()
        .push_blocks(
            &CacheKey::Blocks {
                cluster_id: 100,
                model_id: 3,
            },
            dc.id,
            &[0, 1],
            &[6, 7],
            &LayerSel::default(),
        )
        .unwrap();
    assert!(pbuf[1][6 * 512..8 * 512].iter().all(|&b| b == 2));
    assert!(pbuf[0][..6 * 512].iter().all(|&b| b == 0));
}

/// Threads and file descriptors of this process (other tests run in parallel
/// threads, so this test runs its scenario in a child process: itself).
#[test]
fn finalize_leaves_no_thread_or_socket() {
    if !in_child_process("finalize_leaves_no_thread_or_socket") {
        return;
    }
    let threads0 = count_dir("/proc/self/task");
    let fds0 = count_dir("/proc/self/fd");
    for _ in 0..3 {
        let (p, d, port) = pair(&[
            ("llmdd.SameHost", "off"),
            ("llm.MemPoolConfig", "{\"memory_size\":1048576}"),
        ]);
        assert!(d.link_clusters(&[cluster(100, port)], 3000).unwrap()[0].is_ok());
        assert!(count_dir("/proc/self/task") > threads0);
        d.finalize();
        p.finalize();
        d.finalize(); // idempotent
    }
    release_ports(); // the ports the rounds used stay held until now
    assert_eq!(
        count_dir("/proc/self/task"),
        threads0,
        "threads left behind"
    );
    assert_eq!(
        count_dir("/proc/self/fd"),
        fds0,
        "file descriptors left behind"
    );
}

#[test]
fn hostile_peers_are_dropped_and_the_server_keeps_serving() {
    use std::io::{Read, Write};
    let (p, d, port) = pair(&[("llmdd.SameHost", "off")]);
    let addr = format!("127.0.0.1:{port}");
    // Garbage, a valid header with a huge length, an unknown type, and a silent peer.
    let mut silent = std::net::TcpStream::connect(&addr).unwrap();
    let frames: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        [
            &b"LLDD"[..],
            &1u16.to_le_bytes(),
            &1u16.to_le_bytes(),
            &u32::MAX.to_le_bytes(),
            &[0; 4],
        ]
        .concat(),
        [
            &b"LLDD"[..],
            &1u16.to_le_bytes(),
            &999u16.to_le_bytes(),
            &0u32.to_le_bytes(),
            &[0; 4],
        ]
        .concat(),
        [
            &b"LLDD"[..],
            &1u16.to_le_bytes(),
            &11u16.to_le_bytes(),
            &8u32.to_le_bytes(),
            &[0; 4],
            &[0xff; 8],
        ]
        .concat(),
    ];
    for f in frames {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(&f).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        // The server drops the connection (EOF or reset), never hangs.
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "server answered a malformed frame");
    }
    // A real client still links and transfers while the silent one is connected.
    let ps = p.session().unwrap();
    let ds = d.session().unwrap();
    let mut src = vec![7u8; 4096];
    let mut dst = vec![0u8; 4096];
    ps.caches()
        .register_blocks_cache(
            &desc(1, &[4, 1024]),
            &[src.as_mut_ptr() as u64],
            Some(CacheKey::Blocks {
                cluster_id: 100,
                model_id: 0,
            }),
            None,
        )
        .unwrap();
    let dc = ds
        .caches()
        .register_blocks_cache(&desc(1, &[4, 1024]), &[dst.as_mut_ptr() as u64], None, None)
        .unwrap();
    assert!(d.link_clusters(&[cluster(100, port)], 3000).unwrap()[0].is_ok());
    let sel = LayerSel {
        per_layer: 1,
        ..LayerSel::default()
    };
    ds.caches()
        .pull_blocks(
            &CacheKey::Blocks {
                cluster_id: 100,
                model_id: 0,
            },
            dc.id,
            &[0, 1, 2, 3],
            &[0, 1, 2, 3],
            &sel,
        )
        .unwrap();
    assert!(dst.iter().all(|&b| b == 7));
    // Finalize does not wait for the silent peer's handshake timeout.
    let t = Instant::now();
    d.finalize();
    p.finalize();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "finalize took {:?}",
        t.elapsed()
    );
    let _ = silent.write_all(b"x");
}
