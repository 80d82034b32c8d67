//! The link's TCP connections: request connections this side opens (forward,
//! client) or asks its client for (reverse, server), the idle pool they return
//! to, and the caps on both; bulk bytes never use the control connection.

use super::*;

impl Link {
    /// Counts a connection on which this side will send requests, before it
    /// is ready: from now on a request waits for it instead of failing for
    /// lack of connections. [`Link::add_request_conn`] or
    /// [`Link::drop_expected_conn`] follows.
    pub fn expect_request_conn(&self) {
        self.conns.fetch_add(1, Ordering::AcqRel);
    }

    /// Adds the expected connection (already tracked, see [`Link::try_track`]).
    pub fn add_request_conn(&self, conn: Conn) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((conn, Instant::now()));
        self.conn_cv.notify_one();
    }

    /// The expected connection never became ready.
    pub fn drop_expected_conn(&self) {
        self.conns.fetch_sub(1, Ordering::AcqRel);
        self.conn_cv.notify_all();
    }

    /// Opens one more connection to the server and attaches it to this link
    /// (client side only), within `deadline`. `reverse`: the server sends its
    /// requests on it (the caller serves it); else this side does.
    fn attach(&self, reverse: bool, deadline: Instant) -> Result<Conn> {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut c = Conn::connect(&self.remote_addr, left, self.conn_opts)?;
        c.send(
            &Msg::Attach {
                cluster_id: self.local_cluster_id,
                link_token: self.token,
                reverse,
            },
            Some(deadline),
        )?;
        let what = if reverse {
            "attaching a reverse connection"
        } else {
            "attaching a connection"
        };
        match c.recv(Some(deadline))? {
            Msg::Reply { status, message } => check_reply(status, &message, what)?,
            m => bail!(LinkFailed, "unexpected reply {} to Attach", m.msg_type()),
        }
        self.track(&c);
        Ok(c)
    }

    /// Opens one more request connection to the server (client side only).
    fn open_forward(&self, deadline: Instant) -> Result<Conn> {
        let mut c = self.attach(false, deadline)?;
        c.set_frame_limit(crate::transport::wire::MAX_PAYLOAD);
        Ok(c)
    }

    /// Opens a reverse connection, on which the server sends its requests
    /// (client side only); the caller serves it.
    pub fn open_reverse(&self, deadline: Instant) -> Result<Conn> {
        self.attach(true, deadline)
    }

    /// Takes a connection for one request, opening a new one (client) when all
    /// are busy, else waiting until `deadline`.
    pub fn take_conn(self: &Arc<Self>, deadline: Instant) -> Result<ConnGuard> {
        let mut asked = false;
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            self.check_open()?;
            if let Some((c, _)) = idle.pop() {
                return Ok(ConnGuard {
                    link: self.clone(),
                    conn: Some(c),
                });
            }
            let n = self.conns.load(Ordering::Acquire);
            if self.can_open_forward(n) {
                self.conns.fetch_add(1, Ordering::AcqRel);
                drop(idle);
                match self.open_forward(deadline) {
                    Ok(c) => {
                        return Ok(ConnGuard {
                            link: self.clone(),
                            conn: Some(c),
                        })
                    }
                    Err(e) => {
                        let left = self.conns.fetch_sub(1, Ordering::AcqRel) - 1;
                        self.conn_cv.notify_one();
                        if left == 0 || self.is_closed() {
                            return Err(e);
                        }
                        // The server allows no more (llmdd.MaxConnsPerLink) or
                        // cannot take one now: make do with the ones we have.
                        self.make_do(left, "", &e);
                        idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                }
            }
            // One ask per call: the connection it brought is counted before
            // the client's reply but reaches the idle list just after, so
            // asking again at once would open a second one.
            if !asked && self.can_ask_reverse(n) && !self.asking.swap(true, Ordering::AcqRel) {
                drop(idle);
                asked = true;
                let r = self.ask_reverse(deadline);
                self.asking.store(false, Ordering::Release);
                self.conn_cv.notify_all();
                if let Err(e) = r {
                    if n == 0 || self.is_closed() {
                        return Err(e);
                    }
                    // The client allows no more: make do with the ones open.
                    self.make_do(n, "reverse ", &e);
                }
                idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                continue;
            }
            if n == 0 && !self.asking.load(Ordering::Acquire) {
                bail!(
                    LinkFailed,
                    "link to cluster {} has no usable connection left; unlink and link again",
                    self.remote_cluster_id
                );
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    Timeout,
                    "all connections to cluster {} stayed busy",
                    self.remote_cluster_id
                );
            }
            idle = self
                .conn_cv
                .wait_timeout(idle, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// An idle connection, if one is open and free now (never waits, never
    /// dials): for work that must not block its caller.
    pub fn take_idle_conn(self: &Arc<Self>) -> Option<ConnGuard> {
        if self.check_open().is_err() {
            return None;
        }
        let (c, _) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
        Some(ConnGuard {
            link: self.clone(),
            conn: Some(c),
        })
    }

    /// Takes up to `n` connections for a striped transfer (at least one).
    pub fn take_conns(self: &Arc<Self>, n: usize, deadline: Instant) -> Result<Vec<ConnGuard>> {
        let mut v = vec![self.take_conn(deadline)?];
        while v.len() < n {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((c, _)) = idle.pop() {
                v.push(ConnGuard {
                    link: self.clone(),
                    conn: Some(c),
                });
                continue;
            }
            let can_open = self.can_open_forward(self.conns.load(Ordering::Acquire));
            drop(idle);
            if !can_open {
                break;
            }
            match self.take_conn(deadline) {
                Ok(c) => v.push(c),
                Err(_) => break,
            }
        }
        Ok(v)
    }

    /// True if this side may open one more forward connection (client).
    fn can_open_forward(&self, open: usize) -> bool {
        self.we_dialed && open < self.forward_cap.load(Ordering::Acquire)
    }

    /// Stays at the `n` request connections open (`kind`: "" or "reverse "),
    /// the peer having refused one more (`why`).
    fn make_do(&self, n: usize, kind: &str, why: &crate::Error) {
        self.forward_cap.store(n, Ordering::Release);
        crate::log_info!(
            "link to cluster {}: staying at {n} {kind}connections ({})",
            self.remote_cluster_id,
            why.message
        );
    }

    /// True if this side may ask its client for one more reverse connection
    /// (server of a link with data connections).
    fn can_ask_reverse(&self, open: usize) -> bool {
        !self.we_dialed
            && !self.requests_on_control()
            && open < self.forward_cap.load(Ordering::Acquire)
    }

    /// Asks the client (on the control connection) to open one more reverse
    /// connection; it is attached (and counted) when the client's reply comes.
    fn ask_reverse(&self, deadline: Instant) -> Result<()> {
        match self.control_request(&Msg::OpenConns { count: 1 }, deadline)? {
            Msg::Reply { status, message } => {
                check_reply(status, &message, "opening a reverse connection")
            }
            m => bail!(LinkFailed, "unexpected reply {} to OpenConns", m.msg_type()),
        }
    }

    /// Client: a slot for one more reverse connection, if fewer than `cap`
    /// are open; the slot is freed when the guard (held by the connection)
    /// drops.
    pub fn reverse_slot(&self, cap: usize) -> Option<ReverseSlot> {
        let n = &self.reverse_open;
        n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v < cap).then_some(v + 1)
        })
        .ok()?;
        Some(ReverseSlot(n.clone()))
    }
}

/// One open reverse connection of a client ([`Link::reverse_slot`]).
pub struct ReverseSlot(Arc<AtomicUsize>);

impl Drop for ReverseSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A borrowed request connection; returned to the link on drop unless broken.
pub struct ConnGuard {
    link: Arc<Link>,
    conn: Option<Conn>,
}

impl ConnGuard {
    /// The connection.
    pub fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("conn present until drop")
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            if c.is_broken() || self.link.is_closed() {
                c.shutdown();
                self.link.conns.fetch_sub(1, Ordering::AcqRel);
            } else {
                self.link
                    .idle
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((c, Instant::now()));
            }
            self.link.conn_cv.notify_one();
        }
    }
}
