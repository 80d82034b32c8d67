//! The optional line sink (the C log callback) and the guarantees around
//! replacing it:
//!
//! - Lines are delivered synchronously on the thread that produced them; many
//!   threads may be inside the sink at once. Delivering never waits for another
//!   thread's delivery, nor for a thread replacing the sink (reader-preferring),
//!   so a sink that calls into llmdd cannot deadlock against llmdd's own threads.
//! - [`Registry::set`] returns only after every call of the previous sink has
//!   returned, and the previous sink is never called again (so its user data can
//!   be freed). Calls are counted per generation: replacing the sink waits only
//!   for calls of the generation it retired, never for the new sink's calls.
//! - A thread-local flag marks a thread that is inside the sink. A line that
//!   thread produces meanwhile (the sink called an llmdd function that logs) is
//!   not fed back to the sink: it goes to stderr, so there is no recursion. A
//!   `set` from inside the sink, which would wait for itself, is refused.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use std::ffi::CStr;

use log::Level;

/// One line as a sink receives it; the strings are valid only during the call.
pub struct Line<'a> {
    /// Severity.
    pub level: Level,
    /// Module path of the code that logged (`llmdd::datadist::session`).
    pub module: &'a CStr,
    /// The message, one line (control characters escaped).
    pub message: &'a CStr,
}

/// A sink: called from any thread, concurrently, so `Send + Sync`.
pub type Sink = dyn Fn(&Line<'_>) + Send + Sync;

thread_local! {
    /// This thread is inside a sink call.
    static IN_SINK: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is inside a sink call (also true while the thread's
/// locals are being destroyed, when nothing may be called).
pub fn in_sink() -> bool {
    IN_SINK.try_with(Cell::get).unwrap_or(true)
}

/// Why [`Registry::set`] refused.
#[derive(Debug, PartialEq, Eq)]
pub struct CalledFromSink;

/// The current sink and the bookkeeping that makes replacing it safe.
pub struct Registry {
    state: Mutex<State>,
    /// Signalled when the last call of a retired generation returns.
    drained: Condvar,
    /// Serializes `set`, so at most one retired generation is ever draining.
    setter: Mutex<()>,
}

struct State {
    sink: Option<Arc<Sink>>,
    generation: u64,
    /// Calls in progress, by generation parity (current and retired).
    active: [usize; 2],
}

impl Registry {
    /// A registry without a sink.
    pub const fn new() -> Registry {
        Registry {
            state: Mutex::new(State {
                sink: None,
                generation: 0,
                active: [0, 0],
            }),
            drained: Condvar::new(),
            setter: Mutex::new(()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a sink is set.
    pub fn is_set(&self) -> bool {
        self.state().sink.is_some()
    }

    /// Runs `deliver` with the current sink and returns true; returns false
    /// (without calling it) when no sink is set or this thread is already
    /// inside the sink: the caller then writes the line to stderr. A panic in
    /// the sink is contained here.
    pub fn with_sink(&self, deliver: impl FnOnce(&Sink)) -> bool {
        if in_sink() {
            return false;
        }
        let (sink, generation) = {
            let mut st = self.state();
            let Some(sink) = st.sink.clone() else {
                return false;
            };
            let g = st.generation;
            st.active[(g & 1) as usize] += 1;
            (sink, g)
        };
        IN_SINK.with(|f| f.set(true));
        let _ = catch_unwind(AssertUnwindSafe(|| deliver(&*sink)));
        IN_SINK.with(|f| f.set(false));
        drop(sink);
        let mut st = self.state();
        let slot = &mut st.active[(generation & 1) as usize];
        *slot -= 1;
        if *slot == 0 && st.generation != generation {
            self.drained.notify_all();
        }
        true
    }

    /// Replaces the sink (`None`: back to stderr). Returns once no call of the
    /// previous sink is running; it is never called again. Refused on a thread
    /// that is inside the sink, since it would wait for its own call.
    pub fn set(&self, sink: Option<Box<Sink>>) -> Result<(), CalledFromSink> {
        if in_sink() {
            return Err(CalledFromSink);
        }
        let _one_setter = self.setter.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.state();
        let retired = st.generation;
        st.generation += 1;
        let previous = std::mem::replace(&mut st.sink, sink.map(Arc::from));
        while st.active[(retired & 1) as usize] > 0 {
            st = self.drained.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        drop(st);
        drop(previous);
        Ok(())
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::time::{Duration, Instant};

    fn line_at(level: Level, f: impl FnOnce(&Line<'_>)) {
        f(&Line {
            level,
            module: c"llmdd::test",
            message: c"hello",
        })
    }

    fn counting(n: Arc<AtomicUsize>) -> Box<Sink> {
        Box::new(move |l: &Line<'_>| {
            assert_eq!(l.module, c"llmdd::test");
            n.fetch_add(1, SeqCst);
        })
    }

    #[test]
    fn without_a_sink_lines_fall_back() {
        let r = Registry::new();
        assert!(!r.is_set());
        assert!(!r.with_sink(|_| unreachable!()));
    }

    #[test]
    fn a_sink_receives_lines_until_removed() {
        let r = Registry::new();
        let n = Arc::new(AtomicUsize::new(0));
        r.set(Some(counting(n.clone()))).unwrap();
        assert!(r.is_set());
        for _ in 0..3 {
            assert!(r.with_sink(|s| line_at(Level::Info, s)));
        }
        assert_eq!(n.load(SeqCst), 3);
        r.set(None).unwrap();
        assert!(!r.with_sink(|s| line_at(Level::Info, s)));
        assert_eq!(n.load(SeqCst), 3);
    }

    #[test]
    fn lines_logged_from_inside_the_sink_fall_back_and_set_is_refused() {
        let r = Arc::new(Registry::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let nested_fell_back = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicBool::new(false));
        let (r2, c2, f2, s2) = (
            r.clone(),
            calls.clone(),
            nested_fell_back.clone(),
            refused.clone(),
        );
        r.set(Some(Box::new(move |_: &Line<'_>| {
            c2.fetch_add(1, SeqCst);
            // Another line from inside the sink: not delivered to it again.
            f2.store(!r2.with_sink(|s| line_at(Level::Warn, s)), SeqCst);
            s2.store(r2.set(None) == Err(CalledFromSink), SeqCst);
        })))
        .unwrap();
        assert!(r.with_sink(|s| line_at(Level::Info, s)));
        assert_eq!(calls.load(SeqCst), 1);
        assert!(nested_fell_back.load(SeqCst));
        assert!(refused.load(SeqCst));
        assert!(r.is_set(), "the refused set changed nothing");
        // The flag is cleared after the call: this thread may set again.
        assert!(!in_sink());
        r.set(None).unwrap();
    }

    #[test]
    fn a_panicking_sink_is_contained() {
        let r = Registry::new();
        r.set(Some(Box::new(|_: &Line<'_>| panic!("sink bug"))))
            .unwrap();
        assert!(r.with_sink(|s| line_at(Level::Error, s)));
        assert!(!in_sink());
        r.set(None).unwrap();
    }

    /// Producers deliver lines continuously to a slow sink while the main
    /// thread swaps sinks: after each `set` returns, the previous sink has no
    /// call running and is never entered again.
    #[test]
    fn replacing_the_sink_under_load_waits_for_its_calls_and_only_those() {
        struct Probe {
            inflight: AtomicUsize,
            calls: AtomicUsize,
            retired: AtomicBool,
            late: AtomicUsize,
        }
        fn probe_sink(p: Arc<Probe>) -> Box<Sink> {
            Box::new(move |_: &Line<'_>| {
                p.inflight.fetch_add(1, SeqCst);
                if p.retired.load(SeqCst) {
                    p.late.fetch_add(1, SeqCst);
                }
                std::thread::sleep(Duration::from_micros(200));
                p.calls.fetch_add(1, SeqCst);
                p.inflight.fetch_sub(1, SeqCst);
            })
        }
        let r = Arc::new(Registry::new());
        let stop = Arc::new(AtomicBool::new(false));
        let producers: Vec<_> = (0..4)
            .map(|_| {
                let (r, stop) = (r.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(SeqCst) {
                        r.with_sink(|s| line_at(Level::Debug, s));
                    }
                })
            })
            .collect();
        let mut probes = Vec::new();
        for round in 0..20 {
            let p = Arc::new(Probe {
                inflight: AtomicUsize::new(0),
                calls: AtomicUsize::new(0),
                retired: AtomicBool::new(false),
                late: AtomicUsize::new(0),
            });
            let next = if round % 5 == 4 {
                None
            } else {
                Some(probe_sink(p.clone()))
            };
            r.set(next).unwrap();
            if let Some(prev) = probes.last() {
                let prev: &Arc<Probe> = prev;
                assert_eq!(prev.inflight.load(SeqCst), 0, "round {round}");
                prev.retired.store(true, SeqCst);
            }
            probes.push(p);
            let t = Instant::now();
            while probes.last().unwrap().calls.load(SeqCst) < 3
                && round % 5 != 4
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::yield_now();
            }
        }
        r.set(None).unwrap();
        probes.last().unwrap().retired.store(true, SeqCst);
        std::thread::sleep(Duration::from_millis(20));
        stop.store(true, SeqCst);
        for t in producers {
            t.join().unwrap();
        }
        for (i, p) in probes.iter().enumerate() {
            assert_eq!(p.late.load(SeqCst), 0, "sink {i} was called after removal");
            if i % 5 != 4 {
                assert!(p.calls.load(SeqCst) >= 3, "sink {i} never ran");
            }
        }
    }
}
