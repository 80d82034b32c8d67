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

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::status::Result;
use crate::transport::auth::{LinkKey, MIN_SECRET_LEN};
use crate::{bail, err};

/// Which engine moves the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// acl when the Ascend runtime loads, else host.
    Auto,
    /// Host memory, TCP and same-host one-sided copies.
    Host,
    /// The dlopen'd Ascend runtime (ACL + HCCL).
    Acl,
}

/// A memory pool configuration (`{"memory_size": N, "page_shift": S}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    pub memory_size: u64,
    pub page_shift: u32,
}

/// Validated instance configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub device_id: i32,
    pub listen: Option<SocketAddr>,
    pub sync_kv_timeout: Duration,
    pub remote_cache_accessible: bool,
    pub local_comm_res: Option<String>,
    /// `llm.TransferBackend = "hixl"`: hixl constraints apply.
    pub hixl: bool,
    /// `llmdd.StrictOptions=1`: unknown `llm.` keys are errors (at init and
    /// in switch_role) instead of being ignored.
    pub strict_options: bool,
    pub device_pool: Option<PoolConfig>,
    pub host_pool: Option<PoolConfig>,
    pub rdma_traffic_class: u32,
    pub rdma_service_level: u32,
    pub link_total_time_s: u32,
    pub link_retry_count: u32,
    pub backend: BackendChoice,
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
        NetLimits {
            max_conns_per_link: 32,
            max_conns_per_peer: 1024,
            io_timeout: Duration::from_secs(30),
            dead_peer_timeout: Duration::from_secs(10),
        }
    }
}

impl NetLimits {
    /// Reads the `llmdd.` network limit options (defaults for absent ones).
    fn parse(opts: &Options) -> Result<NetLimits> {
        let d = NetLimits::default();
        let get = |key: &str, lo: u64, hi: u64, default: u64| -> Result<u64> {
            opts.get(key)
                .map_or(Ok(default), |v| parse_ranged(key, v, lo, hi))
        };
        let ms = |d: Duration| d.as_millis() as u64;
        Ok(NetLimits {
            max_conns_per_link: get(
                "llmdd.MaxConnsPerLink",
                4,
                1024,
                d.max_conns_per_link.into(),
            )? as u32,
            max_conns_per_peer: get(
                "llmdd.MaxConnsPerPeer",
                1,
                1 << 20,
                d.max_conns_per_peer.into(),
            )? as u32,
            io_timeout: Duration::from_millis(get(
                "llmdd.IoTimeoutMs",
                100,
                3_600_000,
                ms(d.io_timeout),
            )?),
            dead_peer_timeout: Duration::from_millis(get(
                "llmdd.DeadPeerTimeoutMs",
                1000,
                3_600_000,
                ms(d.dead_peer_timeout),
            )?),
        })
    }
}

/// Options of the acl backend (`llmdd.HccnConf`, `llmdd.HcclPrepareTimeout`;
/// docs/options.md, docs/ascend.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclOptions {
    /// hccn.conf to read device NIC addresses from; `None`: `LLMDD_HCCN_CONF`,
    /// else `/etc/hccn.conf` (then `hccn_tool` as a fallback).
    pub hccn_conf: Option<String>,
    /// How long the listening side of a link waits in `HcclCommPrepare`
    /// (the dialing side waits for what is left of its link timeout).
    pub prepare_timeout: Duration,
}

/// Default of `llmdd.HcclPrepareTimeout`: HCCL's own connect timeout
/// (`HCCL_CONNECT_TIMEOUT`, at least 120 s).
pub const DEFAULT_HCCL_PREPARE_TIMEOUT: Duration = Duration::from_secs(120);

impl AclOptions {
    fn parse(opts: &Options) -> Result<AclOptions> {
        let hccn_conf = match opts.get("llmdd.HccnConf") {
            Some(v) if v.trim().is_empty() => {
                bail!(ParamInvalid, "option llmdd.HccnConf must name a file")
            }
            v => v.cloned(),
        };
        let prepare_timeout = match opts.get("llmdd.HcclPrepareTimeout") {
            Some(v) => Duration::from_millis(parse_ranged(
                "llmdd.HcclPrepareTimeout",
                v,
                1_000,
                3_600_000,
            )?),
            None => DEFAULT_HCCL_PREPARE_TIMEOUT,
        };
        Ok(AclOptions {
            hccn_conf,
            prepare_timeout,
        })
    }
}

/// Default of `llmdd.PeerPoolMaxBytes`: 64 GiB (above the 20 GB host pool
/// limit and typical device pools; a larger announcement is not mapped).
pub const DEFAULT_PEER_POOL_MAX: u64 = 64 << 30;

/// Known keys of the `llm.` namespace that are accepted and have no effect on
/// this implementation (v1-engine leftovers, or handled elsewhere). Those with
/// a documented value format are still validated by [`check_ignored`].
const IGNORED_LLM_KEYS: &[&str] = &[
    "llm.BufPoolCfg",
    "llm.EnableSwitchRole",
    "llm.deployResPath",
    "llm.ClusterInfo",
    "llm.OutputMaxSize",
    "llm.MemoryUtilization",
    "llm.Role",
    "llm.GlobalResourceConfig",
    "llm.ListenIp",
    "llm.ListenPort",
];

/// Keys this module interprets.
const KNOWN_KEYS: &[&str] = &[
    "llm.DeviceId",
    "ge.exec.deviceId",
    "llm.ListenIpInfo",
    "llm.listenIpInfo",
    "llm.SyncKvCacheWaitTime",
    "llm.EnableCacheManager",
    "llm.EnableRemoteCacheAccessible",
    "llm.LocalCommRes",
    "llm.TransferBackend",
    "llm.RdmaTrafficClass",
    "llm.RdmaServiceLevel",
    "llm.LinkTotalTime",
    "llm.LinkRetryCount",
    "llm.MemPoolConfig",
    "llm.HostMemPoolConfig",
    "llmdd.Backend",
    "llmdd.AscendLibDir",
    "llmdd.SameHost",
    "llmdd.DataConnections",
    "llmdd.MaxLinks",
    "llmdd.BusyPollUs",
    "llmdd.RankTableDefaultPort",
    "llmdd.MaxRegisteredAddrs",
    "llmdd.StrictOptions",
    // proven identity, access and link authentication (issue 9)
    "llmdd.LinkSecret",
    "llmdd.LinkSecretFile",
    "llmdd.PeerPoolMaxBytes",
    // Network limits and timeouts (NetLimits).
    "llmdd.MaxConnsPerLink",
    "llmdd.MaxConnsPerPeer",
    "llmdd.IoTimeoutMs",
    "llmdd.DeadPeerTimeoutMs",
    "llmdd.HccnConf",
    "llmdd.HcclPrepareTimeout",
];

/// Option map with duplicate detection.
pub type Options = BTreeMap<String, String>;

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
        let known = KNOWN_KEYS.contains(&k.as_str()) || IGNORED_LLM_KEYS.contains(&k.as_str());
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
        if !(1..=3).any(|r| role_name(r) == v) {
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
        parse_ranged("llm.ListenPort", v, 1, 65_535)?;
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

fn parse_u64(key: &str, v: &str) -> Result<u64> {
    let t = v.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        bail!(
            ParamInvalid,
            "option {key} must be a non-negative integer (got {v:?})"
        );
    }
    t.parse::<u64>()
        .map_err(|_| err!(ParamInvalid, "option {key} is out of range (got {v:?})"))
}

fn parse_ranged(key: &str, v: &str, lo: u64, hi: u64) -> Result<u64> {
    let n = parse_u64(key, v)?;
    if n < lo || n > hi {
        bail!(
            ParamInvalid,
            "option {key} must be in [{lo}, {hi}] (got {n})"
        );
    }
    Ok(n)
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
        let device_id = parse_ranged("llm.DeviceId", ids[0], 0, i32::MAX as u64)? as i32;

        let listen = listen_endpoint(opts)?;
        let sync_ms = match opts.get("llm.SyncKvCacheWaitTime") {
            Some(v) => parse_ranged("llm.SyncKvCacheWaitTime", v, 1, i32::MAX as u64)?,
            None => 1000,
        };
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
            Some(v) if v == "hixl" => true,
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
        let rdma_traffic_class = match opts.get("llm.RdmaTrafficClass") {
            Some(v) => {
                let n = parse_ranged("llm.RdmaTrafficClass", v, 0, 255)?;
                if n % 4 != 0 {
                    bail!(
                        ParamInvalid,
                        "option llm.RdmaTrafficClass must be a multiple of 4 (got {n})"
                    );
                }
                n as u32
            }
            None => 132,
        };
        let rdma_service_level = match opts.get("llm.RdmaServiceLevel") {
            Some(v) => parse_ranged("llm.RdmaServiceLevel", v, 0, 7)? as u32,
            None => 4,
        };
        let link_total_time_s = match opts.get("llm.LinkTotalTime") {
            Some(v) => parse_ranged("llm.LinkTotalTime", v, 0, u32::MAX as u64)? as u32,
            None => 0,
        };
        let link_retry_count = match opts.get("llm.LinkRetryCount") {
            Some(v) => parse_ranged("llm.LinkRetryCount", v, 1, 100)? as u32,
            None => 1,
        };
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
            Some("host") => BackendChoice::Host,
            Some("acl") => BackendChoice::Acl,
            Some(v) => bail!(
                ParamInvalid,
                "option llmdd.Backend must be auto, host or acl (got {v:?})"
            ),
        };
        let same_host = match opts.get("llmdd.SameHost").map(String::as_str) {
            None | Some("auto") | Some("1") => true,
            Some("off") | Some("0") => false,
            Some(v) => bail!(
                ParamInvalid,
                "option llmdd.SameHost must be auto or off (got {v:?})"
            ),
        };
        let data_connections = match opts.get("llmdd.DataConnections") {
            Some(v) => parse_ranged("llmdd.DataConnections", v, 1, 8)? as u32,
            None => 2,
        };
        let max_links = match opts.get("llmdd.MaxLinks") {
            Some(v) => parse_ranged("llmdd.MaxLinks", v, 1, 65_536)? as u32,
            None => 512,
        };
        let busy_poll = match opts.get("llmdd.BusyPollUs") {
            Some(v) => Duration::from_micros(parse_ranged("llmdd.BusyPollUs", v, 0, 100_000)?),
            None => Duration::from_micros(50),
        };
        let rank_table_default_port = match opts.get("llmdd.RankTableDefaultPort") {
            Some(v) => parse_ranged("llmdd.RankTableDefaultPort", v, 1, 65_535)? as u16,
            None => crate::datadist::rank_table::DEFAULT_DEVICE_PORT,
        };
        let max_registered_addrs = match opts.get("llmdd.MaxRegisteredAddrs") {
            Some(v) => parse_ranged(
                "llmdd.MaxRegisteredAddrs",
                v,
                1,
                crate::cache::registry::MAX_REGISTERED_ADDRS_CAP as u64,
            )? as u32,
            None => crate::cache::registry::DEFAULT_MAX_REGISTERED_ADDRS as u32,
        };
        let link_key = link_key(opts)?;
        let peer_pool_max = match opts.get("llmdd.PeerPoolMaxBytes") {
            Some(v) => parse_ranged("llmdd.PeerPoolMaxBytes", v, 1 << 20, u64::MAX)?,
            None => DEFAULT_PEER_POOL_MAX,
        };
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
            acl: AclOptions::parse(opts)?,
        })
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
mod tests {
    use super::*;
    use crate::status::Status;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        collect(pairs.iter().copied()).unwrap()
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![("llm.DeviceId", "0"), ("llm.EnableCacheManager", "1")]
    }

    fn parse_with(extra: &[(&str, &str)]) -> Result<Config> {
        let mut p = base();
        p.extend_from_slice(extra);
        Config::parse(&opts(&p))
    }

    #[test]
    fn acl_options() {
        let c = parse_with(&[]).unwrap();
        assert_eq!(c.acl.hccn_conf, None);
        assert_eq!(c.acl.prepare_timeout, DEFAULT_HCCL_PREPARE_TIMEOUT);
        let c = parse_with(&[
            ("llmdd.HccnConf", "/tmp/hccn.conf"),
            ("llmdd.HcclPrepareTimeout", "5000"),
        ])
        .unwrap();
        assert_eq!(c.acl.hccn_conf.as_deref(), Some("/tmp/hccn.conf"));
        assert_eq!(c.acl.prepare_timeout, Duration::from_secs(5));
        for bad in [
            ("llmdd.HcclPrepareTimeout", "999"),
            ("llmdd.HcclPrepareTimeout", "x"),
            ("llmdd.HccnConf", " "),
        ] {
            let e = parse_with(&[bad]).unwrap_err();
            assert_eq!(e.status, Status::ParamInvalid, "{bad:?}");
        }
    }

    #[test]
    fn defaults() {
        let c = parse_with(&[]).unwrap();
        assert_eq!(c.device_id, 0);
        assert_eq!(c.listen, None);
        assert_eq!(c.sync_kv_timeout, Duration::from_millis(1000));
        assert!(!c.remote_cache_accessible);
        assert_eq!(c.max_links, 512);
        assert_eq!(c.rdma_traffic_class, 132);
        assert_eq!(c.rank_table_default_port, 16666);
        assert_eq!(c.max_registered_addrs, 1024);
        assert_eq!(c.net, NetLimits::default());
    }

    #[test]
    fn net_limits() {
        let c = parse_with(&[
            ("llmdd.MaxConnsPerLink", "8"),
            ("llmdd.MaxConnsPerPeer", "3"),
            ("llmdd.IoTimeoutMs", "1500"),
            ("llmdd.DeadPeerTimeoutMs", "2000"),
        ])
        .unwrap();
        assert_eq!(
            c.net,
            NetLimits {
                max_conns_per_link: 8,
                max_conns_per_peer: 3,
                io_timeout: Duration::from_millis(1500),
                dead_peer_timeout: Duration::from_millis(2000),
            }
        );
        assert_eq!(c.conn_opts().dead_peer, Duration::from_secs(2));
    }

    #[test]
    fn both_spellings() {
        let c = parse_with(&[("llm.listenIpInfo", "127.0.0.1:26000")]).unwrap();
        assert_eq!(c.listen.unwrap().port(), 26000);
        let c = parse_with(&[("llm.ListenIpInfo", "[::1]:26001")]).unwrap();
        assert!(c.listen.unwrap().is_ipv6());
        let e = parse_with(&[
            ("llm.ListenIpInfo", "127.0.0.1:1"),
            ("llm.listenIpInfo", "127.0.0.1:2"),
        ])
        .unwrap_err();
        assert_eq!(e.status, Status::ParamInvalid);
        let c = Config::parse(&opts(&[
            ("ge.exec.deviceId", "3"),
            ("llm.EnableCacheManager", "1"),
        ]))
        .unwrap();
        assert_eq!(c.device_id, 3);
    }

    #[test]
    fn rejects() {
        let cases: &[&[(&str, &str)]] = &[
            &[("llm.SyncKvCacheWaitTime", "0")],
            &[("llm.SyncKvCacheWaitTime", "abc")],
            &[("llm.ListenIpInfo", "127.0.0.1")],
            &[("llm.ListenIpInfo", "300.0.0.1:5")],
            &[("llm.ListenIpInfo", "127.0.0.1:0")],
            &[("llm.EnableRemoteCacheAccessible", "2")],
            &[("llm.RdmaTrafficClass", "3")],
            &[("llm.RdmaServiceLevel", "8")],
            &[("llm.LinkRetryCount", "0")],
            &[("llm.MemPoolConfig", "{\"memory_size\":0}")],
            &[(
                "llm.MemPoolConfig",
                "{\"memory_size\":1024,\"page_shift\":9}",
            )],
            &[("llm.MemPoolConfig", "nope")],
            &[("llm.TransferBackend", "nccl")],
            &[("llmdd.NoSuchOption", "1")],
            &[("llm.NoSuchOption", "1"), ("llmdd.StrictOptions", "1")],
            &[("llmdd.StrictOptions", "yes")],
            &[("llmdd.Backend", "gpu")],
            &[("ge.flowGraphMemMaxSize", "1x")],
            &[("llm.BufPoolCfg", "[1]")],
            &[("llm.GlobalResourceConfig", "{")],
            &[("llm.EnableSwitchRole", "yes")],
            &[("llm.Role", "prompt")],
            &[("llm.MemoryUtilization", "1.5")],
            &[("llm.OutputMaxSize", "-1")],
            &[("llm.ListenPort", "0")],
            &[("llmdd.RankTableDefaultPort", "0")],
            &[("llmdd.RankTableDefaultPort", "65536")],
            &[("llmdd.MaxRegisteredAddrs", "0")],
            &[("llmdd.MaxRegisteredAddrs", "65537")],
            &[("llmdd.MaxConnsPerLink", "3")],
            &[("llmdd.MaxConnsPerPeer", "0")],
            &[("llmdd.IoTimeoutMs", "99")],
            &[("llmdd.DeadPeerTimeoutMs", "999")],
            &[("llmdd.DeadPeerTimeoutMs", "10s")],
        ];
        for c in cases {
            let e = parse_with(c).unwrap_err();
            assert_eq!(e.status, Status::ParamInvalid, "{c:?}");
            assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn accepts_documented_no_op_options() {
        let c = parse_with(&[
            ("llm.BufPoolCfg", "{\"buf_cfg\":[],\"buf_pool_size\":1024}"),
            ("llm.GlobalResourceConfig", "{}"),
            ("llm.EnableSwitchRole", "1"),
            ("llm.Role", "Mix"),
            ("llm.MemoryUtilization", "0.95"),
            ("llm.deployResPath", "/tmp"),
            ("ge.session_device_id", "0"),
            ("llm.SomeFutureOption", "x"),
            ("llmdd.StrictOptions", "0"),
        ])
        .unwrap();
        assert_eq!(c.device_id, 0);
    }

    #[test]
    fn every_option_has_a_header_macro() {
        use crate::ffi::option_keys::OPTION_KEYS;
        for (name, key, _) in OPTION_KEYS {
            assert!(name.starts_with("LLMDD_OPTION_"), "{name}");
            assert!(
                KNOWN_KEYS.contains(key) || IGNORED_LLM_KEYS.contains(key),
                "{name} names {key}, which options.rs does not know"
            );
        }
        for key in KNOWN_KEYS {
            // Python's lower-case spelling of the listen endpoint has no macro.
            if *key == "llm.listenIpInfo" {
                continue;
            }
            assert!(
                OPTION_KEYS.iter().any(|(_, k, _)| k == key),
                "option {key} has no LLMDD_OPTION_* macro: add it to src/ffi/option_keys.rs"
            );
        }
    }

    #[test]
    fn link_secret_value_or_file() {
        let c = parse_with(&[("llmdd.LinkSecret", "0123456789abcdef")]).unwrap();
        assert!(c.link_key.is_some());
        assert!(parse_with(&[]).unwrap().link_key.is_none());
        let path = std::env::temp_dir().join(format!("llmdd-secret-{}", std::process::id()));
        std::fs::write(&path, b"0123456789abcdef\n").unwrap();
        let p = path.to_str().unwrap();
        let f = parse_with(&[("llmdd.LinkSecretFile", p)]).unwrap();
        assert_eq!(f.link_key, c.link_key, "one trailing newline is dropped");
        for bad in [
            &[
                ("llmdd.LinkSecret", "0123456789abcdef"),
                ("llmdd.LinkSecretFile", p),
            ][..],
            &[("llmdd.LinkSecret", "too-short")][..],
            &[("llmdd.LinkSecretFile", "/nonexistent/llmdd-secret")][..],
            &[("llmdd.PeerPoolMaxBytes", "1024")][..],
        ] {
            let e = parse_with(bad).unwrap_err();
            assert_eq!(e.status, Status::ParamInvalid, "{bad:?}");
            assert!(
                !e.message.contains("too-short"),
                "the secret is never echoed"
            );
        }
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            parse_with(&[("llmdd.PeerPoolMaxBytes", "1048576")])
                .unwrap()
                .peer_pool_max,
            1 << 20
        );
    }

    #[test]
    fn cache_manager_implied() {
        let c = Config::parse(&opts(&[("llm.DeviceId", "0")])).unwrap();
        assert!(!c.remote_cache_accessible);
        let e = Config::parse(&opts(&[
            ("llm.DeviceId", "0"),
            ("llm.EnableCacheManager", "0"),
        ]))
        .unwrap_err();
        assert_eq!(e.status, Status::FeatureNotEnabled);
        let c = Config::parse(&opts(&[("llm.DeviceId", "0"), ("llm.LocalCommRes", "")])).unwrap();
        assert!(c.remote_cache_accessible);
        let e = Config::parse(&opts(&[("llm.EnableCacheManager", "1")])).unwrap_err();
        assert_eq!(e.status, Status::ParamInvalid);
        assert!(collect([("a", "1"), ("a", "2")]).is_err());
    }
}
