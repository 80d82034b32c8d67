//! Safe wrapper over the dlopen'd ACL runtime: device selection and identity
//! (physical id, SoC, super-pod ids), device/host allocation, synchronous
//! copies, and streams with timed synchronisation that are aborted, never
//! destroyed, while tasks may still be queued.
//!
//! Addresses are `u64` (device virtual addresses are not Rust pointers). ACL binds the
//! current device per thread, so every call first makes sure the calling thread has
//! this context's device set (cached per thread).

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::types::Placement;
use crate::status::{Error, Result, Status};
use crate::sys::ascend_bindings as b;
use crate::sys::loader::AscendRuntime;
use crate::{acl_fn, bail};

/// ACL libraries (by load identity) on which `aclInit` already succeeded.
static ACL_INITIALIZED: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

thread_local! {
    /// (library identity, device id) last bound on this thread with aclrtSetDevice.
    static BOUND_DEVICE: Cell<(usize, i32)> = const { Cell::new((0, -1)) };
}

/// Direction of a copy, as ACL's `aclrtMemcpyKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemcpyKind {
    /// Host to host.
    HostToHost,
    /// Host to device.
    HostToDevice,
    /// Device to host.
    DeviceToHost,
    /// Device to device.
    DeviceToDevice,
    /// Let the runtime infer the direction from the addresses.
    Default,
}

impl MemcpyKind {
    fn raw(self) -> b::aclrtMemcpyKind {
        match self {
            MemcpyKind::HostToHost => b::aclrtMemcpyKind_ACL_MEMCPY_HOST_TO_HOST,
            MemcpyKind::HostToDevice => b::aclrtMemcpyKind_ACL_MEMCPY_HOST_TO_DEVICE,
            MemcpyKind::DeviceToHost => b::aclrtMemcpyKind_ACL_MEMCPY_DEVICE_TO_HOST,
            MemcpyKind::DeviceToDevice => b::aclrtMemcpyKind_ACL_MEMCPY_DEVICE_TO_DEVICE,
            MemcpyKind::Default => b::aclrtMemcpyKind_ACL_MEMCPY_DEFAULT,
        }
    }
}

/// One device of the loaded ACL runtime. Cheap to share behind an `Arc`; all
/// methods take `&self` and may be called from any thread.
#[derive(Debug)]
pub struct AclContext {
    rt: Arc<AscendRuntime>,
    device_id: i32,
    physical_id: Option<u32>,
}

impl AclContext {
    /// Initialises ACL (once per process and library; a prior `aclInit` by someone
    /// else in the process is accepted) and selects `device_id` on this thread.
    pub fn open(runtime: Arc<AscendRuntime>, device_id: i32) -> Result<AclContext> {
        if device_id < 0 {
            bail!(ParamInvalid, "device id {device_id} is negative");
        }
        {
            let mut guard = ACL_INITIALIZED.lock().unwrap_or_else(|p| p.into_inner());
            let done = guard.get_or_insert_with(HashSet::new);
            let id = runtime.acl_identity();
            if !done.contains(&id) {
                let init = acl_fn!(runtime, aclInit)?;
                // SAFETY: a NULL config path is documented as "no config file".
                let code = unsafe { init(ptr::null()) };
                if code != b::ACL_ERROR_REPEAT_INITIALIZE {
                    runtime.check_acl(code, "aclInit")?;
                }
                done.insert(id);
            }
            // Initialised (by us or the application): never unload it, which also
            // keeps `id` naming this library for the rest of the process.
            runtime.keep_loaded();
        }
        let mut ctx = AclContext {
            rt: runtime,
            device_id,
            physical_id: None,
        };
        ctx.bind_thread()?;
        ctx.physical_id = ctx.query_physical_id()?;
        Ok(ctx)
    }

    /// The physical id of this logical device (`aclrtGetPhyDevIdByLogicDevId`).
    /// On a runtime without that call the logical id is the physical one unless
    /// `ASCEND_RT_VISIBLE_DEVICES` remaps devices: then `None` (unknown).
    fn query_physical_id(&self) -> Result<Option<u32>> {
        let Some(f) = self.rt.acl.aclrtGetPhyDevIdByLogicDevId else {
            let remapped =
                std::env::var_os("ASCEND_RT_VISIBLE_DEVICES").is_some_and(|v| !v.is_empty());
            return Ok((!remapped).then_some(self.device_id as u32));
        };
        let mut phy: i32 = -1;
        // SAFETY: `phy` is a valid out-pointer.
        let code = unsafe { f(self.device_id, &mut phy) };
        self.rt.check_acl(
            code,
            format_args!("aclrtGetPhyDevIdByLogicDevId({})", self.device_id),
        )?;
        u32::try_from(phy).map(Some).map_err(|_| {
            Error::new(
                Status::Failed,
                format!(
                    "aclrtGetPhyDevIdByLogicDevId({}) returned {phy}",
                    self.device_id
                ),
            )
        })
    }

    /// Physical id of the device (what a rank table's `device_id` names); `None`
    /// when the runtime cannot say (see [`AclContext::open`]).
    pub fn physical_id(&self) -> Option<u32> {
        self.physical_id
    }

    /// The SoC name (`aclrtGetSocName`), e.g. "Ascend910B3" (A2) or
    /// "Ascend910_9391" (A3), if the runtime reports one.
    pub fn soc_name(&self) -> Option<String> {
        let f = self.rt.acl.aclrtGetSocName?;
        // SAFETY: no arguments; returns NULL or a static C string.
        let p = unsafe { f() };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated.
        let s = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy();
        (!s.is_empty()).then(|| s.into_owned())
    }

    /// A device attribute (`aclrtGetDeviceInfo`); `None` when unsupported.
    pub fn device_info(&self, attr: b::aclrtDevAttr) -> Option<i64> {
        let f = self.rt.acl.aclrtGetDeviceInfo?;
        let mut v: i64 = 0;
        // SAFETY: `v` is a valid out-pointer.
        let code = unsafe { f(self.device_id as u32, attr, &mut v) };
        (code == b::ACL_SUCCESS).then_some(v)
    }

    /// The runtime this context uses.
    pub fn runtime(&self) -> &Arc<AscendRuntime> {
        &self.rt
    }

    /// The device this context selects.
    pub fn device_id(&self) -> i32 {
        self.device_id
    }

    /// Makes sure the calling thread has this context's device set.
    pub fn bind_thread(&self) -> Result<()> {
        let key = (self.rt.acl_identity(), self.device_id);
        if BOUND_DEVICE.with(|b| b.get()) == key {
            return Ok(());
        }
        let set = acl_fn!(self.rt, aclrtSetDevice)?;
        // SAFETY: plain integer argument.
        let code = unsafe { set(self.device_id) };
        self.rt
            .check_acl(code, format_args!("aclrtSetDevice({})", self.device_id))?;
        BOUND_DEVICE.with(|b| b.set(key));
        Ok(())
    }

    /// Allocates `size` bytes: device memory (`aclrtMalloc`, huge pages first) or
    /// pinned host memory (`aclrtMallocHost`). Returns the address.
    pub fn malloc(&self, size: usize, placement: Placement) -> Result<u64> {
        if size == 0 {
            bail!(ParamInvalid, "allocation size must be > 0");
        }
        self.bind_thread()?;
        let mut p: *mut c_void = ptr::null_mut();
        let (code, what) = match placement {
            Placement::Device => {
                let f = acl_fn!(self.rt, aclrtMalloc)?;
                // SAFETY: `p` is a valid out-pointer.
                let c = unsafe {
                    f(
                        &mut p,
                        size,
                        b::aclrtMemMallocPolicy_ACL_MEM_MALLOC_HUGE_FIRST,
                    )
                };
                (c, "aclrtMalloc")
            }
            Placement::Host => {
                let f = acl_fn!(self.rt, aclrtMallocHost)?;
                // SAFETY: `p` is a valid out-pointer.
                (unsafe { f(&mut p, size) }, "aclrtMallocHost")
            }
        };
        self.rt
            .check_acl(code, format_args!("{what}({size} bytes)"))?;
        if p.is_null() {
            return Err(Error::new(
                Status::OutOfMemory,
                format!("{what}({size} bytes) returned success but no memory"),
            ));
        }
        Ok(p as u64)
    }

    /// Frees memory from [`AclContext::malloc`] with the same placement.
    pub fn free(&self, addr: u64, placement: Placement) -> Result<()> {
        if addr == 0 {
            bail!(ParamInvalid, "cannot free address 0");
        }
        self.bind_thread()?;
        let (code, what) = match placement {
            Placement::Device => {
                let f = acl_fn!(self.rt, aclrtFree)?;
                // SAFETY: the caller passes an address obtained from aclrtMalloc.
                (unsafe { f(addr as *mut c_void) }, "aclrtFree")
            }
            Placement::Host => {
                let f = acl_fn!(self.rt, aclrtFreeHost)?;
                // SAFETY: the caller passes an address obtained from aclrtMallocHost.
                (unsafe { f(addr as *mut c_void) }, "aclrtFreeHost")
            }
        };
        self.rt.check_acl(code, format_args!("{what}(0x{addr:x})"))
    }

    /// Copies `len` bytes from `src` to `dst` and waits for completion.
    pub fn memcpy_sync(&self, dst: u64, src: u64, len: usize, kind: MemcpyKind) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if dst == 0 || src == 0 {
            bail!(
                ParamInvalid,
                "memcpy with a null address (dst 0x{dst:x}, src 0x{src:x})"
            );
        }
        self.bind_thread()?;
        let f = acl_fn!(self.rt, aclrtMemcpy)?;
        // SAFETY: the caller guarantees both ranges are valid for `len` bytes.
        let code = unsafe {
            f(
                dst as *mut c_void,
                len,
                src as *const c_void,
                len,
                kind.raw(),
            )
        };
        self.rt
            .check_acl(code, format_args!("aclrtMemcpy({len} bytes, {kind:?})"))
    }

    /// Creates a stream on this context's device.
    pub fn create_stream(&self) -> Result<Stream> {
        self.bind_thread()?;
        let f = acl_fn!(self.rt, aclrtCreateStream)?;
        let mut raw: b::aclrtStream = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer.
        let code = unsafe { f(&mut raw) };
        self.rt.check_acl(code, "aclrtCreateStream")?;
        if raw.is_null() {
            bail!(Failed, "aclrtCreateStream returned success but no stream");
        }
        Ok(Stream {
            rt: Arc::clone(&self.rt),
            raw,
            state: AtomicU8::new(CLEAN),
        })
    }

    /// Releases the device for the whole process (`aclrtResetDevice`). Only call this
    /// when nothing allocated through any context of this device is still in use.
    pub fn reset_device(self) -> Result<()> {
        self.bind_thread()?;
        let f = acl_fn!(self.rt, aclrtResetDevice)?;
        // SAFETY: plain integer argument.
        let code = unsafe { f(self.device_id) };
        BOUND_DEVICE.with(|b| b.set((0, -1)));
        self.rt
            .check_acl(code, format_args!("aclrtResetDevice({})", self.device_id))
    }
}

/// Stream state: no task left behind.
const CLEAN: u8 = 0;
/// A synchronize failed and `aclrtStreamAbort` dropped what was left.
const ABORTED: u8 = 1;
/// A synchronize failed and the stream could not be aborted: tasks may remain.
const STUCK: u8 = 2;

/// An ACL stream: an ordered queue of asynchronous operations. Destroyed on
/// drop: with `aclrtDestroyStream` when no task can be left on it, else with
/// `aclrtDestroyStreamForce` (ACL forbids destroying a stream with unfinished
/// tasks); without either call a stuck stream is leaked rather than destroyed.
#[derive(Debug)]
pub struct Stream {
    rt: Arc<AscendRuntime>,
    raw: b::aclrtStream,
    state: AtomicU8,
}

// SAFETY: an aclrtStream handle may be used from any thread; ACL serialises submissions
// internally (the simulator locks the queue).
unsafe impl Send for Stream {}
// SAFETY: see `Send`.
unsafe impl Sync for Stream {}

impl Stream {
    /// The raw `aclrtStream` handle, for passing to HCCL.
    pub fn raw(&self) -> *mut c_void {
        self.raw
    }

    /// The runtime this stream belongs to.
    pub fn runtime(&self) -> &Arc<AscendRuntime> {
        &self.rt
    }

    /// Queues a copy of `len` bytes from `src` to `dst`; both ranges must stay valid
    /// until [`Stream::synchronize`] returns.
    pub fn memcpy_async(&self, dst: u64, src: u64, len: usize, kind: MemcpyKind) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if dst == 0 || src == 0 {
            bail!(
                ParamInvalid,
                "memcpy_async with a null address (dst 0x{dst:x}, src 0x{src:x})"
            );
        }
        let f = acl_fn!(self.rt, aclrtMemcpyAsync)?;
        // SAFETY: the caller guarantees both ranges; `raw` is a live stream.
        let code = unsafe {
            f(
                dst as *mut c_void,
                len,
                src as *const c_void,
                len,
                kind.raw(),
                self.raw,
            )
        };
        self.rt.check_acl(
            code,
            format_args!("aclrtMemcpyAsync({len} bytes, {kind:?})"),
        )
    }

    /// Waits until everything queued so far has finished, at most `timeout`.
    /// Errors: `Timeout` when the stream does not drain in time; the mapped status of
    /// a failed operation otherwise. After a failure the stream is aborted
    /// (`aclrtStreamAbort`: the device drops what is still queued, so it no longer
    /// touches the memory involved) and must not be reused. Uses
    /// `aclrtSynchronizeStreamWithTimeout`, or plain `aclrtSynchronizeStream` (no
    /// timeout) on releases without it.
    pub fn synchronize(&self, timeout: Duration) -> Result<()> {
        let r = self.synchronize_once(timeout);
        if r.is_err() {
            self.abort();
        }
        r
    }

    /// True once a synchronize failed: the stream must not be reused.
    pub fn is_aborted(&self) -> bool {
        self.state.load(Ordering::Acquire) != CLEAN
    }

    /// Drops whatever is still queued (`aclrtStreamAbort`); without that call
    /// (or if it fails) the stream is marked stuck, for [`Drop`].
    fn abort(&self) {
        let state = match self.rt.acl.aclrtStreamAbort {
            Some(f) => match self.rt.check_acl(
                // SAFETY: `raw` is a live stream.
                unsafe { f(self.raw) },
                "aclrtStreamAbort",
            ) {
                Ok(()) => ABORTED,
                Err(e) => {
                    crate::log_warn!("{}", e.message);
                    STUCK
                }
            },
            None => STUCK,
        };
        self.state.store(state, Ordering::Release);
    }

    fn synchronize_once(&self, timeout: Duration) -> Result<()> {
        // 0 would mean "do not wait" or "wait forever" depending on the release.
        let ms = i32::try_from(timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        if let Some(f) = self.rt.acl.aclrtSynchronizeStreamWithTimeout {
            // SAFETY: `raw` is a live stream.
            let code = unsafe { f(self.raw, ms) };
            return self.rt.check_acl(
                code,
                format_args!("aclrtSynchronizeStreamWithTimeout({ms} ms)"),
            );
        }
        let f = acl_fn!(self.rt, aclrtSynchronizeStream)?;
        // SAFETY: `raw` is a live stream.
        let code = unsafe { f(self.raw) };
        self.rt.check_acl(code, "aclrtSynchronizeStream")
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let acl = &self.rt.acl;
        let (f, what) = if self.state.load(Ordering::Acquire) == STUCK {
            match acl.aclrtDestroyStreamForce {
                Some(f) => (f, "aclrtDestroyStreamForce"),
                None => {
                    crate::log_warn!(
                        "leaking a stream with unfinished tasks: the runtime has neither aclrtStreamAbort nor aclrtDestroyStreamForce"
                    );
                    return;
                }
            }
        } else {
            match acl.aclrtDestroyStream {
                Some(f) => (f, "aclrtDestroyStream"),
                None => return,
            }
        };
        // SAFETY: `raw` is a live stream, destroyed exactly once.
        let code = unsafe { f(self.raw) };
        if let Err(e) = self.rt.check_acl(code, what) {
            crate::log_warn!("{}", e.message);
        }
    }
}
