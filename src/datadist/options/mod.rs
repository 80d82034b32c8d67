//! Parsing and validation of `init` / `switch_role` options (spec §3).
//!
//! Keys are case-sensitive. Both documented spellings of the listen endpoint
//! (`llm.ListenIpInfo`, `llm.listenIpInfo`) and of the device id (`llm.DeviceId`,
//! `ge.exec.deviceId`) are accepted; two spellings that disagree are rejected.
//! Unknown `llm.` keys are logged (warn) and ignored, as the reference ignores
//! them, so a configuration written for a newer CANN still initialises;
//! `llmdd.StrictOptions=1` rejects them instead. Unknown `llmdd.` keys are
//! always rejected (llmdd's own namespace: a typo must not silently change
//! behaviour). Other namespaces (`ge.*`, …) are ignored, as the reference
//! passes them to other components.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::status::Result;
use crate::transport::auth::{LinkKey, MIN_SECRET_LEN};
use crate::{bail, err};

use crate::device::config::DeviceConfig;
pub use crate::device::config::{AclOptions, BackendChoice, PoolConfig};

pub(crate) mod schema;
use schema::{parse_u64, spec, uint_of};
pub use schema::{Options, DEFAULT_HCCL_PREPARE_TIMEOUT, DEFAULT_PEER_POOL_MAX};

/// Validated instance configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `llm.DeviceId`: the device this instance uses (acl backend).
    pub device_id: i32,
    /// `llm.ListenIpInfo`: the endpoint to listen on, if this instance serves.
    pub listen: Option<SocketAddr>,
    /// `llm.SyncKvCacheWaitTime`: the bound of one synchronous transfer.
    pub sync_kv_timeout: Duration,
    /// `llm.EnableRemoteCacheAccessible`: peers read and write caches by key from a fetched table.
    pub remote_cache_accessible: bool,
    /// `llm.LocalCommRes`: this instance's device resources as JSON (acl backend).
    pub local_comm_res: Option<String>,
    /// `llm.TransferBackend = "hixl"`: hixl constraints apply.
    pub hixl: bool,
    /// `llmdd.StrictOptions=1`: unknown `llm.` keys are errors (at init and
    /// in switch_role) instead of being ignored.
    pub strict_options: bool,
    /// `llm.MemPoolConfig`: the device pool, if configured.
    pub device_pool: Option<PoolConfig>,
    /// `llm.HostMemPoolConfig`: the host pool, if configured.
    pub host_pool: Option<PoolConfig>,
    /// `llm.RdmaTrafficClass` (validated, passed to HCCL).
    pub rdma_traffic_class: u32,
    /// `llm.RdmaServiceLevel` (validated, passed to HCCL).
    pub rdma_service_level: u32,
    /// `llm.LinkTotalTime`: the link budget in seconds (0: the default).
    pub link_total_time_s: u32,
    /// `llm.LinkRetryCount`: attempts per link_clusters peer.
    pub link_retry_count: u32,
    /// `llmdd.Backend`: auto or a registered backend's name.
    pub backend: BackendChoice,
    /// `llmdd.AscendLibDir`: where to look for the Ascend libraries first.
    pub ascend_lib_dir: Option<String>,
    /// Same-host one-sided transfers allowed (`llmdd.SameHost`, default on).
    pub same_host: bool,
    /// TCP connections a transfer may stripe over (`llmdd.DataConnections`).
    pub data_connections: u32,
    /// Links allowed per instance (`llmdd.MaxLinks`, default 512).
    pub max_links: u32,
    /// Spin before sleeping when waiting for a peer (`llmdd.BusyPollUs`).
    pub busy_poll: Duration,
    /// Port of a rank-table member whose entry has none
    /// (`llmdd.RankTableDefaultPort`, default 16666).
    pub rank_table_default_port: u16,
    /// Tensor addresses registered at once (`llmdd.MaxRegisteredAddrs`).
    pub max_registered_addrs: u32,
    // -- proven identity, access and link authentication (issue 9) --
    /// Shared link secret (`llmdd.LinkSecret` / `llmdd.LinkSecretFile`):
    /// links are mutually authenticated when set.
    pub link_key: Option<LinkKey>,
    /// Largest peer pool mapped (`llmdd.PeerPoolMaxBytes`).
    pub peer_pool_max: u64,
    /// Connection limits and timeouts (`llmdd.MaxConnsPerLink`, …).
    pub net: NetLimits,
    /// Options of the acl backend only.
    pub acl: AclOptions,
}

/// What one peer may cost this instance on the network, and how long a stalled
/// or dead peer may hold a connection (docs/security.md, "Network limits and
/// timeouts").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetLimits {
    /// Connections one link may have on the server (`llmdd.MaxConnsPerLink`).
    pub max_conns_per_link: u32,
    /// Connections one peer IP address may have open to the listener, linked
    /// or not (`llmdd.MaxConnsPerPeer`).
    pub max_conns_per_peer: u32,
    /// Serving side: a frame, once begun, must arrive within this, and each
    /// served request's I/O must finish within it (`llmdd.IoTimeoutMs`).
    pub io_timeout: Duration,
    /// A peer silent for this long (no data, no keepalive answer) is dead and
    /// its connection errors (`llmdd.DeadPeerTimeoutMs`).
    pub dead_peer_timeout: Duration,
}

impl Default for NetLimits {
    fn default() -> Self {
        let d = |key| spec(key).default.unwrap_or_default();
        NetLimits {
            max_conns_per_link: d("llmdd.MaxConnsPerLink") as u32,
            max_conns_per_peer: d("llmdd.MaxConnsPerPeer") as u32,
            io_timeout: Duration::from_millis(d("llmdd.IoTimeoutMs")),
            dead_peer_timeout: Duration::from_millis(d("llmdd.DeadPeerTimeoutMs")),
        }
    }
}

impl NetLimits {
    /// Reads the `llmdd.` network limit options (defaults for absent ones).
    fn parse(opts: &Options) -> Result<NetLimits> {
        Ok(NetLimits {
            max_conns_per_link: uint_of(opts, "llmdd.MaxConnsPerLink")? as u32,
            max_conns_per_peer: uint_of(opts, "llmdd.MaxConnsPerPeer")? as u32,
            io_timeout: Duration::from_millis(uint_of(opts, "llmdd.IoTimeoutMs")?),
            dead_peer_timeout: Duration::from_millis(uint_of(opts, "llmdd.DeadPeerTimeoutMs")?),
        })
    }
}

/// Reads the acl backend's options (`llmdd.HccnConf`, `llmdd.HcclPrepareTimeout`).
fn parse_acl_options(opts: &Options) -> Result<AclOptions> {
    let hccn_conf = match opts.get("llmdd.HccnConf") {
        Some(v) if v.trim().is_empty() => {
            bail!(ParamInvalid, "option llmdd.HccnConf must name a file")
        }
        v => v.cloned(),
    };
    let prepare_timeout = Duration::from_millis(uint_of(opts, "llmdd.HcclPrepareTimeout")?);
    Ok(AclOptions {
        hccn_conf,
        prepare_timeout,
    })
}

/// Builds an option map from key/value pairs; a key given twice is rejected.
pub fn collect<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Options> {
    let mut map = Options::new();
    for (k, v) in pairs {
        if k.is_empty() {
            bail!(ParamInvalid, "option key must not be empty");
        }
        if map.insert(k.to_string(), v.to_string()).is_some() {
            bail!(ParamInvalid, "option {k} is given more than once");
        }
    }
    Ok(map)
}

/// Unknown `llm.` keys: ignored with a warning, or rejected when `strict`.
/// Unknown `llmdd.` keys: rejected.
fn check_known(opts: &Options, strict: bool) -> Result<()> {
    for k in opts.keys() {
        let known = schema::is_known(k);
        if !known && k.starts_with("llmdd.") {
            bail!(ParamInvalid, "unknown option key {k}");
        }
        if !known && k.starts_with("llm.") {
            if strict {
                bail!(
                    ParamInvalid,
                    "unknown option key {k} (rejected because llmdd.StrictOptions=1)"
                );
            }
            crate::log_warn!("ignoring unknown option {k} (not used by llmdd)");
        }
        if k == "ge.flowGraphMemMaxSize" {
            let v = &opts[k];
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                bail!(
                    ParamInvalid,
                    "option ge.flowGraphMemMaxSize must be a digit string (got {v:?})"
                );
            }
        }
    }
    Ok(())
}

/// The `llm.Role` spelling of a role (`PROMPT` 1, `DECODER` 2, `MIX` 3).
pub fn role_name(role: u32) -> &'static str {
    match role {
        1 => "Prompt",
        2 => "Decoder",
        _ => "Mix",
    }
}

/// Validates the format of accepted-but-unused options, so a malformed value
/// is reported even though it changes nothing on this implementation.
fn check_ignored(opts: &Options) -> Result<()> {
    for key in ["llm.BufPoolCfg", "llm.GlobalResourceConfig"] {
        if let Some(v) = opts.get(key) {
            let j: serde_json::Value = serde_json::from_str(v)
                .map_err(|e| err!(ParamInvalid, "option {key} is not valid JSON: {e}"))?;
            if !j.is_object() {
                bail!(ParamInvalid, "option {key} must be a JSON object");
            }
        }
    }
    if let Some(v) = opts.get("llm.EnableSwitchRole") {
        parse_flag("llm.EnableSwitchRole", v)?;
    }
    if let Some(v) = opts.get("llm.Role") {
        if !spec("llm.Role").allows(v) {
            bail!(
                ParamInvalid,
                "option llm.Role must be Prompt, Decoder or Mix (got {v:?})"
            );
        }
    }
    if let Some(v) = opts.get("llm.MemoryUtilization") {
        match v.trim().parse::<f64>() {
            Ok(x) if x > 0.0 && x <= 1.0 => {}
            _ => bail!(
                ParamInvalid,
                "option llm.MemoryUtilization must be a number in (0, 1] (got {v:?})"
            ),
        }
    }
    if let Some(v) = opts.get("llm.OutputMaxSize") {
        parse_u64("llm.OutputMaxSize", v)?;
    }
    if let Some(v) = opts.get("llm.ListenPort") {
        spec("llm.ListenPort").parse_uint(v)?;
    }
    if let Some(v) = opts.get("llm.ListenIp") {
        parse_ip("option llm.ListenIp", v)?;
    }
    Ok(())
}

/// Picks one of two spellings of the same setting; both present and different is an error.
fn either<'a>(opts: &'a Options, a: &str, b: &str) -> Result<Option<&'a str>> {
    match (opts.get(a), opts.get(b)) {
        (Some(x), Some(y)) if x != y => {
            bail!(ParamInvalid, "options {a}={x:?} and {b}={y:?} disagree")
        }
        (Some(x), _) | (None, Some(x)) => Ok(Some(x.as_str())),
        (None, None) => Ok(None),
    }
}

fn parse_flag(key: &str, v: &str) -> Result<bool> {
    match v {
        "1" => Ok(true),
        "0" => Ok(false),
        _ => bail!(
            ParamInvalid,
            "option {key} must be \"0\" or \"1\" (got {v:?})"
        ),
    }
}

/// Parses `"ip:port"` or `"[v6]:port"`; port must be non-zero for a listen endpoint.
pub fn parse_endpoint(what: &str, v: &str) -> Result<SocketAddr> {
    let addr: SocketAddr = v.trim().parse().map_err(|_| {
        err!(
            ParamInvalid,
            "{what} must be \"ip:port\" or \"[ipv6]:port\" (got {v:?})"
        )
    })?;
    if addr.port() == 0 {
        bail!(ParamInvalid, "{what} needs a port in 1..=65535 (got {v:?})");
    }
    Ok(addr)
}

/// Parses an IP literal (IPv4 or IPv6, brackets allowed around v6).
pub fn parse_ip(what: &str, v: &str) -> Result<IpAddr> {
    let t = v.trim().trim_start_matches('[').trim_end_matches(']');
    t.parse::<IpAddr>().map_err(|_| {
        err!(
            ParamInvalid,
            "{what} is not an IPv4 or IPv6 literal (got {v:?})"
        )
    })
}

fn parse_pool(key: &str, v: &str) -> Result<PoolConfig> {
    let json: serde_json::Value = serde_json::from_str(v)
        .map_err(|e| err!(ParamInvalid, "option {key} is not valid JSON: {e}"))?;
    let obj = json
        .as_object()
        .ok_or_else(|| err!(ParamInvalid, "option {key} must be a JSON object"))?;
    for k in obj.keys() {
        if k != "memory_size" && k != "page_shift" {
            bail!(ParamInvalid, "option {key} has unknown field {k:?}");
        }
    }
    let memory_size = obj
        .get("memory_size")
        .and_then(|x| x.as_u64())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            err!(
                ParamInvalid,
                "option {key}.memory_size must be an integer > 0"
            )
        })?;
    let page_shift = match obj.get("page_shift") {
        None => 16,
        Some(x) => x
            .as_u64()
            .filter(|n| (10..=30).contains(n))
            .ok_or_else(|| err!(ParamInvalid, "option {key}.page_shift must be in [10, 30]"))?
            as u32,
    };
    if (memory_size >> page_shift) >= u32::MAX as u64 {
        bail!(
            ParamInvalid,
            "option {key}: memory_size >> page_shift must be < 2^32-1"
        );
    }
    Ok(PoolConfig {
        memory_size,
        page_shift,
    })
}

/// Listen endpoint from an option map (either spelling); `None` if absent.
pub fn listen_endpoint(opts: &Options) -> Result<Option<SocketAddr>> {
    match either(opts, "llm.ListenIpInfo", "llm.listenIpInfo")? {
        Some(v) => Ok(Some(parse_endpoint("listen_ip_info", v)?)),
        None => Ok(None),
    }
}

impl Config {
    /// Validates `init` options into a configuration.
    pub fn parse(opts: &Options) -> Result<Config> {
        let strict = match opts.get("llmdd.StrictOptions") {
            Some(v) => parse_flag("llmdd.StrictOptions", v)?,
            None => false,
        };
        check_known(opts, strict)?;
        check_ignored(opts)?;
        let dev = either(opts, "llm.DeviceId", "ge.exec.deviceId")?.ok_or_else(|| {
            err!(
                ParamInvalid,
                "option llm.DeviceId (or ge.exec.deviceId) is required"
            )
        })?;
        let ids: Vec<&str> = dev.split(';').filter(|s| !s.is_empty()).collect();
        if ids.len() != 1 {
            bail!(
                ParamInvalid,
                "exactly one device id is supported (got {dev:?})"
            );
        }
        let device_id = spec("llm.DeviceId").parse_uint(ids[0])? as i32;

        let listen = listen_endpoint(opts)?;
        let sync_ms = uint_of(opts, "llm.SyncKvCacheWaitTime")?;
        let local_comm_res = opts.get("llm.LocalCommRes").cloned();
        if let Some(res) = &local_comm_res {
            if !res.trim().is_empty() {
                let v: serde_json::Value = serde_json::from_str(res).map_err(|e| {
                    err!(
                        ParamInvalid,
                        "option llm.LocalCommRes is not valid JSON: {e}"
                    )
                })?;
                let ver = v.get("version").and_then(|x| x.as_str()).unwrap_or("");
                if !["1.0", "1.2", "1.3"].contains(&ver) {
                    bail!(ParamInvalid, "option llm.LocalCommRes.version must be \"1.0\", \"1.2\" or \"1.3\" (got {ver:?})");
                }
            }
        }
        // Cache-manager mode is the only engine llmdd has, and C++'s
        // `Initialize` always runs it: absent means on. Only an explicit "0"
        // (Python's v1 engine) is refused.
        let cache_manager = match opts.get("llm.EnableCacheManager") {
            Some(v) => parse_flag("llm.EnableCacheManager", v)?,
            None => true,
        };
        if !cache_manager {
            if local_comm_res.is_some() {
                bail!(
                    ParamInvalid,
                    "llm.EnableCacheManager=0 cannot be combined with llm.LocalCommRes"
                );
            }
            bail!(
                FeatureNotEnabled,
                "llm.EnableCacheManager=0 selects the v1 engine, which llmdd does not implement (omit the option or set it to 1)"
            );
        }
        let hixl = match opts.get("llm.TransferBackend") {
            None => false,
            Some(v) if spec("llm.TransferBackend").allows(v) => true,
            Some(v) => bail!(
                ParamInvalid,
                "option llm.TransferBackend supports only \"hixl\" (got {v:?})"
            ),
        };
        let implied_ra = local_comm_res.is_some() || hixl;
        let remote_cache_accessible = match opts.get("llm.EnableRemoteCacheAccessible") {
            Some(v) => {
                let on = parse_flag("llm.EnableRemoteCacheAccessible", v)?;
                if !on && implied_ra {
                    bail!(ParamInvalid, "llm.EnableRemoteCacheAccessible=0 is unsupported with llm.LocalCommRes or hixl");
                }
                on
            }
            None => implied_ra,
        };
        if hixl && listen.is_none() {
            bail!(
                ParamInvalid,
                "llm.TransferBackend=hixl requires llm.ListenIpInfo"
            );
        }
        let rdma_traffic_class = uint_of(opts, "llm.RdmaTrafficClass")? as u32;
        let rdma_service_level = uint_of(opts, "llm.RdmaServiceLevel")? as u32;
        let link_total_time_s = uint_of(opts, "llm.LinkTotalTime")? as u32;
        let link_retry_count = uint_of(opts, "llm.LinkRetryCount")? as u32;
        let device_pool = opts
            .get("llm.MemPoolConfig")
            .map(|v| parse_pool("llm.MemPoolConfig", v))
            .transpose()?;
        let host_pool = opts
            .get("llm.HostMemPoolConfig")
            .map(|v| parse_pool("llm.HostMemPoolConfig", v))
            .transpose()?;
        if let Some(p) = host_pool {
            if p.memory_size > 20 << 30 {
                bail!(
                    ParamInvalid,
                    "option llm.HostMemPoolConfig.memory_size exceeds 20 GB"
                );
            }
        }
        let backend = match opts.get("llmdd.Backend").map(String::as_str) {
            None | Some("auto") => BackendChoice::Auto,
            Some(v) => match crate::backend::find(v) {
                Some(f) => BackendChoice::Named(f.name()),
                None => bail!(
                    ParamInvalid,
                    "option llmdd.Backend must be {} (got {v:?})",
                    crate::backend::choices()
                ),
            },
        };
        let same_host = match opts.get("llmdd.SameHost").map(String::as_str) {
            None | Some("auto") | Some("1") => true,
            Some("off") | Some("0") => false,
            Some(v) => bail!(
                ParamInvalid,
                "option llmdd.SameHost must be auto or off (got {v:?})"
            ),
        };
        let data_connections = uint_of(opts, "llmdd.DataConnections")? as u32;
        let max_links = uint_of(opts, "llmdd.MaxLinks")? as u32;
        let busy_poll = Duration::from_micros(uint_of(opts, "llmdd.BusyPollUs")?);
        let rank_table_default_port = uint_of(opts, "llmdd.RankTableDefaultPort")? as u16;
        let max_registered_addrs = uint_of(opts, "llmdd.MaxRegisteredAddrs")? as u32;
        let link_key = link_key(opts)?;
        let peer_pool_max = uint_of(opts, "llmdd.PeerPoolMaxBytes")?;
        Ok(Config {
            device_id,
            listen,
            sync_kv_timeout: Duration::from_millis(sync_ms),
            remote_cache_accessible,
            local_comm_res,
            hixl,
            strict_options: strict,
            device_pool,
            host_pool,
            rdma_traffic_class,
            rdma_service_level,
            link_total_time_s,
            link_retry_count,
            backend,
            ascend_lib_dir: opts.get("llmdd.AscendLibDir").cloned(),
            same_host,
            data_connections,
            max_links,
            busy_poll,
            rank_table_default_port,
            max_registered_addrs,
            link_key,
            peer_pool_max,
            net: NetLimits::parse(opts)?,
            acl: parse_acl_options(opts)?,
        })
    }

    /// The device layer's part of the configuration.
    pub fn device(&self) -> DeviceConfig {
        DeviceConfig {
            backend: self.backend,
            device_id: self.device_id,
            ascend_lib_dir: self.ascend_lib_dir.clone(),
            local_comm_res: self.local_comm_res.clone(),
            rdma_traffic_class: self.rdma_traffic_class,
            rdma_service_level: self.rdma_service_level,
            acl: self.acl.clone(),
        }
    }

    /// The settings every TCP connection of the instance gets.
    pub fn conn_opts(&self) -> crate::transport::tcp::ConnOpts {
        crate::transport::tcp::ConnOpts {
            spin: self.busy_poll,
            dead_peer: self.net.dead_peer_timeout,
        }
    }
}

/// The link secret of `llmdd.LinkSecret` (the value) or `llmdd.LinkSecretFile`
/// (a file holding it; one trailing newline is dropped). Messages never
/// include the secret.
fn link_key(opts: &Options) -> Result<Option<LinkKey>> {
    let secret: Vec<u8> = match (
        opts.get("llmdd.LinkSecret"),
        opts.get("llmdd.LinkSecretFile"),
    ) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => bail!(
            ParamInvalid,
            "options llmdd.LinkSecret and llmdd.LinkSecretFile are exclusive: give one"
        ),
        (Some(v), None) => v.as_bytes().to_vec(),
        (None, Some(path)) => {
            let mut b = std::fs::read(path).map_err(|e| {
                err!(
                    ParamInvalid,
                    "option llmdd.LinkSecretFile: cannot read {path:?}: {e}"
                )
            })?;
            if b.ends_with(b"\n") {
                b.pop();
                if b.ends_with(b"\r") {
                    b.pop();
                }
            }
            warn_if_readable_by_others(path);
            b
        }
    };
    LinkKey::new(&secret).map(Some).ok_or_else(|| {
        err!(
            ParamInvalid,
            "the link secret (llmdd.LinkSecret / llmdd.LinkSecretFile) must be at least {MIN_SECRET_LEN} bytes (it is {}); use a random one",
            secret.len()
        )
    })
}

/// A secret file others can read is worth a warning (not an error: the
/// deployment decides).
fn warn_if_readable_by_others(path: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o044 != 0 {
            crate::log_warn!(
                "llmdd.LinkSecretFile {path:?} is readable by group or others (mode {:o})",
                m.permissions().mode() & 0o777
            );
        }
    }
}

#[cfg(test)]
mod tests;
