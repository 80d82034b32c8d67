//! The death watch of the links of every instance in the process, on the
//! control plane's poller (`transport::poller`): the pidfd of every same-host
//! peer process (one watch per process, however many links reach it, on the
//! pidfd the links share: no duplicate), and the control connection of every
//! link this side dialed. A link is marked dead ([`Link::mark_dead`]) the
//! moment its peer process exits, or its server closes the control connection
//! (unlink, forced unlink, finalize, exit) or keepalive errors it (the peer's
//! host is gone). Transfers then fail with `LLM_LINK_FAILED` without moving a
//! byte, the peer's pool mappings are dropped, and `link_clusters` to that
//! cluster replaces the dead entry.
//!
//! This is the only thing that marks a link dead besides the transfer path,
//! which checks the pidfd itself around every same-host copy: the watch makes
//! the news arrive early, correctness does not depend on it. The server needs
//! no watch for its control connections: the poller serving one sees it end.

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rustix::event::epoll::EventFlags;

use crate::datadist::link::Link;
use crate::status::Result;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::poller::{Reactor, Tick, Watcher};
use crate::transport::tcp::hangup;

/// While a link's own non-forced unlink runs, its control connection hanging
/// up is that unlink's business: the event is looked at again after this.
const UNLINKING_RECHECK: Duration = Duration::from_millis(2);

/// The watch of one peer process and the links that reach it.
struct ProcWatch {
    peer: PeerProcess,
    links: Mutex<Vec<Weak<Link>>>,
    key: OnceLock<u64>,
    /// The reactor generation it is registered with.
    generation: u64,
}

/// Process watches by pidfd number (stable while the watch holds the pidfd).
type Procs = HashMap<i32, Arc<ProcWatch>>;

fn procs() -> &'static Mutex<Procs> {
    static P: OnceLock<Mutex<Procs>> = OnceLock::new();
    P.get_or_init(Mutex::default)
}

fn live(links: &[Weak<Link>]) -> Vec<Arc<Link>> {
    links
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|l| !l.is_closed())
        .collect()
}

impl Watcher for ProcWatch {
    fn fired(&self) -> Option<Duration> {
        procs()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.peer.pidfd());
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|p| p.into_inner()));
        let why = format!("its peer process {} exited", self.peer.pid());
        // Marking dead tears the link down (and waits for copies using the
        // peer's pools): outside every lock.
        for l in live(&links) {
            l.mark_dead(&why);
        }
        None
    }
}

/// Drops the process watches no live link needs (their pidfd closes once
/// the links' own handles are gone).
struct Prune(Weak<Reactor>);

impl Tick for Prune {
    fn tick(&self, _now: Instant) -> bool {
        let Some(r) = self.0.upgrade() else {
            return false;
        };
        let idle: Vec<Arc<ProcWatch>> = {
            let mut p = procs().lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            p.retain(|_, w| {
                let mut l = w.links.lock().unwrap_or_else(|p| p.into_inner());
                l.retain(|x| x.upgrade().is_some_and(|x| !x.is_closed()));
                let keep = !l.is_empty();
                if !keep {
                    out.push(w.clone());
                }
                keep
            });
            out
        };
        for w in idle.iter().filter(|w| w.generation == r.generation()) {
            if let Some(k) = w.key.get() {
                r.unwatch(*k);
            }
        }
        true
    }
}

/// The watch of a dialled link's control connection (the socket is shared,
/// so its descriptor stays open while registered; no dup).
struct ControlWatch {
    link: Weak<Link>,
    sock: Arc<TcpStream>,
}

impl Watcher for ControlWatch {
    fn fired(&self) -> Option<Duration> {
        let link = self.link.upgrade().filter(|l| !l.is_closed())?;
        if link.is_draining() {
            // Its unlink is under way and ends it (or, failing, lets
            // transfers start again): look again shortly.
            return Some(UNLINKING_RECHECK);
        }
        match hangup(&self.sock) {
            Some(why) => {
                link.mark_dead(&format!("the server ended it: {why}"));
                None
            }
            None => Some(Duration::ZERO),
        }
    }
}

/// Watches `link`: its peer process (a same-host link) and, on the side that
/// dialed it, its control connection. A no-op when there is neither.
pub fn watch(r: &Arc<Reactor>, link: &Arc<Link>) -> Result<()> {
    if let Some(p) = link.peer_process() {
        // One pruning tick per start of the reactor.
        static PRUNE: Mutex<Option<(u64, Arc<Prune>)>> = Mutex::new(None);
        let mut g = PRUNE.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(g.as_ref(), Some((gen, _)) if *gen == r.generation()) {
            let t = Arc::new(Prune(Arc::downgrade(r)));
            r.add_tick(Arc::downgrade(&t) as Weak<dyn Tick>);
            *g = Some((r.generation(), t));
        }
        drop(g);
        let mut m = procs().lock().unwrap_or_else(|p| p.into_inner());
        // Watches of an earlier start of the reactor are gone with it.
        m.retain(|_, w| w.generation == r.generation());
        match m.get(&p.pidfd()) {
            Some(w) => w
                .links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Arc::downgrade(link)),
            None => {
                let w = Arc::new(ProcWatch {
                    peer: p.clone(),
                    links: Mutex::new(vec![Arc::downgrade(link)]),
                    key: OnceLock::new(),
                    generation: r.generation(),
                });
                let key = r.watch(
                    p.pidfd_shared(),
                    EventFlags::IN,
                    w.clone() as Arc<dyn Watcher>,
                )?;
                let _ = w.key.set(key);
                m.insert(p.pidfd(), w);
            }
        }
    }
    if link.we_dialed {
        if let Some(sock) = link.control_socket() {
            debug_assert!(sock.as_raw_fd() >= 0);
            let w = Arc::new(ControlWatch {
                link: Arc::downgrade(link),
                sock: sock.clone(),
            });
            r.watch(sock, EventFlags::RDHUP, w)?;
        }
    }
    Ok(())
}
