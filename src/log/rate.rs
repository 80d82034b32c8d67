//! A rate limit for log lines a peer can trigger at will (refused
//! connections): one line per period, with a count of the ones held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

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
