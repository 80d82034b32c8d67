//! Memory owners and backend selection: host memory (the embedded default) and
//! the dlopen'd Ascend runtime.

use crate::datadist::options::{BackendChoice, Config};
use crate::log_info;
use crate::status::Result;

/// Which backend an instance runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Host,
    Acl,
}

/// Picks the backend for `config` and logs the choice.
pub fn select_backend(config: &Config) -> Result<Backend> {
    let b = match config.backend {
        BackendChoice::Host | BackendChoice::Auto => Backend::Host,
        BackendChoice::Acl => crate::bail!(
            FeatureNotEnabled,
            "the acl backend is not available in this build"
        ),
    };
    log_info!("using the {:?} backend", b);
    Ok(b)
}
