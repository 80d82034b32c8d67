use super::*;

#[test]
fn advance_splits() {
    let mut a = [1u8; 10];
    let mut b = [2u8; 10];
    let mut iov = [
        libc::iovec {
            iov_base: a.as_mut_ptr() as *mut _,
            iov_len: 10,
        },
        libc::iovec {
            iov_base: b.as_mut_ptr() as *mut _,
            iov_len: 10,
        },
    ];
    let mut s = 0;
    advance(&mut iov, &mut s, 13);
    assert_eq!(s, 1);
    assert_eq!(iov[1].iov_len, 7);
    advance(&mut iov, &mut s, 7);
    assert_eq!(s, 2);
}

#[test]
fn connect_refused_is_link_failed_and_fast() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let t = Instant::now();
    let opts = ConnOpts {
        spin: Duration::ZERO,
        dead_peer: Duration::ZERO,
    };
    // Refused long before the timeout, with room for scheduling delay.
    let e = Conn::connect(&addr, Duration::from_secs(30), opts)
        .err()
        .unwrap();
    assert_eq!(e.status, Status::LinkFailed);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

/// A connected pair: our `Conn` and the raw peer socket.
fn pair() -> (Conn, TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    let opts = ConnOpts {
        spin: Duration::ZERO,
        dead_peer: Duration::from_secs(5),
    };
    (Conn::new(s, opts).unwrap(), peer)
}

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

#[test]
fn frames_over_the_limit_are_refused_before_reading_them() {
    use std::io::Write;
    let (mut c, mut peer) = pair();
    peer.write_all(&header(4, PRE_LINK_FRAME_LIMIT + 1))
        .unwrap();
    let e = c
        .recv(Some(Instant::now() + Duration::from_secs(2)))
        .unwrap_err();
    assert_eq!(e.status, Status::LinkFailed);
    assert!(e.message.contains("exceeds"), "{}", e.message);
    assert!(c.is_broken());
    // After the limit is raised, a large frame decodes (and the buffer
    // grew step by step to hold it).
    let (mut c, mut peer) = pair();
    c.set_frame_limit(wire::MAX_PAYLOAD);
    let msg = Msg::Reply {
        status: 7,
        message: "x".repeat(wire::MAX_STRING),
    };
    let t = std::thread::spawn(move || {
        let f = wire::encode_to_vec(&msg, 0);
        for chunk in f.chunks(1000) {
            peer.write_all(chunk).unwrap();
        }
        peer
    });
    match c
        .recv(Some(Instant::now() + Duration::from_secs(5)))
        .unwrap()
    {
        Msg::Reply { status, message } => {
            assert_eq!(status, 7);
            assert_eq!(message.len(), wire::MAX_STRING);
        }
        m => panic!("unexpected {m:?}"),
    }
    drop(t.join().unwrap());
}

#[test]
fn an_announced_payload_is_not_allocated_before_it_arrives() {
    use std::io::Write;
    let (mut c, mut peer) = pair();
    c.set_frame_limit(wire::MAX_PAYLOAD);
    peer.write_all(&header(11, wire::MAX_PAYLOAD)).unwrap();
    peer.write_all(&[0u8; 100]).unwrap();
    let e = c
        .recv(Some(Instant::now() + Duration::from_millis(200)))
        .unwrap_err();
    assert_eq!(e.status, Status::Timeout);
    assert!(
        c.rbuf.capacity() <= FIRST_CHUNK,
        "buffer of {} bytes for 100 received",
        c.rbuf.capacity()
    );
}

#[test]
fn a_stall_inside_a_frame_is_bounded_but_idle_is_not() {
    use std::io::Write;
    let (mut c, mut peer) = pair();
    let t = Instant::now();
    let waiter = std::thread::spawn(move || {
        let r = c.recv_idle(Duration::from_millis(300));
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    // Idle so far: the receiver still waits. Now half a header.
    peer.write_all(&header(5, 0)[..8]).unwrap();
    let (r, el) = waiter.join().unwrap();
    assert_eq!(r.unwrap_err().status, Status::Timeout);
    assert!(el >= Duration::from_millis(750), "{el:?}");
    assert!(el < Duration::from_secs(3), "{el:?}");
}

#[test]
fn hangup_reports_a_closed_peer_without_reading() {
    use std::io::Write;
    let (c, mut peer) = pair();
    assert!(hangup(&c.shared()).is_none());
    peer.write_all(b"data").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        hangup(&c.shared()).is_none(),
        "pending data is not a hang-up"
    );
    drop(peer);
    std::thread::sleep(Duration::from_millis(20));
    assert!(hangup(&c.shared()).is_some());
}

#[test]
fn keepalive_is_set_from_the_dead_peer_bound() {
    let (c, _peer) = pair();
    let fd = c.stream.as_raw_fd();
    let get = |level: i32, name: i32| -> i32 {
        let mut v: i32 = 0;
        let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: getsockopt into a local integer.
        let r =
            unsafe { libc::getsockopt(fd, level, name, &mut v as *mut i32 as *mut _, &mut len) };
        assert_eq!(r, 0);
        v
    };
    assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 2);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 1);
    assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 5000);
}
