//! Rank-table linking (`link` / `unlink` / `query_register_mem_status`,
//! spec §1.3, §4.1): every member of a comm domain calls `link` with the same
//! members and rank table; the call returns a comm id at once and the links
//! between every pair of members are set up in the background.
//!
//! On the host backend a pair is linked by the existing TCP handshake: the
//! higher rank dials the lower rank's endpoint from the rank table
//! (`rank_table.rs`), naming the comm in its `Hello`; the lower rank matches it
//! to its pending comm and expected member, or answers `LLM_NOT_YET_LINK` when
//! it has no such comm yet, and the dialer retries until the link budget
//! (`llm.LinkTotalTime`) runs out. The resulting links are ordinary links keyed
//! by remote cluster id; they only become usable for transfers when every pair
//! of the comm is linked (status OK).
//!
//! On the acl backend the members' HCCL endpoints are the table's
//! `device_ip` / `device_port`, and the comm has ONE communicator built from
//! the user's rank table: once every pair's TCP link is up, the setup thread
//! creates it (`HcclCommInitClusterInfoMemConfig` with this member's rank),
//! binds every registered region and runs `HcclCommPrepare` (full mesh; every
//! member does so concurrently), all through the backend's comm hooks
//! (`Device::communicator`). Every link of the comm then gets a data path
//! sharing that communicator (`Device::comm_path`), with the peer's `rank_id`
//! as remote rank; status OK needs the links and the prepared communicator. The
//! communicator is destroyed at unlink / finalize after the links.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backend::{Communicator, Device};
use crate::datadist::rank_table::RankTable;
use crate::status::{Error, Result, Status};
use crate::transfer::link::Link;
use crate::transport::wire::DeviceEndpoint;
use crate::{bail, err, log_info, log_warn};

/// Longest comm name, in bytes (spec §7: "< 128 chars").
pub(crate) const MAX_COMM_NAME: usize = 127;
/// Members of one comm domain.
pub(crate) const MIN_MEMBERS: usize = 2;
pub(crate) const MAX_MEMBERS: usize = 4;
/// Comms per instance (spec §7).
pub(crate) const MAX_COMMS: usize = 512;
/// Comm setups running at once per instance; more are queued (spec §1.3).
pub(crate) const MAX_CONCURRENT_COMM_SETUPS: usize = 16;
/// Link budget when `llm.LinkTotalTime` is 0 and `HCCL_CONNECT_TIMEOUT` unset.
const DEFAULT_LINK_BUDGET: Duration = Duration::from_secs(120);
/// Longest single dial attempt (connect + handshake + attaching connections).
const DIAL_ATTEMPT: Duration = Duration::from_secs(3);
/// Pause between dial attempts, and between readiness checks.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// `RegisterMemStatus` (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemStatus {
    /// Every pair of members is linked: transfers may use the links.
    Ok = 0,
    /// Setup is under way in the background.
    Preparing = 1,
    /// Setup failed (the reason is kept); unlink it.
    Failed = 2,
}

/// One member of a comm: cluster id, rank, and its control endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's cluster id.
    pub cluster_id: u64,
    /// Its rank in the rank table.
    pub rank_id: u32,
    /// Its control endpoint (listen address) from the table.
    pub addr: SocketAddr,
    /// The member's HCCL endpoint from the table (acl backend only).
    pub device: Option<DeviceEndpoint>,
}

/// A validated `link` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommSpec {
    /// The comm name (`comm_name`, < 128 bytes), the same on every member.
    pub name: String,
    /// In the caller's order (ranks strictly ascending).
    pub members: Vec<Member>,
    /// Index of this instance in `members`.
    pub local: usize,
    /// The user's rank table (the acl backend builds the comm's HCCL
    /// communicator from it).
    pub rank_table: String,
    /// Validated for the acl backend.
    pub acl: bool,
}

impl CommSpec {
    /// Checks a `link` request (spec §4.1) and derives every member's endpoint.
    /// `acl`: the instance runs the acl backend, where every member needs a
    /// `host_port` and a device endpoint (`rank_table.rs`).
    pub fn validate(
        name: &str,
        ranks: &[(u64, u32)],
        local_cluster: u64,
        rank_table: &str,
        acl: bool,
        default_port: u16,
    ) -> Result<CommSpec> {
        if name.is_empty() || name.len() > MAX_COMM_NAME {
            bail!(
                ParamInvalid,
                "comm_name must be 1..{MAX_COMM_NAME} bytes long (got {})",
                name.len()
            );
        }
        if !(MIN_MEMBERS..=MAX_MEMBERS).contains(&ranks.len()) {
            bail!(
                ParamInvalid,
                "a comm has {MIN_MEMBERS}..{MAX_MEMBERS} members (cluster_ranks has {})",
                ranks.len()
            );
        }
        for (i, &(c, _)) in ranks.iter().enumerate() {
            if ranks[..i].iter().any(|&(o, _)| o == c) {
                bail!(
                    ParamInvalid,
                    "cluster id {c} appears more than once in cluster_ranks"
                );
            }
        }
        for w in ranks.windows(2) {
            if w[1].1 <= w[0].1 {
                bail!(
                    ParamInvalid,
                    "rank ids must be strictly ascending in cluster_ranks order (rank {} of cluster {} follows rank {} of cluster {})",
                    w[1].1,
                    w[1].0,
                    w[0].1,
                    w[0].0
                );
            }
        }
        let Some(local) = ranks.iter().position(|&(c, _)| c == local_cluster) else {
            bail!(
                ParamInvalid,
                "cluster_ranks does not contain this instance's cluster id {local_cluster}"
            );
        };
        let table = RankTable::parse(rank_table)?;
        for &(c, r) in ranks {
            if table.find(r).is_none() {
                bail!(
                    ParamInvalid,
                    "rank {r} (cluster {c}) does not appear as a rank_id in the rank table"
                );
            }
        }
        let mut members = ranks
            .iter()
            .map(|&(cluster_id, rank_id)| {
                Ok(Member {
                    cluster_id,
                    rank_id,
                    addr: table.endpoint(rank_id, acl, default_port)?,
                    device: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Every member but the highest rank is dialled, so their endpoints must
        // differ (a table without ports gives one default port per IP).
        let dialled = &members[..members.len() - 1];
        for (i, m) in dialled.iter().enumerate() {
            if let Some(o) = dialled[..i].iter().find(|o| o.addr == m.addr) {
                bail!(
                    ParamInvalid,
                    "ranks {} and {} have the same endpoint {} in the rank table; give each device its own host_port",
                    o.rank_id,
                    m.rank_id,
                    m.addr
                );
            }
        }
        // acl: every member's HCCL endpoint, checked after the TCP endpoints.
        if acl {
            for m in &mut members {
                m.device = Some(table.device_endpoint(m.rank_id)?);
            }
        }
        Ok(CommSpec {
            name: name.to_string(),
            members,
            local,
            rank_table: rank_table.to_string(),
            acl,
        })
    }

    /// This instance's entry.
    pub fn local_member(&self) -> &Member {
        &self.members[self.local]
    }

    /// Members this instance dials (lower ranks).
    pub fn dial_targets(&self) -> &[Member] {
        &self.members[..self.local]
    }

    /// True if some member dials this instance (it needs a listener).
    pub fn accepts(&self) -> bool {
        self.local + 1 < self.members.len()
    }

    /// Name of the comm's HCCL communicator (acl backend): the same on every
    /// member, at most 127 bytes.
    pub fn hccl_name(&self) -> String {
        let n = format!("llmdd-rt-{}", self.name);
        if n.len() <= MAX_COMM_NAME {
            return n;
        }
        // FNV-1a: stable across members and processes.
        let h = self.name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        format!("llmdd-rt-{h:016x}")
    }
}

/// The link budget: `llm.LinkTotalTime` seconds, or when 0 the environment's
/// `HCCL_CONNECT_TIMEOUT` (seconds), or 120 s.
pub fn link_budget(link_total_time_s: u32, env: Option<&str>) -> Duration {
    if link_total_time_s > 0 {
        return Duration::from_secs(u64::from(link_total_time_s));
    }
    env.and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LINK_BUDGET)
}

/// Mutable state of a comm.
pub(crate) struct CommState {
    pub status: MemStatus,
    /// Why the comm failed (status FAILED).
    pub failure: String,
    /// Unlinked (or the instance is finalizing): no new link may join.
    pub closed: bool,
    /// This comm's links by remote cluster id.
    pub links: HashMap<u64, Arc<Link>>,
    /// Peers whose link is complete: dialed, or (accepted) the dialer has
    /// attached the connection on which this side sends its requests.
    pub ready: HashSet<u64>,
    /// The comm's prepared HCCL communicator (acl backend).
    pub hccl: Option<Arc<dyn Communicator>>,
}

/// One comm domain on this instance.
pub struct Comm {
    /// The comm id `link` returned (per instance, never reused).
    pub id: u64,
    /// The validated request it was created from.
    pub spec: CommSpec,
    /// The listener this comm holds a reference on, if it bound its own.
    pub(crate) listener: Option<SocketAddr>,
    state: Mutex<CommState>,
    cv: Condvar,
}

impl Comm {
    pub(crate) fn new(id: u64, spec: CommSpec, listener: Option<SocketAddr>) -> Comm {
        Comm {
            id,
            spec,
            listener,
            state: Mutex::new(CommState {
                status: MemStatus::Preparing,
                failure: String::new(),
                closed: false,
                links: HashMap::new(),
                ready: HashSet::new(),
                hccl: None,
            }),
            cv: Condvar::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, CommState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The comm's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The member with `cluster_id` other than this instance.
    pub fn peer(&self, cluster_id: u64) -> Option<&Member> {
        self.spec
            .members
            .iter()
            .enumerate()
            .find(|(i, m)| *i != self.spec.local && m.cluster_id == cluster_id)
            .map(|(_, m)| m)
    }

    /// Status and failure reason.
    pub fn status(&self) -> (MemStatus, String) {
        let st = self.lock();
        (st.status, st.failure.clone())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Wakes the setup thread (a peer became ready, or the comm closed).
    pub(crate) fn notify(&self) {
        self.cv.notify_all();
    }

    /// Sleeps up to `d`, returning early when notified.
    fn pause(&self, d: Duration) {
        let st = self.lock();
        if !st.closed {
            let _ = self.cv.wait_timeout(st, d);
        }
    }

    /// Peers without a complete, open link (ascending rank).
    fn missing(&self, st: &CommState) -> Vec<u64> {
        self.spec
            .members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != self.spec.local)
            .map(|(_, m)| m.cluster_id)
            .filter(|c| !(st.ready.contains(c) && st.links.get(c).is_some_and(|l| !l.is_closed())))
            .collect()
    }

    /// The comm's prepared HCCL communicator, if any (acl backend).
    pub fn hccl(&self) -> Option<Arc<dyn Communicator>> {
        self.lock().hccl.clone()
    }

    /// True when every pair has a complete, open link.
    fn all_linked(&self) -> bool {
        self.missing(&self.lock()).is_empty()
    }

    /// Moves PREPARING → OK once every pair is linked (and, on the acl
    /// backend, the communicator is prepared: every link then gets its
    /// data path on it); true if OK now. `backend`: the instance's (`None`
    /// builds no data paths).
    fn try_complete(&self, backend: Option<&dyn Device>) -> bool {
        let mut st = self.lock();
        if st.status == MemStatus::Ok {
            return true;
        }
        if st.closed || st.status != MemStatus::Preparing || !self.missing(&st).is_empty() {
            return false;
        }
        if let Some(backend) = backend.filter(|b| self.spec.acl && b.capabilities().hccl_links) {
            let Some(comm) = st.hccl.clone() else {
                return false;
            };
            for (&cluster, l) in &st.links {
                if l.data_path().is_some() {
                    continue;
                }
                let peer = self.peer(cluster);
                let rank = peer.map_or(0, |m| m.rank_id);
                let endpoints = (
                    self.spec.local_member().device.as_ref(),
                    peer.and_then(|m| m.device.as_ref()),
                );
                if let Some(p) = backend.comm_path(&comm, rank, cluster, endpoints) {
                    l.set_path(p);
                }
            }
        }
        st.status = MemStatus::Ok;
        for l in st.links.values() {
            l.set_ready();
        }
        true
    }

    /// Moves PREPARING → FAILED with `why` and returns the links to tear
    /// down; `None` if the comm was not PREPARING (or is closed).
    fn fail(&self, why: &str) -> Option<Vec<Arc<Link>>> {
        let mut st = self.lock();
        if st.closed || st.status != MemStatus::Preparing {
            return None;
        }
        st.status = MemStatus::Failed;
        st.failure = why.to_string();
        st.ready.clear();
        Some(st.links.drain().map(|(_, l)| l).collect())
    }

    /// Closes the comm (unlink/finalize); returns its links to tear down.
    pub(crate) fn close(&self) -> Vec<Arc<Link>> {
        let mut st = self.lock();
        st.closed = true;
        st.ready.clear();
        let links = st.links.drain().map(|(_, l)| l).collect();
        drop(st);
        self.notify();
        links
    }

    /// Takes the comm's HCCL communicator out (to destroy it once the links
    /// are torn down).
    fn take_hccl(&self) -> Option<Arc<dyn Communicator>> {
        self.lock().hccl.take()
    }

    /// The message of a transfer refused because this comm is not usable.
    pub(crate) fn not_ready(&self, cluster_id: u64) -> Error {
        let (status, failure) = self.status();
        let what = format!(
            "the rank-table link to cluster {cluster_id} (comm {} \"{}\")",
            self.id,
            self.name()
        );
        match status {
            MemStatus::Preparing => err!(
                NotYetLink,
                "{what} is still PREPARING; poll llmdd_query_register_mem_status until OK"
            ),
            MemStatus::Failed => err!(NotYetLink, "{what} FAILED: {failure}"),
            MemStatus::Ok => err!(NotYetLink, "{what} is gone (the peer closed it)"),
        }
    }
}

/// The comms of a session and their setup queue (under `Session::comms()`).
#[derive(Default)]
pub(crate) struct Comms {
    by_id: BTreeMap<u64, Arc<Comm>>,
    /// Comms waiting for a setup slot.
    queue: VecDeque<Arc<Comm>>,
    /// Setup threads running (each works through the queue when done).
    running: usize,
}

impl Comms {
    /// Number of comms (any status).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The comm with id `id`.
    pub fn get(&self, id: u64) -> Option<&Arc<Comm>> {
        self.by_id.get(&id)
    }

    /// Every comm, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Comm>> {
        self.by_id.values()
    }

    /// The comm that has `cluster_id` as a (remote) member.
    pub fn of_cluster(&self, cluster_id: u64) -> Option<&Arc<Comm>> {
        self.by_id.values().find(|c| c.peer(cluster_id).is_some())
    }

    /// Adds `comm`; true if a setup thread should start for it (fewer than
    /// `max_running` run, and its slot is taken), else it waits in the queue.
    pub fn insert(&mut self, comm: Arc<Comm>, max_running: usize) -> bool {
        self.by_id.insert(comm.id, comm.clone());
        if self.running < max_running {
            self.running += 1;
            true
        } else {
            self.queue.push_back(comm);
            false
        }
    }

    /// A setup thread that was counted did not start: its slot is free.
    pub fn runner_not_started(&mut self) {
        self.running -= 1;
    }

    /// The next queued comm for a setup thread that finished one; `None`
    /// ends the thread (its slot is free).
    pub fn next_for_runner(&mut self) -> Option<Arc<Comm>> {
        let next = self.queue.pop_front();
        if next.is_none() {
            self.running -= 1;
        }
        next
    }

    /// Removes comm `id` (and its place in the queue).
    pub fn remove(&mut self, id: u64) -> Option<Arc<Comm>> {
        let c = self.by_id.remove(&id)?;
        self.queue.retain(|q| !Arc::ptr_eq(q, &c));
        Some(c)
    }

    /// Removes every comm (finalize).
    pub fn drain(&mut self) -> Vec<Arc<Comm>> {
        self.queue.clear();
        std::mem::take(&mut self.by_id).into_values().collect()
    }

    /// Setup threads running and comms queued.
    pub fn setups(&self) -> (usize, usize) {
        (self.running, self.queue.len())
    }
}

mod setup;
pub use setup::{CommHost, CommOps};

#[cfg(test)]
mod tests;
