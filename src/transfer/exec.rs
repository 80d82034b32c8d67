//! Executes transfer plans over a link: its one-sided data path when it has
//! one (a backend's `DataPath`: HCCL batches, memcpy in this process, mapped
//! peer pools or process_vm_readv/writev on this host), else TCP (one request
//! per connection, striped over several connections, bytes landing directly
//! in destination memory). A dead link moves nothing; a path that finds its
//! peer gone marks the link dead.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::PathError;
use crate::cache::types::Plan;
use crate::cache::types::{Dir, Segment};
use crate::status::{Error, Result, Status};
use crate::transfer::link::{ConnGuard, Link};
use crate::transport::tcp::{check_reply, BulkProgress, FrameReader};
use crate::transport::wire::Msg;
use crate::{bail, err};

/// Most segments carried by one Read/Write request.
const SEGMENTS_PER_REQUEST: usize = 65_536;
/// Plans smaller than this use one TCP connection.
const STRIPE_MIN_BYTES: u64 = 1 << 20;

/// Moves the bytes of `plan` over `link` before `deadline`. The plan's type is
/// the guarantee that its local side is this process's registered memory.
pub fn run(
    link: &Arc<Link>,
    plan: &Plan,
    dir: Dir,
    deadline: Instant,
    stripes: usize,
) -> Result<()> {
    run_timed(link, plan, dir, deadline, stripes).map(drop)
}

/// [`run`], returning when the transfer ended: the clock read of its
/// deadline check (a caller's statistics reuse it rather than reading the
/// clock again); an empty plan reads the clock only for that.
pub fn run_timed(
    link: &Arc<Link>,
    plan: &Plan,
    dir: Dir,
    deadline: Instant,
    stripes: usize,
) -> Result<Instant> {
    if plan.is_empty() {
        return Ok(Instant::now());
    }
    if link.is_dead() {
        return Err(link.dead_error());
    }
    if let Some(p) = link.data_path() {
        return match p.transfer_timed(plan, dir, deadline) {
            Ok(done) => Ok(done),
            Err(PathError::Failed(e)) => Err(e),
            Err(PathError::PeerGone(why)) => {
                link.mark_dead(&why);
                Err(link.dead_error())
            }
            Err(PathError::Late) => Err(late(link)),
        };
    }
    tcp(link, plan, dir, deadline, stripes)?;
    let done = Instant::now();
    if done > deadline {
        return Err(late(link));
    }
    Ok(done)
}

fn late(link: &Link) -> Error {
    err!(
        Timeout,
        "transfer with cluster {} exceeded sync_kv_timeout",
        link.remote_cluster_id
    )
}

fn split_bytes(plan: &[Segment], parts: usize) -> Vec<Vec<Segment>> {
    let total: u64 = plan.iter().map(|s| s.len).sum();
    let per = total.div_ceil(parts as u64).max(1);
    let mut out: Vec<Vec<Segment>> = vec![Vec::new()];
    let mut acc = 0u64;
    for s in plan {
        let mut s = *s;
        while s.len > 0 {
            let room = per - acc;
            let k = s.len.min(room);
            out.last_mut().expect("non-empty").push(Segment {
                dst: s.dst,
                src: s.src,
                len: k,
            });
            s.dst += k;
            s.src += k;
            s.len -= k;
            acc += k;
            if acc == per && out.len() < parts {
                out.push(Vec::new());
                acc = 0;
            }
        }
    }
    out.retain(|v| !v.is_empty());
    out
}

fn tcp(link: &Arc<Link>, plan: &Plan, dir: Dir, deadline: Instant, stripes: usize) -> Result<()> {
    let total: u64 = plan.iter().map(|s| s.len).sum();
    let want = if total >= STRIPE_MIN_BYTES {
        stripes.max(1)
    } else {
        1
    };
    let mut conns = link.take_conns(want, deadline)?;
    if conns.len() == 1 {
        return tcp_one(link, &mut conns[0], plan, dir, deadline);
    }
    let parts = split_bytes(plan, conns.len());
    // One part per connection, on this thread and the persistent helpers;
    // each connection is used by exactly one part (the lock is uncontended).
    let conns: Vec<std::sync::Mutex<ConnGuard>> =
        conns.into_iter().map(std::sync::Mutex::new).collect();
    crate::transport::parallel::join(parts.len(), &|i| {
        let mut c = conns[i].lock().unwrap_or_else(|p| p.into_inner());
        tcp_one(link, &mut c, &parts[i], dir, deadline)
    })
}

fn timeout_msg(link: &Link, e: Error) -> Error {
    if e.status == Status::Timeout {
        late(link)
    } else {
        e
    }
}

fn tcp_one(
    link: &Link,
    g: &mut ConnGuard,
    plan: &[Segment],
    dir: Dir,
    deadline: Instant,
) -> Result<()> {
    let c = g.conn();
    for chunk in plan.chunks(SEGMENTS_PER_REQUEST) {
        let total: u64 = chunk.iter().map(|s| s.len).sum();
        let r = match dir {
            Dir::Read => (|| {
                c.send(
                    &Msg::Read {
                        segments: chunk.to_vec(),
                        total,
                    },
                    Some(deadline),
                )?;
                match c.recv(Some(deadline))? {
                    Msg::ReadData {
                        status: 0,
                        total: t,
                        ..
                    } if t == total => c.recv_bulk(chunk, Some(deadline)),
                    Msg::ReadData { status: 0, .. } => {
                        c.mark_broken();
                        bail!(LinkFailed, "peer announced the wrong byte count")
                    }
                    Msg::ReadData {
                        status, message, ..
                    } => check_reply(status, &message, "remote read"),
                    m => {
                        c.mark_broken();
                        bail!(LinkFailed, "unexpected reply {} to Read", m.msg_type())
                    }
                }
            })(),
            Dir::Write => (|| {
                c.send_with_bulk(
                    &Msg::Write {
                        segments: chunk.to_vec(),
                        total,
                    },
                    chunk,
                    Some(deadline),
                )?;
                match c.recv(Some(deadline))? {
                    Msg::Reply { status, message } => check_reply(status, &message, "remote write"),
                    m => {
                        c.mark_broken();
                        bail!(LinkFailed, "unexpected reply {} to Write", m.msg_type())
                    }
                }
            })(),
        };
        r.map_err(|e| timeout_msg(link, e))?;
    }
    Ok(())
}

/// A TCP Read or Write of a small plan on one connection, begun on the
/// calling thread and resumable on another: [`TcpExchange::poll`] sends what
/// the socket takes and takes in what has arrived of the reply without
/// blocking, [`TcpExchange::finish`] waits for the rest. An async request
/// uses it to complete on its caller when the reply comes within the
/// busy-poll, and to hand only the waiting to a worker otherwise. Dropped
/// unfinished, its connection is closed (its stream stands inside a frame).
pub struct TcpExchange {
    link: Arc<Link>,
    guard: ConnGuard,
    dir: Dir,
    total: u64,
    /// The encoded request; a Write's bulk bytes follow it.
    frame: Vec<u8>,
    /// Bytes of the request (and a Write's bulk) sent, of `out`.
    sent: u64,
    out: u64,
    reply: FrameReader,
    /// A Read's bulk receive, once the reply's header announced it.
    bulk: Option<BulkProgress>,
    done: bool,
}

impl TcpExchange {
    /// Whether `plan` is one request on one TCP connection of `link`.
    pub fn fits(link: &Link, plan: &Plan) -> bool {
        link.data_path().is_none()
            && !plan.is_empty()
            && plan.len() <= SEGMENTS_PER_REQUEST
            && plan.iter().map(|s| s.len).sum::<u64>() < STRIPE_MIN_BYTES
    }

    /// The exchange for `plan` (which must [`fit`](TcpExchange::fits)) on
    /// an idle connection of `link`; `Ok(None)` when none is free now (the
    /// caller then runs the transfer where waiting for one is fine).
    /// Nothing is sent before the first [`poll`](TcpExchange::poll).
    pub fn begin(link: &Arc<Link>, plan: &Plan, dir: Dir) -> Result<Option<TcpExchange>> {
        if link.is_dead() {
            return Err(link.dead_error());
        }
        let Some(mut guard) = link.take_idle_conn() else {
            return Ok(None);
        };
        let c = guard.conn();
        if !c.sends_alone() {
            return Ok(None);
        }
        let total: u64 = plan.iter().map(|s| s.len).sum();
        let segments = plan.to_vec();
        let msg = match dir {
            Dir::Read => Msg::Read { segments, total },
            Dir::Write => Msg::Write { segments, total },
        };
        let mut frame = Vec::new();
        c.encode_frame(&msg, &mut frame);
        let out = frame.len() as u64 + if dir == Dir::Write { total } else { 0 };
        Ok(Some(TcpExchange {
            link: link.clone(),
            guard,
            dir,
            total,
            frame,
            sent: 0,
            out,
            reply: FrameReader::default(),
            bulk: None,
            done: false,
        }))
    }

    /// The busy-poll spin of its connection (`llmdd.BusyPollUs`).
    pub fn spin(&mut self) -> std::time::Duration {
        self.guard.conn().spin()
    }

    /// Sends what the socket takes and takes in what has arrived of the
    /// reply (the same checks as the blocking path); true once the exchange
    /// is complete. `plan` is the one it began with.
    pub fn poll(&mut self, plan: &Plan, deadline: Instant) -> Result<bool> {
        match self.step(plan) {
            Ok(false) => Ok(false),
            Ok(true) if Instant::now() > deadline => bail!(
                Timeout,
                "transfer with cluster {} exceeded sync_kv_timeout",
                self.link.remote_cluster_id
            ),
            Ok(true) => Ok(true),
            Err(e) => Err(timeout_msg(&self.link, e)),
        }
    }

    fn step(&mut self, plan: &Plan) -> Result<bool> {
        if self.done {
            return Ok(true);
        }
        let c = self.guard.conn();
        if self.sent < self.out {
            let bulk = if self.dir == Dir::Write {
                plan.segments()
            } else {
                &[]
            };
            if !c.send_some(&self.frame, bulk, &mut self.sent)? {
                return Ok(false);
            }
        }
        if self.bulk.is_none() {
            let Some(m) = c.poll_frame(&mut self.reply)? else {
                return Ok(false);
            };
            match (self.dir, m) {
                (
                    Dir::Read,
                    Msg::ReadData {
                        status: 0,
                        total: t,
                        ..
                    },
                ) if t == self.total => self.bulk = Some(BulkProgress::default()),
                (Dir::Read, Msg::ReadData { status: 0, .. }) => {
                    c.mark_broken();
                    bail!(LinkFailed, "peer announced the wrong byte count")
                }
                (
                    Dir::Read,
                    Msg::ReadData {
                        status, message, ..
                    },
                ) => {
                    // Refused: no bulk follows, the stream is in step.
                    self.done = true;
                    return check_reply(status, &message, "remote read").map(|()| true);
                }
                (Dir::Write, Msg::Reply { status, message }) => {
                    self.done = true;
                    return check_reply(status, &message, "remote write").map(|()| true);
                }
                (dir, m) => {
                    c.mark_broken();
                    let what = if dir == Dir::Read { "Read" } else { "Write" };
                    bail!(LinkFailed, "unexpected reply {} to {what}", m.msg_type())
                }
            }
        }
        let p = self.bulk.as_mut().expect("set above");
        if c.recv_bulk_some(plan, p)? {
            self.done = true;
        }
        Ok(self.done)
    }

    /// Waits for the rest of the exchange (bounded by `deadline`).
    pub fn finish(&mut self, plan: &Plan, deadline: Instant) -> Result<()> {
        while !self.poll(plan, deadline)? {
            let c = self.guard.conn();
            let r = if self.sent < self.out {
                c.wait_writable(deadline)
            } else {
                c.wait_readable(deadline)
            };
            if let Err(e) = r {
                return Err(timeout_msg(&self.link, e));
            }
        }
        Ok(())
    }
}

impl Drop for TcpExchange {
    fn drop(&mut self) {
        if !self.done {
            self.guard.conn().mark_broken();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tcp::{Conn, ConnOpts};
    use crate::transport::wire::{decode_header, decode_payload, encode_to_vec, HEADER_LEN};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    const OPTS: ConnOpts = ConnOpts {
        spin: Duration::ZERO,
        dead_peer: Duration::ZERO,
    };

    /// A TCP link holding one idle connection, and the peer's raw end of it.
    fn tcp_link() -> (Arc<Link>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (theirs, _) = l.accept().unwrap();
        let link = crate::transfer::link::test_link(false, OPTS);
        link.expect_request_conn();
        link.add_request_conn(Conn::new(ours, OPTS).unwrap());
        (link, theirs)
    }

    /// The next frame the peer's end receives.
    fn recv_raw(s: &mut TcpStream) -> Msg {
        let mut h = [0u8; HEADER_LEN];
        s.read_exact(&mut h).unwrap();
        let header = decode_header(&h).unwrap();
        let mut p = vec![0u8; header.payload_len as usize];
        s.read_exact(&mut p).unwrap();
        decode_payload(&header, &p).unwrap()
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(10)
    }

    /// Three scattered destinations of 1000 bytes in `buf`.
    fn scattered(buf: &mut [u8]) -> Vec<Segment> {
        (0..3)
            .map(|i| Segment {
                dst: buf.as_mut_ptr() as u64 + 1500 * i,
                src: 0x1000 + 1000 * i,
                len: 1000,
            })
            .collect()
    }

    /// A one-sided path that answers every transfer with its function's
    /// result and moves nothing.
    #[derive(Debug)]
    struct Answer(fn() -> std::result::Result<(), PathError>);

    impl crate::backend::DataPath for Answer {
        fn info(&self) -> crate::backend::PathInfo {
            crate::backend::PathInfo {
                kind: crate::stats::Path::SameHost,
                requests_on_control: true,
                serves_tcp_bulk: true,
            }
        }

        fn transfer(&self, _: &Plan, _: Dir, _: Instant) -> std::result::Result<(), PathError> {
            (self.0)()
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    #[test]
    fn a_path_that_finds_its_peer_gone_kills_the_link_and_a_late_one_times_out() {
        let mut buf = [0u8; 16];
        let segs = [Segment {
            dst: buf.as_mut_ptr() as u64,
            src: 0x1000,
            len: 16,
        }];
        // SAFETY: the destination is `buf`, alive for the test (and the
        // paths below move nothing).
        let plan = unsafe { Plan::assume_checked(&segs) };
        let link = crate::transfer::link::test_link(true, OPTS);
        link.set_path(Box::new(Answer(|| Err(PathError::Late))));
        assert!(link.requests_on_control() && link.serves_tcp_bulk());
        let e = run(&link, plan, Dir::Read, soon(), 1).unwrap_err();
        assert_eq!(e.status, Status::Timeout, "{e}");
        assert!(e.message.contains("exceeded sync_kv_timeout"), "{e}");
        assert!(!link.is_dead());

        let link = crate::transfer::link::test_link(true, OPTS);
        link.set_path(Box::new(Answer(|| {
            Err(PathError::PeerGone("its peer process 7 exited".into()))
        })));
        let e = run(&link, plan, Dir::Write, soon(), 1).unwrap_err();
        assert_eq!(e.status, Status::LinkFailed, "{e}");
        assert!(link.is_dead());
        assert!(e.message.contains("its peer process 7 exited"), "{e}");
        // A dead link fails before its path is asked again.
        let e = run(&link, plan, Dir::Read, soon(), 1).unwrap_err();
        assert_eq!(e.status, Status::LinkFailed, "{e}");
    }

    #[test]
    fn a_read_resumes_across_polls_and_gives_its_connection_back() {
        let (link, mut peer) = tcp_link();
        let mut buf = vec![0u8; 4000];
        let segs = scattered(&mut buf);
        // SAFETY: every destination lies in `buf`, alive for the test.
        let plan = unsafe { Plan::assume_checked(&segs) };
        let mut x = TcpExchange::begin(&link, plan, Dir::Read).unwrap().unwrap();
        assert!(link.take_idle_conn().is_none(), "the exchange holds it");
        assert!(!x.poll(plan, soon()).unwrap(), "no reply yet");
        match recv_raw(&mut peer) {
            Msg::Read { segments, total } => {
                assert_eq!(total, 3000);
                assert_eq!(segments.len(), 3);
            }
            m => panic!("{m:?}"),
        }
        // The reply trickles in: header with part of the bulk, then the rest
        // in two pieces; every poll returns at once.
        let bulk: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let mut first = encode_to_vec(
            &Msg::ReadData {
                status: 0,
                message: String::new(),
                total: 3000,
            },
            0,
        );
        first.extend_from_slice(&bulk[..1200]);
        let pieces = [first, bulk[1200..2100].to_vec(), bulk[2100..].to_vec()];
        for (i, p) in pieces.iter().enumerate() {
            peer.write_all(p).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            let t = Instant::now();
            let done = x.poll(plan, soon()).unwrap();
            assert!(t.elapsed() < Duration::from_millis(200), "a poll blocked");
            assert_eq!(done, i == 2, "piece {i}");
        }
        for i in 0..3 {
            let at = 1500 * i;
            assert_eq!(&buf[at..at + 1000], &bulk[1000 * i..1000 * (i + 1)]);
        }
        drop(x);
        assert!(
            link.take_idle_conn().is_some(),
            "a finished exchange gives it back"
        );
    }

    #[test]
    fn a_wrong_byte_count_or_an_abandoned_exchange_closes_its_connection() {
        let (link, mut peer) = tcp_link();
        let mut buf = vec![0u8; 4000];
        let segs = scattered(&mut buf);
        // SAFETY: as above.
        let plan = unsafe { Plan::assume_checked(&segs) };
        let mut x = TcpExchange::begin(&link, plan, Dir::Read).unwrap().unwrap();
        assert!(!x.poll(plan, soon()).unwrap());
        recv_raw(&mut peer);
        let lie = Msg::ReadData {
            status: 0,
            message: String::new(),
            total: 2999,
        };
        peer.write_all(&encode_to_vec(&lie, 0)).unwrap();
        let e = x.finish(plan, soon()).unwrap_err();
        assert_eq!(e.status, Status::LinkFailed);
        assert!(e.message.contains("wrong byte count"), "{}", e.message);
        drop(x);
        assert!(
            link.take_idle_conn().is_none(),
            "an out-of-step connection came back"
        );

        // A write to a peer that never reads: polls never block, and dropping
        // the exchange half-way closes the connection.
        let (link, _peer) = tcp_link();
        let src = vec![7u8; 900 << 10];
        let segs = [Segment {
            dst: 0x1000,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
        }];
        // SAFETY: the source lies in `src`, alive for the test.
        let plan = unsafe { Plan::assume_checked(&segs) };
        let mut x = TcpExchange::begin(&link, plan, Dir::Write)
            .unwrap()
            .unwrap();
        for _ in 0..5 {
            let t = Instant::now();
            assert!(!x.poll(plan, soon()).unwrap());
            assert!(t.elapsed() < Duration::from_millis(200), "a poll blocked");
        }
        drop(x);
        assert!(link.take_idle_conn().is_none());
    }

    #[test]
    fn split_bytes_even() {
        let plan = [
            Segment {
                dst: 0,
                src: 1000,
                len: 10,
            },
            Segment {
                dst: 10,
                src: 2000,
                len: 7,
            },
        ];
        let parts = split_bytes(&plan, 2);
        assert_eq!(parts.len(), 2);
        let sums: Vec<u64> = parts
            .iter()
            .map(|p| p.iter().map(|s| s.len).sum())
            .collect();
        assert_eq!(sums, vec![9, 8]);
        assert_eq!(
            parts[1][0],
            Segment {
                dst: 9,
                src: 1009,
                len: 1
            }
        );
    }
}
