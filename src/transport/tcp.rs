//! One TCP connection of a link: framed messages and bulk scatter/gather I/O,
//! every wait bounded by a deadline, with a short busy-poll before sleeping
//! (waking an idle vCPU costs ~50 µs; a brief spin keeps small transfers fast).
//!
//! Nothing a peer announces is allocated before it arrives: a frame's payload
//! buffer grows as its bytes come in, and a connection that does not belong to
//! a link yet accepts only small frames ([`PRE_LINK_FRAME_LIMIT`]). Every
//! socket gets TCP keepalive and `TCP_USER_TIMEOUT` so a dead peer is found
//! within [`ConnOpts::dead_peer`] even on an idle connection.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::cache::types::{Dir, Segment};
use crate::status::{Error, Result, Status};
use crate::transport::push_iovec;
use crate::transport::wire::{self, Header, Msg, HEADER_LEN};
use crate::{bail, err};

/// Most iovecs handed to one readv/writev call.
const IOV_BATCH: usize = 1024;
/// Largest frame payload accepted on a connection that is not (yet) part of a
/// link: a handshake frame is at most a few KiB.
///
/// cbindgen:ignore
pub const PRE_LINK_FRAME_LIMIT: u32 = 64 << 10;
/// First step of a payload buffer; later steps at most double what arrived.
const FIRST_CHUNK: usize = 64 << 10;

/// Settings every connection of an instance gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnOpts {
    /// Spin before sleeping when waiting for the peer (`llmdd.BusyPollUs`).
    pub spin: Duration,
    /// A peer that answers nothing (not even keepalive probes) for this long is
    /// dead: TCP keepalive plus `TCP_USER_TIMEOUT` (`llmdd.DeadPeerTimeoutMs`).
    /// Zero leaves the kernel defaults.
    pub dead_peer: Duration,
}

/// A connected, non-blocking TCP stream with reusable buffers.
pub struct Conn {
    /// Shared only with [`Weak`] handles (see [`Conn::weak`]) and short-lived
    /// pollers: the descriptor closes when the connection is dropped.
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    spin: Duration,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Largest payload accepted (see [`PRE_LINK_FRAME_LIMIT`]).
    frame_limit: u32,
    /// Set when the byte stream can no longer be trusted (timeout mid-message,
    /// protocol error); the owner must drop the connection.
    broken: bool,
    /// Released with the connection (an admission slot of the listener).
    _held: Option<Box<dyn Send>>,
    /// Tag of the last frame received; frames sent carry it back, so a reply
    /// names the request it answers (see [`Conn::send_tagged`]).
    tag: u32,
    /// Shared with the other handles of this socket that write (a reader on
    /// the poller and a requester: [`Conn::writer`]): one frame at a time.
    write_lock: Option<Arc<Mutex<()>>>,
}

fn io_err(op: &str, peer: &SocketAddr, e: io::Error) -> Error {
    err!(LinkFailed, "{op} with {peer} failed: {e}")
}

impl Conn {
    /// Wraps a connected stream: non-blocking, TCP_NODELAY, keepalive per
    /// `opts`, and the pre-link frame limit.
    pub fn new(stream: TcpStream, opts: ConnOpts) -> Result<Conn> {
        let peer = stream
            .peer_addr()
            .map_err(|e| err!(LinkFailed, "connection has no peer address: {e}"))?;
        stream
            .set_nonblocking(true)
            .and_then(|_| stream.set_nodelay(true))
            .and_then(|_| set_keepalive(&stream, opts.dead_peer))
            .map_err(|e| io_err("configuring socket", &peer, e))?;
        Ok(Conn {
            stream: Arc::new(stream),
            peer,
            spin: opts.spin,
            wbuf: Vec::with_capacity(4096),
            rbuf: Vec::with_capacity(4096),
            frame_limit: PRE_LINK_FRAME_LIMIT,
            broken: false,
            _held: None,
            tag: 0,
            write_lock: None,
        })
    }

    /// A second handle on this socket for sending requests while this one
    /// (on the poller) reads and answers: writes of both take turns, frame by
    /// frame. The new handle never reads.
    pub fn writer(&mut self) -> Conn {
        let lock = self
            .write_lock
            .get_or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        Conn {
            stream: self.stream.clone(),
            peer: self.peer,
            spin: self.spin,
            wbuf: Vec::with_capacity(256),
            rbuf: Vec::new(),
            frame_limit: self.frame_limit,
            broken: false,
            _held: None,
            tag: 0,
            write_lock: Some(lock),
        }
    }

    /// Tag of the last frame received (a request's tag, echoed by the reply).
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Connects to `addr` within `timeout`.
    pub fn connect(addr: &SocketAddr, timeout: Duration, opts: ConnOpts) -> Result<Conn> {
        let stream = TcpStream::connect_timeout(addr, timeout.max(Duration::from_millis(1)))
            .map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock {
                    err!(
                        LinkFailed,
                        "connecting to {addr} timed out after {} ms",
                        timeout.as_millis()
                    )
                } else {
                    err!(LinkFailed, "connecting to {addr} failed: {e}")
                }
            })?;
        Conn::new(stream, opts)
    }

    /// Sets the largest frame payload this connection accepts (raised to
    /// [`wire::MAX_PAYLOAD`] once the connection belongs to a link).
    pub fn set_frame_limit(&mut self, limit: u32) {
        self.frame_limit = limit;
    }

    /// Keeps `token` until the connection is dropped.
    pub fn hold(&mut self, token: Box<dyn Send>) {
        self._held = Some(token);
    }

    /// A handle that can shut this connection down from another thread while
    /// it lives, without keeping its descriptor open once it is dropped.
    pub fn weak(&self) -> Weak<TcpStream> {
        Arc::downgrade(&self.stream)
    }

    /// The socket, shared (for a poller that must keep the descriptor valid).
    pub fn shared(&self) -> Arc<TcpStream> {
        self.stream.clone()
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// This end's address (the local IP the peer reaches us through).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    /// True once the stream is out of sync and must be dropped.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Marks the stream unusable.
    pub fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// Shuts both directions down (wakes a thread blocked on this socket).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    /// Waits until the socket is readable/writable, spinning first.
    /// Returns `Timeout` at the deadline (`None` = wait forever).
    fn wait(&self, events: i16, deadline: Option<Instant>, spun: &mut bool) -> Result<()> {
        if !*spun && !self.spin.is_zero() {
            *spun = true;
            let until = Instant::now() + self.spin;
            while Instant::now() < until {
                if poll_fd(self.stream.as_raw_fd(), events, 0)? {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        loop {
            let ms = match deadline {
                None => -1,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        bail!(Timeout, "waiting for {} timed out", self.peer);
                    }
                    (d - now).as_millis().clamp(1, i32::MAX as u128) as i32
                }
            };
            if poll_fd(self.stream.as_raw_fd(), events, ms)? {
                return Ok(());
            }
        }
    }

    fn fail<T>(&mut self, e: Error) -> Result<T> {
        self.broken = true;
        Err(e)
    }

    /// Writes all of `iov` (advancing through it), bounded by `deadline`.
    fn writev_all(&mut self, iov: &mut [libc::iovec], deadline: Option<Instant>) -> Result<()> {
        let fd = self.stream.as_raw_fd();
        let mut start = 0;
        let mut spun = false;
        while start < iov.len() {
            if iov[start].iov_len == 0 {
                start += 1;
                continue;
            }
            let n = (iov.len() - start).min(IOV_BATCH);
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov[start..].as_mut_ptr();
            msg.msg_iovlen = n as _;
            // SAFETY: the iovecs point at memory the caller vouches for.
            let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    if let Err(e) = self.wait(libc::POLLOUT, deadline, &mut spun) {
                        return self.fail(e);
                    }
                    continue;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let peer = self.peer;
                return self.fail(io_err("sending", &peer, e));
            }
            advance(iov, &mut start, r as usize);
        }
        Ok(())
    }

    /// Reads exactly the bytes described by `iov`, bounded by `deadline`.
    fn readv_all(&mut self, iov: &mut [libc::iovec], deadline: Option<Instant>) -> Result<()> {
        let fd = self.stream.as_raw_fd();
        let mut start = 0;
        let mut spun = false;
        while start < iov.len() {
            if iov[start].iov_len == 0 {
                start += 1;
                continue;
            }
            let n = (iov.len() - start).min(IOV_BATCH);
            // SAFETY: the iovecs point at writable memory the caller vouches for.
            let r = unsafe { libc::readv(fd, iov[start..].as_ptr(), n as i32) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    if let Err(e) = self.wait(libc::POLLIN, deadline, &mut spun) {
                        return self.fail(e);
                    }
                    continue;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                let peer = self.peer;
                return self.fail(io_err("receiving", &peer, e));
            }
            if r == 0 {
                let peer = self.peer;
                return self.fail(err!(LinkFailed, "connection closed by {peer}"));
            }
            advance(iov, &mut start, r as usize);
        }
        Ok(())
    }

    /// Sends one framed message.
    pub fn send(&mut self, msg: &Msg, deadline: Option<Instant>) -> Result<()> {
        self.send_with_bulk(msg, &[], deadline)
    }

    /// Sends one framed message carrying `tag` (a request whose reply must be
    /// told apart from a late answer to an earlier one).
    pub fn send_tagged(&mut self, msg: &Msg, tag: u32, deadline: Option<Instant>) -> Result<()> {
        self.tag = tag;
        self.send_with_bulk(msg, &[], deadline)
    }

    /// Sends one framed message followed by the bytes of `bulk` (each
    /// segment's `src`, `len` in this process) in one gather write.
    pub fn send_with_bulk(
        &mut self,
        msg: &Msg,
        bulk: &[Segment],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut wbuf = std::mem::take(&mut self.wbuf);
        wbuf.clear();
        wire::encode(msg, self.tag, &mut wbuf);
        let mut iov = Vec::with_capacity(1 + bulk.len());
        iov.push(libc::iovec {
            iov_base: wbuf.as_mut_ptr() as *mut _,
            iov_len: wbuf.len(),
        });
        for s in bulk {
            push_iovec(&mut iov, s.src, s.len);
        }
        let lock = self.write_lock.clone();
        let turn = lock
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()));
        let r = self.writev_all(&mut iov, deadline);
        drop(turn);
        self.wbuf = wbuf;
        r
    }

    /// Receives one framed message. `None` deadline waits forever.
    pub fn recv(&mut self, deadline: Option<Instant>) -> Result<Msg> {
        let mut hdr = [0u8; HEADER_LEN];
        let mut iov = [libc::iovec {
            iov_base: hdr.as_mut_ptr() as *mut _,
            iov_len: HEADER_LEN,
        }];
        self.readv_all(&mut iov, deadline)?;
        let header = self.accept_header(&hdr)?;
        self.tag = header.tag;
        let mut rbuf = std::mem::take(&mut self.rbuf);
        rbuf.clear();
        let r = self.read_payload(&mut rbuf, header.payload_len as usize, deadline);
        let out = r.and_then(|_| {
            wire::decode_payload(&header, &rbuf).map_err(|e| {
                err!(
                    LinkFailed,
                    "malformed {} payload from {}: {e}",
                    header.msg_type,
                    self.peer
                )
            })
        });
        if rbuf.capacity() <= 1 << 20 {
            self.rbuf = rbuf;
        }
        if out.is_err() {
            self.broken = true;
        }
        out
    }

    /// Decodes a frame header and checks its payload length against this
    /// connection's frame limit, before anything is allocated for it (either
    /// failing breaks the stream).
    fn accept_header(&mut self, hdr: &[u8; HEADER_LEN]) -> Result<Header> {
        let header = match wire::decode_header(hdr) {
            Ok(h) => h,
            Err(e) => {
                let peer = self.peer;
                return self.fail(err!(LinkFailed, "malformed frame from {peer}: {e}"));
            }
        };
        if header.payload_len > self.frame_limit {
            let (peer, limit) = (self.peer, self.frame_limit);
            return self.fail(err!(
                LinkFailed,
                "frame of {} bytes from {peer} exceeds the {limit} bytes this connection accepts",
                header.payload_len
            ));
        }
        Ok(header)
    }

    /// Waits with no deadline for the next frame to begin (an idle link is
    /// bounded by keepalive), then receives it within `frame_timeout`: a peer
    /// that stalls inside a frame loses the connection.
    pub fn recv_idle(&mut self, frame_timeout: Duration) -> Result<Msg> {
        let mut spun = false;
        self.wait(libc::POLLIN, None, &mut spun)?;
        self.recv(Some(Instant::now() + frame_timeout))
    }

    /// Reads `len` payload bytes into `buf`, growing it only as bytes arrive
    /// (the first step is [`FIRST_CHUNK`], each later one at most doubles what
    /// is already there), so a header alone never pins its announced size.
    fn read_payload(
        &mut self,
        buf: &mut Vec<u8>,
        len: usize,
        deadline: Option<Instant>,
    ) -> Result<()> {
        while buf.len() < len {
            let have = buf.len();
            let step = (len - have).min(have.max(FIRST_CHUNK));
            buf.reserve_exact(step);
            buf.resize(have + step, 0);
            let mut iov = [libc::iovec {
                iov_base: buf[have..].as_mut_ptr() as *mut _,
                iov_len: step,
            }];
            self.readv_all(&mut iov, deadline)?;
        }
        Ok(())
    }

    /// Reads bulk bytes into the `dst` side of each segment, in order.
    pub fn recv_bulk(&mut self, segs: &[Segment], deadline: Option<Instant>) -> Result<()> {
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(segs.len());
        for s in segs {
            push_iovec(&mut iov, s.dst, s.len);
        }
        self.readv_all(&mut iov, deadline)
    }

    /// Reads whatever has arrived of the bulk bytes of `segs` (into each
    /// segment's `dst`, in order) from where `p` stands, without blocking;
    /// true once every byte is in. No allocation: at most [`BULK_STEP_IOVS`]
    /// segments per `readv`.
    pub fn recv_bulk_some(&mut self, segs: &[Segment], p: &mut BulkProgress) -> Result<bool> {
        let fd = self.stream.as_raw_fd();
        loop {
            while p.seg < segs.len() && p.off >= segs[p.seg].len {
                p.seg += 1;
                p.off = 0;
            }
            if p.seg == segs.len() {
                return Ok(true);
            }
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BULK_STEP_IOVS];
            let mut n = 0;
            for (i, s) in segs[p.seg..].iter().take(BULK_STEP_IOVS).enumerate() {
                let off = if i == 0 { p.off } else { 0 };
                iov[n] = libc::iovec {
                    iov_base: (s.dst + off) as usize as *mut _,
                    iov_len: (s.len - off) as usize,
                };
                n += 1;
            }
            // SAFETY: the segments' destinations are writable memory the
            // caller vouches for (checked against its registrations).
            let r = unsafe { libc::readv(fd, iov.as_ptr(), n as i32) };
            let mut left = match self.nonblocking(r, Dir::Read)? {
                Step::Moved(k) => k as u64,
                Step::WouldBlock => return Ok(false),
                Step::Interrupted => continue,
            };
            while left > 0 {
                let room = segs[p.seg].len - p.off;
                let k = left.min(room);
                p.off += k;
                left -= k;
                if p.off == segs[p.seg].len {
                    p.seg += 1;
                    p.off = 0;
                }
            }
        }
    }

    /// Encodes `msg` (with this connection's tag) into `frame`, for
    /// [`Conn::send_some`].
    pub fn encode_frame(&self, msg: &Msg, frame: &mut Vec<u8>) {
        frame.clear();
        wire::encode(msg, self.tag, frame);
    }

    /// Whether [`Conn::send_some`] may be used: a connection whose writes
    /// take turns with another writer (a control connection) may not.
    pub fn sends_alone(&self) -> bool {
        self.write_lock.is_none()
    }

    /// Sends what the socket takes now of `frame` followed by the bytes of
    /// `bulk` (each segment's `src`), from `*sent` bytes in, without
    /// blocking; true once all is out. No allocation: at most
    /// [`BULK_STEP_IOVS`] pieces per `sendmsg`. Only for a connection that
    /// [`sends_alone`](Conn::sends_alone).
    pub fn send_some(&mut self, frame: &[u8], bulk: &[Segment], sent: &mut u64) -> Result<bool> {
        debug_assert!(self.sends_alone());
        let fd = self.stream.as_raw_fd();
        let total = frame.len() as u64 + bulk.iter().map(|s| s.len).sum::<u64>();
        while *sent < total {
            let mut iov = [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; BULK_STEP_IOVS];
            let mut n = 0;
            let mut skip = *sent;
            let pieces = std::iter::once((frame.as_ptr() as u64, frame.len() as u64))
                .chain(bulk.iter().map(|s| (s.src, s.len)));
            for (addr, len) in pieces {
                if n == BULK_STEP_IOVS {
                    break;
                }
                if skip >= len {
                    skip -= len;
                    continue;
                }
                iov[n] = libc::iovec {
                    iov_base: (addr + skip) as usize as *mut _,
                    iov_len: (len - skip) as usize,
                };
                skip = 0;
                n += 1;
            }
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = iov.as_mut_ptr();
            msg.msg_iovlen = n as _;
            // SAFETY: the iovecs point at `frame` and at bulk memory the
            // caller vouches for (checked against its registrations).
            let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL) };
            *sent += match self.nonblocking(r, Dir::Write)? {
                Step::Moved(k) => k as u64,
                Step::WouldBlock => return Ok(false),
                Step::Interrupted => continue,
            };
        }
        Ok(true)
    }

    /// Waits without spinning until the socket is writable, or fails with
    /// `Timeout` at `deadline` (the connection is then broken).
    pub fn wait_writable(&mut self, deadline: Instant) -> Result<()> {
        let mut spun = true;
        match self.wait(libc::POLLOUT, Some(deadline), &mut spun) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// Waits without spinning until the socket is readable, or fails with
    /// `Timeout` at `deadline` (the connection is then broken: a reply may
    /// still be on its way).
    pub fn wait_readable(&mut self, deadline: Instant) -> Result<()> {
        let mut spun = true;
        match self.wait(libc::POLLIN, Some(deadline), &mut spun) {
            Ok(()) => Ok(()),
            Err(e) => self.fail(e),
        }
    }

    /// Reads and discards `n` bulk bytes (keeps the stream in sync after a
    /// rejected write).
    pub fn discard(&mut self, mut n: u64, deadline: Option<Instant>) -> Result<()> {
        let mut scratch = vec![0u8; 64 * 1024];
        while n > 0 {
            let k = n.min(scratch.len() as u64) as usize;
            let mut iov = [libc::iovec {
                iov_base: scratch.as_mut_ptr() as *mut _,
                iov_len: k,
            }];
            self.readv_all(&mut iov, deadline)?;
            n -= k as u64;
        }
        Ok(())
    }

    /// Sends a `Reply` with `status` and `message`.
    pub fn reply(
        &mut self,
        status: Status,
        message: &str,
        deadline: Option<Instant>,
    ) -> Result<()> {
        self.send(
            &Msg::Reply {
                status: status.code(),
                message: message.to_string(),
            },
            deadline,
        )
    }
}

/// One non-blocking system call's outcome ([`Conn::nonblocking`]).
enum Step {
    Moved(usize),
    WouldBlock,
    Interrupted,
}

/// Segments per `readv` of [`Conn::recv_bulk_some`].
const BULK_STEP_IOVS: usize = 16;

/// How far a bulk receive into a segment list has come
/// ([`Conn::recv_bulk_some`]): the segment under way and the bytes of it in.
#[derive(Clone, Copy, Debug, Default)]
pub struct BulkProgress {
    seg: usize,
    off: u64,
}

/// The part of the next frame that has arrived on a served connection (see
/// [`Conn::poll_frame`]): the header, then the payload, each read exactly, so
/// bulk bytes that follow a request stay in the socket for its handler.
#[derive(Default)]
pub struct FrameReader {
    hdr: [u8; HEADER_LEN],
    have: usize,
    header: Option<Header>,
    payload: Vec<u8>,
    started: Option<Instant>,
}

impl FrameReader {
    /// When the frame under way began to arrive (`None`: between frames).
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    fn reset(&mut self) {
        self.have = 0;
        self.header = None;
        self.payload.clear();
        if self.payload.capacity() > 1 << 20 {
            self.payload = Vec::new();
        }
        self.started = None;
    }
}

impl std::os::fd::AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl Conn {
    /// The busy-poll spin of this connection (`llmdd.BusyPollUs`).
    pub fn spin(&self) -> Duration {
        self.spin
    }

    /// One non-blocking read into `buf`: `Ok(None)` when nothing is there.
    fn read_some(&mut self, buf: &mut [u8]) -> Result<Option<usize>> {
        loop {
            // SAFETY: reading into a buffer we own.
            let r = unsafe {
                libc::read(
                    self.stream.as_raw_fd(),
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                )
            };
            match self.nonblocking(r, Dir::Read)? {
                Step::Moved(n) => return Ok(Some(n)),
                Step::WouldBlock => return Ok(None),
                Step::Interrupted => continue,
            }
        }
    }

    /// What the return value `r` of one non-blocking read or write (`dir`)
    /// means; an end of stream (a read of 0) or an error breaks the
    /// connection.
    fn nonblocking(&mut self, r: isize, dir: Dir) -> Result<Step> {
        let peer = self.peer;
        if r > 0 || (r == 0 && dir == Dir::Write) {
            return Ok(Step::Moved(r as usize));
        }
        if r == 0 {
            return self.fail(err!(LinkFailed, "connection closed by {peer}"));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock => Ok(Step::WouldBlock),
            io::ErrorKind::Interrupted => Ok(Step::Interrupted),
            _ => {
                let what = if dir == Dir::Read {
                    "receiving"
                } else {
                    "sending"
                };
                self.fail(io_err(what, &peer, e))
            }
        }
    }

    /// Reads whatever has arrived of the next frame into `r` without
    /// blocking; the frame once complete. The header is checked (and the
    /// payload bounded by the frame limit) before any payload buffer grows,
    /// and the buffer grows only as bytes arrive, as in [`Conn::recv`].
    pub fn poll_frame(&mut self, r: &mut FrameReader) -> Result<Option<Msg>> {
        loop {
            let Some(header) = r.header else {
                let mut hdr = r.hdr;
                let got = self.read_some(&mut hdr[r.have..])?;
                r.hdr = hdr;
                let Some(n) = got else { return Ok(None) };
                r.started.get_or_insert_with(Instant::now);
                r.have += n;
                if r.have < HEADER_LEN {
                    continue;
                }
                r.header = Some(self.accept_header(&r.hdr)?);
                continue;
            };
            let len = header.payload_len as usize;
            let have = r.payload.len();
            if have < len {
                let step = (len - have).min(have.max(FIRST_CHUNK));
                r.payload.reserve_exact(step);
                r.payload.resize(have + step, 0);
                let got = self.read_some(&mut r.payload[have..]);
                let n = match got {
                    Ok(Some(n)) => n,
                    Ok(None) => 0,
                    Err(e) => {
                        r.payload.truncate(have);
                        return Err(e);
                    }
                };
                r.payload.truncate(have + n);
                if n == 0 {
                    return Ok(None);
                }
                continue;
            }
            let out = wire::decode_payload(&header, &r.payload).map_err(|e| {
                err!(
                    LinkFailed,
                    "malformed {} payload from {}: {e}",
                    header.msg_type,
                    self.peer
                )
            });
            r.reset();
            self.tag = header.tag;
            return match out {
                Ok(m) => Ok(Some(m)),
                Err(e) => self.fail(e),
            };
        }
    }
}

// SAFETY: Conn holds only a socket and owned buffers; raw pointers exist only
// transiently inside its methods.
unsafe impl Send for Conn {}

/// Moves the start of an iovec list forward by `n` consumed bytes.
fn advance(iov: &mut [libc::iovec], start: &mut usize, mut n: usize) {
    while n > 0 && *start < iov.len() {
        let cur = &mut iov[*start];
        if n >= cur.iov_len {
            n -= cur.iov_len;
            cur.iov_len = 0;
            *start += 1;
        } else {
            cur.iov_base = (cur.iov_base as usize + n) as *mut _;
            cur.iov_len -= n;
            n = 0;
        }
    }
    while *start < iov.len() && iov[*start].iov_len == 0 {
        *start += 1;
    }
}

/// Turns on TCP keepalive so that a peer silent for `dead_peer` (no data, no
/// probe answered) errors the socket: the first probe after half the bound,
/// then probes at a sixth of it, and `TCP_USER_TIMEOUT` = the bound (which also
/// limits how long sent data may stay unacknowledged).
fn set_keepalive(stream: &TcpStream, dead_peer: Duration) -> io::Result<()> {
    if dead_peer.is_zero() {
        return Ok(());
    }
    let ms = dead_peer.as_millis().min(i32::MAX as u128) as i32;
    let idle = (ms / 2000).max(1);
    let intvl = (ms / 6000).max(1);
    let cnt = ((ms / 1000 - idle) / intvl).clamp(1, 127) + 1;
    let fd = stream.as_raw_fd();
    let set = |level: i32, name: i32, v: i32| -> io::Result<()> {
        // SAFETY: setsockopt with a valid fd and a 4-byte integer option.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                &v as *const i32 as *const _,
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, intvl)?;
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, cnt)?;
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, ms)
}

/// Why `stream` is finished, if it is: the peer closed its side, or the socket
/// errored (reset, keepalive timeout). Does not consume pending data.
pub fn hangup(stream: &TcpStream) -> Option<String> {
    let mut p = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    if unsafe { libc::poll(&mut p, 1, 0) } <= 0 {
        return None;
    }
    if p.revents & libc::POLLERR != 0 {
        let e = stream
            .take_error()
            .ok()
            .flatten()
            .map_or_else(|| "socket error".to_string(), |e| e.to_string());
        return Some(e);
    }
    if p.revents & (libc::POLLHUP | libc::POLLRDHUP) != 0 {
        return Some("connection closed by the peer".into());
    }
    None
}

/// A non-blocking eventfd (a thread's wake-up), closed by the caller.
pub fn eventfd() -> Result<i32> {
    // SAFETY: plain eventfd creation.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        bail!(Failed, "eventfd failed: {}", io::Error::last_os_error());
    }
    Ok(fd)
}

/// Wakes whoever polls the eventfd `fd`.
pub fn notify(fd: i32) {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes to an eventfd.
    unsafe { libc::write(fd, &one as *const u64 as *const _, 8) };
}

/// poll(2) on one fd; true if ready (or errored, so the next syscall reports it).
pub fn poll_fd(fd: i32, events: i16, timeout_ms: i32) -> Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::new(Status::Failed, format!("poll failed: {e}")));
        }
        return Ok(r > 0);
    }
}

/// Converts a reply status into a result, carrying the peer's message.
pub fn check_reply(status: u32, message: &str, what: &str) -> Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(Error::new(
            Status::from_code(status),
            format!("{what}: peer reported: {message}"),
        ))
    }
}

#[cfg(test)]
mod tests {
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
            let r = unsafe {
                libc::getsockopt(fd, level, name, &mut v as *mut i32 as *mut _, &mut len)
            };
            assert_eq!(r, 0);
            v
        };
        assert_eq!(get(libc::SOL_SOCKET, libc::SO_KEEPALIVE), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE), 2);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL), 1);
        assert_eq!(get(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT), 5000);
    }
}
