//! The engine: executes transfer plans, runs layer-wise async tasks and serves
//! peers' requests.

pub mod exec;
pub mod hccl_path;
pub mod pool;
pub mod serve;
pub mod task;
