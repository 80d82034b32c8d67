//! A same-host peer process held by a pidfd (`pidfd_open`): the handle stays
//! bound to that exact process, so a pid reused by another process after the
//! peer died is never mistaken for it. Liveness is one `poll` on the pidfd
//! (readable = the process has exited).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A live (at open time) process of this host, held by a pidfd.
#[derive(Debug)]
pub struct PeerProcess {
    pid: u32,
    pidfd: OwnedFd,
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
        Ok(PeerProcess { pid, pidfd })
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
    pub fn is_alive(&self) -> bool {
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
    fn exited_child_is_dead_and_stays_bound() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let p = PeerProcess::open(child.id()).unwrap();
        child.wait().unwrap();
        assert!(!p.is_alive());
        assert!(PeerProcess::open(0).is_err());
    }
}
