//! llmdd: an LLM-DataDist compatible KV-cache transfer library with a C ABI.
//!
//! Layers (outermost first):
//! - [`ffi`]: the `extern "C"` boundary — pointer checks, panics caught,
//!   statuses and the thread-local last-error message. No logic.
//! - [`datadist`] and [`cache`]: API semantics — instance state machine, options,
//!   links, cache registry and keys, and the address arithmetic that turns one
//!   call into a transfer plan.
//! - [`engine`]: the byte-addressed transfer engine (HIXL's `Hixl`) on the
//!   same sessions, links and executor.
//! - `transfer`: the links (connections, data paths, in-flight accounting),
//!   executes plans over them (coalescing, striping, timeouts) and serves
//!   peers (the serve loop, asking the instance through `transfer::serve::ServeHost`).
//! - `backend`, `transport` and `device`: the backends behind one set of
//!   traits (host: memcpy and same-host one-sided paths; acl: ACL memory and
//!   HCCL), moving bytes over TCP, and memory pools.
//! - `sys`: raw declarations of the Ascend runtime and its dlopen loader.
//! - [`stats`]: per-link counters and latency histograms (a leaf: atomics only).
//!
//! Public are the C boundary, the two APIs and the vocabulary they speak
//! (`docs/architecture.md`, "The facade"); the rest is crate-private.

// Every public item has a doc comment (issue 10: "concise doc comments on every public item").
#![warn(missing_docs)]
// Unsafe blocks of the library (not of its unit tests) state why they are sound.
#![cfg_attr(not(test), warn(clippy::undocumented_unsafe_blocks))]

// The facade. Public: the C boundary (`ffi`), the Rust API of the two
// semantics (`datadist`, `engine`) and the leaf vocabulary they speak
// (`cache::types`, `status`, `log`, `stats`). Everything under them is
// crate-private; `testing` (feature `testing`, on for this crate's own tests
// and benches only) names the few internals the hostile-peer and simulated
// runtime tests drive directly.
pub mod log;

pub mod cache;
pub mod datadist;

// Here, after `datadist`: cbindgen writes the crate's constants in module
// order, so the header keeps its order.
pub(crate) mod backend;

pub(crate) mod device;
pub mod engine;
pub mod ffi;
pub mod stats;
pub mod status;
pub(crate) mod sys;
pub(crate) mod transfer;
pub(crate) mod transport;

#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing;

pub use status::{Error, Result, Status};
