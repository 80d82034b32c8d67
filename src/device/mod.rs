//! Memory owners: memory pools (host memfd pools, or one ACL allocation on
//! the acl backend) and the device layer's part of the init configuration.
//! The backends that use them are in `crate::backend`.

pub mod config;
pub mod pool;

pub use config::PoolConfig;
