//! Who may hold a connection to this instance's listener: a cap per peer IP
//! address (`llmdd.MaxConnsPerPeer`) and caps on connections still in their
//! handshake (over all peers, and per address so that one address cannot
//! take every handshake slot), plus what the accept loop does when it must say no — a `Reply`
//! frame with the reason, so the client fails at once instead of waiting out
//! its link timeout — including when the process has no file descriptor left
//! (a spare descriptor is closed to accept and refuse, then reopened).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::status::Status;
use crate::transfer::handshake::frames::refusal_frame;

/// Most accepted connections that have not finished their first frame
/// (handshake or attach), over all peers.
pub(crate) const MAX_PENDING_CONNS: usize = 256;
/// Most of those from one peer address (a real client has one at a time per
/// link it sets up).
pub(crate) const MAX_PENDING_PER_PEER: usize = 64;

/// Connection accounting of one session's listeners.
pub struct Admission {
    max_per_peer: usize,
    /// Per address: open connections, and those of them in their handshake.
    per_peer: Mutex<HashMap<IpAddr, (usize, usize)>>,
    pending: AtomicUsize,
}

/// One connection of a peer address; released when dropped (it travels with
/// the connection, see `Conn::hold`).
pub struct PeerSlot {
    adm: Arc<Admission>,
    ip: IpAddr,
}

/// One connection still in its handshake; released when dropped.
pub struct PendingSlot {
    adm: Arc<Admission>,
    /// Set once the per-address pending count was taken.
    ip: Option<IpAddr>,
}

impl Admission {
    /// Accounting with at most `max_per_peer` connections per peer address.
    pub fn new(max_per_peer: u32) -> Arc<Admission> {
        Arc::new(Admission {
            max_per_peer: max_per_peer as usize,
            per_peer: Mutex::new(HashMap::new()),
            pending: AtomicUsize::new(0),
        })
    }

    /// Admits one more connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<(PeerSlot, PendingSlot), String> {
        let pending = self.pending.fetch_add(1, Ordering::AcqRel);
        let mut pending_slot = PendingSlot {
            adm: self.clone(),
            ip: None,
        };
        if pending >= MAX_PENDING_CONNS {
            return Err(format!(
                "{MAX_PENDING_CONNS} connections are already waiting for their handshake"
            ));
        }
        let mut m = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        let (open, in_handshake) = m.entry(ip).or_insert((0, 0));
        if *open >= self.max_per_peer {
            return Err(format!(
                "{ip} already has {} connections open here (llmdd.MaxConnsPerPeer)",
                self.max_per_peer
            ));
        }
        if *in_handshake >= MAX_PENDING_PER_PEER {
            return Err(format!(
                "{ip} already has {MAX_PENDING_PER_PEER} connections waiting for their handshake here"
            ));
        }
        *open += 1;
        *in_handshake += 1;
        pending_slot.ip = Some(ip);
        Ok((
            PeerSlot {
                adm: self.clone(),
                ip,
            },
            pending_slot,
        ))
    }

    /// Open connections from `ip` (tests and logs).
    pub fn peer_conns(&self, ip: IpAddr) -> usize {
        let m = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip).map_or(0, |c| c.0)
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut m = self.adm.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = m.get_mut(&self.ip) {
            c.0 -= 1;
            if c.0 == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.adm.pending.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = self.ip {
            let mut m = self.adm.per_peer.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = m.get_mut(&ip) {
                c.1 -= 1;
            }
        }
    }
}

/// Answers a connection with a `Reply` carrying `status` and `message`, then
/// closes it. Never blocks: the frame is small enough for an empty socket
/// buffer, and what the peer already sent is read and dropped first so that
/// closing sends a FIN (not a reset that could discard the answer).
pub fn refuse(stream: &TcpStream, status: Status, message: &str) {
    let frame = refusal_frame(status, message);
    let fd = stream.as_raw_fd();
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        // SAFETY: reading into a local buffer without blocking.
        let n = unsafe {
            libc::recv(
                fd,
                scratch.as_mut_ptr() as *mut _,
                scratch.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            break;
        }
    }
    // SAFETY: sending a local buffer without blocking or SIGPIPE.
    unsafe {
        libc::send(
            fd,
            frame.as_ptr() as *const _,
            frame.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// True for accept errors that mean "no file descriptor left".
pub fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A descriptor kept open only to be closed when the process runs out, so the
/// accept loop can still accept a connection to refuse it.
pub struct SpareFd(i32);

impl SpareFd {
    /// Opens the spare (`/dev/null`); -1 inside if that failed.
    pub fn open() -> SpareFd {
        SpareFd(open_dev_null())
    }

    /// Closes the spare; false if there was none.
    pub fn release(&mut self) -> bool {
        if self.0 < 0 {
            return false;
        }
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(self.0) };
        self.0 = -1;
        true
    }

    /// Reopens the spare if it is closed; false if that failed.
    pub fn restore(&mut self) -> bool {
        if self.0 < 0 {
            self.0 = open_dev_null();
        }
        self.0 >= 0
    }
}

impl Drop for SpareFd {
    fn drop(&mut self) {
        self.release();
    }
}

fn open_dev_null() -> i32 {
    // SAFETY: a constant NUL-terminated path.
    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_peer_cap_and_release() {
        let a = Admission::new(2);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        let s1 = a.admit(ip).unwrap();
        let s2 = a.admit(ip).unwrap();
        let e = a.admit(ip).err().unwrap();
        assert!(e.contains("llmdd.MaxConnsPerPeer"), "{e}");
        assert!(a.admit(other).is_ok());
        assert_eq!(a.peer_conns(ip), 2);
        drop(s1);
        assert_eq!(a.peer_conns(ip), 1);
        let _s3 = a.admit(ip).unwrap();
        drop(s2);
        assert_eq!(a.peer_conns(ip), 1);
        assert_eq!(a.pending.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn pending_caps() {
        let a = Admission::new(u32::MAX);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let mut held: Vec<_> = (0..MAX_PENDING_PER_PEER)
            .map(|_| a.admit(ip).unwrap())
            .collect();
        let e = a.admit(ip).err().unwrap();
        assert!(e.contains("waiting for their handshake here"), "{e}");
        // Other addresses fill the rest of the shared handshake slots.
        for i in 0..MAX_PENDING_CONNS - MAX_PENDING_PER_PEER {
            let other = IpAddr::from([10, 0, (i / 250) as u8, (i % 250) as u8]);
            held.push(a.admit(other).unwrap());
        }
        let e = a.admit("10.9.9.9".parse().unwrap()).err().unwrap();
        assert!(e.contains("already waiting"), "{e}");
        // Finishing a handshake frees a pending slot, not the peer slot.
        let (peer, pending) = held.remove(0);
        drop(pending);
        let again = a.admit(ip).unwrap();
        assert_eq!(a.peer_conns(ip), MAX_PENDING_PER_PEER + 1);
        drop((peer, again, held));
        assert_eq!(a.peer_conns(ip), 0);
        assert_eq!(a.pending.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn spare_fd_release_and_restore() {
        let mut s = SpareFd::open();
        assert!(s.0 >= 0);
        assert!(s.release());
        assert!(!s.release());
        assert!(s.restore());
        assert!(s.0 >= 0);
    }

    #[test]
    fn refusal_reaches_the_client() {
        use crate::transport::wire::{self, Msg};
        use std::io::Read;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        refuse(&s, Status::LinkFailed, "no room");
        drop(s);
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).unwrap();
        match wire::decode_frame(&buf).unwrap().1 {
            Msg::Reply { status, message } => {
                assert_eq!(status, Status::LinkFailed.code());
                assert_eq!(message, "no room");
            }
            m => panic!("unexpected {m:?}"),
        }
    }
}
