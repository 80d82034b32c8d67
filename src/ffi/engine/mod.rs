//! Exported functions of the byte-addressed transfer engine (HIXL's
//! `hixl::Hixl`, `include/hixl/hixl.h` wraps them): create/destroy, raw memory
//! registration, connect/disconnect (sync, async, state queries),
//! descriptor-list transfers (sync, async with request handles), and
//! notifications. Statuses are `LLMDD_*`; `llmdd_engine_hixl_status` maps
//! one to HIXL's code.

use std::collections::HashMap;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::datadist::notify::Notice;
use crate::engine::{self, ConnState, Engine, Op, OpDesc, ReqStatus, Request};
use crate::ffi::boundary::{cstr, output, run, slice};
use crate::ffi::handles::HandleTable;
use crate::ffi::types::{llmdd_option_t, options_from_c};
use crate::status::{Result, Status};
use crate::{bail, err};

mod transfer;
pub use transfer::*;

/// `TransferOp` READ: remote memory → local memory.
pub const LLMDD_ENGINE_READ: u32 = 0;
/// `TransferOp` WRITE: local memory → remote memory.
pub const LLMDD_ENGINE_WRITE: u32 = 1;
/// `MemType` MEM_DEVICE (host-addressable memory on the host backend).
pub const LLMDD_ENGINE_MEM_DEVICE: u32 = 0;
/// `MemType` MEM_HOST.
pub const LLMDD_ENGINE_MEM_HOST: u32 = 1;
/// `AsyncConnectStatus` values, in HIXL's order.
///
/// `NOT_CONNECT`: no link to the peer and none being made.
pub const LLMDD_ENGINE_NOT_CONNECT: u32 = 0;
/// `CONNECT_PENDING`: an async connect is queued and has not started.
pub const LLMDD_ENGINE_CONNECT_PENDING: u32 = 1;
/// `CONNECTING`: the connect is in progress.
pub const LLMDD_ENGINE_CONNECTING: u32 = 2;
/// `CONNECTED`: the link is up; transfers may use it.
pub const LLMDD_ENGINE_CONNECTED: u32 = 3;
/// `CONNECT_FAILED`: the last connect attempt failed.
pub const LLMDD_ENGINE_CONNECT_FAILED: u32 = 4;
/// `DISCONNECT_PENDING`: an async disconnect is queued and has not started.
pub const LLMDD_ENGINE_DISCONNECT_PENDING: u32 = 5;
/// `DISCONNECTING`: the disconnect is in progress.
pub const LLMDD_ENGINE_DISCONNECTING: u32 = 6;
/// `TransferStatus` values, in HIXL's order.
///
/// `WAITING`: the request is queued or running.
pub const LLMDD_ENGINE_REQ_WAITING: u32 = 0;
/// `COMPLETED`: every descriptor was transferred.
pub const LLMDD_ENGINE_REQ_COMPLETED: u32 = 1;
/// `TIMEOUT`: the request ran past its timeout and was stopped.
pub const LLMDD_ENGINE_REQ_TIMEOUT: u32 = 2;
/// `FAILED`: the request failed or was cancelled.
pub const LLMDD_ENGINE_REQ_FAILED: u32 = 3;
/// `FeatureType` values.
///
/// `AUTO_CONNECT`: supported (capability 1).
pub const LLMDD_ENGINE_FEATURE_AUTO_CONNECT: i32 = 0;
/// `CLIENT_SERVER_COMM` (the HIXL-CS C interface): not supported (capability 0).
pub const LLMDD_ENGINE_FEATURE_CLIENT_SERVER_COMM: i32 = 1;
/// Size of `llmdd_engine_peer_t::remote` (a name and its NUL).
pub const LLMDD_ENGINE_NAME_MAX: usize = 64;
/// Longest notification name in bytes (without the NUL).
pub const LLMDD_ENGINE_NOTIFY_NAME_MAX: usize = 1024;
/// Longest notification message in bytes (without the NUL).
pub const LLMDD_ENGINE_NOTIFY_MSG_MAX: usize = 1024;

const _: () = assert!(
    LLMDD_ENGINE_NOTIFY_NAME_MAX == crate::datadist::notify::MAX_NAME
        && LLMDD_ENGINE_NOTIFY_MSG_MAX == crate::datadist::notify::MAX_MSG
);
/// HIXL status codes (`hixl_types.h`), as returned by `llmdd_engine_hixl_status`.
///
/// `SUCCESS`: the call succeeded.
pub const LLMDD_HIXL_SUCCESS: u32 = 0;
/// `PARAM_INVALID`: a bad argument or unknown memory (`LLMDD_PARAM_INVALID`,
/// `LLMDD_KV_CACHE_NOT_EXIST`).
pub const LLMDD_HIXL_PARAM_INVALID: u32 = 103_900;
/// `TIMEOUT`: the call ran past its timeout (`LLMDD_TIMEOUT`).
pub const LLMDD_HIXL_TIMEOUT: u32 = 103_901;
/// `NOT_CONNECTED`: no link to the peer (`LLMDD_NOT_YET_LINK`).
pub const LLMDD_HIXL_NOT_CONNECTED: u32 = 103_902;
/// `ALREADY_CONNECTED`: a link to the peer exists (`LLMDD_ALREADY_LINK`).
pub const LLMDD_HIXL_ALREADY_CONNECTED: u32 = 103_903;
/// `NOTIFY_FAILED`: a notification could not be delivered (HIXL's code;
/// `llmdd_engine_hixl_status` never returns it).
pub const LLMDD_HIXL_NOTIFY_FAILED: u32 = 103_904;
/// `UNSUPPORTED`: the feature is not available (`LLMDD_FEATURE_NOT_ENABLED`).
pub const LLMDD_HIXL_UNSUPPORTED: u32 = 103_905;
/// `RESOURCE_EXHAUSTED`: out of host or device memory (`LLMDD_OUT_OF_MEMORY`,
/// `LLMDD_DEVICE_OUT_OF_MEMORY`).
pub const LLMDD_HIXL_RESOURCE_EXHAUSTED: u32 = 203_900;
/// `FAILED`: any other failure.
pub const LLMDD_HIXL_FAILED: u32 = 503_900;

/// Opaque transfer engine. Created by `llmdd_engine_create`, owned by the
/// caller, released only by `llmdd_engine_destroy`; looked up in a table of
/// live engines, never read.
pub struct llmdd_engine_t {
    _opaque: [u8; 0],
}

/// Opaque memory registration of one engine (HIXL `MemHandle`); released by
/// `llmdd_engine_deregister_mem` or with its engine.
pub struct llmdd_engine_mem_t {
    _opaque: [u8; 0],
}

/// Opaque async request of one engine (HIXL `TransferReq`). Released when a
/// status query reports it finished (COMPLETED, TIMEOUT or FAILED), by
/// `llmdd_engine_req_free`, or with its engine.
pub struct llmdd_engine_req_t {
    _opaque: [u8; 0],
}

/// One transfer descriptor; the layout of HIXL's `TransferOpDesc`
/// (`uintptr_t local_addr, remote_addr; size_t len`). Both ranges must lie
/// inside memory registered by their engine (local: this one; remote: the
/// peer).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_engine_desc_t {
    /// Start of the local range (in memory this engine registered).
    pub local_addr: usize,
    /// Start of the remote range (in memory the peer engine registered).
    pub remote_addr: usize,
    /// Length of both ranges in bytes.
    pub len: usize,
}

const _: () = {
    assert!(std::mem::size_of::<llmdd_engine_desc_t>() == std::mem::size_of::<OpDesc>());
    assert!(std::mem::align_of::<llmdd_engine_desc_t>() == std::mem::align_of::<OpDesc>());
    assert!(
        std::mem::offset_of!(llmdd_engine_desc_t, local_addr)
            == std::mem::offset_of!(OpDesc, local_addr)
    );
    assert!(
        std::mem::offset_of!(llmdd_engine_desc_t, remote_addr)
            == std::mem::offset_of!(OpDesc, remote_addr)
    );
    assert!(std::mem::offset_of!(llmdd_engine_desc_t, len) == std::mem::offset_of!(OpDesc, len));
};

/// One entry of `llmdd_engine_poll` (HIXL `TransferResult`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_engine_result_t {
    /// The request (dead already when `status` is final).
    pub req: *mut llmdd_engine_req_t,
    /// The `user_data` given to `llmdd_engine_transfer_async`.
    pub user_data: *const c_void,
    /// `LLMDD_ENGINE_REQ_*`.
    pub status: u32,
    /// The request's `LLMDD_*` result (0 unless it failed or timed out).
    pub result: u32,
}

/// One entry of `llmdd_engine_connect_statuses`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_engine_peer_t {
    /// The remote engine's canonical name, NUL-terminated.
    pub remote: [c_char; LLMDD_ENGINE_NAME_MAX],
    /// `LLMDD_ENGINE_*` connect state.
    pub state: u32,
}

/// An engine and the C handles it gave out.
struct EngineHandle {
    engine: Arc<Engine>,
    mems: Mutex<Vec<usize>>,
    /// Request sequence number → handle.
    reqs: Mutex<HashMap<u64, usize>>,
}

struct MemHandle {
    owner: usize,
    id: i64,
}

struct ReqHandle {
    owner: usize,
    req: Arc<Request>,
}

static ENGINES: HandleTable<EngineHandle, llmdd_engine_t> = HandleTable::new();
static MEMS: HandleTable<MemHandle, llmdd_engine_mem_t> = HandleTable::new();
static REQS: HandleTable<ReqHandle, llmdd_engine_req_t> = HandleTable::new();

fn engine(p: *const llmdd_engine_t) -> Result<Arc<EngineHandle>> {
    ENGINES.resolve(p, "engine")
}

fn req_of(
    e: *const llmdd_engine_t,
    r: *const llmdd_engine_req_t,
) -> Result<(Arc<EngineHandle>, Arc<ReqHandle>)> {
    let h = engine(e)?;
    let q = REQS.resolve(r, "request")?;
    if q.owner != e as usize {
        bail!(ParamInvalid, "request belongs to another engine");
    }
    Ok((h, q))
}

/// Releases request handle `r` of engine `h`.
fn release_req(h: &EngineHandle, r: usize) {
    if let Some(q) = REQS.remove(r as *const llmdd_engine_req_t) {
        h.reqs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&q.req.seq);
        h.engine.forget(&q.req);
    }
}

fn req_code(o: &engine::Outcome) -> (u32, u32) {
    (
        o.status as u32,
        o.error.as_ref().map_or(0, |e| e.status.code()),
    )
}

fn state_code(s: ConnState) -> u32 {
    s as u32
}

unsafe fn notice(name: *const c_char, msg: *const c_char) -> Result<Option<Notice>> {
    if name.is_null() {
        if !msg.is_null() {
            bail!(ParamInvalid, "notify_msg is given without notify_name");
        }
        return Ok(None);
    }
    let n = cstr(name, "notify_name")?;
    let m = if msg.is_null() {
        ""
    } else {
        cstr(msg, "notify_msg")?
    };
    Ok(Some(Notice {
        name: n.to_string(),
        msg: m.to_string(),
    }))
}

unsafe fn descs<'a>(p: *const llmdd_engine_desc_t, n: usize) -> Result<&'a [OpDesc]> {
    let s = slice(p, n, "op_descs")?;
    // SAFETY: the layouts are identical (checked at compile time above).
    Ok(std::slice::from_raw_parts(
        s.as_ptr().cast::<OpDesc>(),
        s.len(),
    ))
}

/// Creates an engine named `local_engine` (`"ip:port"`, `"[ipv6]:port"`, or
/// a bare ip for an engine that only dials) with `num_options` `{key, value}`
/// options: HIXL's `OPTION_*` names (`AutoConnect` = "1" connects on first
/// use; `RdmaTrafficClass`, `RdmaServiceLevel` and `GlobalResourceConfig` are
/// validated; `BufferPool`, `LocalCommRes` and `EnableUseFabricMem` are
/// accepted without effect on the host backend), plus llmdd's `llm.*` /
/// `llmdd.*` options. A name with a port listens on it (port > 0).
///
/// On success `*out` receives a handle owned by the caller, released with
/// `llmdd_engine_destroy`. Statuses: `LLMDD_PARAM_INVALID` (bad name or
/// option), `LLMDD_FEATURE_NOT_ENABLED` (`llmdd.Backend=acl` and the Ascend
/// runtime cannot be loaded), `LLMDD_FAILED` (cannot listen on the name's
/// endpoint). On the acl backend memory is registered before the first
/// connect and deregistered after the last disconnect (HCCL binds it per link).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_create(
    local_engine: *const c_char,
    options: *const llmdd_option_t,
    num_options: usize,
    out: *mut *mut llmdd_engine_t,
) -> u32 {
    run("llmdd_engine_create", || {
        let out = output(out, "out")?;
        let name = cstr(local_engine, "local_engine")?;
        let opts = options_from_c(options, num_options)?;
        let e = Engine::new(name, &opts)?;
        let h = ENGINES
            .insert(EngineHandle {
                engine: e.clone(),
                mems: Mutex::new(Vec::new()),
                reqs: Mutex::new(HashMap::new()),
            })
            .ok_or_else(|| {
                e.finalize();
                err!(OutOfMemory, "too many live engines")
            })?;
        *out = h;
        Ok(())
    })
}

/// Finalizes and frees an engine (HIXL `Finalize`): unfinished requests
/// fail, links and the listener close, every thread is joined, and every
/// memory and request handle of the engine dies. NULL or a dead handle is a
/// no-op. No other call on the engine may be in progress.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_destroy(e: *mut llmdd_engine_t) {
    let _ = run("llmdd_engine_destroy", || {
        if e.is_null() {
            return Ok(());
        }
        if let Some(h) = ENGINES.remove(e) {
            h.engine.finalize();
            for m in h.mems.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                MEMS.remove(m as *const llmdd_engine_mem_t);
            }
            for (_, r) in h.reqs.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                REQS.remove(r as *const llmdd_engine_req_t);
            }
        }
        Ok(())
    });
}

/// Registers `[addr, addr + len)` (HIXL `RegisterMem`): connected engines may
/// read and write it, and transfers may use it as local memory. `mem_type`:
/// `LLMDD_ENGINE_MEM_DEVICE` or `LLMDD_ENGINE_MEM_HOST`. Overlapping an
/// existing registration is refused. `*out` receives the registration's
/// handle. Statuses: `LLMDD_PARAM_INVALID` (0 address or length, overflow,
/// overlap, bad type, too many registrations: `llmdd.MaxRegisteredAddrs`).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_register_mem(
    e: *mut llmdd_engine_t,
    addr: usize,
    len: usize,
    mem_type: u32,
    out: *mut *mut llmdd_engine_mem_t,
) -> u32 {
    run("llmdd_engine_register_mem", || {
        let h = engine(e)?;
        let out = output(out, "mem_handle")?;
        let id = h.engine.register_mem(addr as u64, len as u64, mem_type)?;
        let Some(m) = MEMS.insert(MemHandle {
            owner: e as usize,
            id,
        }) else {
            let _ = h.engine.deregister_mem(id);
            bail!(OutOfMemory, "too many live memory handles");
        };
        h.mems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(m as usize);
        *out = m;
        Ok(())
    })
}

/// Deregisters memory (HIXL `DeregisterMem`); the handle dies. Peers'
/// requests for it are refused from then on. Statuses: `LLMDD_PARAM_INVALID`
/// (NULL, dead or another engine's handle).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_deregister_mem(
    e: *mut llmdd_engine_t,
    mem: *mut llmdd_engine_mem_t,
) -> u32 {
    run("llmdd_engine_deregister_mem", || {
        let h = engine(e)?;
        let m = MEMS.resolve(mem, "mem_handle")?;
        if m.owner != e as usize {
            bail!(ParamInvalid, "mem_handle belongs to another engine");
        }
        h.engine.deregister_mem(m.id)?;
        MEMS.remove(mem);
        h.mems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|&x| x != mem as usize);
        Ok(())
    })
}

/// One of the connect calls on (`e`, `remote_engine`, `timeout_ms`).
unsafe fn conn_call(
    func: &str,
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    timeout_ms: i32,
    f: fn(&Engine, &str, i32) -> Result<()>,
) -> u32 {
    run(func, || {
        let h = engine(e)?;
        f(&h.engine, cstr(remote_engine, "remote_engine")?, timeout_ms)
    })
}

/// Connects to `remote_engine` (its `"ip:port"` name) within `timeout_ms`
/// (HIXL `Connect`), on a link of this engine's own (the other engine may
/// connect to this one as well, on its own link). Statuses: `LLMDD_PARAM_INVALID` (bad name, own name, timeout ≤
/// 0), `LLMDD_ALREADY_LINK` (already connected), `LLMDD_PROCESSING_LINK`
/// (an async connect/disconnect is in progress), `LLMDD_LINK_FAILED` /
/// `LLMDD_TIMEOUT` (the state becomes CONNECT_FAILED with the reason).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_connect(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    timeout_ms: i32,
) -> u32 {
    conn_call(
        "llmdd_engine_connect",
        e,
        remote_engine,
        timeout_ms,
        Engine::connect,
    )
}

/// Disconnects from `remote_engine` (HIXL `Disconnect`): waits up to
/// `timeout_ms` for this engine's transfers with it, then closes this
/// engine's link (a link the peer made stays the peer's). A peer that cannot
/// be reached: this side is dropped and the call succeeds.
/// Statuses: `LLMDD_NOT_YET_LINK` (not connected), `LLMDD_PARAM_INVALID`,
/// `LLMDD_PROCESSING_LINK`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_disconnect(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    timeout_ms: i32,
) -> u32 {
    conn_call(
        "llmdd_engine_disconnect",
        e,
        remote_engine,
        timeout_ms,
        Engine::disconnect,
    )
}

/// Starts connecting (HIXL `ConnectAsync`): the state is CONNECT_PENDING on
/// return, then CONNECTING, then CONNECTED or CONNECT_FAILED
/// (`llmdd_engine_connect_status`). Statuses as `llmdd_engine_connect` for
/// what is checked before it starts.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_connect_async(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    timeout_ms: i32,
) -> u32 {
    conn_call(
        "llmdd_engine_connect_async",
        e,
        remote_engine,
        timeout_ms,
        Engine::connect_async,
    )
}

/// Starts disconnecting (HIXL `DisconnectAsync`): DISCONNECT_PENDING on
/// return, then DISCONNECTING, then NOT_CONNECT.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_disconnect_async(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    timeout_ms: i32,
) -> u32 {
    conn_call(
        "llmdd_engine_disconnect_async",
        e,
        remote_engine,
        timeout_ms,
        Engine::disconnect_async,
    )
}

fn copy_cstr(dst: *mut c_char, cap: usize, s: &str) {
    if dst.is_null() || cap == 0 {
        return;
    }
    let mut n = s.len().min(cap - 1);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    // SAFETY: the caller gave `cap` writable bytes at `dst`.
    unsafe {
        std::ptr::copy_nonoverlapping(s.as_ptr().cast::<c_char>(), dst, n);
        *dst.add(n) = 0;
    }
}

/// The connect state of `remote_engine` (HIXL `GetAsyncConnectStatus`):
/// `LLMDD_ENGINE_*` into `*state`; for CONNECT_FAILED the reason goes into
/// `reason` (NUL-terminated, truncated to `reason_cap` bytes; `reason` may be
/// NULL with `reason_cap` 0). An engine never connected is NOT_CONNECT; a
/// connected one whose link died reads CONNECT_FAILED.
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_connect_status(
    e: *mut llmdd_engine_t,
    remote_engine: *const c_char,
    state: *mut u32,
    reason: *mut c_char,
    reason_cap: usize,
) -> u32 {
    run("llmdd_engine_connect_status", || {
        let h = engine(e)?;
        let st = output(state, "status")?;
        if reason.is_null() && reason_cap > 0 {
            bail!(
                ParamInvalid,
                "reason is NULL but reason_cap is {reason_cap}"
            );
        }
        let (s, why) = h
            .engine
            .connect_status(cstr(remote_engine, "remote_engine")?)?;
        copy_cstr(reason, reason_cap, &why);
        *st = state_code(s);
        Ok(())
    })
}

/// Every remote engine this engine knows of and its state (HIXL
/// `GetAsyncConnectStatus(map)`): up to `cap` entries into `out`, sorted by
/// name; `*count` receives the total (call with `cap` 0 to size `out`).
#[no_mangle]
pub unsafe extern "C" fn llmdd_engine_connect_statuses(
    e: *mut llmdd_engine_t,
    out: *mut llmdd_engine_peer_t,
    cap: usize,
    count: *mut usize,
) -> u32 {
    run("llmdd_engine_connect_statuses", || {
        let h = engine(e)?;
        let count = output(count, "count")?;
        if out.is_null() && cap > 0 {
            bail!(ParamInvalid, "out is NULL but cap is {cap}");
        }
        let all = h.engine.connect_statuses()?;
        for (i, (name, s)) in all.iter().take(cap).enumerate() {
            let p = out.add(i);
            (*p).state = state_code(*s);
            copy_cstr((*p).remote.as_mut_ptr(), LLMDD_ENGINE_NAME_MAX, name);
        }
        *count = all.len();
        Ok(())
    })
}
