//! The bounded inbox of notifications a session receives from its peers
//! (the `Notify` frame, the byte-addressed engine's `SendNotify`). Disabled (every
//! notification refused) until an engine enables it; once enabled it holds at
//! most `capacity` notifications, each at most [`MAX_NAME`] + [`MAX_MSG`]
//! bytes, so no peer can grow it without limit: a notification that does not
//! fit is refused with a status the sender sees.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::bail;
use crate::status::Result;

/// Longest notification name, in bytes (HIXL's `kMaxNotifyLength`).
pub const MAX_NAME: usize = 1024;
/// Longest notification message, in bytes (HIXL's `kMaxNotifyLength`).
pub const MAX_MSG: usize = 1024;
/// Default number of notifications an engine's inbox holds.
pub const DEFAULT_CAPACITY: usize = 4096;

/// One received notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Notification name (at most [`MAX_NAME`] bytes).
    pub name: String,
    /// Notification message (at most [`MAX_MSG`] bytes).
    pub msg: String,
}

/// Checks a notification's sizes (sender and receiver apply the same rule).
pub fn check_sizes(name: &str, msg: &str) -> Result<()> {
    if name.len() > MAX_NAME {
        bail!(
            ParamInvalid,
            "notify name is {} bytes; at most {MAX_NAME}",
            name.len()
        );
    }
    if msg.len() > MAX_MSG {
        bail!(
            ParamInvalid,
            "notify message is {} bytes; at most {MAX_MSG}",
            msg.len()
        );
    }
    Ok(())
}

/// A bounded FIFO of received notifications.
#[derive(Default)]
pub struct Inbox {
    capacity: AtomicUsize,
    queue: Mutex<VecDeque<Notice>>,
}

impl Inbox {
    /// Starts accepting notifications, holding at most `capacity` of them.
    pub fn enable(&self, capacity: usize) {
        self.capacity.store(capacity, Ordering::Release);
    }

    /// Queues a notification from a peer, or says why it is refused.
    pub fn push(&self, name: String, msg: String) -> Result<()> {
        let cap = self.capacity.load(Ordering::Acquire);
        if cap == 0 {
            bail!(
                FeatureNotEnabled,
                "this instance does not receive notifications (it is not a transfer engine)"
            );
        }
        check_sizes(&name, &msg)?;
        let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= cap {
            bail!(
                OutOfMemory,
                "the receiver's notification queue is full ({cap} unread)"
            );
        }
        q.push_back(Notice { name, msg });
        Ok(())
    }

    /// The oldest notification, removed.
    pub fn pop(&self) -> Option<Notice> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Puts back a notification taken with [`Inbox::pop`] (at the front).
    pub fn unpop(&self, n: Notice) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_front(n);
    }

    /// Takes every queued notification, oldest first.
    pub fn drain(&self) -> Vec<Notice> {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_disabled_by_default() {
        let i = Inbox::default();
        assert!(i.push("a".into(), "b".into()).is_err());
        i.enable(2);
        i.push("a".into(), "1".into()).unwrap();
        i.push("a".into(), "2".into()).unwrap();
        let e = i.push("a".into(), "3".into()).unwrap_err();
        assert_eq!(e.status, crate::Status::OutOfMemory);
        assert_eq!(i.pop().unwrap().msg, "1");
        i.push("a".into(), "3".into()).unwrap();
        let all: Vec<String> = i.drain().into_iter().map(|n| n.msg).collect();
        assert_eq!(all, ["2", "3"]);
        assert!(i.pop().is_none());
    }

    #[test]
    fn sizes_are_capped() {
        let i = Inbox::default();
        i.enable(8);
        let long = "x".repeat(MAX_NAME + 1);
        assert_eq!(
            i.push(long, String::new()).unwrap_err().status,
            crate::Status::ParamInvalid
        );
        assert!(i.push("n".into(), "y".repeat(MAX_MSG)).is_ok());
    }
}
