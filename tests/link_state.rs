//! Link states and statistics in one process over 127.0.0.1, where the C test
//! (cpp_tests/test_link_stats.c) cannot reach: rank-table comms (LINKING while
//! PREPARING, FAILED with the comm's reason), and the in-flight count while
//! a large TCP pull runs.

mod common;

use common::{cluster, free_port, init, rank_table};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llmdd::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement};
use llmdd::datadist::Instance;
use llmdd::datadist::LinkState;
use llmdd::datadist::MemStatus;
use llmdd::stats::{Direction, Path};
use llmdd::Status;

fn desc(blocks: i64, block: i64) -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: 2,
        data_type: DataType::Uint8,
        shape: vec![blocks, block],
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "{what} not seen within {within:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn comm_members_are_linking_then_failed_with_the_comm_reason() {
    let ports = [free_port(), free_port(), free_port()];
    let t = rank_table(&ports);
    let ranks = [(1u64, 0u32), (2, 1), (3, 2)];
    let ms: Vec<Instance> = (1..=2)
        .map(|c| {
            let i = Instance::new(1, c).unwrap();
            init(&i, &[("llm.LinkTotalTime", "1")]);
            i
        })
        .collect();
    for m in &ms {
        assert_eq!(m.link("lonely", &ranks, &t).unwrap(), 1);
    }
    let s = ms[0].session().unwrap();
    // Cluster 3 never joins: while the comm is PREPARING both peers are LINKING.
    let list = s.list_links();
    assert_eq!(
        list.iter().map(|l| l.cluster_id).collect::<Vec<_>>(),
        [2, 3]
    );
    for l in &list {
        assert!(
            matches!(l.state, LinkState::Linking | LinkState::Failed(_)),
            "{l:?}"
        );
        assert_eq!(l.comm_id, 1);
    }
    wait_for("comm FAILED", Duration::from_secs(6), || {
        ms[0].query_register_mem_status(1).unwrap().0 == MemStatus::Failed
    });
    for c in [2, 3] {
        match s.link_state(c) {
            LinkState::Failed(why) => {
                assert!(why.starts_with("rank-table comm FAILED"), "{why}")
            }
            st => panic!("cluster {c}: {st:?}"),
        }
    }
    assert!(s
        .list_links()
        .iter()
        .all(|l| matches!(l.state, LinkState::Failed(_))));
    for m in &ms {
        m.unlink(1).unwrap();
    }
    assert!(s.list_links().is_empty());
    assert_eq!(s.link_state(3), LinkState::Unlinked);
    for m in &ms {
        m.finalize();
    }
}

#[test]
fn in_flight_counts_a_running_tcp_pull() {
    const BLOCKS: i64 = 64;
    const BLOCK: i64 = 1 << 20; // 2 tensors x 64 MiB
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let p = Instance::new(1, 100).unwrap();
    init(
        &p,
        &[
            ("llm.ListenIpInfo", listen.as_str()),
            ("llmdd.SameHost", "off"),
        ],
    );
    let d = Instance::new(2, 200).unwrap();
    init(&d, &[("llmdd.SameHost", "off")]);
    let (ps, ds) = (p.session().unwrap(), d.session().unwrap());
    let len = (BLOCKS * BLOCK) as usize;
    let mut src: Vec<Vec<u8>> = (0..2).map(|t| vec![t as u8 + 1; len]).collect();
    let mut dst: Vec<Vec<u8>> = (0..2).map(|_| vec![0u8; len]).collect();
    let key = CacheKey::Blocks {
        cluster_id: 100,
        model_id: 0,
    };
    let sa: Vec<u64> = src.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    let da: Vec<u64> = dst.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    ps.caches()
        .register_blocks_cache(&desc(BLOCKS, BLOCK), &sa, Some(key), None)
        .unwrap();
    let dc = ds
        .caches()
        .register_blocks_cache(&desc(BLOCKS, BLOCK), &da, None, None)
        .unwrap();
    let r = d.link_clusters(&[cluster(100, port)], 5000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let all: Vec<u64> = (0..BLOCKS as u64).collect();
    let stop = AtomicBool::new(false);
    let mut pulls = 0u64;
    let mut seen = false;
    std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) && n < 200 {
                ds.caches()
                    .pull_blocks(&key, dc.id, &all, &all, &LayerSel::default())
                    .unwrap();
                n += 1;
            }
            n
        });
        let t0 = Instant::now();
        while !seen && t0.elapsed() < Duration::from_secs(20) && !h.is_finished() {
            seen = ds.link_stats(100).unwrap().1.in_flight == 1;
        }
        stop.store(true, Ordering::Relaxed);
        pulls = h.join().unwrap();
    });
    assert!(seen, "no pull seen in flight in {pulls} pulls");
    assert!(dst[1].iter().all(|&b| b == 2));
    let (info, st) = ds.link_stats(100).unwrap();
    assert_eq!(info.path, Path::Tcp);
    assert_eq!(st.in_flight, 0);
    let pull = Direction::Pull as usize;
    assert_eq!(st.ops[pull][Path::Tcp as usize], pulls);
    assert_eq!(st.bytes[pull][Path::Tcp as usize], pulls * 2 * len as u64);
    // The server served every byte, over several striped requests per pull.
    let (_, served) = ps.link_stats(200).unwrap();
    assert_eq!(served.served_bytes[pull], pulls * 2 * len as u64);
    assert!(served.served_requests[pull] >= pulls);
    // An unknown cluster has no stats.
    assert_eq!(ds.link_stats(999).unwrap_err().status, Status::NotYetLink);
    d.finalize();
    p.finalize();
}

#[test]
fn a_pair_linked_both_ways_adds_up_both_links() {
    let (pa, pb) = (free_port(), free_port());
    let (la, lb) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    let a = Instance::new(1, 10).unwrap();
    let b = Instance::new(1, 20).unwrap();
    init(
        &a,
        &[("llm.ListenIpInfo", la.as_str()), ("llmdd.SameHost", "off")],
    );
    init(
        &b,
        &[("llm.ListenIpInfo", lb.as_str()), ("llmdd.SameHost", "off")],
    );
    let (sa, sb) = (a.session().unwrap(), b.session().unwrap());
    const N: i64 = 4;
    const B: i64 = 4096;
    let mut mem: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8; (N * B) as usize]).collect();
    let ad: Vec<u64> = mem.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    for (s, own, addrs) in [(&sa, 10u64, &ad[0..2]), (&sb, 20, &ad[2..4])] {
        let key = CacheKey::Blocks {
            cluster_id: own,
            model_id: 0,
        };
        s.caches()
            .register_blocks_cache(&desc(N, B), addrs, Some(key), None)
            .unwrap();
    }
    let da = sa
        .caches()
        .register_blocks_cache(&desc(N, B), &ad[4..6], None, None)
        .unwrap();
    let db = sb
        .caches()
        .register_blocks_cache(&desc(N, B), &ad[6..8], None, None)
        .unwrap();
    assert!(a.link_clusters(&[cluster(20, pb)], 5000).unwrap()[0].is_ok());
    assert!(b.link_clusters(&[cluster(10, pa)], 5000).unwrap()[0].is_ok());
    let key = |c| CacheKey::Blocks {
        cluster_id: c,
        model_id: 0,
    };
    let sel = LayerSel::default();
    sa.caches()
        .pull_blocks(&key(20), da.id, &[0, 1], &[0, 1], &sel)
        .unwrap();
    for _ in 0..3 {
        sb.caches()
            .pull_blocks(&key(10), db.id, &[2], &[3], &sel)
            .unwrap();
    }
    let pull = Direction::Pull as usize;
    let tcp = Path::Tcp as usize;
    // A: its own pull on the link it dialled, B's three on the one it accepted.
    let (info, st) = sa.link_stats(20).unwrap();
    assert!(info.dialed && info.state == LinkState::Linked);
    assert_eq!(st.ops[pull][tcp], 1);
    assert_eq!(st.bytes[pull][tcp], 2 * 2 * B as u64);
    assert_eq!(st.latency[pull].count, 1);
    assert_eq!(st.served_requests[pull], 3);
    assert_eq!(st.served_bytes[pull], 3 * 2 * B as u64);
    let (_, st) = sb.link_stats(10).unwrap();
    assert_eq!((st.ops[pull][tcp], st.served_requests[pull]), (3, 1));
    assert_eq!(sa.list_links().len(), 1);
    // Reset zeroes both links.
    sa.reset_link_stats(Some(20)).unwrap();
    let (_, st) = sa.link_stats(20).unwrap();
    assert_eq!((st.ops[pull][tcp], st.served_requests[pull]), (0, 0));
    a.finalize();
    b.finalize();
}

#[test]
fn a_link_from_the_peer_supersedes_a_failed_attempt() {
    let (pa, closed) = (free_port(), free_port());
    let la = format!("127.0.0.1:{pa}");
    let a = Instance::new(1, 30).unwrap();
    init(&a, &[("llm.ListenIpInfo", la.as_str())]);
    let b = Instance::new(2, 40).unwrap();
    init(&b, &[]);
    let sa = a.session().unwrap();
    // A cannot reach B (nothing listens there): FAILED, with the reason.
    let r = a.link_clusters(&[cluster(40, closed)], 500).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().status, Status::LinkFailed);
    match sa.link_state(40) {
        LinkState::Failed(why) => assert!(why.starts_with("link_clusters failed: "), "{why}"),
        s => panic!("{s:?}"),
    }
    // B links to A instead: LINKED on A (accepted), and once B unlinks,
    // UNLINKED, not the old failure.
    assert!(b.link_clusters(&[cluster(30, pa)], 5000).unwrap()[0].is_ok());
    assert_eq!(sa.link_state(40), LinkState::Linked);
    let l = sa.list_links();
    assert_eq!((l.len(), l[0].dialed), (1, false));
    assert!(b.unlink_clusters(&[cluster(30, pa)], 5000, false).unwrap()[0].is_ok());
    wait_for("A drops the link", Duration::from_secs(5), || {
        sa.link_state(40) == LinkState::Unlinked
    });
    assert!(sa.list_links().is_empty());
    a.finalize();
    b.finalize();
}
