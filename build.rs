//! Generates `include/llmdd.h` from the `extern "C"` items with cbindgen.
//! The header is checked in; the build rewrites it only when it changed, and
//! `tests/header.rs` fails if the checked-in copy drifts from the sources.

use std::path::PathBuf;

// OPTION_KEYS: the `LLMDD_OPTION_*` macros (shared with the crate).
include!("src/ffi/option_keys.rs");

/// Reads the status table (`src/status_table.rs`, also expanded by
/// `src/status.rs`) as `(C constant, code, doc)` rows.
macro_rules! statuses {
    ($( $variant:ident = $code:literal, $llm:literal, [$($c:ident)?], $doc:literal; )*) => {
        const STATUSES: &[(Option<&str>, u32, &str)] = &[
            $( (statuses!(@c $($c)?), $code, $doc), )*
        ];
    };
    (@c $c:ident) => { Some(stringify!($c)) };
    (@c) => { None };
}
include!("src/status_table.rs");

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    // cbindgen parses the whole crate (a new pub item anywhere can reach the header).
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=Cargo.toml"); // the version macros
                                                   // A versioned SONAME (libllmdd.so.<major>), so programs record the ABI
                                                   // they were linked against rather than an unversioned libllmdd.so.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("version");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libllmdd.so.{major}");
    }
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut after = version_macros();
    after.push_str(&status_macros());
    after.push_str(&option_macros());
    config.after_includes = Some(after);
    let bindings = match cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => {
            println!("cargo:warning=cbindgen failed: {e}");
            return;
        }
    };
    let mut raw = Vec::new();
    bindings.write(&mut raw);
    let text = typed_hex_constants(&String::from_utf8_lossy(&raw)).into_bytes();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("out dir"));
    std::fs::write(out.join("llmdd.h"), &text).expect("write OUT_DIR header");
    println!("cargo:include={}", out.display());
    // Keep the checked-in copy current unless told not to (CI verifies drift).
    if std::env::var_os("LLMDD_NO_HEADER_UPDATE").is_none() {
        let dst = dir.join("include/llmdd.h");
        if std::fs::read(&dst).ok().as_deref() != Some(&text[..]) {
            let _ = std::fs::create_dir_all(dir.join("include"));
            let _ = std::fs::write(&dst, &text);
        }
    }
}

/// cbindgen writes integer constants in decimal: a `u32`-suffixed Rust
/// constant becomes `#define LLMDD_X 4294967295u`. Those (the statuses) are
/// rewritten as `0xFFFFFFFFU`, the form the documentation and the reference
/// use; other constants are left as they are.
fn typed_hex_constants(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let rewritten = body
            .strip_prefix("#define LLMDD_")
            .and_then(|rest| rest.rsplit_once(' '))
            .and_then(|(name, value)| {
                let digits = value.strip_suffix('u')?;
                let v: u32 = digits.parse().ok()?;
                Some(format!("#define LLMDD_{name} 0x{v:X}U"))
            });
        match rewritten {
            Some(r) => {
                out.push_str(&r);
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The `LLMDD_VERSION_*` macros, from the crate version (Cargo.toml).
fn version_macros() -> String {
    let part = |k: &str| std::env::var(k).expect("cargo sets CARGO_PKG_VERSION_*");
    format!(
        "\n#define LLMDD_VERSION_MAJOR {}\n#define LLMDD_VERSION_MINOR {}\n#define LLMDD_VERSION_PATCH {}\n#define LLMDD_VERSION_NUMBER ((LLMDD_VERSION_MAJOR << 16) | (LLMDD_VERSION_MINOR << 8) | LLMDD_VERSION_PATCH)\n",
        part("CARGO_PKG_VERSION_MAJOR"),
        part("CARGO_PKG_VERSION_MINOR"),
        part("CARGO_PKG_VERSION_PATCH")
    )
}

/// `#define LLMDD_X 0x...U` for every status of the table that has a C
/// name: `uint32_t`-typed hex, the form the documentation and the reference use.
fn status_macros() -> String {
    let mut out =
        String::from("\n/* Statuses (the documented LLM_* codes; src/status_table.rs). */\n");
    for (name, code, doc) in STATUSES {
        if let Some(name) = name {
            out.push_str(&format!(
                "\n/**\n * {doc}\n */\n#define {name} 0x{code:X}U\n"
            ));
        }
    }
    out
}

/// `#define LLMDD_OPTION_X "key"` for every entry of `OPTION_KEYS`, each with
/// its description as a doc comment.
fn option_macros() -> String {
    let mut out = String::from("\n/* Init option keys (docs/options.md). */\n");
    for (name, key, doc) in OPTION_KEYS {
        out.push_str(&format!("\n/**\n * {doc}\n */\n#define {name} \"{key}\"\n"));
    }
    out
}
