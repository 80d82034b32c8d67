//! Helpers shared by the Rust integration tests: a free loopback port, init
//! with the minimal required options, a one-endpoint cluster entry, and the
//! simulated Ascend runtime (`sim`).
#![allow(dead_code)] // each test crate uses a different subset

pub mod acl;
pub mod sim;

use llmdd::datadist::options::collect;
use llmdd::datadist::{ClusterInfo, Instance, IpInfo};

/// A loopback port that is free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `init` with `llm.DeviceId=0`, cache-manager mode, plus `extra`.
pub fn try_init(i: &Instance, extra: &[(&str, &str)]) -> llmdd::status::Result<()> {
    let mut p = vec![("llm.DeviceId", "0"), ("llm.EnableCacheManager", "1")];
    p.extend_from_slice(extra);
    i.init(&collect(p).unwrap())
}

/// [`try_init`] that must succeed.
pub fn init(i: &Instance, extra: &[(&str, &str)]) {
    try_init(i, extra).unwrap();
}

/// A link_clusters entry for cluster `id` listening on 127.0.0.1:`port`.
pub fn cluster(id: u64, port: u16) -> ClusterInfo {
    ClusterInfo {
        remote_cluster_id: id,
        local_ip_infos: vec![],
        remote_ip_infos: vec![IpInfo {
            ip: "127.0.0.1".into(),
            port,
        }],
    }
}

/// A rank table on 127.0.0.1: rank r listens on `ports[r]` (`host_port`).
pub fn rank_table(ports: &[u16]) -> String {
    let devs: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(r, p)| {
            format!(
                r#"{{"device_id":"{r}","device_ip":"127.0.0.1","rank_id":"{r}","host_port":"{p}"}}"#
            )
        })
        .collect();
    format!(
        r#"{{"version":"1.0","server_count":"1","status":"completed","server_list":[{{"server_id":"node0","host_ip":"127.0.0.1","device":[{}]}}]}}"#,
        devs.join(",")
    )
}

/// Entries of a directory such as `/proc/self/task` (0 if unreadable).
pub fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

/// Runs the test `name` alone in a child process (this test binary again) and
/// returns true there; in the parent it waits for the child, asserts that it
/// passed, and returns false. For tests that count the process's threads and
/// fds, which tests running in parallel threads would disturb.
pub fn in_child_process(name: &str) -> bool {
    const CHILD: &str = "LLMDD_TEST_CHILD";
    if std::env::var(CHILD).as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(CHILD, name)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
