//! Log routing through the C ABI: a callback that takes llmdd's lines into the
//! host's logger, and the filter (`LLMDD_LOG` syntax) set at run time.

use std::ffi::{c_char, c_void};

use crate::ffi::boundary::{cstr, run};
use crate::log::sink::Line;

/// Level of a line passed to the log callback: an error.
pub const LLMDD_LOG_LEVEL_ERROR: u32 = 1;
/// Level of a line passed to the log callback: a warning.
pub const LLMDD_LOG_LEVEL_WARN: u32 = 2;
/// Level of a line passed to the log callback: information.
pub const LLMDD_LOG_LEVEL_INFO: u32 = 3;
/// Level of a line passed to the log callback: debugging detail.
pub const LLMDD_LOG_LEVEL_DEBUG: u32 = 4;
/// Level of a line passed to the log callback: tracing detail.
pub const LLMDD_LOG_LEVEL_TRACE: u32 = 5;

/// Receives one log line: `level` is an `LLMDD_LOG_LEVEL_*`, `module` the
/// llmdd module that logged (`"llmdd::datadist::session"`), `message` the
/// text (one line, control characters escaped, no timestamp or thread: the
/// host's logger adds its own). Both strings are valid only during the call.
/// It runs synchronously on the thread that logged: the caller's thread or
/// any library thread, possibly on several threads at once.
pub type llmdd_log_callback_t = Option<
    unsafe extern "C" fn(
        level: u32,
        module: *const c_char,
        message: *const c_char,
        user_data: *mut c_void,
    ),
>;

/// The host's `user_data`, which the host declares usable from any thread.
struct UserData(*mut c_void);
// SAFETY: llmdd only passes the pointer back to the host's callback; the
// host's contract (llmdd_set_log_callback) is that it may do so from any thread.
unsafe impl Send for UserData {}
// SAFETY: as above; llmdd never dereferences it.
unsafe impl Sync for UserData {}

impl UserData {
    fn get(&self) -> *mut c_void {
        self.0
    }
}

/// Routes llmdd's log lines that pass the filter to `callback` (with
/// `user_data`) instead of stderr; NULL restores stderr. When this returns,
/// the previous callback is never called again and no call of it is still
/// running, so its `user_data` may be freed (it waits for those calls: do not
/// call it holding a lock the callback takes). Calling it from inside the
/// callback is refused with `LLMDD_PARAM_INVALID` (it would wait for that very
/// call). A line the callback itself causes (it calls an llmdd function that
/// logs) goes to stderr rather than back into the callback. `user_data` must
/// be usable from any thread. Returns `LLMDD_FEATURE_NOT_ENABLED` if the
/// process is a Rust program that installed its own `log` logger first.
#[no_mangle]
pub unsafe extern "C" fn llmdd_set_log_callback(
    callback: llmdd_log_callback_t,
    user_data: *mut c_void,
) -> u32 {
    run("llmdd_set_log_callback", || {
        let sink = callback.map(|f| {
            let data = UserData(user_data);
            Box::new(move |line: &Line<'_>| {
                // SAFETY: a C callback the host registered; the strings are
                // NUL-terminated and outlive the call.
                unsafe {
                    f(
                        line.level as u32,
                        line.module.as_ptr(),
                        line.message.as_ptr(),
                        data.get(),
                    )
                }
            }) as Box<crate::log::sink::Sink>
        });
        crate::log::set_sink(sink)
    })
}

/// Replaces the log filter (stderr and callback alike) with `filter`, in the
/// syntax of `LLMDD_LOG`: `LEVEL` and `llmdd::MODULE=LEVEL` directives, comma
/// separated, levels `off`, `error`, `warn`, `info`, `debug`, `trace` (e.g.
/// `"warn,llmdd::transport=debug"`; `""` is the default, `warn`). Takes effect
/// for the next line on every thread. A word it does not understand gives
/// `LLMDD_PARAM_INVALID`, naming it, and leaves the filter unchanged (where
/// `LLMDD_LOG` would ignore it with a warning).
#[no_mangle]
pub unsafe extern "C" fn llmdd_set_log_filter(filter: *const c_char) -> u32 {
    run("llmdd_set_log_filter", || {
        crate::log::set_filter(cstr(filter, "filter")?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_constants_are_the_log_crate_levels() {
        use ::log::Level;
        for (c, l) in [
            (LLMDD_LOG_LEVEL_ERROR, Level::Error),
            (LLMDD_LOG_LEVEL_WARN, Level::Warn),
            (LLMDD_LOG_LEVEL_INFO, Level::Info),
            (LLMDD_LOG_LEVEL_DEBUG, Level::Debug),
            (LLMDD_LOG_LEVEL_TRACE, Level::Trace),
        ] {
            assert_eq!(c, l as u32);
        }
    }
}
