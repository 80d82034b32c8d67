//! The acl backend end to end inside one process: two instances (prompt server
//! and decoder client) on the simulated Ascend runtime (cpp_tests/sim_ascend,
//! test infrastructure), selected with `llmdd.AscendLibDir`. Device memory comes
//! from the simulator's aclrtMalloc. The two-process scenarios and the failure
//! injection that needs per-process environment live in cpp_tests/test_acl_*.c.

use llmdd::cache::types::{CacheKey, LayerSel, Placement};
use llmdd::datadist::options::collect;
use llmdd::datadist::Instance;
use llmdd::datadist::MemStatus;
use llmdd::testing::acl::runtime::MemcpyKind;
use llmdd::Status;

mod common;

use common::acl::{desc, opts, pattern, Tensors};
use common::{cluster, free_port};

const BLK: usize = 4096;

#[test]
fn pull_and_push_blocks_over_hccl() {
    let Some(dir) = common::sim::dir("full") else {
        return;
    };
    let d = dir.to_str().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let ra = [("llm.EnableRemoteCacheAccessible", "1")];
    let p = Instance::new(1, 100).unwrap();
    let mut po = opts(d, "0", "acl", &ra);
    po.push(("llm.ListenIpInfo", listen.as_str()));
    p.init(&collect(po).unwrap()).unwrap();
    let q = Instance::new(2, 200).unwrap();
    q.init(&collect(opts(d, "1", "auto", &ra)).unwrap())
        .unwrap();
    let ps = p.session().unwrap();
    let qs = q.session().unwrap();
    assert!(
        llmdd::testing::acl::of(ps.device()).is_some()
            && llmdd::testing::acl::of(qs.device()).is_some()
    );

    let src = Tensors::new(&dir, 0, Placement::Device, 4, 16 * BLK, 9);
    let dst = Tensors::new(&dir, 1, Placement::Device, 4, 8 * BLK, 0);
    let pc = ps
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, 4, &[16, BLK as i64]),
            &src.addrs,
            Some(CacheKey::Blocks {
                cluster_id: 100,
                model_id: 0,
            }),
            None,
        )
        .unwrap();
    let dc = qs
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, 4, &[8, BLK as i64]),
            &dst.addrs,
            None,
            None,
        )
        .unwrap();
    let r = q.link_clusters(&[cluster(100, port)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert!(llmdd::testing::acl::hccl_link(qs.link(100).unwrap().data_path()).is_some());

    // Pull blocks {1,2,15} → {0,5,7}, all layers.
    let key = CacheKey::Blocks {
        cluster_id: 100,
        model_id: 0,
    };
    qs.caches()
        .pull_blocks(&key, dc.id, &[1, 2, 15], &[0, 5, 7], &LayerSel::default())
        .unwrap();
    for t in 0..4 {
        let got = dst.read(t);
        let want = pattern(9, t, 16 * BLK);
        for (s, d) in [(1, 0), (2, 5), (15, 7)] {
            assert!(
                got[d * BLK..(d + 1) * BLK] == want[s * BLK..(s + 1) * BLK],
                "tensor {t} block {d}"
            );
        }
        assert!(got[BLK..2 * BLK].iter().all(|&b| b == 0), "untouched block");
    }

    // Push block 7 back into the prompt's block 3 (remote-accessible mode).
    let idx = CacheKey::IdIndex {
        cluster_id: 100,
        cache_id: pc.id,
        batch_index: 0,
    };
    qs.caches()
        .push_blocks(&idx, dc.id, &[7], &[3], &LayerSel::default())
        .unwrap();
    for t in 0..4 {
        let got = src.read(t);
        let want = pattern(9, t, 16 * BLK);
        assert!(
            got[3 * BLK..4 * BLK] == want[15 * BLK..16 * BLK],
            "pushed tensor {t}"
        );
    }

    // Remote-accessible registration after the link is refused; a local-only
    // one is accepted, but not usable on the existing link.
    let late = Tensors::new(&dir, 1, Placement::Device, 4, 8 * BLK, 0);
    let e = qs
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, 4, &[8, BLK as i64]),
            &late.addrs,
            None,
            None,
        )
        .err()
        .expect("refused");
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(e.message.contains("before link_clusters"), "{e}");
    let lc = qs
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, 4, &[8, BLK as i64]),
            &late.addrs,
            None,
            Some(false),
        )
        .unwrap();
    let e = qs
        .caches()
        .pull_blocks(&key, lc.id, &[1], &[0], &LayerSel::default())
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(e.message.contains("registered after the link"), "{e}");
    // Local copies work on it (aclrtMemcpyAsync D2D).
    qs.caches().copy_blocks(dc.id, &[(7, 1)]).unwrap();
    assert!(dst.read(2)[BLK..2 * BLK] == dst.read(2)[7 * BLK..8 * BLK]);

    let r = q
        .unlink_clusters(&[cluster(100, port)], 3000, false)
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    // After relinking the late cache is bound too.
    let r = q.link_clusters(&[cluster(100, port)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    qs.caches()
        .pull_blocks(&key, lc.id, &[4], &[2], &LayerSel::default())
        .unwrap();
    assert!(late.read(1)[2 * BLK..3 * BLK] == pattern(9, 1, 16 * BLK)[4 * BLK..5 * BLK]);
    q.finalize();
    p.finalize();
}

#[test]
fn pools_late_memory_and_mixed_backends() {
    let Some(dir) = common::sim::dir("full") else {
        return;
    };
    let d = dir.to_str().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let p = Instance::new(1, 300).unwrap();
    let mut po = opts(
        d,
        "0",
        "acl",
        &[(
            "llm.MemPoolConfig",
            r#"{"memory_size":1048576,"page_shift":12}"#,
        )],
    );
    po.push(("llm.ListenIpInfo", listen.as_str()));
    p.init(&collect(po).unwrap()).unwrap();
    let ps = p.session().unwrap();
    let pool = ps.device_pool().unwrap();
    assert!(pool.fd().is_none(), "an acl pool is not a memfd");
    let c = ps
        .caches()
        .allocate_blocks_cache(&desc(Placement::Device, 2, &[4, 4096]), None)
        .unwrap();
    assert!(pool.contains(c.addrs[0], 4 * 4096));
    let e = ps
        .caches()
        .allocate_blocks_cache(&desc(Placement::Device, 2, &[400, 4096]), None)
        .err()
        .expect("pool exhausted");
    assert_eq!(e.status, Status::OutOfMemory);

    // A host-backend client cannot link to an acl server.
    let q = Instance::new(2, 400).unwrap();
    q.init(
        &collect([
            ("llm.DeviceId", "0"),
            ("llm.EnableCacheManager", "1"),
            ("llmdd.Backend", "host"),
        ])
        .unwrap(),
    )
    .unwrap();
    let r = q.link_clusters(&[cluster(300, port)], 3000).unwrap();
    let e = r[0].as_ref().unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(e.message.contains("different backends"), "{e}");
    q.finalize();

    // An acl client (request/response mode) links; memory the prompt adds
    // afterwards is reachable only if it lives in the (bound) pool.
    q.init(&collect(opts(d, "1", "acl", &[])).unwrap()).unwrap();
    let qs = q.session().unwrap();
    let dst = Tensors::new(&dir, 1, Placement::Device, 2, 4 * 4096, 0);
    let dc = qs
        .caches()
        .register_cache(
            &desc(Placement::Device, 2, &[4, 4096]),
            &dst.addrs,
            &[],
            None,
            llmdd::cache::types::CacheKind::Batch,
        )
        .unwrap();
    let r = q.link_clusters(&[cluster(300, port)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let late = Tensors::new(&dir, 0, Placement::Device, 2, 4 * 4096, 5);
    let lc = ps
        .caches()
        .register_cache(
            &desc(Placement::Device, 2, &[4, 4096]),
            &late.addrs,
            &[],
            Some(false),
            llmdd::cache::types::CacheKind::Batch,
        )
        .unwrap();
    let by_id = |id| CacheKey::IdIndex {
        cluster_id: 300,
        cache_id: id,
        batch_index: 1,
    };
    let e = qs
        .caches()
        .pull_cache(&by_id(lc.id), dc.id, 0, -1, &LayerSel::default())
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(e.message.contains("registered after the link"), "{e}");
    let ac = ps
        .caches()
        .allocate_cache(&desc(Placement::Device, 2, &[4, 4096]), &[])
        .unwrap();
    let fill = pattern(3, 0, 4096);
    llmdd::testing::acl::of(ps.device())
        .unwrap()
        .context()
        .memcpy_sync(
            ac.addrs[1] + 4096,
            fill.as_ptr() as u64,
            4096,
            MemcpyKind::HostToDevice,
        )
        .unwrap();
    qs.caches()
        .pull_cache(&by_id(ac.id), dc.id, 2, -1, &LayerSel::default())
        .unwrap();
    assert!(dst.read(1)[2 * 4096..3 * 4096] == fill[..]);
    q.finalize();
    p.finalize();
}

#[test]
fn backend_selection() {
    let empty = common::sim::empty_dir("sel");
    let e = empty.to_str().unwrap();
    // acl without the runtime: FEATURE_NOT_ENABLED naming the paths tried.
    let i = Instance::new(1, 1).unwrap();
    let err = i
        .init(&collect(opts(e, "0", "acl", &[])).unwrap())
        .unwrap_err();
    assert_eq!(err.status, Status::FeatureNotEnabled);
    assert!(err.message.contains("libascendcl.so"), "{err}");
    assert!(err.message.contains(e), "{err}");
    // auto falls back to host.
    i.init(&collect(opts(e, "0", "auto", &[])).unwrap())
        .unwrap();
    assert!(llmdd::testing::acl::of(i.session().unwrap().device()).is_none());
    i.finalize();
    let Some(noget) = common::sim::dir("noget") else {
        return;
    };
    let n = noget.to_str().unwrap();
    let err = i
        .init(&collect(opts(n, "0", "acl", &[])).unwrap())
        .unwrap_err();
    assert_eq!(err.status, Status::FeatureNotEnabled);
    assert!(err.message.contains("HcclBatchGet"), "{err}");
    i.init(&collect(opts(n, "0", "auto", &[])).unwrap())
        .unwrap();
    assert!(llmdd::testing::acl::of(i.session().unwrap().device()).is_none());
    i.finalize();
    // A bad device id is the mapped ACL status with acl, a fallback with auto.
    let Some(full) = common::sim::dir("full") else {
        return;
    };
    let f = full.to_str().unwrap();
    let mut o = opts(f, "0", "acl", &[]);
    o[0] = ("llm.DeviceId", "99");
    let err = i.init(&collect(o.clone()).unwrap()).unwrap_err();
    assert_eq!(err.status, Status::ParamInvalid, "{err}");
    assert!(err.message.contains("aclrtSetDevice"), "{err}");
    o[2] = ("llmdd.Backend", "auto");
    assert_eq!(o[2].0, "llmdd.Backend");
    i.init(&collect(o).unwrap()).unwrap();
    assert!(llmdd::testing::acl::of(i.session().unwrap().device()).is_none());
    i.finalize();
    // A malformed llm.LocalCommRes is refused once the runtime is up.
    let bad = opts(
        f,
        "0",
        "acl",
        &[("llm.LocalCommRes", r#"{"version":"1.0","server_list":[]}"#)],
    );
    let err = i.init(&collect(bad).unwrap()).unwrap_err();
    assert_eq!(err.status, Status::ParamInvalid, "{err}");
}

/// A rank table on 127.0.0.1 for the acl backend: rank r is physical device r
/// at its simulated NIC address (its HCCL endpoint, `device_port` `device[r]`),
/// and its TCP control endpoint is `host[r]` (`host_port`).
fn acl_rank_table(host: &[u16], device: &[u16]) -> String {
    let devs: Vec<String> = host
        .iter()
        .zip(device)
        .enumerate()
        .map(|(r, (h, d))| {
            format!(
                r#"{{"device_id":"{r}","device_ip":"{}","rank_id":"{r}","host_port":"{h}","device_port":"{d}"}}"#,
                common::sim::nic_ip(r as u32)
            )
        })
        .collect();
    format!(
        r#"{{"version":"1.0","server_count":"1","status":"completed","server_list":[{{"server_id":"node0","host_ip":"127.0.0.1","device":[{}]}}]}}"#,
        devs.join(",")
    )
}

fn wait_comm(i: &Instance, comm: u64, within: std::time::Duration) -> (MemStatus, String) {
    let t0 = std::time::Instant::now();
    loop {
        let s = i.query_register_mem_status(comm).unwrap();
        if s.0 != MemStatus::Preparing || t0.elapsed() > within {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Three instances link by rank table on the acl backend: each builds ONE
/// communicator from the user's table (its rank, the table's device ports),
/// every link of the comm uses it with the peer's rank, and every member
/// pulls from every other byte-exact. A table HCCL refuses (a shared
/// device_ip) fails the comm with the vendor's message; host_port is required.
#[test]
fn rank_table_comm_shares_one_communicator() {
    let Some(dir) = common::sim::dir("full") else {
        return;
    };
    let d = dir.to_str().unwrap();
    const N: usize = 3;
    const NB: usize = 8;
    let clusters: [u64; N] = [11, 12, 13];
    let ranks: Vec<(u64, u32)> = clusters
        .iter()
        .enumerate()
        .map(|(r, &c)| (c, r as u32))
        .collect();
    let insts: Vec<Instance> = clusters
        .iter()
        .map(|&c| {
            let i = Instance::new(1, c).unwrap();
            let dev = ["0", "1", "2"][(c - 11) as usize];
            i.init(&collect(opts(d, dev, "acl", &[("llm.LinkTotalTime", "20")])).unwrap())
                .unwrap();
            assert!(llmdd::testing::acl::of(i.session().unwrap().device()).is_some());
            i
        })
        .collect();
    let mut srcs = Vec::new();
    let mut dsts = Vec::new();
    for (k, i) in insts.iter().enumerate() {
        let s = i.session().unwrap();
        let src = Tensors::new(&dir, k as i32, Placement::Device, 2, NB * BLK, 20 + k as u8);
        let dst = Tensors::new(&dir, k as i32, Placement::Device, 2, NB * BLK, 0);
        s.caches()
            .register_blocks_cache(
                &desc(Placement::Device, 2, &[NB as i64, BLK as i64]),
                &src.addrs,
                Some(CacheKey::Blocks {
                    cluster_id: clusters[k],
                    model_id: 0,
                }),
                None,
            )
            .unwrap();
        let dc = s
            .caches()
            .register_blocks_cache(
                &desc(Placement::Device, 2, &[NB as i64, BLK as i64]),
                &dst.addrs,
                None,
                None,
            )
            .unwrap();
        srcs.push(src);
        dsts.push((dst, dc.id));
    }

    // host_port is required on acl (no fallback to device_port).
    let no_host = acl_rank_table(&[1, 2, 3], &[4, 5, 6]).replace(r#""host_port":"2","#, "");
    let e = insts[0].link("kv", &ranks, &no_host).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(
        e.message.contains("rank 1 has no port")
            && e.message.contains("needs the device's host_port"),
        "{}",
        e.message
    );

    let host: Vec<u16> = (0..N).map(|_| free_port()).collect();
    let dev: Vec<u16> = (0..N).map(|_| free_port()).collect();
    let table = acl_rank_table(&host, &dev);
    let ids: Vec<u64> = std::thread::scope(|sc| {
        let hs: Vec<_> = insts
            .iter()
            .map(|i| sc.spawn(|| i.link("kv", &ranks, &table).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, i) in insts.iter().enumerate() {
        let st = wait_comm(i, ids[k], std::time::Duration::from_secs(20));
        assert_eq!(st.0, MemStatus::Ok, "member {k}: {}", st.1);
    }
    for (k, i) in insts.iter().enumerate() {
        let s = i.session().unwrap();
        let peer = clusters[(k + 1) % N];
        let comm = s.comm_of(peer).unwrap();
        let shared = comm.hccl().expect("one communicator per comm");
        assert_eq!(shared.rank(), k as u32, "built with this member's rank");
        for (r, &c) in clusters.iter().enumerate() {
            if r == k {
                continue;
            }
            let l = s.link(c).unwrap();
            let h = llmdd::testing::acl::hccl_link(l.data_path()).unwrap();
            assert!(
                h.uses(&shared),
                "member {k}'s link to rank {r} uses the comm's communicator"
            );
            assert_eq!(h.remote_rank(), r as u32);
        }
    }
    // Every member pulls blocks {1,6} of every other into {2,3}, byte-exact.
    for (k, i) in insts.iter().enumerate() {
        let s = i.session().unwrap();
        for (r, &c) in clusters.iter().enumerate() {
            if r == k {
                continue;
            }
            let (dst, dc) = &dsts[k];
            s.caches()
                .pull_blocks(
                    &CacheKey::Blocks {
                        cluster_id: c,
                        model_id: 0,
                    },
                    *dc,
                    &[1, 6],
                    &[2, 3],
                    &LayerSel::default(),
                )
                .unwrap();
            for t in 0..2 {
                let got = dst.read(t);
                let want = pattern(20 + r as u8, t, NB * BLK);
                assert!(
                    got[2 * BLK..3 * BLK] == want[BLK..2 * BLK],
                    "{k}<-{r} t{t} b2"
                );
                assert!(
                    got[3 * BLK..4 * BLK] == want[6 * BLK..7 * BLK],
                    "{k}<-{r} t{t} b3"
                );
                assert!(got[..2 * BLK].iter().all(|&b| b == 0), "{k}<-{r} untouched");
            }
        }
    }
    for (k, i) in insts.iter().enumerate() {
        i.unlink(ids[k]).unwrap();
        assert!(i.session().unwrap().link_count() == 0);
    }

    // Relink with a table HCCL refuses (ranks 1 and 2 share a device_ip): the
    // comm FAILS everywhere, naming the vendor error; nobody hangs past the
    // link budget.
    for (k, i) in insts.iter().enumerate() {
        i.finalize();
        let dev = ["0", "1", "2"][k];
        i.init(&collect(opts(d, dev, "acl", &[("llm.LinkTotalTime", "3")])).unwrap())
            .unwrap();
    }
    let host: Vec<u16> = (0..N).map(|_| free_port()).collect();
    let dev: Vec<u16> = (0..N).map(|_| free_port()).collect();
    let bad = acl_rank_table(&host, &dev).replace(
        &format!(r#""device_ip":"{}""#, common::sim::nic_ip(2)),
        &format!(r#""device_ip":"{}""#, common::sim::nic_ip(1)),
    );
    let ids: Vec<u64> = insts
        .iter()
        .map(|i| i.link("clash", &ranks, &bad).unwrap())
        .collect();
    let mut vendor = 0;
    for (k, i) in insts.iter().enumerate() {
        let st = wait_comm(i, ids[k], std::time::Duration::from_secs(15));
        assert_eq!(st.0, MemStatus::Failed, "member {k}: {}", st.1);
        if st.1.contains("creating the HCCL communicator") {
            vendor += 1;
        }
    }
    assert!(
        vendor >= 1,
        "a member reports the failed HcclCommInitClusterInfoMemConfig"
    );
    for (k, i) in insts.iter().enumerate() {
        i.unlink(ids[k]).unwrap();
    }
    drop(dsts);
    drop(srcs);
}
