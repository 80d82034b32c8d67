//! The death watch of a session's links: one thread per session waits
//! (epoll) on the pidfd of every same-host peer and on the control connection
//! of every link this side dialed, and marks the link dead
//! ([`Link::mark_dead`]) the moment its peer process exits, or its server
//! closes the control connection (unlink, forced unlink, finalize, exit) or
//! keepalive errors it (the peer's host is gone). Transfers then fail with
//! `LLM_LINK_FAILED` without moving a byte, the peer's pool mappings are
//! dropped, and `link_clusters` to that cluster replaces the dead entry.
//!
//! This is the only thing that marks a link dead besides the transfer path,
//! which checks the pidfd itself around every same-host copy: the thread makes
//! the news arrive early, correctness does not depend on it. The server needs
//! no watch for its control connections: the thread serving one sees it end.

use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::datadist::link::Link;
use crate::status::Result;
use crate::transport::tcp::hangup;
use crate::{err, log_warn};

/// Token of the wake-up eventfd in the epoll set.
const WAKE: u64 = 0;
/// While a link's own non-forced unlink runs, its control connection hanging
/// up is that unlink's business: the event is looked at again after this.
const UNLINKING_RECHECK: Duration = Duration::from_millis(2);

/// What one watched descriptor stands for.
enum Watched {
    /// A dup of the peer's pidfd (ours, so its number cannot be reused while
    /// it is in the epoll set): readable once the process has exited.
    Process { fd: OwnedFd, pid: u32 },
    /// The control connection of a link this side dialed (shared, so its
    /// descriptor stays open while it is in the epoll set; no dup).
    Control(Arc<TcpStream>),
}

impl Watched {
    fn fd(&self) -> RawFd {
        match self {
            Watched::Process { fd, .. } => fd.as_raw_fd(),
            Watched::Control(s) => s.as_raw_fd(),
        }
    }
}

struct Entry {
    link: Weak<Link>,
    what: Watched,
}

impl Entry {
    /// The link, unless it is gone or torn down (nothing left to watch).
    fn live_link(&self) -> Option<Arc<Link>> {
        self.link.upgrade().filter(|l| !l.is_closed())
    }
}

type Entries = Mutex<HashMap<u64, Entry>>;

struct Running {
    epfd: Arc<OwnedFd>,
    wake: OwnedFd,
    entries: Arc<Entries>,
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
    /// Watches `link`: its peer process (a same-host link) and, on the side
    /// that dialed it, its control connection. A no-op when there is neither.
    pub fn watch(&self, link: &Arc<Link>) -> Result<()> {
        let mut new = Vec::new();
        if let Some(p) = link.peer_process() {
            new.push((
                Watched::Process {
                    fd: dup(p.pidfd())?,
                    pid: p.pid(),
                },
                libc::EPOLLIN as u32,
            ));
        }
        if link.we_dialed {
            if let Some(s) = link.control_socket() {
                new.push((
                    Watched::Control(s),
                    (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32,
                ));
            }
        }
        if new.is_empty() {
            return Ok(());
        }
        let mut g = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            *g = Some(start()?);
        }
        let r = g.as_mut().expect("started above");
        let mut entries = r.entries.lock().unwrap_or_else(|p| p.into_inner());
        forget_finished(&r.epfd, &mut entries);
        for (what, events) in new {
            r.next += 1;
            let token = r.next;
            let mut ev = libc::epoll_event { events, u64: token };
            // SAFETY: adding a descriptor the entry keeps open to our epoll set.
            cvt(unsafe {
                libc::epoll_ctl(r.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, what.fd(), &mut ev)
            })
            .map_err(|e| {
                err!(
                    Failed,
                    "cannot watch the link to cluster {}: {e}",
                    link.remote_cluster_id
                )
            })?;
            entries.insert(
                token,
                Entry {
                    link: Arc::downgrade(link),
                    what,
                },
            );
        }
        Ok(())
    }

    /// Stops the thread and releases what it watched (finalize).
    pub fn stop(&self) {
        let r = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(r) = r {
            crate::transport::tcp::notify(r.wake.as_raw_fd());
            let _ = r.thread.join();
            r.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }
}

/// Drops the entries of links that are gone or torn down (their sockets and
/// pidfd dups are released now).
fn forget_finished(epfd: &OwnedFd, entries: &mut HashMap<u64, Entry>) {
    entries.retain(|_, e| {
        let keep = e.live_link().is_some();
        if !keep {
            unregister(epfd, e.what.fd());
        }
        keep
    });
}

fn unregister(epfd: &OwnedFd, fd: RawFd) {
    // SAFETY: removing a descriptor (still open: its entry holds it) from our
    // epoll set; an error only means it was not there.
    unsafe {
        libc::epoll_ctl(
            epfd.as_raw_fd(),
            libc::EPOLL_CTL_DEL,
            fd,
            std::ptr::null_mut(),
        )
    };
}

fn dup(fd: RawFd) -> Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a valid fd returns a new fd we own.
    let n = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })
        .map_err(|e| err!(Failed, "cannot duplicate a descriptor to watch: {e}"))?;
    // SAFETY: the kernel just handed us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn start() -> Result<Running> {
    // SAFETY: plain syscall creating an fd we own.
    let epfd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })
        .map_err(|e| err!(Failed, "epoll_create1 failed: {e}"))?;
    // SAFETY: the kernel just handed us this fd.
    let epfd = Arc::new(unsafe { OwnedFd::from_raw_fd(epfd) });
    // SAFETY: the eventfd helper returns an fd we own.
    let wake = unsafe { OwnedFd::from_raw_fd(crate::transport::tcp::eventfd()?) };
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
    let entries: Arc<Entries> = Arc::default();
    let (e2, ep2) = (entries.clone(), epfd.clone());
    let thread = std::thread::Builder::new()
        .name("llmdd-liveness".into())
        .stack_size(128 * 1024)
        .spawn(move || run(&ep2, &e2))
        .map_err(|e| err!(Failed, "cannot start the liveness thread: {e}"))?;
    Ok(Running {
        epfd,
        wake,
        entries,
        next: WAKE,
        thread,
    })
}

fn run(epfd: &OwnedFd, entries: &Entries) {
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
        let mut unlinking = false;
        let mut dead = Vec::new();
        {
            let mut m = entries.lock().unwrap_or_else(|p| p.into_inner());
            for ev in &evs[..n as usize] {
                // A copy: epoll_event is packed on x86-64.
                let token = ev.u64;
                if token == WAKE {
                    return;
                }
                let Some(e) = m.get(&token) else { continue };
                let Some(link) = e.live_link() else {
                    // Torn down here (its own sockets shut down): forget it.
                    let e = m.remove(&token).expect("looked up above");
                    unregister(epfd, e.what.fd());
                    continue;
                };
                let why = match &e.what {
                    Watched::Process { pid, .. } => format!("its peer process {pid} exited"),
                    Watched::Control(_) if link.is_draining() => {
                        // Its unlink is under way and ends it (or, failing,
                        // lets transfers start again): look again shortly.
                        unlinking = true;
                        continue;
                    }
                    Watched::Control(s) => match hangup(s) {
                        Some(why) => format!("the server ended it: {why}"),
                        // Level-triggered: it fires again if it is real.
                        None => continue,
                    },
                };
                // Removed explicitly: a socket stays open through the link's
                // own descriptors, and a level-triggered hang-up would repeat.
                let e = m.remove(&token).expect("looked up above");
                unregister(epfd, e.what.fd());
                dead.push((link, why));
            }
        }
        // Outside the lock: marking dead tears the link down (and waits for
        // copies using the peer's pools).
        for (link, why) in dead {
            link.mark_dead(&why);
        }
        if unlinking {
            std::thread::sleep(UNLINKING_RECHECK);
        }
    }
}
