//! The instance's answers to link setup (`transfer::handshake`): its
//! identity and settings, and the instance-level policy of which clusters
//! may link now (rank-table comms, a live or stale link from the same
//! cluster, the link limit) and where a finished link goes (the link table,
//! or its comm).

use std::sync::Arc;

use crate::backend::Device;
use crate::bail;
use crate::datadist::comm::Comm;
use crate::datadist::session::Session;
use crate::status::Result;
use crate::transfer::handshake::{LinkComm, LinkHost};
use crate::transfer::link::Link;
use crate::transfer::listener::Listeners;
use crate::transport::auth::LinkKey;
use crate::transport::tcp::ConnOpts;
use crate::transport::wire::{DeviceEndpoint, PoolInfo};

impl LinkComm for Comm {
    fn comm_id(&self) -> u64 {
        self.id
    }

    fn comm_name(&self) -> &str {
        self.name()
    }

    fn local_device(&self) -> Option<DeviceEndpoint> {
        self.spec.local_member().device.clone()
    }
}

impl LinkHost for Session {
    type Comm = Comm;

    fn role(&self) -> u32 {
        self.role.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn link_key(&self) -> Option<&LinkKey> {
        self.config.link_key.as_ref()
    }

    fn one_sided(&self) -> bool {
        self.config.same_host && self.caps().same_host_paths
    }

    fn pool_infos(&self) -> Vec<PoolInfo> {
        self.pools
            .all()
            .filter_map(|p| {
                p.fd().map(|fd| PoolInfo {
                    fd: fd as u32,
                    base: p.base(),
                    size: p.size(),
                })
            })
            .collect()
    }

    fn peer_pool_max(&self) -> u64 {
        self.config.peer_pool_max
    }

    fn remote_accessible(&self) -> bool {
        self.config.remote_cache_accessible
    }

    fn backend(&self) -> &dyn Device {
        &*self.backend
    }

    fn conn_opts(&self) -> ConnOpts {
        self.config.conn_opts()
    }

    fn generation(&self) -> u64 {
        self.registry.generation()
    }

    fn max_conns_per_link(&self) -> u32 {
        self.config.net.max_conns_per_link
    }

    fn listeners(&self) -> &Listeners {
        Session::listeners(self)
    }

    fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        self.try_spawn(name, f)
    }

    fn accepted_link(&self, cluster_id: u64) -> Option<Arc<Link>> {
        self.link_dir(cluster_id, false)
    }

    fn accepting(&self, cluster_id: u64, comm_name: &str) -> Result<Option<Arc<Comm>>> {
        let comm = if comm_name.is_empty() {
            if let Some(c) = self.comm_of(cluster_id) {
                bail!(
                    AlreadyLink,
                    "cluster {cluster_id} is a member of rank-table comm {} (\"{}\") here",
                    c.id,
                    c.name()
                );
            }
            self.replace_stale_link(cluster_id)?;
            None
        } else {
            Some(self.comm_ops().pending_comm(comm_name, cluster_id)?)
        };
        if self.link_count() >= self.config.max_links as usize {
            bail!(
                LinkFailed,
                "server already has {} links (the limit)",
                self.config.max_links
            );
        }
        Ok(comm)
    }

    fn install(&self, link: &Arc<Link>, comm: Option<&Comm>) -> Result<()> {
        let dialed = link.we_dialed;
        match comm {
            Some(c) => self.comm_ops().comm_adopt(c, link, dialed),
            None => self.insert_plain_link(link.clone(), !dialed),
        }
    }

    fn comm_peer_ready(&self, link: &Arc<Link>) {
        self.comm_ops().comm_peer_ready(link)
    }
}
