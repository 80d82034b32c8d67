//! Asynchronous transfer requests (`TransferAsync`): a request is posted to
//! the engine's worker pool and moves through WAITING to COMPLETED, TIMEOUT
//! or FAILED; its status can be polled or waited for, and it can be
//! cancelled (a queued request never starts; a running one stops at the next
//! chunk boundary of its plan and reports FAILED).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use crate::status::{Error, Status};

/// HIXL's `TransferStatus`: WAITING 0, COMPLETED 1, TIMEOUT 2, FAILED 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ReqStatus {
    /// `WAITING`: queued or running.
    Waiting = 0,
    /// `COMPLETED`: every descriptor was transferred.
    Completed = 1,
    /// `TIMEOUT`: ran past its deadline and was stopped.
    Timeout = 2,
    /// `FAILED`: failed or was cancelled (`error` says why).
    Failed = 3,
}

/// The outcome of a finished request.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// How the request ended (never `Waiting`).
    pub status: ReqStatus,
    /// The llmdd status (0 on success) and why it failed.
    pub error: Option<Error>,
}

/// One posted request.
pub struct Request {
    /// Order of posting (batch queries report in this order).
    pub seq: u64,
    /// HIXL's `TransferArgs::user_data`, handed back in batch results.
    pub user_data: usize,
    cancel: AtomicBool,
    done: Mutex<Option<Outcome>>,
    cv: Condvar,
}

impl Request {
    /// A new waiting request.
    pub fn new(seq: u64, user_data: usize) -> Request {
        Request {
            seq,
            user_data,
            cancel: AtomicBool::new(false),
            done: Mutex::new(None),
            cv: Condvar::new(),
        }
    }

    /// The cancellation flag the transfer polls.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }

    /// Asks the request to stop; true if it had not finished yet.
    pub fn cancel(&self) -> bool {
        self.cancel.store(true, Ordering::Release);
        self.outcome().is_none()
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Records the result (the first one counts) and wakes waiters.
    pub fn finish(&self, r: crate::Result<()>) {
        let mut g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_some() {
            return;
        }
        *g = Some(match r {
            Ok(()) => Outcome {
                status: ReqStatus::Completed,
                error: None,
            },
            Err(e) => Outcome {
                status: if e.status == Status::Timeout {
                    ReqStatus::Timeout
                } else {
                    ReqStatus::Failed
                },
                error: Some(e),
            },
        });
        drop(g);
        self.cv.notify_all();
    }

    /// The outcome, if finished.
    pub fn outcome(&self) -> Option<Outcome> {
        self.done.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until finished or `deadline`; the outcome if finished.
    pub fn wait(&self, deadline: Option<Instant>) -> Option<Outcome> {
        let mut g = self.done.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(o) = g.as_ref() {
                return Some(o.clone());
            }
            match deadline {
                None => g = self.cv.wait(g).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    g = self
                        .cv
                        .wait_timeout(g, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_result_wins_and_maps_statuses() {
        let r = Request::new(1, 7);
        assert!(r
            .wait(Some(Instant::now() + Duration::from_millis(5)))
            .is_none());
        r.finish(Err(crate::err!(Timeout, "slow")));
        r.finish(Ok(()));
        let o = r.outcome().unwrap();
        assert_eq!(o.status, ReqStatus::Timeout);
        assert!(!r.cancel());
        let r = Request::new(2, 0);
        assert!(r.cancel());
        r.finish(Err(crate::err!(LinkFailed, "gone")));
        assert_eq!(r.wait(None).unwrap().status, ReqStatus::Failed);
    }
}
