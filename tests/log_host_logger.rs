//! A Rust program that links the rlib and installed its own `log` logger
//! before its first llmdd call keeps it: llmdd does not take the logger over,
//! llmdd's lines (targets: llmdd's module paths) go to the program's logger,
//! and the C ABI's log calls say why they cannot apply. (One test: the logger
//! is process-global, and this file is its own process.)

use std::ffi::c_char;
use std::sync::Mutex;

use llmdd::ffi::instance::{llmdd_create, llmdd_destroy, llmdd_init};
use llmdd::ffi::log::{llmdd_set_log_callback, llmdd_set_log_filter};
use llmdd::ffi::types::llmdd_option_t;
use llmdd::Status;
use log::{Level, LevelFilter, Log, Metadata, Record};

struct HostLogger(Mutex<Vec<(Level, String, String)>>);

impl Log for HostLogger {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, r: &Record<'_>) {
        let mut v = self.0.lock().unwrap();
        v.push((r.level(), r.target().to_string(), r.args().to_string()));
    }
    fn flush(&self) {}
}

static HOST: HostLogger = HostLogger(Mutex::new(Vec::new()));

unsafe extern "C" fn never(_: u32, _: *const c_char, _: *const c_char, _: *mut std::ffi::c_void) {
    panic!("llmdd called a log callback it should have refused");
}

#[test]
fn a_host_logger_installed_first_is_left_alone_and_receives_llmdd_lines() {
    log::set_logger(&HOST).unwrap();
    log::set_max_level(LevelFilter::Info);
    assert!(!llmdd::log::install());

    // SAFETY: valid arguments; the callback is never called.
    let s = unsafe { llmdd_set_log_callback(Some(never), std::ptr::null_mut()) };
    assert_eq!(s, Status::FeatureNotEnabled.code());
    // SAFETY: a NUL-terminated filter.
    let s = unsafe { llmdd_set_log_filter(c"trace".as_ptr()) };
    assert_eq!(s, Status::FeatureNotEnabled.code());

    // Init logs the backend choice at info level, through the host's logger.
    let mut inst = std::ptr::null_mut();
    let opts = [
        llmdd_option_t {
            key: c"llm.DeviceId".as_ptr(),
            value: c"0".as_ptr(),
        },
        llmdd_option_t {
            key: c"llm.EnableCacheManager".as_ptr(),
            value: c"1".as_ptr(),
        },
        llmdd_option_t {
            key: c"llmdd.Backend".as_ptr(),
            value: c"host".as_ptr(),
        },
    ];
    // SAFETY: valid pointers; the instance is destroyed below.
    unsafe {
        assert_eq!(llmdd_create(2, 7, &mut inst), 0);
        assert_eq!(llmdd_init(inst, opts.as_ptr(), opts.len()), 0);
        llmdd_destroy(inst);
    }
    let lines = HOST.0.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|(l, target, _)| *l == Level::Info && target.starts_with("llmdd::")),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .all(|(_, target, _)| target.starts_with("llmdd::")));
}
