//! The serve handler against a fake [`ServeHost`]: the engine answers a
//! peer's requests with what the host says, without an instance.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::*;
use crate::bail;
use crate::transport::tcp::ConnOpts;

/// Answers from fixed values and records what it was asked.
#[derive(Default)]
struct Fake {
    served: Arc<ServedCount>,
    consume_refused: bool,
    consumed: Mutex<Vec<(u64, u64)>>,
    notes: Mutex<Vec<(String, String)>>,
    removed: AtomicBool,
    checks: AtomicUsize,
    reverse_asked: Mutex<Vec<u32>>,
}

impl ServeHost for Fake {
    fn reactor(&self) -> Result<Arc<poller::Handle>> {
        bail!(Failed, "no control plane in this test")
    }
    fn served(&self) -> &Arc<ServedCount> {
        &self.served
    }
    fn io_timeout(&self) -> Duration {
        Duration::from_secs(5)
    }
    fn unlink_wait(&self) -> Duration {
        Duration::from_millis(10)
    }
    fn table(&self, _link: &Link) -> Vec<CacheEntry> {
        Vec::new()
    }
    fn resolve(&self, _link: &Link, _key: &CacheKey) -> Result<(CacheEntry, u64)> {
        bail!(KvCacheNotExist, "no such key here")
    }
    fn consume(&self, _link: &Link, req_id: u64, model_id: u64) -> Result<()> {
        if self.consume_refused {
            bail!(ParamInvalid, "keys are never consumed here");
        }
        self.consumed.lock().unwrap().push((req_id, model_id));
        Ok(())
    }
    fn check_segments(&self, _link: &Link, _segments: &[Segment], _write: bool) -> Result<()> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        bail!(ParamInvalid, "not registered here")
    }
    fn notify(&self, name: String, msg: String) -> Result<()> {
        self.notes.lock().unwrap().push((name, msg));
        Ok(())
    }
    fn remove_link(&self, _link: &Arc<Link>) -> bool {
        !self.removed.swap(true, Ordering::SeqCst)
    }
    fn open_reverse(&self, _link: &Arc<Link>, count: u32, _deadline: Instant) -> Result<()> {
        self.reverse_asked.lock().unwrap().push(count);
        if count > 2 {
            bail!(LinkFailed, "at most 2 reverse connections here");
        }
        Ok(())
    }
}

const OPTS: ConnOpts = ConnOpts {
    spin: Duration::ZERO,
    dead_peer: Duration::ZERO,
};

/// A served connection and the peer's end of it, on loopback.
fn pair() -> (Conn, Conn) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (Conn::new(s, OPTS).unwrap(), Conn::new(c, OPTS).unwrap())
}

/// A link to cluster 2; `we_dialed`: this side is its client.
fn link(we_dialed: bool) -> Arc<Link> {
    crate::transfer::link::test_link(we_dialed, OPTS)
}

/// Handles `msg` on the served end; whether the connection goes on, and the
/// peer's reply.
fn ask(host: &Fake, link: &Arc<Link>, msg: Msg) -> (bool, Msg) {
    let (mut server, mut client) = pair();
    let go_on = handle(host, link, &mut server, msg).unwrap();
    let reply = client
        .recv(Some(Instant::now() + Duration::from_secs(5)))
        .unwrap();
    (go_on, reply)
}

#[test]
fn consume_and_notify_reach_the_host() {
    let host = Fake::default();
    let link = link(false);
    let consume = Msg::Consume {
        req_id: 9,
        model_id: 3,
    };
    let (go_on, reply) = ask(&host, &link, consume);
    assert!(go_on);
    assert!(matches!(reply, Msg::Reply { status: 0, .. }), "{reply:?}");
    assert_eq!(*host.consumed.lock().unwrap(), vec![(9, 3)]);
    let notify = Msg::Notify {
        name: "n".into(),
        msg: "m".into(),
    };
    let (_, reply) = ask(&host, &link, notify);
    assert!(matches!(reply, Msg::Reply { status: 0, .. }), "{reply:?}");
    let notes = host.notes.lock().unwrap().clone();
    assert_eq!(notes, vec![("n".to_string(), "m".to_string())]);
    assert_eq!(link.stats.snapshot().served_refused, 0);
}

#[test]
fn the_hosts_refusals_are_answered_and_counted() {
    let host = Fake {
        consume_refused: true,
        ..Fake::default()
    };
    let link = link(false);
    let consume = Msg::Consume {
        req_id: 1,
        model_id: 0,
    };
    match ask(&host, &link, consume).1 {
        Msg::Reply { status, message } => {
            assert_eq!(status, Status::ParamInvalid.code());
            assert_eq!(message, "keys are never consumed here");
        }
        m => panic!("unexpected reply {m:?}"),
    }
    let key = CacheKey::Req {
        cluster_id: 1,
        req_id: 4,
        model_id: 0,
        prefix_id: u64::MAX,
    };
    match ask(&host, &link, Msg::Resolve { key }).1 {
        Msg::Resolved {
            status,
            message,
            entry,
            ..
        } => {
            assert_eq!(status, Status::KvCacheNotExist.code());
            assert_eq!(message, "no such key here");
            assert!(entry.is_none());
        }
        m => panic!("unexpected reply {m:?}"),
    }
    let read = Msg::Read {
        segments: Vec::new(),
        total: 0,
    };
    match ask(&host, &link, read).1 {
        Msg::ReadData { status, total, .. } => {
            assert_eq!(status, Status::ParamInvalid.code());
            assert_eq!(total, 0);
        }
        m => panic!("unexpected reply {m:?}"),
    }
    assert_eq!(host.checks.load(Ordering::SeqCst), 1);
    assert!(host.consumed.lock().unwrap().is_empty());
    assert_eq!(link.stats.snapshot().served_refused, 3);
}

#[test]
fn a_peers_unlink_removes_the_link_and_ends_the_connection() {
    let host = Fake::default();
    let link = link(false);
    let (go_on, reply) = ask(&host, &link, Msg::Unlink);
    assert!(!go_on, "the connection ends after Unlink");
    assert!(matches!(reply, Msg::Reply { status: 0, .. }), "{reply:?}");
    assert!(host.removed.load(Ordering::SeqCst));
    assert!(link.is_closed());
}

#[test]
fn a_client_refuses_unlink_from_its_server() {
    let host = Fake::default();
    let link = link(true);
    let (mut server, _client) = pair();
    let e = handle(&host, &link, &mut server, Msg::Unlink).unwrap_err();
    assert_eq!(e.status, Status::LinkFailed);
    assert!(!host.removed.load(Ordering::SeqCst));
    assert!(!link.is_closed());
}

#[test]
fn open_conns_reaches_a_client_host_and_is_refused_to_a_server() {
    let host = Fake::default();
    let client_side = link(true);
    let (go_on, reply) = ask(&host, &client_side, Msg::OpenConns { count: 1 });
    assert!(go_on);
    assert!(matches!(reply, Msg::Reply { status: 0, .. }), "{reply:?}");
    let (go_on, reply) = ask(&host, &client_side, Msg::OpenConns { count: 5 });
    assert!(go_on, "a refusal keeps the control connection");
    match reply {
        Msg::Reply { status, message } => {
            assert_eq!(status, Status::LinkFailed.code());
            assert!(message.contains("at most 2"), "{message}");
        }
        m => panic!("{m:?}"),
    }
    assert_eq!(*host.reverse_asked.lock().unwrap(), vec![1, 5]);
    // A server is never asked: the connection ends, the host is not called.
    let (mut server, _client) = pair();
    let e = handle(
        &host,
        &link(false),
        &mut server,
        Msg::OpenConns { count: 1 },
    )
    .unwrap_err();
    assert_eq!(e.status, Status::LinkFailed);
    assert_eq!(host.reverse_asked.lock().unwrap().len(), 2);
}
