//! Rank-table linking (`link` / `unlink` / `query_register_mem_status`) with
//! several instances in one process over 127.0.0.1.

mod common;

use common::{count_dir, free_port, in_child_process, rank_table as table, release_ports};

use std::time::{Duration, Instant};

use llmdd::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement};
use llmdd::datadist::options::collect;
use llmdd::datadist::MemStatus;
use llmdd::datadist::{ClusterInfo, Instance, IpInfo};
use llmdd::Status;

fn instance(cluster: u64, extra: &[(&str, &str)]) -> Instance {
    let i = Instance::new(1, cluster).unwrap();
    let mut p = vec![("llm.DeviceId", "0"), ("llm.EnableCacheManager", "1")];
    p.extend_from_slice(extra);
    i.init(&collect(p).unwrap()).unwrap();
    i
}

const BLOCKS: usize = 8;
const BLOCK: usize = 1024;

fn desc() -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: 2,
        data_type: DataType::Uint8,
        shape: vec![BLOCKS as i64, BLOCK as i64],
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

fn byte(cluster: u64, t: usize, i: usize) -> u8 {
    (i as u64 * 31 + cluster * 17 + t as u64 * 101) as u8 | 1
}

/// A member: its instance, a source cache keyed by its own cluster id, and a
/// zeroed destination cache.
struct Member {
    inst: Instance,
    cluster: u64,
    src: Vec<Vec<u8>>,
    dst: Vec<Vec<u8>>,
    dst_id: i64,
}

fn member(cluster: u64, extra: &[(&str, &str)]) -> Member {
    let inst = instance(cluster, extra);
    let s = inst.session().unwrap();
    let mut src: Vec<Vec<u8>> = (0..2)
        .map(|t| (0..BLOCKS * BLOCK).map(|i| byte(cluster, t, i)).collect())
        .collect();
    let mut dst: Vec<Vec<u8>> = (0..2).map(|_| vec![0u8; BLOCKS * BLOCK]).collect();
    let sa: Vec<u64> = src.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    let da: Vec<u64> = dst.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    s.caches()
        .register_blocks_cache(
            &desc(),
            &sa,
            Some(CacheKey::Blocks {
                cluster_id: cluster,
                model_id: 0,
            }),
            None,
        )
        .unwrap();
    let dst_id = s
        .caches()
        .register_blocks_cache(&desc(), &da, None, None)
        .unwrap()
        .id;
    Member {
        inst,
        cluster,
        src,
        dst,
        dst_id,
    }
}

impl Member {
    /// Pulls blocks {1,6} of `from`'s source into blocks {2,3}.
    fn pull(&self, from: u64) -> llmdd::status::Result<()> {
        self.inst.session().unwrap().caches().pull_blocks(
            &CacheKey::Blocks {
                cluster_id: from,
                model_id: 0,
            },
            self.dst_id,
            &[1, 6],
            &[2, 3],
            &LayerSel::default(),
        )
    }

    /// Pulls from `from` and checks every byte of the destination: the two
    /// pulled blocks hold `from`'s data, every other block is still zero.
    fn pull_verify(&mut self, from: u64) {
        for d in &mut self.dst {
            d.fill(0);
        }
        self.pull(from).unwrap();
        for t in 0..2 {
            for b in 0..BLOCKS {
                let got = &self.dst[t][b * BLOCK..(b + 1) * BLOCK];
                let src_block = match b {
                    2 => Some(1),
                    3 => Some(6),
                    _ => None,
                };
                match src_block {
                    Some(s) => assert!(
                        got.iter()
                            .enumerate()
                            .all(|(i, &x)| x == byte(from, t, s * BLOCK + i)),
                        "cluster {} pulled wrong bytes from {from} (tensor {t}, block {b})",
                        self.cluster
                    ),
                    None => assert!(got.iter().all(|&x| x == 0), "untouched block {b} changed"),
                }
            }
        }
        let _ = &self.src;
    }

    fn status(&self, comm: u64) -> llmdd::status::Result<MemStatus> {
        self.inst.query_register_mem_status(comm).map(|s| s.0)
    }
}

fn wait_status(m: &Member, comm: u64, want: MemStatus, within: Duration) {
    let t0 = Instant::now();
    loop {
        let s = m.status(comm).unwrap();
        if s == want {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "cluster {} comm {comm}: status {s:?}, wanted {want:?} ({:?})",
            m.cluster,
            m.inst.query_register_mem_status(comm)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn ranks3() -> Vec<(u64, u32)> {
    vec![(1, 0), (2, 1), (3, 2)]
}

/// Three members link in stages (so PREPARING and "linked but not ready" are
/// deterministic), pull between every pair, unlink, relink with a new id.
fn three_members(extra: &[(&str, &str)]) {
    let ports = [free_port(), free_port(), free_port()];
    let t = table(&ports);
    let mut ms: Vec<Member> = (1..=3).map(|c| member(c, extra)).collect();
    let id_a = ms[0].inst.link("kv", &ranks3(), &t).unwrap();
    assert_eq!(id_a, 1);
    // Nobody else has called link: rank 0 only waits to be dialed.
    assert_eq!(ms[0].status(1).unwrap(), MemStatus::Preparing);
    let e = ms[0].pull(2).unwrap_err();
    assert_eq!(e.status, Status::NotYetLink);
    assert!(e.message.contains("PREPARING"), "{}", e.message);
    // Rank 1 dials rank 0; both still wait for rank 2.
    assert_eq!(ms[1].inst.link("kv", &ranks3(), &t).unwrap(), 1);
    let a = ms[0].inst.session().unwrap();
    let t0 = Instant::now();
    while a.link(2).is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "rank 1 never dialed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!a.link(2).unwrap().is_ready());
    assert_eq!(ms[0].status(1).unwrap(), MemStatus::Preparing);
    assert_eq!(ms[1].status(1).unwrap(), MemStatus::Preparing);
    for (who, from) in [(0, 2), (1, 1)] {
        let e = ms[who].pull(from).unwrap_err();
        assert_eq!(e.status, Status::NotYetLink, "{}", e.message);
    }
    assert_eq!(ms[2].inst.link("kv", &ranks3(), &t).unwrap(), 1);
    for m in &ms {
        wait_status(m, 1, MemStatus::Ok, Duration::from_secs(10));
    }
    for m in ms.iter_mut() {
        for j in 1..=3u64 {
            if j != m.cluster {
                m.pull_verify(j);
            }
        }
    }
    for m in &ms {
        m.inst.unlink(1).unwrap();
        assert_eq!(m.status(1).unwrap_err().status, Status::NotYetLink);
        assert_eq!(m.inst.unlink(1).unwrap_err().status, Status::NotYetLink);
    }
    for m in &ms {
        let e = m.pull(if m.cluster == 1 { 2 } else { 1 }).unwrap_err();
        assert_eq!(e.status, Status::NotYetLink);
    }
    // Relink (all at once, from threads) with a new comm id.
    let ids: Vec<u64> = std::thread::scope(|sc| {
        let hs: Vec<_> = ms
            .iter()
            .map(|m| sc.spawn(|| m.inst.link("kv", &ranks3(), &t).unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(ids, vec![2, 2, 2]);
    for m in &ms {
        wait_status(m, 2, MemStatus::Ok, Duration::from_secs(10));
    }
    ms[2].pull_verify(1);
    ms[0].pull_verify(3);
    for m in &ms {
        m.inst.unlink(2).unwrap();
    }
    for m in &ms {
        m.inst.finalize();
    }
}

#[test]
fn three_members_tcp() {
    three_members(&[("llmdd.SameHost", "off")]);
}

#[test]
fn three_members_same_process() {
    three_members(&[]);
}

#[test]
fn member_that_never_joins_fails_the_comm() {
    let ports = [free_port(), free_port(), free_port()];
    let t = table(&ports);
    let ms: Vec<Member> = (1..=2)
        .map(|c| member(c, &[("llm.LinkTotalTime", "1")]))
        .collect();
    for m in &ms {
        assert_eq!(m.inst.link("lonely", &ranks3(), &t).unwrap(), 1);
    }
    let t0 = Instant::now();
    for m in &ms {
        wait_status(m, 1, MemStatus::Failed, Duration::from_secs(6));
    }
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let (_, why) = ms[1].inst.query_register_mem_status(1).unwrap();
    assert!(why.contains("cluster 3"), "{why}");
    let e = ms[1].pull(1).unwrap_err();
    assert_eq!(e.status, Status::NotYetLink);
    assert!(e.message.contains("FAILED"), "{}", e.message);
    // The FAILED comm still reserves its members until it is unlinked.
    let e = ms[1].inst.link("other", &[(1, 0), (2, 1)], &t).unwrap_err();
    assert_eq!(e.status, Status::AlreadyLink);
    for m in &ms {
        m.inst.unlink(1).unwrap();
    }
    // Unlinking a PREPARING comm aborts it.
    let id = ms[0].inst.link("again", &[(1, 0), (2, 1)], &t).unwrap();
    assert_eq!(id, 2);
    assert_eq!(ms[0].status(2).unwrap(), MemStatus::Preparing);
    ms[0].inst.unlink(2).unwrap();
    for m in &ms {
        m.inst.finalize();
    }
}

/// The instance's own listener (`llm.ListenIpInfo`) serves the comm when the
/// rank table names the same endpoint; link_clusters and comms coexist.
#[test]
fn listener_reuse_and_coexistence_with_link_clusters() {
    let ports = [free_port(), free_port(), free_port()];
    let t = table(&ports[..2]);
    let listen = format!("127.0.0.1:{}", ports[0]);
    let a = member(1, &[("llm.ListenIpInfo", listen.as_str())]);
    let b = member(2, &[]);
    let c_listen = format!("127.0.0.1:{}", ports[2]);
    let c = member(3, &[("llm.ListenIpInfo", c_listen.as_str())]);
    // b links to c the one-sided way; c is then not available to a comm.
    let cl = ClusterInfo {
        remote_cluster_id: 3,
        local_ip_infos: vec![],
        remote_ip_infos: vec![IpInfo {
            ip: "127.0.0.1".into(),
            port: ports[2],
        }],
    };
    assert!(b
        .inst
        .link_clusters(std::slice::from_ref(&cl), 3000)
        .unwrap()[0]
        .is_ok());
    let e = b
        .inst
        .link("x", &[(2, 0), (3, 1)], &table(&[ports[1], ports[2]]))
        .unwrap_err();
    assert_eq!(e.status, Status::AlreadyLink);
    assert!(e.message.contains("link_clusters"), "{}", e.message);
    // Rank 0 (a) reuses its listener: no second bind of the same port.
    assert_eq!(a.inst.link("ab", &[(1, 0), (2, 1)], &t).unwrap(), 1);
    assert_eq!(b.inst.link("ab", &[(1, 0), (2, 1)], &t).unwrap(), 1);
    wait_status(&a, 1, MemStatus::Ok, Duration::from_secs(10));
    wait_status(&b, 1, MemStatus::Ok, Duration::from_secs(10));
    b.pull(1).unwrap();
    a.pull(2).unwrap();
    b.pull(3).unwrap();
    // Comm members cannot be linked or unlinked the one-sided way.
    let e = b
        .inst
        .unlink_clusters(
            &[ClusterInfo {
                remote_cluster_id: 1,
                ..cl.clone()
            }],
            3000,
            true,
        )
        .unwrap()[0]
        .clone()
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("use unlink(comm_id)"), "{}", e.message);
    let mut to_a = cl.clone();
    to_a.remote_cluster_id = 1;
    to_a.remote_ip_infos[0].port = ports[0];
    let e = b.inst.link_clusters(&[to_a], 3000).unwrap()[0]
        .clone()
        .unwrap_err();
    assert_eq!(e.status, Status::AlreadyLink);
    // switch_role needs the comm gone.
    let e = a
        .inst
        .switch_role(2, &collect(Vec::<(&str, &str)>::new()).unwrap());
    assert_eq!(e.unwrap_err().status, Status::ExistLink);
    a.inst.unlink(1).unwrap();
    b.inst.unlink(1).unwrap();
    // a still listens on its own endpoint after the comm is gone.
    assert_eq!(
        a.inst.session().unwrap().listen_addr().unwrap().port(),
        ports[0]
    );
    for m in [&a, &b, &c] {
        m.inst.finalize();
    }
}

/// At most 16 setups run at once; the rest wait in a queue (still PREPARING);
/// ids increase from 1; the 513th comm is refused.
#[test]
fn setup_queue_and_comm_limit() {
    let a = instance(1000, &[]);
    let s = a.session().unwrap();
    // This instance is rank 0 of every comm (it only waits to be dialed), all
    // at one endpoint: one shared listener, no peer needed.
    let port = free_port();
    let mut ids = Vec::new();
    for i in 0..512u64 {
        let t = table(&[port, 1]);
        ids.push(
            a.link(&format!("c{i}"), &[(1000, 0), (1 + i, 1)], &t)
                .unwrap(),
        );
        if i == 16 {
            assert_eq!(s.comm_setups(), (16, 1));
        }
    }
    assert_eq!(ids, (1..=512).collect::<Vec<u64>>());
    let e = a
        .link("c512", &[(1000, 0), (999, 1)], &table(&[port, 1]))
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("512"), "{}", e.message);
    assert_eq!(
        a.query_register_mem_status(300).unwrap().0,
        MemStatus::Preparing
    );
    // A comm's own listener is no link_clusters server.
    let c = instance(77, &[]);
    let to_a = ClusterInfo {
        remote_cluster_id: 1000,
        local_ip_infos: vec![],
        remote_ip_infos: vec![IpInfo {
            ip: "127.0.0.1".into(),
            port,
        }],
    };
    let e = c.link_clusters(&[to_a], 3000).unwrap()[0]
        .clone()
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("rank-table comms only"), "{}", e.message);
    c.finalize();
    for id in 1..=512 {
        a.unlink(id).unwrap();
    }
    let t0 = Instant::now();
    while s.comm_setups() != (0, 0) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{:?}",
            s.comm_setups()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.comm_count(), 0);
    // The shared listener is closed with the last comm.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    a.finalize();
    // Ids are not reused after re-init.
    a.init(&collect([("llm.DeviceId", "0"), ("llm.EnableCacheManager", "1")]).unwrap())
        .unwrap();
    let id = a
        .link("again", &[(1000, 0), (1, 1)], &table(&[port, 1]))
        .unwrap();
    assert_eq!(id, 513);
    a.finalize();
}

#[test]
fn bind_failure_and_hixl() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let a = instance(1, &[]);
    let e = a
        .link("c", &[(1, 0), (2, 1)], &table(&[port, 9]))
        .unwrap_err();
    assert_eq!(e.status, Status::LinkFailed);
    assert!(e.message.contains("cannot listen"), "{}", e.message);
    // The highest rank only dials: nothing to bind.
    assert_eq!(
        a.link("c", &[(2, 0), (1, 1)], &table(&[9, port])).unwrap(),
        1
    );
    a.finalize();
    let listen = format!("127.0.0.1:{}", free_port());
    let h = instance(
        5,
        &[
            ("llm.TransferBackend", "hixl"),
            ("llm.ListenIpInfo", listen.as_str()),
        ],
    );
    let e = h.link("c", &[(5, 0), (6, 1)], &table(&[1, 2])).unwrap_err();
    assert_eq!(e.status, Status::FeatureNotEnabled);
    assert_eq!(h.unlink(1).unwrap_err().status, Status::FeatureNotEnabled);
    h.finalize();
    assert_eq!(h.unlink(1).unwrap_err().status, Status::Failed);
}

/// Finalize with comms in every state leaves no thread or fd behind (run in
/// a child process: other tests run in parallel threads).
#[test]
fn finalize_leaves_no_thread_or_socket() {
    if !in_child_process("finalize_leaves_no_thread_or_socket") {
        return;
    }
    let threads0 = count_dir("/proc/self/task");
    let fds0 = count_dir("/proc/self/fd");
    for round in 0..2 {
        let ports = [free_port(), free_port(), free_port()];
        let t = table(&ports);
        let ms: Vec<Member> = (1..=3)
            .map(|c| member(c, &[("llmdd.SameHost", "off")]))
            .collect();
        for m in &ms {
            m.inst.link("leak", &ranks3(), &t).unwrap();
        }
        for m in &ms {
            wait_status(m, 1, MemStatus::Ok, Duration::from_secs(10));
        }
        ms[0].pull(3).unwrap();
        // A PREPARING comm (its peer never comes) and, in round 1, unlinks
        // before finalize; in round 0 finalize does all of it.
        ms[0]
            .inst
            .link("pending", &[(1, 0), (9, 1)], &table(&[free_port(), 1]))
            .unwrap();
        assert!(count_dir("/proc/self/task") > threads0);
        if round == 1 {
            for m in &ms {
                m.inst.unlink(1).unwrap();
            }
        }
        for m in &ms {
            m.inst.finalize();
        }
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
