//! What a log line costs, next to the floor it cannot beat, measured in the
//! same run: `cargo bench --bench log_cost` (stderr goes to /dev/null here,
//! so the terminal does not count).
//!
//! - a call below the filter (`log_debug!` with `warn`) vs a relaxed atomic
//!   load and compare;
//! - a call below a per-module filter (`warn,llmdd::transport=debug`);
//! - a passing line delivered to a callback that does nothing;
//! - a passing line written to stderr vs a bare write(2) of as many bytes.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

fn per_op(n: u32, f: impl Fn(u32)) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

fn main() {
    // Lines to /dev/null: measure llmdd, not the terminal.
    // SAFETY: plain open/dup2 of our own descriptors.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        assert!(null >= 0);
        libc::dup2(null, 2);
        libc::close(null);
    }
    assert!(llmdd::log::install(), "another logger is installed");
    let level = AtomicUsize::new(2);
    let atomic = per_op(20_000_000, |i| {
        if black_box(&level).load(Ordering::Relaxed) >= 4 {
            black_box(i);
        }
    });
    llmdd::log::set_filter("warn").unwrap();
    let disabled = per_op(20_000_000, |i| llmdd::log_debug!("x {}", black_box(i)));
    llmdd::log::set_filter("warn,llmdd::transport=debug").unwrap();
    let by_module = per_op(5_000_000, |i| llmdd::log_debug!("x {}", black_box(i)));

    let msg = |i: u32| format!("cluster {i} linked to cluster 7 at 127.0.0.1:26000");
    llmdd::log::set_filter("debug").unwrap();
    llmdd::log::set_sink(Some(Box::new(|l: &llmdd::log::sink::Line<'_>| {
        black_box(l.message);
    })))
    .unwrap();
    let callback = per_op(1_000_000, |i| {
        llmdd::log_debug!(
            "cluster {} linked to cluster 7 at 127.0.0.1:26000",
            black_box(i)
        )
    });
    llmdd::log::set_sink(None).unwrap();
    let stderr = per_op(300_000, |i| {
        llmdd::log_debug!(
            "cluster {} linked to cluster 7 at 127.0.0.1:26000",
            black_box(i)
        )
    });
    // The same length as a stderr line: prefix (timestamp, level, ids, thread, module) + text.
    let line = format!(
        "2025-06-01T08:15:42.123456Z DEBUG [4242:4250 log_cost] log_cost: {}\n",
        msg(123_456)
    );
    let write = per_op(300_000, |_| {
        // SAFETY: writing our own buffer to fd 2.
        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
    });
    println!(
        "log line costs (ns per call; release build, {} bytes a line)",
        line.len()
    );
    println!("  below the level filter      {disabled:8.2}   (relaxed atomic load + compare: {atomic:.2})");
    println!("  below a per-module filter   {by_module:8.2}");
    println!("  to a callback (empty)       {callback:8.2}");
    println!("  to stderr (/dev/null)       {stderr:8.2}   (bare write(2) of a line: {write:.2})");
}
