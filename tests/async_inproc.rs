//! transfer_cache_async between two instances in one process over 127.0.0.1
//! (in-process memcpy and TCP): bytes land where the spec says, validation
//! happens before anything starts, failures and finalize end tasks.

mod common;

use common::free_port;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use llmdd::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement};
use llmdd::datadist::async_transfer::{AsyncBlocks, AsyncConfig, AsyncDst};
use llmdd::datadist::async_transfer::{ConfigResult, SyncFn};
use llmdd::datadist::options::collect;
use llmdd::datadist::{ClusterInfo, Instance, IpInfo};
use llmdd::Status;

const P: u64 = 100; // sender (client)
const D: u64 = 200; // receiver (server)
const NT: u32 = 8; // 4 layers
const BLK: usize = 1024;
const NB: usize = 8;

fn desc(placement: Placement, shape: &[i64]) -> CacheDesc {
    CacheDesc {
        placement,
        num_tensors: NT,
        data_type: DataType::Uint8,
        shape: shape.to_vec(),
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

/// D listens, P links to it (flow 5: the pushing prompt is the client).
fn pair(extra: &[(&str, &str)]) -> (Instance, Instance, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let base = [("llm.DeviceId", "0"), ("llm.EnableCacheManager", "1")];
    let d = Instance::new(2, D).unwrap();
    let mut o: Vec<(&str, &str)> = base.to_vec();
    o.push(("llm.ListenIpInfo", &listen));
    o.extend_from_slice(extra);
    d.init(&collect(o).unwrap()).unwrap();
    let p = Instance::new(1, P).unwrap();
    let mut o: Vec<(&str, &str)> = base.to_vec();
    o.extend_from_slice(extra);
    p.init(&collect(o).unwrap()).unwrap();
    (p, d, port)
}

fn link(p: &Instance, port: u16) {
    let c = ClusterInfo {
        remote_cluster_id: D,
        local_ip_infos: vec![],
        remote_ip_infos: vec![IpInfo {
            ip: "127.0.0.1".into(),
            port,
        }],
    };
    let r = p.link_clusters(&[c], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
}

fn tensors(seed: u8, bytes: usize) -> Vec<Vec<u8>> {
    (0..NT as usize)
        .map(|t| {
            (0..bytes)
                .map(|i| (i as u8).wrapping_mul(31) ^ (t as u8) ^ seed)
                .collect()
        })
        .collect()
}

fn addrs(v: &mut [Vec<u8>]) -> Vec<u64> {
    v.iter_mut().map(|t| t.as_mut_ptr() as u64).collect()
}

fn always() -> SyncFn {
    Box::new(|_| true)
}

fn sel(src: Option<(u32, u32)>, dst: Option<(u32, u32)>) -> LayerSel {
    LayerSel {
        src,
        dst,
        per_layer: 2,
    }
}

fn by_key(key: CacheKey, src: Option<(u32, u32)>, dst: Option<(u32, u32)>) -> AsyncConfig {
    AsyncConfig {
        dst: AsyncDst::Key(key),
        layers: sel(src, dst),
        src_batch_index: 0,
    }
}

const BKEY: CacheKey = CacheKey::Blocks {
    cluster_id: D,
    model_id: 0,
};

fn blocks_by_key(extra: &[(&str, &str)]) {
    let mut all = extra.to_vec();
    all.push(("llm.EnableRemoteCacheAccessible", "1"));
    let (p, d, port) = pair(&all);
    let (ps, ds) = (p.session().unwrap(), d.session().unwrap());
    let mut src = tensors(7, NB * BLK);
    let mut dst = tensors(0, NB * BLK);
    dst.iter_mut().for_each(|t| t.fill(0));
    let sc = ps
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, &[NB as i64, BLK as i64]),
            &addrs(&mut src),
            None,
            None,
        )
        .unwrap();
    ds.caches()
        .register_blocks_cache(
            &desc(Placement::Device, &[NB as i64, BLK as i64]),
            &addrs(&mut dst),
            Some(BKEY),
            None,
        )
        .unwrap();
    link(&p, port);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s2 = seen.clone();
    let sync: SyncFn = Box::new(move |l| {
        s2.lock().unwrap().push(l);
        true
    });
    // Two configs: src layers [1,3) -> dst [2,4), and src [0,1) -> dst [0,1).
    let cfgs = [
        by_key(BKEY, Some((1, 3)), Some((2, 4))),
        by_key(BKEY, Some((0, 1)), Some((0, 1))),
    ];
    let (sb, db) = ([1u64, 2, 5], [0u64, 6, 7]);
    let t = ps
        .caches()
        .transfer_cache_async(
            sc.id,
            &cfgs,
            AsyncBlocks {
                src: &sb,
                dst: &db,
                dst_block_size: 0,
            },
            sync,
        )
        .unwrap();
    t.synchronize(None).unwrap();
    assert_eq!(
        t.results(None).unwrap(),
        vec![ConfigResult::Done(Status::Success); 2]
    );
    assert_eq!(*seen.lock().unwrap(), vec![0, 1, 2]);
    // Expected image: src tensor ts -> dst tensor td, blocks sb[j] -> db[j].
    let mut want = vec![vec![0u8; NB * BLK]; NT as usize];
    for (ts, td) in [(2, 4), (3, 5), (4, 6), (5, 7), (0, 0), (1, 1)] {
        for (&s, &d) in sb.iter().zip(&db) {
            let (s, d) = (s as usize * BLK, d as usize * BLK);
            want[td][d..d + BLK].copy_from_slice(&src[ts][s..s + BLK]);
        }
    }
    assert!(dst == want, "destination differs from the model");
    // Each layer of each config is one push of the link (per-link statistics).
    let (_, st) = ps.link_stats(D).unwrap();
    let push = llmdd::stats::Direction::Push as usize;
    assert_eq!(st.ops[push].iter().sum::<u64>(), 3);
    assert_eq!(st.bytes[push].iter().sum::<u64>(), 3 * 2 * 3 * BLK as u64);
    assert_eq!((st.failed(), st.latency[push].count), (0, 3));
    t.cancel_and_wait();
    p.finalize();
    d.finalize();
}

#[test]
fn async_blocks_by_key_same_process() {
    blocks_by_key(&[]);
}

#[test]
fn async_blocks_by_key_tcp() {
    blocks_by_key(&[("llmdd.SameHost", "off")]);
}

#[test]
fn async_by_addrs_contiguous_and_validation() {
    let (p, d, port) = pair(&[]);
    let (ps, ds) = (p.session().unwrap(), d.session().unwrap());
    const S: usize = 512;
    let mut src = tensors(3, 2 * S); // 2 slots
    let mut dst = tensors(0, 3 * S); // 3 slots
    dst.iter_mut().for_each(|t| t.fill(0));
    let sc = ps
        .caches()
        .register_cache(
            &desc(Placement::Device, &[2, S as i64]),
            &addrs(&mut src),
            &[],
            None,
            llmdd::cache::types::CacheKind::Batch,
        )
        .unwrap();
    let da = addrs(&mut dst);
    ds.caches()
        .register_cache(
            &desc(Placement::Device, &[3, S as i64]),
            &da,
            &[],
            None,
            llmdd::cache::types::CacheKind::Batch,
        )
        .unwrap();
    link(&p, port);
    // src layers [1,3) of slot 1 -> dst tensors of layers 0 and 3, slot 2.
    let dst_addrs: Vec<u64> = [0usize, 1, 6, 7]
        .iter()
        .map(|&t| da[t] + 2 * S as u64)
        .collect();
    let cfg = AsyncConfig {
        dst: AsyncDst::Addrs {
            cluster_id: D,
            addrs: dst_addrs.clone(),
        },
        layers: sel(Some((1, 3)), None),
        src_batch_index: 1,
    };
    let t = ps
        .caches()
        .transfer_cache_async(
            sc.id,
            std::slice::from_ref(&cfg),
            AsyncBlocks::default(),
            always(),
        )
        .unwrap();
    t.synchronize(None).unwrap();
    let mut want = vec![vec![0u8; 3 * S]; NT as usize];
    for (ts, td) in [(2, 0), (3, 1), (4, 6), (5, 7)] {
        want[td][2 * S..].copy_from_slice(&src[ts][S..]);
    }
    assert!(dst == want);

    let bad = |c: AsyncConfig, b: AsyncBlocks<'_>, st: Status, msg: &str| {
        let e = ps
            .caches()
            .transfer_cache_async(sc.id, &[c], b, always())
            .err()
            .expect("must fail");
        assert_eq!(e.status, st, "{}", e.message);
        assert!(e.message.contains(msg), "{:?} lacks {msg:?}", e.message);
    };
    let none = AsyncBlocks::default();
    // A destination one byte past the peer's tensor.
    let mut c = cfg.clone();
    if let AsyncDst::Addrs { addrs, .. } = &mut c.dst {
        addrs[3] += 1;
    }
    bad(
        c,
        none,
        Status::ParamInvalid,
        "outside every cache cluster 200 registered",
    );
    let mut c = cfg.clone();
    if let AsyncDst::Addrs { addrs, .. } = &mut c.dst {
        addrs.pop();
    }
    bad(c, none, Status::ParamInvalid, "num_dst_addrs = 3");
    let mut c = cfg.clone();
    c.dst = AsyncDst::Addrs {
        cluster_id: 999,
        addrs: dst_addrs.clone(),
    };
    bad(c, none, Status::NotYetLink, "no link to cluster 999");
    bad(
        by_key(BKEY, None, None),
        none,
        Status::ParamInvalid,
        "needs remote-cache-accessible mode",
    );
    let mut c = cfg.clone();
    c.src_batch_index = 2;
    bad(c, none, Status::ParamInvalid, "src_batch_index = 2");
    let mut c = cfg.clone();
    c.layers.src = Some((3, 5));
    bad(
        c,
        none,
        Status::ParamInvalid,
        "exceeds the source cache's 4 layers",
    );
    let e = ps
        .caches()
        .transfer_cache_async(99, std::slice::from_ref(&cfg), none, always())
        .err()
        .unwrap();
    assert_eq!(e.status, Status::KvCacheNotExist);
    // Nothing moved by the failed calls.
    assert!(dst == want);
    t.cancel_and_wait();
    p.finalize();
    d.finalize();
}

/// A synchronizer that blocks until the test releases each layer.
fn gated() -> (SyncFn, mpsc::Sender<bool>, Arc<AtomicU32>) {
    let (tx, rx) = mpsc::channel::<bool>();
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let f: SyncFn = Box::new(move |_| {
        c2.fetch_add(1, Ordering::SeqCst);
        rx.recv().unwrap_or(false)
    });
    (f, tx, calls)
}

/// Waits until `dst` equals `want` (written by another thread; read volatile).
fn wait_bytes(dst: &[u8], want: &[u8]) {
    let t0 = std::time::Instant::now();
    loop {
        let same = dst
            .iter()
            .zip(want)
            .all(|(d, w)| unsafe { std::ptr::read_volatile(d) } == *w);
        if same {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "bytes never arrived"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_calls(calls: &AtomicU32, n: u32) {
    let t0 = std::time::Instant::now();
    while calls.load(Ordering::SeqCst) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "callback not called"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn async_unlink_mid_task_fails_the_next_layer() {
    let (p, d, port) = pair(&[
        ("llm.EnableRemoteCacheAccessible", "1"),
        ("llmdd.SameHost", "off"),
    ]);
    let (ps, ds) = (p.session().unwrap(), d.session().unwrap());
    let mut src = tensors(9, NB * BLK);
    let mut dst = tensors(0, NB * BLK);
    dst.iter_mut().for_each(|t| t.fill(0));
    let sc = ps
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, &[NB as i64, BLK as i64]),
            &addrs(&mut src),
            None,
            None,
        )
        .unwrap();
    ds.caches()
        .register_blocks_cache(
            &desc(Placement::Device, &[NB as i64, BLK as i64]),
            &addrs(&mut dst),
            Some(BKEY),
            None,
        )
        .unwrap();
    link(&p, port);
    let (sync, release, calls) = gated();
    let b = [3u64];
    let t = ps
        .caches()
        .transfer_cache_async(
            sc.id,
            &[by_key(BKEY, None, None)],
            AsyncBlocks {
                src: &b,
                dst: &b,
                dst_block_size: 0,
            },
            sync,
        )
        .unwrap();
    release.send(true).unwrap(); // layer 0 moves
    wait_calls(&calls, 2); // the callback for layer 1 runs, so layer 0 was handed over
    wait_bytes(&dst[1][3 * BLK..4 * BLK], &src[1][3 * BLK..4 * BLK]);
    let r = t.synchronize(Some(Duration::from_millis(20))).unwrap_err();
    assert_eq!(r.status, Status::Timeout);
    assert!(p
        .unlink_clusters(
            &[ClusterInfo {
                remote_cluster_id: D,
                local_ip_infos: vec![],
                remote_ip_infos: vec![]
            }],
            3000,
            true
        )
        .unwrap()[0]
        .is_ok());
    release.send(true).unwrap(); // layer 1: the link is gone
    let e = t.synchronize(None).unwrap_err();
    assert_eq!(e.status, Status::NotYetLink, "{}", e.message);
    assert!(e.message.contains("config 0, layer 1"), "{}", e.message);
    assert_eq!(
        t.results(None).unwrap(),
        vec![ConfigResult::Done(Status::NotYetLink)]
    );
    drop(release);
    t.cancel_and_wait();
    // The callback for layer 2 may overlap the failing transfer of layer 1,
    // but none comes after it.
    assert!(
        calls.load(Ordering::SeqCst) <= 3,
        "callback after the failure"
    );
    assert_eq!(&dst[0][3 * BLK..4 * BLK], &src[0][3 * BLK..4 * BLK]);
    assert!(
        dst[2].iter().all(|&x| x == 0),
        "layer 1 must not have moved"
    );
    p.finalize();
    d.finalize();
}

#[test]
fn async_finalize_cancels_a_running_task() {
    let (p, d, port) = pair(&[("llm.EnableRemoteCacheAccessible", "1")]);
    let (ps, ds) = (p.session().unwrap(), d.session().unwrap());
    let mut src = tensors(5, NB * BLK);
    let mut dst = tensors(0, NB * BLK);
    dst.iter_mut().for_each(|t| t.fill(0));
    let sc = ps
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, &[NB as i64, BLK as i64]),
            &addrs(&mut src),
            None,
            None,
        )
        .unwrap();
    ds.caches()
        .register_blocks_cache(
            &desc(Placement::Device, &[NB as i64, BLK as i64]),
            &addrs(&mut dst),
            Some(BKEY),
            None,
        )
        .unwrap();
    link(&p, port);
    let (sync, release, calls) = gated();
    let b = [0u64, 1];
    let t = ps
        .caches()
        .transfer_cache_async(
            sc.id,
            &[by_key(BKEY, None, None)],
            AsyncBlocks {
                src: &b,
                dst: &b,
                dst_block_size: 0,
            },
            sync,
        )
        .unwrap();
    release.send(true).unwrap();
    wait_calls(&calls, 2);
    wait_bytes(&dst[1][..2 * BLK], &src[1][..2 * BLK]);
    // finalize waits for the running callback (layer 1), which we release later.
    let rel = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        let _ = release.send(true);
        release
    });
    let t0 = std::time::Instant::now();
    p.finalize();
    assert!(
        t0.elapsed() >= Duration::from_millis(40),
        "finalize must wait for the running callback"
    );
    drop(rel.join().unwrap());
    assert_eq!(ps.tasks().running(), 0, "finalize joined the task threads");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "no callback after finalize"
    );
    let e = t.synchronize(Some(Duration::ZERO)).unwrap_err();
    assert_eq!(e.status, Status::Failed);
    assert_eq!(
        t.results(None).unwrap(),
        vec![ConfigResult::Done(Status::Failed)]
    );
    assert!(
        dst[2].iter().all(|&x| x == 0),
        "layer 1 must not have moved"
    );
    assert_eq!(&dst[1][..2 * BLK], &src[1][..2 * BLK]);
    d.finalize();
}
