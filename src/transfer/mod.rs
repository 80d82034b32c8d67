//! The engine: the links (connections, data paths, in-flight accounting) and
//! the acl backend's setup of their HCCL paths, executes transfer plans over
//! them, runs layer-wise async tasks, listens, admits and serves peers.

pub mod acl_link;
pub mod admission;
pub mod exec;
pub mod handshake;
pub mod hccl_path;
pub mod link;
pub(crate) mod listener;
pub mod liveness;
pub mod pool;
pub mod rpc;
pub mod serve;
pub mod task;
