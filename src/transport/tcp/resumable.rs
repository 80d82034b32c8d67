//! Non-blocking, resumable I/O on a [`Conn`]: sending a frame and its bulk
//! bytes, receiving bulk bytes and reading a served connection's next frame
//! a piece at a time, as far as the socket allows now, with no allocation per
//! step (the caller-side TCP exchange of `transfer::exec` and the poller).

use super::*;

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
            // SAFETY: `msghdr` is integers and raw pointers, for which
            // all-zero bytes are a valid value (NULL pointers, zero lengths).
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
