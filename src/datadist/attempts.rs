//! The `link_clusters` attempts of an instance: those under way (LINKING)
//! and the reasons of those that failed (FAILED until the cluster is linked
//! or unlinked), kept for at most a bounded number of clusters, the oldest
//! forgotten first. `link_state.rs` answers the state queries from them.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::status::{Result, Status};

/// `link_clusters` attempts of a session: under way, and failed.
pub(crate) struct Attempts {
    inner: Mutex<Inner>,
    /// Most failure reasons kept (`llmdd.MaxLinks`, at least 1).
    cap: usize,
}

#[derive(Default)]
struct Inner {
    dialing: HashMap<u64, usize>,
    /// Why the last attempt failed, with its order (oldest forgotten first).
    failed: HashMap<u64, (u64, String)>,
    seq: u64,
}

/// Marks a `link_clusters` to one cluster as under way until dropped.
pub(crate) struct Dialing<'a> {
    attempts: &'a Attempts,
    cluster: u64,
}

impl Drop for Dialing<'_> {
    fn drop(&mut self) {
        let mut a = self.attempts.lock();
        if let Some(n) = a.dialing.get_mut(&self.cluster) {
            *n -= 1;
            if *n == 0 {
                a.dialing.remove(&self.cluster);
            }
        }
    }
}

impl Attempts {
    /// Keeps the failure reasons of at most `cap` clusters (at least 1).
    pub(crate) fn new(cap: usize) -> Attempts {
        Attempts {
            inner: Mutex::default(),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks a link_clusters to `cluster` as under way until the guard
    /// drops; [`Attempts::done`] records its outcome.
    pub(crate) fn dialing(&self, cluster: u64) -> Dialing<'_> {
        *self.lock().dialing.entry(cluster).or_default() += 1;
        Dialing {
            attempts: self,
            cluster,
        }
    }

    /// Records how a link_clusters to `cluster` ended: a failure is FAILED
    /// until the cluster is linked or unlinked (not one refused because a
    /// live link exists: that link answers).
    pub(crate) fn done(&self, cluster: u64, r: &Result<()>) {
        let mut a = self.lock();
        match r {
            Ok(()) => {
                a.failed.remove(&cluster);
            }
            Err(e) if matches!(e.status, Status::AlreadyLink | Status::ParamInvalid) => {}
            Err(e) => {
                if !a.failed.contains_key(&cluster) && a.failed.len() >= self.cap {
                    let oldest = a.failed.iter().min_by_key(|(_, v)| v.0).map(|(k, _)| *k);
                    if let Some(k) = oldest {
                        a.failed.remove(&k);
                    }
                }
                a.seq += 1;
                let seq = a.seq;
                a.failed.insert(
                    cluster,
                    (seq, format!("link_clusters failed: {}", e.message)),
                );
            }
        }
    }

    /// Forgets a failed attempt to `cluster` (it was linked or unlinked).
    pub(crate) fn forget(&self, cluster: u64) {
        self.lock().failed.remove(&cluster);
    }

    /// True while a link_clusters to `cluster` is under way.
    pub(crate) fn is_dialing(&self, cluster: u64) -> bool {
        self.lock().dialing.contains_key(&cluster)
    }

    /// Why the last link_clusters to `cluster` failed, if it did.
    pub(crate) fn failure(&self, cluster: u64) -> Option<String> {
        self.lock().failed.get(&cluster).map(|(_, why)| why.clone())
    }

    /// The clusters being dialled or whose last attempt failed (may repeat).
    pub(crate) fn clusters(&self) -> Vec<u64> {
        let a = self.lock();
        a.dialing.keys().chain(a.failed.keys()).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Error;

    fn failed(why: &str) -> Result<()> {
        Err(Error::new(Status::LinkFailed, why.to_string()))
    }

    #[test]
    fn dialing_lasts_as_long_as_its_guards() {
        let a = Attempts::new(4);
        let g1 = a.dialing(7);
        let g2 = a.dialing(7);
        assert!(a.is_dialing(7));
        drop(g1);
        assert!(a.is_dialing(7), "a second attempt is still under way");
        drop(g2);
        assert!(!a.is_dialing(7));
        assert!(a.clusters().is_empty());
    }

    #[test]
    fn a_failure_is_kept_until_success_or_forget() {
        let a = Attempts::new(4);
        a.done(1, &failed("peer refused"));
        assert_eq!(
            a.failure(1).as_deref(),
            Some("link_clusters failed: peer refused")
        );
        a.done(1, &Ok(()));
        assert_eq!(a.failure(1), None);
        a.done(2, &failed("timeout"));
        a.forget(2);
        assert_eq!(a.failure(2), None);
    }

    #[test]
    fn refusals_that_a_live_link_answers_are_not_failures() {
        let a = Attempts::new(4);
        for status in [Status::AlreadyLink, Status::ParamInvalid] {
            a.done(3, &Err(Error::new(status, "no".to_string())));
        }
        assert_eq!(a.failure(3), None);
    }

    #[test]
    fn the_oldest_failure_goes_first_past_the_cap() {
        let a = Attempts::new(2);
        a.done(1, &failed("a"));
        a.done(2, &failed("b"));
        a.done(1, &failed("a again")); // replaces, evicts nothing
        assert!(a.failure(2).is_some());
        a.done(3, &failed("c"));
        let mut kept = a.clusters();
        kept.sort_unstable();
        // 2 is now the oldest (1 failed again after it).
        assert_eq!(kept, vec![1, 3]);
        assert_eq!(Attempts::new(0).cap, 1, "at least one reason is kept");
    }
}
