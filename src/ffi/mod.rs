//! The C ABI (`extern "C"` functions, `#[repr(C)]` types and constants). Thin:
//! every function checks its pointers, converts, delegates to the engine, and
//! reports a status plus a thread-local message. Panics never cross.
//!
//! Conventions (stated once, they hold for every function):
//! - Every function returning `uint32_t` returns an `LLMDD_*` status; on
//!   failure `llmdd_last_error_message()` says what was wrong.
//! - A NULL pointer where one is required gives `LLMDD_PARAM_INVALID`. An
//!   array may be NULL only when its count is 0.
//! - Output parameters are written only on success.
//! - Every call may come from any thread, except `llmdd_finalize` and
//!   `llmdd_destroy`, which must not overlap other calls on the same instance.

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod backend;
pub(crate) mod boundary;
pub mod cache;
pub mod config;
pub mod constants;
pub mod engine;
pub(crate) mod handles;
pub mod init;
pub mod instance;
pub mod log;
/// The init option keys behind the `LLMDD_OPTION_*` macros of the header.
pub mod option_keys;
pub mod stats;
pub mod task;
pub mod types;
