//! Memory owners and backend selection: host memory pools (the embedded default) and
//! the dlopen'd Ascend runtime (ACL + HCCL).

pub mod acl;
pub mod acl_backend;
pub mod config;
pub mod endpoint;
pub mod nic;
pub mod pool;

use std::sync::Arc;

use crate::device::acl_backend::AclBackend;
use crate::device::endpoint::LocalDevice;
use crate::log_info;
use crate::status::{Error, Result};
pub use config::{AclOptions, BackendChoice, DeviceConfig, PoolConfig};

/// The backend an instance runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    /// Host memory; TCP, same-host one-sided copies or memcpy between peers.
    Host,
    /// ACL memory and HCCL one-sided transfers.
    Acl(Arc<AclBackend>),
}

impl Backend {
    /// The acl backend's state, if that is the backend.
    pub fn acl(&self) -> Option<&Arc<AclBackend>> {
        match self {
            Backend::Acl(a) => Some(a),
            Backend::Host => None,
        }
    }
}

/// Picks the backend for `config` (`llmdd.Backend`) and logs the choice.
///
/// - `host`: the host backend.
/// - `acl`: the Ascend runtime must load, export every symbol the backend
///   needs, and open `llm.DeviceId`; otherwise init fails (`FeatureNotEnabled`
///   naming the libraries and paths tried or the missing symbols; the mapped ACL
///   status when the device cannot be opened).
/// - `auto` (default): acl when all of that succeeds, else host (the reason is
///   logged at info level).
///
/// Once the runtime has loaded, a malformed `llm.LocalCommRes` fails init
/// (`ParamInvalid`) with either choice.
pub fn select_backend(config: &DeviceConfig) -> Result<Backend> {
    let explicit = match config.backend {
        BackendChoice::Host => {
            log_info!("using the host backend (llmdd.Backend=host)");
            return Ok(Backend::Host);
        }
        BackendChoice::Acl => true,
        BackendChoice::Auto => false,
    };
    let fallback = |what: &str, e: Error| -> Result<Backend> {
        if explicit {
            return Err(Error::new(
                e.status,
                format!("llmdd.Backend=acl: {what}{}", e.message),
            ));
        }
        log_info!(
            "using the host backend (llmdd.Backend=auto): {what}{}",
            e.message
        );
        Ok(Backend::Host)
    };
    let rt = match AclBackend::bring_up(config) {
        Ok(rt) => rt,
        Err(e) => return fallback("", e),
    };
    let local = LocalDevice::parse(config.local_comm_res.as_deref())?;
    match AclBackend::open(rt, local, config) {
        Ok(a) => {
            log_info!(
                "using the acl backend (llmdd.Backend={}; {})",
                if explicit { "acl" } else { "auto" },
                a.report()
            );
            Ok(Backend::Acl(Arc::new(a)))
        }
        Err(e) => fallback(&format!("Ascend device {}: ", config.device_id), e),
    }
}
