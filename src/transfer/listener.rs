//! The listening side of an instance. [`Listeners`] owns its endpoints (the
//! instance's own `llm.ListenIpInfo` and those bound for rank-table comms,
//! shared by reference count), the accepted connections not yet joined to a
//! link, the admission caps and the setup slots. A [`Listener`] is one
//! socket, its accept thread ("llmdd-accept") and the wake-up that stops it.
//! Accepted connections go to the instance ([`Admit`]), which hands them to
//! the handshake's serving side (`transfer::handshake::accept`: admission
//! caps, first frame, handshake or attach); when the process is out of
//! descriptors the accept loop answers a waiting connection with a refusal
//! itself (through a spare descriptor), so the client fails at once instead
//! of after its link timeout.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;

use crate::status::{Result, Status};
use crate::transfer::admission::{self, Admission, SpareFd};
use crate::transport::tcp::{eventfd, notify, poll_fd};
use crate::{bail, err};

/// What a listener hands its accepted connections to (the instance).
pub(crate) trait Admit: Send + Sync {
    /// The instance's cluster id (for logs).
    fn cluster_id(&self) -> u64;
    /// True once finalize has begun: the accept loop stops.
    fn is_closing(&self) -> bool;
    /// Takes an accepted connection in (or refuses it, with a reason).
    /// `comm_only`: it arrived on a listener bound for rank-table comms.
    fn admit(&self, stream: TcpStream, peer: SocketAddr, comm_only: bool);
}

/// The listening endpoint and its accept thread.
pub(crate) struct Listener {
    addr: SocketAddr,
    wake: i32,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Binds `addr` and starts its accept thread, which hands connections to
    /// `host` while it lives. `comm_only`: a listener bound for rank-table
    /// comms (passed on to [`Admit::admit`]).
    pub(crate) fn bind(addr: SocketAddr, comm_only: bool, host: Weak<dyn Admit>) -> Result<Self> {
        let l =
            TcpListener::bind(addr).map_err(|e| err!(Failed, "cannot listen on {addr}: {e}"))?;
        l.set_nonblocking(true)
            .map_err(|e| err!(Failed, "cannot configure listener: {e}"))?;
        let bound = l.local_addr().unwrap_or(addr);
        let wake = eventfd()?;
        let thread = std::thread::Builder::new()
            .name("llmdd-accept".into())
            .spawn(move || accept_loop(host, l, wake, comm_only));
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                // SAFETY: closing our eventfd.
                unsafe { libc::close(wake) };
                bail!(Failed, "cannot start accept thread: {e}");
            }
        };
        Ok(Listener {
            addr: bound,
            wake,
            thread: Some(thread),
        })
    }

    /// The bound address (the port the kernel chose for port 0).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the accept thread and closes the socket.
    pub(crate) fn stop(mut self) {
        notify(self.wake);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // SAFETY: closing our eventfd.
        unsafe { libc::close(self.wake) };
    }
}

/// Locks `m`, ignoring poisoning (every guarded value stays consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every listening endpoint of an instance and the connections they accepted
/// that have not joined a link yet. Lock order: `comm` before `main`.
pub(crate) struct Listeners {
    /// The instance's own endpoint (`llm.ListenIpInfo`), if it is a server.
    main: Mutex<Option<Listener>>,
    /// Endpoints bound for comms (endpoint → listener, comms using it).
    comm: Mutex<HashMap<SocketAddr, (Listener, usize)>>,
    /// Accepted sockets not yet attached to a link (weak: shut down at
    /// finalize while they live, never kept open).
    pending: Mutex<HashMap<u64, Weak<TcpStream>>>,
    next_pending: AtomicU64,
    /// Connection caps of the listeners (per peer address, handshakes).
    admission: Arc<Admission>,
    /// Link setups served at once.
    setups: Slots,
}

impl Listeners {
    /// No endpoint yet; at most `max_per_peer` connections from one address
    /// and `max_setups` link setups at once.
    pub(crate) fn new(max_per_peer: u32, max_setups: usize) -> Listeners {
        Listeners {
            main: Mutex::new(None),
            comm: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_pending: AtomicU64::new(1),
            admission: Admission::new(max_per_peer),
            setups: Slots::new(max_setups),
        }
    }

    /// The instance's own endpoint, if it is a server.
    pub(crate) fn addr(&self) -> Option<SocketAddr> {
        lock(&self.main).as_ref().map(|l| l.addr())
    }

    /// Makes `l` the instance's own endpoint, stopping the one it replaces.
    pub(crate) fn set_main(&self, l: Listener) {
        let old = lock(&self.main).replace(l);
        if let Some(o) = old {
            o.stop();
        }
    }

    /// Stops the instance's own endpoint (it becomes a client).
    pub(crate) fn stop_main(&self) {
        let l = lock(&self.main).take();
        if let Some(l) = l {
            l.stop();
        }
    }

    /// A listener on `addr` for a comm: `None` when the instance's own
    /// endpoint already serves it, else a reference on a comm listener
    /// (shared with another comm, or bound now by `bind`), released with
    /// [`Listeners::release_comm`].
    pub(crate) fn acquire_comm(
        &self,
        addr: SocketAddr,
        bind: impl FnOnce() -> Result<Listener>,
    ) -> Result<Option<SocketAddr>> {
        if let Some(main) = self.addr() {
            if main.port() == addr.port() && (main.ip() == addr.ip() || main.ip().is_unspecified())
            {
                return Ok(None);
            }
        }
        let mut m = lock(&self.comm);
        if let Some((_, n)) = m.get_mut(&addr) {
            *n += 1;
            return Ok(Some(addr));
        }
        m.insert(addr, (bind()?, 1));
        Ok(Some(addr))
    }

    /// Drops a comm's reference on its listener; the last one closes it.
    pub(crate) fn release_comm(&self, addr: SocketAddr) {
        let mut m = lock(&self.comm);
        let last = match m.get_mut(&addr) {
            Some((_, n)) if *n > 1 => {
                *n -= 1;
                false
            }
            Some(_) => true,
            None => false,
        };
        let l = if last { m.remove(&addr) } else { None };
        drop(m);
        if let Some((l, _)) = l {
            l.stop();
        }
    }

    /// Stops every endpoint: the instance's own, then the comms'.
    pub(crate) fn stop_all(&self) {
        self.stop_main();
        let extra: Vec<Listener> = lock(&self.comm).drain().map(|(_, (l, _))| l).collect();
        for l in extra {
            l.stop();
        }
    }

    /// The admission caps.
    pub(crate) fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The link-setup slots.
    pub(crate) fn setups(&self) -> &Slots {
        &self.setups
    }

    /// Tracks an accepted socket until [`Listeners::unpend`] (finalize shuts
    /// it down meanwhile); its id.
    pub(crate) fn pend(&self, sock: Weak<TcpStream>) -> u64 {
        let id = self.next_pending.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(id, sock);
        id
    }

    /// Stops tracking the accepted socket `id` (it joined a link or ended).
    pub(crate) fn unpend(&self, id: u64) {
        lock(&self.pending).remove(&id);
    }

    /// Shuts down every accepted socket still in its handshake.
    pub(crate) fn shut_pending(&self) {
        let pending: Vec<_> = lock(&self.pending).drain().map(|(_, w)| w).collect();
        for s in pending.iter().filter_map(Weak::upgrade) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A small counting semaphore (the server's concurrent link setups).
pub(crate) struct Slots {
    used: Mutex<usize>,
    cv: Condvar,
    max: usize,
}

impl Slots {
    /// At most `max` held at once.
    pub(crate) fn new(max: usize) -> Slots {
        Slots {
            used: Mutex::new(0),
            cv: Condvar::new(),
            max,
        }
    }

    /// Waits for a free slot and takes it.
    pub(crate) fn acquire(&self) {
        let mut u = self.used.lock().unwrap_or_else(|p| p.into_inner());
        while *u >= self.max {
            u = self.cv.wait(u).unwrap_or_else(|p| p.into_inner());
        }
        *u += 1;
    }

    /// Gives a slot back.
    pub(crate) fn release(&self) {
        *self.used.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
        self.cv.notify_one();
    }
}

fn accept_loop(host: Weak<dyn Admit>, l: TcpListener, wake: i32, comm_only: bool) {
    let lfd = l.as_raw_fd();
    let mut spare = SpareFd::open();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: lfd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfds.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        loop {
            match l.accept() {
                Ok((stream, peer)) => {
                    let Some(s) = host.upgrade() else { return };
                    if s.is_closing() {
                        return;
                    }
                    s.admit(stream, peer, comm_only);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if admission::is_fd_exhaustion(&e) => {
                    let Some(s) = host.upgrade() else { return };
                    if !refuse_for_lack_of_fds(&l, &mut spare, s.cluster_id(), &e) {
                        // Not even the spare could make room: try again soon.
                        let _ = poll_fd(wake, libc::POLLIN, 10);
                        break;
                    }
                }
                Err(e) => {
                    log_refusal(None, &format!("accept failed: {e}"));
                    let _ = poll_fd(wake, libc::POLLIN, 10);
                    break;
                }
            }
        }
    }
}

/// The process is out of file descriptors: closes the spare one to accept a
/// waiting connection and answer it with a refusal (so the client fails at
/// once, not after its link timeout), then reopens the spare. False if there
/// was no spare or no connection could be accepted.
fn refuse_for_lack_of_fds(
    l: &TcpListener,
    spare: &mut SpareFd,
    cluster: u64,
    cause: &std::io::Error,
) -> bool {
    let mut refused = false;
    if spare.release() {
        if let Ok((stream, peer)) = l.accept() {
            let why = format!("the server is out of file descriptors ({cause}); try again later");
            admission::refuse(&stream, Status::LinkFailed, &why);
            log_refusal(Some(peer), &format!("cluster {cluster}: {why}"));
            refused = true;
        }
    }
    if !spare.restore() && !refused {
        log_refusal(None, &format!("accept failed: {cause}"));
    }
    refused
}

/// Logs a refused connection at warn level, within the process-wide budget
/// of refusal lines (`log::rate`: a peer can make them happen at any rate).
pub(crate) fn log_refusal(peer: Option<SocketAddr>, why: &str) {
    log_limited("refused a connection", peer, why);
}

/// Logs a connection dropped before it joined a link (bad or no first frame).
pub(crate) fn log_dropped(peer: SocketAddr, why: &str) {
    log_limited("dropped a connection before its handshake", Some(peer), why);
}

fn log_limited(what: &str, peer: Option<SocketAddr>, why: &str) {
    let from = peer.map(|p| format!(" from {p}")).unwrap_or_default();
    crate::log::rate::warn_refusal(format_args!("{what}{from}: {why}"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Counts what it is handed, and drops it.
    #[derive(Default)]
    struct Counting {
        admitted: AtomicUsize,
    }

    impl Admit for Counting {
        fn cluster_id(&self) -> u64 {
            1
        }
        fn is_closing(&self) -> bool {
            false
        }
        fn admit(&self, _stream: TcpStream, _peer: SocketAddr, _comm_only: bool) {
            self.admitted.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    fn bind(host: &Arc<Counting>, addr: SocketAddr) -> Listener {
        let h: Arc<dyn Admit> = host.clone();
        Listener::bind(addr, true, Arc::downgrade(&h)).unwrap()
    }

    #[test]
    fn accepted_connections_go_to_the_host_until_stopped() {
        let host = Arc::new(Counting::default());
        let l = bind(&host, loopback());
        let addr = l.addr();
        assert_ne!(addr.port(), 0, "the bound port is reported");
        let _c = TcpStream::connect(addr).unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while host.admitted.load(Ordering::SeqCst) == 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(host.admitted.load(Ordering::SeqCst), 1);
        l.stop();
        assert!(
            TcpStream::connect(addr).is_err(),
            "a stopped listener's socket is closed"
        );
    }

    #[test]
    fn comm_endpoints_are_shared_and_closed_by_the_last_release() {
        let host = Arc::new(Counting::default());
        let ls = Listeners::new(8, 2);
        // The key is the endpoint asked for; the kernel picks the port.
        let key = loopback();
        let bound = Mutex::new(None);
        let binds = AtomicUsize::new(0);
        let acquire = || {
            ls.acquire_comm(key, || {
                binds.fetch_add(1, Ordering::SeqCst);
                let l = bind(&host, key);
                *bound.lock().unwrap() = Some(l.addr());
                Ok(l)
            })
        };
        assert_eq!(acquire().unwrap(), Some(key));
        assert_eq!(acquire().unwrap(), Some(key));
        assert_eq!(binds.load(Ordering::SeqCst), 1, "bound once, shared");
        let addr = bound.lock().unwrap().unwrap();
        ls.release_comm(key);
        assert!(TcpStream::connect(addr).is_ok(), "one comm still uses it");
        ls.release_comm(key);
        assert!(
            TcpStream::connect(addr).is_err(),
            "the last release closes it"
        );
        ls.release_comm(key); // no longer known: nothing happens
    }

    #[test]
    fn a_comm_on_the_instances_own_endpoint_binds_nothing() {
        let host = Arc::new(Counting::default());
        let ls = Listeners::new(8, 2);
        ls.set_main(bind(&host, loopback()));
        let main = ls.addr().unwrap();
        let r = ls.acquire_comm(main, || panic!("must not bind"));
        assert_eq!(r.unwrap(), None);
        ls.stop_all();
        assert_eq!(ls.addr(), None);
    }
}
