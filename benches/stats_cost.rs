//! What the per-link statistics cost, next to what they are counted on,
//! measured in the same run: `cargo bench --bench stats_cost`.
//!
//! - one operation counted (start, bytes, finish: two clock reads, three
//!   relaxed atomic read-modify-writes), single-threaded and with two threads
//!   counting on the same link, next to the two clock reads alone (a transfer
//!   takes its deadline from the start's clock read, so counting adds one);
//! - a snapshot (what `llmdd_get_link_stats` reads);
//! - the latency of a single 16 KiB block pull over a same-host link in
//!   remote-cache-accessible mode (the prompt in a forked process; the
//!   cheapest pull there is), which counts one operation per pull, with the
//!   link's own p50/p99 from its histogram next to the measured ones.

use std::hint::black_box;
use std::time::Instant;

use llmdd::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement};
use llmdd::datadist::options::collect;
use llmdd::datadist::{ClusterInfo, Instance, IpInfo};
use llmdd::stats::{Direction, LinkStats, Path};

const BLOCK: i64 = 16 << 10;
const BLOCKS: i64 = 64;
const WARMUP: usize = 2_000;
const PULLS: usize = 20_000;

fn per_op(n: u32, f: impl Fn(u32)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn count_one(s: &LinkStats, i: u32) {
    let mut op = s.start(Direction::Pull);
    op.set_bytes(black_box(u64::from(i)));
    op.finish(Path::SameHost, &Ok::<(), llmdd::Error>(()));
}

fn desc() -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: 1,
        data_type: DataType::Uint8,
        shape: vec![BLOCKS, BLOCK],
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

fn init(i: &Instance, extra: &[(&str, &str)]) {
    let mut p = vec![("llm.DeviceId", "0"), ("llm.EnableCacheManager", "1")];
    p.extend_from_slice(extra);
    i.init(&collect(p).expect("options")).expect("init");
}

/// The prompt (cluster 1) in a forked child: registers a 16 KiB-block cache,
/// writes one byte to `ready`, and serves until `quit` is readable.
fn prompt_child(port: u16, ready: i32, quit: i32) -> ! {
    let p = Instance::new(1, 1).expect("create");
    let listen = format!("127.0.0.1:{port}");
    init(
        &p,
        &[
            ("llm.ListenIpInfo", &listen),
            ("llm.EnableRemoteCacheAccessible", "1"),
        ],
    );
    let mut src = vec![7u8; (BLOCKS * BLOCK) as usize];
    let key = CacheKey::Blocks {
        cluster_id: 1,
        model_id: 0,
    };
    p.session()
        .expect("session")
        .caches()
        .register_blocks_cache(&desc(), &[src.as_mut_ptr() as u64], Some(key), None)
        .expect("register");
    // SAFETY: plain pipe I/O on our own descriptors.
    unsafe {
        libc::write(ready, [1u8].as_ptr().cast(), 1);
        let mut b = [0u8; 1];
        libc::read(quit, b.as_mut_ptr().cast(), 1);
    }
    p.finalize();
    // SAFETY: leaving the forked child without running the parent's atexit work.
    unsafe { libc::_exit(0) }
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

fn main() {
    // Fork first, while this process has one thread.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let (mut ready, mut quit) = ([0i32; 2], [0i32; 2]);
    // SAFETY: pipe(2) into two-element arrays; fork with one thread.
    let child = unsafe {
        assert_eq!(libc::pipe(ready.as_mut_ptr()), 0);
        assert_eq!(libc::pipe(quit.as_mut_ptr()), 0);
        libc::fork()
    };
    assert!(child >= 0, "fork failed");
    if child == 0 {
        prompt_child(port, ready[1], quit[0]);
    }

    // The counters alone.
    let s = LinkStats::default();
    let clock = per_op(5_000_000, |_| {
        black_box(Instant::now());
        black_box(Instant::now());
    });
    let counted = per_op(5_000_000, |i| count_one(&s, i));
    let shared = LinkStats::default();
    let contended = std::thread::scope(|sc| {
        let h = sc.spawn(|| per_op(2_000_000, |i| count_one(&shared, i)));
        let a = per_op(2_000_000, |i| count_one(&shared, i));
        (a + h.join().expect("thread")) / 2.0
    });
    let snapshot = per_op(100_000, |_| {
        black_box(s.snapshot());
    });

    // A 16 KiB same-host pull, counted on its link.
    let mut b = [0u8; 1];
    // SAFETY: reading the child's ready byte.
    assert_eq!(unsafe { libc::read(ready[0], b.as_mut_ptr().cast(), 1) }, 1);
    let d = Instance::new(2, 2).expect("create");
    init(&d, &[("llm.EnableRemoteCacheAccessible", "1")]);
    let ds = d.session().expect("session");
    let mut dst = vec![0u8; (BLOCKS * BLOCK) as usize];
    let dc = ds
        .caches()
        .register_blocks_cache(&desc(), &[dst.as_mut_ptr() as u64], None, None)
        .expect("register");
    let peer = ClusterInfo {
        remote_cluster_id: 1,
        local_ip_infos: vec![],
        remote_ip_infos: vec![IpInfo {
            ip: "127.0.0.1".into(),
            port,
        }],
    };
    let r = d.link_clusters(&[peer], 5000).expect("link");
    r[0].as_ref().expect("link");
    let key = CacheKey::Blocks {
        cluster_id: 1,
        model_id: 0,
    };
    let sel = LayerSel::default();
    let pull = |i: usize| {
        let b = (i % BLOCKS as usize) as u64;
        ds.caches()
            .pull_blocks(&key, dc.id, &[b], &[b], &sel)
            .expect("pull");
    };
    (0..WARMUP).for_each(pull);
    ds.reset_link_stats(Some(1)).expect("reset");
    let mut lat: Vec<f64> = (0..PULLS)
        .map(|i| {
            let t = Instant::now();
            pull(i);
            t.elapsed().as_nanos() as f64
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let (_, st) = ds.link_stats(1).expect("stats");
    let path = ds.link_state(1);
    assert_eq!(dst[0], 7);

    println!("per-link statistics cost (ns; release build)");
    println!(
        "  one operation counted        {counted:8.1}   (its two clock reads alone: {clock:.1})"
    );
    println!("  the same, 2 threads, 1 link  {contended:8.1}");
    println!("  a snapshot (get_link_stats)  {snapshot:8.0}");
    println!(
        "single 16 KiB block pull, same host ({PULLS} pulls, link {path:?}): p50 {:.1} us, p99 {:.1} us",
        pct(&lat, 0.50) / 1e3,
        pct(&lat, 0.99) / 1e3
    );
    let l = st.latency[Direction::Pull as usize];
    println!(
        "  the link's own histogram: {} pulls, p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        l.count,
        l.p50 as f64 / 1e3,
        l.p99 as f64 / 1e3,
        l.max as f64 / 1e3
    );
    // The transfer reads the clock for its deadline anyway; counting takes
    // its start from that read, so it adds the rest.
    let added = counted - clock / 2.0;
    println!(
        "  counting adds about {added:.0} ns to a pull (one operation counted less the clock read the pull makes anyway): {:.2} % of its p50",
        100.0 * added / pct(&lat, 0.50)
    );

    d.finalize();
    // SAFETY: telling the child to quit, then reaping it.
    unsafe {
        libc::write(quit[1], [0u8].as_ptr().cast(), 1);
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
    }
}
