//! API semantics of LLMDataDist: instance lifecycle and roles, options, links
//! and the cache operations that turn calls into transfer plans (including the
//! layer-wise async push).

pub mod access;
pub mod acl_rules;
pub mod async_transfer;
pub(crate) mod attempts;
pub mod cache_ops;
pub mod comm;
pub mod instance;
pub mod link_host;
pub mod link_state;
pub(crate) mod link_table;
pub mod notify;
pub mod options;
pub mod peers;
pub mod pools;
pub mod rank_table;
pub(crate) mod runtime;
pub mod serve_host;
pub mod session;

/// The link moved to the engine layer (`transfer::link`); this path stays for
/// the integration tests and embedders that name it.
pub use crate::transfer::link;
pub use instance::{ClusterInfo, Instance, IpInfo};
