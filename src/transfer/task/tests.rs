//! Tests of the task engine: results per config, refusal, failures, timeouts,
//! cancellation, panics, and the pool properties (many tasks, blocked
//! callbacks, no thread growth).

use super::*;
use std::sync::atomic::AtomicU32;
use std::sync::mpsc;

type Log = Arc<Mutex<Vec<String>>>;

/// A spec over `layers` source layers where config c covers `ranges[c]`;
/// the work item is (config, layer).
fn spec(ranges: &[(u32, u32)], layers: u32) -> TaskSpec<(usize, u32)> {
    TaskSpec {
        num_configs: ranges.len(),
        layers: (0..layers)
            .filter_map(|l| {
                let parts: Vec<_> = ranges
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.0 <= l && l < r.1)
                    .map(|(c, _)| (c, (c, l)))
                    .collect();
                (!parts.is_empty()).then_some(Layer { index: l, parts })
            })
            .collect(),
    }
}

fn logging_exec(
    log: &Log,
    fail_at: Option<(usize, u32)>,
) -> impl Fn(&(usize, u32)) -> Result<()> + Send + 'static {
    let log = log.clone();
    move |&(c, l)| {
        log.lock().unwrap().push(format!("x{c}.{l}"));
        if fail_at == Some((c, l)) {
            bail!(Timeout, "injected");
        }
        Ok(())
    }
}

fn logging_sync(log: &Log, refuse: Option<u32>) -> SyncFn {
    let log = log.clone();
    Box::new(move |l| {
        log.lock().unwrap().push(format!("s{l}"));
        refuse != Some(l)
    })
}

const FOREVER: Option<Duration> = None;
use ConfigResult::*;

#[test]
fn async_task_all_succeed_in_layer_order() {
    let set = TaskSet::default();
    let log = Log::default();
    let t = Task::start(
        &set,
        spec(&[(0, 3), (2, 5)], 6),
        logging_sync(&log, None),
        logging_exec(&log, None),
    )
    .unwrap();
    t.synchronize(FOREVER).unwrap();
    assert_eq!(
        t.results(FOREVER).unwrap(),
        vec![Done(Status::Success), Done(Status::Success)]
    );
    let log = log.lock().unwrap().clone();
    // Layer 5 is in no config: never synchronized.
    let syncs: Vec<_> = log.iter().filter(|e| e.starts_with('s')).collect();
    assert_eq!(syncs, ["s0", "s1", "s2", "s3", "s4"]);
    let xfers: Vec<_> = log.iter().filter(|e| e.starts_with('x')).collect();
    assert_eq!(xfers, ["x0.0", "x0.1", "x0.2", "x1.2", "x1.3", "x1.4"]);
    // Every layer is transferred only after its synchronizer returned.
    for l in 0..5 {
        let s = log.iter().position(|e| *e == format!("s{l}")).unwrap();
        let x = log
            .iter()
            .position(|e| e.starts_with('x') && e.ends_with(&format!(".{l}")))
            .unwrap();
        assert!(s < x, "{log:?}");
    }
    set.cancel_all();
    set.join_all();
}

#[test]
fn async_task_sync_refusal_fails_configs_containing_the_layer() {
    let set = TaskSet::default();
    let log = Log::default();
    // c0: [0,2) done before layer 3; c1: [1,5) contains 3; c2: [4,6) never starts.
    let t = Task::start(
        &set,
        spec(&[(0, 2), (1, 5), (4, 6)], 6),
        logging_sync(&log, Some(3)),
        logging_exec(&log, None),
    )
    .unwrap();
    let e = t.synchronize(FOREVER).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    assert!(e.message.contains("layer 3"), "{}", e.message);
    assert_eq!(
        t.results(FOREVER).unwrap(),
        vec![
            Done(Status::Success),
            Done(Status::ParamInvalid),
            NotStarted
        ]
    );
    t.cancel_and_wait();
    let log = log.lock().unwrap().clone();
    assert_eq!(log.iter().rfind(|e| e.starts_with('s')).unwrap(), "s3");
    // Layers approved before the refusal still moved; nothing after.
    assert!(log.contains(&"x1.2".to_string()));
    assert!(!log.iter().any(|e| e.ends_with(".3") || e.ends_with(".4")));
}

#[test]
fn async_task_transfer_failure_stops_everything() {
    let set = TaskSet::default();
    let log = Log::default();
    // c0: [0,4), c1: [1,3) fails at layer 2, c2: [5,6).
    let t = Task::start(
        &set,
        spec(&[(0, 4), (1, 3), (5, 6)], 6),
        logging_sync(&log, None),
        logging_exec(&log, Some((1, 2))),
    )
    .unwrap();
    let e = t.synchronize(FOREVER).unwrap_err();
    assert_eq!(e.status, Status::Timeout);
    assert!(e.message.contains("config 1, layer 2"), "{}", e.message);
    assert_eq!(
        t.results(FOREVER).unwrap(),
        vec![Done(Status::Failed), Done(Status::Timeout), NotStarted]
    );
    t.cancel_and_wait();
    let log = log.lock().unwrap().clone();
    assert!(!log.iter().any(|e| e == "x0.3" || e == "x2.5"), "{log:?}");
}

/// A synchronizer that blocks until the test releases each layer.
fn gated_sync(calls: &Arc<AtomicU32>) -> (SyncFn, mpsc::Sender<bool>) {
    let (tx, rx) = mpsc::channel::<bool>();
    let calls = calls.clone();
    let f: SyncFn = Box::new(move |_| {
        calls.fetch_add(1, Ordering::SeqCst);
        rx.recv().unwrap_or(false)
    });
    (f, tx)
}

#[test]
fn async_task_timeout_then_success() {
    let set = TaskSet::default();
    let calls = Arc::new(AtomicU32::new(0));
    let (sync, release) = gated_sync(&calls);
    let log = Log::default();
    let t = Task::start(&set, spec(&[(0, 2)], 2), sync, logging_exec(&log, None)).unwrap();
    let e = t.synchronize(Some(Duration::from_millis(30))).unwrap_err();
    assert_eq!(e.status, Status::Timeout);
    assert!(t.results(Some(Duration::ZERO)).is_none());
    release.send(true).unwrap();
    release.send(true).unwrap();
    t.synchronize(FOREVER).unwrap();
    assert_eq!(
        t.results(Some(Duration::ZERO)).unwrap(),
        vec![Done(Status::Success)]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    t.cancel_and_wait();
}

#[test]
fn async_task_cancel_waits_for_callback_and_stops() {
    let set = TaskSet::default();
    let calls = Arc::new(AtomicU32::new(0));
    let (sync, release) = gated_sync(&calls);
    let log = Log::default();
    let t = Task::start(
        &set,
        spec(&[(0, 4), (2, 4)], 4),
        sync,
        logging_exec(&log, None),
    )
    .unwrap();
    release.send(true).unwrap(); // layer 0
                                 // Layer 0's transfer runs on another worker: on a busy machine it may
                                 // not have started when layer 1's callback is entered, and a cancel
                                 // before it would leave config 0 not started (observed, not assumed).
    while calls.load(Ordering::SeqCst) < 2 || !log.lock().unwrap().iter().any(|e| e == "x0.0") {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The callback for layer 1 is running; release it once cancel has been
    // requested (observed, not assumed after a sleep), a little later so a
    // cancel_and_wait that does not wait returns first. cancel_and_wait must
    // return after the release, however the threads are scheduled.
    let task = &t;
    std::thread::scope(|s| {
        let rel = s.spawn(move || {
            while !task.core.shared().lock().cancelled {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            let released = Instant::now();
            let _ = release.send(true);
            (released, release)
        });
        task.cancel_and_wait();
        let returned = Instant::now();
        let (released, release) = rel.join().unwrap();
        drop(release);
        assert!(returned >= released, "did not wait for the callback");
    });
    assert_eq!(calls.load(Ordering::SeqCst), 2, "no callback after cancel");
    let e = t.synchronize(FOREVER).unwrap_err();
    assert_eq!(e.status, Status::Failed);
    assert_eq!(
        t.results(FOREVER).unwrap(),
        vec![Done(Status::Failed), NotStarted]
    );
    assert!(!log.lock().unwrap().iter().any(|e| e.ends_with(".1")));
    set.join_all();
    assert_eq!(set.running(), 0);
}

#[test]
fn async_task_set_cancels_on_finalize_and_refuses_new_tasks() {
    let set = TaskSet::default();
    let calls = Arc::new(AtomicU32::new(0));
    let (sync, release) = gated_sync(&calls);
    let log = Log::default();
    let t = Task::start(&set, spec(&[(0, 3)], 3), sync, logging_exec(&log, None)).unwrap();
    while calls.load(Ordering::SeqCst) < 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    set.cancel_all();
    release.send(true).unwrap();
    set.join_all();
    assert_eq!(set.running(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        t.synchronize(Some(Duration::ZERO)).unwrap_err().status,
        Status::Failed
    );
    let e = Task::start(
        &set,
        spec(&[(0, 1)], 1),
        logging_sync(&log, None),
        logging_exec(&log, None),
    )
    .err()
    .unwrap();
    assert_eq!(e.status, Status::Failed);
    drop(release);
}

#[test]
fn async_task_panics_end_the_task_instead_of_hanging_it() {
    let set = TaskSet::default();
    let exec = |&(_, l): &(usize, u32)| -> Result<()> {
        if l == 1 {
            panic!("executor bug");
        }
        Ok(())
    };
    let t = Task::start(&set, spec(&[(0, 3)], 3), Box::new(|_| true), exec).unwrap();
    let e = t.synchronize(Some(Duration::from_secs(10))).unwrap_err();
    assert_eq!(e.status, Status::Failed);
    assert!(e.message.contains("panicked"), "{}", e.message);
    t.cancel_and_wait();
    let sync: SyncFn = Box::new(|l| if l == 1 { panic!("callback bug") } else { true });
    let log = Log::default();
    let t = Task::start(&set, spec(&[(0, 3)], 3), sync, logging_exec(&log, None)).unwrap();
    let e = t.synchronize(Some(Duration::from_secs(10))).unwrap_err();
    assert!(e.message.contains("synchronizer panicked"), "{}", e.message);
    assert_eq!(t.results(None).unwrap(), vec![Done(Status::Failed)]);
    t.cancel_and_wait();
    set.join_all();
}

#[test]
fn async_task_cancel_from_inside_the_callback_does_not_deadlock() {
    let set = TaskSet::default();
    let slot: Arc<Mutex<Option<Arc<Task>>>> = Arc::default();
    let calls = Arc::new(AtomicU32::new(0));
    let (s2, c2) = (slot.clone(), calls.clone());
    let sync: SyncFn = Box::new(move |_| {
        c2.fetch_add(1, Ordering::SeqCst);
        let t = loop {
            if let Some(t) = s2.lock().unwrap().clone() {
                break t;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        t.cancel_and_wait(); // must return at once: we are the task's own thread
        true
    });
    let log = Log::default();
    let t =
        Arc::new(Task::start(&set, spec(&[(0, 3)], 3), sync, logging_exec(&log, None)).unwrap());
    *slot.lock().unwrap() = Some(t.clone());
    assert_eq!(t.synchronize(FOREVER).unwrap_err().status, Status::Failed);
    slot.lock().unwrap().take();
    t.cancel_and_wait();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(log.lock().unwrap().is_empty(), "a cancelled layer moved");
    set.join_all();
}

// ---------------------------------------------------------------- the pool

const LONG: Option<Duration> = Some(Duration::from_secs(20));

/// A synchronizer that checks it is never re-entered for its task and sees
/// layers in ascending order.
fn checked_sync(busy: Arc<AtomicU32>, bad: Arc<AtomicU32>) -> SyncFn {
    let mut last: Option<u32> = None;
    Box::new(move |l| {
        if busy.swap(1, Ordering::SeqCst) != 0 || last.is_some_and(|p| p >= l) {
            bad.fetch_add(1, Ordering::SeqCst);
        }
        last = Some(l);
        std::thread::yield_now();
        busy.store(0, Ordering::SeqCst);
        true
    })
}

#[test]
fn async_task_many_more_tasks_than_workers_all_finish_in_order() {
    let set = TaskSet::new(2);
    let bad = Arc::new(AtomicU32::new(0));
    let logs: Vec<Log> = (0..64).map(|_| Log::default()).collect();
    let tasks: Vec<Task> = logs
        .iter()
        .map(|log| {
            let sync = checked_sync(Arc::new(AtomicU32::new(0)), bad.clone());
            Task::start(
                &set,
                spec(&[(0, 4), (2, 6)], 6),
                sync,
                logging_exec(log, None),
            )
            .unwrap()
        })
        .collect();
    for t in &tasks {
        t.synchronize(LONG).unwrap();
        assert_eq!(
            t.results(FOREVER).unwrap(),
            vec![Done(Status::Success), Done(Status::Success)]
        );
    }
    assert_eq!(
        bad.load(Ordering::SeqCst),
        0,
        "a callback overlapped or went back"
    );
    for log in &logs {
        let log = log.lock().unwrap();
        let want = [
            "x0.0", "x0.1", "x0.2", "x1.2", "x0.3", "x1.3", "x1.4", "x1.5",
        ];
        assert_eq!(*log, want, "layers moved out of order");
    }
    // Short tasks are served by the workers there are, not a thread each.
    assert!(set.threads() < 64, "{} workers for 64 tasks", set.threads());
    set.join_all();
    assert_eq!(set.running(), 0);
}

#[test]
fn async_task_blocked_callbacks_do_not_starve_other_tasks() {
    let set = TaskSet::new(2);
    // More blocked callbacks than transfer slots and initial workers.
    let mut blocked = Vec::new();
    for _ in 0..6 {
        let calls = Arc::new(AtomicU32::new(0));
        let (sync, release) = gated_sync(&calls);
        let log = Log::default();
        let t = Task::start(&set, spec(&[(0, 2)], 2), sync, logging_exec(&log, None)).unwrap();
        blocked.push((t, release, calls, log));
    }
    for (_, _, calls, _) in &blocked {
        let end = Instant::now() + Duration::from_secs(20);
        while calls.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < end, "a callback never started");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Other tasks' callbacks and transfers still run.
    for _ in 0..20 {
        let log = Log::default();
        let t = Task::start(
            &set,
            spec(&[(0, 3)], 3),
            logging_sync(&log, None),
            logging_exec(&log, None),
        )
        .unwrap();
        t.synchronize(LONG).unwrap();
    }
    // A blocked task still times out on time, and then finishes.
    let (t, release, calls, log) = blocked.pop().unwrap();
    let t0 = Instant::now();
    let e = t.synchronize(Some(Duration::from_millis(30))).unwrap_err();
    assert_eq!(e.status, Status::Timeout);
    assert!(t0.elapsed() >= Duration::from_millis(30));
    release.send(true).unwrap();
    release.send(true).unwrap();
    t.synchronize(LONG).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(*log.lock().unwrap(), ["x0.0", "x0.1"]);
    // Finalize cancels the rest and waits for their running callbacks only.
    set.cancel_all();
    let rel = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        for (_, release, _, _) in &blocked {
            let _ = release.send(true);
        }
        blocked
    });
    let t0 = Instant::now();
    set.join_all();
    let waited = t0.elapsed();
    let blocked = rel.join().unwrap();
    assert!(
        waited >= Duration::from_millis(80),
        "finalize did not wait: {waited:?}"
    );
    for (t, _, calls, log) in &blocked {
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a callback ran after cancel"
        );
        assert!(log.lock().unwrap().is_empty(), "a cancelled layer moved");
        assert_eq!(
            t.synchronize(Some(Duration::ZERO)).unwrap_err().status,
            Status::Failed
        );
        assert_eq!(t.results(Some(Duration::ZERO)).unwrap(), vec![NotStarted]);
    }
    assert_eq!(set.running(), 0);
    assert_eq!(set.threads(), 0);
}

#[test]
fn async_task_cancel_of_a_queued_task_waits_for_no_worker() {
    // One transfer slot, held by a transfer that blocks.
    let set = TaskSet::new(1);
    let (enter_tx, entered) = mpsc::channel::<()>();
    let (hold, held) = mpsc::channel::<()>();
    let held = Mutex::new(held);
    let exec = move |_: &(usize, u32)| -> Result<()> {
        let _ = enter_tx.send(());
        let _ = held.lock().unwrap().recv();
        Ok(())
    };
    let a = Task::start(&set, spec(&[(0, 1)], 1), always_sync(), exec).unwrap();
    entered.recv_timeout(Duration::from_secs(20)).unwrap();
    // B's layer is approved but waits for the slot.
    let calls = Arc::new(AtomicU32::new(0));
    let (c2, log) = (calls.clone(), Log::default());
    let sync: SyncFn = Box::new(move |_| {
        c2.fetch_add(1, Ordering::SeqCst);
        true
    });
    let b = Task::start(&set, spec(&[(0, 2)], 2), sync, logging_exec(&log, None)).unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < end);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(!b.wait(Some(Duration::from_millis(20))));
    let t0 = Instant::now();
    b.cancel_and_wait();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "cancel waited for a worker"
    );
    assert_eq!(b.results(Some(Duration::ZERO)).unwrap(), vec![NotStarted]);
    drop(hold);
    a.synchronize(LONG).unwrap();
    assert!(log.lock().unwrap().is_empty(), "a cancelled layer moved");
    set.join_all();
}

fn always_sync() -> SyncFn {
    Box::new(|_| true)
}

#[test]
fn async_task_churn_reuses_the_same_workers() {
    let set = TaskSet::new(2);
    let log = Log::default();
    let run = |n: usize| {
        for _ in 0..n {
            let t = Task::start(
                &set,
                spec(&[(0, 2)], 2),
                always_sync(),
                logging_exec(&log, None),
            )
            .unwrap();
            t.synchronize(LONG).unwrap();
            t.cancel_and_wait();
        }
    };
    run(20);
    let warm = set.threads();
    run(500);
    assert!(
        set.threads() <= warm,
        "{} workers after churn, {warm} before",
        set.threads()
    );
    assert_eq!(set.running(), 0);
    set.join_all();
}

#[test]
fn async_task_engine_panic_fails_the_task() {
    // A work item whose drop panics would be an engine-level bug; an
    // executor that panics on every layer exercises the same path.
    let set = TaskSet::new(2);
    let exec = |_: &(usize, u32)| -> Result<()> { panic!("executor bug") };
    let t = Task::start(&set, spec(&[(0, 2), (1, 3)], 3), always_sync(), exec).unwrap();
    let e = t.synchronize(LONG).unwrap_err();
    assert_eq!(e.status, Status::Failed);
    assert!(e.message.starts_with("internal error"), "{}", e.message);
    assert_eq!(
        t.results(FOREVER).unwrap(),
        vec![Done(Status::Failed), NotStarted]
    );
    t.cancel_and_wait();
    set.join_all();
}
