//! Descriptor-list transfers of the engine: checking a list against the
//! registrations on both sides, planning it, and running it (sync, or async
//! on the pool in chunks), plus the request list `GetTransferStatus` polls.

use super::*;
use crate::cache::types::Plan;
use crate::transfer::link::InflightGuard;

impl Engine {
    /// The link to a connected `n` (connecting first with `AutoConnect`),
    /// dialling again if the peer's own link was disconnected by it.
    pub(super) fn link_for(&self, n: &EngineName, deadline: Instant) -> Result<Arc<Link>> {
        let left = || {
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        let state = self.peers().get(&n.text).map(|p| p.state);
        match state {
            Some(ConnState::Connected) => {}
            _ if self.auto_connect => {
                self.begin_state(n, ConnState::Connecting)?;
                self.do_connect(n, left())?;
            }
            _ => bail!(
                NotYetLink,
                "engine {} is not connected to {} (Connect first)",
                self.name.text,
                n.text
            ),
        }
        match self.session.link_dir(n.id(), true) {
            Some(l) if l.is_dead() => Err(l.dead_error()),
            Some(l) if !l.is_closed() => Ok(l),
            _ => self.establish(n, left()),
        }
    }

    /// The memory `n` has registered, as last fetched over `link`; fetched
    /// again when the link changed or `refresh`.
    fn remote_ranges(
        &self,
        n: &EngineName,
        link: &Arc<Link>,
        refresh: bool,
        deadline: Instant,
    ) -> Result<Arc<Ranges>> {
        if !refresh {
            let p = self.peers();
            if let Some((w, r)) = p.get(&n.text).and_then(|x| x.view.as_ref()) {
                if w.upgrade().is_some_and(|l| Arc::ptr_eq(&l, link)) {
                    return Ok(r.clone());
                }
            }
        }
        let entries = rpc::get_table(link, "fetching the peer's registered memory", deadline)?;
        let r = Arc::new(Ranges::new(
            entries
                .iter()
                .flat_map(|e| e.addrs.iter().map(move |&a| (a, e.tensor_bytes))),
        ));
        if let Some(x) = self.peers().get_mut(&n.text) {
            x.view = Some((Arc::downgrade(link), r.clone()));
        }
        Ok(r)
    }

    /// Checks a descriptor list against both sides' registered memory and
    /// builds its plan into `plan`; returns the link to run it on.
    fn prepare(
        &self,
        remote: &str,
        op: Op,
        descs: &[OpDesc],
        deadline: Instant,
        plan: &mut Vec<Segment>,
    ) -> Result<(EngineName, Arc<Link>)> {
        self.check_open()?;
        let n = self.remote_name(remote)?;
        desc::check_list(descs)?;
        if let Some(i) = self.local_ranges().first_outside(descs, |d| d.local_addr) {
            let d = &descs[i];
            bail!(
                ParamInvalid,
                "op_descs[{i}] local [0x{:x}, +{}) is outside the memory registered with this engine",
                d.local_addr,
                d.len
            );
        }
        let link = self.link_for(&n, deadline)?;
        let mut r = self.remote_ranges(&n, &link, false, deadline)?;
        if r.first_outside(descs, |d| d.remote_addr).is_some() {
            // The peer may have registered more since we looked.
            r = self.remote_ranges(&n, &link, true, deadline)?;
        }
        if let Some(i) = r.first_outside(descs, |d| d.remote_addr) {
            let d = &descs[i];
            bail!(
                ParamInvalid,
                "op_descs[{i}] remote [0x{:x}, +{}) is outside the memory {} registered",
                d.remote_addr,
                d.len,
                n.text
            );
        }
        desc::plan_into(descs, op, plan);
        Ok((n, link))
    }

    /// Runs a checked plan, then sends `notice` (after the last byte landed).
    fn execute(
        &self,
        p: Planned<'_>,
        cancel: Option<&AtomicBool>,
        notice: Option<&Notice>,
    ) -> Result<()> {
        // One operation of the link's statistics (`crate::stats`).
        let (dir, sdir) = dirs(p.op);
        let mut stat = p.link.stats.start(sdir);
        stat.set_bytes(p.plan.iter().map(|s| s.len).sum());
        let r = (|| {
            let _g = p.link.begin()?;
            let stripes = self.session.config.data_connections as usize;
            let r = match cancel {
                None => exec::run(p.link, p.plan(), dir, p.deadline, stripes),
                Some(flag) => run_chunked(p.link, p.plan(), dir, p.deadline, stripes, flag),
            };
            r.map_err(|e| timed_out(p.name, e))?;
            if let Some(nt) = notice {
                send_notice(p.link, nt, p.deadline)?;
            }
            Ok(())
        })();
        stat.finish(p.link.path(), &r);
        r
    }

    /// `TransferSync(remote_engine, op, op_descs, timeout)`, optionally
    /// followed by a notification delivered after the data landed.
    pub fn transfer(
        &self,
        remote: &str,
        op: Op,
        descs: &[OpDesc],
        timeout_ms: i32,
        notice: Option<&Notice>,
    ) -> Result<()> {
        let deadline = Instant::now() + Self::timeout_of(timeout_ms)?;
        if let Some(nt) = notice {
            notify::check_sizes(&nt.name, &nt.msg)?;
        }
        PLAN.with(|p| {
            // A re-entrant use (never expected) falls back to a fresh buffer.
            let mut own = Vec::new();
            let mut guard = p.try_borrow_mut();
            let plan = match guard.as_mut() {
                Ok(b) => &mut **b,
                Err(_) => &mut own,
            };
            let (n, link) = self.prepare(remote, op, descs, deadline, plan)?;
            let p = Planned {
                name: &n,
                link: &link,
                plan,
                op,
                deadline,
            };
            self.execute(p, None, notice)
        })
    }

    /// `TransferAsync`: checks the list now (errors are returned here), then
    /// runs it on the engine's worker pool. `timeout_ms` < 0: the engine's
    /// default ([`DEFAULT_ASYNC_TIMEOUT`]).
    pub fn transfer_async(
        &self,
        remote: &str,
        op: Op,
        descs: &[OpDesc],
        timeout_ms: i32,
        notice: Option<Notice>,
        user_data: usize,
    ) -> Result<Arc<Request>> {
        let timeout = match timeout_ms {
            t if t < 0 => self.async_timeout,
            t => Self::timeout_of(t)?,
        };
        let deadline = Instant::now() + timeout;
        if let Some(nt) = &notice {
            notify::check_sizes(&nt.name, &nt.msg)?;
        }
        {
            let q = self.reqs.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() >= MAX_REQUESTS {
                bail!(
                    OutOfMemory,
                    "{MAX_REQUESTS} requests are outstanding; query their status first"
                );
            }
        }
        let mut plan = Vec::new();
        let (name, link) = self.prepare(remote, op, descs, deadline, &mut plan)?;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let req = Arc::new(Request::new(seq, user_data));
        let bytes: u64 = plan.iter().map(|s| s.len).sum();
        if notice.is_none() && exec::TcpExchange::fits(&link, checked(&plan)) {
            let started = Instant::now();
            let (dir, _) = dirs(op);
            let begun = link.begin().and_then(|g| {
                Ok(exec::TcpExchange::begin(&link, checked(&plan), dir)?.map(|x| (g, x)))
            });
            // `None`: no idle connection now, so a worker runs it whole (below).
            if let Some(begun) = begun.transpose() {
                let job = ExchangeJob {
                    req,
                    op,
                    name,
                    link,
                    plan,
                    begun: None,
                    started,
                    bytes,
                    deadline,
                };
                return self.begun_here(job, begun);
            }
        }
        if notice.is_none() && bytes <= INLINE_BYTES && link.requests_on_control() {
            let p = Planned {
                name: &name,
                link: &link,
                plan: &plan,
                op,
                deadline,
            };
            req.finish(self.execute(p, None, None));
            self.reqs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(req.clone());
            return Ok(req);
        }
        let job = TransferJob {
            engine: self.arc(),
            req: req.clone(),
            name,
            link,
            plan,
            op,
            deadline,
            notice,
        };
        self.reqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(req.clone());
        if let Err(e) = self.pool.submit(Arc::new(job), Kind::Transfer) {
            self.forget(&req);
            return Err(e);
        }
        Ok(req)
    }

    /// A small TCP read or write of `TransferAsync`: sent on this thread,
    /// and finished here if its reply arrives within the connection's
    /// busy-poll (as the synchronous call would wait for it); otherwise only
    /// the rest (sending, waiting) goes to a worker. This keeps the async call as fast as the sync one on a busy
    /// 2-vCPU machine, where handing the whole exchange over costs a wake-up.
    fn begun_here(
        &self,
        mut job: ExchangeJob,
        begun: Result<(InflightGuard, exec::TcpExchange)>,
    ) -> Result<Arc<Request>> {
        let (plan, deadline) = (&job.plan, job.deadline);
        let begun = begun.and_then(|(inflight, mut x)| {
            let until = Instant::now() + x.spin();
            loop {
                if x.poll(checked(plan), deadline)? {
                    return Ok(None);
                }
                if Instant::now() >= until {
                    return Ok(Some((inflight, x)));
                }
                std::hint::spin_loop();
            }
        });
        let req = job.req.clone();
        self.reqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(req.clone());
        match begun {
            Ok(Some(pending)) => job.begun = Some(pending),
            done => {
                job.end(done.map(|_| ()));
                return Ok(req);
            }
        }
        if let Err(e) = self
            .pool
            .submit(Arc::new(Mutex::new(Some(job))), Kind::Transfer)
        {
            self.forget(&req);
            return Err(e);
        }
        Ok(req)
    }

    /// Drops `req` from the engine's list (its status was reported final).
    pub fn forget(&self, req: &Arc<Request>) {
        let mut q = self.reqs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = q.iter().position(|r| Arc::ptr_eq(r, req)) {
            q.remove(i);
        }
    }

    /// `GetTransferStatus(args, results)`: up to `max` requests in posting
    /// order; finished ones are reported once and dropped, waiting ones are
    /// reported unless `skip_waiting`.
    pub fn poll(&self, max: usize, skip_waiting: bool) -> Vec<(Arc<Request>, ReqStatus)> {
        let mut out = Vec::new();
        let mut q = self.reqs.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = 0;
        while i < q.len() && out.len() < max {
            match q[i].outcome() {
                Some(o) => {
                    let r = q.remove(i).expect("index in range");
                    out.push((r, o.status));
                }
                None => {
                    if !skip_waiting {
                        out.push((q[i].clone(), ReqStatus::Waiting));
                    }
                    i += 1;
                }
            }
        }
        out
    }

    // ------------------------------------------------------------ notify

    /// `SendNotify(remote_engine, notify, timeout)`.
    pub fn send_notify(&self, remote: &str, notice: &Notice, timeout_ms: i32) -> Result<()> {
        self.check_open()?;
        let deadline = Instant::now() + Self::timeout_of(timeout_ms)?;
        notify::check_sizes(&notice.name, &notice.msg)?;
        let n = self.remote_name(remote)?;
        let link = self.link_for(&n, deadline)?;
        let _g = link.begin()?;
        send_notice(&link, notice, deadline)
    }
}

/// A checked plan and where it runs.
struct Planned<'a> {
    name: &'a EngineName,
    link: &'a Arc<Link>,
    /// Built by `Engine::prepare`, which checked both sides of every
    /// descriptor against registered memory.
    plan: &'a [Segment],
    op: Op,
    deadline: Instant,
}

impl Planned<'_> {
    fn plan(&self) -> &Plan {
        checked(self.plan)
    }
}

/// A plan `Engine::prepare` built.
fn checked(plan: &[Segment]) -> &Plan {
    // SAFETY: `prepare` checked every local range against the memory
    // registered with this engine; the caller keeps registered memory
    // valid while its transfers run (as for every registered cache).
    unsafe { Plan::assume_checked(plan) }
}

fn send_notice(link: &Arc<Link>, n: &Notice, deadline: Instant) -> Result<()> {
    rpc::notify(link, &n.name, &n.msg, deadline)
}

/// The executor's direction and the statistics' direction of `op`.
fn dirs(op: Op) -> (Dir, Direction) {
    match op {
        Op::Read => (Dir::Read, Direction::Pull),
        Op::Write => (Dir::Write, Direction::Push),
    }
}

/// A timeout of the transfer with `name`, said as such.
fn timed_out(name: &EngineName, e: crate::Error) -> crate::Error {
    match e.status {
        Status::Timeout => err!(
            Timeout,
            "transfer with {} did not finish within its timeout",
            name.text
        ),
        _ => e,
    }
}

/// Runs `plan` in chunks, stopping at a chunk boundary once `cancel` is set.
fn run_chunked(
    link: &Arc<Link>,
    plan: &Plan,
    dir: Dir,
    deadline: Instant,
    stripes: usize,
    cancel: &AtomicBool,
) -> Result<()> {
    let mut rest = plan;
    while !rest.is_empty() {
        if cancel.load(Ordering::Acquire) {
            bail!(Failed, "the request was cancelled");
        }
        let mut n = 0;
        let mut bytes = 0u64;
        while n < rest.len() && n < CHUNK_SEGMENTS && (n == 0 || bytes + rest[n].len <= CHUNK_BYTES)
        {
            bytes += rest[n].len;
            n += 1;
        }
        let (now, later) = rest.split_at(n);
        exec::run(link, now, dir, deadline, stripes)?;
        rest = later;
    }
    Ok(())
}

/// An async transfer on the pool.
struct TransferJob {
    engine: Arc<Engine>,
    req: Arc<Request>,
    name: EngineName,
    link: Arc<Link>,
    plan: Vec<Segment>,
    op: Op,
    deadline: Instant,
    notice: Option<Notice>,
}

impl Job for TransferJob {
    fn run(self: Arc<Self>, _slot: &mut Slot<'_>) {
        let r = if self.req.is_cancelled() {
            Err(err!(Failed, "the request was cancelled"))
        } else {
            let p = Planned {
                name: &self.name,
                link: &self.link,
                plan: &self.plan,
                op: self.op,
                deadline: self.deadline,
            };
            self.engine
                .execute(p, Some(self.req.cancel_flag()), self.notice.as_ref())
        };
        self.req.finish(r);
    }
}

impl Drop for TransferJob {
    fn drop(&mut self) {
        // A job dropped unrun (pool shut down) still ends its request.
        self.req
            .finish(Err(err!(Failed, "the engine was finalized")));
    }
}

/// The rest of a TCP exchange begun in `TransferAsync` (`begun_here`): a
/// worker sends what is left and waits for the reply. The job is taken out of its slot when it runs,
/// so the connection and in-flight guard go when it ends.
struct ExchangeJob {
    req: Arc<Request>,
    op: Op,
    name: EngineName,
    link: Arc<Link>,
    plan: Vec<Segment>,
    /// The exchange and the in-flight guard that keeps an unlink waiting for it.
    begun: Option<(InflightGuard, exec::TcpExchange)>,
    started: Instant,
    bytes: u64,
    deadline: Instant,
}

impl ExchangeJob {
    /// Records the outcome in the link's statistics and the request.
    fn end(&self, r: Result<()>) {
        let r = r.map_err(|e| timed_out(&self.name, e));
        let mut stat = self.link.stats.start_at(dirs(self.op).1, self.started);
        stat.set_bytes(self.bytes);
        stat.finish(self.link.path(), &r);
        self.req.finish(r);
    }
}

impl Job for Mutex<Option<ExchangeJob>> {
    fn run(self: Arc<Self>, _slot: &mut Slot<'_>) {
        let Some(mut j) = self.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let Some((inflight, mut x)) = j.begun.take() else {
            return;
        };
        let r = if j.req.is_cancelled() {
            // Dropping the exchange unfinished closes its connection.
            Err(err!(Failed, "the request was cancelled"))
        } else {
            x.finish(checked(&j.plan), j.deadline)
        };
        // The connection goes back (or closes) before the caller can see the
        // outcome and post again.
        drop(x);
        drop(inflight);
        j.end(r);
    }
}

impl Drop for ExchangeJob {
    fn drop(&mut self) {
        // A job dropped unrun (pool shut down) still ends its request.
        self.req
            .finish(Err(err!(Failed, "the engine was finalized")));
    }
}
