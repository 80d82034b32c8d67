//! The state of a session's links as an operator asks for it (in the spirit
//! of HIXL's `GetAsyncConnectStatus`): linking, linked, failed and why, or
//! unlinked; the list of current links; and the per-link statistics
//! (`crate::stats`).
//!
//! A link in the table answers for itself (dead or its control connection
//! hung up: FAILED; a rank-table link whose comm is not OK yet: LINKING).
//! Without one, a `link_clusters` under way is LINKING and one that failed is
//! FAILED until the cluster is linked or unlinked; the reasons of failed
//! attempts are kept for at most `llmdd.MaxLinks` clusters.

use std::sync::Arc;

use crate::datadist::attempts::Dialing;
use crate::datadist::comm::MemStatus;
use crate::datadist::session::Session;
use crate::err;
use crate::stats::{LinkStats, Path, Snapshot};
use crate::status::Result;
use crate::transfer::link::Link;

/// The state of the link to one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// No link, none being set up, no failure remembered.
    Unlinked,
    /// `link_clusters` under way, or the rank-table comm is PREPARING.
    Linking,
    /// Usable for transfers.
    Linked,
    /// Dead, failed comm, or failed `link_clusters`: why.
    Failed(String),
}

/// What the state query and the list report about one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The peer cluster.
    pub cluster_id: u64,
    /// Whether the link is up, being made or failed.
    pub state: LinkState,
    /// Rank-table comm, 0 for link_clusters.
    pub comm_id: u64,
    /// This side dialled (or is dialling).
    pub dialed: bool,
    /// The data path (TCP when no link exists).
    pub path: Path,
    /// When the link was created (0 when none exists).
    pub linked_unix_ns: u64,
}

impl Session {
    /// Marks a link_clusters to `cluster` as under way (LINKING) until the
    /// guard drops; [`Session::dial_done`] records its outcome.
    pub(crate) fn dialing(&self, cluster: u64) -> Dialing<'_> {
        self.attempts().dialing(cluster)
    }

    /// Records how a link_clusters to `cluster` ended (see [`crate::datadist::attempts::Attempts::done`]).
    pub(crate) fn dial_done(&self, cluster: u64, r: &Result<()>) {
        self.attempts().done(cluster, r)
    }

    /// Forgets a failed attempt to `cluster` (it was unlinked).
    pub(crate) fn forget_attempt(&self, cluster: u64) {
        self.attempts().forget(cluster)
    }

    /// The state of a link in the table.
    fn state_of(&self, link: &Link) -> LinkState {
        if let Some(why) = link.peer_gone() {
            return LinkState::Failed(why);
        }
        if link.is_ready() {
            return LinkState::Linked;
        }
        match self.comm_of(link.remote_cluster_id).map(|c| c.status()) {
            Some((MemStatus::Failed, why)) => {
                LinkState::Failed(format!("rank-table comm FAILED: {why}"))
            }
            _ => LinkState::Linking,
        }
    }

    /// What is known about `cluster`.
    fn info(&self, cluster: u64) -> LinkInfo {
        let link = self.link(cluster);
        let dialing = self.attempts().is_dialing(cluster);
        let mut info = LinkInfo {
            cluster_id: cluster,
            state: LinkState::Unlinked,
            comm_id: 0,
            dialed: dialing,
            path: Path::Tcp,
            linked_unix_ns: 0,
        };
        if let Some(l) = &link {
            info.state = self.state_of(l);
            info.comm_id = l.comm_id;
            info.dialed = l.we_dialed;
            info.path = l.path();
            info.linked_unix_ns = l.created_unix_ns;
            if dialing && matches!(info.state, LinkState::Failed(_)) {
                // link_clusters is replacing the dead link.
                info.state = LinkState::Linking;
                info.dialed = true;
            }
            return info;
        }
        if dialing {
            info.state = LinkState::Linking;
            return info;
        }
        if let Some(c) = self.comm_of(cluster) {
            info.comm_id = c.id;
            info.state = match c.status() {
                (MemStatus::Preparing, _) => LinkState::Linking,
                (MemStatus::Failed, why) => LinkState::Failed(format!("rank-table comm FAILED: {why}")),
                (MemStatus::Ok, _) => LinkState::Failed(format!(
                    "rank-table comm {} has no link to cluster {cluster} any more (the peer closed it)",
                    c.id
                )),
            };
            return info;
        }
        if let Some(why) = self.attempts().failure(cluster) {
            info.state = LinkState::Failed(why);
            info.dialed = true;
        }
        info
    }

    /// The state of the link to `cluster` (UNLINKED if nothing is known).
    pub fn link_state(&self, cluster: u64) -> LinkState {
        self.info(cluster).state
    }

    /// Every cluster whose state is not UNLINKED, by cluster id.
    pub fn list_links(&self) -> Vec<LinkInfo> {
        let mut ids: Vec<u64> = self.link_ids();
        ids.extend(self.attempts().clusters());
        ids.extend(self.comm_members());
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .map(|c| self.info(c))
            .filter(|i| i.state != LinkState::Unlinked)
            .collect()
    }

    /// The statistics of the link to `cluster` (`NOT_YET_LINK` if none).
    /// A cluster linked both ways (each side called link_clusters) has two
    /// links: their counters are added up; the rest describes the one
    /// transfers use.
    pub fn link_stats(&self, cluster: u64) -> Result<(LinkInfo, Snapshot)> {
        let link = self.existing(cluster)?;
        let both = self.both_links(cluster);
        let all: Vec<&LinkStats> = both.iter().map(|l| &l.stats).collect();
        let mut snap = LinkStats::snapshot_all(&all);
        snap.in_flight = both.iter().map(|l| l.in_flight() as u64).sum();
        let info = LinkInfo {
            cluster_id: cluster,
            state: self.state_of(&link),
            comm_id: link.comm_id,
            dialed: link.we_dialed,
            path: link.path(),
            linked_unix_ns: link.created_unix_ns,
        };
        Ok((info, snap))
    }

    /// Zeroes the statistics of the links to `cluster`, or of every link.
    pub fn reset_link_stats(&self, cluster: Option<u64>) -> Result<()> {
        let clusters = match cluster {
            Some(c) => {
                self.existing(c)?;
                vec![c]
            }
            None => self.link_ids(),
        };
        for c in clusters {
            for l in self.both_links(c) {
                l.stats.reset();
            }
        }
        Ok(())
    }

    /// The link this side dialled to `cluster` and the one it accepted, if any.
    fn both_links(&self, cluster: u64) -> Vec<Arc<Link>> {
        [true, false]
            .into_iter()
            .filter_map(|d| self.link_dir(cluster, d))
            .collect()
    }

    fn existing(&self, cluster: u64) -> Result<Arc<Link>> {
        self.link(cluster).ok_or_else(|| {
            let why = match self.link_state(cluster) {
                LinkState::Linking => "it is being linked".to_string(),
                LinkState::Failed(why) => format!("FAILED: {why}"),
                _ => "never linked, or unlinked".to_string(),
            };
            err!(
                NotYetLink,
                "cluster {} has no link to cluster {cluster} ({why})",
                self.cluster_id
            )
        })
    }

    /// The remote members of every comm.
    fn comm_members(&self) -> Vec<u64> {
        let t = self.comms();
        t.iter()
            .flat_map(|c| {
                let local = c.spec.local;
                c.spec
                    .members
                    .iter()
                    .enumerate()
                    .filter(move |(i, _)| *i != local)
                    .map(|(_, m)| m.cluster_id)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
