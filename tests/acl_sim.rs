//! The ACL/HCCL wrappers against the simulated Ascend runtime (cpp_tests/sim_ascend,
//! test infrastructure, held to the real ACL/HCCL contracts). The simulator is
//! compiled with `cc` at test time; tests print a message and pass vacuously
//! when no C compiler is present.
//!
//! Failure injection is per process (environment variables read by the simulator),
//! so those tests re-run this test binary as a child with the variables set; the
//! two-rank HCCL scenario runs rank 1 in a child process the same way.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmdd::cache::types::Placement;
use llmdd::testing::acl::hccl::{CommConfig, HcclComm};
use llmdd::testing::acl::runtime::{AclContext, MemcpyKind};
use llmdd::testing::loader::{AscendRuntime, LIB_DIR_ENV};
use llmdd::Status;

mod common;

use common::sim::{assert_no_violations, rank_table};

const CHILD_ENV: &str = "LLMDD_SIM_CHILD";
const TABLE_ENV: &str = "LLMDD_SIM_RANK_TABLE";

/// Directory holding the simulator libraries (`variant` "full" or "noget").
fn sim_dir(variant: &'static str) -> Option<PathBuf> {
    if variant == "full" {
        if let Some(dir) = std::env::var_os(LIB_DIR_ENV) {
            return Some(PathBuf::from(dir)); // child process: parent already built it
        }
    }
    common::sim::dir(variant)
}

fn load(dir: &Path) -> Arc<AscendRuntime> {
    Arc::new(AscendRuntime::load(Some(dir)).expect("load simulator"))
}

fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Re-runs test `name` of this binary with `envs`, returning its output.
fn run_child(name: &str, dir: &Path, envs: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(LIB_DIR_ENV, dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn child test");
    assert!(
        out.status.success(),
        "child {name} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 * 7 + seed as u32) as u8)
        .collect()
}

fn named(name: &str) -> CommConfig {
    CommConfig {
        name: name.to_string(),
        ..CommConfig::default()
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

#[test]
fn library_absent_is_feature_not_enabled() {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("llmdd-empty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = AscendRuntime::load(Some(&dir)).unwrap_err();
    assert_eq!(err.status, Status::FeatureNotEnabled);
    assert!(
        err.message
            .contains(&dir.join("libascendcl.so").display().to_string()),
        "{}",
        err.message
    );
    assert!(err.message.contains(LIB_DIR_ENV));
    // No HCCL library: still an error, naming both names it looked for.
    let Some(sim) = sim_dir("full") else { return };
    std::fs::copy(sim.join("libascendcl.so"), dir.join("libascendcl.so")).unwrap();
    let err = AscendRuntime::load(Some(&dir)).unwrap_err();
    assert_eq!(err.status, Status::FeatureNotEnabled);
    assert!(
        err.message.contains("libhcomm.so or libhccl.so"),
        "{}",
        err.message
    );
}

#[test]
fn symbol_absent_fails_only_that_call() {
    let Some(dir) = sim_dir("noget") else {
        return;
    };
    let rt = load(&dir);
    assert!(rt.hccl.HcclBatchGet.is_none());
    assert!(rt.hccl.HcclBatchPut.is_some());
    let ctx = Arc::new(AclContext::open(rt.clone(), 0).unwrap());
    let buf = ctx.malloc(4096, Placement::Device).unwrap();
    let stream = ctx.create_stream().unwrap();
    let comm = HcclComm::create(&ctx, &rank_table(&[0]), 0, &named("one"), soon()).unwrap();
    comm.register(buf, 4096, Placement::Device).unwrap();
    let err = comm
        .batch_get(1, &[(buf, 0x1000, 16)], &stream)
        .unwrap_err();
    assert_eq!(err.status, Status::FeatureNotEnabled);
    assert!(err.message.contains("HcclBatchGet"), "{}", err.message);
    assert!(err.message.contains("libhcomm.so"), "{}", err.message);
    // The sibling symbol is there: the call reaches the simulator (rank 1 does not exist).
    let err = comm
        .batch_put(1, &[(buf, 0x1000, 16)], &stream)
        .unwrap_err();
    assert_eq!(err.status, Status::ParamInvalid, "{err}");
    drop(comm);
    ctx.free(buf, Placement::Device).unwrap();
}

#[test]
fn malloc_memcpy_free_round_trip() {
    let Some(dir) = sim_dir("full") else { return };
    let rt = load(&dir);
    let ctx = AclContext::open(rt.clone(), 0).unwrap();
    // A second context on the same library must not call aclInit again.
    let ctx2 = AclContext::open(rt, 1).unwrap();
    assert_eq!((ctx.physical_id(), ctx2.physical_id()), (Some(0), Some(1)));
    assert_eq!(ctx.soc_name().as_deref(), Some("Ascend910B3"));
    const N: usize = 64 * 1024;
    let dev = ctx.malloc(N, Placement::Device).unwrap();
    let host = ctx2.malloc(N, Placement::Host).unwrap();
    let src = pattern(3, N);
    let mut back = vec![0u8; N];
    ctx.memcpy_sync(dev, src.as_ptr() as u64, N, MemcpyKind::HostToDevice)
        .unwrap();
    ctx.memcpy_sync(host, dev, N, MemcpyKind::DeviceToHost)
        .unwrap();
    let stream = ctx.create_stream().unwrap();
    stream
        .memcpy_async(back.as_mut_ptr() as u64, host, N, MemcpyKind::HostToHost)
        .unwrap();
    stream.synchronize(Duration::from_secs(5)).unwrap();
    assert_eq!(back, src);
    ctx.free(dev, Placement::Device).unwrap();
    ctx2.free(host, Placement::Host).unwrap();
    // Vendor parameter errors come back mapped.
    let err = ctx
        .memcpy_sync(dev, 0, 16, MemcpyKind::Default)
        .unwrap_err();
    assert_eq!(err.status, Status::ParamInvalid);
    let err = AclContext::open(ctx.runtime().clone(), 99).unwrap_err();
    assert_eq!(err.status, Status::ParamInvalid, "{err}");
}

#[test]
fn injected_malloc_failure_is_out_of_memory() {
    if child_role().as_deref() == Some("malloc_fail") {
        let rt = Arc::new(AscendRuntime::load(None).expect("load via env var"));
        let ctx = AclContext::open(rt, 0).unwrap();
        for placement in [Placement::Device, Placement::Host] {
            let err = ctx.malloc(4096, placement).unwrap_err();
            assert_eq!(err.status, Status::OutOfMemory, "{err}");
            assert!(err.message.contains("207001"), "{}", err.message);
        }
        return;
    }
    let Some(dir) = sim_dir("full") else { return };
    run_child(
        "injected_malloc_failure_is_out_of_memory",
        &dir,
        &[(CHILD_ENV, "malloc_fail"), ("SIM_ASCEND_FAIL_MALLOC", "1")],
    );
}

#[test]
fn hung_stream_times_out() {
    if child_role().as_deref() == Some("hang") {
        let rt = Arc::new(AscendRuntime::load(None).expect("load via env var"));
        let ctx = AclContext::open(rt, 0).unwrap();
        let a = ctx.malloc(256, Placement::Device).unwrap();
        let b = ctx.malloc(256, Placement::Device).unwrap();
        let stream = ctx.create_stream().unwrap();
        stream
            .memcpy_async(a, b, 256, MemcpyKind::DeviceToDevice)
            .unwrap();
        let timeout = Duration::from_millis(300);
        let start = Instant::now();
        let err = stream.synchronize(timeout).unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.status, Status::Timeout, "{err}");
        assert!(took >= timeout, "returned early: {took:?}");
        assert!(
            took < timeout + Duration::from_millis(200),
            "too slow: {took:?}"
        );
        assert!(stream.is_aborted(), "a timed-out stream is aborted");
        drop(stream); // destroying an aborted stream is allowed and does not hang
        return;
    }
    let Some(dir) = sim_dir("full") else { return };
    run_child(
        "hung_stream_times_out",
        &dir,
        &[(CHILD_ENV, "hang"), ("SIM_ASCEND_HANG_TRANSFER", "1")],
    );
}

const SEG: usize = 64 * 1024;
const GET_AREA: usize = 0; // rank 1 fills [0, SEG/2) with pattern(11)
const PUT_AREA: usize = SEG / 2; // rank 0 writes pattern(99) segments here

/// Segments rank 0 writes into rank 1's buffer: (offset in rank 0's buffer, offset in
/// rank 1's buffer, len).
fn put_segments() -> [(usize, usize, usize); 4] {
    [
        (0, PUT_AREA, 100),
        (4096, PUT_AREA + 1000, 2048),
        (9000, PUT_AREA + 5000, 1),
        (20000, PUT_AREA + 8000, 7000),
    ]
}

/// Rank 1 (child process, device 1): owns a buffer, serves one-sided access,
/// then checks what rank 0 wrote.
fn rank1_main() {
    let table = std::env::var(TABLE_ENV).unwrap();
    let rt = Arc::new(AscendRuntime::load(None).unwrap());
    let ctx = Arc::new(AclContext::open(rt.clone(), 1).unwrap());
    let buf = ctx.malloc(SEG, Placement::Device).unwrap();
    let init = pattern(11, SEG);
    ctx.memcpy_sync(buf, init.as_ptr() as u64, SEG, MemcpyKind::HostToDevice)
        .unwrap();
    let comm = HcclComm::create(&ctx, &table, 1, &named("two-rank"), soon()).unwrap();
    comm.register(buf, SEG as u64, Placement::Device).unwrap();
    println!("\nSIMADDR {buf}");
    std::io::stdout().flush().unwrap();
    comm.prepare(Duration::from_secs(10)).unwrap();
    // Wait until rank 0 is done (it writes a line, or closes stdin).
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let mut got = vec![0u8; SEG];
    ctx.memcpy_sync(got.as_mut_ptr() as u64, buf, SEG, MemcpyKind::DeviceToHost)
        .unwrap();
    let src = pattern(99, SEG);
    let mut expect = init.clone();
    for (l, r, len) in put_segments() {
        expect[r..r + len].copy_from_slice(&src[l..l + len]);
    }
    assert!(got == expect, "rank 1 buffer does not hold what rank 0 put");
    drop(comm);
    ctx.free(buf, Placement::Device).unwrap();
    println!("SIMRANK1 OK");
}

#[test]
fn two_rank_hccl_batch_get_and_put() {
    if child_role().as_deref() == Some("rank1") {
        rank1_main();
        return;
    }
    let Some(dir) = sim_dir("full") else { return };
    let table = rank_table(&[0, 1]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "two_rank_hccl_batch_get_and_put",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LIB_DIR_ENV, &dir)
        .env(CHILD_ENV, "rank1")
        .env(TABLE_ENV, &table)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let rt = load(&dir);
    let ctx = Arc::new(AclContext::open(rt.clone(), 0).unwrap());
    let local = ctx.malloc(SEG, Placement::Device).unwrap();
    let mine = pattern(99, SEG);
    ctx.memcpy_sync(local, mine.as_ptr() as u64, SEG, MemcpyKind::HostToDevice)
        .unwrap();
    // The local side of a batch must be registered and bound before Prepare too.
    let scratch = ctx.malloc(SEG, Placement::Host).unwrap();
    let comm = HcclComm::create(&ctx, &table, 0, &named("two-rank"), soon()).unwrap();
    comm.register(local, SEG as u64, Placement::Device).unwrap();
    comm.register(scratch, SEG as u64, Placement::Host).unwrap();
    let remote: u64 = loop {
        let line = lines.next().expect("rank 1 exited early").unwrap();
        // libtest may print "test name ... " on the same line first.
        if let Some((_, a)) = line.split_once("SIMADDR ") {
            break a.trim().parse().unwrap();
        }
    };
    comm.prepare(Duration::from_secs(10)).unwrap();
    let stream = ctx.create_stream().unwrap();

    // GET 4 segments of rank 1's pattern into a scratch buffer.
    let gets = [
        (0usize, GET_AREA + 10, 333usize),
        (1000, 5000, 4096),
        (9000, 17, 1),
        (12000, 20000, 8000),
    ];
    let ops: Vec<(u64, u64, u64)> = gets
        .iter()
        .map(|&(l, r, n)| (scratch + l as u64, remote + r as u64, n as u64))
        .collect();
    comm.batch_get(1, &ops, &stream).unwrap();
    stream.synchronize(Duration::from_secs(5)).unwrap();
    let mut got = vec![0u8; SEG];
    ctx.memcpy_sync(
        got.as_mut_ptr() as u64,
        scratch,
        SEG,
        MemcpyKind::HostToHost,
    )
    .unwrap();
    let theirs = pattern(11, SEG);
    for (l, r, n) in gets {
        assert_eq!(&got[l..l + n], &theirs[r..r + n], "get segment at {l}");
    }

    // A remote range outside what rank 1 registered is refused before any copy
    // (HCCL_E_INTERNAL, "Can't find remoteBuffer by key"), and so is a local
    // range that is not registered.
    let err = comm
        .batch_get(1, &[(scratch, remote + SEG as u64 - 8, 16)], &stream)
        .unwrap_err();
    assert_eq!(err.status, Status::Failed, "{err}");
    assert!(err.message.contains("HCCL code 4"), "{err}");
    let unregistered = got.as_mut_ptr() as u64;
    let err = comm
        .batch_get(1, &[(unregistered, remote, 16)], &stream)
        .unwrap_err();
    assert!(err.message.contains("HCCL code 4"), "{err}");

    // PUT 4 segments into rank 1's buffer; rank 1 verifies them.
    let ops: Vec<(u64, u64, u64)> = put_segments()
        .iter()
        .map(|&(l, r, n)| (local + l as u64, remote + r as u64, n as u64))
        .collect();
    comm.batch_put(1, &ops, &stream).unwrap();
    stream.synchronize(Duration::from_secs(5)).unwrap();

    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "done").unwrap();
    drop(stdin);
    let ok = lines.any(|l| l.map(|l| l.contains("SIMRANK1 OK")).unwrap_or(false));
    let status = child.wait().unwrap();
    assert!(status.success() && ok, "rank 1 failed: {status}");
    drop(stream);
    drop(comm);
    ctx.free(scratch, Placement::Host).unwrap();
    ctx.free(local, Placement::Device).unwrap();
    assert_no_violations(&dir);
}

/// The simulator answers each modelled ACL/HCCL contract violation with the
/// real code (test infrastructure checking itself, through the raw symbols):
/// table schema and identity, names, concurrent-safe registration rules,
/// prepare and batch order, the descriptor limit, teardown order, alignment.
#[test]
fn simulator_enforces_the_contracts() {
    if child_role().as_deref() != Some("contracts") {
        let Some(dir) = sim_dir("full") else { return };
        run_child(
            "simulator_enforces_the_contracts",
            &dir,
            &[(CHILD_ENV, "contracts")],
        );
        return;
    }
    use llmdd::testing::ascend_bindings as b;
    let rt = Arc::new(AscendRuntime::load(None).unwrap());
    let ctx = Arc::new(AclContext::open(rt.clone(), 0).unwrap());
    let h = rt.hccl;
    let create = |table: &str, rank: u32, name: &str| {
        HcclComm::create(&ctx, table, rank, &named(name), Instant::now())
    };
    let code = |r: llmdd::status::Result<HcclComm>| {
        let e = r.expect_err("refused");
        let m = e.message.clone();
        (e.status, m)
    };
    // Rank table schema, version and identity.
    let good = rank_table(&[0, 1]);
    for (bad, want) in [
        (good.replace(r#""1.0""#, r#""1.1""#), "HCCL code 1"),
        (good.replace(r#""completed""#, r#""done""#), "HCCL code 1"),
        (
            good.replace(r#""server_count":"1""#, r#""server_count":"2""#),
            "HCCL code 1",
        ),
        (
            good.replace(r#""device_id":"1""#, r#""device_id":"0""#),
            "HCCL code 1",
        ),
        (
            good.replace(r#""device_id":"1""#, r#""device_id":"9""#),
            "HCCL code 1",
        ),
        (good.replace("192.0.2.2", "192.0.2.1"), "HCCL code 1"),
        (good.replace("192.0.2.1", "127.0.0.1"), "HCCL code 1"),
    ] {
        let (_, m) = code(create(&bad, 0, "t"));
        assert!(m.contains(want), "{bad}: {m}");
    }
    let (_, m) = code(create(&rank_table(&[1, 0]), 0, "t"));
    assert!(
        m.contains("HCCL code 7") && m.contains("local devId"),
        "{m}"
    );
    // Names: empty refused by llmdd itself; a duplicate on the device by HCCL.
    assert_eq!(code(create(&good, 0, "")).0, Status::ParamInvalid);
    let comm = create(&good, 0, "dup").unwrap();
    assert!(code(create(&good, 0, "dup")).1.contains("comm Name exist"));
    // No current device on the calling thread: HCCL_E_RUNTIME.
    let reg = h.HcclRegisterGlobalMem.unwrap();
    let buf = ctx.malloc(4 << 20, Placement::Device).unwrap();
    std::thread::spawn(move || {
        let mem = b::HcclMem {
            type_: b::HcclMemType_HCCL_MEM_TYPE_DEVICE,
            addr: buf as *mut _,
            size: 4096,
        };
        let mut handle = std::ptr::null_mut();
        // SAFETY: valid pointers; the simulator checks the thread's device first.
        assert_eq!(
            unsafe { reg(&mem, &mut handle) },
            b::HcclResult_HCCL_E_RUNTIME
        );
    })
    .join()
    .unwrap();
    // Registration: identical range = same handle; overlap refused.
    let mem = |addr: u64, size: u64| b::HcclMem {
        type_: b::HcclMemType_HCCL_MEM_TYPE_DEVICE,
        addr: addr as *mut _,
        size,
    };
    let (mut h1, mut h2, mut h3) = (
        std::ptr::null_mut(),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    );
    // SAFETY (this block): raw calls with valid pointers into the simulator.
    unsafe {
        assert_eq!(reg(&mem(buf, 4096), &mut h1), 0);
        assert_eq!(reg(&mem(buf, 4096), &mut h2), 0);
        assert_eq!(h1, h2, "an identical range returns the same handle");
        assert_eq!(
            reg(&mem(buf + 1024, 4096), &mut h3),
            b::HcclResult_HCCL_E_PARA
        );
    }
    comm.register(buf, 4096, Placement::Device).unwrap();
    // Batch before Prepare: HCCL_E_NOT_FOUND.
    let stream = ctx.create_stream().unwrap();
    let e = comm.batch_get(1, &[(buf, buf, 16)], &stream).unwrap_err();
    assert!(e.message.contains("HCCL code 6"), "{e}");
    // Unaligned device-to-device aclrtMemcpyAsync: ACL_ERROR_RT_ADDR_UNALIGNED.
    let e = stream
        .memcpy_async(buf + 1, buf + 2048, 64, MemcpyKind::DeviceToDevice)
        .unwrap_err();
    assert!(e.message.contains("107008"), "{e}");
    // Destroying a stream with unfinished tasks is a recorded violation.
    // SAFETY: raw ACL calls on a live stream of this device.
    unsafe {
        let create_stream = rt.acl.aclrtCreateStream.unwrap();
        let destroy = rt.acl.aclrtDestroyStream.unwrap();
        let force = rt.acl.aclrtDestroyStreamForce.unwrap();
        let copy = rt.acl.aclrtMemcpyAsync.unwrap();
        let mut s = std::ptr::null_mut();
        assert_eq!(create_stream(&mut s), 0);
        assert_eq!(
            copy(
                buf as *mut _,
                64,
                (buf + 64) as *const _,
                64,
                b::aclrtMemcpyKind_ACL_MEMCPY_DEVICE_TO_DEVICE,
                s
            ),
            0
        );
        assert_eq!(destroy(s), b::ACL_ERROR_RT_INTERNAL_ERROR);
        assert_eq!(force(s), 0);
    }
    let (n, last) = common::sim::violations(&PathBuf::from(std::env::var(LIB_DIR_ENV).unwrap()));
    assert_eq!(n, 1, "{last}");
    assert!(last.contains("unfinished tasks"), "{last}");
    drop(stream);
    drop(comm);
    ctx.free(buf, Placement::Device).unwrap();
}
