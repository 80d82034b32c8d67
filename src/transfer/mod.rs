//! The engine: the links (connections, data paths, in-flight accounting),
//! executes transfer plans over them, runs layer-wise async tasks, listens,
//! admits and serves peers.

pub mod admission;
pub mod exec;
pub mod handshake;
pub mod link;
pub(crate) mod listener;
pub mod liveness;
pub mod pool;
pub mod rpc;
pub mod serve;
pub mod task;
