//! Per-link statistics, always on: relaxed atomic counters in one struct per
//! link, updated without a lock or an allocation on the transfer path (the
//! last error's message, on the failure path only, is kept under a mutex).
//!
//! The initiator counts each operation it starts on a link (a pull or push
//! call, one layer of one config of an async task): its bytes and its count
//! by direction and path when it succeeds, its status when it fails, and its
//! latency (start to completion, key resolution included) in a histogram per
//! direction. (Operations in flight are the link's own count, which unlink
//! waits on.) The serving side counts the TCP requests it serves (same-host
//! and HCCL transfers are one-sided: the serving side never sees them).

pub mod histogram;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::status::Error;
use histogram::{Histogram, Percentiles};

/// How a link moves bytes (fixed for its life).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Path {
    /// Both ends in this process: memcpy.
    SameProcess = 0,
    /// Both ends on this host: mapped pools or process_vm_readv/writev.
    SameHost = 1,
    /// TCP connections.
    Tcp = 2,
    /// HCCL one-sided batches (acl backend).
    Hccl = 3,
}

/// Number of [`Path`]s.
pub(crate) const PATHS: usize = 4;

/// Direction of an operation, seen from the side that starts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Direction {
    /// Remote → local (read).
    Pull = 0,
    /// Local → remote (write).
    Push = 1,
}

/// Slots of the per-status error counters.
pub(crate) const ERROR_SLOTS: usize = 32;

/// The error-counter slot of `status`: the low byte of an `LLM_*`
/// `0x5010B0xx` code (1..=28), 0 for `LLM_FAILED`, 29 for
/// `LLM_DEVICE_MEM_ERROR`, 30 for `LLM_SUSPECT_REMOTE_ERROR`, 31 for
/// anything else (`LLM_SUCCESS` is never counted as an error).
pub fn error_slot(code: u32) -> usize {
    match code {
        0xFFFF_FFFF => 0,
        c if (0x5010_B001..=0x5010_B01C).contains(&c) => (c & 0xFF) as usize,
        507_053 => 29,
        507_057 => 30,
        _ => 31,
    }
}

/// Nanoseconds since the Unix epoch, now.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The last failure of an operation on a link.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LastError {
    /// The llmdd status code it failed with (`LLMDD_*`).
    pub status: u32,
    /// Why it failed.
    pub message: String,
    /// When it failed (ns since the Unix epoch).
    pub unix_ns: u64,
}

/// The counters of one link.
pub struct LinkStats {
    since_ns: AtomicU64,
    ops: [[AtomicU64; PATHS]; 2],
    bytes: [[AtomicU64; PATHS]; 2],
    errors: [AtomicU64; ERROR_SLOTS],
    latency: [Histogram; 2],
    served_requests: [AtomicU64; 2],
    served_bytes: [AtomicU64; 2],
    served_refused: AtomicU64,
    last_error: Mutex<Option<LastError>>,
}

impl Default for LinkStats {
    fn default() -> Self {
        LinkStats::since(unix_ns())
    }
}

impl LinkStats {
    /// Counters counting from `since_ns` (ns since the Unix epoch).
    pub fn since(since_ns: u64) -> LinkStats {
        LinkStats {
            since_ns: AtomicU64::new(since_ns),
            ops: Default::default(),
            bytes: Default::default(),
            errors: Default::default(),
            latency: Default::default(),
            served_requests: Default::default(),
            served_bytes: Default::default(),
            served_refused: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

/// A plain copy of a link's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Counting since (link creation or the last reset; ns since the epoch).
    pub since_ns: u64,
    /// Completed operations and their bytes, `[direction][path]`.
    pub ops: [[u64; PATHS]; 2],
    /// Bytes of those operations, `[direction][path]`.
    pub bytes: [[u64; PATHS]; 2],
    /// Failed operations by [`error_slot`].
    pub errors: [u64; ERROR_SLOTS],
    /// Operations in flight (filled in by the link: not counted here).
    pub in_flight: u64,
    /// Latency of completed operations per direction (ns).
    pub latency: [Percentiles; 2],
    /// Requests served to the peer and their bytes, `[read, write]`.
    pub served_requests: [u64; 2],
    /// Bytes of the served requests, `[read, write]`.
    pub served_bytes: [u64; 2],
    /// Requests of the peer refused (access rules, bad ranges).
    pub served_refused: u64,
    /// The last failed operation, `None` if none failed since `since_ns`.
    pub last_error: Option<LastError>,
}

impl Snapshot {
    /// Failed operations, all statuses.
    pub fn failed(&self) -> u64 {
        self.errors.iter().sum()
    }
}

/// One operation under way; [`Op::finish`] records its outcome (dropped
/// without finishing, a panic, it counts nothing).
pub struct Op<'a> {
    stats: &'a LinkStats,
    dir: Direction,
    start: Instant,
    end: Option<Instant>,
    bytes: u64,
}

impl Op<'_> {
    /// Sets the bytes the operation moves (counted if it succeeds).
    pub fn set_bytes(&mut self, n: u64) {
        self.bytes = n;
    }

    /// When the operation started: callers derive their deadline from it
    /// rather than reading the clock again.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// The operation's work ended at `t`, a clock read its caller made
    /// anyway (a transfer's deadline check): [`Op::finish`] takes its
    /// latency from it instead of reading the clock again.
    pub fn ended_at(&mut self, t: Instant) {
        self.end = Some(t);
    }

    /// Records the outcome of the operation over `path`.
    pub fn finish<T>(self, path: Path, r: &Result<T, Error>) {
        let s = self.stats;
        let d = self.dir as usize;
        match r {
            Ok(_) => {
                let end = self.end.unwrap_or_else(Instant::now);
                let ns = end
                    .saturating_duration_since(self.start)
                    .as_nanos()
                    .min(u64::MAX as u128) as u64;
                s.ops[d][path as usize].fetch_add(1, Ordering::Relaxed);
                s.bytes[d][path as usize].fetch_add(self.bytes, Ordering::Relaxed);
                s.latency[d].record(ns);
            }
            Err(e) => s.failed(e),
        }
    }
}

impl LinkStats {
    /// Starts counting one operation in direction `dir`.
    pub fn start(&self, dir: Direction) -> Op<'_> {
        self.start_at(dir, Instant::now())
    }

    /// Starts timing an operation that began at `start` (one handed from
    /// the thread that began it to another).
    pub fn start_at(&self, dir: Direction, start: Instant) -> Op<'_> {
        Op {
            stats: self,
            dir,
            start,
            end: None,
            bytes: 0,
        }
    }

    /// Counts a failed operation (also one refused before it started).
    pub fn failed(&self, e: &Error) {
        let code = e.status.code();
        self.errors[error_slot(code)].fetch_add(1, Ordering::Relaxed);
        let last = LastError {
            status: code,
            message: e.message.clone(),
            unix_ns: unix_ns(),
        };
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    }

    /// Counts a request served to the peer: `write` (else a read) of `bytes`.
    pub fn served(&self, write: bool, bytes: u64) {
        let i = write as usize;
        self.served_requests[i].fetch_add(1, Ordering::Relaxed);
        self.served_bytes[i].fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a request of the peer refused.
    pub fn refused(&self) {
        self.served_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Zeroes every counter (operations running now still finish and are
    /// counted afterwards).
    pub fn reset(&self) {
        let zero = |a: &AtomicU64| a.store(0, Ordering::Relaxed);
        self.ops.iter().chain(&self.bytes).flatten().for_each(zero);
        self.errors.iter().for_each(zero);
        self.served_requests.iter().for_each(zero);
        self.served_bytes.iter().for_each(zero);
        zero(&self.served_refused);
        self.latency.iter().for_each(Histogram::reset);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.since_ns.store(unix_ns(), Ordering::Relaxed);
    }

    /// A copy of the counters (each read on its own: not one instant).
    pub fn snapshot(&self) -> Snapshot {
        LinkStats::snapshot_all(&[self])
    }

    /// The counters of several links added up (the two links of a pair
    /// linked both ways): sums, merged latency histograms, the earliest
    /// `since_ns` and the latest error.
    pub fn snapshot_all(all: &[&LinkStats]) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut s = Snapshot {
            since_ns: all.iter().map(|l| load(&l.since_ns)).min().unwrap_or(0),
            ..Snapshot::default()
        };
        for l in all {
            for d in 0..2 {
                for p in 0..PATHS {
                    s.ops[d][p] += load(&l.ops[d][p]);
                    s.bytes[d][p] += load(&l.bytes[d][p]);
                }
                s.served_requests[d] += load(&l.served_requests[d]);
                s.served_bytes[d] += load(&l.served_bytes[d]);
            }
            for (n, e) in s.errors.iter_mut().zip(&l.errors) {
                *n += load(e);
            }
            s.served_refused += load(&l.served_refused);
            let last = l.last_error.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = last.as_ref() {
                if s.last_error
                    .as_ref()
                    .map_or(true, |x| x.unix_ns < e.unix_ns)
                {
                    s.last_error = Some(e.clone());
                }
            }
        }
        s.latency = [0, 1].map(|d| {
            let hs: Vec<&Histogram> = all.iter().map(|l| &l.latency[d]).collect();
            Histogram::percentiles_of(&hs)
        });
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;
    use std::time::Duration;

    #[test]
    fn error_slots() {
        assert_eq!(error_slot(Status::Failed.code()), 0);
        assert_eq!(error_slot(Status::KvCacheNotExist.code()), 2);
        assert_eq!(error_slot(Status::LinkFailed.code()), 9);
        assert_eq!(error_slot(Status::Timeout.code()), 0x1A);
        assert_eq!(error_slot(Status::OutOfMemory.code()), 28);
        assert_eq!(error_slot(Status::DeviceMemError.code()), 29);
        assert_eq!(error_slot(Status::SuspectRemoteError.code()), 30);
        assert_eq!(error_slot(12345), 31);
        // Every status has a slot of its own.
        let mut seen = std::collections::HashSet::new();
        for s in Status::ALL.iter().filter(|s| **s != Status::Success) {
            assert!(seen.insert(error_slot(s.code())), "{s:?}");
        }
    }

    #[test]
    fn an_op_ended_at_a_given_instant_takes_its_latency_from_it() {
        let s = LinkStats::default();
        let t0 = Instant::now();
        let mut op = s.start_at(Direction::Pull, t0);
        op.ended_at(t0 + Duration::from_millis(5));
        // Finished well after that instant: the latency is still 5 ms.
        std::thread::sleep(Duration::from_millis(20));
        op.finish(Path::SameHost, &Ok::<(), Error>(()));
        let p = s.snapshot().latency[0];
        assert_eq!(p.count, 1);
        assert_eq!(p.max, 5_000_000, "{p:?}");
        // Without it, the clock at finish.
        let op = s.start_at(Direction::Push, t0);
        op.finish(Path::SameHost, &Ok::<(), Error>(()));
        assert!(s.snapshot().latency[1].max >= 20_000_000);
    }

    #[test]
    fn ops_bytes_errors_and_reset() {
        let s = LinkStats::default();
        let mut op = s.start(Direction::Pull);
        op.set_bytes(16384);
        op.finish(Path::Tcp, &Ok::<(), Error>(()));
        let op = s.start(Direction::Push);
        op.finish(
            Path::Tcp,
            &Err::<(), _>(Error::new(Status::Timeout, "slow")),
        );
        s.served(true, 100);
        s.refused();
        let snap = s.snapshot();
        assert_eq!(snap.ops[0][Path::Tcp as usize], 1);
        assert_eq!(snap.bytes[0][Path::Tcp as usize], 16384);
        assert_eq!(snap.ops[1], [0; PATHS]);
        assert_eq!(snap.errors[0x1A], 1);
        assert_eq!(snap.failed(), 1);
        assert_eq!(snap.latency[0].count, 1);
        assert_eq!(snap.latency[1].count, 0);
        assert_eq!(
            (snap.served_requests, snap.served_bytes),
            ([0, 1], [0, 100])
        );
        assert_eq!(snap.served_refused, 1);
        let last = snap.last_error.expect("last error");
        assert_eq!(
            (last.status, last.message.as_str()),
            (Status::Timeout.code(), "slow")
        );
        assert!(last.unix_ns >= snap.since_ns);
        s.reset();
        let z = s.snapshot();
        assert_eq!(
            Snapshot {
                since_ns: 0,
                ..z.clone()
            },
            Snapshot::default()
        );
        assert!(z.since_ns >= last.unix_ns);
    }

    #[test]
    fn an_op_dropped_unfinished_counts_nothing() {
        let s = LinkStats::default();
        let _unfinished = s.start(Direction::Pull);
        let snap = s.snapshot();
        assert_eq!(
            (snap.failed(), snap.ops[0][0], snap.latency[0].count),
            (0, 0, 0)
        );
    }
}
