//! Raw declarations of the Ascend runtime (bindgen output) and its dlopen loader.
//!
//! Nothing here is part of the C API: the vendor names must not leak into
//! `include/llmdd.h`, where they would clash with the real CANN headers.

/// cbindgen:ignore
#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    missing_docs,
    clippy::all
)]
pub mod ascend_bindings;
pub mod loader;
