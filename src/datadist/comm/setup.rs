//! The flows of rank-table comms: creating one (validation, the background
//! setup runner with its dial retries and HCCL communicator), querying and
//! destroying it, and adopting the links its members dial. They work on the
//! comm table, the link table and the backend (`CommOps`), and ask the
//! instance (`CommHost`) only to dial, to listen and to start the runner.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::datadist::attempts::Attempts;
use crate::datadist::link_table::LinkTable;
use crate::datadist::options::Config;

/// What the comm flows need of the instance beyond its tables.
pub trait CommHost: Send + Sync {
    /// True once finalize has begun.
    fn is_closing(&self) -> bool;
    /// Dials member `cluster` of `comm` at `addr` within `timeout` (the
    /// handshake names the comm; the link joins it). `LLM_NOT_YET_LINK`
    /// means "retry".
    fn dial_member(
        &self,
        cluster: u64,
        addr: SocketAddr,
        timeout: Duration,
        comm: &Arc<Comm>,
    ) -> Result<()>;
    /// Listens on `addr` for the comm's members (shared by the comms naming
    /// it); the endpoint to release later, if one was bound.
    fn acquire_listener(&self, addr: SocketAddr) -> Result<Option<SocketAddr>>;
    /// Drops a comm's reference on its listener; the last one closes it.
    fn release_listener(&self, addr: SocketAddr);
    /// Starts a tracked thread (joined at finalize) that runs
    /// [`CommOps::run`] from `first`.
    fn spawn_runner(&self, first: Arc<Comm>) -> Result<()>;
}

/// The comm flows of one instance, over the owners they use (borrowed from
/// the session by `Session::comm_ops`).
pub struct CommOps<'s> {
    pub(crate) cluster_id: u64,
    pub(crate) config: &'s Config,
    pub(crate) comms: &'s Mutex<Comms>,
    pub(crate) comm_ids: &'s AtomicU64,
    pub(crate) links: &'s LinkTable,
    pub(crate) attempts: &'s Attempts,
    pub(crate) backend: &'s dyn Device,
    pub(crate) host: &'s dyn CommHost,
}

impl CommOps<'_> {
    /// The comm table (lock order: comms, then a comm's state, then links).
    fn comms(&self) -> MutexGuard<'_, Comms> {
        self.comms.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remove_exact(&self, link: &Arc<Link>) {
        self.links.remove_exact(link);
    }

    /// `link`: reserves the members, binds the local endpoint if some member
    /// dials us, and queues the background setup. Returns the comm id.
    pub fn comm_link(&self, spec: CommSpec) -> Result<u64> {
        if self.host.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        let mut t = self.comms();
        if t.len() >= MAX_COMMS {
            bail!(
                ParamInvalid,
                "this instance already has {} comms (the limit is {MAX_COMMS}); unlink one first",
                t.len()
            );
        }
        for (i, m) in spec.members.iter().enumerate() {
            if i == spec.local {
                continue;
            }
            if let Some(c) = t.of_cluster(m.cluster_id) {
                bail!(
                    AlreadyLink,
                    "cluster {} is already a member of comm {} (\"{}\") on this instance; unlink it first",
                    m.cluster_id,
                    c.id,
                    c.name()
                );
            }
            if self.links.get(m.cluster_id).is_some() {
                bail!(
                    AlreadyLink,
                    "a link to cluster {} already exists (link_clusters); unlink it first",
                    m.cluster_id
                );
            }
        }
        let local = spec.local_member().clone();
        let listener = if spec.accepts() {
            self.host.acquire_listener(local.addr).map_err(|e| {
                err!(
                    LinkFailed,
                    "cannot listen on rank {}'s endpoint {} from the rank table: {}",
                    local.rank_id,
                    local.addr,
                    e.message
                )
            })?
        } else {
            None
        };
        let id = self.comm_ids.fetch_add(1, Ordering::Relaxed);
        let comm = Arc::new(Comm::new(id, spec, listener));
        if t.insert(comm.clone(), MAX_CONCURRENT_COMM_SETUPS) {
            drop(t);
            if let Err(e) = self.host.spawn_runner(comm.clone()) {
                self.comms().runner_not_started();
                self.comm_failed(&comm, &e.message);
            }
        } else {
            drop(t);
        }
        log_info!(
            "cluster {} created comm {id} (\"{}\") as rank {} of {}",
            self.cluster_id,
            comm.name(),
            local.rank_id,
            comm.spec.members.len()
        );
        Ok(id)
    }

    /// `query_register_mem_status`: status and failure reason.
    pub fn comm_status(&self, comm_id: u64) -> Result<(MemStatus, String)> {
        let c = self.comms().get(comm_id).cloned();
        c.map(|c| c.status()).ok_or_else(|| unknown_comm(comm_id))
    }

    /// `unlink`: aborts the setup, tears down the local side of every link
    /// of the comm (waiting for in-flight transfers), releases its listener.
    pub fn comm_unlink(&self, comm_id: u64) -> Result<()> {
        let comm = self
            .comms()
            .remove(comm_id)
            .ok_or_else(|| unknown_comm(comm_id))?;
        self.comm_teardown(&comm, self.config.sync_kv_timeout);
        log_info!(
            "cluster {} unlinked comm {comm_id} (\"{}\")",
            self.cluster_id,
            comm.name()
        );
        Ok(())
    }

    /// Closes every comm (finalize).
    pub(crate) fn unlink_all(&self, wait: Duration) {
        let all: Vec<Arc<Comm>> = self.comms().drain();
        for c in all {
            self.comm_teardown(&c, wait);
        }
    }

    fn comm_teardown(&self, comm: &Comm, wait: Duration) {
        for l in comm.close() {
            self.remove_exact(&l);
            l.teardown(wait);
        }
        self.destroy_comm_hccl(comm);
        if let Some(a) = comm.listener {
            self.host.release_listener(a);
        }
    }

    /// Destroys the comm's HCCL communicator (after its links are torn down:
    /// their data paths no longer hold it).
    fn destroy_comm_hccl(&self, comm: &Comm) {
        if let Some(h) = comm.take_hccl() {
            self.backend.drop_communicator(h);
        }
    }

    /// acl backend, every pair linked: creates the comm's communicator from
    /// the user's rank table, binds every registered region and prepares it
    /// (full mesh) before `deadline`. Errors carry the vendor message.
    fn comm_hccl_setup(&self, c: &Comm, deadline: Instant) -> Result<()> {
        let me = c.spec.local_member().rank_id;
        let name = c.spec.hccl_name();
        let Some(comm) = self
            .backend
            .communicator(&c.spec.rank_table, me, &name, deadline)?
        else {
            return Ok(());
        };
        let mut st = c.lock();
        if st.closed || st.status != MemStatus::Preparing {
            drop(st);
            self.backend.drop_communicator(comm);
            return Ok(());
        }
        st.hccl = Some(comm);
        drop(st);
        log_info!(
            "HCCL communicator {name}: rank {me} of {} from the user's rank table (comm {})",
            c.spec.members.len(),
            c.id
        );
        Ok(())
    }

    /// Runs `first`'s setup, then queued ones, until the queue is empty
    /// (the runner thread).
    pub fn run(&self, first: Arc<Comm>) {
        let mut next = Some(first);
        while let Some(c) = next {
            if !c.is_closed() {
                self.comm_setup(&c);
            }
            next = self.comms().next_for_runner();
        }
    }

    /// Dials every lower-ranked member, then waits until every higher-ranked
    /// member has dialed us; OK, or FAILED at the end of the link budget.
    fn comm_setup(&self, c: &Arc<Comm>) {
        let budget = link_budget(
            self.config.link_total_time_s,
            std::env::var("HCCL_CONNECT_TIMEOUT").ok().as_deref(),
        );
        let deadline = Instant::now() + budget;
        for m in c.spec.dial_targets() {
            let mut last = String::from("no attempt finished");
            loop {
                if c.is_closed() {
                    return;
                }
                let now = Instant::now();
                if now >= deadline {
                    self.comm_failed(
                        c,
                        &format!(
                            "could not link to cluster {} (rank {}) at {} within {} s (llm.LinkTotalTime): {last}",
                            m.cluster_id,
                            m.rank_id,
                            m.addr,
                            budget.as_secs()
                        ),
                    );
                    return;
                }
                let attempt = (deadline - now).min(DIAL_ATTEMPT);
                match self.host.dial_member(m.cluster_id, m.addr, attempt, c) {
                    Ok(()) => break,
                    Err(e) if e.status == Status::NotYetLink => {
                        last = e.message;
                        c.pause(RETRY_PAUSE);
                    }
                    Err(e) => {
                        self.comm_failed(
                            c,
                            &format!(
                                "linking to cluster {} (rank {}) at {} failed: {}",
                                m.cluster_id, m.rank_id, m.addr, e.message
                            ),
                        );
                        return;
                    }
                }
            }
        }
        let mut hccl_done = !c.spec.acl;
        loop {
            if !hccl_done && c.all_linked() {
                if let Err(e) = self.comm_hccl_setup(c, deadline) {
                    self.comm_failed(c, &e.message);
                    return;
                }
                hccl_done = true;
            }
            if hccl_done && c.try_complete(Some(self.backend)) {
                log_info!(
                    "cluster {}: comm {} (\"{}\") is linked",
                    self.cluster_id,
                    c.id,
                    c.name()
                );
                return;
            }
            if c.is_closed() {
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<String> = c
                    .missing(&c.lock())
                    .into_iter()
                    .filter_map(|id| c.peer(id))
                    .map(|m| format!("cluster {} (rank {})", m.cluster_id, m.rank_id))
                    .collect();
                self.comm_failed(
                    c,
                    &format!(
                        "no link with {} within {} s (llm.LinkTotalTime)",
                        missing.join(", "),
                        budget.as_secs()
                    ),
                );
                return;
            }
            c.pause((deadline - now).min(RETRY_PAUSE));
        }
    }

    /// PREPARING → FAILED: logs why and drops the comm's links.
    fn comm_failed(&self, c: &Comm, why: &str) {
        let Some(links) = c.fail(why) else {
            return;
        };
        log_warn!(
            "cluster {}: comm {} (\"{}\") FAILED: {why}",
            self.cluster_id,
            c.id,
            c.name()
        );
        for l in links {
            self.remove_exact(&l);
            l.teardown(Duration::ZERO);
        }
        self.destroy_comm_hccl(c);
    }

    /// The pending comm a dialer's `Hello` names: `LLM_NOT_YET_LINK` (the
    /// dialer retries) when there is none yet, `LLM_PARAM_INVALID` when our
    /// comm of that name does not expect this dialer the way it dials.
    pub(crate) fn pending_comm(&self, name: &str, dialer: u64) -> Result<Arc<Comm>> {
        let t = self.comms();
        let c = match t.of_cluster(dialer) {
            Some(c) if c.name() == name => c.clone(),
            Some(c) => bail!(
                NotYetLink,
                "cluster {} has cluster {dialer} in comm {} (\"{}\"), not in \"{name}\"",
                self.cluster_id,
                c.id,
                c.name()
            ),
            None if t.iter().any(|c| c.name() == name) => bail!(
                ParamInvalid,
                "cluster {dialer} is not a member of comm \"{name}\" on cluster {}",
                self.cluster_id
            ),
            None => bail!(
                NotYetLink,
                "cluster {} has no comm \"{name}\" with cluster {dialer} yet",
                self.cluster_id
            ),
        };
        drop(t);
        let m = c.peer(dialer).map(|m| m.rank_id).unwrap_or_default();
        let me = c.spec.local_member().rank_id;
        if m < me {
            bail!(
                ParamInvalid,
                "in comm \"{name}\" cluster {dialer} has rank {m}, below this cluster's rank {me}, so this cluster dials it (do the members use the same cluster_ranks?)"
            );
        }
        Ok(c)
    }

    /// Adds an accepted link to its comm (and the link table), replacing a
    /// closed earlier one from the same peer.
    pub(crate) fn comm_adopt(&self, c: &Comm, link: &Arc<Link>, dialed: bool) -> Result<()> {
        let mut st = c.lock();
        if st.closed || st.status != MemStatus::Preparing {
            bail!(
                NotYetLink,
                "comm {} (\"{}\") on cluster {} is not being set up any more",
                c.id,
                c.name(),
                self.cluster_id
            );
        }
        let peer = link.remote_cluster_id;
        if let Some(old) = st.links.get(&peer) {
            if !old.is_closed() {
                bail!(
                    NotYetLink,
                    "comm {} on cluster {} still has an open link to cluster {peer}",
                    c.id,
                    self.cluster_id
                );
            }
            let old = old.clone();
            st.links.remove(&peer);
            st.ready.remove(&peer);
            self.remove_exact(&old);
        }
        self.links.insert(link.clone())?;
        // A link supersedes a failed link_clusters to that cluster.
        self.attempts.forget(peer);
        st.links.insert(peer, link.clone());
        if dialed {
            st.ready.insert(peer);
        }
        drop(st);
        c.notify();
        Ok(())
    }

    /// An accepted comm link is set up (the dialer's Pools arrived): the
    /// pair is complete on this side.
    pub(crate) fn comm_peer_ready(&self, link: &Arc<Link>) {
        let Some(c) = self.comms().get(link.comm_id).cloned() else {
            return;
        };
        let mut st = c.lock();
        let peer = link.remote_cluster_id;
        if st.links.get(&peer).is_some_and(|l| Arc::ptr_eq(l, link)) {
            st.ready.insert(peer);
            drop(st);
            c.notify();
        }
    }
}

fn unknown_comm(comm_id: u64) -> Error {
    err!(
        NotYetLink,
        "no comm with id {comm_id} on this instance (never linked, or already unlinked)"
    )
}
