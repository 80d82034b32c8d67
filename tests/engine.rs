//! The byte-addressed transfer engine (src/engine) with two engines in one
//! process on 127.0.0.1: over the same-process path and, with
//! `llmdd.SameHost=0` on both, over TCP.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use llmdd::datadist::Notice;
use llmdd::engine::{ConnState, Engine, Op, OpDesc, ReqStatus};
use llmdd::Status;

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
        o.insert("llmdd.SameHost".to_string(), "0".to_string());
    }
    o
}

fn engine(tcp: bool) -> (std::sync::Arc<Engine>, String) {
    for _ in 0..20 {
        let name = format!("127.0.0.1:{}", free_port());
        if let Ok(e) = Engine::new(&name, &opts(tcp)) {
            return (e, name);
        }
    }
    panic!("no free port");
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn strided(local: &[u8], remote: &[u8], n: usize, len: usize) -> Vec<OpDesc> {
    // Every other `len` chunk on the remote side, packed locally.
    (0..n)
        .map(|i| OpDesc {
            local_addr: local.as_ptr() as usize + i * len,
            remote_addr: remote.as_ptr() as usize + 2 * i * len,
            len,
        })
        .collect()
}

fn read_write(tcp: bool) {
    let (server, sname) = engine(tcp);
    let (client, _) = engine(tcp);
    let src = pattern(1 << 20, 3);
    let mut dst = vec![0u8; 1 << 19];
    server
        .register_mem(src.as_ptr() as u64, src.len() as u64, 1)
        .unwrap();
    client
        .register_mem(dst.as_ptr() as u64, dst.len() as u64, 0)
        .unwrap();
    let descs = strided(&dst, &src, 128, 4096);
    // Not connected yet.
    let e = client
        .transfer(&sname, Op::Read, &descs, 1000, None)
        .unwrap_err();
    assert_eq!(e.status, Status::NotYetLink, "{}", e.message);
    client.connect(&sname, 5000).unwrap();
    assert_eq!(
        client.connect(&sname, 5000).unwrap_err().status,
        Status::AlreadyLink
    );
    assert_eq!(
        client.connect_status(&sname).unwrap().0,
        ConnState::Connected
    );
    client
        .transfer(&sname, Op::Read, &descs, 5000, None)
        .unwrap();
    for i in 0..128 {
        assert_eq!(
            &dst[i * 4096..(i + 1) * 4096],
            &src[2 * i * 4096..(2 * i + 1) * 4096]
        );
    }
    // WRITE back, shifted by one chunk, then a notification after the data.
    let mut back = vec![0u8; 1 << 20];
    server
        .register_mem(back.as_mut_ptr() as u64, back.len() as u64, 1)
        .unwrap();
    for b in dst.iter_mut() {
        *b = b.wrapping_add(1);
    }
    let wdescs = strided(&dst, &back, 128, 4096);
    let note = Notice {
        name: "kv".into(),
        msg: "req-1 done".into(),
    };
    client
        .transfer(&sname, Op::Write, &wdescs, 5000, Some(&note))
        .unwrap();
    assert_eq!(server.take_notifies(), vec![note.clone()]);
    for i in 0..128 {
        assert_eq!(
            &back[2 * i * 4096..(2 * i + 1) * 4096],
            &dst[i * 4096..(i + 1) * 4096]
        );
    }
    // Outside the peer's memory, outside ours: refused, nothing moves.
    let mut bad = descs.clone();
    bad[5].remote_addr = src.as_ptr() as usize + src.len() - 100;
    bad[5].len = 101;
    let e = client
        .transfer(&sname, Op::Read, &bad, 1000, None)
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("op_descs[5] remote"), "{}", e.message);
    let mut bad = descs.clone();
    bad[0].local_addr = dst.as_ptr() as usize + dst.len();
    let e = client
        .transfer(&sname, Op::Read, &bad, 1000, None)
        .unwrap_err();
    assert!(e.message.contains("op_descs[0] local"), "{}", e.message);
    // Async: many requests, polled in a batch, user data handed back.
    dst.fill(0);
    let reqs: Vec<_> = (0..4)
        .map(|k| {
            client
                .transfer_async(
                    &sname,
                    Op::Read,
                    &descs[k * 32..(k + 1) * 32],
                    -1,
                    None,
                    k + 100,
                )
                .unwrap()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while seen.len() < 4 && Instant::now() < deadline {
        for (r, s) in client.poll(usize::MAX, true) {
            assert_eq!(s, ReqStatus::Completed);
            seen.push(r.user_data);
        }
    }
    seen.sort();
    assert_eq!(seen, [100, 101, 102, 103]);
    assert!(reqs.iter().all(|r| r.outcome().is_some()));
    assert_eq!(&dst[..4096], &src[..4096]);
    // The server sends a notification back over the same link.
    server.connect(&client_name(&client), 5000).unwrap();
    server
        .send_notify(
            &client_name(&client),
            &Notice {
                name: "a".into(),
                msg: "b".into(),
            },
            1000,
        )
        .unwrap();
    assert_eq!(client.next_notify().unwrap().msg, "b");
    server.disconnect(&client_name(&client), 1000).unwrap();
    // The client's link is untouched by the server's disconnect.
    client
        .transfer(&sname, Op::Read, &descs, 5000, None)
        .unwrap();
    client.disconnect(&sname, 1000).unwrap();
    assert_eq!(
        client.connect_status(&sname).unwrap().0,
        ConnState::NotConnect
    );
    assert_eq!(
        client.disconnect(&sname, 1000).unwrap_err().status,
        Status::NotYetLink
    );
    client.finalize();
    server.finalize();
}

fn client_name(e: &Engine) -> String {
    e.name().to_string()
}

#[test]
fn same_process_read_write_async_notify() {
    read_write(false);
}

#[test]
fn tcp_read_write_async_notify() {
    read_write(true);
}

#[test]
fn async_connect_and_failure_states() {
    let (server, sname) = engine(false);
    let (client, _) = engine(false);
    client.connect_async(&sname, 5000).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, _) = client.connect_status(&sname).unwrap();
        if s == ConnState::Connected {
            break;
        }
        assert!(
            matches!(s, ConnState::ConnectPending | ConnState::Connecting),
            "{s:?}"
        );
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        client.connect_statuses().unwrap(),
        vec![(sname.clone(), ConnState::Connected)]
    );
    client.disconnect_async(&sname, 1000).unwrap();
    while client.connect_status(&sname).unwrap().0 != ConnState::NotConnect {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Nobody listens there: CONNECT_FAILED with the reason.
    let dead = format!("127.0.0.1:{}", free_port());
    assert!(client.connect(&dead, 500).is_err());
    let (s, why) = client.connect_status(&dead).unwrap();
    assert_eq!(s, ConnState::ConnectFailed);
    assert!(!why.is_empty());
    // Bad arguments.
    assert_eq!(
        client.connect("nonsense", 100).unwrap_err().status,
        Status::ParamInvalid
    );
    assert_eq!(
        client.connect("127.0.0.1", 100).unwrap_err().status,
        Status::ParamInvalid
    );
    assert_eq!(
        client.connect(&sname, 0).unwrap_err().status,
        Status::ParamInvalid
    );
    assert_eq!(
        client.connect(client.name(), 100).unwrap_err().status,
        Status::ParamInvalid
    );
    drop(server);
}

#[test]
fn cancel_and_finalize_end_requests() {
    let (server, sname) = engine(true);
    let (client, _) = engine(true);
    let src = vec![7u8; 64 << 20];
    let dst = vec![0u8; 64 << 20];
    server
        .register_mem(src.as_ptr() as u64, src.len() as u64, 1)
        .unwrap();
    client
        .register_mem(dst.as_ptr() as u64, dst.len() as u64, 1)
        .unwrap();
    client.connect(&sname, 5000).unwrap();
    let descs: Vec<OpDesc> = (0..(64 << 20) / 4096)
        .map(|i| OpDesc {
            local_addr: dst.as_ptr() as usize + i * 4096,
            remote_addr: src.as_ptr() as usize + i * 4096,
            len: 4096,
        })
        .collect();
    // Mix: one is cancelled at once; all end with a final status.
    let reqs: Vec<_> = (0..4)
        .map(|_| {
            client
                .transfer_async(&sname, Op::Read, &descs, 20_000, None, 0)
                .unwrap()
        })
        .collect();
    assert!(reqs[3].cancel());
    for r in &reqs {
        let o = r
            .wait(Some(Instant::now() + Duration::from_secs(30)))
            .expect("finished");
        assert!(matches!(o.status, ReqStatus::Completed | ReqStatus::Failed));
    }
    let o = reqs[3].outcome().unwrap();
    if o.status == ReqStatus::Failed {
        assert!(o.error.unwrap().message.contains("cancelled"));
    }
    // Finalize with a request in flight: it ends (never hangs).
    let r = client
        .transfer_async(&sname, Op::Read, &descs, 20_000, None, 0)
        .unwrap();
    client.finalize();
    assert!(r
        .wait(Some(Instant::now() + Duration::from_secs(30)))
        .is_some());
    server.finalize();
}

#[test]
fn auto_connect_connects_on_first_use() {
    let (server, sname) = engine(false);
    let mut o = opts(false);
    o.insert("AutoConnect".into(), "1".into());
    let name = format!("127.0.0.1:{}", free_port());
    let client = Engine::new(&name, &o).unwrap();
    let src = pattern(8192, 9);
    let dst = vec![0u8; 8192];
    server.register_mem(src.as_ptr() as u64, 8192, 1).unwrap();
    client.register_mem(dst.as_ptr() as u64, 8192, 1).unwrap();
    let d = [OpDesc {
        local_addr: dst.as_ptr() as usize,
        remote_addr: src.as_ptr() as usize,
        len: 8192,
    }];
    assert_eq!(
        client.connect_status(&sname).unwrap().0,
        ConnState::NotConnect
    );
    client.transfer(&sname, Op::Read, &d, 5000, None).unwrap();
    assert_eq!(dst, src);
    assert_eq!(
        client.connect_status(&sname).unwrap().0,
        ConnState::Connected
    );
    // Unknown and misspelt options are refused.
    let mut bad = BTreeMap::new();
    bad.insert("AutoConect".to_string(), "1".to_string());
    let e = Engine::new(&format!("127.0.0.1:{}", free_port()), &bad)
        .err()
        .unwrap();
    assert_eq!(e.status, Status::ParamInvalid);
}

#[test]
fn a_dead_peer_reads_connect_failed_and_connect_replaces_its_link() {
    let (server, sname) = engine(true);
    let (client, _) = engine(true);
    let src = pattern(4096, 1);
    let dst = vec![0u8; 4096];
    server.register_mem(src.as_ptr() as u64, 4096, 1).unwrap();
    client.register_mem(dst.as_ptr() as u64, 4096, 1).unwrap();
    client.connect(&sname, 5000).unwrap();
    let d = [OpDesc {
        local_addr: dst.as_ptr() as usize,
        remote_addr: src.as_ptr() as usize,
        len: 4096,
    }];
    client.transfer(&sname, Op::Read, &d, 5000, None).unwrap();
    // The server goes away: the client's state turns CONNECT_FAILED.
    server.finalize();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut failed = false;
    while Instant::now() < deadline && !failed {
        failed = client.connect_status(&sname).unwrap().0 == ConnState::ConnectFailed;
        if !failed {
            let _ = client.transfer(&sname, Op::Read, &d, 500, None);
        }
    }
    assert!(failed, "the state never became CONNECT_FAILED");
    assert!(client.transfer(&sname, Op::Read, &d, 500, None).is_err());
    // Connecting again is allowed (not ALREADY_CONNECTED); nobody listens now.
    let e = client.connect(&sname, 500).unwrap_err();
    assert_ne!(e.status, Status::AlreadyLink, "{}", e.message);
    // A new server on the same name: Connect replaces the dead link.
    let again = Engine::new(&sname, &opts(true)).unwrap();
    again.register_mem(src.as_ptr() as u64, 4096, 1).unwrap();
    client.connect(&sname, 5000).unwrap();
    client.transfer(&sname, Op::Read, &d, 5000, None).unwrap();
    assert_eq!(dst, src);
}

/// Small async TCP reads and writes are sent by `TransferAsync` itself and
/// end there when the reply comes within the busy-poll, or on a worker after
/// it (`llmdd.BusyPollUs=0` hands every one over at once); posted many at a
/// time, those that find no idle connection run whole on a worker. Every
/// way lands the right bytes, and a request the server refuses fails with its
/// status while the connection stays usable.
#[test]
fn small_tcp_async_transfers_end_here_or_on_a_worker() {
    for spin in ["50", "0"] {
        let (server, sname) = engine(true);
        let mut o = opts(true);
        o.insert("llmdd.BusyPollUs".to_string(), spin.to_string());
        let cname = format!("127.0.0.1:{}", free_port());
        let client = Engine::new(&cname, &o).unwrap();
        const PIECE: usize = 16 << 10;
        let src = pattern(1 << 20, 9);
        let extra = pattern(PIECE, 77);
        let dst = vec![0u8; 1 << 20];
        let back = vec![0u8; 1 << 20];
        server
            .register_mem(src.as_ptr() as u64, src.len() as u64, 0)
            .unwrap();
        server
            .register_mem(back.as_ptr() as u64, back.len() as u64, 0)
            .unwrap();
        let extra_id = server
            .register_mem(extra.as_ptr() as u64, extra.len() as u64, 0)
            .unwrap();
        client
            .register_mem(dst.as_ptr() as u64, dst.len() as u64, 0)
            .unwrap();
        client.connect(&sname, 5000).unwrap();
        let piece = |k: usize| {
            [OpDesc {
                local_addr: dst.as_ptr() as usize + k * PIECE,
                remote_addr: src.as_ptr() as usize + k * PIECE,
                len: PIECE,
            }]
        };
        let piece_back = |k: usize| {
            [OpDesc {
                local_addr: dst.as_ptr() as usize + k * PIECE,
                remote_addr: back.as_ptr() as usize + k * PIECE,
                len: PIECE,
            }]
        };
        let wait = |r: &std::sync::Arc<llmdd::engine::Request>| {
            let o = r
                .wait(Some(Instant::now() + Duration::from_secs(20)))
                .expect("ended");
            client.forget(r);
            o
        };
        let post = |op: Op, d: &[OpDesc]| {
            client
                .transfer_async(&sname, op, d, 10_000, None, 0)
                .unwrap()
        };
        // One at a time, reads then writes of what was read.
        for k in 0..32 {
            let o = wait(&post(Op::Read, &piece(k)));
            assert_eq!(o.status, ReqStatus::Completed, "{spin}: {:?}", o.error);
            assert_eq!(
                &dst[k * PIECE..(k + 1) * PIECE],
                &src[k * PIECE..(k + 1) * PIECE]
            );
            let o = wait(&post(Op::Write, &piece_back(k)));
            assert_eq!(o.status, ReqStatus::Completed, "{spin}: {:?}", o.error);
            assert_eq!(
                &back[k * PIECE..(k + 1) * PIECE],
                &src[k * PIECE..(k + 1) * PIECE]
            );
        }
        // Many at once: more than the link's connections.
        let reqs: Vec<_> = (0..64).map(|k| post(Op::Read, &piece(k))).collect();
        for r in &reqs {
            let o = wait(r);
            assert_eq!(o.status, ReqStatus::Completed, "{spin}: {:?}", o.error);
        }
        assert!(dst == src, "{spin}: bytes differ after 64 concurrent reads");
        let reqs: Vec<_> = (0..64).map(|k| post(Op::Write, &piece_back(k))).collect();
        for r in &reqs {
            let o = wait(r);
            assert_eq!(o.status, ReqStatus::Completed, "{spin}: {:?}", o.error);
        }
        assert!(
            back == src,
            "{spin}: bytes differ after 64 concurrent writes"
        );
        // The client saw `extra` registered, then the server dropped it: the
        // server refuses the read and the write, each request fails with that
        // status, and the next one on the same link works.
        let one = [OpDesc {
            local_addr: dst.as_ptr() as usize,
            remote_addr: extra.as_ptr() as usize,
            len: PIECE,
        }];
        assert_eq!(wait(&post(Op::Read, &one)).status, ReqStatus::Completed);
        assert_eq!(&dst[..PIECE], &extra[..]);
        server.deregister_mem(extra_id).unwrap();
        for op in [Op::Read, Op::Write] {
            let o = wait(&post(op, &one));
            assert_eq!(o.status, ReqStatus::Failed, "{spin} {op:?}");
            assert!(o.error.is_some(), "{spin}");
            let o = wait(&post(Op::Read, &piece(3)));
            assert_eq!(o.status, ReqStatus::Completed, "{spin} after {op:?}");
        }
        client.finalize();
        server.finalize();
    }
}

/// The serving side of the stopped-peer test, in a child process: registers
/// a patterned 64 KiB buffer, prints `ADDR <address>`, serves until stdin
/// closes.
fn serve_in_child(name: &str) {
    let e = Engine::new(name, &opts(true)).expect("server engine");
    let buf = pattern(64 << 10, 5);
    e.register_mem(buf.as_ptr() as u64, buf.len() as u64, 0)
        .expect("register");
    println!("ADDR {}", buf.as_ptr() as usize);
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
    e.finalize();
}

/// A small async TCP transfer to a peer that stops answering (SIGSTOP) costs
/// `TransferAsync` no more than its busy-poll: the request ends TIMEOUT at
/// its deadline on a worker, the link serves again once the peer resumes,
/// and after the peer is killed requests fail with a status, never hang.
#[test]
fn a_stopped_or_killed_peer_never_blocks_transfer_async() {
    const ME: &str = "a_stopped_or_killed_peer_never_blocks_transfer_async";
    if let Ok(name) = std::env::var("ENGINE_TEST_SERVE") {
        return serve_in_child(&name);
    }
    use std::io::BufRead;
    let sname = format!("127.0.0.1:{}", free_port());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", ME, "--nocapture", "--test-threads=1"])
        .env("ENGINE_TEST_SERVE", &sname)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let remote: usize = loop {
        let l = lines.next().expect("child output").unwrap();
        // The harness's own "test ... " may precede it on the line.
        if let Some(i) = l.find("ADDR ") {
            break l[i + 5..].trim().parse().unwrap();
        }
    };
    let pid = child.id() as i32;
    let (client, _) = engine(true);
    let dst = vec![0u8; 64 << 10];
    client
        .register_mem(dst.as_ptr() as u64, dst.len() as u64, 0)
        .unwrap();
    client.connect(&sname, 5000).unwrap();
    let one = [OpDesc {
        local_addr: dst.as_ptr() as usize,
        remote_addr: remote,
        len: 16 << 10,
    }];
    client
        .transfer(&sname, Op::Read, &one, 5000, None)
        .expect("warm-up read");
    assert_eq!(&dst[..16 << 10], &pattern(64 << 10, 5)[..16 << 10]);
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    // The stop lands asynchronously: wait until every thread of the child is
    // stopped, so no request posted below can still be answered.
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            .all(|st| {
                st.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('T'))
            })
    };
    let t0 = Instant::now();
    while !stopped() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the child did not stop"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    for op in [Op::Read, Op::Write] {
        let t = Instant::now();
        let r = client
            .transfer_async(&sname, op, &one, 300, None, 0)
            .unwrap();
        let posted = t.elapsed();
        // The busy-poll is 50 µs; the bound only has to outlast a busy
        // machine's scheduling, and be far below the 300 ms timeout.
        assert!(
            posted < Duration::from_millis(150),
            "{op:?}: TransferAsync took {posted:?}"
        );
        let o = r
            .wait(Some(Instant::now() + Duration::from_secs(20)))
            .expect("ended");
        assert_eq!(o.status, ReqStatus::Timeout, "{op:?}: {:?}", o.error);
        client.forget(&r);
    }
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let r = client
        .transfer_async(&sname, Op::Read, &one, 5000, None, 0)
        .unwrap();
    let o = r
        .wait(Some(Instant::now() + Duration::from_secs(20)))
        .unwrap();
    assert_eq!(
        o.status,
        ReqStatus::Completed,
        "after SIGCONT: {:?}",
        o.error
    );
    client.forget(&r);
    child.kill().unwrap();
    child.wait().unwrap();
    for op in [Op::Read, Op::Write] {
        match client.transfer_async(&sname, op, &one, 2000, None, 0) {
            // Refused at once (the link is known dead) or failed on the way.
            Err(e) => assert_ne!(e.status, Status::Success),
            Ok(r) => {
                let o = r
                    .wait(Some(Instant::now() + Duration::from_secs(20)))
                    .unwrap();
                assert_ne!(o.status, ReqStatus::Completed, "{op:?} to a killed peer");
                client.forget(&r);
            }
        }
    }
    client.finalize();
}
