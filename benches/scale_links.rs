//! What links cost at deployment scale (issue 10, item 2), on 127.0.0.1:
//! one prompt process and 8 decoder processes of 64 instances each, every
//! instance linking the prompt (512 links), then one pull on every link with
//! every byte checked. Prints the threads (`/proc/self/task`) and descriptors
//! (`/proc/self/fd`) of the prompt and of one decoder process before and after
//! linking, per link, next to the limits: at 512 links at most
//! 2 x cores + 4 threads in the server, at most 1.2 descriptors per same-host
//! link on each end, and every process under `ulimit -n 1024` (set here with
//! setrlimit on both sides) for the same-host run.
//!
//! `cargo bench --bench scale_links` runs both variants (same-host, then TCP
//! with `llmdd.SameHost=0`, whose descriptor limit is raised: a TCP link has
//! data connections). Arguments: `[same-host|tcp] [processes] [instances]`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use llmdd::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement};
use llmdd::datadist::options::collect;
use llmdd::datadist::{ClusterInfo, Instance, IpInfo};
use llmdd::testing::Session;

const P_ID: u64 = 1;
const BLOCKS: u64 = 4;
const BLOCK: u64 = 4096;

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

fn key() -> CacheKey {
    CacheKey::Blocks {
        cluster_id: P_ID,
        model_id: 0,
    }
}

fn pattern(t: usize, i: usize) -> u8 {
    ((i * 7 + t * 3 + i / 4096) % 251) as u8
}

fn count(dir: &str) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn threads_fds() -> (usize, usize) {
    (count("/proc/self/task"), count("/proc/self/fd"))
}

fn set_nofile(n: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on our own process.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = n.min(r.rlim_max);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
            panic!("setrlimit(RLIMIT_NOFILE, {n}) failed");
        }
    }
}

fn opts(tcp: bool) -> Vec<(&'static str, &'static str)> {
    let mut v = vec![("llm.DeviceId", "0"), ("llm.EnableCacheManager", "1")];
    if tcp {
        v.push(("llmdd.SameHost", "0"));
    }
    v
}

/// The prompt: listens, registers one patterned cache, reports its counts on
/// each line read from stdin until "quit".
fn prompt(tcp: bool, nofile: u64, port: u16) {
    set_nofile(nofile);
    let p = Instance::new(1, P_ID).unwrap();
    let mut o = opts(tcp);
    let listen = format!("127.0.0.1:{port}");
    o.push(("llm.ListenIpInfo", listen.as_str()));
    o.push(("llmdd.MaxConnsPerPeer", "65536"));
    o.push(("llmdd.MaxLinks", "4096"));
    p.init(&collect(o).unwrap()).unwrap();
    let ps = p.session().unwrap();
    let mut mem: Vec<Vec<u8>> = (0..2)
        .map(|t| {
            (0..(BLOCKS * BLOCK) as usize)
                .map(|i| pattern(t, i))
                .collect()
        })
        .collect();
    let addrs: Vec<u64> = mem.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    ps.caches()
        .register_blocks_cache(&desc(), &addrs, Some(key()), None)
        .unwrap();
    let port = ps.listen_addr().unwrap().port();
    let (t, f) = threads_fds();
    println!("ready {port} {t} {f}");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        if line == "quit" {
            break;
        }
        let (t, f) = threads_fds();
        println!("counts {t} {f} {}", ps.link_count());
    }
    p.finalize();
    drop(mem);
}

/// A decoder process: `n` instances each link the prompt at `port`, then
/// pull every block and check it. Reports its counts before and after.
fn decoder(tcp: bool, nofile: u64, port: u16, first: u64, n: u64) {
    set_nofile(nofile);
    let mut inst = Vec::new();
    let mut sessions: Vec<Arc<Session>> = Vec::new();
    for i in 0..n {
        let d = Instance::new(2, first + i).unwrap();
        d.init(&collect(opts(tcp)).unwrap()).unwrap();
        sessions.push(d.session().unwrap());
        inst.push(d);
    }
    let (t0, f0) = threads_fds();
    let t = Instant::now();
    for (i, d) in inst.iter().enumerate() {
        let c = ClusterInfo {
            remote_cluster_id: P_ID,
            local_ip_infos: vec![],
            remote_ip_infos: vec![IpInfo {
                ip: "127.0.0.1".into(),
                port,
            }],
        };
        let r = d.link_clusters(&[c], 30_000).unwrap();
        if let Err(e) = &r[0] {
            println!("error link {i} of {n}: {:?} {}", e.status, e.message);
            return;
        }
    }
    let link_ms = t.elapsed().as_millis();
    let (t1, f1) = threads_fds();
    let mut dst: Vec<Vec<u8>> = (0..2 * n as usize)
        .map(|_| vec![0u8; (BLOCKS * BLOCK) as usize])
        .collect();
    let blocks: Vec<u64> = (0..BLOCKS).collect();
    let t = Instant::now();
    for (i, s) in sessions.iter().enumerate() {
        let addrs: Vec<u64> = dst[2 * i..2 * i + 2]
            .iter_mut()
            .map(|v| v.as_mut_ptr() as u64)
            .collect();
        let rec = s
            .caches()
            .register_blocks_cache(&desc(), &addrs, None, None)
            .unwrap();
        if let Err(e) =
            s.caches()
                .pull_blocks(&key(), rec.id, &blocks, &blocks, &LayerSel::default())
        {
            println!("error pull: {:?} {}", e.status, e.message);
            return;
        }
        for (k, v) in dst[2 * i..2 * i + 2].iter().enumerate() {
            if v.iter().enumerate().any(|(j, &b)| b != pattern(k, j)) {
                println!("error bytes: instance {i} tensor {k} differs");
                return;
            }
        }
    }
    let pull_ms = t.elapsed().as_millis();
    let (t2, f2) = threads_fds();
    println!("done {t0} {f0} {t1} {f1} {t2} {f2} {link_ms} {pull_ms}");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    for d in &inst {
        d.finalize();
    }
    drop(dst);
}

fn spawn(args: &[String]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .arg("--role")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn read_line(c: &mut Child, r: &mut BufReader<std::process::ChildStdout>) -> Vec<String> {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    if line.starts_with("error") || line.is_empty() {
        let _ = c.kill();
        panic!("a child failed: {line:?}");
    }
    line.split_whitespace().map(String::from).collect()
}

fn num(v: &[String], i: usize) -> i64 {
    v[i].parse().unwrap()
}

/// Runs one variant and prints its figures.
fn run(tcp: bool, procs: u64, per: u64, nofile: Option<u64>) {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let links = procs * per;
    // Same-host: the issue's `ulimit -n 1024` on both sides. TCP links hold
    // data connections (control + 2 + 2 per link on the prompt).
    let nofile: u64 = nofile.unwrap_or(if tcp { 65_536 } else { 1024 });
    let v = if tcp { "tcp" } else { "same-host" };
    // A free port from the kernel (released just before the prompt binds it).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut p = spawn(&[
        v.into(),
        "prompt".into(),
        nofile.to_string(),
        port.to_string(),
    ]);
    let mut pr = BufReader::new(p.stdout.take().unwrap());
    let mut pw = p.stdin.take().unwrap();
    let ready = read_line(&mut p, &mut pr);
    let (port, pt0, pf0) = (ready[1].clone(), num(&ready, 2), num(&ready, 3));
    let mut ds: Vec<_> = (0..procs)
        .map(|k| {
            let first = 1000 + k * per;
            let mut c = spawn(&[
                v.into(),
                "decoder".into(),
                nofile.to_string(),
                port.clone(),
                first.to_string(),
                per.to_string(),
            ]);
            let r = BufReader::new(c.stdout.take().unwrap());
            (c, r)
        })
        .collect();
    let done: Vec<Vec<String>> = ds.iter_mut().map(|(c, r)| read_line(c, r)).collect();
    writeln!(pw, "counts").unwrap();
    let after = read_line(&mut p, &mut pr);
    let (pt1, pf1, linked) = (num(&after, 1), num(&after, 2), num(&after, 3));
    let d0 = &done[0];
    let (dt0, df0, dt1, df1, dt2, df2) = (
        num(d0, 1),
        num(d0, 2),
        num(d0, 3),
        num(d0, 4),
        num(d0, 5),
        num(d0, 6),
    );
    let link_ms: i64 = done.iter().map(|d| num(d, 7)).max().unwrap_or(0);
    let pull_ms: i64 = done.iter().map(|d| num(d, 8)).max().unwrap_or(0);
    let per_link = |a: i64, b: i64, n: u64| (b - a) as f64 / n as f64;
    let thread_limit = 2 * cores as i64 + 4;
    println!(
        "== {v}: {procs} decoder processes x {per} instances = {links} links, RLIMIT_NOFILE {nofile}, {cores} cores"
    );
    println!(
        "prompt : threads {pt0} -> {pt1} (limit {thread_limit}: {}), fds {pf0} -> {pf1} = {:.3} per link{}, links {linked}",
        if pt1 <= thread_limit { "ok" } else { "OVER" },
        per_link(pf0, pf1, links),
        if tcp { String::new() } else {
            format!(" (limit 1.2: {})", if per_link(pf0, pf1, links) <= 1.2 { "ok" } else { "OVER" })
        }
    );
    println!(
        "decoder: threads {dt0} -> {dt1} (after pulls {dt2}), fds {df0} -> {df1} = {:.3} per link (after pulls {df2} = {:.3}){}",
        per_link(df0, df1, per),
        per_link(df0, df2, per),
        if tcp { String::new() } else {
            format!(" (limit 1.2: {})", if per_link(df0, df2, per) <= 1.2 { "ok" } else { "OVER" })
        }
    );
    println!(
        "linking took {link_ms} ms (slowest process), one pull per link with bytes checked {pull_ms} ms"
    );
    writeln!(pw, "quit").unwrap();
    for (c, _) in ds.iter_mut() {
        let _ = writeln!(c.stdin.as_mut().unwrap(), "quit");
    }
    for (mut c, _) in ds {
        assert!(c.wait().unwrap().success(), "a decoder process failed");
    }
    assert!(p.wait().unwrap().success(), "the prompt process failed");
    assert_eq!(linked as u64, links, "not every link was made");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--role") {
        let tcp = args[1] == "tcp";
        let nofile: u64 = args[3].parse().unwrap();
        match args[2].as_str() {
            "prompt" => prompt(tcp, nofile, args[4].parse().unwrap()),
            _ => decoder(
                tcp,
                nofile,
                args[4].parse().unwrap(),
                args[5].parse().unwrap(),
                args[6].parse().unwrap(),
            ),
        }
        return;
    }
    // `cargo bench` passes `--bench`; positional arguments choose a variant.
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let procs = pos.get(1).and_then(|s| s.parse().ok()).unwrap_or(8);
    let per = pos.get(2).and_then(|s| s.parse().ok()).unwrap_or(64);
    let nofile = pos.get(3).and_then(|s| s.parse().ok());
    match pos.first().map(|s| s.as_str()) {
        Some("tcp") => run(true, procs, per, nofile),
        Some("same-host") => run(false, procs, per, nofile),
        _ => {
            run(false, procs, per, nofile);
            run(true, procs, per, nofile);
        }
    }
}
