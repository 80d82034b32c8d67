//! Hostile and dying peers against proven identity, same-host liveness, peer
//! pools, access control, disclosure and handle checks (issue 9 items 1, 2,
//! 3, 7, 8, 12, 13). Hostile peers speak the wire protocol from raw sockets
//! (`llmdd::testing::wire`), in this process or in a child process (this
//! test binary run again with `LLMDD_HOSTILE_ROLE`); every test also checks
//! that a real decoder keeps pulling correct bytes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, free_port, in_child_process, init, try_init};

use llmdd::cache::types::{CacheDesc, CacheKey, CacheKind, DataType, LayerSel, Placement, Segment};
use llmdd::datadist::Instance;
use llmdd::stats::Path;
use llmdd::testing::identity::{self, random_tag, Side, Transcript};
use llmdd::testing::same_host;
use llmdd::testing::wire::{
    self, CacheEntry, Identity, Join, JoinAck, Msg, PoolInfo, HEADER_LEN, TAG_LEN,
};
use llmdd::testing::Link;
use llmdd::testing::LinkKey;
use llmdd::Status;

/// The peer pools mapped on a same-host link (0 on any other).
fn mapped_pools(link: &Link) -> usize {
    same_host(link.data_path()).map_or(0, |p| p.pools().len())
}

const ROLE: &str = "LLMDD_HOSTILE_ROLE";
const BLK: u64 = 4096;
const NBLK: u64 = 16;

// ------------------------------------------------------------------ helpers

fn desc(blocks: u64) -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: 1,
        data_type: DataType::Uint8,
        shape: vec![blocks as i64, BLK as i64],
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

fn bkey(cluster_id: u64) -> CacheKey {
    CacheKey::Blocks {
        cluster_id,
        model_id: 0,
    }
}

fn all_blocks() -> Vec<u64> {
    (0..NBLK).collect()
}

fn env_u64(k: &str) -> u64 {
    let v = std::env::var(k).unwrap_or_else(|_| panic!("{k} not set"));
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => v.parse().unwrap(),
    }
}

/// Page-aligned anonymous memory, optionally at a fixed address (so another
/// process can have a mapping at the same address).
struct Buf {
    ptr: *mut u8,
    len: usize,
}

unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    fn new(len: usize, at: Option<u64>) -> Option<Buf> {
        let (addr, flags) = match at {
            Some(a) => (a as *mut libc::c_void, libc::MAP_FIXED_NOREPLACE),
            None => (std::ptr::null_mut(), 0),
        };
        let p = unsafe {
            libc::mmap(
                addr,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED || (at.is_some() && p != addr) {
            return None;
        }
        Some(Buf {
            ptr: p as *mut u8,
            len,
        })
    }
    fn addr(&self) -> u64 {
        self.ptr as u64
    }
    fn fill(&self, b: u8) {
        unsafe { std::ptr::write_bytes(self.ptr, b, self.len) };
    }
    fn bytes(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
    fn all(&self, b: u8) -> bool {
        self.bytes().iter().all(|&x| x == b)
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr as *mut _, self.len) };
    }
}

/// A decoder (client) with one destination blocks cache of `NBLK` blocks.
struct Decoder {
    inst: Instance,
    dst: Buf,
    cache: i64,
}

impl Decoder {
    fn new(cluster_id: u64, extra: &[(&str, &str)]) -> Decoder {
        let inst = Instance::new(2, cluster_id).unwrap();
        init(&inst, extra);
        let dst = Buf::new((NBLK * BLK) as usize, None).unwrap();
        let cache = inst
            .session()
            .unwrap()
            .caches()
            .register_blocks_cache(&desc(NBLK), &[dst.addr()], None, None)
            .unwrap()
            .id;
        Decoder { inst, dst, cache }
    }

    fn link(&self, peer: u64, port: u16) -> llmdd::Result<()> {
        self.inst
            .link_clusters(&[cluster(peer, port)], 5000)
            .unwrap()
            .remove(0)
    }

    fn pull(&self, peer: u64) -> llmdd::Result<()> {
        let b = all_blocks();
        self.inst.session().unwrap().caches().pull_blocks(
            &bkey(peer),
            self.cache,
            &b,
            &b,
            &LayerSel::default(),
        )
    }

    fn push(&self, peer: u64) -> llmdd::Result<()> {
        let b = all_blocks();
        self.inst.session().unwrap().caches().push_blocks(
            &bkey(peer),
            self.cache,
            &b,
            &b,
            &LayerSel::default(),
        )
    }

    fn link_obj(&self, peer: u64) -> Arc<llmdd::testing::Link> {
        self.inst.session().unwrap().link(peer).expect("linked")
    }

    fn force_unlink(&self, peer: u64, port: u16) {
        let r = self
            .inst
            .unlink_clusters(&[cluster(peer, port)], 1000, true)
            .unwrap();
        assert!(r[0].is_ok(), "{:?}", r[0]);
    }
}

/// An in-process prompt serving one blocks cache (model 0) filled with `fill`.
struct Prompt {
    inst: Instance,
    port: u16,
    _src: Buf,
}

impl Prompt {
    fn new(cluster_id: u64, fill: u8, extra: &[(&str, &str)]) -> Prompt {
        let port = free_port();
        let inst = Instance::new(1, cluster_id).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut o = vec![("llm.ListenIpInfo", listen.as_str())];
        o.extend_from_slice(extra);
        init(&inst, &o);
        let src = Buf::new((NBLK * BLK) as usize, None).unwrap();
        src.fill(fill);
        inst.session()
            .unwrap()
            .caches()
            .register_blocks_cache(&desc(NBLK), &[src.addr()], Some(bkey(cluster_id)), None)
            .unwrap();
        Prompt {
            inst,
            port,
            _src: src,
        }
    }
}

/// A real decoder links to a real prompt and pulls correct bytes.
fn real_pair_works(extra: &[(&str, &str)]) {
    let p = Prompt::new(901, 0x3c, extra);
    let d = Decoder::new(902, extra);
    d.link(901, p.port).unwrap();
    d.pull(901).unwrap();
    assert!(d.dst.all(0x3c), "a real decoder pulled wrong bytes");
    p.inst.finalize();
}

// ------------------------------------------------------- child processes

/// The role this process runs as, when it is a child of a test.
fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// A child process running `role` inside test `test`, with its stdout lines.
struct ChildProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildProc {
    fn spawn(test: &str, role: &str, envs: &[(&str, String)]) -> ChildProc {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", test, "--test-threads=1", "--nocapture"])
            .env(ROLE, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        ChildProc { child, lines }
    }

    /// The rest of the first line holding `tag`.
    fn wait_for(&self, tag: &str) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let l = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("child never printed {tag}"));
            // The harness prints "test NAME ... " before our output on one line.
            if let Some(i) = l.find(tag) {
                return l[i + tag.len()..].trim().to_string();
            }
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes the child's stdin (it finishes) and waits for it.
    fn finish(mut self) -> std::process::ExitStatus {
        drop(self.child.stdin.take());
        self.child.wait().unwrap()
    }
}

/// `key=value` fields of a line.
fn field(line: &str, key: &str) -> u64 {
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"));
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => v.parse().unwrap(),
    }
}

/// Blocks until the parent closes our stdin.
fn wait_for_parent() {
    let mut b = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut b);
}

/// Child role "prompt": a real prompt instance (cluster `CLUSTER`) serving a
/// blocks cache of `NBLK` blocks filled with `FILL`, in remote-cache-accessible
/// mode; at address `ADDR` if given, from a memfd pool of `POOL` bytes if given.
fn run_prompt_role() {
    let cluster_id = env_u64("CLUSTER");
    let fill = env_u64("FILL") as u8;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let pool = std::env::var("POOL")
        .ok()
        .map(|n| format!("{{\"memory_size\":{n},\"page_shift\":12}}"));
    let mut o = vec![
        ("llm.ListenIpInfo", listen.as_str()),
        ("llm.EnableRemoteCacheAccessible", "1"),
    ];
    if let Some(p) = &pool {
        o.push(("llm.MemPoolConfig", p.as_str()));
    }
    let inst = Instance::new(1, cluster_id).unwrap();
    init(&inst, &o);
    let s = inst.session().unwrap();
    let len = (NBLK * BLK) as usize;
    let (_keep, addr) = if pool.is_some() {
        let c = s
            .caches()
            .allocate_blocks_cache(&desc(NBLK), Some(bkey(cluster_id)))
            .unwrap();
        unsafe { std::ptr::write_bytes(c.addrs[0] as *mut u8, fill, len) };
        (None, c.addrs[0])
    } else {
        let at = std::env::var("ADDR").ok().map(|_| env_u64("ADDR"));
        let b = Buf::new(len, at).expect("mapping the prompt's cache at ADDR");
        b.fill(fill);
        s.caches()
            .register_blocks_cache(&desc(NBLK), &[b.addr()], Some(bkey(cluster_id)), None)
            .unwrap();
        let a = b.addr();
        (Some(b), a)
    };
    println!(
        "READY port={port} pid={} addr={addr:#x}",
        std::process::id()
    );
    wait_for_parent();
    inst.finalize();
}

// ------------------------------------------------------------ raw protocol

/// A raw protocol endpoint on a blocking socket.
struct Raw {
    s: TcpStream,
    /// Every byte received, for disclosure checks.
    seen: Vec<u8>,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        Raw::from(TcpStream::connect(("127.0.0.1", port)).unwrap())
    }

    fn from(s: TcpStream) -> Raw {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            seen: Vec::new(),
        }
    }

    fn local(&self) -> SocketAddr {
        self.s.local_addr().unwrap()
    }

    fn peer(&self) -> SocketAddr {
        self.s.peer_addr().unwrap()
    }

    fn send(&mut self, m: &Msg) {
        self.s.write_all(&wire::encode_to_vec(m, 0)).unwrap();
    }

    fn send_bytes(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    fn read_n(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b).ok()?;
        self.seen.extend_from_slice(&b);
        Some(b)
    }

    /// The next frame, or None when the peer closed.
    fn recv_opt(&mut self) -> Option<Msg> {
        let h = self.read_n(HEADER_LEN)?;
        let h = wire::decode_header(h.as_slice().try_into().unwrap()).unwrap();
        let p = self.read_n(h.payload_len as usize)?;
        Some(wire::decode_payload(&h, &p).unwrap())
    }

    fn recv(&mut self) -> Msg {
        self.recv_opt().expect("peer closed the connection")
    }
}

/// How a raw client answers the identity challenge.
#[derive(Clone, Copy, PartialEq)]
enum Prove {
    /// Random bytes: a remote peer.
    Nothing,
    /// The real proof of this process (a genuine local process).
    AsThisProcess,
}

/// The outcome of a raw client handshake.
struct RawLink {
    c: Raw,
    ack: Msg,
}

/// Runs the client side of the handshake on `c` as cluster `cluster_id`,
/// linking to cluster `server`; returns the `JoinAck` (whatever its status)
/// or the refusing `HelloAck`.
fn raw_handshake(
    mut c: Raw,
    server: u64,
    cluster_id: u64,
    remote_accessible: bool,
    prove: Prove,
    key: Option<&LinkKey>,
    pools: Vec<PoolInfo>,
) -> RawLink {
    let nonce_c = random_tag();
    c.send(&Msg::Hello {
        auth: key.is_some(),
        nonce: nonce_c,
    });
    let ack = c.recv();
    let Msg::HelloAck {
        status,
        nonce: nonce_s,
        host_tag,
        ..
    } = ack.clone()
    else {
        panic!("expected HelloAck, got {ack:?}")
    };
    if status != 0 {
        return RawLink { c, ack };
    }
    let t = Transcript::new(&nonce_c, &nonce_s, c.local(), c.peer());
    let id = match prove {
        Prove::Nothing => Identity {
            host_tag: random_tag(),
            proof: random_tag(),
            claim: None,
        },
        Prove::AsThisProcess => {
            let disclose = identity::same_host_tag(Side::Server, &t, &host_tag);
            identity::ours(Side::Client, &t, disclose)
        }
    };
    c.send(&Msg::Join(Join {
        auth_mac: key.map(|k| k.client_mac(&nonce_c, &nonce_s)),
        cluster_id,
        server_cluster_id: server,
        role: 2,
        remote_accessible,
        comm_name: String::new(),
        device: None,
        identity: id,
    }));
    let ack = c.recv();
    if matches!(ack, Msg::JoinAck { status: 0, .. }) {
        c.send(&Msg::Pools { pools });
    }
    RawLink { c, ack }
}

fn raw_link(port: u16, server: u64, cluster_id: u64, remote_accessible: bool) -> Raw {
    let l = raw_handshake(
        Raw::connect(port),
        server,
        cluster_id,
        remote_accessible,
        Prove::Nothing,
        None,
        vec![],
    );
    assert!(
        matches!(l.ack, Msg::JoinAck { status: 0, .. }),
        "{:?}",
        l.ack
    );
    l.c
}

/// A raw `Read` of `[addr, addr+len)`: the reply status (and the bytes).
fn raw_read(c: &mut Raw, addr: u64, len: u64) -> (u32, Option<Vec<u8>>) {
    c.send(&Msg::Read {
        segments: vec![Segment {
            dst: 0,
            src: addr,
            len,
        }],
        total: len,
    });
    match c.recv() {
        Msg::ReadData {
            status: 0, total, ..
        } => (0, c.read_n(total as usize)),
        Msg::ReadData { status, .. } => (status, None),
        m => panic!("unexpected reply {m:?}"),
    }
}

/// A raw `Write` of `len` bytes of `b` at `addr`: the reply status.
fn raw_write(c: &mut Raw, addr: u64, len: u64, b: u8) -> u32 {
    let mut frame = wire::encode_to_vec(
        &Msg::Write {
            segments: vec![Segment {
                dst: addr,
                src: 0,
                len,
            }],
            total: len,
        },
        0,
    );
    frame.extend(std::iter::repeat(b).take(len as usize));
    c.send_bytes(&frame);
    match c.recv() {
        Msg::Reply { status, .. } => status,
        m => panic!("unexpected reply {m:?}"),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

// ------------------------------------------------------------------ item 1

/// What the fake prompt of item 1 answers to the identity challenge.
#[derive(Clone, Copy)]
enum Fake {
    /// Echoes the decoder's own identity back (main: the decoder then took
    /// the peer for itself and memcpy'd from addresses the peer chose).
    Echo,
    /// Proves nothing: must get a TCP link only.
    Remote,
}

/// A fake prompt (cluster 77) in a thread: its cache table points at
/// `target` (memory of the decoder's process), and it serves reads with 0x11.
fn fake_prompt(mode: Fake, target: u64, stop: Arc<AtomicBool>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    std::thread::spawn(move || fake_conn(Raw::from(s), mode, target));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    port
}

fn fake_conn(mut c: Raw, mode: Fake, target: u64) {
    match c.recv_opt() {
        Some(Msg::Hello { nonce, .. }) => {
            let ns = random_tag();
            let t = Transcript::new(&nonce, &ns, c.peer(), c.local());
            // A local impostor can compute a valid host tag: it is on this host.
            let host_tag = identity::host_tag(Side::Server, &t);
            c.send(&Msg::HelloAck {
                status: 0,
                message: String::new(),
                nonce: ns,
                host_tag,
                auth_mac: None,
            });
            let Some(Msg::Join(Join {
                identity: theirs, ..
            })) = c.recv_opt()
            else {
                return;
            };
            let identity = match mode {
                Fake::Echo => Identity {
                    host_tag,
                    proof: theirs.proof,
                    claim: theirs.claim,
                },
                Fake::Remote => Identity {
                    host_tag: [0; TAG_LEN],
                    proof: random_tag(),
                    claim: None,
                },
            };
            c.send(&Msg::JoinAck {
                status: 0,
                message: String::new(),
                ack: JoinAck {
                    cluster_id: 77,
                    role: 1,
                    link_token: 99,
                    device: None,
                    identity,
                    pools: vec![],
                },
            });
            if !matches!(c.recv_opt(), Some(Msg::Pools { .. })) {
                return;
            }
        }
        Some(Msg::Attach { .. }) => c.send(&Msg::Reply {
            status: 0,
            message: String::new(),
        }),
        _ => return,
    }
    while let Some(m) = c.recv_opt() {
        match m {
            Msg::GetTable => c.send(&Msg::Table {
                status: 0,
                entries: vec![CacheEntry {
                    cache_id: 1,
                    kind: CacheKind::Blocks as u8,
                    placement: Placement::Device as u32,
                    data_type: DataType::Uint8 as u32,
                    shape: vec![NBLK as i64, BLK as i64],
                    tensor_bytes: NBLK * BLK,
                    addrs: vec![target],
                    req_keys: vec![],
                    blocks_model: Some(0),
                }],
            }),
            Msg::Read { total, .. } => {
                c.send(&Msg::ReadData {
                    status: 0,
                    message: String::new(),
                    total,
                });
                c.send_bytes(&vec![0x11; total as usize]);
            }
            _ => c.send(&Msg::Reply {
                status: Status::ParamInvalid.code(),
                message: "fake".into(),
            }),
        }
    }
}

/// Item 1: a peer that echoes the decoder's own identity, or proves nothing,
/// never gets a one-sided path; a relay to a real in-process prompt neither.
#[test]
fn claimed_identity_is_not_trusted() {
    let ra = [
        ("llm.EnableRemoteCacheAccessible", "1"),
        ("llmdd.DataConnections", "1"),
    ];
    // Memory of this process that no cache covers.
    let secret = Buf::new((NBLK * BLK) as usize, None).unwrap();
    secret.fill(0xee);
    let stop = Arc::new(AtomicBool::new(false));

    // Echo: the decoder refuses the link (the peer claims our pid, cannot prove it).
    let d = Decoder::new(78, &ra);
    let port = fake_prompt(Fake::Echo, secret.addr(), stop.clone());
    let e = d.link(77, port).unwrap_err();
    assert_eq!(e.status, Status::LinkFailed, "{e}");
    assert!(e.message.contains("identity proof"), "{e}");
    assert!(d.inst.session().unwrap().link(77).is_none());

    // Proves nothing: a TCP link; the pull moves the fake's bytes, never ours.
    let port = fake_prompt(Fake::Remote, secret.addr(), stop.clone());
    d.link(77, port).unwrap();
    assert!(d.link_obj(77).data_path().is_none());
    d.pull(77).unwrap();
    assert!(d.dst.all(0x11), "bytes must come from the peer over TCP");
    assert!(secret.all(0xee));
    d.force_unlink(77, port);
    stop.store(true, Ordering::Relaxed);

    // A relay (TCP proxy) in front of a real prompt of this very process:
    // the proofs are bound to the proxy's connection, so the link is TCP.
    let p = Prompt::new(80, 0x5a, &ra);
    let proxy = tcp_proxy(p.port);
    d.link(80, proxy).unwrap();
    assert!(
        d.link_obj(80).data_path().is_none(),
        "a relayed handshake must not yield a one-sided path"
    );
    d.pull(80).unwrap();
    assert!(d.dst.all(0x5a));
    // Directly, the same prompt is recognised as this process.
    let d2 = Decoder::new(81, &ra);
    d2.link(80, p.port).unwrap();
    assert!(matches!(d2.link_obj(80).path(), Path::SameProcess));
    d2.pull(80).unwrap();
    assert!(d2.dst.all(0x5a));
    real_pair_works(&ra);
}

/// A byte-for-byte TCP relay to `port` (a thread per direction).
fn tcp_proxy(port: u16) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let me = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let Ok(up) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            for (mut a, mut b) in [(s.try_clone().unwrap(), up.try_clone().unwrap()), (up, s)] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a, &mut b);
                    let _ = b.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    me
}

// ------------------------------------------------------------------ item 2

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks a process with pid `pid` (clone3 with set_tid: needs root or
/// CAP_CHECKPOINT_RESTORE). The child waits until `gate` is readable (60 s at
/// most; it dies with this process), exits 0
/// if `[addr, addr+len)` still holds `b`, else 1. Returns the errno on failure.
fn fork_with_pid(pid: u32, gate: i32, addr: u64, len: usize, b: u8) -> Result<u32, i32> {
    let tid: libc::pid_t = pid as libc::pid_t;
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    if r == 0 {
        // The child: raw syscalls only (a copy of one thread of a threaded
        // process). It dies with the test, and waits 60 s at most.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let mut pfd = libc::pollfd {
            fd: gate,
            events: libc::POLLIN,
            revents: 0,
        };
        unsafe { libc::poll(&mut pfd, 1, 60_000) };
        let p = addr as *const u8;
        let same = (0..len).all(|i| unsafe { *p.add(i) } == b);
        unsafe { libc::_exit(if same { 0 } else { 1 }) };
    }
    Ok(r as u32)
}

/// Item 2: a same-host prompt is killed and an unrelated process gets its pid
/// (with memory at the same address): pull and push return LINK_FAILED, no
/// byte moves either way.
#[test]
fn pid_reuse_is_detected() {
    const T: &str = "pid_reuse_is_detected";
    if role().as_deref() == Some("prompt") {
        return run_prompt_role();
    }
    let len = (NBLK * BLK) as usize;
    // Memory at an address the prompt and the impostor will share.
    let here = Buf::new(len, None).unwrap();
    here.fill(0x77);
    let mut p = ChildProc::spawn(
        T,
        "prompt",
        &[
            ("CLUSTER", "31".into()),
            ("FILL", "90".into()),
            ("ADDR", format!("{:#x}", here.addr())),
        ],
    );
    let ready = p.wait_for("READY");
    let (port, pid) = (field(&ready, "port") as u16, field(&ready, "pid") as u32);
    assert_eq!(field(&ready, "addr"), here.addr());

    let d = Decoder::new(32, &[("llm.EnableRemoteCacheAccessible", "1")]);
    d.link(31, port).unwrap();
    assert!(
        matches!(d.link_obj(31).path(), Path::SameHost),
        "expected a proven same-host link"
    );
    d.pull(31).unwrap();
    assert!(d.dst.all(90), "first pull is correct");

    p.kill();
    // The liveness watch marks the link dead at the exit; from then on no
    // byte moves (a transfer racing the exit fails, but may touch its buffer).
    let link = d.link_obj(31);
    let until = Instant::now() + Duration::from_secs(5);
    while !link.is_dead() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(link.is_dead(), "the link was not marked dead");
    let mut gate = [0i32; 2];
    assert_eq!(unsafe { libc::pipe(gate.as_mut_ptr()) }, 0);
    let impostor = match fork_with_pid(pid, gate[0], here.addr(), len, 0x77) {
        Ok(i) => i,
        Err(errno) => {
            // Still check the dead peer's link; the reuse itself needs the kernel's help.
            println!(
                "SKIP pid reuse: clone3(set_tid={pid}) refused (errno {errno}); checking the dead link only"
            );
            d.dst.fill(0);
            let e = d.pull(31).unwrap_err();
            assert_eq!(e.status, Status::LinkFailed, "{e}");
            assert!(d.dst.all(0));
            return;
        }
    };
    assert_eq!(impostor, pid);
    d.dst.fill(0);
    let e = d.pull(31).unwrap_err();
    assert_eq!(e.status, Status::LinkFailed, "{e}");
    assert!(d.dst.all(0), "no byte may move from the impostor");
    d.dst.fill(0x42);
    let e = d.push(31).unwrap_err();
    assert_eq!(e.status, Status::LinkFailed, "{e}");
    // Let the impostor check its memory, then reap it.
    unsafe { libc::write(gate[1], b"x".as_ptr() as *const _, 1) };
    let mut st = 0;
    assert_eq!(
        unsafe { libc::waitpid(impostor as i32, &mut st, 0) },
        impostor as i32
    );
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "the impostor's memory was written"
    );
    unsafe {
        libc::close(gate[0]);
        libc::close(gate[1]);
    }
    assert!(d.link_obj(31).is_dead());
    d.force_unlink(31, port);
    real_pair_works(&[("llm.EnableRemoteCacheAccessible", "1")]);
}

// ------------------------------------------------------------------ item 3

/// Item 3: a prompt whose cache lives in its memfd pool (mapped by the
/// decoder) is killed: the decoder's link is marked dead at once, the mapping
/// is dropped, and pulls fail without serving the stale bytes.
#[test]
fn dead_pool_peer_serves_nothing() {
    const T: &str = "dead_pool_peer_serves_nothing";
    if role().as_deref() == Some("prompt") {
        return run_prompt_role();
    }
    let mut p = ChildProc::spawn(
        T,
        "prompt",
        &[
            ("CLUSTER", "41".into()),
            ("FILL", "91".into()),
            ("POOL", (1u64 << 20).to_string()),
        ],
    );
    let port = field(&p.wait_for("READY"), "port") as u16;
    let d = Decoder::new(42, &[("llm.EnableRemoteCacheAccessible", "1")]);
    d.link(41, port).unwrap();
    let link = d.link_obj(41);
    assert_eq!(mapped_pools(&link), 1, "the prompt's pool is mapped");
    d.pull(41).unwrap();
    assert!(d.dst.all(91));

    p.kill();
    // The liveness watch marks the link dead and unmaps the pool promptly.
    let until = Instant::now() + Duration::from_secs(5);
    while !(link.is_dead() && mapped_pools(&link) == 0) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(link.is_dead(), "the link was not marked dead");
    assert!(
        mapped_pools(&link) == 0,
        "the dead peer's pool is still mapped"
    );
    d.dst.fill(0);
    let e = d.pull(41).unwrap_err();
    assert_eq!(e.status, Status::LinkFailed, "{e}");
    assert!(d.dst.all(0), "stale bytes were served");
    d.force_unlink(41, port);
    real_pair_works(&[("llm.EnableRemoteCacheAccessible", "1")]);
}

// ------------------------------------------------------------------ item 8

/// Item 8: mapping a peer's large, mostly empty pool costs this process only
/// the pages that hold data; a pool above `llmdd.PeerPoolMaxBytes`, larger
/// than its memfd, or not sealed is not mapped (the link still works).
#[test]
fn peer_pools_are_checked_and_not_populated() {
    const T: &str = "peer_pools_are_checked_and_not_populated";
    match role().as_deref() {
        Some("prompt") => return run_prompt_role(),
        Some("pool_liar") => return run_pool_liar(),
        _ => {}
    }
    if !in_child_process(T) {
        return; // RSS is process-wide: measured alone in a child process
    }
    let ra = [("llm.EnableRemoteCacheAccessible", "1")];
    let rss = || -> u64 {
        let s = std::fs::read_to_string("/proc/self/statm").unwrap();
        s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
    };
    let big = 512u64 << 20;
    let p = ChildProc::spawn(
        T,
        "prompt",
        &[
            ("CLUSTER", "51".into()),
            ("FILL", "92".into()),
            ("POOL", big.to_string()),
        ],
    );
    let port = field(&p.wait_for("READY"), "port") as u16;
    let d = Decoder::new(52, &ra);
    let before = rss();
    d.link(51, port).unwrap();
    let grew = rss().saturating_sub(before);
    assert_eq!(mapped_pools(&d.link_obj(51)), 1);
    assert!(
        grew < 64 << 20,
        "linking to a peer with a {big}-byte pool grew RSS by {grew} bytes"
    );
    d.pull(51).unwrap();
    assert!(d.dst.all(92));

    // Above the cap: not mapped, bytes still move (process_vm_readv).
    let d2 = Decoder::new(53, &[ra[0], ("llmdd.PeerPoolMaxBytes", "268435456")]);
    d2.link(51, port).unwrap();
    assert!(mapped_pools(&d2.link_obj(51)) == 0);
    assert!(matches!(d2.link_obj(51).path(), Path::SameHost));
    d2.pull(51).unwrap();
    assert!(d2.dst.all(92));
    assert!(p.finish().success());

    // A genuine local process that lies about its pools: it links (its
    // identity is real) but none of its announcements is mapped.
    let server = Prompt::new(54, 0x21, &ra);
    let liar = ChildProc::spawn(T, "pool_liar", &[("PORT", server.port.to_string())]);
    liar.wait_for("LINKED");
    let link = server
        .inst
        .session()
        .unwrap()
        .link(55)
        .expect("liar linked");
    assert!(matches!(link.path(), Path::SameHost));
    assert!(
        mapped_pools(&link) == 0,
        "a lying pool announcement was mapped"
    );
    assert!(liar.finish().success());
    real_pair_works(&ra);
}

/// Child role "pool_liar": links to `PORT` as cluster 55 with its real
/// identity and announces pools that lie (size beyond the memfd, an unsealed
/// memfd, a file that is no memory, an fd that does not exist).
fn run_pool_liar() {
    let port = env_u64("PORT") as u16;
    let mk = |name: &str, flags: u32, seal: bool| -> i32 {
        let n = std::ffi::CString::new(name).unwrap();
        let fd = unsafe { libc::memfd_create(n.as_ptr(), flags) };
        assert!(fd >= 0);
        assert_eq!(unsafe { libc::ftruncate(fd, 1 << 20) }, 0);
        if seal {
            let s = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
            assert_eq!(unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, s) }, 0);
        }
        fd
    };
    let sealed = mk("liar-sealed", libc::MFD_ALLOW_SEALING, true);
    let unsealed = mk("liar-unsealed", 0, false);
    let file = std::fs::File::open("/proc/self/status").unwrap();
    use std::os::fd::AsRawFd;
    let pools = vec![
        PoolInfo {
            fd: sealed as u32,
            base: 0x10_0000_0000,
            size: 1 << 40,
        },
        PoolInfo {
            fd: unsealed as u32,
            base: 0x20_0000_0000,
            size: 1 << 20,
        },
        PoolInfo {
            fd: file.as_raw_fd() as u32,
            base: 0x30_0000_0000,
            size: 4096,
        },
        PoolInfo {
            fd: 1 << 20,
            base: 0x40_0000_0000,
            size: 4096,
        },
    ];
    let l = raw_handshake(
        Raw::connect(port),
        54,
        55,
        true,
        Prove::AsThisProcess,
        None,
        pools,
    );
    let Msg::JoinAck {
        status,
        ack: JoinAck { identity, .. },
        ..
    } = &l.ack
    else {
        panic!("{:?}", l.ack)
    };
    assert_eq!(*status, 0, "{:?}", l.ack);
    assert!(
        identity.claim.is_some(),
        "a proven local peer gets the claim"
    );
    // The server reads Pools before it serves: a round trip proves it is done.
    let mut c = l.c;
    c.send(&Msg::GetTable);
    assert!(matches!(c.recv(), Msg::Table { .. }));
    println!("LINKED");
    wait_for_parent();
}

// ------------------------------------------------------------------ item 7

/// Item 7: the serving side reaches only remote-accessible caches (and, in
/// remote-cache-accessible mode, only those older than the link), for real
/// decoders and for raw requests alike; refusals carry statuses.
#[test]
fn access_control_per_cache() {
    // Request/response mode prompt: A remote-accessible, B local only.
    let port = free_port();
    let p = Instance::new(1, 61).unwrap();
    let listen = format!("127.0.0.1:{port}");
    init(&p, &[("llm.ListenIpInfo", listen.as_str())]);
    let ps = p.session().unwrap();
    let a = Buf::new((NBLK * BLK) as usize, None).unwrap();
    let b = Buf::new((NBLK * BLK) as usize, None).unwrap();
    a.fill(0xa1);
    b.fill(0xb2);
    let ca = ps
        .caches()
        .register_blocks_cache(&desc(NBLK), &[a.addr()], Some(bkey(61)), None)
        .unwrap();
    let cb = ps
        .caches()
        .register_blocks_cache(
            &desc(NBLK),
            &[b.addr()],
            Some(CacheKey::Blocks {
                cluster_id: 61,
                model_id: 1,
            }),
            Some(false),
        )
        .unwrap();
    assert!(ca.remote_accessible && !cb.remote_accessible);

    let d = Decoder::new(62, &[]);
    d.link(61, port).unwrap();
    d.pull(61).unwrap();
    assert!(d.dst.all(0xa1));
    let blocks = all_blocks();
    let e = d
        .inst
        .session()
        .unwrap()
        .caches()
        .pull_blocks(
            &CacheKey::Blocks {
                cluster_id: 61,
                model_id: 1,
            },
            d.cache,
            &blocks,
            &blocks,
            &LayerSel::default(),
        )
        .unwrap_err();
    assert_eq!(e.status, Status::KvCacheNotExist, "{e}");
    assert!(e.message.contains("remote_accessible = 0"), "{e}");
    let by_id = CacheKey::IdIndex {
        cluster_id: 61,
        cache_id: cb.id,
        batch_index: 0,
    };
    let e = d
        .inst
        .session()
        .unwrap()
        .caches()
        .pull_blocks(&by_id, d.cache, &blocks, &blocks, &LayerSel::default())
        .unwrap_err();
    assert_eq!(e.status, Status::KvCacheNotExist, "{e}");

    // A raw peer (TCP, proves nothing).
    let mut r = raw_link(port, 61, 63, false);
    let (s, bytes) = raw_read(&mut r, a.addr(), BLK);
    assert_eq!(s, 0);
    assert!(bytes.unwrap().iter().all(|&x| x == 0xa1));
    let (s, _) = raw_read(&mut r, b.addr(), BLK);
    assert_eq!(s, Status::ParamInvalid.code(), "read of a local-only cache");
    assert_eq!(
        raw_write(&mut r, b.addr(), BLK, 0x66),
        Status::ParamInvalid.code(),
        "write into a local-only cache"
    );
    assert!(b.all(0xb2), "a refused write changed bytes");
    let (s, _) = raw_read(&mut r, d.dst.addr(), BLK);
    assert_eq!(s, Status::ParamInvalid.code(), "read outside every cache");
    r.send(&Msg::Resolve { key: by_id });
    assert!(matches!(
        r.recv(),
        Msg::Resolved { status, entry: None, .. } if status == Status::KvCacheNotExist.code()
    ));
    // The real decoder is still served correctly.
    d.dst.fill(0);
    d.pull(61).unwrap();
    assert!(d.dst.all(0xa1));
    p.finalize();

    // Remote-cache-accessible mode: a cache registered after the link is
    // invisible to that link; keys are never consumed.
    let ra = [("llm.EnableRemoteCacheAccessible", "1")];
    let q = Prompt::new(64, 0xc3, &ra);
    let qs = q.inst.session().unwrap();
    let mut r = raw_link(q.port, 64, 65, true);
    let late = Buf::new((NBLK * BLK) as usize, None).unwrap();
    late.fill(0xd4);
    let cl = qs
        .caches()
        .register_blocks_cache(
            &desc(NBLK),
            &[late.addr()],
            Some(CacheKey::Blocks {
                cluster_id: 64,
                model_id: 2,
            }),
            None,
        )
        .unwrap();
    r.send(&Msg::GetTable);
    let Msg::Table { entries, .. } = r.recv() else {
        panic!("no table")
    };
    assert_eq!(
        entries.len(),
        1,
        "the table lists only caches older than the link"
    );
    let (s, _) = raw_read(&mut r, late.addr(), BLK);
    assert_eq!(
        s,
        Status::ParamInvalid.code(),
        "read of a cache newer than the link"
    );
    assert_eq!(
        raw_write(&mut r, late.addr(), BLK, 0x66),
        Status::ParamInvalid.code()
    );
    assert!(late.all(0xd4));
    r.send(&Msg::Consume {
        req_id: 1,
        model_id: 0,
    });
    assert!(matches!(r.recv(), Msg::Reply { status, .. } if status == Status::ParamInvalid.code()));
    // A decoder linked after the registration sees it.
    let d2 = Decoder::new(66, &ra);
    d2.link(64, q.port).unwrap();
    let k = CacheKey::IdIndex {
        cluster_id: 64,
        cache_id: cl.id,
        batch_index: 0,
    };
    d2.inst
        .session()
        .unwrap()
        .caches()
        .pull_blocks(&k, d2.cache, &blocks, &blocks, &LayerSel::default())
        .unwrap();
    assert!(d2.dst.all(0xd4));
}

// ----------------------------------------------------------------- item 12

/// Item 12: before a peer has proven anything, the server discloses neither
/// its pid, host identity, identity fd nor pool layout; with a link secret, a
/// peer without it learns nothing at all (not even the cluster id), and a
/// wrong secret is refused on both ends.
#[test]
fn nothing_identifying_before_proof() {
    let pool = [(
        "llm.MemPoolConfig",
        "{\"memory_size\":1048576,\"page_shift\":12}",
    )];
    let p = Prompt::new(71, 0x71, &pool);
    let ps = p.inst.session().unwrap();
    let pool_base = ps.device_pool().unwrap().base();
    let pid = std::process::id();
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    let leaks = |seen: &[u8]| {
        assert!(
            !contains(seen, &pool_base.to_le_bytes()),
            "pool base disclosed"
        );
        assert!(!contains(seen, &pid.to_le_bytes()), "pid disclosed");
        assert!(!contains(seen, boot.trim().as_bytes()), "boot id disclosed");
    };

    // An unproven peer: a link, but no claim, no pools.
    let l = raw_handshake(
        Raw::connect(p.port),
        71,
        72,
        false,
        Prove::Nothing,
        None,
        vec![],
    );
    let Msg::JoinAck {
        status,
        ack: JoinAck {
            identity, pools, ..
        },
        ..
    } = &l.ack
    else {
        panic!("{:?}", l.ack)
    };
    assert_eq!(*status, 0);
    assert!(identity.claim.is_none(), "claim sent to an unproven peer");
    assert!(pools.is_empty(), "pools sent to an unproven peer");
    leaks(&l.c.seen);

    // With a link secret: no secret, or a wrong one, learns nothing.
    let secret = "a-long-random-link-secret-0123456789";
    let p2 = Prompt::new(73, 0x73, &[pool[0], ("llmdd.LinkSecret", secret)]);
    let l = raw_handshake(
        Raw::connect(p2.port),
        73,
        74,
        false,
        Prove::Nothing,
        None,
        vec![],
    );
    assert!(
        matches!(&l.ack, Msg::HelloAck { status, .. } if *status == Status::ParamInvalid.code()),
        "{:?}",
        l.ack
    );
    leaks(&l.c.seen);
    assert!(!contains(&l.c.seen, &73u64.to_le_bytes()));
    let wrong = LinkKey::new(b"another-secret-of-enough-length").unwrap();
    let l = raw_handshake(
        Raw::connect(p2.port),
        73,
        74,
        false,
        Prove::Nothing,
        Some(&wrong),
        vec![],
    );
    match &l.ack {
        Msg::JoinAck {
            status,
            ack:
                JoinAck {
                    cluster_id,
                    identity,
                    pools,
                    ..
                },
            ..
        } => {
            assert_eq!(*status, Status::LinkFailed.code());
            assert_eq!(*cluster_id, 0);
            assert!(identity.claim.is_none() && pools.is_empty());
        }
        m => panic!("{m:?}"),
    }
    leaks(&l.c.seen);
    assert!(
        !contains(&l.c.seen, &73u64.to_le_bytes()),
        "cluster id disclosed"
    );
    assert!(p2.inst.session().unwrap().link(74).is_none());

    // Real decoders: the right secret links and pulls; a wrong or missing
    // one is refused with a clear status.
    let good = Decoder::new(75, &[("llmdd.LinkSecret", secret)]);
    good.link(73, p2.port).unwrap();
    good.pull(73).unwrap();
    assert!(good.dst.all(0x73));
    let bad = Decoder::new(76, &[("llmdd.LinkSecret", "not-the-right-secret-at-all")]);
    let e = bad.link(73, p2.port).unwrap_err();
    assert_eq!(e.status, Status::LinkFailed, "{e}");
    assert!(e.message.contains("authentication"), "{e}");
    let none = Decoder::new(79, &[]);
    let e = none.link(73, p2.port).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(e.message.contains("LinkSecret"), "{e}");
    // A client with a secret refuses a server without one (which says why).
    let e = good.link(71, p.port).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(e.message.contains("no llmdd.LinkSecret"), "{e}");
    // A too-short secret is an init error that does not echo the value.
    let i = Instance::new(2, 82).unwrap();
    let e = try_init(&i, &[("llmdd.LinkSecret", "short-secret")]).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(!e.message.contains("short-secret"), "{e}");
    real_pair_works(&[]);
}

// ----------------------------------------------------------------- item 13

unsafe extern "C" fn sync_ok(_: *mut libc::c_void, _: u32, _: i64) -> bool {
    true
}

/// Item 13: freed, stale and foreign handles are detected without being read.
#[test]
fn stale_and_foreign_handles_are_detected() {
    use llmdd::ffi::instance::{llmdd_create, llmdd_destroy, llmdd_get_cluster_id};
    use llmdd::ffi::task::llmdd_task_free;
    use llmdd::ffi::types::llmdd_instance_t;
    unsafe {
        let mut a: *mut llmdd_instance_t = std::ptr::null_mut();
        assert_eq!(llmdd_create(2, 1001, &mut a), 0);
        llmdd_destroy(a);
        // The slot is reused by the next instance: the old handle stays dead.
        let mut b: *mut llmdd_instance_t = std::ptr::null_mut();
        assert_eq!(llmdd_create(2, 1002, &mut b), 0);
        let mut id = 0u64;
        assert_eq!(
            llmdd_get_cluster_id(a, &mut id),
            Status::ParamInvalid.code(),
            "a destroyed handle must not reach another instance"
        );
        assert_eq!(id, 0);
        llmdd_destroy(a); // detected: a no-op
        assert_eq!(llmdd_get_cluster_id(b, &mut id), 0);
        assert_eq!(id, 1002);
        // Foreign pointers, including unmapped ones, are never dereferenced.
        for bogus in [8usize, 0x1000, usize::MAX & !7] {
            llmdd_destroy(bogus as *mut llmdd_instance_t);
            llmdd_task_free(bogus as *mut _);
            assert_eq!(
                llmdd_get_cluster_id(bogus as *mut llmdd_instance_t, &mut id),
                Status::ParamInvalid.code()
            );
        }
        llmdd_destroy(b);
        llmdd_destroy(b);
    }
    stale_task_handle();
}

/// A real async task, freed twice and used after free.
fn stale_task_handle() {
    use llmdd::ffi::cache::{llmdd_register_blocks_cache, llmdd_register_cache};
    use llmdd::ffi::constants::llmdd_last_error_message;
    use llmdd::ffi::instance::{llmdd_create, llmdd_destroy, llmdd_init, llmdd_link_clusters};
    use llmdd::ffi::task::{
        llmdd_task_free, llmdd_task_synchronize, llmdd_transfer_cache_async,
        llmdd_transfer_config_t, LLMDD_TRANSFER_BY_ADDRS,
    };
    use llmdd::ffi::types::{
        llmdd_cache_desc_t, llmdd_cache_t, llmdd_cluster_info_t, llmdd_instance_t, llmdd_ip_info_t,
        llmdd_layer_range_t, llmdd_option_t,
    };
    let port = free_port();
    let listen = std::ffi::CString::new(format!("127.0.0.1:{port}")).unwrap();
    let k = |s: &str| std::ffi::CString::new(s).unwrap();
    let (dev, one, lk) = (k("llm.DeviceId"), k("1"), k("llm.ListenIpInfo"));
    let (zero, cm) = (k("0"), k("llm.EnableCacheManager"));
    let popts = [
        llmdd_option_t {
            key: dev.as_ptr(),
            value: zero.as_ptr(),
        },
        llmdd_option_t {
            key: cm.as_ptr(),
            value: one.as_ptr(),
        },
        llmdd_option_t {
            key: lk.as_ptr(),
            value: listen.as_ptr(),
        },
    ];
    unsafe {
        let (mut p, mut d): (*mut llmdd_instance_t, *mut llmdd_instance_t) =
            (std::ptr::null_mut(), std::ptr::null_mut());
        assert_eq!(llmdd_create(1, 1101, &mut p), 0);
        assert_eq!(llmdd_create(2, 1102, &mut d), 0);
        assert_eq!(llmdd_init(p, popts.as_ptr(), 3), 0);
        assert_eq!(llmdd_init(d, popts.as_ptr(), 2), 0);
        let src = Buf::new(2 * BLK as usize, None).unwrap();
        let dst = Buf::new(2 * BLK as usize, None).unwrap();
        src.fill(0x5c);
        let mut dims = [0i64; 32];
        dims[0] = 1;
        dims[1] = BLK as i64;
        let mut cd: llmdd_cache_desc_t = std::mem::zeroed();
        cd.placement = 1;
        cd.num_tensors = 2;
        cd.data_type = DataType::Uint8 as u32;
        cd.num_dims = 2;
        cd.shape = dims;
        let mut c: llmdd_cache_t = std::mem::zeroed();
        let sa = [src.addr(), src.addr() + BLK];
        assert_eq!(
            llmdd_register_cache(d, &cd, sa.as_ptr(), 2, std::ptr::null(), 0, -1, &mut c),
            0
        );
        let mut pc: llmdd_cache_t = std::mem::zeroed();
        let da = [dst.addr(), dst.addr() + BLK];
        assert_eq!(
            llmdd_register_blocks_cache(p, &cd, da.as_ptr(), 2, std::ptr::null(), -1, &mut pc),
            0
        );
        let ip = k("127.0.0.1");
        let ipi = llmdd_ip_info_t {
            ip: ip.as_ptr(),
            port,
            reserved: [0; 16],
        };
        let mut ci: llmdd_cluster_info_t = std::mem::zeroed();
        ci.remote_cluster_id = 1101;
        ci.remote_ip_infos = &ipi;
        ci.num_remote_ip_infos = 1;
        let mut ret = 0u32;
        assert_eq!(llmdd_link_clusters(d, &ci, 1, 3000, &mut ret), 0);
        let mut cfg: llmdd_transfer_config_t = std::mem::zeroed();
        cfg.kind = LLMDD_TRANSFER_BY_ADDRS;
        cfg.dst_cluster_id = 1101;
        cfg.dst_addrs = da.as_ptr();
        cfg.num_dst_addrs = 2;
        cfg.layers = llmdd_layer_range_t {
            src_begin: -1,
            src_end: -1,
            dst_begin: -1,
            dst_end: -1,
            tensor_num_per_layer: 0,
            reserved: [0; 12],
        };
        let mut task = std::ptr::null_mut();
        assert_eq!(
            llmdd_transfer_cache_async(
                d,
                c.cache_id,
                Some(sync_ok),
                std::ptr::null_mut(),
                &cfg,
                1,
                std::ptr::null(),
                0,
                std::ptr::null(),
                0,
                0,
                &mut task
            ),
            0,
            "{:?}",
            std::ffi::CStr::from_ptr(llmdd_last_error_message())
        );
        assert_eq!(llmdd_task_synchronize(task, 10_000), 0);
        assert!(dst.all(0x5c));
        llmdd_task_free(task);
        llmdd_task_free(task); // detected: a no-op
        assert_eq!(llmdd_task_synchronize(task, 0), Status::ParamInvalid.code());
        llmdd_destroy(d);
        llmdd_destroy(p);
    }
}
