//! Cache descriptions, keys, the per-instance registry and the transfer planner.

pub mod plan;
pub mod registry;
pub mod types;
