//! API semantics of LLMDataDist: instance lifecycle and roles, options, links
//! and the cache operations that turn calls into transfer plans (including the
//! layer-wise async push).

pub(crate) mod access;
pub(crate) mod acl_rules;
pub mod async_transfer;
pub(crate) mod attempts;
pub(crate) mod cache_ops;
pub(crate) mod comm;
pub(crate) mod instance;
pub(crate) mod link_host;
pub(crate) mod link_state;
pub(crate) mod link_table;
pub(crate) mod notify;
pub mod options;
pub(crate) mod peers;
pub(crate) mod pools;
pub(crate) mod rank_table;
pub(crate) mod runtime;
pub(crate) mod serve_host;
pub(crate) mod session;

pub use comm::MemStatus;
pub use instance::{ClusterInfo, Instance, IpInfo};
pub use link_state::{LinkInfo, LinkState};
pub use notify::Notice;
