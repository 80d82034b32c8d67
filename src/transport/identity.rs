//! Proven peer identity for the one-sided paths (same process, same host).
//!
//! Every process has a random 32-byte identity secret that never leaves it: it
//! lives in this process's memory and in a sealed memfd named
//! `llmdd-identity`, readable only by processes with ptrace access to this one.
//! In the handshake each side answers the other's fresh nonce with
//! `proof = HMAC(secret, label | transcript)`, where the transcript holds both
//! nonces and the control connection's two endpoints (so a relay that forwards
//! our challenge to a real llmdd process gets a proof for *its* connection,
//! which does not match ours). The verifier then decides:
//!
//! - **same process**: the proof verifies under *our own* secret;
//! - **same host**: the peer's host tag shows it knows our boot id and pid
//!   namespace, it names a pid and its identity fd, and reading that fd
//!   through a pidfd taken first (`pidfd_getfd`, ptrace-level access) yields a
//!   secret under which the proof verifies; the pidfd then stays bound to the
//!   verified process for the link's lifetime;
//! - otherwise the peer is remote (TCP), or, when it claimed an identity it
//!   could not prove, forged.
//!
//! Nothing identifying is needed before that: the pid and identity fd are sent
//! only to a peer whose host tag matched, pool layouts only to a peer proven to
//! be on this host.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::transport::peer_proc::{fd_path, PeerProcess};
use crate::transport::wire::{Claim, Identity as WireIdentity, TAG_LEN};

/// A 32-byte MAC, nonce or host tag.
pub type Tag = [u8; TAG_LEN];

/// The memfd name of a process's identity secret.
const IDENTITY_NAME: &str = "llmdd-identity";
/// `/proc/self/fd` target of an identity memfd.
const IDENTITY_PATH: &str = "/memfd:llmdd-identity (deleted)";
/// Seals an identity memfd must carry (immutable, fixed size).
const IDENTITY_SEALS: i32 =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// Which end of the control connection computes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The dialer (`link_clusters` client).
    Client,
    /// The listener.
    Server,
}

struct Secret {
    pid: u32,
    key: Tag,
    /// The sealed memfd holding `key`, made when a same-host peer first needs
    /// it. Never closed: it lives as long as the process (and a number the
    /// application closed and reused is not ours to close).
    fd: Mutex<Option<RawFd>>,
    host: Vec<u8>,
}

impl Secret {
    /// The identity memfd (made now if there is none, or if the application
    /// closed ours); `None` if memfds are unavailable.
    fn memfd(&self) -> Option<RawFd> {
        let mut g = self.fd.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = *g {
            if fd_path(f).is_ok_and(|p| p == IDENTITY_PATH) {
                return Some(f);
            }
        }
        *g = identity_memfd(&self.key);
        *g
    }
}

/// This process's identity, created on first use and again after a fork (a
/// child must not pass for its parent).
fn secret() -> Arc<Secret> {
    static CUR: Mutex<Option<Arc<Secret>>> = Mutex::new(None);
    let pid = std::process::id();
    let mut g = CUR.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = g.as_ref().filter(|s| s.pid == pid) {
        return s.clone();
    }
    let s = Arc::new(Secret {
        pid,
        key: random_tag(),
        fd: Mutex::new(None),
        host: host_key(),
    });
    *g = Some(s.clone());
    s
}

/// `boot id | pid namespace`: equal for two processes of one kernel whose pids
/// name the same processes.
fn host_key() -> Vec<u8> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if boot.trim().is_empty() || ns.is_empty() {
        // No way to tell hosts apart: never claim one.
        return Vec::new();
    }
    format!("llmdd host|{}|{ns}", boot.trim()).into_bytes()
}

/// A sealed memfd holding `key` (None if memfds are unavailable: then this
/// process cannot prove a same-host identity, and peers use TCP).
fn identity_memfd(key: &Tag) -> Option<RawFd> {
    let name = std::ffi::CString::new(IDENTITY_NAME).ok()?;
    // SAFETY: valid C string.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: writing our buffer to our fd, then sealing it.
    let ok = unsafe {
        libc::pwrite(fd.as_raw_fd(), key.as_ptr() as *const _, key.len(), 0) == key.len() as isize
            && libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, IDENTITY_SEALS) == 0
    };
    ok.then(|| fd.into_raw_fd())
}

/// 32 random bytes (nonces, secrets).
pub fn random_tag() -> Tag {
    let mut t = [0u8; TAG_LEN];
    let mut got = 0;
    while got < t.len() {
        // SAFETY: writing into the unfilled tail of our buffer.
        let n = unsafe { libc::getrandom(t[got..].as_mut_ptr() as *mut _, t.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // getrandom cannot fail on Linux ≥ 3.17 short of EFAULT; never
            // hand out a predictable value.
            panic!("getrandom failed: {}", std::io::Error::last_os_error());
        }
    }
    t
}

/// What both ends of one control connection agree on: the two nonces and the
/// connection's endpoints as each end sees them.
pub struct Transcript(Vec<u8>);

impl Transcript {
    /// The transcript of a handshake over the connection `client → server`.
    pub fn new(
        client_nonce: &Tag,
        server_nonce: &Tag,
        client: SocketAddr,
        server: SocketAddr,
    ) -> Self {
        let mut b = Vec::with_capacity(2 * TAG_LEN + 40);
        b.extend_from_slice(client_nonce);
        b.extend_from_slice(server_nonce);
        for a in [client, server] {
            match a.ip().to_canonical() {
                IpAddr::V4(v4) => {
                    b.push(4);
                    b.extend_from_slice(&v4.octets());
                }
                IpAddr::V6(v6) => {
                    b.push(6);
                    b.extend_from_slice(&v6.octets());
                }
            }
            b.extend_from_slice(&a.port().to_le_bytes());
        }
        Transcript(b)
    }
}

fn mac(key: &[u8], label: &str, t: &Transcript) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(label.as_bytes());
    m.update(&[0]);
    m.update(&t.0);
    m
}

fn label(kind: &str, side: Side) -> String {
    format!(
        "llmdd/3 {kind} {}",
        match side {
            Side::Client => "client",
            Side::Server => "server",
        }
    )
}

/// Constant-time check of `tag` against the MAC `m`.
fn verifies(m: Hmac<Sha256>, tag: &Tag) -> bool {
    m.verify_slice(tag).is_ok()
}

/// This side's identity for the handshake: host tag, proof, and (when
/// `disclose`) the pid and identity fd a same-host verifier needs.
pub fn ours(side: Side, t: &Transcript, disclose: bool) -> WireIdentity {
    let s = secret();
    let host_tag = host_tag(side, t);
    let proof: Tag = mac(&s.key, &label("proof", side), t)
        .finalize()
        .into_bytes()
        .into();
    let claim = if disclose {
        let fd = s.memfd();
        // The liveness page, found by the verifier among our descriptors
        // (first at the identity fd + 1, where it is when made just after).
        let _ = crate::transport::live::own_fd();
        fd.map(|fd| Claim {
            pid: s.pid,
            fd: fd as u32,
        })
    } else {
        None
    };
    WireIdentity {
        host_tag,
        proof,
        claim,
    }
}

/// This side's host tag: equal to what a peer on this kernel and pid
/// namespace computes, meaningless to anyone else.
pub fn host_tag(side: Side, t: &Transcript) -> Tag {
    let s = secret();
    if s.host.is_empty() {
        return random_tag();
    }
    mac(&s.host, &label("host", side), t)
        .finalize()
        .into_bytes()
        .into()
}

/// True if `tag` is the host tag a process of this host computes as `side`.
pub fn same_host_tag(side: Side, t: &Transcript, tag: &Tag) -> bool {
    let s = secret();
    !s.host.is_empty() && verifies(mac(&s.host, &label("host", side), t), tag)
}

/// What the verifier concluded about a peer.
#[derive(Debug)]
pub enum Verdict {
    /// The peer is this process.
    SameProcess,
    /// The peer is this process of this host, held by its pidfd.
    SameHost(PeerProcess),
    /// Not reachable one-sidedly (why): bytes go over TCP.
    Remote(String),
    /// The peer claimed an identity it could not prove (why).
    Forged(String),
}

/// Checks the identity `peer` (sent by the `side` end) against this process.
pub fn verify(side: Side, t: &Transcript, peer: &WireIdentity) -> Verdict {
    let s = secret();
    let lab = label("proof", side);
    if verifies(mac(&s.key, &lab, t), &peer.proof) {
        return Verdict::SameProcess;
    }
    if !same_host_tag(side, t, &peer.host_tag) {
        return Verdict::Remote("the peer is on another host or pid namespace".into());
    }
    let Some(c) = peer.claim else {
        return Verdict::Remote("the peer offered no same-host proof".into());
    };
    if c.pid == s.pid {
        return Verdict::Forged(format!(
            "it claims this process's pid {} but cannot prove it",
            c.pid
        ));
    }
    // The pidfd comes first: everything read below is then checked to come
    // from the process it holds.
    let p = match PeerProcess::open(c.pid) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
            return Verdict::Forged(format!("it claims pid {}, which does not exist", c.pid))
        }
        Err(e) => return Verdict::Remote(format!("pidfd_open({}) failed: {e}", c.pid)),
    };
    let fd = match p.take_fd(c.fd, libc::O_RDONLY) {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
            return Verdict::Remote(format!(
                "not permitted to inspect pid {} ({e}); one-sided access needs ptrace rights",
                c.pid
            ))
        }
        Err(e) => {
            return Verdict::Forged(format!("pid {} has no identity fd {}: {e}", c.pid, c.fd))
        }
    };
    let key = match read_identity(&fd) {
        Ok(k) => k,
        Err(why) => return Verdict::Forged(format!("fd {} of pid {} {why}", c.fd, c.pid)),
    };
    if !verifies(mac(&key, &lab, t), &peer.proof) {
        return Verdict::Forged(format!(
            "its proof does not match the identity of pid {}",
            c.pid
        ));
    }
    // Its liveness word, if it keeps one: checked (like everything above) by
    // the liveness test that follows. Only for a peer of this process's own
    // user: the word is the peer's memory, so a peer that lies about it could
    // make a read take a pid successor's bytes, and that must never reach a
    // process it could not read itself (reads only: writes always poll).
    let live = same_user(c.pid)
        .then(|| {
            crate::transport::live::attach(c.pid, c.fd.wrapping_add(1), |n| {
                p.take_fd(n, libc::O_RDONLY)
            })
        })
        .flatten();
    let p = p.with_live(live);
    if !p.poll_alive() {
        return Verdict::Remote(format!("pid {} exited during the handshake", c.pid));
    }
    // One pidfd per proven peer process, whatever the number of links to it.
    Verdict::SameHost(p.shared(&key))
}

/// True if process `pid` runs with this process's user id in every slot
/// (real, effective, saved, filesystem) and this process does too, so
/// reading the memory of processes `pid` may read is all this process can
/// be tricked into. Read from `/proc/<pid>/status` (the caller checks the
/// pidfd afterwards, so the answer was about the peer).
fn same_user(pid: u32) -> bool {
    // SAFETY: plain getters.
    let (ruid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    if ruid != euid {
        return false;
    }
    let Ok(st) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    st.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() == 4 && ids.iter().all(|u| u.parse::<u32>() == Ok(euid))
        })
}

/// The secret in an identity memfd, after checking that it is one.
fn read_identity(fd: &OwnedFd) -> std::result::Result<Tag, &'static str> {
    match fd_path(fd.as_raw_fd()) {
        Ok(p) if p == IDENTITY_PATH => {}
        _ => return Err("is not an llmdd identity memfd"),
    }
    // SAFETY: F_GET_SEALS and fstat on our fd.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if seals < 0 || seals & IDENTITY_SEALS != IDENTITY_SEALS {
        return Err("is not sealed");
    }
    // SAFETY: `libc::stat` is plain integers, for which all-zero bytes are a
    // valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open fd we own (borrowed for the call) and `st` is a
    // valid, writable `stat` that fstat fills.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 || st.st_size != TAG_LEN as i64 {
        return Err("has the wrong size");
    }
    let mut k = [0u8; TAG_LEN];
    // SAFETY: reading into our buffer.
    let n = unsafe { libc::pread(fd.as_raw_fd(), k.as_mut_ptr() as *mut _, k.len(), 0) };
    if n != k.len() as isize {
        return Err("cannot be read");
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The liveness word is trusted only for a peer of this user: this
    /// process is, and (when the test runs as root, as CI does) a child
    /// running as `nobody` is not.
    #[test]
    fn only_a_peer_of_this_user_counts_as_same_user() {
        assert!(same_user(std::process::id()));
        // SAFETY: a plain getter.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .uid(65534)
            .gid(65534)
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        // The uid changes between fork and exec: wait for the exec.
        while std::fs::read_to_string(format!("/proc/{}/comm", child.id()))
            .map_or(true, |c| c.trim() != "sleep")
        {
            assert!(t.elapsed() < std::time::Duration::from_secs(10));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let r = same_user(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(!r, "a peer running as another user counted as this one");
    }

    fn t(a: u8) -> Transcript {
        Transcript::new(
            &[a; 32],
            &[2; 32],
            "127.0.0.1:5000".parse().unwrap(),
            "[::ffff:127.0.0.1]:6000".parse().unwrap(),
        )
    }

    #[test]
    fn same_process_is_recognised_and_bound_to_the_transcript() {
        let mine = ours(Side::Client, &t(1), false);
        assert!(matches!(
            verify(Side::Client, &t(1), &mine),
            Verdict::SameProcess
        ));
        // Another transcript (a relay's connection) or the other side's label: no.
        assert!(!matches!(
            verify(Side::Client, &t(9), &mine),
            Verdict::SameProcess
        ));
        assert!(!matches!(
            verify(Side::Server, &t(1), &mine),
            Verdict::SameProcess
        ));
    }

    #[test]
    fn forged_claims_are_caught() {
        let mut id = ours(Side::Server, &t(1), true);
        id.proof = [7; 32];
        // Our own pid with a wrong proof.
        assert!(matches!(
            verify(Side::Server, &t(1), &id),
            Verdict::Forged(_)
        ));
        // No host tag match: remote, whatever the claim.
        id.host_tag = [0; 32];
        assert!(matches!(
            verify(Side::Server, &t(1), &id),
            Verdict::Remote(_)
        ));
    }

    #[test]
    fn identity_memfd_is_sealed_and_named() {
        let s = secret();
        let fd = s.memfd().unwrap();
        assert_eq!(fd_path(fd).unwrap(), IDENTITY_PATH);
        let dup = unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) };
        assert_eq!(read_identity(&dup).unwrap(), s.key);
        // Sealed: cannot be rewritten.
        let r = unsafe { libc::pwrite(fd, [0u8].as_ptr() as *const _, 1, 0) };
        assert_eq!(r, -1);
    }
}
