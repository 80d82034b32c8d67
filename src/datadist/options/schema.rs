//! The option schema: one row per option key llmdd knows, with its kind,
//! range and default. [`Config::parse`](super::Config::parse) reads values
//! through it, `check_known` takes the key lists from it, and the C config
//! builder (`src/ffi/config.rs`) checks its setters' values against the same
//! rows, so the two validators cannot drift apart. Values are documented in
//! docs/options.md.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::status::Result;
use crate::{bail, err};

/// What values an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `"0"` or `"1"`.
    Flag,
    /// A decimal integer in `lo..=hi` that is a multiple of `step`.
    Uint {
        /// Smallest value.
        lo: u64,
        /// Largest value.
        hi: u64,
        /// Values must be multiples of this (1: any).
        step: u64,
    },
    /// A JSON document (its fields are checked by the option's own parser).
    Json,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// Text checked by the option's own parser (endpoints, paths, secrets).
    Text,
}

/// One option key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OptionSpec {
    /// The key, case-sensitive (e.g. `llm.RdmaTrafficClass`).
    pub key: &'static str,
    /// The values it takes.
    pub kind: Kind,
    /// The value when absent, for `Uint` options that have one.
    pub default: Option<u64>,
    /// Accepted for compatibility and without effect here (still validated;
    /// the tests keep these out of the `LLMDD_OPTION_*` macro check).
    #[cfg_attr(not(test), allow(dead_code))]
    pub ignored: bool,
}

/// Why an integer is outside a `Uint` option's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Violation {
    /// Below `lo` or above `hi`.
    Range,
    /// In range, not a multiple of `step`.
    Step,
}

const fn uint(key: &'static str, lo: u64, hi: u64, default: Option<u64>) -> OptionSpec {
    OptionSpec {
        key,
        kind: Kind::Uint { lo, hi, step: 1 },
        default,
        ignored: false,
    }
}

const fn of(key: &'static str, kind: Kind) -> OptionSpec {
    OptionSpec {
        key,
        kind,
        default: None,
        ignored: false,
    }
}

const fn ignored(key: &'static str, kind: Kind) -> OptionSpec {
    OptionSpec {
        key,
        kind,
        default: None,
        ignored: true,
    }
}

const I32_MAX: u64 = i32::MAX as u64;
const HOUR_MS: u64 = 3_600_000;

/// Every option key llmdd interprets or accepts.
pub(crate) const OPTIONS: &[OptionSpec] = &[
    uint("llm.DeviceId", 0, I32_MAX, None),
    uint("ge.exec.deviceId", 0, I32_MAX, None),
    of("llm.ListenIpInfo", Kind::Text),
    of("llm.listenIpInfo", Kind::Text),
    uint("llm.SyncKvCacheWaitTime", 1, I32_MAX, Some(1000)),
    of("llm.EnableCacheManager", Kind::Flag),
    of("llm.EnableRemoteCacheAccessible", Kind::Flag),
    of("llm.LocalCommRes", Kind::Json),
    of("llm.TransferBackend", Kind::Choice(&["hixl"])),
    OptionSpec {
        key: "llm.RdmaTrafficClass",
        kind: Kind::Uint {
            lo: 0,
            hi: 255,
            step: 4,
        },
        default: Some(132),
        ignored: false,
    },
    uint("llm.RdmaServiceLevel", 0, 7, Some(4)),
    uint("llm.LinkTotalTime", 0, u32::MAX as u64, Some(0)),
    uint("llm.LinkRetryCount", 1, 100, Some(1)),
    of("llm.MemPoolConfig", Kind::Json),
    of("llm.HostMemPoolConfig", Kind::Json),
    // auto or a registered backend's name (`backend::registry`), checked
    // by its parser.
    of("llmdd.Backend", Kind::Text),
    of("llmdd.AscendLibDir", Kind::Text),
    of("llmdd.SameHost", Kind::Choice(&["auto", "1", "off", "0"])),
    uint("llmdd.DataConnections", 1, 8, Some(2)),
    uint("llmdd.MaxLinks", 1, 65_536, Some(512)),
    uint("llmdd.BusyPollUs", 0, 100_000, Some(50)),
    uint(
        "llmdd.RankTableDefaultPort",
        1,
        65_535,
        Some(crate::datadist::rank_table::DEFAULT_DEVICE_PORT as u64),
    ),
    uint(
        "llmdd.MaxRegisteredAddrs",
        1,
        crate::cache::registry::MAX_REGISTERED_ADDRS_CAP as u64,
        Some(crate::cache::registry::DEFAULT_MAX_REGISTERED_ADDRS as u64),
    ),
    of("llmdd.StrictOptions", Kind::Flag),
    // Proven identity, access and link authentication (issue 9).
    of("llmdd.LinkSecret", Kind::Text),
    of("llmdd.LinkSecretFile", Kind::Text),
    uint(
        "llmdd.PeerPoolMaxBytes",
        1 << 20,
        u64::MAX,
        Some(DEFAULT_PEER_POOL_MAX),
    ),
    // Network limits and timeouts (NetLimits).
    uint("llmdd.MaxConnsPerLink", 4, 1024, Some(32)),
    uint("llmdd.MaxConnsPerPeer", 1, 1 << 20, Some(1024)),
    uint("llmdd.IoTimeoutMs", 100, HOUR_MS, Some(30_000)),
    uint("llmdd.DeadPeerTimeoutMs", 1000, HOUR_MS, Some(10_000)),
    // The acl backend (AclOptions).
    of("llmdd.HccnConf", Kind::Text),
    uint(
        "llmdd.HcclPrepareTimeout",
        1_000,
        HOUR_MS,
        Some(DEFAULT_HCCL_PREPARE_TIMEOUT.as_millis() as u64),
    ),
    // Known `llm.` keys accepted without effect here (v1-engine leftovers, or
    // handled elsewhere); those with a documented format are still checked.
    ignored("llm.BufPoolCfg", Kind::Json),
    ignored("llm.EnableSwitchRole", Kind::Flag),
    ignored("llm.deployResPath", Kind::Text),
    ignored("llm.ClusterInfo", Kind::Text),
    ignored("llm.OutputMaxSize", Kind::Text),
    ignored("llm.MemoryUtilization", Kind::Text),
    ignored("llm.Role", Kind::Choice(&["Prompt", "Decoder", "Mix"])),
    ignored("llm.GlobalResourceConfig", Kind::Json),
    ignored("llm.ListenIp", Kind::Text),
    ignored(
        "llm.ListenPort",
        Kind::Uint {
            lo: 1,
            hi: 65_535,
            step: 1,
        },
    ),
];

/// The row of `key`. Every key the crate names is in [`OPTIONS`] (a unit
/// test walks them); a missing row is a programming error.
pub(crate) fn spec(key: &str) -> &'static OptionSpec {
    OPTIONS
        .iter()
        .find(|s| s.key == key)
        .unwrap_or_else(|| panic!("option {key} is not in the option schema"))
}

/// Whether `key` is in the schema.
pub(crate) fn is_known(key: &str) -> bool {
    OPTIONS.iter().any(|s| s.key == key)
}

impl OptionSpec {
    /// `(lo, hi, step)` of a `Uint` option.
    pub(crate) fn range(&self) -> (u64, u64, u64) {
        match self.kind {
            Kind::Uint { lo, hi, step } => (lo, hi, step),
            _ => panic!("option {} is not an integer option", self.key),
        }
    }

    /// Whether `n` is outside this `Uint` option's values, and how.
    pub(crate) fn violation(&self, n: u64) -> Option<Violation> {
        let (lo, hi, step) = self.range();
        if n < lo || n > hi {
            Some(Violation::Range)
        } else if n % step != 0 {
            Some(Violation::Step)
        } else {
            None
        }
    }

    /// Whether `v` is one of a `Choice` option's words.
    pub(crate) fn allows(&self, v: &str) -> bool {
        match self.kind {
            Kind::Choice(words) => words.contains(&v),
            _ => panic!("option {} is not a choice", self.key),
        }
    }

    /// Parses `v` as this `Uint` option's value (messages name `key`).
    pub(crate) fn parse_uint(&self, v: &str) -> Result<u64> {
        let n = parse_u64(self.key, v)?;
        let (lo, hi, step) = self.range();
        match self.violation(n) {
            None => Ok(n),
            Some(Violation::Range) => bail!(
                ParamInvalid,
                "option {} must be in [{lo}, {hi}] (got {n})",
                self.key
            ),
            Some(Violation::Step) => bail!(
                ParamInvalid,
                "option {} must be a multiple of {step} (got {n})",
                self.key
            ),
        }
    }

    /// The value of this `Uint` option in `opts`, or its default.
    pub(crate) fn uint(&self, opts: &Options) -> Result<u64> {
        match opts.get(self.key) {
            Some(v) => self.parse_uint(v),
            None => self
                .default
                .ok_or_else(|| err!(ParamInvalid, "option {} is required", self.key)),
        }
    }
}

/// `spec(key).uint(opts)`.
pub(crate) fn uint_of(opts: &Options, key: &str) -> Result<u64> {
    spec(key).uint(opts)
}

/// Default of `llmdd.HcclPrepareTimeout`: HCCL's own connect timeout
/// (`HCCL_CONNECT_TIMEOUT`, at least 120 s).
pub const DEFAULT_HCCL_PREPARE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default of `llmdd.PeerPoolMaxBytes`: 64 GiB (above the 20 GB host pool
/// limit and typical device pools; a larger announcement is not mapped).
pub const DEFAULT_PEER_POOL_MAX: u64 = 64 << 30;

/// Option map with duplicate detection.
pub type Options = BTreeMap<String, String>;

pub(crate) fn parse_u64(key: &str, v: &str) -> Result<u64> {
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
