//! The link handshake (wire protocol 3, docs/security.md): nothing is claimed,
//! everything is proven, and nothing identifying reaches a peer before it has
//! proven what it needs to.
//!
//! ```text
//! client                                   server
//! Hello    {auth?, nonce_c}          →
//!                                    ←     HelloAck {nonce_s, host tag, auth MAC?}
//! Join     {auth MAC?, cluster, server cluster, role, mode, comm, device,
//!           identity: host tag, proof, claim iff the server's host tag matched} →
//!                                    ←     JoinAck {status, cluster, role, token, device,
//!                                           identity (claim iff the client's host tag matched),
//!                                           pools iff the client proved it is on this host}
//! Pools    {pools iff the server proved it is on this host} →
//! ```
//!
//! With `llmdd.LinkSecret` both sides answer the other's nonce with an HMAC of
//! the secret before anything else is exchanged; a side without the secret, or
//! with another one, is refused. Identity proofs (`transport::identity`) are
//! bound to both nonces and to the control connection's endpoints.
//!
//! The engine runs both sides, in order and with their deadlines: the
//! dialler's ([`dial`]: connect, handshake, the link's data paths, serving its
//! control connection) and the listener's ([`accept`]: admission of an
//! accepted connection, its first frame, the challenge, the checks of a
//! `Join`, `JoinAck`, `Pools`, or an `Attach`), with the frames of [`frames`].
//! What they ask of the instance is [`LinkHost`], which `datadist/link_host.rs`
//! implements: its identity and settings, and the instance-level policy (which
//! clusters may link, the link table, rank-table comms).

pub mod accept;
pub mod dial;
pub mod frames;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::backend::Device;
use crate::bail;
use crate::device::pool::PeerMapping;
use crate::status::Result;
use crate::transfer::link::Link;
use crate::transfer::listener::{Admit, Listeners};
use crate::transfer::serve::ServeHost;
use crate::transport::auth::LinkKey;
use crate::transport::identity::{self, Side, Transcript, Verdict};
use crate::transport::local::LocalPath;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::tcp::ConnOpts;
use crate::transport::wire::{DeviceEndpoint, Identity, PoolInfo};
use crate::{log_debug, log_info};

/// What link setup needs of the instance on either side of the handshake,
/// beyond serving ([`ServeHost`]) and admitting ([`Admit`]) its peers.
pub(crate) trait LinkHost: ServeHost + Admit {
    /// A rank-table comm of the instance, as link setup sees it.
    type Comm: LinkComm;
    /// The instance's role now (prompt / decoder / mix).
    fn role(&self) -> u32;
    /// The link secret (`llmdd.LinkSecret`), if one is set.
    fn link_key(&self) -> Option<&LinkKey>;
    /// One-sided paths are on (`llmdd.SameHost`) and possible (host backend).
    fn one_sided(&self) -> bool;
    /// The instance's memfd pools, as announced to a peer proven to be on
    /// this host.
    fn pool_infos(&self) -> Vec<PoolInfo>;
    /// The largest peer pool mapped (`llmdd.PeerPoolMaxBytes`).
    fn peer_pool_max(&self) -> u64;
    /// The remote-cache-accessible mode (both ends must agree).
    fn remote_accessible(&self) -> bool;
    /// The backend (its link setup hooks: offers, data paths).
    fn backend(&self) -> &dyn Device;
    /// Socket options of a link's connections.
    fn conn_opts(&self) -> ConnOpts;
    /// The registry's generation now (what a new link may see).
    fn generation(&self) -> u64;
    /// Most connections of one accepted link (`llmdd.MaxConnsPerLink`).
    fn max_conns_per_link(&self) -> u32;
    /// The instance's listeners (accepted connections, setup slots).
    fn listeners(&self) -> &Listeners;
    /// Starts a tracked thread (joined at finalize), reporting failure.
    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()>;
    /// The link accepted from `cluster_id`, if any (an `Attach` joins it).
    fn accepted_link(&self, cluster_id: u64) -> Option<Arc<Link>>;
    /// Whether the instance accepts a link from `cluster_id` now: the comm
    /// `comm_name` names (a rank-table dialer), or `None` for link_clusters
    /// (a live link from that cluster, membership of a comm, or the link
    /// limit refuses it; a stale one is dropped).
    fn accepting(&self, cluster_id: u64, comm_name: &str) -> Result<Option<Arc<Self::Comm>>>;
    /// Puts a finished `link` into the link table (and `comm`'s links).
    fn install(&self, link: &Arc<Link>, comm: Option<&Self::Comm>) -> Result<()>;
    /// An accepted comm link is set up (the dialer's `Pools` arrived).
    fn comm_peer_ready(&self, link: &Arc<Link>);
}

/// What link setup needs of a rank-table comm.
pub(crate) trait LinkComm: Send + Sync + 'static {
    /// The comm's id (its links carry it).
    fn comm_id(&self) -> u64;
    /// The comm's name (a dialer's `Join` names it).
    fn comm_name(&self) -> &str;
    /// This instance's device endpoint in the comm's rank table.
    fn local_device(&self) -> Option<DeviceEndpoint>;
}

/// Endpoint used when a socket cannot report its own (the proofs then fail:
/// no one-sided path, TCP).
fn unknown_endpoint() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// What a verified peer gets: the one-sided path, or an error when it
/// claimed an identity it could not prove (`who` names it in messages).
fn judge<H: LinkHost>(
    host: &H,
    side: Side,
    t: &Transcript,
    id: &Identity,
    who: &str,
) -> Result<Option<LocalPath>> {
    if !host.one_sided() {
        return Ok(None);
    }
    match identity::verify(side, t, id) {
        Verdict::SameProcess => Ok(Some(LocalPath::SameProcess)),
        Verdict::SameHost(p) => {
            log_debug!("{who} is pid {} of this host (proven)", p.pid());
            Ok(Some(LocalPath::SameHost(p)))
        }
        Verdict::Remote(why) => {
            log_info!("no same-host path to {who} ({why}); using TCP");
            Ok(None)
        }
        Verdict::Forged(why) => bail!(
            LinkFailed,
            "{who} failed the same-host identity proof: {why}"
        ),
    }
}

/// Maps the pools a verified same-host peer announced (each checked against
/// its memfd and `llmdd.PeerPoolMaxBytes`); a pool that fails is reached
/// with process_vm_readv/writev instead.
fn map_pools<H: LinkHost>(
    host: &H,
    peer: Option<&PeerProcess>,
    pools: &[PoolInfo],
) -> Vec<PeerMapping> {
    let Some(p) = peer else {
        return Vec::new();
    };
    pools
        .iter()
        .filter_map(
            |info| match PeerMapping::open(p, info, host.peer_pool_max()) {
                Ok(m) => Some(m),
                Err(e) => {
                    log_info!("not mapping a pool of pid {}: {}", p.pid(), e.message);
                    None
                }
            },
        )
        .collect()
}
