//! The serving side of link setup that is the instance's: its listeners
//! (the instance's own endpoint and those of rank-table comms), the
//! listener's [`Admit`] (accepted connections go to the engine's handshake,
//! `transfer::handshake::accept`), and the replacement of a stale link from
//! a cluster that links again.

use std::net::{SocketAddr, TcpStream};
use std::sync::Weak;
use std::time::Duration;

use super::Session;
use crate::status::Result;
use crate::transfer::handshake::accept;
use crate::transfer::listener::{Admit, Listener};
use crate::{bail, log_info};

/// How long a Hello for a cluster with a live link waits for that link's
/// control connection to hang up (a client that force-unlinked and links
/// again at once) before it is refused as `LLM_ALREADY_LINK`.
const STALE_LINK_GRACE: Duration = Duration::from_millis(100);

impl Admit for Session {
    fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    fn is_closing(&self) -> bool {
        Session::is_closing(self)
    }

    /// Takes an accepted connection in (`transfer::handshake::accept`).
    fn admit(&self, stream: TcpStream, peer: SocketAddr, comm_only: bool) {
        accept::admit(&self.arc(), stream, peer, comm_only)
    }
}

impl Session {
    /// Binds `addr` and starts its accept thread. `comm_only`: a listener
    /// bound for rank-table comms, which refuses link_clusters handshakes
    /// (only `llm.ListenIpInfo` makes an instance a server).
    fn bind_listener(&self, addr: SocketAddr, comm_only: bool) -> Result<Listener> {
        let host: Weak<dyn Admit> = self.me.clone();
        let l = Listener::bind(addr, comm_only, host)?;
        log_info!("cluster {} listening on {}", self.cluster_id, l.addr());
        Ok(l)
    }

    /// Starts listening on `addr` (replacing any current listener).
    pub fn listen(&self, addr: SocketAddr) -> Result<()> {
        let l = self.bind_listener(addr, false)?;
        self.listeners.set_main(l);
        Ok(())
    }

    /// A listener on `addr` for a comm: `None` when the instance's own
    /// listener (`llm.ListenIpInfo`) already serves that endpoint, else a
    /// reference on a comm listener (bound now, or shared with another comm),
    /// released with [`Session::release_listener`].
    pub(crate) fn acquire_listener(&self, addr: SocketAddr) -> Result<Option<SocketAddr>> {
        self.listeners
            .acquire_comm(addr, || self.bind_listener(addr, true))
    }

    /// Drops a comm's reference on its listener; the last one closes it.
    pub(crate) fn release_listener(&self, addr: SocketAddr) {
        self.listeners.release_comm(addr)
    }

    /// Stops listening (becomes a client).
    pub fn stop_listening(&self) {
        self.listeners.stop_main()
    }

    /// Server side of a `Hello` for `cluster` (a link_clusters client). A
    /// link this side dialled to that cluster does not matter (both ends may
    /// link to each other). A closed accepted link is dropped, and so is one whose peer is
    /// proven gone (control connection closed or errored, waiting up to
    /// [`STALE_LINK_GRACE`] for a hang-up under way); a live one is kept and
    /// the newcomer refused with `LLM_ALREADY_LINK`, so a second process
    /// claiming the cluster id cannot take over a real client's link.
    pub(crate) fn replace_stale_link(&self, cluster: u64) -> Result<()> {
        let Some(old) = self.link_dir(cluster, false) else {
            return Ok(());
        };
        match old.peer_gone_within(STALE_LINK_GRACE) {
            Some(why) => {
                log_info!("replacing the stale link from cluster {cluster} ({why})");
                if self.remove_exact(&old) {
                    old.teardown(Duration::ZERO);
                }
                Ok(())
            }
            // The message goes to the newcomer: it names neither this
            // server's cluster id nor the real client's address.
            None => bail!(
                AlreadyLink,
                "there already is a live link from cluster {cluster}; a client with that cluster id must unlink (or be found dead within llmdd.DeadPeerTimeoutMs) first"
            ),
        }
    }
}
