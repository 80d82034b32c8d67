//! Unit tests of `comm`.

use super::*;
use crate::datadist::rank_table::DEFAULT_DEVICE_PORT;

fn table(n: u32, base_port: u16) -> String {
    let devs: Vec<String> = (0..n)
        .map(|r| {
            format!(
                r#"{{"device_id":"{r}","device_ip":"127.0.0.1","rank_id":"{r}","device_port":"{}"}}"#,
                base_port + r as u16
            )
        })
        .collect();
    format!(
        r#"{{"version":"1.0","server_count":"1","status":"completed","server_list":[{{"server_id":"s","device":[{}]}}]}}"#,
        devs.join(",")
    )
}

fn verr(name: &str, ranks: &[(u64, u32)], local: u64, t: &str) -> String {
    let e = CommSpec::validate(name, ranks, local, t, false, DEFAULT_DEVICE_PORT).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid, "{}", e.message);
    e.message
}

#[test]
fn validate_ok_and_roles() {
    let t = table(4, 30000);
    let s = CommSpec::validate(
        "c",
        &[(7, 0), (3, 1), (9, 3)],
        3,
        &t,
        false,
        DEFAULT_DEVICE_PORT,
    )
    .unwrap();
    assert_eq!(s.local, 1);
    assert_eq!(s.local_member().addr, "127.0.0.1:30001".parse().unwrap());
    assert_eq!(s.dial_targets().len(), 1);
    assert_eq!(s.dial_targets()[0].cluster_id, 7);
    assert!(s.accepts());
    assert_eq!(s.members[2].addr, "127.0.0.1:30003".parse().unwrap());
    let top = CommSpec::validate(
        "c",
        &[(7, 0), (3, 1), (9, 3)],
        9,
        &t,
        false,
        DEFAULT_DEVICE_PORT,
    )
    .unwrap();
    assert!(!top.accepts());
    assert_eq!(top.dial_targets().len(), 2);
    let name = "n".repeat(MAX_COMM_NAME);
    assert!(
        CommSpec::validate(&name, &[(1, 0), (2, 1)], 1, &t, false, DEFAULT_DEVICE_PORT).is_ok()
    );
}

#[test]
fn validate_rejects() {
    let t = table(4, 30000);
    assert!(verr("", &[(1, 0), (2, 1)], 1, &t).contains("comm_name"));
    assert!(verr(&"x".repeat(128), &[(1, 0), (2, 1)], 1, &t).contains("got 128"));
    assert!(verr("c", &[(1, 0)], 1, &t).contains("cluster_ranks has 1"));
    let five: Vec<(u64, u32)> = (0..5).map(|i| (i + 1, i as u32)).collect();
    assert!(verr("c", &five, 1, &t).contains("cluster_ranks has 5"));
    assert!(verr("c", &[(1, 0), (1, 1)], 1, &t).contains("more than once"));
    assert!(verr("c", &[(1, 1), (2, 0)], 1, &t).contains("strictly ascending"));
    assert!(verr("c", &[(1, 1), (2, 1)], 1, &t).contains("strictly ascending"));
    assert!(verr("c", &[(1, 0), (2, 1)], 5, &t).contains("cluster id 5"));
    assert!(verr("c", &[(1, 0), (2, 9)], 1, &t).contains("rank 9 (cluster 2) does not appear"));
    assert!(verr("c", &[(1, 0), (2, 1)], 1, "{nope").contains("not valid JSON"));
    // A member without a port gets the default one; the members that are
    // dialled must not share an endpoint.
    let no_port = t.replace(r#","device_port":"30001""#, "");
    let s = CommSpec::validate("c", &[(1, 0), (2, 1)], 1, &no_port, false, 16666).unwrap();
    assert_eq!(s.members[1].addr, "127.0.0.1:16666".parse().unwrap());
    let no_ports = table(3, 30000)
        .replace(r#","device_port":"30000""#, "")
        .replace(r#","device_port":"30001""#, "");
    let three = [(1, 0), (2, 1), (3, 2)];
    assert!(verr("c", &three, 1, &no_ports)
        .contains("ranks 0 and 1 have the same endpoint 127.0.0.1:16666"));
}

#[test]
fn budget() {
    assert_eq!(link_budget(1, Some("7")), Duration::from_secs(1));
    assert_eq!(link_budget(0, Some("7")), Duration::from_secs(7));
    assert_eq!(link_budget(0, Some("x")), DEFAULT_LINK_BUDGET);
    assert_eq!(link_budget(0, Some("0")), DEFAULT_LINK_BUDGET);
    assert_eq!(link_budget(0, None), Duration::from_secs(120));
}

#[test]
fn comm_state_transitions() {
    let t = table(3, 30000);
    let spec = CommSpec::validate(
        "c",
        &[(1, 0), (2, 1), (3, 2)],
        3,
        &t,
        false,
        DEFAULT_DEVICE_PORT,
    )
    .unwrap();
    let c = Comm::new(4, spec, None);
    assert_eq!(c.status().0, MemStatus::Preparing);
    assert_eq!(c.missing(&c.lock()), vec![1, 2]);
    assert!(!c.try_complete(None));
    assert!(c.peer(3).is_none(), "the local cluster is not a peer");
    assert!(c.peer(1).is_some());
    let e = c.not_ready(1);
    assert_eq!(e.status, Status::NotYetLink);
    assert!(e.message.contains("PREPARING"));
    assert!(c.fail("boom").unwrap().is_empty());
    assert_eq!(c.status(), (MemStatus::Failed, "boom".to_string()));
    assert!(c.not_ready(1).message.contains("FAILED: boom"));
    // FAILED is final; a second failure keeps the first reason.
    assert!(c.fail("again").is_none());
    assert_eq!(c.status().1, "boom");
    assert!(!c.try_complete(None));
    c.close();
    assert!(c.is_closed());
}
