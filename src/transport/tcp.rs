//! One TCP connection of a link: framed messages and bulk scatter/gather I/O,
//! every wait bounded by a deadline, with a short busy-poll before sleeping
//! (waking an idle vCPU costs ~50 µs; a brief spin keeps small transfers fast).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::cache::types::Segment;
use crate::status::{Error, Result, Status};
use crate::transport::wire::{self, Header, Msg, HEADER_LEN};
use crate::{bail, err};

/// Most iovecs handed to one readv/writev call.
const IOV_BATCH: usize = 1024;

/// A connected, non-blocking TCP stream with reusable buffers.
pub struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    spin: Duration,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// Set when the byte stream can no longer be trusted (timeout mid-message,
    /// protocol error); the owner must drop the connection.
    broken: bool,
}

fn io_err(op: &str, peer: &SocketAddr, e: io::Error) -> Error {
    err!(LinkFailed, "{op} with {peer} failed: {e}")
}

impl Conn {
    /// Wraps a connected stream (sets non-blocking and TCP_NODELAY).
    pub fn new(stream: TcpStream, spin: Duration) -> Result<Conn> {
        let peer = stream
            .peer_addr()
            .map_err(|e| err!(LinkFailed, "connection has no peer address: {e}"))?;
        stream
            .set_nonblocking(true)
            .and_then(|_| stream.set_nodelay(true))
            .map_err(|e| io_err("configuring socket", &peer, e))?;
        Ok(Conn {
            stream,
            peer,
            spin,
            wbuf: Vec::with_capacity(4096),
            rbuf: Vec::with_capacity(4096),
            broken: false,
        })
    }

    /// Connects to `addr` within `timeout`.
    pub fn connect(addr: &SocketAddr, timeout: Duration, spin: Duration) -> Result<Conn> {
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
        Conn::new(stream, spin)
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

    /// A handle that can shut this connection down from another thread.
    pub fn shutdown_handle(&self) -> Result<TcpStream> {
        self.stream
            .try_clone()
            .map_err(|e| io_err("cloning socket", &self.peer, e))
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
        wire::encode(msg, 0, &mut wbuf);
        let mut iov = Vec::with_capacity(1 + bulk.len());
        iov.push(libc::iovec {
            iov_base: wbuf.as_mut_ptr() as *mut _,
            iov_len: wbuf.len(),
        });
        iov.extend(bulk.iter().map(|s| libc::iovec {
            iov_base: s.src as usize as *mut _,
            iov_len: s.len as usize,
        }));
        let r = self.writev_all(&mut iov, deadline);
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
        let header: Header = match wire::decode_header(&hdr) {
            Ok(h) => h,
            Err(e) => {
                let peer = self.peer;
                return self.fail(err!(LinkFailed, "malformed frame from {peer}: {e}"));
            }
        };
        let mut rbuf = std::mem::take(&mut self.rbuf);
        rbuf.clear();
        rbuf.resize(header.payload_len as usize, 0);
        let mut iov = [libc::iovec {
            iov_base: rbuf.as_mut_ptr() as *mut _,
            iov_len: rbuf.len(),
        }];
        let r = self.readv_all(&mut iov, deadline);
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

    /// Reads bulk bytes into the `dst` side of each segment, in order.
    pub fn recv_bulk(&mut self, segs: &[Segment], deadline: Option<Instant>) -> Result<()> {
        let mut iov: Vec<libc::iovec> = segs
            .iter()
            .map(|s| libc::iovec {
                iov_base: s.dst as usize as *mut _,
                iov_len: s.len as usize,
            })
            .collect();
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
        let e = Conn::connect(&addr, Duration::from_millis(500), Duration::ZERO)
            .err()
            .unwrap();
        assert_eq!(e.status, Status::LinkFailed);
        assert!(t.elapsed() < Duration::from_millis(1500));
    }
}
