//! The rate limit of log lines a peer can trigger at will: refused
//! connections and handshakes, dropped connections, refused requests. One
//! budget for the whole process ([`warn_refusal`]), so no mix of refusals, from
//! any number of peers and instances, can flood the log.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusal lines logged per window at most (see [`REFUSAL_WINDOW`]).
const REFUSAL_LINES: u32 = 10;
/// Length of a refusal-log window; a window starts with its first line.
const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// The process-wide budget of [`warn_refusal`].
static REFUSALS: RateLimit = RateLimit::new(REFUSAL_LINES, REFUSAL_WINDOW);

/// Lets at most `lines` log lines through per window and counts the ones it
/// holds back.
pub struct RateLimit {
    lines: u32,
    window: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the current window began (its first line), if one did.
    start: Option<Instant>,
    /// Lines let through in the current window.
    used: u32,
    /// Lines held back since the last one let through.
    held: u64,
}

impl RateLimit {
    /// At most `lines` lines per `window`.
    pub const fn new(lines: u32, window: Duration) -> RateLimit {
        RateLimit {
            lines,
            window,
            state: Mutex::new(State {
                start: None,
                used: 0,
                held: 0,
            }),
        }
    }

    /// `Some(n)` when a line may go out now (`n` were held back since the
    /// last one that went out), else `None` (counted).
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if !matches!(s.start, Some(t) if now.duration_since(t) < self.window) {
            s.start = Some(now);
            s.used = 0;
        }
        if s.used >= self.lines {
            s.held += 1;
            return None;
        }
        s.used += 1;
        Some(std::mem::take(&mut s.held))
    }
}

/// Logs a line a peer can cause at will (a refusal) at warn level, within the
/// process-wide budget of 10 lines per 10 s; the first line after some were
/// held back says how many.
pub fn warn_refusal(args: fmt::Arguments<'_>) {
    if let Some(held) = REFUSALS.allow() {
        if held > 0 {
            crate::log_warn!("{args} ({held} similar lines held back)");
        } else {
            crate::log_warn!("{args}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_lets_a_burst_per_window_and_counts_the_rest() {
        let r = RateLimit::new(3, Duration::from_millis(300));
        for _ in 0..3 {
            assert_eq!(r.allow(), Some(0));
        }
        for _ in 0..100 {
            assert_eq!(r.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(
            r.allow(),
            Some(100),
            "the next window reports what was held"
        );
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
    }
}
