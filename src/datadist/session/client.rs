//! The dialling side of link setup and unlink that is the instance's:
//! link_clusters to one peer, the checks before a dial (shared with
//! rank-table comms; the dial itself is `transfer::handshake::dial`), and
//! the non-forced unlink.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Session;
use crate::datadist::comm::Comm;
use crate::status::Result;
use crate::transfer::handshake::dial;
use crate::transfer::link::Link;
use crate::transfer::rpc::{self, Unlinked};
use crate::transfer::serve::serve;
use crate::{bail, err, log_info, log_warn};

/// The least time a non-forced unlink waits for the peer's answer to
/// `Unlink`, whatever is left of its timeout: the peer answers once its serving
/// threads have seen the cut data connections, which on a loaded machine takes
/// far more than a short unlink timeout (a dead peer is noticed at once).
const UNLINK_REPLY_FLOOR: Duration = Duration::from_secs(2);

impl Session {
    /// Client side of link_clusters for one peer. `local_ip` (the cluster's
    /// local ip info) names this side's device IP on the acl backend.
    pub fn connect(
        &self,
        remote_cluster_id: u64,
        addr: SocketAddr,
        local_ip: Option<IpAddr>,
        timeout: Duration,
    ) -> Result<()> {
        if self.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        if remote_cluster_id == self.cluster_id {
            bail!(
                ParamInvalid,
                "remote_cluster_id {remote_cluster_id} is this instance's own cluster id"
            );
        }
        self.clear_dead_link(remote_cluster_id)?;
        if let Some(c) = self.comm_of(remote_cluster_id) {
            bail!(
                AlreadyLink,
                "cluster {remote_cluster_id} is a member of rank-table comm {} (\"{}\"); unlink it first",
                c.id,
                c.name()
            );
        }
        self.dial(remote_cluster_id, addr, local_ip, timeout, None)
    }

    /// Before link_clusters to `cluster`: a live link there is
    /// `LLM_ALREADY_LINK`; one whose peer is proven gone (dead, or its control
    /// connection hung up) is dropped so that linking again just works.
    fn clear_dead_link(&self, cluster: u64) -> Result<()> {
        let Some(old) = self.link_dir(cluster, true) else {
            return Ok(());
        };
        match old.peer_gone() {
            Some(why) => {
                log_info!("replacing the dead link to cluster {cluster} ({why})");
                if self.remove_exact(&old) {
                    old.teardown(Duration::ZERO);
                }
                Ok(())
            }
            None => bail!(AlreadyLink, "a link to cluster {cluster} already exists"),
        }
    }

    /// Dials the server at `addr` (`transfer::handshake::dial`): handshake,
    /// data paths, then the link joins the table (and `comm`, for a
    /// rank-table link). For a comm, failures before the handshake is
    /// accepted are `LLM_NOT_YET_LINK` so the caller retries. `local_ip`
    /// names this side's device IP on the acl backend.
    pub(crate) fn dial(
        &self,
        remote_cluster_id: u64,
        addr: SocketAddr,
        local_ip: Option<IpAddr>,
        timeout: Duration,
        comm: Option<&Arc<Comm>>,
    ) -> Result<()> {
        if self.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        if self.link_count() >= self.config.max_links as usize {
            bail!(
                LinkFailed,
                "this instance already has {} links (the limit)",
                self.config.max_links
            );
        }
        dial::dial(
            &self.arc(),
            remote_cluster_id,
            addr,
            local_ip,
            timeout,
            comm,
        )
    }

    /// Opens up to `count` more reverse connections of `link` (its server
    /// asked for them, `OpenConns`), never more than `llmdd.DataConnections`
    /// at once; each is served here like the control connection and frees
    /// its slot when it ends. Fails if none could be opened.
    pub(crate) fn open_reverse(
        &self,
        link: &Arc<Link>,
        count: u32,
        deadline: Instant,
    ) -> Result<()> {
        if link.requests_on_control() {
            bail!(
                LinkFailed,
                "link to cluster {} moves its bytes one-sidedly: it has no data connections",
                link.remote_cluster_id
            );
        }
        let cap = self.config.data_connections as usize;
        let mut opened = 0;
        for _ in 0..count.min(cap as u32) {
            let Some(slot) = link.reverse_slot(cap) else {
                break;
            };
            let mut c = link.open_reverse(deadline)?;
            c.hold(Box::new(slot));
            serve(self.arc(), link.clone(), c, false);
            opened += 1;
        }
        if opened == 0 && count > 0 {
            bail!(
                LinkFailed,
                "cluster {}: a link has at most {cap} reverse connections (llmdd.DataConnections)",
                self.cluster_id
            );
        }
        Ok(())
    }

    /// Adds a link_clusters link to the table unless its cluster is (now)
    /// reserved by a rank-table comm. An open link to the cluster is
    /// `LLM_ALREADY_LINK` (on the accepting side, `replace_stale_link` has
    /// already removed one whose peer is gone; a live one is never replaced,
    /// and neither is a link this side dialled: both ends may dial).
    pub(crate) fn insert_plain_link(&self, link: Arc<Link>, server: bool) -> Result<()> {
        let t = self.comms();
        let c = link.remote_cluster_id;
        if let Some(comm) = t.of_cluster(c) {
            bail!(
                AlreadyLink,
                "cluster {c} is a member of rank-table comm {} (\"{}\")",
                comm.id,
                comm.name()
            );
        }
        if server {
            return self.insert_link(link);
        }
        self.insert_link(link).map_err(|_| {
            err!(
                AlreadyLink,
                "a link to cluster {c} was created concurrently"
            )
        })
    }

    /// Client side of a non-forced unlink: stop new transfers and wait (up to
    /// `timeout`) for those in flight, tell the server on the control
    /// connection (it waits for what it still serves), then drop ours. A link
    /// whose server is proven gone is just dropped (nothing to tell).
    pub fn disconnect(&self, remote_cluster_id: u64, timeout: Duration) -> Result<()> {
        let Some(link) = self.link_dir(remote_cluster_id, true) else {
            return Ok(());
        };
        if let Some(why) = link.peer_gone() {
            log_info!("unlinking cluster {remote_cluster_id}, whose link is already gone ({why})");
            if self.remove_exact(&link) {
                link.teardown(Duration::ZERO);
            }
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        if !link.drain(timeout) {
            log_warn!(
                "unlinking cluster {remote_cluster_id}: transfers still in flight after {} ms are cut",
                timeout.as_millis()
            );
            link.shutdown_data();
        }
        let reply = rpc::unlink(&link, deadline.max(Instant::now() + UNLINK_REPLY_FLOOR));
        let failed = match reply {
            Ok(Unlinked::Agreed) => None,
            Ok(Unlinked::Refused(why)) => Some(why),
            Err(e) => match link.peer_gone() {
                // The server dropped the link meanwhile: it is unlinked.
                Some(_) => None,
                None => Some(format!("could not reach cluster {remote_cluster_id} to unlink ({}); force-unlink both ends", e.message)),
            },
        };
        if let Some(why) = failed {
            link.undrain();
            bail!(UnlinkFailed, "{why}");
        }
        if self.remove_exact(&link) {
            link.teardown(deadline.saturating_duration_since(Instant::now()));
        }
        Ok(())
    }
}
