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
//! member does so concurrently). Every link of the comm then gets an
//! `HcclLink` sharing that communicator, with the peer's `rank_id` as remote
//! rank; status OK needs the links and the prepared communicator. The
//! communicator is destroyed at unlink / finalize after the links.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::datadist::link::Link;
use crate::datadist::rank_table::RankTable;
use crate::datadist::session::Session;
use crate::device::acl_backend::AclBackend;
use crate::status::{Error, Result, Status};
use crate::transfer::hccl_path::HcclLink;
use crate::transport::hccl::HcclComm;
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
    Ok = 0,
    Preparing = 1,
    Failed = 2,
}

/// One member of a comm: cluster id, rank, and its control endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub cluster_id: u64,
    pub rank_id: u32,
    pub addr: SocketAddr,
    /// The member's HCCL endpoint from the table (acl backend only).
    pub device: Option<DeviceEndpoint>,
}

/// A validated `link` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommSpec {
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
    pub hccl: Option<Arc<HcclComm>>,
}

/// One comm domain on this instance.
pub struct Comm {
    pub id: u64,
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
    pub fn hccl(&self) -> Option<Arc<HcclComm>> {
        self.lock().hccl.clone()
    }

    /// True when every pair has a complete, open link.
    fn all_linked(&self) -> bool {
        self.missing(&self.lock()).is_empty()
    }

    /// Moves PREPARING → OK once every pair is linked (and, on the acl
    /// backend, the communicator is prepared: every link then gets its
    /// `HcclLink` on it); true if OK now.
    fn try_complete(&self, acl: Option<&Arc<AclBackend>>) -> bool {
        let mut st = self.lock();
        if st.status == MemStatus::Ok {
            return true;
        }
        if st.closed || st.status != MemStatus::Preparing || !self.missing(&st).is_empty() {
            return false;
        }
        if let Some(acl) = acl.filter(|_| self.spec.acl) {
            let Some(comm) = st.hccl.clone() else {
                return false;
            };
            for (&cluster, l) in &st.links {
                if l.hccl().is_some() {
                    continue;
                }
                let peer = self.peer(cluster);
                let rank = peer.map_or(0, |m| m.rank_id);
                let topology = match (
                    &self.spec.local_member().device,
                    peer.and_then(|m| m.device.as_ref()),
                ) {
                    (Some(a), Some(b)) => crate::datadist::acl_link::topology(a, b),
                    _ => Default::default(),
                };
                l.set_hccl(Arc::new(HcclLink::shared(
                    acl.context().clone(),
                    comm.clone(),
                    rank,
                    cluster,
                    topology,
                )));
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
    fn take_hccl(&self) -> Option<Arc<HcclComm>> {
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

/// The comms of a session and the setup queue.
#[derive(Default)]
pub(crate) struct Comms {
    pub by_id: BTreeMap<u64, Arc<Comm>>,
    /// Comms waiting for a setup slot.
    pub queue: VecDeque<Arc<Comm>>,
    /// Setup threads running (each works through the queue when done).
    pub running: usize,
}

impl Comms {
    /// The comm that has `cluster_id` as a (remote) member.
    pub fn of_cluster(&self, cluster_id: u64) -> Option<&Arc<Comm>> {
        self.by_id.values().find(|c| c.peer(cluster_id).is_some())
    }
}

impl Session {
    /// `link`: reserves the members, binds the local endpoint if some member
    /// dials us, and queues the background setup. Returns the comm id.
    pub fn comm_link(&self, spec: CommSpec) -> Result<u64> {
        if self.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        let mut t = self.comms();
        if t.by_id.len() >= MAX_COMMS {
            bail!(
                ParamInvalid,
                "this instance already has {} comms (the limit is {MAX_COMMS}); unlink one first",
                t.by_id.len()
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
            if self.link(m.cluster_id).is_some() {
                bail!(
                    AlreadyLink,
                    "a link to cluster {} already exists (link_clusters); unlink it first",
                    m.cluster_id
                );
            }
        }
        let local = spec.local_member().clone();
        let listener = if spec.accepts() {
            self.acquire_listener(local.addr).map_err(|e| {
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
        let id = self.next_comm_id();
        let comm = Arc::new(Comm::new(id, spec, listener));
        t.by_id.insert(id, comm.clone());
        if t.running < MAX_CONCURRENT_COMM_SETUPS {
            t.running += 1;
            drop(t);
            let s = self.arc();
            let c = comm.clone();
            if let Err(e) = self.try_spawn("llmdd-comm", move || s.comm_runner(c)) {
                self.comms().running -= 1;
                self.comm_failed(&comm, &e.message);
            }
        } else {
            t.queue.push_back(comm.clone());
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
        let c = self.comms().by_id.get(&comm_id).cloned();
        c.map(|c| c.status()).ok_or_else(|| unknown_comm(comm_id))
    }

    /// `unlink`: aborts the setup, tears down the local side of every link
    /// of the comm (waiting for in-flight transfers), releases its listener.
    pub fn comm_unlink(&self, comm_id: u64) -> Result<()> {
        let comm = {
            let mut t = self.comms();
            let c = t
                .by_id
                .remove(&comm_id)
                .ok_or_else(|| unknown_comm(comm_id))?;
            t.queue.retain(|q| !Arc::ptr_eq(q, &c));
            c
        };
        self.comm_teardown(&comm, self.config.sync_kv_timeout);
        log_info!(
            "cluster {} unlinked comm {comm_id} (\"{}\")",
            self.cluster_id,
            comm.name()
        );
        Ok(())
    }

    /// Closes every comm (finalize).
    pub(crate) fn comm_unlink_all(&self, wait: Duration) {
        let all: Vec<Arc<Comm>> = {
            let mut t = self.comms();
            t.queue.clear();
            std::mem::take(&mut t.by_id).into_values().collect()
        };
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
            self.release_listener(a);
        }
    }

    /// Destroys the comm's HCCL communicator (after its links are torn down:
    /// their `HcclLink`s no longer hold it).
    fn destroy_comm_hccl(&self, comm: &Comm) {
        if let Some(h) = comm.take_hccl() {
            drop_comm(self.acl(), h);
        }
    }

    /// acl backend, every pair linked: creates the comm's communicator from
    /// the user's rank table, binds every registered region and prepares it
    /// (full mesh) before `deadline`. Errors carry the vendor message.
    fn comm_hccl_setup(&self, c: &Comm, deadline: Instant) -> Result<()> {
        let Some(acl) = self.acl() else {
            return Ok(());
        };
        let me = c.spec.local_member().rank_id;
        let name = c.spec.hccl_name();
        let comm = HcclComm::create(
            acl.context(),
            &c.spec.rank_table,
            me,
            &acl.comm_config(name.clone()),
            deadline,
        )
        .map_err(|e| {
            err!(
                LinkFailed,
                "creating the HCCL communicator {name} from the rank table failed ({}): {}",
                e.status.name(),
                e.message
            )
        })?;
        for r in acl.regions() {
            comm.bind(&r).map_err(|e| {
                err!(
                    LinkFailed,
                    "binding memory to the HCCL communicator {name} failed ({}): {}",
                    e.status.name(),
                    e.message
                )
            })?;
        }
        let comm = Arc::new(comm);
        let left = deadline.saturating_duration_since(Instant::now());
        comm.prepare(left.max(Duration::from_secs(1)))
            .map_err(|e| {
                err!(
                    LinkFailed,
                    "HcclCommPrepare of the communicator {name} failed ({}): {}",
                    e.status.name(),
                    e.message
                )
            })?;
        let mut st = c.lock();
        if st.closed || st.status != MemStatus::Preparing {
            drop(st);
            drop_comm(Some(acl), comm);
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

    /// Number of comms (any status).
    pub fn comm_count(&self) -> usize {
        self.comms().by_id.len()
    }

    /// Comm setups running and queued (for tests and logs).
    pub fn comm_setups(&self) -> (usize, usize) {
        let t = self.comms();
        (t.running, t.queue.len())
    }

    /// The comm that reserves `cluster_id`, if any.
    pub fn comm_of(&self, cluster_id: u64) -> Option<Arc<Comm>> {
        self.comms().of_cluster(cluster_id).cloned()
    }

    /// Runs `first`'s setup, then queued ones, until the queue is empty.
    fn comm_runner(&self, first: Arc<Comm>) {
        let mut next = Some(first);
        while let Some(c) = next {
            if !c.is_closed() {
                self.comm_setup(&c);
            }
            let mut t = self.comms();
            next = t.queue.pop_front();
            if next.is_none() {
                t.running -= 1;
            }
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
                match self.dial(m.cluster_id, m.addr, None, attempt, Some(c)) {
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
            if hccl_done && c.try_complete(self.acl()) {
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
            None if t.by_id.values().any(|c| c.name() == name) => bail!(
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
        self.insert_link(link.clone())?;
        st.links.insert(peer, link.clone());
        if dialed {
            st.ready.insert(peer);
        }
        drop(st);
        c.notify();
        Ok(())
    }

    /// An accepted comm link got the dialer's reverse connection: the pair
    /// is complete on this side.
    pub(crate) fn comm_peer_ready(&self, link: &Arc<Link>) {
        let Some(c) = self.comms().by_id.get(&link.comm_id).cloned() else {
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

/// Drops a comm's communicator with the device bound on this thread (the
/// last reference destroys it).
fn drop_comm(acl: Option<&Arc<AclBackend>>, h: Arc<HcclComm>) {
    if let Some(acl) = acl {
        if let Err(e) = acl.context().bind_thread() {
            log_warn!("destroying a comm's HCCL communicator: {}", e.message);
        }
    }
    drop(h);
}

fn unknown_comm(comm_id: u64) -> Error {
    err!(
        NotYetLink,
        "no comm with id {comm_id} on this instance (never linked, or already unlinked)"
    )
}

#[cfg(test)]
mod tests;
