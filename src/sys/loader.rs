//! Run-time loader for the Ascend runtime: `libascendcl.so` and `libhccl.so` are
//! opened with `dlopen` (never linked), and every symbol the backend uses is resolved
//! into a table of `Option<fn>`. A missing library is an error at load time; a missing
//! symbol fails only the call that needs it. Vendor error codes map to [`Status`].

use std::ffi::{c_void, CStr, CString};
use std::path::{Path, PathBuf};

use crate::status::{Error, Result, Status};
use crate::sys::ascend_bindings as b;

/// Environment variable naming a directory that holds both runtime libraries.
pub const LIB_DIR_ENV: &str = "LLMDD_ASCEND_LIB_DIR";
/// File name of the ACL runtime library.
pub const ACL_LIB: &str = "libascendcl.so";
/// File name of the HCCL library.
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
            /// Resolves every symbol of the table from `handle`.
            ///
            /// # Safety
            /// `handle` must be a live handle returned by `dlopen`.
            unsafe fn resolve(handle: *mut c_void) -> Self {
                $name {
                    $($sym: resolve_symbol::<$ty>(handle, concat!(stringify!($sym), "\0")),)*
                }
            }

            /// Names of the symbols this table tried to resolve, and whether each was found.
            pub fn presence(&self) -> Vec<(&'static str, bool)> {
                vec![$((stringify!($sym), self.$sym.is_some()),)*]
            }
        }
    };
}

symbol_table! {
    /// ACL entry points resolved from `libascendcl.so`.
    AclFns {
        aclInit: b::aclInit_fn,
        aclFinalize: b::aclFinalize_fn,
        aclGetRecentErrMsg: b::aclGetRecentErrMsg_fn,
        aclrtSetDevice: b::aclrtSetDevice_fn,
        aclrtResetDevice: b::aclrtResetDevice_fn,
        aclrtMalloc: b::aclrtMalloc_fn,
        aclrtMallocHost: b::aclrtMallocHost_fn,
        aclrtFree: b::aclrtFree_fn,
        aclrtFreeHost: b::aclrtFreeHost_fn,
        aclrtMemcpy: b::aclrtMemcpy_fn,
        aclrtMemcpyAsync: b::aclrtMemcpyAsync_fn,
        aclrtCreateStream: b::aclrtCreateStream_fn,
        aclrtDestroyStream: b::aclrtDestroyStream_fn,
        aclrtSynchronizeStream: b::aclrtSynchronizeStream_fn,
        aclrtSynchronizeStreamWithTimeout: b::aclrtSynchronizeStreamWithTimeout_fn,
    }
}

symbol_table! {
    /// HCCL entry points resolved from `libhccl.so`.
    HcclFns {
        HcclCommInitClusterInfoMemConfig: b::HcclCommInitClusterInfoMemConfig_fn,
        HcclCommDestroy: b::HcclCommDestroy_fn,
        HcclGetErrorString: b::HcclGetErrorString_fn,
        HcclRegisterMem: b::HcclRegisterMem_fn,
        HcclDeregisterMem: b::HcclDeregisterMem_fn,
        HcclExchangeMemDesc: b::HcclExchangeMemDesc_fn,
        HcclRegisterGlobalMem: b::HcclRegisterGlobalMem_fn,
        HcclDeregisterGlobalMem: b::HcclDeregisterGlobalMem_fn,
        HcclCommBindMem: b::HcclCommBindMem_fn,
        HcclCommUnbindMem: b::HcclCommUnbindMem_fn,
        HcclCommPrepare: b::HcclCommPrepare_fn,
        HcclBatchPut: b::HcclBatchPut_fn,
        HcclBatchGet: b::HcclBatchGet_fn,
    }
}

/// Looks `name` (NUL-terminated) up in `handle`, as a function pointer of type `T`.
///
/// # Safety
/// `handle` must come from `dlopen`, and `T` must be the symbol's true `extern "C"`
/// function pointer type.
unsafe fn resolve_symbol<T: Copy>(handle: *mut c_void, name: &'static str) -> Option<T> {
    const {
        assert!(std::mem::size_of::<T>() == std::mem::size_of::<*mut c_void>());
    }
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
pub fn need<T: Copy>(sym: Option<T>, name: &str, lib: &Path) -> Result<T> {
    sym.ok_or_else(|| {
        Error::new(
            Status::FeatureNotEnabled,
            format!(
                "symbol {name} is not exported by {} (the installed CANN release may be too old)",
                lib.display()
            ),
        )
    })
}

/// `acl_fn!(rt, aclrtMalloc)` → `Result<aclrtMalloc_fn>` from the ACL table.
#[macro_export]
#[doc(hidden)]
macro_rules! acl_fn {
    ($rt:expr, $sym:ident) => {
        $crate::sys::loader::need($rt.acl.$sym, stringify!($sym), $rt.acl_path())
    };
}

/// `hccl_fn!(rt, HcclBatchGet)` → `Result<HcclBatchGet_fn>` from the HCCL table.
#[macro_export]
#[doc(hidden)]
macro_rules! hccl_fn {
    ($rt:expr, $sym:ident) => {
        $crate::sys::loader::need($rt.hccl.$sym, stringify!($sym), $rt.hccl_path())
    };
}

/// The dlopen'd Ascend runtime: both libraries and their resolved symbol tables.
/// The libraries are closed when the last reference is dropped, unless the runtime
/// was initialised ([`AscendRuntime::keep_loaded`]): an initialised ACL runtime runs
/// its own threads, so its code must stay mapped until the process exits.
pub struct AscendRuntime {
    acl_handle: *mut c_void,
    hccl_handle: *mut c_void,
    keep: std::sync::atomic::AtomicBool,
    acl_path: PathBuf,
    hccl_path: PathBuf,
    /// ACL symbols.
    pub acl: AclFns,
    /// HCCL symbols.
    pub hccl: HcclFns,
}

// SAFETY: the handles are only passed to dlsym/dlclose, which are thread-safe, and
// the tables are plain function pointers; the vendor functions are thread-safe per
// the ACL/HCCL documentation (and in the simulator).
unsafe impl Send for AscendRuntime {}
// SAFETY: see `Send`; nothing is mutated after construction.
unsafe impl Sync for AscendRuntime {}

impl std::fmt::Debug for AscendRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AscendRuntime")
            .field("acl_path", &self.acl_path)
            .field("hccl_path", &self.hccl_path)
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
    if let Some(home) = std::env::var_os("ASCEND_TOOLKIT_HOME").filter(|v| !v.is_empty()) {
        out.push(Path::new(&home).join("lib64").join(lib));
    }
    out.push(Path::new("/usr/local/Ascend/ascend-toolkit/latest/lib64").join(lib));
    (
        out,
        "the default search: LD_LIBRARY_PATH, $ASCEND_TOOLKIT_HOME/lib64, the default CANN path",
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

fn open_first(lib: &str, override_dir: Option<&Path>) -> Result<(*mut c_void, PathBuf)> {
    let mut tried = Vec::new();
    let (paths, source) = search(lib, override_dir);
    for path in paths {
        let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else {
            tried.push(format!("{} (path contains NUL)", path.display()));
            continue;
        };
        // SAFETY: `c` is a valid NUL-terminated path.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if !h.is_null() {
            return Ok((h, path));
        }
        tried.push(format!("{} ({})", path.display(), dlerror_text()));
    }
    Err(Error::new(
        Status::FeatureNotEnabled,
        format!(
            "Ascend runtime not available: could not load {lib} (searched by {source}); tried: {}. \
             Point llmdd.AscendLibDir or {LIB_DIR_ENV} at the directory holding {ACL_LIB} and {HCCL_LIB}, \
             or source CANN's set_env.sh (ASCEND_TOOLKIT_HOME, LD_LIBRARY_PATH)",
            tried.join("; ")
        ),
    ))
}

impl AscendRuntime {
    /// Opens both libraries and resolves their symbols.
    ///
    /// Search order: `lib_dir` if given (only there), else `$LLMDD_ASCEND_LIB_DIR`
    /// (only there), else the bare name (the loader's path), then
    /// `$ASCEND_TOOLKIT_HOME/lib64/`, then `/usr/local/Ascend/ascend-toolkit/latest/lib64/`.
    /// Errors: `FeatureNotEnabled` listing every path tried and why it failed.
    pub fn load(lib_dir: Option<&Path>) -> Result<AscendRuntime> {
        let (acl_handle, acl_path) = open_first(ACL_LIB, lib_dir)?;
        let (hccl_handle, hccl_path) = match open_first(HCCL_LIB, lib_dir) {
            Ok(v) => v,
            Err(e) => {
                // SAFETY: acl_handle came from dlopen and is not used afterwards.
                unsafe { libc::dlclose(acl_handle) };
                return Err(e);
            }
        };
        // SAFETY: both handles are live dlopen handles.
        let (acl, hccl) = unsafe { (AclFns::resolve(acl_handle), HcclFns::resolve(hccl_handle)) };
        Ok(AscendRuntime {
            acl_handle,
            hccl_handle,
            keep: std::sync::atomic::AtomicBool::new(false),
            acl_path,
            hccl_path,
            acl,
            hccl,
        })
    }

    /// Path `libascendcl.so` was loaded from.
    pub fn acl_path(&self) -> &Path {
        &self.acl_path
    }

    /// Path `libhccl.so` was loaded from.
    pub fn hccl_path(&self) -> &Path {
        &self.hccl_path
    }

    /// Keeps both libraries loaded for the rest of the process (called once ACL
    /// is initialised through them).
    pub fn keep_loaded(&self) {
        self.keep.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Opaque identity of the loaded ACL library (equal for two loads of one file).
    pub fn acl_identity(&self) -> usize {
        self.acl_handle as usize
    }

    /// Checks that every symbol named in `acl` / `hccl` was resolved. Errors:
    /// `FeatureNotEnabled` naming each missing symbol and the library file.
    pub fn require(&self, acl: &[&str], hccl: &[&str]) -> Result<()> {
        let mut missing = Vec::new();
        for (names, present, path) in [
            (acl, self.acl.presence(), &self.acl_path),
            (hccl, self.hccl.presence(), &self.hccl_path),
        ] {
            for name in names {
                if !present.iter().any(|(n, ok)| n == name && *ok) {
                    missing.push(format!("{name} (from {})", path.display()));
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
                 install a CANN release with the HCCL one-sided API (8.x)",
                missing.join(", ")
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
}

impl Drop for AscendRuntime {
    fn drop(&mut self) {
        if self.keep.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        // SAFETY: both handles came from dlopen and no table entry is used after drop
        // (every user holds an Arc<AscendRuntime>).
        unsafe {
            libc::dlclose(self.hccl_handle);
            libc::dlclose(self.acl_handle);
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
        // HCCL_E_NOT_SUPPORTED is spelled ((HcclResult)(-2)) in some releases.
        return if code == -2 {
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
    }

    #[test]
    fn runtime_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<AscendRuntime>();
    }
}
