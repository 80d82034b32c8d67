//! The client's half of "when a link is gone, both ends know it": one thread
//! per session polls the control connection of every link this instance
//! dialed. The server closes that connection whenever it drops the link
//! (unlink, forced unlink, finalize, its process dying), and keepalive errors
//! it when the server's host is gone, so a hang-up there marks the link dead
//! at once: transfers fail with `LLM_LINK_FAILED`, and `link_clusters` to that
//! cluster replaces the dead entry (no forced unlink needed).

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, Weak};

use crate::datadist::link::Link;
use crate::datadist::session::Session;
use crate::log_warn;
use crate::status::Result;
use crate::transport::tcp::{eventfd, hangup, notify};

/// Longest poll without a wake-up (a safety net: teardown and new links wake
/// the thread through their sockets or the eventfd).
const POLL_MS: i32 = 5000;

/// The watched control connections of one session.
#[derive(Default)]
pub(crate) struct Watch {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// eventfd waking the thread, once it runs.
    wake: Option<i32>,
    links: Vec<(Weak<Link>, Arc<TcpStream>)>,
}

impl Watch {
    /// Watches `link`'s control connection, starting the thread on first use.
    pub(crate) fn add(&self, session: &Session, link: &Arc<Link>) -> Result<()> {
        let Some(sock) = link.control_socket() else {
            return Ok(());
        };
        let mut g = self.lock();
        let wake = match g.wake {
            Some(w) => w,
            None => {
                let wake = eventfd()?;
                let me = session.weak();
                if let Err(e) = session.try_spawn("llmdd-watch", move || run(me, wake)) {
                    // SAFETY: closing our eventfd (the thread never started).
                    unsafe { libc::close(wake) };
                    return Err(e);
                }
                g.wake = Some(wake);
                wake
            }
        };
        g.links.push((Arc::downgrade(link), sock));
        notify(wake);
        Ok(())
    }

    /// Wakes the thread so that it sees the session closing and exits.
    pub(crate) fn stop(&self) {
        if let Some(w) = self.lock().wake {
            notify(w);
        }
    }

    /// Releases the eventfd and the watched sockets (after the thread was
    /// joined).
    pub(crate) fn close(&self) {
        let mut g = self.lock();
        if let Some(w) = g.wake.take() {
            // SAFETY: closing our eventfd; its thread has exited.
            unsafe { libc::close(w) };
        }
        g.links.clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The links still worth watching (drops closed ones and their sockets).
    fn snapshot(&self) -> Vec<(Arc<Link>, Arc<TcpStream>)> {
        let mut g = self.lock();
        g.links
            .retain(|(l, _)| l.upgrade().is_some_and(|l| !l.is_closed()));
        g.links
            .iter()
            .filter_map(|(l, s)| Some((l.upgrade()?, s.clone())))
            .collect()
    }
}

fn run(me: Weak<Session>, wake: i32) {
    loop {
        let watched = match me.upgrade() {
            Some(s) if !s.is_closing() => s.watch_state().snapshot(),
            _ => return,
        };
        let mut fds: Vec<libc::pollfd> = std::iter::once(wake)
            .chain(watched.iter().map(|(_, s)| s.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: if fd == wake {
                    libc::POLLIN
                } else {
                    libc::POLLRDHUP
                },
                revents: 0,
            })
            .collect();
        // SAFETY: valid pollfds; `watched` keeps every socket open.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as _, POLL_MS) };
        if r <= 0 {
            continue;
        }
        if fds[0].revents != 0 {
            let mut v: u64 = 0;
            // SAFETY: reading 8 bytes from our eventfd.
            unsafe { libc::read(wake, &mut v as *mut u64 as *mut _, 8) };
        }
        let Some(s) = me.upgrade() else { return };
        let mut unlinking = false;
        for ((link, sock), p) in watched.iter().zip(&fds[1..]) {
            if p.revents == 0 || link.is_closed() {
                continue;
            }
            if link.is_draining() {
                // Its unlink is under way and ends it; poll again shortly.
                unlinking = true;
                continue;
            }
            if let Some(why) = hangup(sock) {
                log_warn!(
                    "link to cluster {} is gone ({why}); transfers on it fail until it is linked again or unlinked",
                    link.remote_cluster_id
                );
                link.mark_dead(&format!("the server ended it: {why}"));
            }
        }
        drop(s);
        if unlinking {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}
