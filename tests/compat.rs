//! Compatibility with code written for CANN's LLM-DataDist (issue 12): one
//! test per behaviour that real code relies on and llmdd once refused.

mod common;

use common::{cluster, free_port, init};

use std::time::{Duration, Instant};

use llmdd::cache::types::{CacheDesc, CacheKey, CacheKind, DataType, LayerSel, Placement};
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

/// `n` tensors of `len` bytes, byte i of tensor t = `seed + 3t + i`.
fn tensors(n: usize, len: usize, seed: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|t| {
            (0..len)
                .map(|i| seed.wrapping_add((3 * t + i) as u8))
                .collect()
        })
        .collect()
}

fn addrs(v: &mut [Vec<u8>]) -> Vec<u64> {
    v.iter_mut().map(|t| t.as_mut_ptr() as u64).collect()
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The upstream samples and vllm-ascend's connector have the dialling side
/// listen too: an instance initialised with `llm.ListenIpInfo` may call
/// `link_clusters`. The dialler owns the link (non-forced unlink); either side
/// may transfer over it; the other side dialling back makes a second link of
/// its own (`hixl_transfer_backend_sample.py` has both sides dial).
#[test]
fn listening_instance_may_dial() {
    let (pa, pb) = (free_port(), free_port());
    let a = Instance::new(1, 10).unwrap();
    let b = Instance::new(2, 20).unwrap();
    init(&a, &[("llm.ListenIpInfo", &format!("127.0.0.1:{pa}"))]);
    init(&b, &[("llm.ListenIpInfo", &format!("127.0.0.1:{pb}"))]);
    let (sa, sb) = (a.session().unwrap(), b.session().unwrap());
    let mut ma = tensors(2, 4 * 64, 1);
    let mut mb = tensors(2, 4 * 64, 100);
    let ca = sa
        .caches()
        .register_blocks_cache(&desc(2, &[4, 64]), &addrs(&mut ma), None, None)
        .unwrap();
    let cb = sb
        .caches()
        .register_blocks_cache(&desc(2, &[4, 64]), &addrs(&mut mb), None, None)
        .unwrap();

    let r = a.link_clusters(&[cluster(20, pb)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    wait_until("b sees the link", || sb.link_count() == 1);
    // The same direction again is refused.
    let r = a.link_clusters(&[cluster(20, pb)], 3000).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().status, Status::AlreadyLink);
    // The accepting side dialling back makes its own link.
    let r = b.link_clusters(&[cluster(10, pa)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    wait_until("a sees b's link", || sa.link_count() == 2);
    assert_eq!(sb.link_count(), 2);

    // Both directions move bytes.
    let by_id = |cluster_id, cache_id| CacheKey::IdIndex {
        cluster_id,
        cache_id,
        batch_index: 0,
    };
    sa.caches()
        .pull_blocks(&by_id(20, cb.id), ca.id, &[1], &[2], &LayerSel::default())
        .unwrap();
    sb.caches()
        .pull_blocks(&by_id(10, ca.id), cb.id, &[3], &[0], &LayerSel::default())
        .unwrap();
    let want_a: Vec<Vec<u8>> = tensors(2, 256, 100)
        .iter()
        .map(|t| t[64..128].to_vec())
        .collect();
    let want_b: Vec<Vec<u8>> = tensors(2, 256, 1)
        .iter()
        .map(|t| t[192..256].to_vec())
        .collect();
    for t in 0..2 {
        assert_eq!(ma[t][128..192], want_a[t][..]);
        assert_eq!(mb[t][0..64], want_b[t][..]);
    }

    // A non-forced unlink ends the link its side dialled, and only that.
    let r = b.unlink_clusters(&[cluster(10, pa)], 3000, false).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    wait_until("a drops b's link", || sa.link_count() == 1);
    assert_eq!(sb.link_count(), 1);
    // With only the accepted link left, that is the dialler's to make.
    let r = b.unlink_clusters(&[cluster(10, pa)], 3000, false).unwrap();
    let e = r[0].as_ref().unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("dialled this instance"), "{}", e.message);
    sb.caches()
        .pull_blocks(&by_id(10, ca.id), cb.id, &[3], &[0], &LayerSel::default())
        .unwrap();
    let r = a.unlink_clusters(&[cluster(20, pb)], 3000, false).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    wait_until("b drops its side", || sb.link_count() == 0);

    // Now b dials a (both still listen).
    let r = b.link_clusters(&[cluster(10, pa)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    wait_until("a sees b's link", || sa.link_count() == 1);
    a.finalize();
    b.finalize();
}

/// `transfer_cache_async_sample.py`: a blocks cache sent without block
/// indices to a `BlocksCacheKey` destination. The reference treats a blocks
/// cache as one batch whose stride is one block, so block 0 of each tensor of
/// the layer moves; llmdd refused it ("needs a batch (contiguous) local cache").
#[test]
fn async_from_blocks_cache_without_indices() {
    use llmdd::datadist::async_transfer::ConfigResult;
    use llmdd::datadist::async_transfer::{AsyncBlocks, AsyncConfig, AsyncDst};

    let port = free_port();
    let d = Instance::new(2, 1).unwrap();
    let p = Instance::new(1, 0).unwrap();
    let ra = ("llm.EnableRemoteCacheAccessible", "1");
    init(
        &d,
        &[("llm.ListenIpInfo", &format!("127.0.0.1:{port}")), ra],
    );
    init(&p, &[ra]);
    let (sp, sd) = (p.session().unwrap(), d.session().unwrap());
    // Two tensors of 3 blocks x 10 floats (the sample's shape).
    let f32_desc = |shape: &[i64]| CacheDesc {
        data_type: DataType::Float,
        ..desc(2, shape)
    };
    let mut src = tensors(2, 3 * 40, 7);
    let mut dst = vec![vec![0u8; 3 * 40]; 2];
    let pc = sp
        .caches()
        .register_blocks_cache(
            &f32_desc(&[3, 10]),
            &addrs(&mut src),
            Some(CacheKey::Blocks {
                cluster_id: 0,
                model_id: 0,
            }),
            None,
        )
        .unwrap();
    sd.caches()
        .register_blocks_cache(
            &f32_desc(&[3, 10]),
            &addrs(&mut dst),
            Some(CacheKey::Blocks {
                cluster_id: 1,
                model_id: 0,
            }),
            None,
        )
        .unwrap();
    let r = p.link_clusters(&[cluster(1, port)], 5000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let config = AsyncConfig {
        dst: AsyncDst::Key(CacheKey::Blocks {
            cluster_id: 1,
            model_id: 0,
        }),
        layers: LayerSel {
            src: Some((0, 1)),
            dst: Some((0, 1)),
            per_layer: 2,
        },
        src_batch_index: 0,
    };
    let task = sp
        .caches()
        .transfer_cache_async(pc.id, &[config], AsyncBlocks::default(), Box::new(|_| true))
        .unwrap();
    let res = task.results(Some(Duration::from_secs(10))).unwrap();
    assert!(
        matches!(res[0], ConfigResult::Done(Status::Success)),
        "{res:?}"
    );
    let want = tensors(2, 3 * 40, 7);
    for t in 0..2 {
        assert_eq!(dst[t][..40], want[t][..40], "block 0 of tensor {t}");
        assert!(
            dst[t][40..].iter().all(|&b| b == 0),
            "tensor {t} past block 0"
        );
    }
    p.finalize();
    d.finalize();
}

/// C++ `Initialize` never passes `llm.EnableCacheManager` (cache-manager mode
/// is implied there); init with just a device id must give a working
/// instance. Only an explicit "0" (Python's v1 engine) is refused.
#[test]
fn cache_manager_mode_is_implied() {
    use llmdd::datadist::options::collect;
    let i = Instance::new(1, 5).unwrap();
    i.init(&collect([("llm.DeviceId", "0")]).unwrap()).unwrap();
    let s = i.session().unwrap();
    assert!(
        !s.config().remote_cache_accessible,
        "request/response by default"
    );
    let mut m = tensors(2, 64, 0);
    s.caches()
        .register_cache(
            &desc(2, &[2, 32]),
            &addrs(&mut m),
            &[],
            None,
            CacheKind::Batch,
        )
        .unwrap();
    i.finalize();
    let j = Instance::new(1, 6).unwrap();
    let e = j
        .init(&collect([("llm.DeviceId", "0"), ("llm.EnableCacheManager", "0")]).unwrap())
        .unwrap_err();
    assert_eq!(e.status, Status::FeatureNotEnabled);
    assert!(e.message.contains("v1 engine"), "{}", e.message);
}

/// `pull_blocks_sample.py` builds its rank table with no ports at all (one
/// server, two devices). Such a member is reached at its IP on the default
/// port (16666, the device NIC's documented default; `llmdd.RankTableDefaultPort`
/// here so concurrent test runs cannot collide); llmdd refused the table
/// ("rank 0 has no port").
#[test]
fn rank_table_without_ports_uses_the_default_port() {
    use llmdd::datadist::MemStatus;
    let port = free_port().to_string();
    let table = r#"{"server_count": "1", "status": "completed", "version": "1.2",
        "server_list": [{"device": [
            {"device_id": "0", "device_ip": "192.168.1.1", "rank_id": "0"},
            {"device_id": "1", "device_ip": "192.168.1.2", "rank_id": "1"}],
          "host_ip": "127.0.0.1", "server_id": "1"}]}"#;
    let p = Instance::new(1, 1).unwrap();
    let d = Instance::new(2, 2).unwrap();
    for i in [&p, &d] {
        init(i, &[("llmdd.RankTableDefaultPort", &port)]);
    }
    let (sp, sd) = (p.session().unwrap(), d.session().unwrap());
    let mut src = tensors(2, 4 * 32, 9);
    let mut dst = vec![vec![0u8; 4 * 32]; 2];
    let pc = sp
        .caches()
        .register_blocks_cache(&desc(2, &[4, 32]), &addrs(&mut src), None, None)
        .unwrap();
    let dc = sd
        .caches()
        .register_blocks_cache(&desc(2, &[4, 32]), &addrs(&mut dst), None, None)
        .unwrap();
    let ranks = [(1, 0), (2, 1)];
    let cp = p.link("link", &ranks, table).unwrap();
    let cd = d.link("link", &ranks, table).unwrap();
    wait_until("the comm is OK on both ends", || {
        let ok = |i: &Instance, c| i.query_register_mem_status(c).unwrap().0 == MemStatus::Ok;
        ok(&p, cp) && ok(&d, cd)
    });
    let key = CacheKey::IdIndex {
        cluster_id: 1,
        cache_id: pc.id,
        batch_index: 0,
    };
    sd.caches()
        .pull_blocks(
            &key,
            dc.id,
            &[0, 1, 2, 3],
            &[0, 1, 2, 3],
            &LayerSel::default(),
        )
        .unwrap();
    assert_eq!(dst, tensors(2, 4 * 32, 9));
    d.unlink(cd).unwrap();
    p.unlink(cp).unwrap();
    p.finalize();
    d.finalize();
}

/// vllm-ascend's HIXL connector on a 64-layer model registers K and V per
/// layer plus two decode-side staging caches per layer: 256 addresses, above
/// the 240 the reference documents (but does not enforce). The default limit
/// admits it; `llmdd.MaxRegisteredAddrs` lowers or raises the limit within a
/// hard cap.
#[test]
fn registered_address_limit_fits_vllm_ascend() {
    use llmdd::datadist::options::collect;
    let layers = 64;
    let mut kv = tensors(2 * layers, 64, 0);
    let mut staging = tensors(2 * layers, 64, 1);
    let i = Instance::new(2, 1).unwrap();
    init(&i, &[]);
    let s = i.session().unwrap();
    let d = desc(2 * layers as u32, &[4, 16]);
    s.caches()
        .register_blocks_cache(&d, &addrs(&mut kv), None, None)
        .unwrap();
    s.caches()
        .register_blocks_cache(&d, &addrs(&mut staging), None, None)
        .unwrap();
    i.finalize();

    let j = Instance::new(2, 2).unwrap();
    init(&j, &[("llmdd.MaxRegisteredAddrs", "200")]);
    let s = j.session().unwrap();
    s.caches()
        .register_blocks_cache(&d, &addrs(&mut kv), None, None)
        .unwrap();
    let Err(e) = s
        .caches()
        .register_blocks_cache(&d, &addrs(&mut staging), None, None)
    else {
        panic!("256 addresses registered under a limit of 200");
    };
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("limit of 200"), "{}", e.message);
    j.finalize();

    let k = Instance::new(2, 3).unwrap();
    for bad in ["0", "65537", "x"] {
        let o = collect([("llm.DeviceId", "0"), ("llmdd.MaxRegisteredAddrs", bad)]).unwrap();
        assert_eq!(
            k.init(&o).unwrap_err().status,
            Status::ParamInvalid,
            "{bad}"
        );
    }
}

/// A configuration written for a newer CANN carries `llm.` keys this version
/// does not know; the reference ignores them, so llmdd logs and ignores them
/// too (it failed init). `llmdd.StrictOptions=1` restores the refusal; typos
/// in llmdd's own `llmdd.` namespace are always refused.
#[test]
fn unknown_llm_options_are_ignored() {
    use llmdd::datadist::options::collect;
    let base = [("llm.DeviceId", "0"), ("llm.SomeFutureOption", "1")];
    let i = Instance::new(1, 1).unwrap();
    i.init(&collect(base).unwrap()).unwrap();
    i.finalize();
    let strict = collect([base[0], base[1], ("llmdd.StrictOptions", "1")]).unwrap();
    let e = i.init(&strict).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("llm.SomeFutureOption"), "{}", e.message);
    let typo = collect([base[0], ("llmdd.MaxLinkz", "4")]).unwrap();
    assert_eq!(i.init(&typo).unwrap_err().status, Status::ParamInvalid);
}

/// About 40 CANN data types exist; an FP8- or INT4-quantised KV cache was
/// refused ("data_type 36 is not a known data type code"). Every code now
/// registers with the reference's element size; packed sub-byte types need a
/// whole number of bytes per dim-0 row (the unit a slot or block transfer
/// moves), and the bytes that move are exactly those.
#[test]
fn every_cann_data_type_with_its_size() {
    let port = free_port();
    let p = Instance::new(1, 1).unwrap();
    let d = Instance::new(2, 2).unwrap();
    init(&p, &[("llm.ListenIpInfo", &format!("127.0.0.1:{port}"))]);
    init(&d, &[]);
    let (sp, sd) = (p.session().unwrap(), d.session().unwrap());
    let typed = |dt, shape: &[i64]| CacheDesc {
        data_type: dt,
        ..desc(2, shape)
    };
    // (type, shape, bytes per tensor)
    let cases = [
        (DataType::Float8E4M3FN, &[4i64, 64][..], 256u64),
        (DataType::Float8E5M2, &[4, 64], 256),
        (DataType::HiFloat8, &[4, 64], 256),
        (DataType::Int4, &[4, 64], 128),
        (DataType::Float4E2M1, &[4, 2, 3], 12),
        (DataType::Float6E3M2, &[2, 4], 6),
        (DataType::Uint1, &[2, 8], 2),
        (DataType::Complex128, &[2, 2], 64),
        (DataType::Dual, &[2, 3], 30),
    ];
    for (dt, shape, bytes) in cases {
        let desc = typed(dt, shape);
        assert_eq!(desc.validate().unwrap(), bytes, "{dt:?}");
        let mut m = tensors(2, bytes as usize, 0);
        let c = sp
            .caches()
            .register_blocks_cache(&desc, &addrs(&mut m), None, None);
        assert!(c.is_ok(), "{dt:?}: {:?}", c.err().map(|e| e.message));
        sp.caches().unregister_cache(c.unwrap().id).unwrap();
    }
    for code in 0..=42u32 {
        let known = DataType::from_code(code);
        assert_eq!(known.is_ok(), code != 5, "code {code}");
    }
    assert!(DataType::from_code(43).is_err());
    // Half-byte rows cannot be moved.
    let e = typed(DataType::Int4, &[4, 3]).validate().unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("12 bits"), "{}", e.message);

    // An INT4 KV cache moves block by block, byte-exact.
    let d4 = typed(DataType::Int4, &[4, 64]);
    let mut src = tensors(2, 128, 5);
    let mut dst = vec![vec![0u8; 128]; 2];
    let pc = sp
        .caches()
        .register_blocks_cache(&d4, &addrs(&mut src), None, None)
        .unwrap();
    let dc = sd
        .caches()
        .register_blocks_cache(&d4, &addrs(&mut dst), None, None)
        .unwrap();
    let r = d.link_clusters(&[cluster(1, port)], 3000).unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let key = CacheKey::IdIndex {
        cluster_id: 1,
        cache_id: pc.id,
        batch_index: 0,
    };
    sd.caches()
        .pull_blocks(&key, dc.id, &[2], &[1], &LayerSel::default())
        .unwrap();
    let want = tensors(2, 128, 5);
    for t in 0..2 {
        assert_eq!(dst[t][32..64], want[t][64..96]);
        assert!(dst[t][..32].iter().chain(&dst[t][64..]).all(|&b| b == 0));
    }
    p.finalize();
    d.finalize();
}

/// CANN's `SetRole` reads only the listen endpoint from its options and
/// ignores the rest (the Python package passes the whole generated map):
/// llmdd refused any other key. `llmdd.StrictOptions=1` keeps the refusal.
#[test]
fn switch_role_ignores_other_options() {
    use llmdd::datadist::options::Options;
    let port = free_port();
    let a = Instance::new(1, 10).unwrap();
    init(&a, &[]);
    let opts: Options = [
        ("llm.ListenIpInfo", format!("127.0.0.1:{port}")),
        ("llm.DeviceId", "0".to_string()),
        ("llm.SyncKvCacheWaitTime", "1000".to_string()),
        ("ge.exec.deviceId", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    a.switch_role(1, &opts).unwrap();
    let s = a.session().unwrap();
    assert_eq!(s.listen_addr().map(|x| x.port()), Some(port));

    let b = Instance::new(2, 20).unwrap();
    init(&b, &[("llmdd.StrictOptions", "1")]);
    let e = b.switch_role(1, &opts).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("StrictOptions"), "{}", e.message);
    a.finalize();
    b.finalize();
}
