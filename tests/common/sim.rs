//! Builds the simulated Ascend runtime (cpp_tests/sim_ascend, TEST
//! INFRASTRUCTURE) into the test target directory, once per test binary and
//! install layout, and finds the simulated machine's hccn.conf.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

fn sources() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cpp_tests/sim_ascend")
}

/// The simulated machine's `/etc/hccn.conf` (device N's NIC is 192.0.2.(N+1)).
pub fn hccn_conf() -> PathBuf {
    sources().join("hccn.conf")
}

/// The libraries of `layout` (see cpp_tests/sim_ascend/build.sh): file name,
/// source, extra definitions.
fn libraries(layout: &str) -> Vec<(&'static str, &'static str, &'static [&'static str])> {
    const ACL: (&str, &str, &[&str]) = ("libascendcl.so", "sim_acl.c", &[]);
    const HCOMM: (&str, &str, &[&str]) = ("libhcomm.so", "sim_hcomm.c", &[]);
    const WRAPPER: (&str, &str, &[&str]) = ("libhccl.so", "sim_hccl_wrapper.c", &[]);
    match layout {
        "full" => vec![ACL, HCOMM, WRAPPER],
        "hcomm" => vec![ACL, HCOMM],
        "noget" => vec![
            ACL,
            ("libhcomm.so", "sim_hcomm.c", &["-DSIM_OMIT_BATCH_GET"]),
        ],
        "legacy" => vec![ACL, ("libhccl.so", "sim_hcomm.c", &[])],
        "stubs" => vec![ACL, WRAPPER],
        "split" => vec![
            ("libascendcl.so", "sim_acl.c", &["-DSIM_ACL_BASE_ONLY"]),
            ("libacl_rt.so", "sim_acl.c", &[]),
            HCOMM,
        ],
        other => panic!("unknown simulator layout {other}"),
    }
}

fn compile(out: &Path, layout: &str) -> Option<PathBuf> {
    std::fs::create_dir_all(out).ok()?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for (name, src, defs) in libraries(layout) {
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(out.join(name))
            .args(defs)
            .arg(sources().join(src))
            .args(["-lpthread", "-ldl"])
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("building the simulator ({layout}: {name}) failed: {s}"),
            Err(e) => {
                eprintln!("SKIP: no C compiler ({cc}: {e}); simulated-runtime tests not run");
                return None;
            }
        }
    }
    Some(out.to_path_buf())
}

/// Directory holding the simulator built in `layout`: "full" (libascendcl.so,
/// libhcomm.so, libhccl.so forwarding to it), "hcomm" (no libhccl.so), "noget"
/// (libhcomm.so without HcclBatchGet), "legacy" (libhccl.so holds the API),
/// "stubs" (libhccl.so wrappers without libhcomm.so) or "split" (aclrt* in
/// libacl_rt.so). `None` when no C compiler is available (the caller skips).
pub fn dir(layout: &'static str) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<&'static str, Option<PathBuf>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    built
        .entry(layout)
        .or_insert_with(|| {
            let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("llmdd-sim-{}-{layout}", std::process::id()));
            compile(&out, layout)
        })
        .clone()
}

/// An empty directory (no runtime libraries in it).
pub fn empty_dir(tag: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("llmdd-empty-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The NIC address of physical device `phy` on the simulated machine.
pub fn nic_ip(phy: u32) -> String {
    format!("192.0.2.{}", phy + 1)
}

/// A one-server rank table (version 1.0) whose rank r is physical device
/// `devs[r]` at its simulated NIC address.
pub fn rank_table(devs: &[u32]) -> String {
    let d: Vec<String> = devs
        .iter()
        .enumerate()
        .map(|(r, &phy)| {
            format!(
                r#"{{"device_id":"{phy}","device_ip":"{}","rank_id":"{r}"}}"#,
                nic_ip(phy)
            )
        })
        .collect();
    format!(
        r#"{{"version":"1.0","server_count":"1","status":"completed","server_list":[{{"server_id":"127.0.0.1","device":[{}]}}]}}"#,
        d.join(",")
    )
}

/// Contract violations the simulator recorded in this process (on teardown
/// paths, whose error codes callers tend to ignore), and the last message;
/// (0, "") when the library of `dir` is not loaded.
pub fn violations(dir: &Path) -> (i32, String) {
    let path = std::ffi::CString::new(dir.join("libascendcl.so").to_str().unwrap()).unwrap();
    // SAFETY: plain dlopen/dlsym of the simulator; RTLD_NOLOAD only finds a
    // library that is already loaded, and the reference is released again.
    unsafe {
        let h = libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
        if h.is_null() {
            return (0, String::new());
        }
        let f = libc::dlsym(h, c"sim_ascend_violations".as_ptr());
        let out = if f.is_null() {
            (0, String::new())
        } else {
            let f: extern "C" fn(*mut std::ffi::c_char, usize) -> i32 = std::mem::transmute(f);
            let mut buf = vec![0 as std::ffi::c_char; 512];
            let n = f(buf.as_mut_ptr(), buf.len());
            let msg = std::ffi::CStr::from_ptr(buf.as_ptr())
                .to_string_lossy()
                .into_owned();
            (n, msg)
        };
        libc::dlclose(h);
        out
    }
}

/// Asserts that the simulator of `dir` recorded no contract violation.
pub fn assert_no_violations(dir: &Path) {
    let (n, last) = violations(dir);
    assert_eq!(
        n, 0,
        "the simulator recorded {n} contract violation(s); last: {last}"
    );
}
