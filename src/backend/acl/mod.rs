//! The acl backend: the dlopen'd Ascend runtime (ACL memory, streams and
//! copies: [`runtime`], [`device`]), the device's identity and endpoints
//! ([`endpoint`], [`nic`]), HCCL communicators and registrations ([`hccl`]),
//! the HCCL data path of a link ([`path`]) and the link and comm setup that
//! builds it ([`setup`]); the backend traits' implementations in
//! `impls.rs`. The raw declarations and their loader stay in `sys`.

pub mod device;
pub mod endpoint;
pub mod hccl;
mod impls;
pub mod nic;
pub mod path;
pub mod runtime;
pub mod setup;

pub use impls::FACTORY;
#[cfg(any(test, feature = "testing"))]
pub use impls::{hccl_link, of};
