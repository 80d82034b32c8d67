//! The death watch of same-host peers, on the control plane's poller
//! (`transport::poller`): the pidfd of every same-host peer process, one
//! watch per process however many links reach it, on the pidfd the links
//! share (no duplicate). A link is marked dead ([`Link::mark_dead`]) the
//! moment its peer process exits. Transfers then fail with `LLM_LINK_FAILED`
//! without moving a byte, the peer's pool mappings are dropped, and
//! `link_clusters` to that cluster replaces the dead entry.
//!
//! The control connections need no watch of their own: both ends read them on
//! the poller, which sees one end (the server closing it, keepalive erroring
//! it) and marks the client's link dead (`transfer::serve`). The transfer path
//! checks the pidfd itself around every same-host copy: the watch makes the
//! news arrive early, correctness does not depend on it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rustix::event::epoll::EventFlags;

use crate::status::Result;
use crate::transfer::link::Link;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::poller::{Reactor, Tick, Watcher};

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

/// Watches the peer process of `link` (a same-host link; else a no-op).
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
    Ok(())
}
