//! The transfer engine's descriptor-list cost, next to the machine's limits
//! measured in the same run: `cargo bench --bench hixl_descs`. Two processes
//! on 127.0.0.1 (the bench re-runs itself as the serving engine), for the
//! same-host path and for TCP (`llmdd.SameHost=0`):
//!
//! - READ of 64 MiB as 16384 descriptors of 4 KiB, strided on the remote
//!   side (every other 4 KiB of a 128 MiB buffer: a TP-mismatch head slice),
//!   vs the same bytes as 1024 descriptors of 64 KiB; the target is ≥ 70 %;
//! - one 16 KiB descriptor, READ and WRITE: TransferAsync + status polling
//!   until COMPLETED vs TransferSync (median µs, two alternating halves);
//!   the target is ≤ 1.2×;
//! - limits: memcpy of 64 MiB in this process, and a plain TCP loopback
//!   stream of 64 MiB (one connection).
//!
//! `HIXL_BENCH_ROUNDS` (default 5) passes per figure; medians are printed.
//!
//! Buffers are page-aligned, as registered KV memory is (aclrtMallocHost,
//! pinned or mmap'd pools): a 4 KiB descriptor is then one page of the
//! peer. `HIXL_BENCH_MISALIGN=N` offsets every buffer by N bytes instead, to
//! show what descriptors straddling two pages cost (process_vm_readv pins
//! each page it touches per remote iovec, so about twice as much).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

use llmdd::engine::{Engine, Op, OpDesc, ReqStatus};

const REMOTE_BYTES: usize = 128 << 20;
const MOVED: usize = 64 << 20;

/// A zero-filled, page-aligned (plus `HIXL_BENCH_MISALIGN`) heap buffer.
struct PageBuf {
    base: *mut u8,
    layout: std::alloc::Layout,
    off: usize,
    len: usize,
}

impl PageBuf {
    fn new(len: usize) -> PageBuf {
        let off: usize = std::env::var("HIXL_BENCH_MISALIGN")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
            % 4096;
        let layout = std::alloc::Layout::from_size_align(len + 4096, 4096).unwrap();
        // SAFETY: non-zero size; freed in Drop with the same layout.
        let base = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!base.is_null(), "out of memory");
        PageBuf {
            base,
            layout,
            off,
            len,
        }
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `off + len` lies inside the allocation, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.base.add(self.off), self.len) }
    }
    fn as_slice(&self) -> &[u8] {
        // SAFETY: as above.
        unsafe { std::slice::from_raw_parts(self.base.add(self.off), self.len) }
    }
    fn addr(&self) -> usize {
        self.base as usize + self.off
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.base, self.layout) }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn opts(tcp: bool) -> BTreeMap<String, String> {
    let mut o = BTreeMap::new();
    if tcp {
        o.insert("llmdd.SameHost".into(), "0".into());
    }
    o
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The serving side: registers a patterned 128 MiB buffer, prints its
/// address, and serves until stdin closes.
fn serve(name: &str, tcp: bool) {
    let e = Engine::new(name, &opts(tcp)).expect("server engine");
    let mut buf = PageBuf::new(REMOTE_BYTES);
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    e.register_mem(buf.addr() as u64, REMOTE_BYTES as u64, 0)
        .expect("register");
    println!("{}", buf.addr());
    std::io::stdout().flush().unwrap();
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
    e.finalize();
}

fn gbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e9
}

fn run_path(tcp: bool, rounds: usize) {
    let server = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env("HIXL_BENCH_SERVER", &server)
        .env("HIXL_BENCH_TCP", if tcp { "1" } else { "0" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let remote: usize = line.trim().parse().expect("server address");
    let e = Engine::new(&format!("127.0.0.1:{}", free_port()), &opts(tcp)).unwrap();
    let local_buf = PageBuf::new(MOVED);
    let local = local_buf.as_slice();
    let la = local_buf.addr();
    e.register_mem(la as u64, MOVED as u64, 0).unwrap();
    e.connect(&server, 10_000).unwrap();
    let small: Vec<OpDesc> = (0..MOVED / 4096)
        .map(|i| OpDesc {
            local_addr: la + i * 4096,
            remote_addr: remote + 2 * i * 4096,
            len: 4096,
        })
        .collect();
    let large: Vec<OpDesc> = (0..MOVED / 65536)
        .map(|i| OpDesc {
            local_addr: la + i * 65536,
            remote_addr: remote + i * 65536,
            len: 65536,
        })
        .collect();
    // Passes alternate between the two lists, so a change in the machine's
    // load hits both alike; the ratio is the median of the passes' ratios.
    let pass = |d: &[OpDesc]| {
        let t = Instant::now();
        e.transfer(&server, Op::Read, d, 60_000, None).unwrap();
        gbps(MOVED, t.elapsed().as_secs_f64())
    };
    pass(&small); // warm
    pass(&large);
    let (mut vs, mut vl, mut vr) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (a, b) = (pass(&small), pass(&large));
        vs.push(a);
        vl.push(b);
        vr.push(a / b);
    }
    // The strided read landed where it should (byte-exact).
    e.transfer(&server, Op::Read, &small, 60_000, None).unwrap();
    for i in [0usize, 1, 4095, 16383] {
        let off = i * 4096;
        let want = ((2 * off) % 251) as u8;
        assert_eq!(local[off], want, "descriptor {i}");
    }
    let (g_small, g_large, ratio) = (median(vs), median(vl), median(vr));
    let one = [OpDesc {
        local_addr: la,
        remote_addr: remote,
        len: 16 << 10,
    }];
    let n = 2000;
    let lat = |op: Op, async_: bool| {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            if async_ {
                let r = e
                    .transfer_async(&server, op, &one, 10_000, None, 0)
                    .unwrap();
                // As a GetTransferStatus loop does (it yields while WAITING).
                while r.outcome().is_none() {
                    std::thread::yield_now();
                }
                assert_eq!(r.outcome().unwrap().status, ReqStatus::Completed);
                e.forget(&r);
            } else {
                e.transfer(&server, op, &one, 10_000, None).unwrap();
            }
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
        median(v)
    };
    let path = if tcp { "tcp" } else { "same host" };
    println!(
        "{path:9}  16384 x 4 KiB strided {g_small:6.2} GB/s | 1024 x 64 KiB {g_large:6.2} GB/s | ratio {:5.1} % (target >= 70 %)",
        100.0 * ratio
    );
    for op in [Op::Read, Op::Write] {
        let _ = lat(op, false);
        // Alternating halves, so a change of load hits both alike.
        let (s1, a1) = (lat(op, false), lat(op, true));
        let (a2, s2) = (lat(op, true), lat(op, false));
        let (sync_us, async_us) = ((s1 + s2) / 2.0, (a1 + a2) / 2.0);
        let name = if op == Op::Read { "READ " } else { "WRITE" };
        println!(
            "{path:9}  one 16 KiB {name}: sync {sync_us:6.1} us | async post+poll {async_us:6.1} us | ratio {:4.2}x (target <= 1.2x)",
            async_us / sync_us
        );
    }
    e.finalize();
    drop(child.stdin.take());
    let _ = child.wait();
}

fn memcpy_limit(rounds: usize) -> f64 {
    let src = vec![1u8; MOVED];
    let mut dst = vec![0u8; MOVED];
    dst.copy_from_slice(&src);
    median(
        (0..rounds)
            .map(|_| {
                let t = Instant::now();
                dst.copy_from_slice(std::hint::black_box(&src));
                gbps(MOVED, t.elapsed().as_secs_f64())
            })
            .collect(),
    )
}

/// process_vm_readv on this process, without the engine: the same strided
/// 4 KiB list and the same bytes as 64 KiB pieces (the mechanism's own cost
/// per remote iovec is what separates them).
fn vm_readv_limit(rounds: usize) -> (f64, f64) {
    use llmdd::cache::types::Segment;
    let mut src = PageBuf::new(REMOTE_BYTES);
    src.as_mut_slice().fill(5);
    let dst = PageBuf::new(MOVED);
    let (s, d) = (src.addr() as u64, dst.addr() as u64);
    let strided: Vec<Segment> = (0..(MOVED / 4096) as u64)
        .map(|i| Segment {
            dst: d + i * 4096,
            src: s + 2 * i * 4096,
            len: 4096,
        })
        .collect();
    let blocks: Vec<Segment> = (0..(MOVED / 65536) as u64)
        .map(|i| Segment {
            dst: d + i * 65536,
            src: s + 2 * i * 65536,
            len: 65536,
        })
        .collect();
    let pid = std::process::id();
    // SAFETY: both lists stay inside `dst` (MOVED bytes) and `src`
    // (REMOTE_BYTES), this process's own buffers, alive while they are used.
    let copy = |segs: &[Segment]| unsafe { llmdd::testing::vm_copy(pid, segs, false) };
    let run = |segs: &[Segment]| {
        copy(segs).unwrap();
        median(
            (0..rounds)
                .map(|_| {
                    let t = Instant::now();
                    copy(segs).unwrap();
                    gbps(MOVED, t.elapsed().as_secs_f64())
                })
                .collect(),
        )
    };
    (run(&strided), run(&blocks))
}

fn tcp_limit(rounds: usize) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let total = MOVED * (rounds + 1);
    let sender = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let buf = vec![3u8; 1 << 20];
        let mut left = total;
        while left > 0 {
            let k = left.min(buf.len());
            s.write_all(&buf[..k]).unwrap();
            left -= k;
        }
    });
    let mut c = TcpStream::connect(addr).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut one = |c: &mut TcpStream| {
        let mut left = MOVED;
        while left > 0 {
            let k = c.read(&mut buf[..left.min(1 << 20)]).unwrap();
            assert!(k > 0);
            left -= k;
        }
    };
    one(&mut c);
    let v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            one(&mut c);
            gbps(MOVED, t.elapsed().as_secs_f64())
        })
        .collect();
    sender.join().unwrap();
    median(v)
}

fn main() {
    if let Ok(name) = std::env::var("HIXL_BENCH_SERVER") {
        serve(&name, std::env::var("HIXL_BENCH_TCP").as_deref() == Ok("1"));
        return;
    }
    let rounds: usize = std::env::var("HIXL_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    println!(
        "limits: memcpy 64 MiB {:.2} GB/s | TCP loopback 1 connection {:.2} GB/s",
        memcpy_limit(rounds),
        tcp_limit(rounds)
    );
    let (vs, vb) = vm_readv_limit(rounds);
    println!(
        "limits: process_vm_readv (1 thread) 16384 x 4 KiB strided {vs:.2} GB/s | 1024 x 64 KiB strided {vb:.2} GB/s | ratio {:.1} %",
        100.0 * vs / vb
    );
    run_path(false, rounds);
    run_path(true, rounds);
}
