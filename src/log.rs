//! Minimal leveled logging to stderr, controlled by `LLMDD_LOG`
//! (`error`, `warn` (default), `info`, `debug`, `off`).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// Lets one log line through per period and counts the ones it holds back,
/// for events a peer can trigger at will (refused connections).
pub struct RateLimit {
    every: Duration,
    /// When the last line went out, and how many were held back since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may go out now (`n` were held back since the
    /// last one), else `None` (counted).
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match s.0 {
            Some(t) if now.duration_since(t) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let held = s.1;
                *s = (Some(now), 0);
                Some(held)
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_one_line_per_period_and_counts_the_rest() {
        let r = RateLimit::new(Duration::from_millis(200));
        assert_eq!(r.allow(), Some(0));
        for _ in 0..100 {
            assert_eq!(r.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(r.allow(), Some(100));
        assert_eq!(r.allow(), None);
    }
}
