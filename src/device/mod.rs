//! Memory owners and backend selection: host memory (the embedded default) and
//! the dlopen'd Ascend runtime (ACL).

pub mod acl;

use crate::datadist::options::{BackendChoice, Config};
use crate::log_info;
use crate::status::Result;

/// Which backend an instance runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Host,
    Acl,
}

/// Picks the backend for `config` and logs the choice. The engine does not yet
/// drive ACL/HCCL for transfers, so `acl` is refused with a clear status and
/// `auto` uses the host backend.
pub fn select_backend(config: &Config) -> Result<Backend> {
    let b = match config.backend {
        BackendChoice::Host | BackendChoice::Auto => Backend::Host,
        BackendChoice::Acl => crate::bail!(
            FeatureNotEnabled,
            "llmdd.Backend=acl: transfers over ACL/HCCL are not wired into the engine in this build; use host or auto"
        ),
    };
    log_info!("using the {:?} backend", b);
    Ok(b)
}
