//! Hostile and dying peers on the network, spoken to from raw sockets with the
//! wire protocol (`llmdd::testing::wire`), while a real decoder keeps pulling
//! correct bytes from the same prompt. One test per behaviour of issue 9 items
//! 4 (memory amplification), 5 (unbounded connections), 6 (link hijack), 9
//! (unlink cutting transfers), 10 (a timeout or a dead peer ending a link on
//! one side only) and 11 (file descriptor exhaustion).

mod common;

use common::raw::{connect, recv, send};
use common::{cluster, count_dir, free_port, in_child_process, init};

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llmdd::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement};
use llmdd::datadist::Instance;
use llmdd::testing::wire::{self, Identity, Join, JoinAck, Msg, HEADER_LEN, TAG_LEN};
use llmdd::testing::Session;
use llmdd::Status;

const P_ID: u64 = 100;
const D_ID: u64 = 200;
/// The small cache every real decoder pulls from: 2 tensors x 16 blocks.
const SMALL_BLOCKS: u64 = 16;
const SMALL_BLOCK: u64 = 4096;
/// The big cache (model 1): 2 tensors x 32 blocks of 1 MiB = 64 MiB.
const BIG_BLOCKS: u64 = 32;
const BIG_BLOCK: u64 = 1 << 20;
const TCP: (&str, &str) = ("llmdd.SameHost", "off");

fn desc(n: u32, blocks: u64, block: u64) -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: n,
        data_type: DataType::Uint8,
        shape: vec![blocks as i64, block as i64],
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

/// The byte at `off` of tensor `t` of the prompt's cache `model`.
fn pattern(model: u64, t: usize, off: usize) -> u8 {
    ((off * 31 + t * 7 + model as usize * 101 + off / 4096) % 251) as u8
}

fn blocks_key(model: u64) -> CacheKey {
    CacheKey::Blocks {
        cluster_id: P_ID,
        model_id: model,
    }
}

/// A prompt (server, cluster 100) with the small cache, and a decoder
/// (client, cluster 200) linked to it over TCP. Instances first: they are
/// finalized before the memory they use is freed.
struct Fixture {
    p: Instance,
    d: Instance,
    ps: Arc<Session>,
    ds: Arc<Session>,
    port: u16,
    _mem: Vec<Vec<u8>>,
}

impl Fixture {
    fn new(p_extra: &[(&str, &str)]) -> Fixture {
        let port = free_port();
        let p = Instance::new(1, P_ID).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut pe = vec![("llm.ListenIpInfo", listen.as_str()), TCP];
        pe.extend_from_slice(p_extra);
        init(&p, &pe);
        let ps = p.session().unwrap();
        let mem = register_patterned(&ps, 0, SMALL_BLOCKS, SMALL_BLOCK);
        let d = decoder(D_ID, &[]);
        let ds = d.session().unwrap();
        link(&d, port);
        Fixture {
            p,
            d,
            ps,
            ds,
            port,
            _mem: mem,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Registers the 64 MiB cache (model 1) on the prompt.
    fn add_big(&mut self) {
        let mem = register_patterned(&self.ps, 1, BIG_BLOCKS, BIG_BLOCK);
        self._mem.extend(mem);
    }

    /// The link token the prompt gave the real decoder (what a connection
    /// needs to attach to that link).
    fn token(&self) -> u64 {
        self.ps.link(D_ID).expect("the decoder is linked").token
    }
}

/// Registers on the prompt a 2-tensor blocks cache `model` of `blocks` x
/// `block` bytes filled with its pattern; the memory is returned to keep.
fn register_patterned(ps: &Session, model: u64, blocks: u64, block: u64) -> Vec<Vec<u8>> {
    let mut mem: Vec<Vec<u8>> = (0..2)
        .map(|t| {
            (0..(blocks * block) as usize)
                .map(|i| pattern(model, t, i))
                .collect()
        })
        .collect();
    let addrs: Vec<u64> = mem.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
    ps.caches()
        .register_blocks_cache(
            &desc(2, blocks, block),
            &addrs,
            Some(blocks_key(model)),
            None,
        )
        .unwrap();
    mem
}

/// A decoder instance (client) over TCP.
fn decoder(id: u64, extra: &[(&str, &str)]) -> Instance {
    let d = Instance::new(2, id).unwrap();
    let mut e = vec![TCP];
    e.extend_from_slice(extra);
    init(&d, &e);
    d
}

fn link(d: &Instance, port: u16) {
    let r = d.link_clusters(&[cluster(P_ID, port)], 5000).unwrap();
    assert!(r[0].is_ok(), "link_clusters: {:?}", r[0]);
}

// ------------------------------------------------------------- real puller

/// A real decoder pulling small block sets in a loop and checking every byte.
struct Puller {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(u64, Vec<String>)>>,
}

impl Puller {
    fn start(ds: Arc<Session>) -> Puller {
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut dst: Vec<Vec<u8>> = (0..2).map(|_| vec![0u8; 4 * 4096]).collect();
            let addrs: Vec<u64> = dst.iter_mut().map(|v| v.as_mut_ptr() as u64).collect();
            let rec = ds
                .caches()
                .register_blocks_cache(&desc(2, 4, SMALL_BLOCK), &addrs, None, None)
                .unwrap();
            let (mut ok, mut failures) = (0u64, Vec::new());
            let mut i = 0u64;
            while !stop2.load(Ordering::Acquire) || ok == 0 {
                let src: Vec<u64> = (0..4).map(|k| (i * 5 + k * 3) % SMALL_BLOCKS).collect();
                for v in dst.iter_mut() {
                    v.fill(0);
                }
                match ds.caches().pull_blocks(
                    &blocks_key(0),
                    rec.id,
                    &src,
                    &[0, 1, 2, 3],
                    &LayerSel::default(),
                ) {
                    Ok(()) => {
                        for (t, v) in dst.iter().enumerate() {
                            for (k, &s) in src.iter().enumerate() {
                                let got = &v[k * 4096..(k + 1) * 4096];
                                let base = (s * SMALL_BLOCK) as usize;
                                if (0..4096).any(|j| got[j] != pattern(0, t, base + j)) {
                                    failures.push(format!("pull {i}: wrong bytes in block {s}"));
                                }
                            }
                        }
                        ok += 1;
                    }
                    Err(e) => failures.push(format!("pull {i}: {:?} {}", e.status, e.message)),
                }
                if failures.len() > 10 {
                    break;
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            (ok, failures)
        });
        Puller {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops the puller and asserts that every pull succeeded with the right bytes.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        let (ok, failures) = self.handle.take().unwrap().join().unwrap();
        assert!(
            failures.is_empty(),
            "the real decoder's pulls failed: {failures:#?}"
        );
        assert!(ok > 0);
        ok
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

// ----------------------------------------------------------- raw protocol

fn connect_from(src: IpAddr, addr: SocketAddr) -> TcpStream {
    let IpAddr::V4(v4) = src else {
        panic!("v4 only")
    };
    // SAFETY: plain socket calls on a descriptor we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(ip.octets()),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let local = sa(v4, 0);
        assert_eq!(libc::bind(fd, &local as *const _ as *const _, len), 0);
        let SocketAddr::V4(to) = addr else {
            panic!("v4 only")
        };
        let remote = sa(*to.ip(), to.port());
        assert_eq!(libc::connect(fd, &remote as *const _ as *const _, len), 0);
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }
}

/// The first frame of a handshake (wire protocol 3): a client challenge
/// without link authentication.
fn hello() -> Msg {
    Msg::Hello {
        auth: false,
        nonce: [7; TAG_LEN],
    }
}

/// Runs the handshake of a client of cluster `id` to the prompt (cluster
/// `P_ID`) that proves nothing (no same-host path): Hello / HelloAck, Join / JoinAck, then Pools when
/// accepted. The status and message of the refusal or acceptance, and the
/// link token.
fn raw_hello(s: &mut TcpStream, id: u64) -> (u32, String, u64) {
    send(s, &hello());
    match recv(s) {
        Some(Msg::HelloAck {
            status: 0,
            message: _,
            ..
        }) => {}
        Some(Msg::HelloAck {
            status, message, ..
        }) => return (status, message, 0),
        m => panic!("unexpected answer to Hello: {m:?}"),
    }
    let proves_nothing = Identity {
        host_tag: [0; TAG_LEN],
        proof: [0; TAG_LEN],
        claim: None,
    };
    send(
        s,
        &Msg::Join(Join {
            auth_mac: None,
            cluster_id: id,
            server_cluster_id: P_ID,
            role: 2,
            remote_accessible: false,
            comm_name: String::new(),
            device: None,
            identity: proves_nothing,
        }),
    );
    match recv(s) {
        Some(Msg::JoinAck {
            status,
            message,
            ack: JoinAck { link_token, .. },
        }) => {
            if status == 0 {
                send(s, &Msg::Pools { pools: vec![] });
            }
            (status, message, link_token)
        }
        m => panic!("unexpected answer to Join: {m:?}"),
    }
}

/// Attaches a connection to the link of cluster `id`; the reply's status and
/// message (None: no reply at all).
fn raw_attach(addr: SocketAddr, id: u64, token: u64) -> (TcpStream, Option<(u32, String)>) {
    let mut s = connect(addr);
    send(
        &mut s,
        &Msg::Attach {
            cluster_id: id,
            link_token: token,
            reverse: false,
        },
    );
    let r = match recv(&mut s) {
        Some(Msg::Reply { status, message }) => Some((status, message)),
        Some(m) => panic!("unexpected answer to Attach: {m:?}"),
        None => None,
    };
    (s, r)
}

/// A frame header announcing `len` payload bytes of type `msg_type`.
fn header(msg_type: u16, len: u32) -> Vec<u8> {
    [
        &wire::MAGIC.to_le_bytes()[..],
        &wire::VERSION.to_le_bytes(),
        &msg_type.to_le_bytes(),
        &len.to_le_bytes(),
        &[0; 4],
    ]
    .concat()
}

/// True once the server has closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 256];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn resident_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// How long a test waits for something that happens soon (a count settling,
/// a dead link noticed): it returns as soon as it happens, so the bound only
/// needs to outlast any scheduling delay of a busy machine.
const SETTLE: Duration = Duration::from_secs(20);

fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

// ------------------------------------------------------------------ item 4

/// A 16-byte header announcing 16 MiB must not make the server allocate
/// 16 MiB: before the handshake such a frame is refused outright, and on a
/// linked connection the buffer grows only as bytes arrive.
#[test]
fn announced_payloads_are_not_allocated_before_they_arrive() {
    if !in_child_process("announced_payloads_are_not_allocated_before_they_arrive") {
        return;
    }
    let f = Fixture::new(&[]);
    let puller = Puller::start(f.ds.clone());
    let rss0 = resident_bytes();
    // Before any handshake: 32 connections each announce a 16 MiB Hello.
    let mut pre: Vec<TcpStream> = (0..32).map(|_| connect(f.addr())).collect();
    for s in &mut pre {
        s.write_all(&header(1, wire::MAX_PAYLOAD)).unwrap();
    }
    for (i, s) in pre.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "connection {i}: a 16 MiB Hello was not refused"
        );
    }
    // On 24 connections attached to the decoder's link: a 16 MiB Read frame
    // header plus 1000 bytes, then silence.
    let token = f.token();
    let mut linked = Vec::new();
    for _ in 0..24 {
        let (mut s, r) = raw_attach(f.addr(), D_ID, token);
        assert_eq!(r.map(|r| r.0), Some(0), "attach refused");
        s.write_all(&header(11, wire::MAX_PAYLOAD)).unwrap();
        s.write_all(&[0u8; 1000]).unwrap();
        linked.push(s);
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = resident_bytes().saturating_sub(rss0);
    println!(
        "resident growth with 32 + 24 announced 16 MiB frames: {} KiB",
        grown >> 10
    );
    assert!(
        grown < 48 << 20,
        "the server grew by {} MiB for frames whose payload never came",
        grown >> 20
    );
    puller.finish();
    drop(linked);
}

// ------------------------------------------------------------------ item 5

/// A linked connection that stops in the middle of a frame is dropped within
/// `llmdd.IoTimeoutMs`; an idle linked connection is not (keepalive bounds it).
#[test]
fn a_stall_inside_a_frame_ends_the_connection() {
    let f = Fixture::new(&[("llmdd.IoTimeoutMs", "1000")]);
    let puller = Puller::start(f.ds.clone());
    let token = f.token();
    let (mut idle, r) = raw_attach(f.addr(), D_ID, token);
    assert_eq!(r.map(|r| r.0), Some(0));
    let (mut stalled, r) = raw_attach(f.addr(), D_ID, token);
    assert_eq!(r.map(|r| r.0), Some(0));
    stalled.write_all(&header(11, 100)).unwrap();
    stalled.write_all(&[0u8; 10]).unwrap();
    let t = Instant::now();
    assert!(
        closed_within(&mut stalled, Duration::from_secs(6)),
        "a connection stalled inside a frame stayed open"
    );
    let el = t.elapsed();
    println!("stalled connection dropped after {el:?}");
    assert!(
        el >= Duration::from_millis(800),
        "dropped too early: {el:?}"
    );
    assert!(
        !closed_within(&mut idle, Duration::from_millis(300)),
        "an idle connection was dropped"
    );
    puller.finish();
}

/// Connections per link are capped (`llmdd.MaxConnsPerLink`): an attacker
/// with the token gets a clear refusal, and a real client that wants more
/// connections than the cap makes do with fewer.
#[test]
fn connections_per_link_are_capped() {
    let f = Fixture::new(&[("llmdd.MaxConnsPerLink", "8")]);
    let puller = Puller::start(f.ds.clone());
    // The decoder's link: control + the one request connection its pulls
    // use (data connections open on first need), once it has pulled.
    let l = f.ps.link(D_ID).unwrap();
    assert!(
        wait_until(SETTLE, || l.conn_count() == 2),
        "{} connections before the attack",
        l.conn_count()
    );
    let token = f.token();
    let mut held = Vec::new();
    let refusal = loop {
        let (s, r) = raw_attach(f.addr(), D_ID, token);
        match r {
            Some((0, _)) => held.push(s),
            Some((status, message)) => break (status, message),
            None => panic!("attach got no answer"),
        }
        assert!(held.len() < 100, "attach connections are not capped");
    };
    assert_eq!(held.len(), 6, "connections accepted before the cap");
    assert_eq!(refusal.0, Status::LinkFailed.code());
    assert!(refusal.1.contains("llmdd.MaxConnsPerLink"), "{}", refusal.1);
    drop(held);
    // A client whose 8 threads want 8 connections, with room for fewer.
    let d3 = decoder(203, &[("llmdd.DataConnections", "1")]);
    link(&d3, f.port);
    let s3 = d3.session().unwrap();
    let pullers: Vec<Puller> = (0..8).map(|_| Puller::start(s3.clone())).collect();
    std::thread::sleep(Duration::from_millis(300));
    for p in pullers {
        p.finish();
    }
    let l3 = f.ps.link(203).unwrap();
    assert!(l3.conn_count() <= 8, "{} connections", l3.conn_count());
    puller.finish();
}

/// Connections per peer address are capped (`llmdd.MaxConnsPerPeer`), linked
/// or not; a slot is free again once its connection ends, and other
/// addresses are not affected.
#[test]
fn connections_per_peer_address_are_capped() {
    let f = Fixture::new(&[("llmdd.MaxConnsPerPeer", "6")]);
    let puller = Puller::start(f.ds.clone());
    let other: IpAddr = "127.0.0.2".parse().unwrap();
    let mut held: Vec<TcpStream> = (0..6).map(|_| connect_from(other, f.addr())).collect();
    let mut extra = connect_from(other, f.addr());
    match recv(&mut extra) {
        Some(Msg::Reply { status, message }) => {
            assert_eq!(status, Status::LinkFailed.code());
            assert!(message.contains("llmdd.MaxConnsPerPeer"), "{message}");
        }
        m => panic!("a 7th connection from {other} was not refused: {m:?}"),
    }
    assert!(wait_until(SETTLE, || f.ps.peer_conns(other) == 6));
    drop(held.pop());
    assert!(wait_until(SETTLE, || f.ps.peer_conns(other) == 5));
    let mut again = connect_from(other, f.addr());
    let (status, _, _) = raw_hello(&mut again, 300);
    assert_eq!(status, 0, "a freed slot was not reusable");
    drop(held);
    puller.finish();
}

/// A refusal before the handshake (here the per-address cap) comes at once
/// and carries only its reason: not the server's cluster id, even when the
/// server requires a link secret the peer has not proven.
#[test]
fn refusals_before_the_handshake_disclose_nothing() {
    const SERVER: u64 = 0x5eed_c1a5_7e12;
    let port = free_port();
    let p = Instance::new(1, SERVER).unwrap();
    let listen = format!("127.0.0.1:{port}");
    init(
        &p,
        &[
            ("llm.ListenIpInfo", listen.as_str()),
            TCP,
            ("llmdd.LinkSecret", "a-long-random-link-secret-0123456789"),
            ("llmdd.MaxConnsPerPeer", "2"),
        ],
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let src: IpAddr = "127.0.0.3".parse().unwrap();
    let _held: Vec<TcpStream> = (0..2).map(|_| connect_from(src, addr)).collect();
    let mut extra = connect_from(src, addr);
    let mut seen = Vec::new();
    extra.read_to_end(&mut seen).unwrap();
    let (_, msg) = wire::decode_frame(&seen).expect("one refusal frame, then EOF");
    match msg {
        Msg::Reply { status, message } => {
            assert_eq!(status, Status::LinkFailed.code());
            assert!(message.contains("llmdd.MaxConnsPerPeer"), "{message}");
            assert!(!message.contains(&SERVER.to_string()), "{message}");
        }
        m => panic!("not a refusal: {m:?}"),
    }
    assert!(
        !seen
            .windows(8)
            .any(|w| w == SERVER.to_le_bytes().as_slice()),
        "the cluster id went to an unproven peer"
    );
}

/// Connections release their descriptors when they end: 300 short-lived
/// attaches leave the server with the descriptors it had.
#[test]
fn ended_connections_release_their_descriptors() {
    if !in_child_process("ended_connections_release_their_descriptors") {
        return;
    }
    let f = Fixture::new(&[]);
    let puller = Puller::start(f.ds.clone());
    let token = f.token();
    let fds0 = count_dir("/proc/self/fd");
    for i in 0..300 {
        loop {
            let (s, r) = raw_attach(f.addr(), D_ID, token);
            match r {
                Some((0, _)) => break,
                // The server has not yet seen earlier connections end.
                Some(_) => std::thread::sleep(Duration::from_millis(10)),
                None => panic!("attach {i} got no answer"),
            }
            drop(s);
        }
    }
    let settled = wait_until(SETTLE, || count_dir("/proc/self/fd") <= fds0 + 8);
    let fds1 = count_dir("/proc/self/fd");
    println!("descriptors before {fds0}, after 300 attaches {fds1}");
    assert!(
        settled,
        "300 short-lived attaches left {} descriptors",
        fds1 - fds0
    );
    puller.finish();
}

// ------------------------------------------------------------------ item 6

/// A second client claiming the cluster id of a live link is refused with
/// `LLM_ALREADY_LINK`; once the real client is gone, the id is free again.
#[test]
fn a_forged_cluster_id_cannot_take_over_a_live_link() {
    let f = Fixture::new(&[]);
    let puller = Puller::start(f.ds.clone());
    let mut forger = connect(f.addr());
    let (status, message, _) = raw_hello(&mut forger, D_ID);
    assert_eq!(status, Status::AlreadyLink.code(), "{message}");
    assert!(message.contains("live link"), "{message}");
    // It names neither this server nor the real client's address.
    assert!(!message.contains(&P_ID.to_string()), "{message}");
    assert!(!message.contains("127.0.0.1"), "{message}");
    std::thread::sleep(Duration::from_millis(100));
    puller.finish();
    // The real decoder leaves (forced unlink closes its connections): now the
    // id is taken by whoever links next.
    let r =
        f.d.unlink_clusters(&[cluster(P_ID, f.port)], 3000, true)
            .unwrap();
    assert!(r[0].is_ok());
    let mut newcomer = connect(f.addr());
    let (status, message, _) = raw_hello(&mut newcomer, D_ID);
    assert_eq!(status, 0, "{message}");
    // …and the old decoder is refused while the newcomer's link is live.
    let r = f.d.link_clusters(&[cluster(P_ID, f.port)], 3000).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().status, Status::AlreadyLink);
}

// ------------------------------------------------------------------ item 9

/// A non-forced unlink waits for a Read the server is still sending: every
/// byte arrives, and the unlink is answered only afterwards.
#[test]
fn non_forced_unlink_waits_for_requests_in_flight() {
    let mut f = Fixture::new(&[("llm.SyncKvCacheWaitTime", "5000")]);
    f.add_big();
    let puller = Puller::start(f.ds.clone());
    let mut control = connect(f.addr());
    let (status, message, token) = raw_hello(&mut control, 300);
    assert_eq!(status, 0, "{message}");
    let (mut data, r) = raw_attach(f.addr(), 300, token);
    assert_eq!(r.map(|r| r.0), Some(0));
    send(&mut data, &Msg::Resolve { key: blocks_key(1) });
    let entry = match recv(&mut data) {
        Some(Msg::Resolved {
            status: 0,
            entry: Some(e),
            ..
        }) => e,
        m => panic!("resolve failed: {m:?}"),
    };
    let len = BIG_BLOCKS * BIG_BLOCK;
    let seg = llmdd::cache::types::Segment {
        dst: 0,
        src: entry.addrs[0],
        len,
    };
    send(
        &mut data,
        &Msg::Read {
            segments: vec![seg],
            total: len,
        },
    );
    match recv(&mut data) {
        Some(Msg::ReadData {
            status: 0, total, ..
        }) => assert_eq!(total, len),
        m => panic!("read refused: {m:?}"),
    }
    let mut got = vec![0u8; len as usize];
    data.read_exact(&mut got[..1 << 20]).unwrap();
    // Mid-transfer: unlink on the control connection.
    send(&mut control, &Msg::Unlink);
    std::thread::sleep(Duration::from_millis(300));
    control.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let early = control.peek(&mut b);
    assert!(
        matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the unlink was answered (or the link cut) while a read was in flight: {early:?}"
    );
    control.set_nonblocking(false).unwrap();
    data.read_exact(&mut got[1 << 20..])
        .expect("the read in flight was cut by the unlink");
    assert!(
        got.iter().enumerate().all(|(i, &v)| v == pattern(1, 0, i)),
        "wrong bytes"
    );
    match recv(&mut control) {
        Some(Msg::Reply { status: 0, .. }) => {}
        m => panic!("unlink not acknowledged: {m:?}"),
    }
    assert!(wait_until(SETTLE, || f.ps.link(300).is_none()));
    puller.finish();
}

// ----------------------------------------------------------------- item 10

/// A relay on 127.0.0.1 to `to`: forwards every connection both ways, except
/// that while stalled the server's bytes on every connection after the first
/// (the link's control connection, which keeps the link alive) are held back.
/// It lets a transfer time out with a timeout generous enough for a busy
/// machine, where a timeout of a few milliseconds would also fail the
/// transfers meant to work.
struct StallRelay {
    port: u16,
    stalled: Arc<AtomicBool>,
}

impl StallRelay {
    fn start(to: SocketAddr) -> StallRelay {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let stalled = Arc::new(AtomicBool::new(false));
        let st = stalled.clone();
        std::thread::spawn(move || {
            for (i, c) in l.incoming().enumerate() {
                let (Ok(client), Ok(server)) = (c, TcpStream::connect(to)) else {
                    return;
                };
                let gate = (i > 0).then(|| st.clone());
                let pipes = [
                    (
                        client.try_clone().unwrap(),
                        server.try_clone().unwrap(),
                        None,
                    ),
                    (server, client, gate),
                ];
                for (mut from, mut to, gate) in pipes {
                    std::thread::spawn(move || {
                        let mut buf = vec![0u8; 64 << 10];
                        while let Ok(n @ 1..) = from.read(&mut buf) {
                            while gate.as_ref().is_some_and(|g| g.load(Ordering::Acquire)) {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        StallRelay { port, stalled }
    }

    fn stall(&self, on: bool) {
        self.stalled.store(on, Ordering::Release);
    }
}

/// A transfer that times out drops its own connection only: the server keeps
/// the link and the client's next transfers work on it. The server's bytes
/// are held back by a relay, so the pull times out whatever the machine's
/// load, and the pull after it has the same generous timeout.
#[test]
fn a_transfer_timeout_drops_one_connection_not_the_link() {
    let mut f = Fixture::new(&[]);
    f.add_big();
    let puller = Puller::start(f.ds.clone());
    let relay = StallRelay::start(f.addr());
    const WAIT_MS: u64 = 3000;
    let v = decoder(201, &[("llm.SyncKvCacheWaitTime", "3000")]);
    link(&v, relay.port);
    let vs = v.session().unwrap();
    let mut dst: Vec<Vec<u8>> = (0..2)
        .map(|_| vec![0u8; (BIG_BLOCKS * BIG_BLOCK) as usize])
        .collect();
    let addrs: Vec<u64> = dst.iter_mut().map(|m| m.as_mut_ptr() as u64).collect();
    let rec = vs
        .caches()
        .register_blocks_cache(&desc(2, BIG_BLOCKS, BIG_BLOCK), &addrs, None, None)
        .unwrap();
    let all: Vec<u64> = (0..BIG_BLOCKS).collect();
    relay.stall(true);
    let t0 = Instant::now();
    let e = vs
        .caches()
        .pull_blocks(&blocks_key(1), rec.id, &all, &all, &LayerSel::default())
        .unwrap_err();
    assert_eq!(e.status, Status::Timeout, "{}", e.message);
    assert!(t0.elapsed() >= Duration::from_millis(WAIT_MS));
    relay.stall(false);
    // Time for the server to drop the link, if it wrongly did.
    std::thread::sleep(Duration::from_millis(300));
    let server_side = f.ps.link(201);
    assert!(
        server_side.as_ref().is_some_and(|l| !l.is_closed()),
        "the server dropped the link after one transfer timeout"
    );
    for m in dst.iter_mut() {
        m[..BIG_BLOCK as usize].fill(0);
    }
    vs.caches()
        .pull_blocks(&blocks_key(1), rec.id, &[5], &[0], &LayerSel::default())
        .expect("a pull after the timeout, on the same link");
    assert!((0..BIG_BLOCK as usize).all(|i| dst[0][i] == pattern(1, 0, 5 * BIG_BLOCK as usize + i)));
    puller.finish();
}

/// When the server drops a link (here a forced unlink on the server), the
/// client learns it at once: transfers say LINK_FAILED, and link_clusters
/// and a non-forced unlink work without a forced unlink first.
#[test]
fn a_link_the_server_drops_is_known_to_the_client() {
    let f = Fixture::new(&[]);
    let other = decoder(201, &[]);
    link(&other, f.port);
    let puller = Puller::start(other.session().unwrap());
    let dst_link = f.ds.link(P_ID).unwrap();
    let drop_on_server = || {
        let r =
            f.p.unlink_clusters(&[cluster(D_ID, 1)], 3000, true)
                .unwrap();
        assert!(r[0].is_ok());
    };
    drop_on_server();
    assert!(
        wait_until(SETTLE, || dst_link.is_dead()),
        "the client did not notice the server dropping the link"
    );
    let mut dst = [vec![0u8; 4096], vec![0u8; 4096]];
    let addrs: Vec<u64> = dst.iter_mut().map(|m| m.as_mut_ptr() as u64).collect();
    let rec =
        f.ds.caches()
            .register_blocks_cache(&desc(2, 1, SMALL_BLOCK), &addrs, None, None)
            .unwrap();
    let pull = || {
        f.ds.caches()
            .pull_blocks(&blocks_key(0), rec.id, &[3], &[0], &LayerSel::default())
    };
    let e = pull().unwrap_err();
    assert_eq!(e.status, Status::LinkFailed, "{}", e.message);
    // link_clusters again, no forced unlink needed; the new link works.
    link(&f.d, f.port);
    pull().unwrap();
    assert_eq!(dst[1][7], pattern(0, 1, 3 * 4096 + 7));
    // Dropped again: a non-forced unlink now simply succeeds.
    let l2 = f.ds.link(P_ID).unwrap();
    drop_on_server();
    assert!(wait_until(SETTLE, || l2.is_dead()));
    let r =
        f.d.unlink_clusters(&[cluster(P_ID, f.port)], 3000, false)
            .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert!(f.ds.link(P_ID).is_none());
    puller.finish();
}

/// Brings the loopback interface of this network namespace up or down.
fn set_loopback(up: bool) {
    // SAFETY: ioctls on a socket we own with a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
        let flags = &mut req.ifr_ifru.ifru_flags;
        if up {
            *flags |= libc::IFF_UP as i16;
        } else {
            *flags &= !(libc::IFF_UP as i16);
        }
        assert_eq!(libc::ioctl(fd, libc::SIOCSIFFLAGS, &req), 0);
        libc::close(fd);
    }
}

/// A peer that vanishes without a FIN (its network is gone) is found dead by
/// keepalive within `llmdd.DeadPeerTimeoutMs` on an idle link, on both ends,
/// and the client links again once the network is back. Runs in a network
/// namespace of its own, whose loopback it takes down.
#[test]
fn a_dead_peer_on_an_idle_link_is_found_on_both_ends() {
    if !in_child_process("a_dead_peer_on_an_idle_link_is_found_on_both_ends") {
        return;
    }
    // SAFETY: unshare for this thread (the test's own), before any socket.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        let e = std::io::Error::last_os_error();
        println!("SKIP: cannot create a network namespace ({e}); keepalive not exercised");
        return;
    }
    set_loopback(true);
    let dead_peer = ("llmdd.DeadPeerTimeoutMs", "2000");
    let f = Fixture::new(&[dead_peer]);
    let d2 = decoder(201, &[dead_peer]);
    link(&d2, f.port);
    let mut dst = [vec![0u8; 4096], vec![0u8; 4096]];
    let addrs: Vec<u64> = dst.iter_mut().map(|m| m.as_mut_ptr() as u64).collect();
    let s2 = d2.session().unwrap();
    let rec = s2
        .caches()
        .register_blocks_cache(&desc(2, 1, SMALL_BLOCK), &addrs, None, None)
        .unwrap();
    let pull = || {
        s2.caches()
            .pull_blocks(&blocks_key(0), rec.id, &[9], &[0], &LayerSel::default())
    };
    pull().unwrap();
    let client_link = s2.link(P_ID).unwrap();
    set_loopback(false);
    let t = Instant::now();
    let both = wait_until(Duration::from_secs(7), || {
        f.ps.link(201).is_none() && client_link.is_dead()
    });
    let el = t.elapsed();
    set_loopback(true);
    println!("dead peer found after {el:?} (bound 2 s)");
    assert!(
        both,
        "after {el:?}: server link present {}, client dead {:?}",
        f.ps.link(201).is_some(),
        client_link.dead_reason()
    );
    assert!(el >= Duration::from_millis(1500), "found too early: {el:?}");
    link(&d2, f.port);
    pull().unwrap();
    assert_eq!(dst[0][11], pattern(0, 0, 9 * 4096 + 11));
    drop(f);
}

// ----------------------------------------------------------------- item 11

/// With no file descriptor left, the listener answers new connections with
/// a refusal at once (no link timeout), keeps serving the links it has, and
/// takes new links again once descriptors are free.
#[test]
fn out_of_descriptors_the_listener_refuses_at_once() {
    if !in_child_process("out_of_descriptors_the_listener_refuses_at_once") {
        return;
    }
    let f = Fixture::new(&[]);
    let puller = Puller::start(f.ds.clone());
    // The real decoder's request connection opens with its first pull (data
    // connections open on first need): before the descriptors run out.
    let l = f.ds.link(P_ID).unwrap();
    assert!(
        wait_until(SETTLE, || l.conn_count() == 2),
        "{} connections",
        l.conn_count()
    );
    // Client sockets made now; connected once the limit is hit.
    let clients: Vec<TcpStream> = (0..4)
        .map(|_| {
            // SAFETY: a plain socket we own.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            assert!(fd >= 0);
            // SAFETY: fd is ours.
            unsafe { TcpStream::from_raw_fd(fd) }
        })
        .collect();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reading and lowering our own limit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut old) };
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let lim = libc::rlimit {
        rlim_cur: highest + 1,
        rlim_max: old.rlim_max,
    };
    // SAFETY: lowering our own soft limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    // Fill every free number below the limit.
    let mut fillers = Vec::new();
    loop {
        // SAFETY: opening /dev/null.
        let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            break;
        }
        fillers.push(fd);
    }
    let mut results = Vec::new();
    for c in &clients {
        let t = Instant::now();
        let r = raw_connect_and_hello(c, f.addr());
        results.push((r, t.elapsed()));
    }
    for fd in fillers {
        // SAFETY: closing what we opened.
        unsafe { libc::close(fd) };
    }
    // SAFETY: restoring our own limit.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &old) };
    for (r, el) in &results {
        match r {
            Some(Msg::Reply { status, message }) => {
                assert_eq!(*status, Status::LinkFailed.code());
                assert!(message.contains("file descriptors"), "{message}");
                assert!(*el < Duration::from_secs(1), "refusal took {el:?}");
            }
            m => panic!("no refusal while out of descriptors: {m:?} after {el:?}"),
        }
    }
    drop(clients);
    // Descriptors are back: a new client links and pulls.
    let d2 = decoder(201, &[]);
    link(&d2, f.port);
    let p2 = Puller::start(d2.session().unwrap());
    std::thread::sleep(Duration::from_millis(50));
    p2.finish();
    puller.finish();
}

/// Connects an existing socket to `addr`, sends a Hello and reads the answer
/// (None: nothing within 3 s).
fn raw_connect_and_hello(s: &TcpStream, addr: SocketAddr) -> Option<Msg> {
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = addr else {
        panic!("v4 only")
    };
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: to.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(to.ip().octets()),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: connecting a socket we own.
    let r = unsafe { libc::connect(s.as_raw_fd(), &sa as *const _ as *const _, len) };
    assert_eq!(r, 0, "connect: {}", std::io::Error::last_os_error());
    let mut s = s;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(&wire::encode_to_vec(&hello(), 0)).ok()?;
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let header = wire::decode_header(&h).ok()?;
    let mut payload = vec![0u8; header.payload_len as usize];
    s.read_exact(&mut payload).ok()?;
    wire::decode_payload(&header, &payload).ok()
}

/// `OpenConns` is the server's request: a client that sends it on its data
/// connection loses that connection, and the server keeps serving the real
/// decoder.
#[test]
fn open_conns_from_a_client_is_refused() {
    let f = Fixture::new(&[]);
    let puller = Puller::start(f.ds.clone());
    let token = f.token();
    let (mut c, r) = raw_attach(f.addr(), D_ID, token);
    assert_eq!(r.map(|r| r.0), Some(0));
    send(&mut c, &Msg::OpenConns { count: 4 });
    assert!(
        closed_within(&mut c, Duration::from_secs(5)),
        "a client's OpenConns did not end its connection"
    );
    puller.finish();
}

/// A server that keeps asking its client for reverse connections (`OpenConns`
/// with huge counts, back to back) gets at most the client's
/// `llmdd.DataConnections` of them: later asks are refused with a status and
/// the reason, the client's connections stay bounded, and the real decoder's
/// pulls keep arriving byte-exact.
#[test]
fn a_server_asking_for_ever_more_connections_gets_the_clients_cap() {
    let f = Fixture::new(&[]);
    let puller = Puller::start(f.ds.clone());
    let cap = f.ds.config().data_connections as usize;
    let server_side = f.ps.link(D_ID).expect("the prompt has the decoder's link");
    let client_side = f.ds.link(P_ID).expect("the decoder has its link");
    let mut refused = 0;
    for i in 0..50 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let count = if i % 2 == 0 { u32::MAX } else { 1000 };
        match server_side.control_request(&Msg::OpenConns { count }, deadline) {
            Ok(Msg::Reply { status: 0, .. }) => {}
            Ok(Msg::Reply { status, message }) => {
                assert_eq!(status, Status::LinkFailed.code(), "{message}");
                assert!(
                    message.contains(&format!("at most {cap} reverse connections")),
                    "{message}"
                );
                refused += 1;
            }
            r => panic!("OpenConns {count}: {r:?}"),
        }
        // Control, the puller's request connections (one per small pull),
        // and at most `cap` reverse connections.
        let n = client_side.conn_count();
        assert!(
            n <= 1 + 2 * cap,
            "the client holds {n} connections after {} asks (cap {cap})",
            i + 1
        );
    }
    assert!(
        refused >= 40,
        "only {refused} of 50 asks were refused once the cap was reached"
    );
    assert!(!client_side.is_dead() && !client_side.is_closed());
    puller.finish();
}
