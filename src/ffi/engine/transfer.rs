//! Exported transfer functions of the engine: descriptor-list transfers
//! (sync, and async with request handles: status, wait, cancel, free, poll),
//! notifications, and the capability and HIXL status queries.

use super::*;

/// Transfers `num_descs` descriptors with `remote_engine` (HIXL
/// `TransferSync`): `op` READ (remote → local) or WRITE (local → remote),
/// all done or failed within `timeout_ms`. Every local range must lie in
/// memory registered with this engine and every remote range in memory the
/// peer registered; nothing moves otherwise. With `notify_name` (not NULL)
/// a notification `{notify_name, notify_msg}` is delivered to the peer after
/// the last byte is in its memory (`notify_msg` NULL = ""). Statuses:
/// `LLMDD_PARAM_INVALID` (empty list, zero length, overflow, outside
/// registered memory, notification too long), `LLMDD_NOT_YET_LINK` (not
/// connected), `LLMDD_TIMEOUT`, `LLMDD_LINK_FAILED` (the peer died or the
/// link broke), `LLMDD_OUT_OF_MEMORY` (the peer's notification queue is full).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_transfer(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    op: u32,
    op_descs: *const llmdd_engine_desc_t,
    num_descs: usize,
    timeout_ms: i32,
    notify_name: *const c_char,
    notify_msg: *const c_char,
) -> u32 {
    run("llmdd_engine_transfer", || {
        let h = engine(e)?;
        let remote = cstr(remote_engine, "remote_engine")?;
        let op = Op::from_c(op)?;
        let d = descs(op_descs, num_descs)?;
        let n = notice(notify_name, notify_msg)?;
        h.engine.transfer(remote, op, d, timeout_ms, n.as_ref())
    })
}

/// Posts the same transfer asynchronously (HIXL `TransferAsync`): the list is
/// checked now (the statuses of `llmdd_engine_transfer` for what fails here),
/// then runs on the engine's worker pool, finishing within `timeout_ms`
/// (< 0: 30 s, or `llm.SyncKvCacheWaitTime` if given at create). `*out`
/// receives the request; `user_data` is handed back by `llmdd_engine_poll`.
/// The descriptor array may be reused once this returns.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_transfer_async(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    op: u32,
    op_descs: *const llmdd_engine_desc_t,
    num_descs: usize,
    timeout_ms: i32,
    notify_name: *const c_char,
    notify_msg: *const c_char,
    user_data: *const c_void,
    out: *mut *mut llmdd_engine_req_t,
) -> u32 {
    run("llmdd_engine_transfer_async", || {
        let h = engine(e)?;
        let out = output(out, "req")?;
        let remote = cstr(remote_engine, "remote_engine")?;
        let op = Op::from_c(op)?;
        let d = descs(op_descs, num_descs)?;
        let n = notice(notify_name, notify_msg)?;
        let req = h
            .engine
            .transfer_async(remote, op, d, timeout_ms, n, user_data as usize)?;
        let seq = req.seq;
        let Some(r) = REQS.insert(ReqHandle {
            owner: e as usize,
            req: req.clone(),
        }) else {
            req.cancel();
            h.engine.forget(&req);
            bail!(OutOfMemory, "too many live request handles");
        };
        h.reqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(seq, r as usize);
        *out = r;
        Ok(())
    })
}

fn report(
    h: &EngineHandle,
    r: *const llmdd_engine_req_t,
    o: Option<engine::Outcome>,
    state: &mut u32,
    result: &mut u32,
) {
    match o {
        Some(o) => {
            (*state, *result) = req_code(&o);
            release_req(h, r as usize);
        }
        None => {
            (*state, *result) = (ReqStatus::Waiting as u32, 0);
            // A caller polling in a loop lets the worker run (it may share
            // this CPU).
            std::thread::yield_now();
        }
    }
}

/// The status of `req` (HIXL `GetTransferStatus(req)`): `LLMDD_ENGINE_REQ_*`
/// into `*state` and the request's `LLMDD_*` result into `*result` (NULL
/// allowed). A final state (COMPLETED, TIMEOUT, FAILED) is reported once:
/// the handle dies with the report.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_req_status(
    e: *mut llmdd_engine_t,
    req: *mut llmdd_engine_req_t,
    state: *mut u32,
    result: *mut u32,
) -> u32 {
    run("llmdd_engine_req_status", || {
        let (h, q) = req_of(e, req)?;
        let st = output(state, "status")?;
        let mut res = 0;
        report(&h, req, q.req.outcome(), st, &mut res);
        if let Some(r) = result.as_mut() {
            *r = res;
        }
        Ok(())
    })
}

/// Waits up to `timeout_ms` (< 0: until it finishes, which its own timeout
/// bounds) for `req`, then reports as `llmdd_engine_req_status` (WAITING if
/// it did not finish in time).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_req_wait(
    e: *mut llmdd_engine_t,
    req: *mut llmdd_engine_req_t,
    timeout_ms: i32,
    state: *mut u32,
    result: *mut u32,
) -> u32 {
    run("llmdd_engine_req_wait", || {
        let (h, q) = req_of(e, req)?;
        let st = output(state, "status")?;
        let deadline =
            (timeout_ms >= 0).then(|| Instant::now() + Duration::from_millis(timeout_ms as u64));
        let mut res = 0;
        report(&h, req, q.req.wait(deadline), st, &mut res);
        if let Some(r) = result.as_mut() {
            *r = res;
        }
        Ok(())
    })
}

/// Cancels `req`: a request that has not started never starts, a running
/// one stops at its next chunk boundary (bytes of earlier chunks may have
/// moved); it then reports FAILED. One that finished keeps its status. The
/// handle stays live until its status is reported or it is freed.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_req_cancel(
    e: *mut llmdd_engine_t,
    req: *mut llmdd_engine_req_t,
) -> u32 {
    run("llmdd_engine_req_cancel", || {
        let (_, q) = req_of(e, req)?;
        q.req.cancel();
        Ok(())
    })
}

/// Releases `req` without reporting it (an unfinished one is cancelled).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_req_free(
    e: *mut llmdd_engine_t,
    req: *mut llmdd_engine_req_t,
) -> u32 {
    run("llmdd_engine_req_free", || {
        let (h, q) = req_of(e, req)?;
        q.req.cancel();
        release_req(&h, req as usize);
        Ok(())
    })
}

/// Batch status (HIXL `GetTransferStatus(args, results)`): up to
/// `min(max_query_count, cap)` requests in posting order into `out`;
/// finished ones are reported once (their handles die), waiting ones are
/// included unless `skip_waiting`. `*count` receives the number written.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_poll(
    e: *mut llmdd_engine_t,
    max_query_count: u32,
    skip_waiting: bool,
    out: *mut llmdd_engine_result_t,
    cap: usize,
    count: *mut usize,
) -> u32 {
    run("llmdd_engine_poll", || {
        let h = engine(e)?;
        let count = output(count, "count")?;
        if out.is_null() && cap > 0 {
            bail!(ParamInvalid, "out is NULL but cap is {cap}");
        }
        let max = (max_query_count as usize).min(cap);
        let got = h.engine.poll(max, skip_waiting);
        let map = h.reqs.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        let mut dead = Vec::new();
        for (r, s) in got {
            let Some(&handle) = map.get(&r.seq) else {
                continue;
            };
            let result = r
                .outcome()
                .and_then(|o| o.error.map(|e| e.status.code()))
                .unwrap_or(0);
            *out.add(n) = llmdd_engine_result_t {
                req: handle as *mut llmdd_engine_req_t,
                user_data: r.user_data as *const c_void,
                status: s as u32,
                result,
            };
            n += 1;
            if s != ReqStatus::Waiting {
                dead.push(handle);
            }
        }
        drop(map);
        for d in dead {
            release_req(&h, d);
        }
        *count = n;
        Ok(())
    })
}

/// The number of requests of the engine not yet reported final (an upper
/// bound for `llmdd_engine_poll`'s `cap`).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_outstanding(
    e: *mut llmdd_engine_t,
    count: *mut usize,
) -> u32 {
    run("llmdd_engine_outstanding", || {
        let h = engine(e)?;
        let count = output(count, "count")?;
        *count = h.reqs.lock().unwrap_or_else(|p| p.into_inner()).len();
        Ok(())
    })
}

/// Sends a notification `{name, msg}` to `remote_engine` (HIXL
/// `SendNotify`), delivered into its queue before this returns. Statuses:
/// `LLMDD_PARAM_INVALID` (name over `LLMDD_ENGINE_NOTIFY_NAME_MAX` or msg
/// over `LLMDD_ENGINE_NOTIFY_MSG_MAX` bytes), `LLMDD_NOT_YET_LINK`,
/// `LLMDD_OUT_OF_MEMORY` (the peer's queue is full), `LLMDD_TIMEOUT`,
/// `LLMDD_LINK_FAILED`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_send_notify(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    name: *const c_char,
    msg: *const c_char,
    timeout_ms: i32,
) -> u32 {
    run("llmdd_engine_send_notify", || {
        let h = engine(e)?;
        let remote = cstr(remote_engine, "remote_engine")?;
        let n = Notice {
            name: cstr(name, "name")?.to_string(),
            msg: cstr(msg, "msg")?.to_string(),
        };
        h.engine.send_notify(remote, &n, timeout_ms)
    })
}

/// Takes the oldest received notification (HIXL `GetNotifies`, one at a
/// time): `*got` is false when there is none; else its name and message are
/// copied NUL-terminated into `name` (`name_cap` bytes) and `msg`
/// (`msg_cap`). Buffers too small for it: `LLMDD_PARAM_INVALID`, and the
/// notification stays queued (`LLMDD_ENGINE_NOTIFY_*_MAX` + 1 always fit).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_next_notify(
    e: *mut llmdd_engine_t,
    name: *mut c_char,
    name_cap: usize,
    msg: *mut c_char,
    msg_cap: usize,
    got: *mut bool,
) -> u32 {
    run("llmdd_engine_next_notify", || {
        let h = engine(e)?;
        let got = output(got, "got")?;
        if name.is_null() || msg.is_null() {
            bail!(ParamInvalid, "name and msg buffers are required");
        }
        let Some(n) = h.engine.next_notify() else {
            *got = false;
            return Ok(());
        };
        if n.name.len() >= name_cap || n.msg.len() >= msg_cap {
            let why = err!(
                ParamInvalid,
                "the notification needs {} + 1 name and {} + 1 msg bytes (buffers: {name_cap}, {msg_cap})",
                n.name.len(),
                n.msg.len()
            );
            h.engine.unpop_notify(n);
            return Err(why);
        }
        copy_cstr(name, name_cap, &n.name);
        copy_cstr(msg, msg_cap, &n.msg);
        *got = true;
        Ok(())
    })
}

/// Feature query (HIXL `GetCapability`): `*value` is 1 if `feature`
/// (`LLMDD_ENGINE_FEATURE_*`) is supported, else 0 (also for unknown
/// features). A negative feature: `LLMDD_PARAM_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_capability(feature: i32, value: *mut i32) -> u32 {
    run("llmdd_engine_capability", || {
        let v = output(value, "value")?;
        *v = i32::from(engine::capability(feature)?);
        Ok(())
    })
}

/// HIXL's status code (`LLMDD_HIXL_*`) for an `LLMDD_*` status of an engine
/// call: PARAM_INVALID, TIMEOUT, NOT_CONNECTED (`NOT_YET_LINK`),
/// ALREADY_CONNECTED (`ALREADY_LINK`), UNSUPPORTED (`FEATURE_NOT_ENABLED`),
/// RESOURCE_EXHAUSTED (`OUT_OF_MEMORY`), else FAILED.
#[no_mangle]
pub extern "C" fn llmdd_engine_hixl_status(status: u32) -> u32 {
    match Status::from_code(status) {
        Status::Success if status == 0 => LLMDD_HIXL_SUCCESS,
        Status::ParamInvalid | Status::KvCacheNotExist => LLMDD_HIXL_PARAM_INVALID,
        Status::Timeout => LLMDD_HIXL_TIMEOUT,
        Status::NotYetLink => LLMDD_HIXL_NOT_CONNECTED,
        Status::AlreadyLink => LLMDD_HIXL_ALREADY_CONNECTED,
        Status::FeatureNotEnabled => LLMDD_HIXL_UNSUPPORTED,
        Status::OutOfMemory | Status::DeviceOutOfMemory => LLMDD_HIXL_RESOURCE_EXHAUSTED,
        _ => LLMDD_HIXL_FAILED,
    }
}
