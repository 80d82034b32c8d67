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

mod resumable;
pub use resumable::{BulkProgress, FrameReader};

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
            // SAFETY: `msghdr` is integers and raw pointers, for which
            // all-zero bytes are a valid value (NULL pointers, zero lengths).
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
mod tests;
