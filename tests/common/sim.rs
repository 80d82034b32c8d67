//! Builds the simulated Ascend runtime (cpp_tests/sim_ascend, TEST
//! INFRASTRUCTURE) into the test target directory, once per test binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cpp_tests/sim_ascend/sim_ascend.c")
}

fn compile(out: &Path, extra: &[&str]) -> Option<PathBuf> {
    std::fs::create_dir_all(out).ok()?;
    let src = source();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let builds: [(&str, Vec<&str>); 2] = [
        ("libascendcl.so", vec![]),
        ("libhccl.so", [&["-DSIM_BUILD_HCCL"][..], extra].concat()),
    ];
    for (name, defs) in builds {
        let status = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(out.join(name))
            .args(defs)
            .arg(&src)
            .arg("-lpthread")
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("building the simulator ({name}) failed: {s}"),
            Err(e) => {
                eprintln!("SKIP: no C compiler ({cc}: {e}); simulated-runtime tests not run");
                return None;
            }
        }
    }
    Some(out.to_path_buf())
}

/// Directory holding `libascendcl.so` and `libhccl.so` of the simulator;
/// `variant` "full", or "no_batch_get" (libhccl.so without HcclBatchGet).
/// `None` when no C compiler is available (the caller skips).
pub fn dir(variant: &'static str) -> Option<PathBuf> {
    static FULL: OnceLock<Option<PathBuf>> = OnceLock::new();
    static NO_GET: OnceLock<Option<PathBuf>> = OnceLock::new();
    let (cell, extra): (_, &[&str]) = match variant {
        "full" => (&FULL, &[]),
        _ => (&NO_GET, &["-DSIM_OMIT_BATCH_GET"]),
    };
    cell.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("llmdd-sim-{}-{variant}", std::process::id()));
        compile(&out, extra)
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
