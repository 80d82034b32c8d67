//! What the device layer takes from the init options: the backend choice,
//! the device, pool sizes and the acl backend's settings. The API layer parses
//! the options (`datadist::options`) and hands these down
//! (`Config::device`), so no device code depends on the whole configuration.

use std::time::Duration;

/// Which backend moves the bytes (`llmdd.Backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    /// The first registered backend that opens (acl when the Ascend runtime
    /// loads, else host).
    Auto,
    /// The registered backend of this name (`host`, `acl`).
    Named(&'static str),
}

/// A memory pool configuration (`{"memory_size": N, "page_shift": S}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Pool size in bytes.
    pub memory_size: u64,
    /// log2 of the allocation granule (allocations round up to it).
    pub page_shift: u32,
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

/// The device layer's part of the init configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// `llmdd.Backend`.
    pub backend: BackendChoice,
    /// `llm.DeviceId`: the logical device to open.
    pub device_id: i32,
    /// `llmdd.AscendLibDir`: where to load the Ascend runtime from.
    pub ascend_lib_dir: Option<String>,
    /// `llm.LocalCommRes`: the device endpoint hints, as given.
    pub local_comm_res: Option<String>,
    /// `llm.RdmaTrafficClass`.
    pub rdma_traffic_class: u32,
    /// `llm.RdmaServiceLevel`.
    pub rdma_service_level: u32,
    /// Options of the acl backend only.
    pub acl: AclOptions,
}
