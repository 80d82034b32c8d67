//! The one-sided paths of host links: memcpy to a peer in this process, and
//! to a verified same-host peer process its mapped pools (memcpy) or else
//! `process_vm_readv/writev`, every copy bound to the peer by its pidfd.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{RwLock, RwLockReadGuard};
use std::time::Instant;

use crate::backend::{DataPath, PathError, PathInfo};
use crate::cache::types::{Dir, Plan, Segment};
use crate::device::pool::PeerMapping;
use crate::stats::Path;
use crate::transport::local::{self, LocalPath};
use crate::transport::peer_proc::PeerProcess;

/// The data path for the handshake's verdict `verdict`, with the peer's
/// pools mapped here (`pools`, same host only).
pub fn local_path(verdict: LocalPath, pools: Vec<PeerMapping>) -> Box<dyn DataPath> {
    match verdict {
        LocalPath::SameProcess => Box::new(SameProcessPath),
        LocalPath::SameHost(peer) => Box::new(SameHostPath {
            peer,
            pools: RwLock::new(pools),
            gone: AtomicBool::new(false),
        }),
    }
}

/// The same-host path of a link's data path `p`, if it is one.
pub fn same_host(p: Option<&dyn DataPath>) -> Option<&SameHostPath> {
    p?.as_any().downcast_ref()
}

/// The time now, or [`PathError::Late`] once `deadline` passed.
fn in_time(deadline: Instant) -> Result<Instant, PathError> {
    let now = Instant::now();
    if now > deadline {
        return Err(PathError::Late);
    }
    Ok(now)
}

/// The peer is this process: memcpy.
#[derive(Debug)]
pub struct SameProcessPath;

impl DataPath for SameProcessPath {
    fn info(&self) -> PathInfo {
        PathInfo {
            kind: Path::SameProcess,
            requests_on_control: true,
            serves_tcp_bulk: true,
        }
    }

    fn transfer(&self, plan: &Plan, dir: Dir, deadline: Instant) -> Result<(), PathError> {
        self.transfer_timed(plan, dir, deadline).map(drop)
    }

    fn transfer_timed(
        &self,
        plan: &Plan,
        _dir: Dir,
        deadline: Instant,
    ) -> Result<Instant, PathError> {
        local::run_split(plan, |s| {
            // SAFETY: parts of `plan`, whose local side is ours; the remote
            // side is too (the peer is this process, its registered memory).
            unsafe { local::memcpy_segments(s) };
            Ok(())
        })?;
        in_time(deadline)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The peer is a verified process of this host: its pools mapped here, else
/// process_vm_readv/writev on its pid, checked against its pidfd around
/// every copy.
pub struct SameHostPath {
    peer: PeerProcess,
    /// The peer's memory pools mapped here. Copies hold the read lock; a
    /// dead peer's mappings are dropped under the write lock.
    pools: RwLock<Vec<PeerMapping>>,
    /// The peer is gone: set before taking the write lock, checked under it.
    gone: AtomicBool,
}

impl std::fmt::Debug for SameHostPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SameHostPath")
            .field("pid", &self.peer.pid())
            .field("mapped_pools", &self.pools().len())
            .finish()
    }
}

impl SameHostPath {
    /// The peer's mapped pools, held for the duration of a copy.
    pub fn pools(&self) -> RwLockReadGuard<'_, Vec<PeerMapping>> {
        self.pools.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Installs the peer's mapped pools (server side, once the client sent
    /// them); none once the peer is gone.
    pub fn set_pools(&self, maps: Vec<PeerMapping>) {
        let mut g = self.pools.write().unwrap_or_else(|p| p.into_inner());
        // Checked under the lock: `peer_gone` sets the flag before taking it.
        if !self.gone.load(Ordering::Acquire) {
            *g = maps;
        }
    }

    fn died(&self) -> PathError {
        PathError::PeerGone(format!("its peer process {} exited", self.peer.pid()))
    }
}

impl DataPath for SameHostPath {
    fn info(&self) -> PathInfo {
        PathInfo {
            kind: Path::SameHost,
            requests_on_control: true,
            serves_tcp_bulk: true,
        }
    }

    /// A same-host copy, bound to the verified peer process by its pidfd. A
    /// write starts only if the peer is alive (never into a process that
    /// took over the pid); every copy counts only if the peer is still alive
    /// after it (then the pid named that process throughout, so a read
    /// returned its bytes and not a pid successor's, and a mapped pool's
    /// bytes are not a dead peer's leftovers). A read starts unless the link
    /// is already marked dead (the liveness watch does that within moments
    /// of the exit): a read racing the peer's exit fails, but may have
    /// written its destination. A read's check is a load of the peer's
    /// liveness word, or a poll of its pidfd when it keeps none
    /// (`PeerProcess::is_alive`); a write's checks always poll the pidfd:
    /// the word is the peer's own memory, and a write into a pid successor
    /// is the one mistake a lying peer must never cause (docs/security.md).
    /// A dead peer is [`PathError::PeerGone`] (the link is marked dead and
    /// the mappings dropped).
    fn transfer(&self, plan: &Plan, dir: Dir, deadline: Instant) -> Result<(), PathError> {
        self.transfer_timed(plan, dir, deadline).map(drop)
    }

    /// [`SameHostPath::transfer`]; its deadline check's clock read is the
    /// one returned (one read after the copy, not two).
    fn transfer_timed(
        &self,
        plan: &Plan,
        dir: Dir,
        deadline: Instant,
    ) -> Result<Instant, PathError> {
        let peer = &self.peer;
        let pools = self.pools();
        let alive = || match dir {
            Dir::Read => peer.is_alive(),
            Dir::Write => peer.poll_alive(),
        };
        if dir == Dir::Write && !alive() {
            drop(pools);
            return Err(self.died());
        }
        let r = copy_same_host(&pools, peer.pid(), plan, dir);
        let alive = alive();
        drop(pools);
        if !alive {
            return Err(self.died());
        }
        r?;
        in_time(deadline)
    }

    fn peer_process(&self) -> Option<&PeerProcess> {
        Some(&self.peer)
    }

    fn peer_gone(&self) {
        self.gone.store(true, Ordering::Release);
        let dropped = std::mem::take(&mut *self.pools.write().unwrap_or_else(|p| p.into_inner()));
        drop(dropped);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

fn copy_same_host(
    pools: &[PeerMapping],
    pid: u32,
    plan: &Plan,
    dir: Dir,
) -> crate::status::Result<()> {
    let vm = |s: &[Segment]| {
        // SAFETY: parts of `plan`, whose local side is ours; the remote side
        // is the verified peer's, checked alive around the copy.
        unsafe { local::vm_copy(pid, s, dir == Dir::Write) }
    };
    if pools.is_empty() {
        // Nothing mapped (user-registered memory): no sorting, no allocation.
        return local::run_split(plan, vm);
    }
    // Remote addresses inside a mapped peer pool are copied with memcpy.
    let translate = |addr: u64, len: u64| pools.iter().find_map(|m| m.translate(addr, len));
    let mut mapped = Vec::new();
    let mut rest = Vec::with_capacity(plan.len());
    for s in plan {
        let remote = if dir == Dir::Read { s.src } else { s.dst };
        match translate(remote, s.len) {
            Some(l) if dir == Dir::Read => mapped.push(Segment {
                dst: s.dst,
                src: l,
                len: s.len,
            }),
            Some(l) => mapped.push(Segment {
                dst: l,
                src: s.src,
                len: s.len,
            }),
            None => rest.push(*s),
        }
    }
    if !mapped.is_empty() {
        local::run_split(&mapped, |s| {
            // SAFETY: the local side is `plan`'s; the remote side translated
            // into a peer pool mapped here, whose bounds `translate` checked.
            unsafe { local::memcpy_segments(s) };
            Ok(())
        })?;
    }
    if !rest.is_empty() {
        local::run_split(&rest, vm)?;
    }
    Ok(())
}
