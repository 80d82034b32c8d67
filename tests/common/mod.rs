//! Helpers shared by the Rust integration tests: a held free loopback port, init
//! with the minimal required options, a one-endpoint cluster entry, and the
//! simulated Ascend runtime (`sim`).
#![allow(dead_code)] // each test crate uses a different subset

pub mod acl;
pub mod raw;
pub mod sim;

use llmdd::datadist::options::collect;
use llmdd::datadist::{ClusterInfo, Instance, IpInfo};

/// Sockets that hold the ports [`free_port`] handed out.
static HELD_PORTS: std::sync::Mutex<Vec<std::os::fd::OwnedFd>> = std::sync::Mutex::new(Vec::new());

/// A loopback port that stays free for this test until llmdd binds it.
///
/// A port found free and closed again can be taken by any process before
/// llmdd binds it — by another test, or as the source port of any outgoing
/// connection — and `init` or `link` then fails with "Address already in
/// use" on a busy machine. So the port stays held by a socket bound to it
/// with `SO_REUSEADDR` and never listening, until the process ends (or
/// [`release_ports`]): the kernel hands a held port to no other `bind(0)`
/// nor `connect`, while llmdd's listener (Rust's `TcpListener::bind` sets
/// `SO_REUSEADDR`) can still bind it; a connection to it is refused until then.
pub fn free_port() -> u16 {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: plain socket calls on a descriptor this function owns; `a`
    // and `len` are valid for the calls that write them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let fd = OwnedFd::from_raw_fd(fd);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let one: libc::c_int = 1;
        let r = libc::setsockopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(r, 0, "SO_REUSEADDR: {}", std::io::Error::last_os_error());
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = libc::bind(raw, (&a as *const libc::sockaddr_in).cast(), len);
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let r = libc::getsockname(raw, (&mut a as *mut libc::sockaddr_in).cast(), &mut len);
        assert_eq!(r, 0, "getsockname: {}", std::io::Error::last_os_error());
        HELD_PORTS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(fd);
        u16::from_be(a.sin_port)
    }
}

/// Closes the sockets that hold [`free_port`]'s ports (a test that counts
/// its descriptors, once llmdd has bound or given up the ports).
pub fn release_ports() {
    HELD_PORTS.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
