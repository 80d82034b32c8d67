//! The event-driven control plane (issue 10, item 2): one poller and a fixed
//! pool serve every connection of every link in the process, so threads do
//! not grow with links; a peer stalled inside a frame costs a buffer, not a
//! worker; TCP data connections close when idle and reopen when a transfer
//! needs them; connection floods are refused as before.

mod common;

use common::raw::{connect, recv, send};
use common::{cluster, count_dir, free_port, in_child_process, init};

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmdd::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement};
use llmdd::datadist::Instance;
use llmdd::testing::wire::{self, Msg};
use llmdd::testing::Session;
use llmdd::Status;

const P_ID: u64 = 100;
const BLOCKS: u64 = 8;
const BLOCK: u64 = 4096;
const TCP: (&str, &str) = ("llmdd.SameHost", "off");

fn desc(blocks: u64) -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: 2,
        data_type: DataType::Uint8,
        shape: vec![blocks as i64, BLOCK as i64],
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

fn pattern(t: usize, off: usize) -> u8 {
    ((off * 13 + t * 5 + off / 4096) % 253) as u8
}

fn key() -> CacheKey {
    CacheKey::Blocks {
        cluster_id: P_ID,
        model_id: 0,
    }
}

/// A prompt (server) with one patterned 2 x 8-block cache.
struct Prompt {
    _p: Instance,
    ps: Arc<Session>,
    port: u16,
    _mem: Vec<Vec<u8>>,
}

impl Prompt {
    fn new(extra: &[(&str, &str)]) -> Prompt {
        let port = free_port();
        let p = Instance::new(1, P_ID).unwrap();
        let listen = format!("127.0.0.1:{port}");
        let mut e = vec![("llm.ListenIpInfo", listen.as_str())];
        e.extend_from_slice(extra);
        init(&p, &e);
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
            .register_blocks_cache(&desc(BLOCKS), &addrs, Some(key()), None)
            .unwrap();
        Prompt {
            _p: p,
            ps,
            port,
            _mem: mem,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// A decoder instance `id` linked to the prompt.
fn decoder(id: u64, port: u16, extra: &[(&str, &str)]) -> Instance {
    let d = Instance::new(2, id).unwrap();
    init(&d, extra);
    let r = d.link_clusters(&[cluster(P_ID, port)], 10_000).unwrap();
    assert!(r[0].is_ok(), "link_clusters of {id}: {:?}", r[0]);
    d
}

/// Pulls every block of the prompt's cache into fresh memory and checks
/// every byte. The memory stays registered (a cache cannot be unregistered
/// while linked), so it is leaked: it must outlive the instance.
fn pull_and_check(ds: &Session) {
    let dst: Vec<&'static mut [u8]> = (0..2)
        .map(|_| &mut *vec![0u8; (BLOCKS * BLOCK) as usize].leak())
        .collect();
    let addrs: Vec<u64> = dst.iter().map(|v| v.as_ptr() as u64).collect();
    let rec = ds
        .caches()
        .register_blocks_cache(&desc(BLOCKS), &addrs, None, None)
        .unwrap();
    let blocks: Vec<u64> = (0..BLOCKS).collect();
    ds.caches()
        .pull_blocks(&key(), rec.id, &blocks, &blocks, &LayerSel::default())
        .unwrap();
    for (t, v) in dst.iter().enumerate() {
        assert!(
            v.iter().enumerate().all(|(i, &b)| b == pattern(t, i)),
            "tensor {t}: wrong bytes"
        );
    }
}

fn threads() -> usize {
    count_dir("/proc/self/task")
}

fn links_do_not_add_threads(extra: &[(&str, &str)], name: &str) {
    if !in_child_process(name) {
        return;
    }
    let p = Prompt::new(extra);
    let mut ds = vec![decoder(1000, p.port, extra)];
    pull_and_check(&ds[0].session().unwrap());
    let t8 = {
        for i in 1..8 {
            ds.push(decoder(1000 + i, p.port, extra));
        }
        threads()
    };
    for i in 8..64 {
        ds.push(decoder(1000 + i, p.port, extra));
    }
    for d in &ds {
        pull_and_check(&d.session().unwrap());
    }
    let t64 = threads();
    println!("{name}: threads with 8 links {t8}, with 64 links {t64}");
    assert_eq!(p.ps.link_count(), 64);
    if extra.is_empty() {
        // One-sided links hold their control connection and nothing else,
        // on both ends, after pulls.
        for (i, d) in ds.iter().enumerate() {
            let id = 1000 + i as u64;
            assert_eq!(
                p.ps.link(id).unwrap().conn_count(),
                1,
                "prompt side of {id}"
            );
            let l = d.session().unwrap().link(P_ID).unwrap();
            assert_eq!(l.conn_count(), 1, "decoder side of {id}");
        }
    }
    assert!(
        t64 <= t8 + 2,
        "56 more links added {} threads",
        t64.saturating_sub(t8)
    );
}

/// 64 same-process links (prompt and 64 decoders in this process) cost no
/// thread per link.
#[test]
fn threads_do_not_grow_with_links() {
    links_do_not_add_threads(&[], "threads_do_not_grow_with_links");
}

/// The same over TCP.
#[test]
fn threads_do_not_grow_with_tcp_links() {
    links_do_not_add_threads(&[TCP], "threads_do_not_grow_with_tcp_links");
}

/// A connection attached to the link of `cluster` with its token.
fn attach(addr: SocketAddr, cluster: u64, token: u64) -> TcpStream {
    let mut s = connect(addr);
    send(
        &mut s,
        &Msg::Attach {
            cluster_id: cluster,
            link_token: token,
            reverse: false,
        },
    );
    match recv(&mut s) {
        Some(Msg::Reply { status: 0, .. }) => s,
        m => panic!("attach refused: {m:?}"),
    }
}

/// More peers than the pool has workers each send 3 bytes of a frame header
/// on a linked connection and stall: another link's pulls still complete at
/// once (the poller holds their partial frames; no worker waits on them),
/// and the stalled connections are dropped after `llmdd.IoTimeoutMs`.
#[test]
fn a_half_sent_frame_does_not_block_other_links() {
    let p = Prompt::new(&[TCP, ("llmdd.IoTimeoutMs", "4000")]);
    let a = decoder(201, p.port, &[TCP]);
    let b = decoder(202, p.port, &[TCP]);
    let token = p.ps.link(201).unwrap().token;
    let header = wire::encode_to_vec(&Msg::GetTable, 0);
    let mut stalled: Vec<TcpStream> = (0..24)
        .map(|_| {
            let mut s = attach(p.addr(), 201, token);
            s.write_all(&header[..3]).unwrap();
            s
        })
        .collect();
    let bs = b.session().unwrap();
    let t = Instant::now();
    for _ in 0..20 {
        pull_and_check(&bs);
    }
    let el = t.elapsed();
    println!("20 pulls beside 24 stalled frames: {el:?}");
    assert!(
        el < Duration::from_secs(3),
        "pulls waited for stalled peers: {el:?}"
    );
    // The stalled link's own client is not affected either.
    pull_and_check(&a.session().unwrap());
    for (i, s) in stalled.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut b = [0u8; 16];
        let r = s.read(&mut b);
        assert!(
            matches!(r, Ok(0)) || r.is_err(),
            "stalled connection {i} was not dropped: {r:?}"
        );
    }
}

/// A flood of connections from one address beyond `llmdd.MaxConnsPerPeer`
/// is refused (each with the reason), while a real client keeps pulling.
#[test]
fn a_connection_flood_beyond_the_cap_is_refused() {
    let p = Prompt::new(&[TCP, ("llmdd.MaxConnsPerPeer", "16")]);
    let d = decoder(300, p.port, &[TCP]);
    let ds = d.session().unwrap();
    pull_and_check(&ds);
    let open = p.ps.peer_conns(IpAddr::from([127, 0, 0, 1]));
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..64 {
        let mut s = connect(p.addr());
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        match recv(&mut s) {
            Some(Msg::Reply { status, message }) => {
                assert_eq!(status, Status::LinkFailed.code());
                assert!(message.contains("llmdd.MaxConnsPerPeer"), "{message}");
                refused += 1;
            }
            // Admitted: it waits for its first frame.
            None => held.push(s),
            m => panic!("unexpected answer: {m:?}"),
        }
    }
    println!(
        "{open} connections of the real link, {} admitted, {refused} refused",
        held.len()
    );
    assert_eq!(held.len() + open, 16);
    assert_eq!(refused, 64 - held.len());
    pull_and_check(&ds);
}

/// TCP data connections open when a transfer first needs them and close
/// when idle, on both ends: a new link holds only its control connection; a
/// pull by the decoder opens a request connection; a pull by the prompt over
/// the link it accepted makes it ask the decoder for a reverse connection
/// (`OpenConns`); unused, each closes, and the next transfer opens it again,
/// every byte right.
#[test]
fn an_idle_data_connection_closes_and_reopens() {
    if !in_child_process("an_idle_data_connection_closes_and_reopens") {
        return;
    }
    llmdd::testing::set_data_idle_close(Duration::from_millis(1500));
    let p = Prompt::new(&[TCP]);
    let d = decoder(400, p.port, &[TCP]);
    let ds = d.session().unwrap();
    let ours = ds.link(P_ID).unwrap();
    let theirs = p.ps.link(400).unwrap();
    let settle = |want: usize| {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if ours.conn_count() == want && theirs.conn_count() == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    };
    // Only the control connection at link time.
    assert!(
        settle(1),
        "after linking: {} here, {} on the prompt",
        ours.conn_count(),
        theirs.conn_count()
    );
    pull_and_check(&ds);
    assert_eq!(
        ours.conn_count(),
        2,
        "the pull opened no request connection"
    );
    assert!(
        settle(1),
        "idle request connections stayed open: {} here, {} on the prompt",
        ours.conn_count(),
        theirs.conn_count()
    );
    pull_and_check(&ds);
    assert_eq!(
        ours.conn_count(),
        2,
        "the pull did not reopen one connection"
    );
    assert!(settle(1), "the reopened connection did not close again");

    // The prompt pulls from the decoder over the link it accepted.
    let dkey = CacheKey::Blocks {
        cluster_id: 400,
        model_id: 0,
    };
    let src: Vec<&'static mut [u8]> = (0..2)
        .map(|t| {
            let v: Vec<u8> = (0..(BLOCKS * BLOCK) as usize)
                .map(|i| pattern(t + 7, i))
                .collect();
            &mut *v.leak()
        })
        .collect();
    let saddrs: Vec<u64> = src.iter().map(|v| v.as_ptr() as u64).collect();
    ds.caches()
        .register_blocks_cache(&desc(BLOCKS), &saddrs, Some(dkey), None)
        .unwrap();
    let dst: Vec<&'static mut [u8]> = (0..2)
        .map(|_| &mut *vec![0u8; (BLOCKS * BLOCK) as usize].leak())
        .collect();
    let daddrs: Vec<u64> = dst.iter().map(|v| v.as_ptr() as u64).collect();
    let rec =
        p.ps.caches()
            .register_blocks_cache(&desc(BLOCKS), &daddrs, None, None)
            .unwrap();
    let blocks: Vec<u64> = (0..BLOCKS).collect();
    for round in 0..2 {
        p.ps.caches()
            .pull_blocks(&dkey, rec.id, &blocks, &blocks, &LayerSel::default())
            .unwrap();
        for (t, v) in dst.iter().enumerate() {
            assert!(
                v.iter().enumerate().all(|(i, &b)| b == pattern(t + 7, i)),
                "round {round}, tensor {t}: wrong bytes"
            );
        }
        assert_eq!(
            theirs.conn_count(),
            2,
            "round {round}: the prompt's pull opened no reverse connection"
        );
        assert!(
            settle(1),
            "round {round}: the idle reverse connection stayed open: {} here, {} on the prompt",
            ours.conn_count(),
            theirs.conn_count()
        );
    }
}
