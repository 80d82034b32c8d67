//! Death watch of one-sided links: one thread per session waits (epoll) on
//! the pidfd of every same-host peer and on the control connection of every
//! link this side dialed with a one-sided path, and marks the link dead the
//! moment its peer process exits or its peer closes the control connection
//! (unlink, finalize, exit): later transfers fail with `LLM_LINK_FAILED`
//! without moving a byte, and the peer's pool mappings are dropped. The
//! transfer path checks the pidfd itself around every copy, so this thread
//! only makes the news arrive early; correctness does not depend on it.

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

use crate::datadist::link::Link;
use crate::status::Result;
use crate::{err, log_warn};

/// Token of the wake-up eventfd in the epoll set.
const WAKE: u64 = 0;

/// What one watched descriptor means.
struct Entry {
    link: Weak<Link>,
    /// Our own descriptor (a dup), so its number cannot be reused under us.
    fd: OwnedFd,
    why: &'static str,
}

struct Running {
    epfd: Arc<OwnedFd>,
    wake: Arc<OwnedFd>,
    entries: Arc<Mutex<HashMap<u64, Entry>>>,
    next: u64,
    thread: JoinHandle<()>,
}

/// The death watch of a session (started on first use, stopped at finalize).
#[derive(Default)]
pub(crate) struct Liveness {
    running: Mutex<Option<Running>>,
}

fn cvt(r: i32) -> io::Result<i32> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Liveness {
    /// Watches `link` (a no-op for links without a one-sided path): its peer
    /// process, and `control` (its control connection on the dialing side).
    pub fn watch(&self, link: &Arc<Link>, control: Option<&TcpStream>) -> Result<()> {
        if link.local_path.is_none() {
            return Ok(());
        }
        let mut fds: Vec<(OwnedFd, &'static str, u32)> = Vec::new();
        if let Some(p) = link.peer_process() {
            fds.push((
                dup(p.pidfd())?,
                "its peer process exited",
                libc::EPOLLIN as u32,
            ));
        }
        if let Some(c) = control {
            let ev = (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32;
            fds.push((
                dup(c.as_raw_fd())?,
                "its peer closed the control connection",
                ev,
            ));
        }
        if fds.is_empty() {
            return Ok(());
        }
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(start()?);
        }
        let r = g.as_mut().expect("started above");
        let mut entries = r.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Forget links that are gone.
        entries.retain(|_, e| {
            let keep = e.link.strong_count() > 0;
            if !keep {
                unregister(&r.epfd, &e.fd);
            }
            keep
        });
        for (fd, why, events) in fds {
            r.next += 1;
            let token = r.next;
            let mut ev = libc::epoll_event { events, u64: token };
            // SAFETY: adding our fd to our epoll set.
            cvt(unsafe {
                libc::epoll_ctl(
                    r.epfd.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    fd.as_raw_fd(),
                    &mut ev,
                )
            })
            .map_err(|e| {
                err!(
                    Failed,
                    "cannot watch link to cluster {}: {e}",
                    link.remote_cluster_id
                )
            })?;
            entries.insert(
                token,
                Entry {
                    link: Arc::downgrade(link),
                    fd,
                    why,
                },
            );
        }
        Ok(())
    }

    /// Stops the thread (finalize).
    pub fn stop(&self) {
        let r = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = r {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes to our eventfd.
            unsafe { libc::write(r.wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
            let _ = r.thread.join();
        }
    }
}

fn unregister(epfd: &OwnedFd, fd: &OwnedFd) {
    // SAFETY: removing our fd from our epoll set (an error only means it was
    // not there).
    unsafe {
        libc::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd.as_raw_fd(),
            std::ptr::null_mut(),
        )
    };
}

fn dup(fd: i32) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd we own.
    let n = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })
        .map_err(|e| err!(Failed, "cannot duplicate a descriptor to watch: {e}"))?;
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn start() -> Result<Running> {
    // SAFETY: plain syscalls creating fds we own.
    let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .map_err(|e| err!(Failed, "epoll_create1 failed: {e}"))?;
    let epfd = Arc::new(unsafe { OwnedFd::from_raw_fd(epfd) });
    let wake = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })
        .map_err(|e| err!(Failed, "eventfd failed: {e}"))?;
    let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(wake) });
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: WAKE,
    };
    // SAFETY: adding our eventfd to our epoll set.
    cvt(unsafe {
        libc::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            &mut ev,
        )
    })
    .map_err(|e| err!(Failed, "epoll_ctl failed: {e}"))?;
    let entries: Arc<Mutex<HashMap<u64, Entry>>> = Arc::default();
    let (e2, ep2, w2) = (entries.clone(), epfd.clone(), wake.clone());
    let thread = std::thread::Builder::new()
        .name("llmdd-liveness".into())
        .stack_size(128 * 1024)
        .spawn(move || run(&ep2, &e2, &w2))
        .map_err(|e| err!(Failed, "cannot start the liveness thread: {e}"))?;
    Ok(Running {
        epfd,
        wake,
        entries,
        next: WAKE,
        thread,
    })
}

fn run(epfd: &OwnedFd, entries: &Mutex<HashMap<u64, Entry>>, _wake: &OwnedFd) {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    loop {
        // SAFETY: waiting on our epoll set into our buffer.
        let n =
            unsafe { libc::epoll_wait(epfd.as_raw_fd(), evs.as_mut_ptr(), evs.len() as i32, -1) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log_warn!("liveness watch stopped: {}", io::Error::last_os_error());
            return;
        }
        for ev in &evs[..n as usize] {
            let token = ev.u64;
            if token == WAKE {
                return;
            }
            let e = entries
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&token);
            if let Some(e) = e {
                // Removed explicitly: a socket stays open through the link's
                // own descriptors, and a level-triggered hang-up would repeat.
                unregister(epfd, &e.fd);
                if let Some(l) = e.link.upgrade() {
                    l.mark_dead(e.why);
                }
            }
        }
    }
}
