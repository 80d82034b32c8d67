//! The HCCL data path of a link (acl backend): the link's communicator with
//! every registered region bound (a generated two-rank one owned by the link
//! for `link_clusters`, or the comm's shared one built from the user's rank
//! table for `llmdd_link`), and transfer plans executed as
//! `HcclBatchGet` / `HcclBatchPut` on a stream, synchronised with the
//! transfer's deadline (`sync_kv_timeout`).
//!
//! Streams and descriptor buffers are pooled per link ("lanes"), so concurrent
//! transfers on one link each get their own stream and a steady-state transfer
//! allocates nothing. A plan goes out in calls of at most 256 descriptors
//! (HCCL's limit). A transfer that times out leaves the link unusable
//! (`LinkFailed` for every later transfer) until it is unlinked and linked again:
//! its stream is aborted (`aclrtStreamAbort`) and kept, never reused, until the
//! link closes, and the communicator cannot be trusted (spec §4 common rules:
//! "link must then be re-established").

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use crate::backend::acl::hccl::{DescBuf, GlobalMem, HcclComm, OneSided};
use crate::backend::acl::runtime::{AclContext, Stream};
#[cfg(any(test, feature = "testing"))]
use crate::backend::Communicator;
use crate::backend::{DataPath, DeviceRules, PathError, PathInfo};
use crate::cache::types::Dir;
use crate::cache::types::Plan;
use crate::stats::Path;
use crate::status::{Error, Result, Status};
use crate::{bail, err};

/// How the two ends of a link reach each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Over HCCS (same server on A2, same super pod on A3, and no
    /// `HCCL_INTRA_ROCE_ENABLE=1`): HCCL exports no host memory to the peer.
    pub hccs: bool,
}

/// A stream and the descriptor buffer used with it.
struct Lane {
    stream: Stream,
    descs: DescBuf,
}

/// The live communicator and its lanes. Field order is drop order: streams are
/// destroyed before the communicator they queued work for. The communicator
/// is destroyed with the last reference: here for a link's own one, by the
/// rank-table comm for a shared one.
struct Comm {
    lanes: Mutex<Vec<Lane>>,
    /// Lanes whose stream timed out; kept (not reused) until the link closes.
    stuck: Mutex<Vec<Lane>>,
    comm: Arc<HcclComm>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Communicator created, `prepare` not finished.
    Preparing,
    Ready,
    /// A transfer timed out; the message says which.
    Broken(String),
    Closed,
}

/// The HCCL side of one link.
pub struct HcclLink {
    remote_cluster_id: u64,
    remote_rank: u32,
    topology: Topology,
    ctx: Arc<AclContext>,
    comm: RwLock<Option<Comm>>,
    state: Mutex<State>,
    /// Signalled when the state leaves `Preparing`.
    settled: Condvar,
}

impl std::fmt::Debug for HcclLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HcclLink")
            .field("remote_cluster_id", &self.remote_cluster_id)
            .field("remote_rank", &self.remote_rank)
            .field("state", &*self.lock_state())
            .finish_non_exhaustive()
    }
}

impl HcclLink {
    /// Wraps a communicator whose rank `remote_rank` is the peer cluster, binds
    /// `regions` to it and creates the first lane. Call [`HcclLink::prepare`]
    /// (both ranks) before transferring.
    pub fn new(
        ctx: Arc<AclContext>,
        comm: HcclComm,
        remote_rank: u32,
        remote_cluster_id: u64,
        regions: &[Arc<GlobalMem>],
        topology: Topology,
    ) -> Result<HcclLink> {
        for r in regions {
            comm.bind(r)?;
        }
        ctx.bind_thread()?;
        let lane = Lane {
            stream: ctx.create_stream()?,
            descs: DescBuf::default(),
        };
        Ok(HcclLink {
            remote_cluster_id,
            remote_rank,
            topology,
            ctx,
            comm: RwLock::new(Some(Comm {
                lanes: Mutex::new(vec![lane]),
                stuck: Mutex::new(Vec::new()),
                comm: Arc::new(comm),
            })),
            state: Mutex::new(State::Preparing),
            settled: Condvar::new(),
        })
    }

    /// A link of a rank-table comm on the comm's shared communicator, which
    /// is already created, bound and prepared (so the link is ready); its
    /// rank `remote_rank` is the peer. Streams are created on first use.
    /// Closing the link does not destroy the communicator.
    pub fn shared(
        ctx: Arc<AclContext>,
        comm: Arc<HcclComm>,
        remote_rank: u32,
        remote_cluster_id: u64,
        topology: Topology,
    ) -> HcclLink {
        HcclLink {
            remote_cluster_id,
            remote_rank,
            topology,
            ctx,
            comm: RwLock::new(Some(Comm {
                lanes: Mutex::new(Vec::new()),
                stuck: Mutex::new(Vec::new()),
                comm,
            })),
            state: Mutex::new(State::Ready),
            settled: Condvar::new(),
        }
    }

    /// True if the link runs on `comm` (tests: a rank-table comm's links share
    /// one communicator).
    #[cfg(any(test, feature = "testing"))]
    pub fn uses(&self, comm: &Arc<dyn Communicator>) -> bool {
        let guard = self.comm.read().unwrap_or_else(|p| p.into_inner());
        let theirs = Arc::as_ptr(comm) as *const ();
        guard
            .as_ref()
            .is_some_and(|c| std::ptr::eq(Arc::as_ptr(&c.comm) as *const (), theirs))
    }

    /// The peer's rank in the link's communicator.
    #[cfg(any(test, feature = "testing"))]
    pub fn remote_rank(&self) -> u32 {
        self.remote_rank
    }

    /// How the two ends reach each other.
    pub fn topology(&self) -> Topology {
        self.topology
    }

    /// Connects to the peer and exchanges the bound memory
    /// (`HcclCommPrepare`, both ranks concurrently), waiting at most `timeout`.
    pub fn prepare(&self, timeout: Duration) -> Result<()> {
        let guard = self.comm.read().unwrap_or_else(|p| p.into_inner());
        let Some(c) = guard.as_ref() else {
            bail!(
                NotYetLink,
                "the link to cluster {} is closed",
                self.remote_cluster_id
            );
        };
        self.ctx.bind_thread()?;
        let r = c.comm.prepare(timeout);
        let mut st = self.lock_state();
        if *st == State::Preparing {
            *st = match &r {
                Ok(()) => State::Ready,
                Err(e) => State::Broken(format!("HcclCommPrepare failed: {}", e.message)),
            };
        }
        self.settled.notify_all();
        r
    }

    /// Destroys the lanes and the communicator (after in-flight transfers, which
    /// end by their deadlines). Idempotent.
    pub fn close(&self) {
        *self.lock_state() = State::Closed;
        self.settled.notify_all();
        let c = self.comm.write().unwrap_or_else(|p| p.into_inner()).take();
        if c.is_some() {
            // Streams and the communicator use the device: bind it on this thread.
            if let Err(e) = self.ctx.bind_thread() {
                crate::log_warn!("closing the HCCL link: {}", e.message);
            }
        }
        drop(c);
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ready for transfers? A link still being prepared (the peer may finish its
    /// side of the setup a moment after this side's caller saw the link) is
    /// waited for until `deadline`.
    fn check_usable(&self, deadline: Instant) -> Result<()> {
        let mut st = self.lock_state();
        while *st == State::Preparing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            st = self
                .settled
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match &*st {
            State::Ready => Ok(()),
            State::Preparing => bail!(
                NotYetLink,
                "the link to cluster {} is still being set up",
                self.remote_cluster_id
            ),
            State::Broken(why) => bail!(
                LinkFailed,
                "the link to cluster {} is unusable ({why}); unlink and link again",
                self.remote_cluster_id
            ),
            State::Closed => bail!(
                NotYetLink,
                "the link to cluster {} is closed",
                self.remote_cluster_id
            ),
        }
    }

    fn take_lane(&self, c: &Comm) -> Result<Lane> {
        if let Some(l) = c.lanes.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(l);
        }
        Ok(Lane {
            stream: self.ctx.create_stream()?,
            descs: DescBuf::default(),
        })
    }
}

/// Moves the bytes of `plan` over the link's communicator before `deadline`:
/// `Read` = remote `src` → local `dst` (`HcclBatchGet`), `Write` = local `src`
/// → remote `dst` (`HcclBatchPut`).
///
/// Errors: `Timeout` when the stream does not drain by the deadline (the link
/// is then unusable); `LinkFailed` on a link broken by an earlier timeout;
/// `NotYetLink` on a closed link; the mapped HCCL/ACL status otherwise.
fn run(h: &HcclLink, plan: &Plan, dir: Dir, deadline: Instant) -> Result<()> {
    if plan.is_empty() {
        return Ok(());
    }
    let guard = h.comm.read().unwrap_or_else(|p| p.into_inner());
    let Some(c) = guard.as_ref() else {
        bail!(
            NotYetLink,
            "the link to cluster {} is closed",
            h.remote_cluster_id
        );
    };
    h.check_usable(deadline)?;
    h.ctx.bind_thread()?;
    let op = match dir {
        Dir::Read => OneSided::Get,
        Dir::Write => OneSided::Put,
    };
    let mut lane = h.take_lane(c)?;
    // In calls of at most 256 descriptors (HcclComm::submit).
    let submitted = c
        .comm
        .submit_segments(op, h.remote_rank, plan, &mut lane.descs, &lane.stream);
    // Drain whatever was queued, also after a failed submission.
    let left = deadline.saturating_duration_since(Instant::now());
    let synced = lane.stream.synchronize(left);
    match (submitted, synced) {
        (Ok(()), Ok(())) => {
            c.lanes.lock().unwrap_or_else(|p| p.into_inner()).push(lane);
            Ok(())
        }
        (_, Err(e)) if e.status == Status::Timeout => {
            let why = format!(
                "a transfer did not complete within sync_kv_timeout ({})",
                e.message
            );
            *h.lock_state() = State::Broken(why);
            // The stream was aborted by the failed synchronize; it is destroyed
            // (never reused) when the link closes.
            c.stuck.lock().unwrap_or_else(|p| p.into_inner()).push(lane);
            Err(err!(
                Timeout,
                "transfer with cluster {} exceeded sync_kv_timeout; the link is unusable until unlinked and linked again",
                h.remote_cluster_id
            ))
        }
        // A failed stream is not reused (its state is unknown).
        (Err(e), _) | (Ok(()), Err(e)) => Err(Error::new(
            e.status,
            format!(
                "transfer with cluster {} failed: {}",
                h.remote_cluster_id, e.message
            ),
        )),
    }
}

impl DataPath for HcclLink {
    /// The small requests go on the link's TCP connections (HCCL moves the
    /// bytes); device memory is not host-addressable: it is never served
    /// over TCP.
    fn info(&self) -> PathInfo {
        PathInfo {
            kind: Path::Hccl,
            requests_on_control: false,
            serves_tcp_bulk: false,
        }
    }

    fn transfer(&self, plan: &Plan, dir: Dir, deadline: Instant) -> Result<(), PathError> {
        run(self, plan, dir, deadline).map_err(PathError::Failed)
    }

    fn device_rules(&self) -> Option<DeviceRules> {
        Some(DeviceRules {
            hccs: self.topology.hccs,
        })
    }

    fn close(&self) {
        HcclLink::close(self);
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
