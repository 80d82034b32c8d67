//! The links of one instance, by remote cluster id and direction.
//!
//! Both ends of a pair may call `link_clusters` to each other (CANN's samples
//! with `transfer_backend=hixl` do, at the same time): each call makes a link
//! of its own. So a cluster has at most two links here, the one this instance
//! dialled and the one it accepted, each with its own lifetime: a non-forced
//! unlink ends the one this side dialled, and the peer's unlink ends the other.
//! Transfers use the dialled link while it is open, else the accepted one.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::bail;
use crate::cache::types::IdMap;
use crate::status::Result;
use crate::transfer::link::Link;

/// The (at most) two links to one cluster.
#[derive(Default)]
struct Pair {
    dialed: Option<Arc<Link>>,
    accepted: Option<Arc<Link>>,
}

impl Pair {
    fn slot(&mut self, we_dialed: bool) -> &mut Option<Arc<Link>> {
        if we_dialed {
            &mut self.dialed
        } else {
            &mut self.accepted
        }
    }

    fn is_empty(&self) -> bool {
        self.dialed.is_none() && self.accepted.is_none()
    }
}

/// Links by remote cluster id (under [`LinkTable`]'s lock).
#[derive(Default)]
struct Table {
    /// Looked up on every transfer ([`IdMap`]; at most the instance's link
    /// limit of entries).
    by_cluster: IdMap<u64, Pair>,
    count: usize,
}

impl Table {
    /// The link transfers to `cluster` use: the dialled one while open, else
    /// the accepted one while open, else a closed one (its error explains).
    fn get(&self, cluster: u64) -> Option<&Arc<Link>> {
        let p = self.by_cluster.get(&cluster)?;
        let open = |l: &&Arc<Link>| !l.is_closed();
        p.dialed
            .as_ref()
            .filter(open)
            .or(p.accepted.as_ref().filter(open))
            .or(p.dialed.as_ref())
            .or(p.accepted.as_ref())
    }

    /// The link this instance dialled to `cluster` (`we_dialed`), or the one
    /// it accepted from it.
    fn get_dir(&self, cluster: u64, we_dialed: bool) -> Option<&Arc<Link>> {
        let p = self.by_cluster.get(&cluster)?;
        if we_dialed {
            p.dialed.as_ref()
        } else {
            p.accepted.as_ref()
        }
    }

    /// The clusters with at least one link.
    fn clusters(&self) -> Vec<u64> {
        self.by_cluster.keys().copied().collect()
    }

    /// Number of links (a cluster linked both ways counts twice).
    fn len(&self) -> usize {
        self.count
    }

    /// Adds `link` in its direction's slot; an open link there is
    /// `LLM_ALREADY_LINK` (a closed one is replaced).
    fn insert(&mut self, link: Arc<Link>) -> Result<()> {
        let c = link.remote_cluster_id;
        let slot = self.by_cluster.entry(c).or_default().slot(link.we_dialed);
        match slot {
            Some(l) if !l.is_closed() => {
                bail!(AlreadyLink, "a link to cluster {c} already exists")
            }
            Some(_) => {}
            None => self.count += 1,
        }
        *slot = Some(link);
        Ok(())
    }

    /// Removes `link` if it is still the one in its slot.
    fn remove_exact(&mut self, link: &Arc<Link>) -> bool {
        let c = link.remote_cluster_id;
        let Some(p) = self.by_cluster.get_mut(&c) else {
            return false;
        };
        let slot = p.slot(link.we_dialed);
        if !slot.as_ref().is_some_and(|l| Arc::ptr_eq(l, link)) {
            return false;
        }
        *slot = None;
        self.count -= 1;
        if p.is_empty() {
            self.by_cluster.remove(&c);
        }
        true
    }

    /// Removes every link to `cluster` (a forced unlink), dialled one first.
    fn remove_cluster(&mut self, cluster: u64) -> Vec<Arc<Link>> {
        let Some(p) = self.by_cluster.remove(&cluster) else {
            return Vec::new();
        };
        let out: Vec<_> = p.dialed.into_iter().chain(p.accepted).collect();
        self.count -= out.len();
        out
    }

    /// Removes every link (finalize).
    fn drain(&mut self) -> Vec<Arc<Link>> {
        self.count = 0;
        self.by_cluster
            .drain()
            .flat_map(|(_, p)| p.dialed.into_iter().chain(p.accepted))
            .collect()
    }
}

/// The link table of an instance, behind its own lock (held only for the
/// table operation itself: taken after a comm's state, never before).
#[derive(Default)]
pub(crate) struct LinkTable {
    inner: Mutex<Table>,
}

impl LinkTable {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The link transfers to `cluster` use: the dialled one while open, else
    /// the accepted one while open, else a closed one (its error explains).
    pub(crate) fn get(&self, cluster: u64) -> Option<Arc<Link>> {
        self.lock().get(cluster).cloned()
    }

    /// The link this instance dialled to `cluster` (`we_dialed`), or the one
    /// it accepted from it.
    pub(crate) fn get_dir(&self, cluster: u64, we_dialed: bool) -> Option<Arc<Link>> {
        self.lock().get_dir(cluster, we_dialed).cloned()
    }

    /// The clusters with at least one link.
    pub(crate) fn clusters(&self) -> Vec<u64> {
        self.lock().clusters()
    }

    /// Number of links (a cluster linked both ways counts twice).
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Adds `link` in its direction's slot; an open link there is
    /// `LLM_ALREADY_LINK` (a closed one is replaced).
    pub(crate) fn insert(&self, link: Arc<Link>) -> Result<()> {
        self.lock().insert(link)
    }

    /// Removes `link` if it is still the one in its slot.
    pub(crate) fn remove_exact(&self, link: &Arc<Link>) -> bool {
        self.lock().remove_exact(link)
    }

    /// Removes every link to `cluster` (a forced unlink), dialled one first.
    pub(crate) fn remove_cluster(&self, cluster: u64) -> Vec<Arc<Link>> {
        self.lock().remove_cluster(cluster)
    }

    /// Removes every link (finalize).
    pub(crate) fn drain(&self) -> Vec<Arc<Link>> {
        self.lock().drain()
    }
}
