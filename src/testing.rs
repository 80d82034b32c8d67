//! Internals named by this crate's own integration tests and benches (feature
//! `testing`, which only its dev-dependency on itself turns on): the tests
//! that play a hostile peer build wire frames and identities by hand, the
//! simulated Ascend runtime's contract tests call the loader and the acl
//! backend, and the one-sided copy benchmarks call the same-host movers.
//! Not an API: nothing here is stable, and the shipped library has none of it.

pub use crate::backend::acl;
pub use crate::backend::host::same_host;
pub use crate::datadist::session::Session;
pub use crate::sys::{ascend_bindings, loader};
pub use crate::transfer::link::{set_data_idle_close, Link};
pub use crate::transport::auth::LinkKey;
pub use crate::transport::local::vm_copy;
pub use crate::transport::{identity, wire};
