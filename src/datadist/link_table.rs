//! The links of one instance, by remote cluster id and direction.
//!
//! Both ends of a pair may call `link_clusters` to each other (CANN's samples
//! with `transfer_backend=hixl` do, at the same time): each call makes a link
//! of its own. So a cluster has at most two links here, the one this instance
//! dialled and the one it accepted, each with its own lifetime: a non-forced
//! unlink ends the one this side dialled, and the peer's unlink ends the other.
//! Transfers use the dialled link while it is open, else the accepted one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::bail;
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

/// Links by remote cluster id; callers hold it under the session's lock.
#[derive(Default)]
pub(crate) struct LinkTable {
    by_cluster: HashMap<u64, Pair>,
    count: usize,
}

impl LinkTable {
    /// The link transfers to `cluster` use: the dialled one while open, else
    /// the accepted one while open, else a closed one (its error explains).
    pub fn get(&self, cluster: u64) -> Option<&Arc<Link>> {
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
    pub fn get_dir(&self, cluster: u64, we_dialed: bool) -> Option<&Arc<Link>> {
        let p = self.by_cluster.get(&cluster)?;
        if we_dialed {
            p.dialed.as_ref()
        } else {
            p.accepted.as_ref()
        }
    }

    /// The clusters with at least one link.
    pub fn clusters(&self) -> Vec<u64> {
        self.by_cluster.keys().copied().collect()
    }

    /// Number of links (a cluster linked both ways counts twice).
    pub fn len(&self) -> usize {
        self.count
    }

    /// Adds `link` in its direction's slot; an open link there is
    /// `LLM_ALREADY_LINK` (a closed one is replaced).
    pub fn insert(&mut self, link: Arc<Link>) -> Result<()> {
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
    pub fn remove_exact(&mut self, link: &Arc<Link>) -> bool {
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
    pub fn remove_cluster(&mut self, cluster: u64) -> Vec<Arc<Link>> {
        let Some(p) = self.by_cluster.remove(&cluster) else {
            return Vec::new();
        };
        let out: Vec<_> = p.dialed.into_iter().chain(p.accepted).collect();
        self.count -= out.len();
        out
    }

    /// Removes every link (finalize).
    pub fn drain(&mut self) -> Vec<Arc<Link>> {
        self.count = 0;
        self.by_cluster
            .drain()
            .flat_map(|(_, p)| p.dialed.into_iter().chain(p.accepted))
            .collect()
    }
}
