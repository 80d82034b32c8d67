//! Minimal leveled logging to stderr, controlled by `LLMDD_LOG`
//! (`error`, `warn` (default), `info`, `debug`, `off`).

use std::sync::OnceLock;

/// Log levels, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Off = 0,
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

/// The level configured by `LLMDD_LOG`.
pub fn max_level() -> Level {
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| match std::env::var("LLMDD_LOG").as_deref() {
        Ok("off") => Level::Off,
        Ok("error") => Level::Error,
        Ok("info") => Level::Info,
        Ok("debug") => Level::Debug,
        _ => Level::Warn,
    })
}

/// Writes one line if `level` is enabled.
pub fn write(level: Level, args: std::fmt::Arguments<'_>) {
    if level <= max_level() && level != Level::Off {
        eprintln!("[llmdd {:?} pid {}] {}", level, std::process::id(), args);
    }
}

/// Logs at warn level.
#[macro_export]
macro_rules! log_warn { ($($t:tt)+) => { $crate::log::write($crate::log::Level::Warn, format_args!($($t)+)) }; }
/// Logs at info level.
#[macro_export]
macro_rules! log_info { ($($t:tt)+) => { $crate::log::write($crate::log::Level::Info, format_args!($($t)+)) }; }
/// Logs at debug level.
#[macro_export]
macro_rules! log_debug { ($($t:tt)+) => { $crate::log::write($crate::log::Level::Debug, format_args!($($t)+)) }; }
