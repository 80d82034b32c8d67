//! Unit tests of the option parser and its schema.

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
            schema::is_known(key),
            "{name} names {key}, which the option schema does not know"
        );
    }
    for key in schema::OPTIONS.iter().filter(|s| !s.ignored).map(|s| s.key) {
        // Python's lower-case spelling of the listen endpoint has no macro.
        if key == "llm.listenIpInfo" {
            continue;
        }
        assert!(
            OPTION_KEYS.iter().any(|(_, k, _)| *k == key),
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

#[test]
fn schema_rows_are_consistent() {
    use schema::{Kind, OPTIONS};
    for (i, s) in OPTIONS.iter().enumerate() {
        assert!(
            OPTIONS[..i].iter().all(|o| o.key != s.key),
            "{} twice",
            s.key
        );
        assert!(
            s.key.starts_with("llm.") || s.key.starts_with("llmdd.") || s.key.starts_with("ge.")
        );
        match s.kind {
            Kind::Uint { lo, hi, step } => {
                assert!(lo <= hi && step >= 1, "{}", s.key);
                if let Some(d) = s.default {
                    assert_eq!(s.violation(d), None, "default of {}", s.key);
                }
            }
            _ => assert_eq!(s.default, None, "{} has a default but no range", s.key),
        }
        assert!(!s.ignored || s.key.starts_with("llm."), "{}", s.key);
    }
    // Defaults the C API documents (docs/options.md).
    let c = parse_with(&[]).unwrap();
    assert_eq!(c.rdma_traffic_class, 132);
    assert_eq!(c.link_retry_count, 1);
    assert_eq!(c.net, NetLimits::default());
    assert_eq!(c.net.io_timeout, Duration::from_secs(30));
    assert_eq!(c.acl.prepare_timeout, DEFAULT_HCCL_PREPARE_TIMEOUT);
}

#[test]
fn every_key_the_parser_names_is_in_the_schema() {
    // `spec` panics on a key missing from the table: walk the parser with
    // every option absent and with each one set to a value it rejects.
    let _ = parse_with(&[]).unwrap();
    for s in schema::OPTIONS
        .iter()
        .filter(|s| base().iter().all(|(k, _)| *k != s.key))
    {
        let _ = parse_with(&[(s.key, "\u{1}")]);
    }
}
