//! `llm.LinkRetryCount`: link_clusters retries a refused connection inside the
//! call's timeout, so a client may dial a server that starts a moment later.

use std::time::{Duration, Instant};

mod common;

use common::{cluster, free_port, try_init as init};
use llmdd::datadist::Instance;
use llmdd::Status;

/// Starts a server on `port` after `delay`, on another thread.
fn late_server(port: u16, delay: Duration) -> std::thread::JoinHandle<Instance> {
    std::thread::spawn(move || {
        std::thread::sleep(delay);
        let p = Instance::new(1, 10).unwrap();
        let listen = format!("127.0.0.1:{port}");
        init(&p, &[("llm.ListenIpInfo", listen.as_str())]).unwrap();
        p
    })
}

#[test]
fn one_attempt_fails_fast_when_the_server_is_not_up() {
    let port = free_port();
    let d = Instance::new(2, 20).unwrap();
    init(&d, &[]).unwrap();
    let t0 = Instant::now();
    // A timeout far above the bound: failing by refusal, not by timing out,
    // is what is checked, with room for a busy machine's scheduling delay.
    let r = d.link_clusters(&[cluster(10, port)], 30_000).unwrap();
    assert_eq!(r[0].as_ref().unwrap_err().status, Status::LinkFailed);
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}

#[test]
fn retries_until_the_server_is_up() {
    let port = free_port();
    let d = Instance::new(2, 20).unwrap();
    init(&d, &[("llm.LinkRetryCount", "100")]).unwrap();
    let server = late_server(port, Duration::from_millis(300));
    let t0 = Instant::now();
    let r = d.link_clusters(&[cluster(10, port)], 5000).unwrap();
    let took = t0.elapsed();
    let p = server.join().unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert_eq!(d.session().unwrap().link_count(), 1);
    d.finalize();
    p.finalize();
}

#[test]
fn retries_stop_at_the_timeout() {
    let port = free_port();
    let d = Instance::new(2, 20).unwrap();
    init(&d, &[("llm.LinkRetryCount", "100")]).unwrap();
    let t0 = Instant::now();
    let r = d.link_clusters(&[cluster(10, port)], 400).unwrap();
    let took = t0.elapsed();
    assert_eq!(r[0].as_ref().unwrap_err().status, Status::LinkFailed);
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

#[test]
fn role_option_must_match_the_instance_role() {
    let d = Instance::new(2, 20).unwrap();
    let e = init(&d, &[("llm.Role", "Prompt")]).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("disagrees"), "{}", e.message);
    init(&d, &[("llm.Role", "Decoder")]).unwrap();
}
