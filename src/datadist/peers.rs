//! The links a call may use, as the cache operations see them: the link table
//! and, for a refusal's reason, the rank-table comms that reserve clusters.

use std::sync::{Arc, Mutex};

use crate::bail;
use crate::datadist::comm::Comms;
use crate::datadist::link_table::LinkTable;
use crate::err;
use crate::status::{Error, Result};
use crate::transfer::link::Link;

/// A borrowed view of the instance's links (`Session::peers`).
#[derive(Clone, Copy)]
pub struct Peers<'s> {
    pub(crate) cluster_id: u64,
    pub(crate) links: &'s LinkTable,
    pub(crate) comms: &'s Mutex<Comms>,
}

impl Peers<'_> {
    /// Number of live links (a pair linked both ways counts two).
    pub fn count(&self) -> usize {
        self.links.len()
    }

    /// Why there is no usable link to `cluster_id`, for a refused transfer:
    /// the comm that reserves it is not ready, or there is no link.
    pub fn not_linked(&self, cluster_id: u64) -> Error {
        let comm = self
            .comms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .of_cluster(cluster_id)
            .cloned();
        match comm {
            Some(c) => c.not_ready(cluster_id),
            None => err!(NotYetLink, "no link to cluster {cluster_id}"),
        }
    }

    /// The link in the table to cluster `c`, usable or not (`NOT_YET_LINK`
    /// if none; `PARAM_INVALID` for this instance's own cluster).
    pub fn link_to(&self, c: u64) -> Result<Arc<Link>> {
        if c == self.cluster_id {
            bail!(
                ParamInvalid,
                "the key names this instance's own cluster {c}; transfers need a remote cluster"
            );
        }
        self.links.get(c).ok_or_else(|| self.not_linked(c))
    }

    /// Fails unless `link` may carry transfers now.
    pub fn usable(&self, link: &Link) -> Result<()> {
        link.check_open()?;
        if !link.is_ready() {
            // A rank-table link whose comm is not OK yet.
            return Err(self.not_linked(link.remote_cluster_id));
        }
        Ok(())
    }

    /// The open link to cluster `c` (`NOT_YET_LINK` if none).
    pub fn usable_link(&self, c: u64) -> Result<Arc<Link>> {
        let link = self.link_to(c)?;
        self.usable(&link)?;
        Ok(link)
    }
}
