//! Run-time loader for the Ascend runtime. The libraries are opened with
//! `dlopen` (never linked) and every symbol the backend uses is resolved into a
//! table of `Option<fn>`: a missing library is an error at load time, a missing
//! symbol fails only the call that needs it. Vendor error codes map to [`Status`].
//!
//! Layouts handled (docs/ascend.md, "Libraries"):
//! - ACL: `libascendcl.so`; any runtime (`aclrt*`) symbol it lacks is taken from
//!   `libacl_rt.so` (CANN 9.1+, where libascendcl.so is an acl-compat shim).
//! - HCCL: `libhcomm.so` (CANN 8.5+, holds the one-sided service) before
//!   `libhccl.so` (older kits; on 9.0 a set of forwarding wrappers whose stubs
//!   answer `HCCL_E_NOT_SUPPORTED`, see [`AscendRuntime::check_not_stubs`]).
//! - Search: `llmdd.AscendLibDir` or `LLMDD_ASCEND_LIB_DIR` (only there), else the
//!   loader's path (`LD_LIBRARY_PATH`, …), `$ASCEND_HOME_PATH/lib64` (8.5+
//!   set_env.sh), `$ASCEND_TOOLKIT_HOME/lib64`, `/usr/local/Ascend/cann/lib64`,
//!   `/usr/local/Ascend/ascend-toolkit/latest/lib64`.
//!
//! Libraries are opened `RTLD_LOCAL`: the CANN libraries carry their own
//! dependencies, and several runtimes can then be open in one process (tests).

use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};

use crate::status::{Error, Result, Status};
use crate::sys::ascend_bindings as b;

/// Environment variable naming a directory that holds the runtime libraries.
pub const LIB_DIR_ENV: &str = "LLMDD_ASCEND_LIB_DIR";
/// File name of the ACL library.
pub const ACL_LIB: &str = "libascendcl.so";
/// File name of the ACL runtime library of CANN 9.1+ (the `aclrt*` calls).
pub const ACL_RT_LIB: &str = "libacl_rt.so";
/// File name of the HCCL communication library of CANN 8.5+ (one-sided API).
pub const HCOMM_LIB: &str = "libhcomm.so";
/// File name of the HCCL library (older kits; the ops library since 8.5).
pub const HCCL_LIB: &str = "libhccl.so";

/// Declares a symbol table struct with one `Option<fn>` per vendor symbol.
macro_rules! symbol_table {
    ($(#[$meta:meta])* $name:ident { $($sym:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        #[allow(non_snake_case)]
        #[derive(Clone, Copy, Default)]
        pub struct $name {
            $(
                #[doc = concat!("`", stringify!($sym), "`, if the library exports it.")]
                pub $sym: Option<$ty>,
            )*
        }

        impl $name {
            /// Resolves every symbol not yet found from `handle`.
            ///
            /// # Safety
            /// `handle` must be a live handle returned by `dlopen`.
            unsafe fn fill(&mut self, handle: *mut c_void) {
                $(
                    if self.$sym.is_none() {
                        self.$sym = resolve_symbol::<$ty>(handle, concat!(stringify!($sym), "\0"));
                    }
                )*
            }

            /// Names of the symbols this table tried to resolve, and whether each was found.
            pub fn presence(&self) -> Vec<(&'static str, bool)> {
                vec![$((stringify!($sym), self.$sym.is_some()),)*]
            }
        }
    };
}

symbol_table! {
    /// ACL entry points resolved from `libascendcl.so` (and `libacl_rt.so`).
    AclFns {
        aclInit: b::aclInit_fn,
        aclFinalize: b::aclFinalize_fn,
        aclGetRecentErrMsg: b::aclGetRecentErrMsg_fn,
        aclsysGetVersionStr: b::aclsysGetVersionStr_fn,
        aclrtSetDevice: b::aclrtSetDevice_fn,
        aclrtResetDevice: b::aclrtResetDevice_fn,
        aclrtGetDeviceCount: b::aclrtGetDeviceCount_fn,
        aclrtGetPhyDevIdByLogicDevId: b::aclrtGetPhyDevIdByLogicDevId_fn,
        aclrtGetDeviceInfo: b::aclrtGetDeviceInfo_fn,
        aclrtGetSocName: b::aclrtGetSocName_fn,
        aclrtMalloc: b::aclrtMalloc_fn,
        aclrtMallocHost: b::aclrtMallocHost_fn,
        aclrtFree: b::aclrtFree_fn,
        aclrtFreeHost: b::aclrtFreeHost_fn,
        aclrtMemcpy: b::aclrtMemcpy_fn,
        aclrtMemcpyAsync: b::aclrtMemcpyAsync_fn,
        aclrtCreateStream: b::aclrtCreateStream_fn,
        aclrtDestroyStream: b::aclrtDestroyStream_fn,
        aclrtDestroyStreamForce: b::aclrtDestroyStreamForce_fn,
        aclrtStreamAbort: b::aclrtStreamAbort_fn,
        aclrtSynchronizeStream: b::aclrtSynchronizeStream_fn,
        aclrtSynchronizeStreamWithTimeout: b::aclrtSynchronizeStreamWithTimeout_fn,
    }
}

symbol_table! {
    /// HCCL entry points resolved from `libhcomm.so` or `libhccl.so`.
    HcclFns {
        HcclCommInitClusterInfoMemConfig: b::HcclCommInitClusterInfoMemConfig_fn,
        HcclCommDestroy: b::HcclCommDestroy_fn,
        HcclGetErrorString: b::HcclGetErrorString_fn,
        HcclRegisterGlobalMem: b::HcclRegisterGlobalMem_fn,
        HcclDeregisterGlobalMem: b::HcclDeregisterGlobalMem_fn,
        HcclCommBindMem: b::HcclCommBindMem_fn,
        HcclCommUnbindMem: b::HcclCommUnbindMem_fn,
        HcclCommPrepare: b::HcclCommPrepare_fn,
        HcclBatchPut: b::HcclBatchPut_fn,
        HcclBatchGet: b::HcclBatchGet_fn,
    }
}

/// `HcommIsSupport<Name>` of CANN 9.0's libhccl.so: true if its wrapper found
/// `<Name>` in libhcomm.so.
type IsSupportFn = unsafe extern "C" fn() -> bool;

/// Looks `name` (NUL-terminated) up in `handle`, as a function pointer of type `T`.
///
/// # Safety
/// `handle` must come from `dlopen`, and `T` must be the symbol's true `extern "C"`
/// function pointer type.
unsafe fn resolve_symbol<T: Copy>(handle: *mut c_void, name: &str) -> Option<T> {
    const {
        assert!(std::mem::size_of::<T>() == std::mem::size_of::<*mut c_void>());
    }
    debug_assert!(name.ends_with('\0'));
    let p = libc::dlsym(handle, name.as_ptr().cast());
    if p.is_null() {
        None
    } else {
        // SAFETY: T is a function pointer type of pointer size (checked above) and `p`
        // is the non-null address of the exported function.
        Some(std::mem::transmute_copy::<*mut c_void, T>(&p))
    }
}

/// Returns the symbol or a `FeatureNotEnabled` error naming it and its library.
pub fn need<T: Copy>(sym: Option<T>, name: &str, lib: &str) -> Result<T> {
    sym.ok_or_else(|| {
        Error::new(
            Status::FeatureNotEnabled,
            format!(
                "symbol {name} is not exported by {lib} (the installed CANN release may be too old)"
            ),
        )
    })
}

/// `acl_fn!(rt, aclrtMalloc)` → `Result<aclrtMalloc_fn>` from the ACL table.
#[macro_export]
#[doc(hidden)]
macro_rules! acl_fn {
    ($rt:expr, $sym:ident) => {
        $crate::sys::loader::need($rt.acl.$sym, stringify!($sym), &$rt.acl_files())
    };
}

/// `hccl_fn!(rt, HcclBatchGet)` → `Result<HcclBatchGet_fn>` from the HCCL table.
#[macro_export]
#[doc(hidden)]
macro_rules! hccl_fn {
    ($rt:expr, $sym:ident) => {
        $crate::sys::loader::need(
            $rt.hccl.$sym,
            stringify!($sym),
            &$rt.hccl_path().display().to_string(),
        )
    };
}

/// One opened library.
struct Lib {
    handle: *mut c_void,
    path: PathBuf,
}

/// The dlopen'd Ascend runtime: its libraries and their resolved symbol tables.
/// The libraries are closed when the last reference is dropped, unless the runtime
/// was initialised ([`AscendRuntime::keep_loaded`]): an initialised ACL runtime runs
/// its own threads, so its code must stay mapped until the process exits.
pub struct AscendRuntime {
    acl_lib: Lib,
    acl_rt_lib: Option<Lib>,
    hccl_lib: Lib,
    keep: std::sync::atomic::AtomicBool,
    /// ACL symbols.
    pub acl: AclFns,
    /// HCCL symbols.
    pub hccl: HcclFns,
}

// SAFETY: the handles are only passed to dlsym/dlclose, which are thread-safe, and
// the tables are plain function pointers; the vendor functions are thread-safe per
// the ACL/HCCL documentation (and in the simulator), except communicator creation,
// which callers serialise (backend::acl::hccl).
unsafe impl Send for AscendRuntime {}
// SAFETY: see `Send`; nothing is mutated after construction.
unsafe impl Sync for AscendRuntime {}

impl std::fmt::Debug for AscendRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AscendRuntime")
            .field("acl", &self.acl_files())
            .field("hccl", &self.hccl_lib.path)
            .finish_non_exhaustive()
    }
}

/// Where a library is looked for, in order, and what chose those places.
fn search(lib: &str, override_dir: Option<&Path>) -> (Vec<PathBuf>, &'static str) {
    if let Some(dir) = override_dir {
        return (vec![dir.join(lib)], "llmdd.AscendLibDir");
    }
    if let Some(dir) = std::env::var_os(LIB_DIR_ENV).filter(|v| !v.is_empty()) {
        return (vec![Path::new(&dir).join(lib)], LIB_DIR_ENV);
    }
    let mut out = vec![PathBuf::from(lib)];
    for var in ["ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"] {
        if let Some(home) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let home = Path::new(&home);
            out.push(home.join("lib64").join(lib));
            out.push(
                home.join(format!("{}-linux", std::env::consts::ARCH))
                    .join("lib64")
                    .join(lib),
            );
        }
    }
    for root in [
        "/usr/local/Ascend/cann/lib64",
        "/usr/local/Ascend/ascend-toolkit/latest/lib64",
    ] {
        out.push(Path::new(root).join(lib));
    }
    out.dedup();
    (
        out,
        "the default search: LD_LIBRARY_PATH, $ASCEND_HOME_PATH/lib64, $ASCEND_TOOLKIT_HOME/lib64, \
         /usr/local/Ascend/cann/lib64, /usr/local/Ascend/ascend-toolkit/latest/lib64",
    )
}

fn dlerror_text() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated thread-local string.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dlopen error".to_string()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// Opens the first of `libs` found along the search (every place for the first
/// name, then every place for the next). Errors: `FeatureNotEnabled` listing
/// every path tried and why it failed.
fn open_first(libs: &[&str], override_dir: Option<&Path>) -> Result<Lib> {
    let mut tried = Vec::new();
    let mut source = "";
    for lib in libs {
        let (paths, s) = search(lib, override_dir);
        source = s;
        for path in paths {
            let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
                tried.push(format!("{} (path contains NUL)", path.display()));
                continue;
            };
            // SAFETY: `c` is a valid NUL-terminated path.
            let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
            if !h.is_null() {
                return Ok(Lib { handle: h, path });
            }
            tried.push(format!("{} ({})", path.display(), dlerror_text()));
        }
    }
    Err(Error::new(
        Status::FeatureNotEnabled,
        format!(
            "Ascend runtime not available: could not load {} (searched by {source}); tried: {}. \
             Point llmdd.AscendLibDir or {LIB_DIR_ENV} at the directory holding {ACL_LIB} and \
             {HCOMM_LIB} (or {HCCL_LIB}), or source CANN's set_env.sh (ASCEND_HOME_PATH, LD_LIBRARY_PATH)",
            libs.join(" or "),
            tried.join("; ")
        ),
    ))
}

/// The `aclrt*` symbols whose absence from libascendcl.so sends the loader to
/// libacl_rt.so.
const ACL_RUNTIME_PROBE: &[&str] = &["aclrtSetDevice", "aclrtMalloc", "aclrtCreateStream"];

impl AscendRuntime {
    /// Opens the ACL and HCCL libraries and resolves their symbols (see the
    /// module documentation for the search and the layouts).
    /// Errors: `FeatureNotEnabled` listing every path tried and why it failed.
    pub fn load(lib_dir: Option<&Path>) -> Result<AscendRuntime> {
        let acl_lib = open_first(&[ACL_LIB], lib_dir)?;
        let mut acl = AclFns::default();
        // SAFETY: a live dlopen handle.
        unsafe { acl.fill(acl_lib.handle) };
        let lacks_runtime = acl
            .presence()
            .iter()
            .any(|(n, ok)| !ok && ACL_RUNTIME_PROBE.contains(n));
        let acl_rt_lib = if lacks_runtime {
            match open_first(&[ACL_RT_LIB], lib_dir) {
                Ok(l) => {
                    // SAFETY: a live dlopen handle.
                    unsafe { acl.fill(l.handle) };
                    Some(l)
                }
                // `require` names the missing symbols and both files.
                Err(_) => None,
            }
        } else {
            None
        };
        let hccl_lib = match open_first(&[HCOMM_LIB, HCCL_LIB], lib_dir) {
            Ok(l) => l,
            Err(e) => {
                for l in std::iter::once(&acl_lib).chain(acl_rt_lib.as_ref()) {
                    // SAFETY: a handle from dlopen, not used afterwards.
                    unsafe { libc::dlclose(l.handle) };
                }
                return Err(e);
            }
        };
        let mut hccl = HcclFns::default();
        // SAFETY: a live dlopen handle.
        unsafe { hccl.fill(hccl_lib.handle) };
        Ok(AscendRuntime {
            acl_lib,
            acl_rt_lib,
            hccl_lib,
            keep: std::sync::atomic::AtomicBool::new(false),
            acl,
            hccl,
        })
    }

    /// Path the ACL library was loaded from.
    pub fn acl_path(&self) -> &Path {
        &self.acl_lib.path
    }

    /// Path of `libacl_rt.so`, when the `aclrt*` calls came from it.
    pub fn acl_rt_path(&self) -> Option<&Path> {
        self.acl_rt_lib.as_ref().map(|l| l.path.as_path())
    }

    /// The ACL file(s), for messages: "libascendcl.so" or "… + libacl_rt.so".
    pub fn acl_files(&self) -> String {
        match &self.acl_rt_lib {
            Some(rt) => format!("{} + {}", self.acl_lib.path.display(), rt.path.display()),
            None => self.acl_lib.path.display().to_string(),
        }
    }

    /// Path the HCCL library (libhcomm.so or libhccl.so) was loaded from.
    pub fn hccl_path(&self) -> &Path {
        &self.hccl_lib.path
    }

    /// Every library loaded, for logs and the bring-up report.
    pub fn describe(&self) -> String {
        format!(
            "ACL {}, HCCL {}",
            self.acl_files(),
            self.hccl_path().display()
        )
    }

    /// Keeps the libraries loaded for the rest of the process (called once ACL
    /// is initialised through them).
    pub fn keep_loaded(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Opaque identity of the loaded ACL library (equal for two loads of one file).
    pub fn acl_identity(&self) -> usize {
        self.acl_lib.handle as usize
    }

    /// Checks that every symbol named in `acl` / `hccl` was resolved. Errors:
    /// `FeatureNotEnabled` naming each missing symbol and the library file.
    pub fn require(&self, acl: &[&str], hccl: &[&str]) -> Result<()> {
        let mut missing = Vec::new();
        let (acl_files, hccl_file) = (self.acl_files(), self.hccl_path().display().to_string());
        for (names, present, file) in [
            (acl, self.acl.presence(), &acl_files),
            (hccl, self.hccl.presence(), &hccl_file),
        ] {
            for name in names {
                if !present.iter().any(|(n, ok)| n == name && *ok) {
                    missing.push(format!("{name} (from {file})"));
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            Status::FeatureNotEnabled,
            format!(
                "the Ascend runtime lacks symbol(s) the acl backend needs: {}; \
                 install a CANN release with the HCCL one-sided API (8.5+: {HCOMM_LIB})",
                missing.join(", ")
            ),
        ))
    }

    /// Refuses a libhccl.so whose one-sided calls are CANN 9.0 compatibility
    /// stubs: its `HcommIsSupport<Name>()` says the wrapper found no `<Name>` in
    /// libhcomm.so, so every such call would answer `HCCL_E_NOT_SUPPORTED`.
    /// A library without those queries (libhcomm.so, pre-9.0 libhccl.so) passes.
    /// Errors: `FeatureNotEnabled` naming the unsupported calls.
    pub fn check_not_stubs(&self, names: &[&str]) -> Result<()> {
        let mut stubbed = Vec::new();
        for name in names {
            let query = format!("HcommIsSupport{name}\0");
            // SAFETY: a live handle; the query takes no argument and returns bool.
            let f = unsafe { resolve_symbol::<IsSupportFn>(self.hccl_lib.handle, &query) };
            if let Some(f) = f {
                // SAFETY: see above.
                if !unsafe { f() } {
                    stubbed.push(*name);
                }
            }
        }
        if stubbed.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            Status::FeatureNotEnabled,
            format!(
                "{} forwards {} to {HCOMM_LIB}, which does not provide them (CANN 9.0 compatibility \
                 stubs answer HCCL_E_NOT_SUPPORTED); install the hcomm package or point \
                 llmdd.AscendLibDir at the directory holding {HCOMM_LIB}",
                self.hccl_path().display(),
                stubbed.join(", ")
            ),
        ))
    }

    /// Turns an ACL return code into `Ok` or an error naming `what` and the vendor's
    /// recent-error text when available. `what` is formatted only on failure
    /// (pass `format_args!` on hot paths).
    pub fn check_acl(&self, code: i32, what: impl std::fmt::Display) -> Result<()> {
        if code == b::ACL_SUCCESS {
            return Ok(());
        }
        let mut msg = format!("{what} failed: {}", describe_acl_error(code));
        if let Some(f) = self.acl.aclGetRecentErrMsg {
            // SAFETY: the function takes no arguments and returns NULL or a C string.
            let p = unsafe { f() };
            if !p.is_null() {
                // SAFETY: non-null, NUL-terminated per the ACL contract.
                let text = unsafe { CStr::from_ptr(p) }.to_string_lossy();
                if !text.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(&text);
                }
            }
        }
        Err(Error::new(map_acl_error(code), msg))
    }

    /// Turns an HCCL return code into `Ok` or an error naming `what` and the
    /// vendor's description of the code. `what` is formatted only on failure.
    pub fn check_hccl(&self, code: u32, what: impl std::fmt::Display) -> Result<()> {
        if code == b::HcclResult_HCCL_SUCCESS {
            return Ok(());
        }
        let mut msg = format!("{what} failed: {}", describe_hccl_error(code as i32));
        if let Some(f) = self.hccl.HcclGetErrorString {
            // SAFETY: takes the code by value; returns NULL or a static C string.
            let p = unsafe { f(code) };
            if !p.is_null() {
                // SAFETY: non-null, NUL-terminated per the HCCL contract.
                let text = unsafe { CStr::from_ptr(p) }.to_string_lossy();
                if !text.is_empty() {
                    msg.push_str(" (");
                    msg.push_str(&text);
                    msg.push(')');
                }
            }
        }
        Err(Error::new(map_hccl_error(code as i32), msg))
    }

    /// The version string ACL reports for package `pkg` ("runtime", "hcomm", …),
    /// if the runtime has `aclsysGetVersionStr` and knows the package.
    pub fn version(&self, pkg: &str) -> Option<String> {
        let f = self.acl.aclsysGetVersionStr?;
        let name = CString::new(pkg).ok()?;
        let mut buf = [0 as std::ffi::c_char; b::ACL_PKG_VERSION_MAX_SIZE as usize];
        // SAFETY: `name` is NUL-terminated; `buf` holds ACL_PKG_VERSION_MAX_SIZE bytes,
        // the size the call writes at most.
        let code = unsafe { f(name.as_ptr() as *mut _, buf.as_mut_ptr()) };
        if code != b::ACL_SUCCESS {
            return None;
        }
        buf[buf.len() - 1] = 0;
        // SAFETY: NUL-terminated within `buf` (forced above).
        let v = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        (!v.is_empty()).then(|| v.into_owned())
    }
}

impl Drop for AscendRuntime {
    fn drop(&mut self) {
        if self.keep.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        // SAFETY: the handles came from dlopen and no table entry is used after drop
        // (every user holds an Arc<AscendRuntime>).
        unsafe {
            libc::dlclose(self.hccl_lib.handle);
            if let Some(l) = &self.acl_rt_lib {
                libc::dlclose(l.handle);
            }
            libc::dlclose(self.acl_lib.handle);
        }
    }
}

/// Maps an ACL (`aclError`) code to an llmdd status.
pub fn map_acl_error(code: i32) -> Status {
    match code {
        b::ACL_SUCCESS => Status::Success,
        b::ACL_ERROR_BAD_ALLOC
        | b::ACL_ERROR_RT_MEMORY_ALLOCATION
        | b::ACL_ERROR_RT_DEVICE_OOM
        | b::ACL_ERROR_STORAGE_OVER_LIMIT => Status::OutOfMemory,
        b::ACL_ERROR_RT_STREAM_SYNC_TIMEOUT
        | b::ACL_ERROR_RT_EVENT_SYNC_TIMEOUT
        | b::ACL_ERROR_RT_WAIT_TIMEOUT
        | b::ACL_ERROR_RT_TASK_TIMEOUT
        | b::ACL_ERROR_WAIT_CALLBACK_TIMEOUT => Status::Timeout,
        b::ACL_ERROR_RT_DEVICE_MEM_ERROR
        | b::ACL_ERROR_RT_HBM_MULTI_BIT_ECC_ERROR
        | b::ACL_ERROR_RT_SUSPECT_DEVICE_MEM_ERROR => Status::DeviceMemError,
        b::ACL_ERROR_RT_SUSPECT_REMOTE_ERROR | b::ACL_ERROR_RT_LINK_ERROR => {
            Status::SuspectRemoteError
        }
        b::ACL_ERROR_INVALID_PARAM
        | b::ACL_ERROR_RT_PARAM_INVALID
        | b::ACL_ERROR_RT_ADDR_UNALIGNED
        | b::ACL_ERROR_RT_INVALID_DEVICEID
        | b::ACL_ERROR_INVALID_DEVICE => Status::ParamInvalid,
        b::ACL_ERROR_API_NOT_SUPPORT | b::ACL_ERROR_RT_FEATURE_NOT_SUPPORT => {
            Status::FeatureNotEnabled
        }
        _ => Status::Failed,
    }
}

/// Maps an HCCL (`HcclResult`) code to an llmdd status.
pub fn map_hccl_error(code: i32) -> Status {
    if code < 0 {
        // HCCL_E_NOT_SUPPORTED, ((HcclResult)(-2)): CANN 9.0 libhccl.so's stubs.
        return if code == b::HCCL_E_NOT_SUPPORTED {
            Status::FeatureNotEnabled
        } else {
            Status::Failed
        };
    }
    match code as u32 {
        b::HcclResult_HCCL_SUCCESS => Status::Success,
        b::HcclResult_HCCL_E_PARA | b::HcclResult_HCCL_E_PTR => Status::ParamInvalid,
        b::HcclResult_HCCL_E_MEMORY | b::HcclResult_HCCL_E_OOM => Status::OutOfMemory,
        b::HcclResult_HCCL_E_TIMEOUT => Status::Timeout,
        b::HcclResult_HCCL_E_NOT_SUPPORT => Status::FeatureNotEnabled,
        b::HcclResult_HCCL_E_REMOTE => Status::SuspectRemoteError,
        b::HcclResult_HCCL_E_TCP_CONNECT | b::HcclResult_HCCL_E_ROCE_CONNECT => Status::LinkFailed,
        _ => Status::Failed,
    }
}

/// "unexpected ACL code N" when `code` has no specific mapping, else the mapping's name.
pub fn describe_acl_error(code: i32) -> String {
    match map_acl_error(code) {
        Status::Failed => format!("unexpected ACL code {code}"),
        s => format!("ACL code {code} ({})", s.name()),
    }
}

/// "unexpected HCCL code N" when `code` has no specific mapping, else the mapping's name.
pub fn describe_hccl_error(code: i32) -> String {
    if code == b::HCCL_E_NOT_SUPPORTED {
        return format!(
            "HCCL code {code} (HCCL_E_NOT_SUPPORTED: a libhccl.so compatibility stub; {HCOMM_LIB} lacks this call)"
        );
    }
    match map_hccl_error(code) {
        Status::Failed => format!("unexpected HCCL code {code}"),
        s => format!("HCCL code {code} ({})", s.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_mapping_table() {
        let table = [
            (0, Status::Success),
            (200_000, Status::OutOfMemory),
            (207_001, Status::OutOfMemory),
            (207_018, Status::OutOfMemory),
            (507_046, Status::Timeout),
            (107_019, Status::Timeout),
            (507_053, Status::DeviceMemError),
            (507_057, Status::SuspectRemoteError),
            (100_000, Status::ParamInvalid),
            (107_000, Status::ParamInvalid),
            (207_000, Status::FeatureNotEnabled),
            (500_001, Status::Failed),
            (-7, Status::Failed),
        ];
        for (code, status) in table {
            assert_eq!(map_acl_error(code), status, "ACL code {code}");
        }
        assert_eq!(describe_acl_error(424_242), "unexpected ACL code 424242");
        assert!(describe_acl_error(507_053).contains("LLM_DEVICE_MEM_ERROR"));
    }

    #[test]
    fn hccl_mapping_table() {
        let table = [
            (0, Status::Success),
            (1, Status::ParamInvalid),
            (2, Status::ParamInvalid),
            (3, Status::OutOfMemory),
            (24, Status::OutOfMemory),
            (9, Status::Timeout),
            (5, Status::FeatureNotEnabled),
            (-2, Status::FeatureNotEnabled),
            (21, Status::SuspectRemoteError),
            (11, Status::LinkFailed),
            (4, Status::Failed),
            (1041, Status::Failed),
        ];
        for (code, status) in table {
            assert_eq!(map_hccl_error(code), status, "HCCL code {code}");
        }
        assert_eq!(describe_hccl_error(77), "unexpected HCCL code 77");
    }

    #[test]
    fn missing_library_lists_paths() {
        let dir = std::env::temp_dir().join(format!("llmdd-no-ascend-{}", std::process::id()));
        let err = AscendRuntime::load(Some(&dir)).unwrap_err();
        assert_eq!(err.status, Status::FeatureNotEnabled);
        assert!(err
            .message
            .contains(&dir.join(ACL_LIB).display().to_string()));
        assert!(err.message.contains(LIB_DIR_ENV), "{}", err.message);
    }

    #[test]
    fn default_candidates_in_order() {
        if std::env::var_os(LIB_DIR_ENV).is_some() {
            return;
        }
        let (c, _) = search(ACL_LIB, None);
        assert_eq!(c[0], PathBuf::from(ACL_LIB));
        assert_eq!(
            c.last().unwrap(),
            &PathBuf::from("/usr/local/Ascend/ascend-toolkit/latest/lib64/libascendcl.so")
        );
        assert!(c.contains(&PathBuf::from(
            "/usr/local/Ascend/cann/lib64/libascendcl.so"
        )));
    }

    #[test]
    fn runtime_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AscendRuntime>();
    }
}
