//! The checked-in C header must equal what cbindgen generates from the sources.

#[test]
fn checked_in_header_matches_generated() {
    let generated =
        std::fs::read_to_string(concat!(env!("OUT_DIR"), "/llmdd.h")).expect("generated header");
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/llmdd.h"))
            .expect("include/llmdd.h");
    assert!(
        generated == checked_in,
        "include/llmdd.h drifted from the Rust sources: run `cargo build` and commit include/llmdd.h"
    );
}

#[test]
fn every_exported_function_is_documented() {
    let h =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/llmdd.h")).unwrap();
    let lines: Vec<&str> = h.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.contains(" llmdd_") && l.contains('(') && !l.starts_with(' ') && !l.starts_with('*') {
            let prev = lines[..i]
                .iter()
                .rev()
                .find(|p| !p.trim().is_empty())
                .copied()
                .unwrap_or("");
            assert!(prev.trim_start().starts_with("*/"), "undocumented: {l}");
        }
    }
}
