//! Logging: llmdd's code logs through the [`log`] facade (`log_error!` ..
//! `log_trace!`, target = the module path), and llmdd's own logger filters the
//! lines ([`filter`], `LLMDD_LOG` syntax) and writes them to stderr
//! ([`line`]) or hands them to the host's callback ([`sink`]).
//!
//! Who installs the logger: `log::set_logger` is process-global, so a library
//! must not take it from a Rust program that owns it. llmdd installs its logger
//! from the C boundary ([`install`], on every `llmdd_*` call, a single atomic
//! load after the first). In `libllmdd.so` that is always safe: the `log` crate
//! is linked into the shared object and its symbols are not exported (only
//! `llmdd_*` are), so the "global" logger is llmdd's private one, whatever
//! other Rust code the process has. A Rust program that links the rlib and
//! never calls the C ABI keeps its own logger, which then receives llmdd's
//! lines as from any library; if it calls the C ABI after installing its own
//! logger, llmdd leaves it alone ([`install`] returns false and the log
//! calls of the C ABI report it).
//!
//! Cost: a line below the filter's most verbose level costs the `log` macro's
//! relaxed atomic load and compare; with per-module directives, a line under
//! that level also costs a read lock and a prefix match, without allocating.

pub mod filter;
pub mod line;
pub mod rate;
pub mod sink;

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};

#[doc(hidden)]
pub use ::log as facade;
use ::log::{Level, Log, Metadata, Record};

use crate::status::Result;
use crate::{bail, err};
use filter::Filter;
use sink::{Line, Registry, Sink};

/// The environment variable read when the logger is installed.
const ENV: &str = "LLMDD_LOG";

static LOGGER: Logger = Logger;
static FILTER: RwLock<Option<Filter>> = RwLock::new(None);
/// The filter has per-module directives (then `enabled` reads `FILTER`).
static MODULES: AtomicBool = AtomicBool::new(false);
static SINK: Registry = Registry::new();

/// llmdd's `log::Log` implementation (see the module docs).
struct Logger;

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        if m.level() > ::log::max_level() {
            return false;
        }
        // Without per-module directives the max level is the whole filter.
        if !MODULES.load(Ordering::Relaxed) {
            return true;
        }
        let f = FILTER.read().unwrap_or_else(PoisonError::into_inner);
        f.as_ref()
            .map_or(true, |f| f.enabled(m.level(), m.target()))
    }

    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) {
            emit(r.level(), r.target(), *r.args());
        }
    }

    fn flush(&self) {}
}

thread_local! {
    /// Reused formatting buffer, so passing lines do not allocate each time.
    static BUF: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f` on this thread's cleared formatting buffer, or on a fresh one
/// when that one is in use (a line logged while formatting one) or gone
/// (thread exit).
fn with_buf(f: impl FnOnce(&mut String)) {
    let mut f = Some(f);
    let reused = BUF.try_with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else {
            return false;
        };
        b.clear();
        if let Some(f) = f.take() {
            f(&mut b);
        }
        if b.capacity() > 64 * 1024 {
            *b = String::new();
        }
        true
    });
    if let (Ok(false) | Err(_), Some(f)) = (reused, f) {
        f(&mut String::new());
    }
}

/// Delivers a line that passed the filter: to the sink, else to stderr.
fn emit(level: Level, target: &str, args: std::fmt::Arguments<'_>) {
    let delivered = SINK.with_sink(|sink: &Sink| {
        with_buf(|buf| {
            let (module, message) = line::callback_strings(buf, target, args);
            sink(&Line {
                level,
                module,
                message,
            });
        })
    });
    if !delivered {
        write_stderr(level, target, args);
    }
}

/// Writes one stderr line with a single `write(2)`, so lines of concurrent
/// threads never interleave.
fn write_stderr(level: Level, target: &str, args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut name = [0u8; 16];
    let origin = line::Origin::here(&mut name);
    with_buf(|buf| {
        line::stderr_line(buf, &origin, level, target, args);
        let _ = std::io::stderr().lock().write_all(buf.as_bytes());
    });
}

/// Installs llmdd's logger as the `log` logger unless one is already set,
/// reading `LLMDD_LOG` (one warning lists words it ignored). Returns whether
/// llmdd's logger is the installed one. Cheap after the first call.
pub fn install() -> bool {
    static INSTALLED: OnceLock<bool> = OnceLock::new();
    *INSTALLED.get_or_init(|| {
        if ::log::set_logger(&LOGGER).is_err() {
            return false;
        }
        let spec = std::env::var(ENV).unwrap_or_else(|e| match e {
            std::env::VarError::NotPresent => String::new(),
            std::env::VarError::NotUnicode(_) => "(not UTF-8)".into(),
        });
        let (f, unknown) = Filter::parse(&spec);
        apply(f);
        if !unknown.is_empty() {
            // About the filter itself, so not subject to it.
            emit(
                Level::Warn,
                module_path!(),
                format_args!("{ENV}: ignoring {}; {SYNTAX}", quoted(&unknown)),
            );
        }
        true
    })
}

/// The filter syntax, for messages.
const SYNTAX: &str = "the syntax is LEVEL or llmdd::MODULE=LEVEL, comma separated, \
                      with levels off, error, warn, info, debug, trace";

fn quoted(words: &[String]) -> String {
    let q: Vec<String> = words.iter().map(|w| format!("{w:?}")).collect();
    format!(
        "unknown word{} {}",
        if q.len() == 1 { "" } else { "s" },
        q.join(", ")
    )
}

fn apply(f: Filter) {
    let mut cur = FILTER.write().unwrap_or_else(PoisonError::into_inner);
    // Under the lock, so concurrent setters cannot leave a stale max level.
    ::log::set_max_level(f.max_level());
    MODULES.store(f.has_modules(), Ordering::Relaxed);
    *cur = Some(f);
}

fn owned() -> Result<()> {
    if !install() {
        bail!(
            FeatureNotEnabled,
            "the process already has a Rust `log` logger that is not llmdd's; \
             llmdd's lines go to it"
        );
    }
    Ok(())
}

/// Replaces the filter with `spec` (`LLMDD_LOG` syntax). Unlike `LLMDD_LOG`,
/// unknown words are refused (`LLM_PARAM_INVALID`) and nothing changes.
pub fn set_filter(spec: &str) -> Result<()> {
    owned()?;
    let (f, unknown) = Filter::parse(spec);
    if !unknown.is_empty() {
        bail!(ParamInvalid, "{}; {SYNTAX}", quoted(&unknown));
    }
    apply(f);
    Ok(())
}

/// Sends lines that pass the filter to `sink` instead of stderr (`None`:
/// back to stderr). Returns once no call of the previous sink is running;
/// refused from inside a sink call (it would wait for itself).
pub fn set_sink(sink: Option<Box<Sink>>) -> Result<()> {
    owned()?;
    SINK.set(sink).map_err(|_| {
        err!(
            ParamInvalid,
            "called from inside the log callback, where it would wait for its own \
             call to return; change the callback from outside it"
        )
    })
}

/// Logs at error level (target: the calling module).
#[macro_export]
macro_rules! log_error { ($($t:tt)+) => { $crate::log::facade::error!($($t)+) }; }
/// Logs at warn level (target: the calling module).
#[macro_export]
macro_rules! log_warn { ($($t:tt)+) => { $crate::log::facade::warn!($($t)+) }; }
/// Logs at info level (target: the calling module).
#[macro_export]
macro_rules! log_info { ($($t:tt)+) => { $crate::log::facade::info!($($t)+) }; }
/// Logs at debug level (target: the calling module).
#[macro_export]
macro_rules! log_debug { ($($t:tt)+) => { $crate::log::facade::debug!($($t)+) }; }
/// Logs at trace level (target: the calling module).
#[macro_export]
macro_rules! log_trace { ($($t:tt)+) => { $crate::log::facade::trace!($($t)+) }; }
