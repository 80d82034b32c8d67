//! Shared plumbing of the C boundary: the panic boundary, the thread-local
//! last-error message, and checked conversions of C pointers.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::status::{Result, Status};
use crate::{bail, err};

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Records the message returned by `llmdd_last_error_message` on this thread.
pub fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Clears this thread's last error message (no allocation when it is clear
/// already: every exported call starts with this).
fn clear_last_error() {
    LAST_ERROR.with(|e| {
        if !e.borrow().as_bytes().is_empty() {
            *e.borrow_mut() = CString::default();
        }
    });
}

/// Pointer to this thread's last error message (valid until the next llmdd
/// call on this thread).
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

/// Runs an exported function body: installs llmdd's logger (once; see
/// `crate::log`), clears the last error, catches panics, turns errors into
/// their status code and records the message.
pub fn run(func: &str, f: impl FnOnce() -> Result<()>) -> u32 {
    crate::log::install();
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => Status::Success.code(),
        Ok(Err(e)) => {
            set_last_error(&format!("{func}: {}", e.message));
            e.status.code()
        }
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            set_last_error(&format!("{func}: internal error (panic: {what})"));
            Status::Failed.code()
        }
    }
}

/// Runs an infallible body, returning `default` if it panics.
pub fn run_or<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

/// A required, NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string.
pub unsafe fn cstr<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        bail!(ParamInvalid, "{what} is NULL");
    }
    CStr::from_ptr(p)
        .to_str()
        .map_err(|_| err!(ParamInvalid, "{what} is not valid UTF-8"))
}

/// A slice of `n` elements; (NULL, 0) is an empty slice, (NULL, n>0) an error.
///
/// # Safety
/// When non-NULL, `p` must point to `n` valid elements.
pub unsafe fn slice<'a, T>(p: *const T, n: usize, what: &str) -> Result<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        bail!(ParamInvalid, "{what} is NULL but its length is {n}");
    }
    if n > (isize::MAX as usize) / std::mem::size_of::<T>().max(1) {
        bail!(ParamInvalid, "{what} length {n} is too large");
    }
    Ok(std::slice::from_raw_parts(p, n))
}

/// A writable buffer of `n` elements; (NULL, 0) is an empty one, (NULL, n>0)
/// an error.
///
/// # Safety
/// When non-NULL, `p` must point to `n` writable elements.
pub unsafe fn slice_mut<'a, T>(p: *mut T, n: usize, what: &str) -> Result<&'a mut [T]> {
    if n == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        bail!(ParamInvalid, "{what} is NULL but its length is {n}");
    }
    if n > (isize::MAX as usize) / std::mem::size_of::<T>().max(1) {
        bail!(ParamInvalid, "{what} length {n} is too large");
    }
    Ok(std::slice::from_raw_parts_mut(p, n))
}

/// A required input struct.
///
/// # Safety
/// When non-NULL, `p` must point to a valid `T`.
pub unsafe fn input<'a, T>(p: *const T, what: &str) -> Result<&'a T> {
    p.as_ref()
        .ok_or_else(|| err!(ParamInvalid, "{what} is NULL"))
}

/// A required output location.
///
/// # Safety
/// When non-NULL, `p` must point to writable memory for a `T`.
pub unsafe fn output<'a, T>(p: *mut T, what: &str) -> Result<&'a mut T> {
    p.as_mut()
        .ok_or_else(|| err!(ParamInvalid, "{what} (output) is NULL"))
}
