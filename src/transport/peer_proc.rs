//! A same-host peer process held by a pidfd (`pidfd_open`): the handle stays
//! bound to that exact process, so a pid reused by another process after the
//! peer died is never mistaken for it. Liveness is one `poll` on the pidfd
//! (readable = the process has exited).
//!
//! A peer that keeps a liveness word (`transport::live`) is checked with a
//! load of that word instead, and polled only when the word changed.
//!
//! One pidfd serves every link to a process: [`PeerProcess::shared`] swaps a
//! freshly verified handle for the one already held for that pid and proven
//! identity, so clones share a descriptor that closes with the last of them.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::transport::live::LiveWord;

/// A live (at open time) process of this host, held by a pidfd (shared by
/// clones: the descriptor closes with the last one).
#[derive(Clone, Debug)]
pub struct PeerProcess {
    pid: u32,
    pidfd: Arc<OwnedFd>,
    /// The peer's liveness word, when it has one (`transport::live`).
    live: Option<Arc<LiveWord>>,
}

/// The pidfds held for verified peers, by pid and the identity secret the
/// peer proved to hold (which no other process has).
type Shared = HashMap<(u32, [u8; 32]), (Weak<OwnedFd>, Option<Weak<LiveWord>>)>;

fn shared_table() -> &'static Mutex<Shared> {
    static T: OnceLock<Mutex<Shared>> = OnceLock::new();
    T.get_or_init(Mutex::default)
}

impl PeerProcess {
    /// Opens a pidfd on process `pid` (of this pid namespace).
    pub fn open(pid: u32) -> io::Result<PeerProcess> {
        let p = i32::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
        if p <= 0 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: plain syscall; returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel just handed us this fd; we own it.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        Ok(PeerProcess {
            pid,
            pidfd: Arc::new(pidfd),
            live: None,
        })
    }

    /// This handle, checked through the peer's liveness word `live` (mapped
    /// after this pidfd was opened, so it is this process's).
    pub fn with_live(mut self, live: Option<LiveWord>) -> PeerProcess {
        self.live = live.map(Arc::new);
        self
    }

    /// True if liveness is a load of the peer's word (else a poll).
    pub fn has_live_word(&self) -> bool {
        self.live.is_some()
    }

    /// This process as held already for another link, if it is (the same pid
    /// and `identity`, the secret it proved to hold, and still alive), else
    /// this handle, remembered for the next link. The fresh handle's pidfd
    /// then closes at once.
    pub fn shared(self, identity: &[u8; 32]) -> PeerProcess {
        let mut t = shared_table().lock().unwrap_or_else(|p| p.into_inner());
        t.retain(|_, (w, _)| w.strong_count() > 0);
        let key = (self.pid, *identity);
        if let Some((fd, live)) = t.get(&key).and_then(|(w, l)| Some((w.upgrade()?, l))) {
            let held = PeerProcess {
                pid: self.pid,
                pidfd: fd,
                live: live.as_ref().and_then(Weak::upgrade),
            };
            if held.is_alive() {
                return held;
            }
        }
        t.insert(
            key,
            (
                Arc::downgrade(&self.pidfd),
                self.live.as_ref().map(Arc::downgrade),
            ),
        );
        self
    }

    /// The pidfd, shared (a watch keeps it open while registered).
    pub fn pidfd_shared(&self) -> Arc<OwnedFd> {
        self.pidfd.clone()
    }

    /// The process id (in this pid namespace).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The pidfd (readable once the process has exited).
    pub fn pidfd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// True while the process has not exited. While this returns true after
    /// an operation on `pid`, that operation reached this exact process (a pid
    /// is not reused before its process has exited and been reaped).
    /// A load of the peer's liveness word while it holds the value seen at
    /// link time (the kernel changes it during the exit, before any reaping);
    /// else one `poll` of the pidfd.
    #[inline]
    pub fn is_alive(&self) -> bool {
        if self.live.as_ref().is_some_and(|l| l.holds()) {
            return true;
        }
        self.poll_alive()
    }

    /// True while the process has not exited, by one `poll` of the pidfd
    /// (the exact check, whatever the liveness word says).
    pub fn poll_alive(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: one valid pollfd, no wait.
            let r = unsafe { libc::poll(&mut p, 1, 0) };
            if r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Readable (exited) or any error: not alive.
            return r == 0;
        }
    }

    /// A duplicate of the process's file descriptor `fd` (the same open
    /// file), taken through the pidfd (`pidfd_getfd`, which needs ptrace
    /// access to the process), so it is the descriptor of this exact process.
    /// Kernels before 5.6 fall back to opening `/proc/<pid>/fd/<fd>` with
    /// `flags`, checked against the pidfd afterwards.
    pub fn take_fd(&self, fd: u32, flags: i32) -> io::Result<OwnedFd> {
        let n = i32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: plain syscall; returns a new (close-on-exec) fd or -1.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), n, 0) };
        if r >= 0 {
            // SAFETY: a new fd from the kernel; we own it.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOSYS) {
            return Err(e);
        }
        let c = std::ffi::CString::new(format!("/proc/{}/fd/{fd}", self.pid))
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: valid C string.
        let f = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
        if f < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new fd; we own it.
        let f = unsafe { OwnedFd::from_raw_fd(f) };
        if !self.is_alive() {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(f)
    }
}

/// The target of `/proc/self/fd/<fd>` (e.g. `/memfd:name (deleted)`).
pub fn fd_path(fd: RawFd) -> io::Result<String> {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_fds_can_be_taken() {
        let me = PeerProcess::open(std::process::id()).unwrap();
        assert!(me.is_alive());
        let r = std::fs::File::open("/proc/self/status").unwrap();
        let dup = me.take_fd(r.as_raw_fd() as u32, libc::O_RDONLY).unwrap();
        assert!(fd_path(dup.as_raw_fd()).unwrap().ends_with("/status"));
        assert!(me.take_fd(1 << 30, libc::O_RDONLY).is_err());
    }

    #[test]
    fn links_to_one_process_share_its_pidfd() {
        let me = std::process::id();
        let id = [7u8; 32];
        let a = PeerProcess::open(me).unwrap().shared(&id);
        let b = PeerProcess::open(me).unwrap().shared(&id);
        assert!(Arc::ptr_eq(&a.pidfd_shared(), &b.pidfd_shared()));
        // Another proven identity is another process (a reused pid).
        let c = PeerProcess::open(me).unwrap().shared(&[8u8; 32]);
        assert_ne!(a.pidfd(), c.pidfd());
        // Two handles and the one just taken: the fresh duplicates closed.
        assert_eq!(Arc::strong_count(&a.pidfd_shared()), 3);
    }

    #[test]
    fn exited_child_is_dead_and_stays_bound() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let p = PeerProcess::open(child.id()).unwrap();
        child.wait().unwrap();
        assert!(!p.is_alive());
        assert!(PeerProcess::open(0).is_err());
    }
}
