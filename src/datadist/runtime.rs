//! What an instance runs, and its teardown: the threads it tracks (joined at
//! finalize), its use of the process's control plane (taken on first need;
//! the last user stops it), the count of its served connections (finalize
//! waits for none to be left) and its hold on the process's copy helpers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::status::Result;
use crate::transfer::serve::ServedCount;
use crate::transport::{parallel, poller};
use crate::{bail, err, log_warn};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The threads and shared machinery of one instance.
pub(crate) struct Runtime {
    /// Set once finalize has begun.
    closing: AtomicBool,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Connections of this instance served by the control plane's poller.
    served: Arc<ServedCount>,
    /// This instance's use of the process's control plane.
    reactor: Mutex<Option<Arc<poller::Handle>>>,
    /// Keeps the process's copy helpers alive until finalize.
    copy_helpers: Mutex<Option<parallel::Users>>,
}

impl Runtime {
    /// Nothing running yet; holds the process's copy helpers.
    pub(crate) fn new() -> Runtime {
        Runtime {
            closing: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            served: Arc::default(),
            reactor: Mutex::new(None),
            copy_helpers: Mutex::new(Some(parallel::Users::new())),
        }
    }

    /// True once finalize has begun.
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Finalize begins: no new control-plane use from here on.
    pub(crate) fn begin_close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// The process's control plane, started if this instance is its first user.
    pub(crate) fn reactor(&self) -> Result<Arc<poller::Handle>> {
        let mut g = lock(&self.reactor);
        if let Some(h) = g.as_ref() {
            return Ok(h.clone());
        }
        if self.is_closing() {
            bail!(Failed, "instance is finalizing");
        }
        let h = Arc::new(poller::acquire()?);
        *g = Some(h.clone());
        Ok(h)
    }

    /// The count of this instance's served connections.
    pub(crate) fn served(&self) -> &Arc<ServedCount> {
        &self.served
    }

    /// Spawns a tracked thread (joined at finalize), reporting failure.
    pub(crate) fn try_spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let mut t = lock(&self.threads);
        t.retain(|h| !h.is_finished());
        let h = std::thread::Builder::new()
            .name(name.to_string())
            .stack_size(256 * 1024)
            .spawn(f)
            .map_err(|e| err!(Failed, "could not spawn thread {name}: {e}"))?;
        t.push(h);
        Ok(())
    }

    /// Once every served connection was shut down: waits up to `bound` for
    /// the poller to see each end (none may touch the instance's memory
    /// after finalize), releases the control plane (the last user stops it
    /// and joins its threads), then joins the tracked threads.
    pub(crate) fn stop(&self, bound: Duration) {
        if !self.served.wait_zero(bound) {
            log_warn!(
                "finalize: connections still served after {} ms",
                bound.as_millis()
            );
        }
        let reactor = lock(&self.reactor).take();
        drop(reactor);
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.threads));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    /// Lets go of the copy helpers (the last instance of the process joins them).
    pub(crate) fn release_copy_helpers(&self) {
        drop(lock(&self.copy_helpers).take());
    }
}
