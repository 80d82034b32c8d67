//! Cache descriptions, keys, the per-instance registry and the transfer planner.

pub(crate) mod plan;
pub(crate) mod registry;
pub mod types;
