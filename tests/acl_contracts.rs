//! One test per real ACL/HCCL contract the acl backend used to break, against
//! the strict simulated runtime (cpp_tests/sim_ascend, test infrastructure):
//! each fails on the backend as it was before issue 13 and passes now
//! (docs/ascend.md, acceptance table). Instances run in this process on
//! distinct simulated devices; a contract that needs its own environment (a
//! device remap, an A3 SoC, fault injection) runs in a child process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use llmdd::cache::types::{CacheKey, LayerSel, Placement};
use llmdd::datadist::options::collect;
use llmdd::datadist::Instance;
use llmdd::testing::Session;
use llmdd::Status;

mod common;

use common::acl::{desc, opts, pattern, Tensors};
use common::sim;
use common::{cluster, free_port};

const CHILD: &str = "LLMDD_CONTRACT_CHILD";

/// True in the child; in the parent, re-runs test `name` of this binary with
/// `envs` set and asserts that it passed.
fn in_child(name: &str, envs: &[(&str, &str)]) -> bool {
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return true;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, name)
        .env_remove("LLMDD_ASCEND_LIB_DIR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn the child test");
    assert!(
        out.status.success(),
        "child {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// A prompt (server, cluster 100) on logical device `pd` and a decoder (client,
/// cluster 200) on `dd`, both on the simulator in `dir`, linked.
struct Pair {
    p: Instance,
    q: Instance,
    port: u16,
}

impl Pair {
    fn new(
        dir: &Path,
        pd: &str,
        dd: &str,
        p_extra: &[(&str, &str)],
        q_extra: &[(&str, &str)],
    ) -> Pair {
        let d = dir.to_str().unwrap();
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let p = Instance::new(1, 100).unwrap();
        let mut po = opts(d, pd, "acl", p_extra);
        po.push(("llm.ListenIpInfo", listen.as_str()));
        p.init(&collect(po).unwrap()).unwrap();
        let q = Instance::new(2, 200).unwrap();
        q.init(&collect(opts(d, dd, "acl", q_extra)).unwrap())
            .unwrap();
        Pair { p, q, port }
    }

    fn ps(&self) -> std::sync::Arc<Session> {
        self.p.session().unwrap()
    }

    fn qs(&self) -> std::sync::Arc<Session> {
        self.q.session().unwrap()
    }

    fn link(&self) -> llmdd::status::Result<()> {
        let r = self.q.link_clusters(&[cluster(100, self.port)], 5000)?;
        r.into_iter().next().unwrap()
    }

    fn unlink(&self) {
        let r = self
            .q
            .unlink_clusters(&[cluster(100, self.port)], 5000, false)
            .unwrap();
        assert!(r[0].is_ok(), "{:?}", r[0]);
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.q.finalize();
        self.p.finalize();
    }
}

/// Registers `t` as a blocks cache of `blocks` blocks of `blk` bytes on `s`,
/// keyed (cluster, model 0) when `key` is given.
fn blocks_cache(s: &Session, t: &Tensors, blocks: usize, blk: usize, key: Option<u64>) -> i64 {
    s.caches()
        .register_blocks_cache(
            &desc(
                t.placement,
                t.addrs.len() as u32,
                &[blocks as i64, blk as i64],
            ),
            &t.addrs,
            key.map(|c| CacheKey::Blocks {
                cluster_id: c,
                model_id: 0,
            }),
            None,
        )
        .unwrap()
        .id
}

fn key(c: u64) -> CacheKey {
    CacheKey::Blocks {
        cluster_id: c,
        model_id: 0,
    }
}

fn full() -> Option<PathBuf> {
    sim::dir("full")
}

/// HcclBatchGet takes at most 256 descriptors: a pull of 2 x 600 separate
/// blocks (1200 segments) goes out in calls of 256 and arrives byte-exact.
#[test]
fn large_transfer_is_cut_into_calls_of_256_descriptors() {
    let Some(dir) = full() else { return };
    const BLK: usize = 256;
    const NB: usize = 1200;
    let pair = Pair::new(&dir, "0", "1", &[], &[]);
    let src = Tensors::new(&dir, 0, Placement::Device, 2, NB * BLK, 7);
    let dst = Tensors::new(&dir, 1, Placement::Device, 2, NB * BLK, 0);
    blocks_cache(&pair.ps(), &src, NB, BLK, Some(100));
    let dc = blocks_cache(&pair.qs(), &dst, NB, BLK, None);
    pair.link().unwrap();
    // Every other block, reversed: nothing merges, 600 segments per tensor.
    let s: Vec<u64> = (0..600).map(|j| 2 * j).collect();
    let d: Vec<u64> = (0..600).map(|j| (NB as u64 - 1) - 2 * j).collect();
    pair.qs()
        .caches()
        .pull_blocks(&key(100), dc, &s, &d, &LayerSel::default())
        .unwrap();
    for t in 0..2 {
        let (got, want) = (dst.read(t), pattern(7, t, NB * BLK));
        for (&a, &b) in s.iter().zip(&d) {
            let (a, b) = (a as usize * BLK, b as usize * BLK);
            assert!(
                got[b..b + BLK] == want[a..a + BLK],
                "tensor {t} block {}",
                b / BLK
            );
        }
    }
}

/// The rank table names physical devices: under ASCEND_RT_VISIBLE_DEVICES=3,5
/// logical devices 0 and 1 are physical 3 and 5, and HCCL checks its own rank's
/// device_id against the physical id.
#[test]
fn rank_table_device_id_is_the_physical_id() {
    if !in_child(
        "rank_table_device_id_is_the_physical_id",
        &[("ASCEND_RT_VISIBLE_DEVICES", "3,5")],
    ) {
        return;
    }
    let Some(dir) = full() else { return };
    let pair = Pair::new(&dir, "0", "1", &[], &[]);
    let src = Tensors::new(&dir, 0, Placement::Device, 2, 8 * 64, 3);
    let dst = Tensors::new(&dir, 1, Placement::Device, 2, 8 * 64, 0);
    blocks_cache(&pair.ps(), &src, 8, 64, Some(100));
    let dc = blocks_cache(&pair.qs(), &dst, 8, 64, None);
    pair.link().unwrap();
    pair.qs()
        .caches()
        .pull_blocks(&key(100), dc, &[5], &[2], &LayerSel::default())
        .unwrap();
    assert!(dst.read(1)[2 * 64..3 * 64] == pattern(3, 1, 8 * 64)[5 * 64..6 * 64]);
    let phy = llmdd::testing::acl::of(pair.qs().device())
        .unwrap()
        .identity_info()
        .physical_id;
    assert_eq!(phy, Some(5));
    // A llm.LocalCommRes naming the logical id is refused at init.
    let i = Instance::new(1, 300).unwrap();
    let bad = r#"{"version":"1.0","server_list":[{"server_id":"s","device":[{"device_id":"0"}]}]}"#;
    let e = i
        .init(
            &collect(opts(
                dir.to_str().unwrap(),
                "0",
                "acl",
                &[("llm.LocalCommRes", bad)],
            ))
            .unwrap(),
        )
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(e.message.contains("physical device 3"), "{e}");
}

/// device_ip is the device NIC's address from hccn.conf, never the host IP;
/// without one the link is refused with a clear message.
#[test]
fn device_ip_comes_from_hccn_conf() {
    let Some(dir) = full() else { return };
    let pair = Pair::new(&dir, "0", "1", &[], &[]);
    pair.link().unwrap();
    let h = pair.qs().link(100).unwrap();
    assert!(llmdd::testing::acl::hccl_link(h.data_path()).is_some());
    pair.unlink();
    drop(pair);
    // A hccn.conf without this device: refused before HCCL, naming the fix.
    let empty = sim::empty_dir("hccn").join("hccn.conf");
    std::fs::write(&empty, "address_7=192.0.2.8\n").unwrap();
    let e = empty.display().to_string();
    let pair = Pair::new(&dir, "2", "3", &[], &[("llmdd.HccnConf", e.as_str())]);
    let err = pair.link().unwrap_err();
    assert_eq!(err.status, Status::ParamInvalid, "{err}");
    assert!(
        err.message.contains("no address_3") && err.message.contains("not the host's"),
        "{err}"
    );
}

/// Without a device_port HCCL keeps one NIC listener per device for every link;
/// a port per link would open a new listener (and register memory again) each time.
#[test]
fn relinking_keeps_one_nic_listener_per_device() {
    let Some(dir) = full() else { return };
    let pair = Pair::new(&dir, "4", "5", &[], &[]);
    let src = Tensors::new(&dir, 4, Placement::Device, 2, 8 * 64, 3);
    blocks_cache(&pair.ps(), &src, 8, 64, Some(100));
    for _ in 0..3 {
        pair.link().unwrap();
        pair.unlink();
    }
    let listeners = nic_listeners(&dir, 5);
    assert_eq!(
        listeners, 1,
        "device 5 opened {listeners} NIC listeners for 3 links"
    );
}

/// sim_ascend_nic_listeners(phy) of the simulator's libhcomm.so in `dir`.
fn nic_listeners(dir: &Path, phy: i32) -> i32 {
    let path = std::ffi::CString::new(dir.join("libhcomm.so").to_str().unwrap()).unwrap();
    // SAFETY: the already loaded simulator; the symbol is `int (int)`.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        assert!(!h.is_null(), "libhcomm.so is not loaded");
        let f = libc::dlsym(h, c"sim_ascend_nic_listeners".as_ptr());
        let f: extern "C" fn(i32) -> i32 = std::mem::transmute(f);
        let n = f(phy);
        libc::dlclose(h);
        n
    }
}

/// On A3 the generated table is version 1.2 with super-pod fields; with 1.0
/// HCCL takes every peer for the super pod and cannot reach another server.
#[test]
fn a3_links_use_rank_table_1_2() {
    if !in_child(
        "a3_links_use_rank_table_1_2",
        &[
            ("SIM_ASCEND_SOC", "Ascend910_9391"),
            ("SIM_ASCEND_SUPER_POD_ID", "4"),
        ],
    ) {
        return;
    }
    let Some(dir) = full() else { return };
    // Two servers (llm.LocalCommRes server_id) of one super pod.
    let res = |server: &str| {
        format!(r#"{{"version":"1.2","server_list":[{{"server_id":"{server}","device":[{{}}]}}]}}"#)
    };
    let (a, b) = (res("10.0.0.1"), res("10.0.0.2"));
    let pair = Pair::new(
        &dir,
        "0",
        "1",
        &[("llm.LocalCommRes", a.as_str())],
        &[("llm.LocalCommRes", b.as_str())],
    );
    let src = Tensors::new(&dir, 0, Placement::Device, 2, 8 * 64, 9);
    let dst = Tensors::new(&dir, 1, Placement::Device, 2, 8 * 64, 0);
    blocks_cache(&pair.ps(), &src, 8, 64, Some(100));
    let dc = blocks_cache(&pair.qs(), &dst, 8, 64, None);
    pair.link().unwrap();
    pair.qs()
        .caches()
        .pull_blocks(&key(100), dc, &[1], &[0], &LayerSel::default())
        .unwrap();
    assert!(dst.read(0)[..64] == pattern(9, 0, 8 * 64)[64..128]);
    let id = llmdd::testing::acl::of(pair.qs().device())
        .unwrap()
        .identity_info()
        .clone();
    assert_eq!(
        (id.super_device_id, id.super_pod_id.as_deref()),
        (Some(1), Some("4"))
    );
}

/// Over HCCS (one server) HCCL exports no host memory: a pull from the peer's
/// HOST cache is refused with a clear status before any byte moves; across
/// servers (RDMA) the same pull works.
#[test]
fn no_remote_host_memory_over_hccs() {
    let Some(dir) = full() else { return };
    for (servers, ok) in [(false, false), (true, true)] {
        let res = |s: &str| {
            format!(r#"{{"version":"1.0","server_list":[{{"server_id":"{s}","device":[{{}}]}}]}}"#)
        };
        let (a, b) = (
            res("node-a"),
            res(if servers { "node-b" } else { "node-a" }),
        );
        let pair = Pair::new(
            &dir,
            "6",
            "7",
            &[("llm.LocalCommRes", a.as_str())],
            &[("llm.LocalCommRes", b.as_str())],
        );
        let src = Tensors::new(&dir, 6, Placement::Host, 2, 8 * 64, 5);
        let dst = Tensors::new(&dir, 7, Placement::Device, 2, 8 * 64, 0);
        let ps = pair.ps();
        ps.caches()
            .register_blocks_cache(
                &desc(Placement::Host, 2, &[8, 64]),
                &src.addrs,
                Some(key(100)),
                Some(true),
            )
            .unwrap();
        let dc = blocks_cache(&pair.qs(), &dst, 8, 64, None);
        pair.link().unwrap();
        let r = pair
            .qs()
            .caches()
            .pull_blocks(&key(100), dc, &[3], &[4], &LayerSel::default());
        if ok {
            r.unwrap();
            assert!(dst.read(1)[4 * 64..5 * 64] == pattern(5, 1, 8 * 64)[3 * 64..4 * 64]);
        } else {
            let e = r.unwrap_err();
            assert_eq!(e.status, Status::FeatureNotEnabled, "{e}");
            assert!(e.message.contains("HCCS"), "{e}");
            assert!(dst.read(1).iter().all(|&b| b == 0), "nothing moved");
        }
    }
}

/// HCCL's communicator init is not parallel-safe: links set up at the same time
/// are serialised (the simulator's init takes 150 ms and refuses overlap).
#[test]
fn concurrent_links_serialise_communicator_init() {
    if !in_child(
        "concurrent_links_serialise_communicator_init",
        &[("SIM_ASCEND_INIT_MS", "150")],
    ) {
        return;
    }
    let Some(dir) = full() else { return };
    let d = dir.to_str().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let prompts: Vec<Instance> = ports
        .iter()
        .enumerate()
        .map(|(k, port)| {
            let p = Instance::new(1, 100 + k as u64).unwrap();
            let listen = format!("127.0.0.1:{port}");
            let dev = ["0", "1", "2"][k];
            let mut o = opts(d, dev, "acl", &[]);
            o.push(("llm.ListenIpInfo", listen.as_str()));
            p.init(&collect(o).unwrap()).unwrap();
            p
        })
        .collect();
    let q = Instance::new(2, 200).unwrap();
    q.init(&collect(opts(d, "3", "acl", &[])).unwrap()).unwrap();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let hs: Vec<_> = ports
            .iter()
            .enumerate()
            .map(|(k, &port)| {
                let q = &q;
                s.spawn(move || {
                    q.link_clusters(&[cluster(100 + k as u64, port)], 10_000)
                        .unwrap()
                })
            })
            .collect();
        for h in hs {
            let r = h.join().unwrap();
            assert!(r[0].is_ok(), "{:?}", r[0]);
        }
    });
    // Six inits (both ends of three links) of 150 ms each, one at a time.
    assert!(
        t0.elapsed() >= Duration::from_millis(6 * 150),
        "{:?}",
        t0.elapsed()
    );
    q.finalize();
    for p in prompts {
        p.finalize();
    }
}

/// A descriptor must lie inside one registered region on both sides: two
/// tensors adjacent in one allocation (two registrations) are never merged.
#[test]
fn segments_stay_inside_one_registered_region() {
    let Some(dir) = full() else { return };
    const BLK: usize = 512;
    let pair = Pair::new(&dir, "2", "3", &[], &[]);
    // One allocation of 2 tensors of 4 blocks each, per side.
    let src_mem = Tensors::new(&dir, 2, Placement::Device, 1, 2 * 4 * BLK, 4);
    let dst_mem = Tensors::new(&dir, 3, Placement::Device, 1, 2 * 4 * BLK, 0);
    let split = |t: &Tensors| vec![t.addrs[0], t.addrs[0] + (4 * BLK) as u64];
    let (sa, da) = (split(&src_mem), split(&dst_mem));
    pair.ps()
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, 2, &[4, BLK as i64]),
            &sa,
            Some(key(100)),
            None,
        )
        .unwrap();
    let dc = pair
        .qs()
        .caches()
        .register_blocks_cache(
            &desc(Placement::Device, 2, &[4, BLK as i64]),
            &da,
            None,
            None,
        )
        .unwrap()
        .id;
    pair.link().unwrap();
    let all = [0, 1, 2, 3];
    pair.qs()
        .caches()
        .pull_blocks(&key(100), dc, &all, &all, &LayerSel::default())
        .unwrap();
    assert!(dst_mem.read(0) == pattern(4, 0, 2 * 4 * BLK));
}

/// aclrtMemcpyAsync copies device to device only between 64-byte aligned
/// addresses: copy_blocks of 100-byte blocks still works.
#[test]
fn unaligned_device_copies_work() {
    let Some(dir) = full() else { return };
    let d = dir.to_str().unwrap();
    let i = Instance::new(1, 500).unwrap();
    i.init(&collect(opts(d, "1", "acl", &[])).unwrap()).unwrap();
    let t = Tensors::new(&dir, 1, Placement::Device, 1, 8 * 100, 6);
    let c = blocks_cache(&i.session().unwrap(), &t, 8, 100, None);
    i.session()
        .unwrap()
        .caches()
        .copy_blocks(c, &[(1, 6), (4, 2)])
        .unwrap();
    let (got, want) = (t.read(0), pattern(6, 0, 800));
    assert!(got[600..700] == want[100..200] && got[200..300] == want[400..500]);
    i.finalize();
}

/// After a transfer times out its stream is aborted, and at unlink it is
/// destroyed without unfinished tasks (ACL forbids destroying one with tasks).
#[test]
fn timed_out_stream_is_aborted_before_destroy() {
    if !in_child("timed_out_stream_is_aborted_before_destroy", &[]) {
        return;
    }
    let Some(dir) = full() else { return };
    let sync = [("llm.SyncKvCacheWaitTime", "300")];
    let pair = Pair::new(&dir, "0", "1", &[], &sync);
    let src = Tensors::new(&dir, 0, Placement::Device, 2, 8 * 64, 3);
    let dst = Tensors::new(&dir, 1, Placement::Device, 2, 8 * 64, 0);
    blocks_cache(&pair.ps(), &src, 8, 64, Some(100));
    let dc = blocks_cache(&pair.qs(), &dst, 8, 64, None);
    pair.link().unwrap();
    // The simulator reads the variable at call time; this child runs this test only.
    std::env::set_var("SIM_ASCEND_HANG_TRANSFER", "1");
    let e = pair
        .qs()
        .caches()
        .pull_blocks(&key(100), dc, &[1], &[0], &LayerSel::default())
        .unwrap_err();
    std::env::remove_var("SIM_ASCEND_HANG_TRANSFER");
    assert_eq!(e.status, Status::Timeout, "{e}");
    pair.unlink();
    drop(pair);
    sim::assert_no_violations(&dir);
}

/// HCCL hands out one handle for an identical range registered twice, with no
/// reference count: two instances on one device registering the same memory
/// share one registration, so finalizing one leaves the other's usable.
#[test]
fn identical_ranges_share_one_registration() {
    let Some(dir) = full() else { return };
    let d = dir.to_str().unwrap();
    let pair = Pair::new(&dir, "3", "2", &[], &[]);
    let src = Tensors::new(&dir, 3, Placement::Device, 2, 8 * 64, 2);
    let dst = Tensors::new(&dir, 2, Placement::Device, 2, 8 * 64, 0);
    blocks_cache(&pair.ps(), &src, 8, 64, Some(100));
    // A second decoder on the same device registers the same tensors, then goes.
    let other = Instance::new(2, 201).unwrap();
    other
        .init(&collect(opts(d, "2", "acl", &[])).unwrap())
        .unwrap();
    blocks_cache(&other.session().unwrap(), &dst, 8, 64, None);
    let qs = pair.qs();
    let dc = blocks_cache(&qs, &dst, 8, 64, None);
    other.finalize();
    pair.link().unwrap();
    qs.caches()
        .pull_blocks(&key(100), dc, &[1, 2], &[1, 2], &LayerSel::default())
        .unwrap();
    let (got, want) = (dst.read(0), pattern(2, 0, 8 * 64));
    assert!(got[64..192] == want[64..192]);
    pair.unlink();
    drop(pair);
    sim::assert_no_violations(&dir);
}

/// The listening side waits in HcclCommPrepare as long as HCCL's connect
/// timeout (llmdd.HcclPrepareTimeout, 120 s), not 10 s: a fabric that takes
/// 11 s to connect still links.
#[test]
fn prepare_waits_for_a_slow_fabric() {
    if !in_child(
        "prepare_waits_for_a_slow_fabric",
        &[("SIM_ASCEND_PREPARE_DELAY_MS", "11000")],
    ) {
        return;
    }
    let Some(dir) = full() else { return };
    let pair = Pair::new(&dir, "0", "1", &[], &[]);
    let r = pair
        .q
        .link_clusters(&[cluster(100, pair.port)], 30_000)
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    let src = Tensors::new(&dir, 0, Placement::Device, 1, 4096, 1);
    drop(src);
}

/// Two ends on one device of one server are refused before HCCL sees the
/// table (HCCL: "device id repeat for one server").
#[test]
fn both_ends_on_one_device_are_refused_clearly() {
    let Some(dir) = full() else { return };
    let pair = Pair::new(&dir, "7", "7", &[], &[]);
    let e = pair.link().unwrap_err();
    assert_eq!(e.status, Status::LinkFailed, "{e}");
    assert!(e.message.contains("two distinct devices"), "{e}");
}

/// Library layouts of CANN 8.5+: libhcomm.so without libhccl.so (toolkit only),
/// libacl_rt.so holding the aclrt* calls, and a CANN 9.0 libhccl.so whose
/// wrappers are stubs: refused at init (acl), host under auto. With libhcomm.so
/// next to it, llmdd never goes through the wrappers.
#[test]
fn cann_library_layouts() {
    if !in_child("cann_library_layouts", &[("SIM_ASCEND_HCCL_STUBS", "1")]) {
        return;
    }
    for layout in ["hcomm", "split", "full"] {
        let Some(dir) = sim::dir(layout) else { return };
        let pair = Pair::new(&dir, "0", "1", &[], &[]);
        pair.link().unwrap_or_else(|e| panic!("{layout}: {e}"));
        let rt = llmdd::testing::acl::of(pair.qs().device())
            .unwrap()
            .runtime()
            .clone();
        assert!(rt.hccl_path().ends_with("libhcomm.so"), "{layout}: {rt:?}");
        if layout == "split" {
            assert!(rt
                .acl_rt_path()
                .is_some_and(|p| p.ends_with("libacl_rt.so")));
        }
    }
    let Some(stubs) = sim::dir("stubs") else {
        return;
    };
    let s = stubs.to_str().unwrap();
    let i = Instance::new(1, 1).unwrap();
    let e = i
        .init(&collect(opts(s, "0", "acl", &[])).unwrap())
        .unwrap_err();
    assert_eq!(e.status, Status::FeatureNotEnabled, "{e}");
    assert!(e.message.contains("compatibility stubs"), "{e}");
    i.init(&collect(opts(s, "0", "auto", &[])).unwrap())
        .unwrap();
    assert!(llmdd::testing::acl::of(i.session().unwrap().device()).is_none());
    i.finalize();
}

/// The CANN 8.5+ install root is found through ASCEND_HOME_PATH (set_env.sh)
/// without llmdd.AscendLibDir or LD_LIBRARY_PATH.
#[test]
fn ascend_home_path_is_searched() {
    let Some(dir) = full() else { return };
    let root = sim::empty_dir("home");
    let lib64 = root.join("lib64");
    if !lib64.exists() {
        std::os::unix::fs::symlink(&dir, &lib64).unwrap();
    }
    let r = root.display().to_string();
    if !in_child(
        "ascend_home_path_is_searched",
        &[("ASCEND_HOME_PATH", r.as_str()), ("LD_LIBRARY_PATH", "")],
    ) {
        return;
    }
    let rt = llmdd::testing::loader::AscendRuntime::load(None).unwrap();
    assert!(rt
        .acl_path()
        .starts_with(std::env::var("ASCEND_HOME_PATH").unwrap()));
    assert!(rt.hccl_path().ends_with("libhcomm.so"));
}
