//! The instance: a role label and a cluster id, plus the session that exists
//! between `init` and `finalize`. Calls before init or after finalize fail with
//! `LLM_FAILED` ("not initialized"); init on an initialised instance is a
//! no-op success; init after finalize starts a fresh session.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::datadist::comm::{CommSpec, MemStatus};
use crate::datadist::options::{self, Config, Options};
use crate::datadist::session::Session;
use crate::status::{Error, Result, Status};
use crate::{bail, err, log_debug, log_info};

/// Most clusters in one link_clusters/unlink_clusters call.
pub const MAX_CLUSTERS_PER_CALL: usize = 16;

/// `PROMPT`(1), `DECODER`(2), `MIX`(3).
pub fn check_role(role: u32) -> Result<()> {
    if (1..=3).contains(&role) {
        Ok(())
    } else {
        bail!(
            ParamInvalid,
            "role {role} is not PROMPT (1), DECODER (2) or MIX (3)"
        )
    }
}

/// An IP endpoint of a cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpInfo {
    /// IPv4 or IPv6 address, as text.
    pub ip: String,
    /// TCP port (0: the local side picks one).
    pub port: u16,
}

/// One peer of a link_clusters/unlink_clusters call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The peer cluster.
    pub remote_cluster_id: u64,
    /// This side's endpoints to dial from (the first is used; may be empty).
    pub local_ip_infos: Vec<IpInfo>,
    /// The peer's listening endpoints (the first is dialled).
    pub remote_ip_infos: Vec<IpInfo>,
}

/// An LLMDataDist instance.
pub struct Instance {
    cluster_id: u64,
    role: Arc<AtomicU32>,
    session: RwLock<Option<Arc<Session>>>,
    /// Next rank-table comm id; kept across init/finalize so ids are never reused.
    comm_ids: Arc<AtomicU64>,
    /// Serialises init/finalize/switch_role.
    lifecycle: Mutex<()>,
}

impl Instance {
    /// Creates an instance (no I/O).
    pub fn new(role: u32, cluster_id: u64) -> Result<Instance> {
        check_role(role)?;
        Ok(Instance {
            cluster_id,
            role: Arc::new(AtomicU32::new(role)),
            session: RwLock::new(None),
            comm_ids: Arc::new(AtomicU64::new(1)),
            lifecycle: Mutex::new(()),
        })
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// The current role.
    pub fn role(&self) -> u32 {
        self.role.load(Ordering::Relaxed)
    }

    /// The live session, or `LLM_FAILED` "not initialized".
    pub fn session(&self) -> Result<Arc<Session>> {
        self.session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                err!(
                    Failed,
                    "instance of cluster {} is not initialized",
                    self.cluster_id
                )
            })
    }

    /// True between init and finalize.
    pub fn is_initialized(&self) -> bool {
        self.session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Validates options and starts the session.
    pub fn init(&self, opts: &Options) -> Result<()> {
        let _g = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_initialized() {
            return Ok(());
        }
        let config = Config::parse(opts)?;
        if let Some(v) = opts.get("llm.Role") {
            let mine = options::role_name(self.role());
            if v != mine {
                bail!(
                    ParamInvalid,
                    "option llm.Role={v} disagrees with the instance's role {mine}"
                );
            }
        }
        let backend = crate::backend::select(&config.device())?;
        let s = Session::start(
            self.cluster_id,
            self.role.clone(),
            self.comm_ids.clone(),
            config,
            backend,
        )?;
        *self.session.write().unwrap_or_else(|p| p.into_inner()) = Some(s);
        Ok(())
    }

    /// Tears everything down; idempotent.
    pub fn finalize(&self) {
        let _g = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let s = self
            .session
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(s) = s {
            s.shutdown();
        }
    }

    /// Changes the role label and the listening endpoint (spec §4.1).
    pub fn switch_role(&self, role: u32, opts: &Options) -> Result<()> {
        check_role(role)?;
        let _g = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.session()?;
        // As the reference's SetRole: only the listen endpoint is read; any
        // other key is ignored (CANN's Python switch_role passes the whole
        // generated option map), unless llmdd.StrictOptions=1 was given at init.
        for k in opts.keys() {
            if k != "llm.ListenIpInfo" && k != "llm.listenIpInfo" {
                if s.config.strict_options {
                    bail!(
                        ParamInvalid,
                        "switch_role option {k} is not supported (only llm.ListenIpInfo; rejected because llmdd.StrictOptions=1)"
                    );
                }
                log_debug!("switch_role: ignoring option {k} (only llm.ListenIpInfo is used)");
            }
        }
        let listen = options::listen_endpoint(opts)?;
        if s.link_count() > 0 {
            bail!(
                ExistLink,
                "switch_role needs all links unlinked first ({} remain)",
                s.link_count()
            );
        }
        if s.comm_count() > 0 {
            bail!(
                ExistLink,
                "switch_role needs every rank-table comm unlinked first ({} remain)",
                s.comm_count()
            );
        }
        if s.config.hixl && listen != s.config.listen {
            bail!(
                FeatureNotEnabled,
                "with llm.TransferBackend=hixl the listen endpoint cannot change"
            );
        }
        match (listen, s.listen_addr()) {
            (Some(new), Some(cur))
                if new.port() == cur.port()
                    && (new.ip() == cur.ip() || new.ip().is_unspecified()) => {}
            (Some(new), _) => {
                s.stop_listening();
                s.listen(new)?;
            }
            (None, Some(_)) => s.stop_listening(),
            (None, None) => {}
        }
        self.role.store(role, Ordering::Relaxed);
        Ok(())
    }

    fn check_cluster_list(clusters: &[ClusterInfo], timeout_ms: i32) -> Result<()> {
        if clusters.is_empty() {
            bail!(ParamInvalid, "clusters must not be empty");
        }
        if clusters.len() > MAX_CLUSTERS_PER_CALL {
            bail!(
                ClusterNumExceedLimit,
                "{} clusters given; at most {MAX_CLUSTERS_PER_CALL} per call",
                clusters.len()
            );
        }
        if timeout_ms <= 0 {
            bail!(ParamInvalid, "timeout must be > 0 ms (got {timeout_ms})");
        }
        Ok(())
    }

    fn remote_endpoint(c: &ClusterInfo) -> Result<std::net::SocketAddr> {
        if c.remote_ip_infos.len() != 1 {
            bail!(
                ParamInvalid,
                "cluster {} needs exactly 1 remote ip info (got {})",
                c.remote_cluster_id,
                c.remote_ip_infos.len()
            );
        }
        if c.local_ip_infos.len() > 1 {
            bail!(
                ParamInvalid,
                "cluster {} has more than 1 local ip info",
                c.remote_cluster_id
            );
        }
        for l in &c.local_ip_infos {
            options::parse_ip("local ip info", &l.ip)?;
        }
        let r = &c.remote_ip_infos[0];
        let ip = options::parse_ip("remote ip info", &r.ip)?;
        if r.port == 0 {
            bail!(
                ParamInvalid,
                "remote ip info of cluster {} has port 0",
                c.remote_cluster_id
            );
        }
        Ok(std::net::SocketAddr::new(ip, r.port))
    }

    /// Links to each cluster (in parallel); any initialised instance may dial,
    /// listening or not. The outer error is an argument error before any
    /// linking; otherwise one result per cluster.
    pub fn link_clusters(
        &self,
        clusters: &[ClusterInfo],
        timeout_ms: i32,
    ) -> Result<Vec<Result<()>>> {
        Self::check_cluster_list(clusters, timeout_ms)?;
        let s = self.session()?;
        let timeout = Duration::from_millis(timeout_ms as u64);
        let one = |c: &ClusterInfo| -> Result<()> {
            let addr = Self::remote_endpoint(c)?;
            if clusters
                .iter()
                .filter(|x| x.remote_cluster_id == c.remote_cluster_id)
                .count()
                > 1
            {
                bail!(
                    ParamInvalid,
                    "cluster {} appears more than once in the list",
                    c.remote_cluster_id
                );
            }
            let local_ip = c
                .local_ip_infos
                .first()
                .map(|l| options::parse_ip("local ip info", &l.ip))
                .transpose()?;
            let _dialing = s.dialing(c.remote_cluster_id);
            let r = connect_with_retries(&s, c.remote_cluster_id, addr, local_ip, timeout);
            s.dial_done(c.remote_cluster_id, &r);
            r
        };
        Ok(parallel(clusters, one))
    }

    /// Unlinks each cluster; `force` drops only the local side. A non-forced
    /// unlink is made by the side that dialled the link.
    pub fn unlink_clusters(
        &self,
        clusters: &[ClusterInfo],
        timeout_ms: i32,
        force: bool,
    ) -> Result<Vec<Result<()>>> {
        Self::check_cluster_list(clusters, timeout_ms)?;
        let s = self.session()?;
        let timeout = Duration::from_millis(timeout_ms as u64);
        let one = |c: &ClusterInfo| -> Result<()> {
            s.forget_attempt(c.remote_cluster_id);
            if let Some(comm) = s.comm_of(c.remote_cluster_id) {
                bail!(
                    ParamInvalid,
                    "cluster {} is linked through rank-table comm {} (\"{}\"); use unlink(comm_id)",
                    c.remote_cluster_id,
                    comm.id,
                    comm.name()
                );
            }
            if s.config.hixl {
                // As the reference's hixl engine: the cluster id names the
                // link this side made (no ip info needed, `force` has no
                // effect); a cluster this side did not link is a success.
                if s.link_dir(c.remote_cluster_id, true).is_none() {
                    log_info!(
                        "unlink_clusters: no link this instance made to cluster {}",
                        c.remote_cluster_id
                    );
                    return Ok(());
                }
                s.disconnect(c.remote_cluster_id, timeout)
            } else if force {
                s.drop_link(c.remote_cluster_id, timeout);
                Ok(())
            } else {
                Self::remote_endpoint(c)?;
                let id = c.remote_cluster_id;
                if s.link_dir(id, true).is_none() && s.link_dir(id, false).is_some() {
                    bail!(
                        ParamInvalid,
                        "cluster {} dialled this instance; a non-forced unlink is made by the side that called link_clusters (or force-unlink both ends)",
                        c.remote_cluster_id
                    );
                }
                s.disconnect(c.remote_cluster_id, timeout)
            }
        };
        Ok(parallel(clusters, one))
    }

    /// The session, unless the backend has no rank-table linking.
    fn comm_session(&self) -> Result<Arc<Session>> {
        let s = self.session()?;
        if s.config.hixl {
            bail!(
                FeatureNotEnabled,
                "link/unlink/query_register_mem_status are not available with llm.TransferBackend=hixl"
            );
        }
        Ok(s)
    }

    /// `link(comm_name, cluster_rank_info, rank_table)`: validates, then
    /// returns the new comm id while the links are set up in the background.
    pub fn link(&self, comm_name: &str, ranks: &[(u64, u32)], rank_table: &str) -> Result<u64> {
        // Serialised with switch_role, which may move the listener a comm reuses.
        let _g = self.lifecycle.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.comm_session()?;
        let spec = CommSpec::validate(
            comm_name,
            ranks,
            self.cluster_id,
            rank_table,
            s.caps().hccl_links,
            s.config.rank_table_default_port,
        )?;
        s.comm_ops().comm_link(spec)
    }

    /// `unlink(comm_id)`.
    pub fn unlink(&self, comm_id: u64) -> Result<()> {
        self.comm_session()?.comm_ops().comm_unlink(comm_id)
    }

    /// `query_register_mem_status(comm_id)`: the status and, when FAILED, why.
    pub fn query_register_mem_status(&self, comm_id: u64) -> Result<(MemStatus, String)> {
        self.comm_session()?.comm_ops().comm_status(comm_id)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.finalize();
    }
}

/// Pause between two link attempts (`llm.LinkRetryCount` > 1).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Links to one cluster, making up to `llm.LinkRetryCount` attempts inside
/// the call's timeout. Only connection-level failures (`LLM_LINK_FAILED`) are
/// retried; an answer such as ALREADY_LINK or PARAM_INVALID is final.
fn connect_with_retries(
    s: &Session,
    cluster: u64,
    addr: std::net::SocketAddr,
    local_ip: Option<std::net::IpAddr>,
    timeout: Duration,
) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    let mut attempt = 1;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let r = s.connect(cluster, addr, local_ip, left.max(Duration::from_millis(1)));
        match r {
            Err(e)
                if e.status == Status::LinkFailed
                    && attempt < s.config.link_retry_count
                    && left > RETRY_PAUSE =>
            {
                crate::log_info!(
                    "link to cluster {cluster} failed (attempt {attempt}): {}; retrying",
                    e.message
                );
                std::thread::sleep(RETRY_PAUSE);
                attempt += 1;
            }
            r => return r,
        }
    }
}

fn parallel(
    clusters: &[ClusterInfo],
    f: impl Fn(&ClusterInfo) -> Result<()> + Sync,
) -> Vec<Result<()>> {
    if clusters.len() == 1 {
        return vec![f(&clusters[0])];
    }
    std::thread::scope(|sc| {
        let hs: Vec<_> = clusters.iter().map(|c| sc.spawn(|| f(c))).collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(Error::new(Status::Failed, "link thread panicked")))
            })
            .collect()
    })
}
