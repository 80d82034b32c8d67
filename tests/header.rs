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

#[test]
fn status_defines_match_the_status_table() {
    use llmdd::status::Status;
    let h =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/include/llmdd.h")).unwrap();
    let mut seen = 0;
    for l in h.lines() {
        let Some((name, value)) = l
            .strip_prefix("#define LLMDD_")
            .and_then(|r| r.split_once(' '))
        else {
            continue;
        };
        let Some(hex) = value.strip_prefix("0x").and_then(|v| v.strip_suffix('U')) else {
            continue;
        };
        if name == "TASK_RESULT_NOT_STARTED" {
            continue; // a task-result sentinel, not a status
        }
        let code = u32::from_str_radix(hex, 16).expect("hex status");
        let status = Status::from_code(code);
        assert_eq!(
            status.code(),
            code,
            "LLMDD_{name}: {code:#x} is not in the table"
        );
        assert_eq!(status.name(), format!("LLM_{name}"), "LLMDD_{name}");
        seen += 1;
    }
    assert_eq!(seen, 23, "status #defines in include/llmdd.h");
}
