//! The engine: the links (connections, data paths, in-flight accounting),
//! executes transfer plans over them, runs layer-wise async tasks and serves peers' requests.

pub mod exec;
pub mod handshake;
pub mod link;
pub mod pool;
pub mod rpc;
pub mod serve;
pub mod task;
