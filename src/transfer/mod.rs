//! The engine: executes transfer plans and serves peers' requests.

pub mod exec;
pub mod hccl_path;
pub mod serve;
