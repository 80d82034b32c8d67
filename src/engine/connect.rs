//! Connections of the engine to remote engines: `Connect`/`Disconnect`
//! (sync, and async on the pool), the state kept per remote engine and the
//! links they make.

use super::*;

impl Engine {
    pub(super) fn remote_name(&self, remote: &str) -> Result<EngineName> {
        let n = EngineName::parse("remote_engine", remote)?;
        if n.port == 0 {
            bail!(
                ParamInvalid,
                "remote_engine {remote:?} has no port: only engines named \"ip:port\" listen"
            );
        }
        if n.id() == self.name.id() {
            bail!(ParamInvalid, "remote_engine {remote:?} is this engine");
        }
        Ok(n)
    }

    /// This engine's own link to `n`: the one it dialled, if still usable,
    /// else a new one dialled within `timeout`. (Both engines may connect to
    /// each other: each side's link is its own, see `link_table.rs`.)
    pub(super) fn establish(&self, n: &EngineName, timeout: Duration) -> Result<Arc<Link>> {
        let id = n.id();
        let usable = |l: &Arc<Link>| !l.is_closed() && l.peer_gone().is_none();
        if let Some(l) = self.session.link_dir(id, true).filter(usable) {
            return Ok(l);
        }
        let addr = n.addr().ok_or_else(|| err!(ParamInvalid, "no port"))?;
        self.session.connect(id, addr, None, timeout)?;
        self.session
            .link_dir(id, true)
            .ok_or_else(|| err!(LinkFailed, "the link to {} closed at once", n.text))
    }

    /// Moves `n` into state `next` (a connect or disconnect begins), or says
    /// why it may not begin.
    pub(super) fn begin_state(&self, n: &EngineName, next: ConnState) -> Result<()> {
        let mut p = self.peers();
        let connecting = matches!(next, ConnState::Connecting | ConnState::ConnectPending);
        // A connect sees a dead link as CONNECT_FAILED (and replaces it); a
        // disconnect may still end a link whose peer died.
        let cur = match p.get(&n.text) {
            None => ConnState::NotConnect,
            Some(x) if connecting => self.state_of(x).0,
            Some(x) => x.state,
        };
        match cur {
            ConnState::Connected if connecting => {
                bail!(AlreadyLink, "already connected to {}", n.text)
            }
            ConnState::ConnectPending
            | ConnState::Connecting
            | ConnState::DisconnectPending
            | ConnState::Disconnecting => bail!(
                ProcessingLink,
                "a connect or disconnect with {} is in progress",
                n.text
            ),
            ConnState::NotConnect | ConnState::ConnectFailed if !connecting => {
                bail!(NotYetLink, "not connected to {}", n.text)
            }
            _ => {}
        }
        let e = p.entry(n.text.clone()).or_insert_with(|| Peer {
            name: n.clone(),
            state: ConnState::NotConnect,
            reason: String::new(),
            view: None,
        });
        e.state = next;
        e.reason.clear();
        Ok(())
    }

    pub(super) fn set_state(&self, n: &EngineName, r: &Result<()>, ok: ConnState) {
        let mut p = self.peers();
        if let Some(e) = p.get_mut(&n.text) {
            match r {
                Ok(()) if ok == ConnState::NotConnect => {
                    p.remove(&n.text);
                }
                Ok(()) => e.state = ok,
                Err(err) => {
                    e.state = ConnState::ConnectFailed;
                    e.reason = err.message.clone();
                }
            }
        }
    }

    pub(super) fn do_connect(&self, n: &EngineName, timeout: Duration) -> Result<()> {
        {
            let mut p = self.peers();
            if let Some(e) = p.get_mut(&n.text) {
                e.state = ConnState::Connecting;
            }
        }
        let r = self.establish(n, timeout).map(|_| ());
        self.set_state(n, &r, ConnState::Connected);
        r
    }

    pub(super) fn do_disconnect(&self, n: &EngineName, timeout: Duration) -> Result<()> {
        {
            let mut p = self.peers();
            if let Some(e) = p.get_mut(&n.text) {
                e.state = ConnState::Disconnecting;
            }
        }
        let id = n.id();
        // Only this engine's own link ends; one the peer dialled is the peer's.
        let r = match self.session.link_dir(id, true) {
            Some(_) => self.session.disconnect(id, timeout).or_else(|e| {
                crate::log_warn!(
                    "disconnect from {}: {}; dropping our side",
                    n.text,
                    e.message
                );
                self.session.drop_link(id, Duration::ZERO);
                Ok(())
            }),
            _ => Ok(()),
        };
        self.set_state(n, &Ok(()), ConnState::NotConnect);
        r
    }

    pub(super) fn timeout_of(ms: i32) -> Result<Duration> {
        if ms <= 0 {
            bail!(ParamInvalid, "timeout must be > 0 ms (got {ms})");
        }
        Ok(Duration::from_millis(ms as u64))
    }

    /// `Connect(remote_engine, timeout)`.
    pub fn connect(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        self.begin_state(&n, ConnState::Connecting)?;
        self.do_connect(&n, t)
    }

    /// `Disconnect(remote_engine, timeout)`.
    pub fn disconnect(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        self.begin_state(&n, ConnState::Disconnecting)?;
        self.do_disconnect(&n, t)
    }

    pub(super) fn arc(&self) -> Arc<Engine> {
        self.me.upgrade().expect("engine alive while in use")
    }

    /// `ConnectAsync`: CONNECT_PENDING now, CONNECTING on a pool worker, then
    /// CONNECTED or CONNECT_FAILED.
    pub fn connect_async(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        // As HIXL: connecting to a connected engine ends CONNECTED.
        if self.peers().get(&n.text).map(|p| p.state) == Some(ConnState::Connected) {
            return Ok(());
        }
        self.begin_state(&n, ConnState::ConnectPending)?;
        let job = ConnJob {
            engine: self.arc(),
            name: n.clone(),
            timeout: t,
            connect: true,
        };
        self.pool
            .submit(Arc::new(job), Kind::Callback)
            .inspect_err(|e| {
                self.set_state(&n, &Err(e.clone()), ConnState::Connected);
            })
    }

    /// `DisconnectAsync`: DISCONNECT_PENDING now, DISCONNECTING on a pool
    /// worker, then NOT_CONNECT.
    pub fn disconnect_async(&self, remote: &str, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let t = Self::timeout_of(timeout_ms)?;
        let n = self.remote_name(remote)?;
        self.begin_state(&n, ConnState::DisconnectPending)?;
        let job = ConnJob {
            engine: self.arc(),
            name: n,
            timeout: t,
            connect: false,
        };
        self.pool.submit(Arc::new(job), Kind::Callback)
    }

    fn state_of(&self, p: &Peer) -> (ConnState, String) {
        if p.state == ConnState::Connected {
            if let Some(l) = self.session.link_dir(p.name.id(), true) {
                if let Some(why) = l.peer_gone() {
                    return (ConnState::ConnectFailed, why);
                }
            }
        }
        (p.state, p.reason.clone())
    }

    /// `GetAsyncConnectStatus(remote_engine)`: the state and, for
    /// CONNECT_FAILED, why. A connected engine whose link died reads
    /// CONNECT_FAILED.
    pub fn connect_status(&self, remote: &str) -> Result<(ConnState, String)> {
        self.check_open()?;
        let n = EngineName::parse("remote_engine", remote)?;
        let p = self.peers();
        Ok(match p.get(&n.text) {
            Some(x) => self.state_of(x),
            None => (ConnState::NotConnect, String::new()),
        })
    }

    /// `GetAsyncConnectStatus(map)`: every remote engine this engine knows of.
    pub fn connect_statuses(&self) -> Result<Vec<(String, ConnState)>> {
        self.check_open()?;
        let p = self.peers();
        let mut v: Vec<(String, ConnState)> = p
            .values()
            .map(|x| (x.name.text.clone(), self.state_of(x).0))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(v)
    }
}

/// An async connect or disconnect on the pool.
struct ConnJob {
    engine: Arc<Engine>,
    name: EngineName,
    timeout: Duration,
    connect: bool,
}

impl Job for ConnJob {
    fn run(self: Arc<Self>, _slot: &mut Slot<'_>) {
        if self.engine.closed.load(Ordering::Acquire) {
            return;
        }
        let _ = if self.connect {
            self.engine.do_connect(&self.name, self.timeout)
        } else {
            self.engine.do_disconnect(&self.name, self.timeout)
        };
    }
}
