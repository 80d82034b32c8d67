//! The instance's memory pools (`llm.MemPoolConfig`, `llm.HostMemPoolConfig`),
//! created at init on the backend, and the pool a placement allocates from.

use std::sync::Arc;

use crate::backend::Device;
use crate::bail;
use crate::cache::types::Placement;
use crate::device::pool::Pool;
use crate::device::PoolConfig;
use crate::status::Result;

/// The device and host pools of one instance, either or both absent.
pub struct Pools {
    device: Option<Arc<Pool>>,
    host: Option<Arc<Pool>>,
}

impl Pools {
    /// Creates the configured pools on `backend` (shareable memfd pools on
    /// host, ACL allocations registered with HCCL on acl).
    pub fn create(
        backend: &dyn Device,
        device: Option<PoolConfig>,
        host: Option<PoolConfig>,
    ) -> Result<Pools> {
        let mk = |name: &str, placement, p: Option<PoolConfig>| {
            p.map(|p| backend.create_pool(name, placement, p))
                .transpose()
        };
        Ok(Pools {
            device: mk("llmdd-device-pool", Placement::Device, device)?,
            host: mk("llmdd-host-pool", Placement::Host, host)?,
        })
    }

    /// The device pool, if configured.
    pub fn device(&self) -> Option<&Arc<Pool>> {
        self.device.as_ref()
    }

    /// Every configured pool (device first).
    pub fn all(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.device.iter().chain(self.host.iter())
    }

    /// The pool caches of `placement` are allocated from.
    /// Errors: `FeatureNotEnabled` when no pool is configured at all,
    /// `ParamInvalid` naming the option when only the other one is.
    pub fn for_placement(&self, p: Placement) -> Result<&Arc<Pool>> {
        let pool = match p {
            Placement::Device => self.device.as_ref(),
            Placement::Host => self.host.as_ref(),
        };
        match pool {
            Some(p) => Ok(p),
            None if self.device.is_none() && self.host.is_none() => bail!(
                FeatureNotEnabled,
                "no memory pool is configured (set llm.MemPoolConfig or llm.HostMemPoolConfig)"
            ),
            None => bail!(
                ParamInvalid,
                "no pool for placement {:?} (configure {})",
                p,
                if p == Placement::Device {
                    "llm.MemPoolConfig"
                } else {
                    "llm.HostMemPoolConfig"
                }
            ),
        }
    }

    /// Fails (`FeatureNotEnabled`) unless some pool is configured: the calls
    /// on allocated caches need one.
    pub fn check_any(&self) -> Result<()> {
        if self.device.is_none() && self.host.is_none() {
            bail!(FeatureNotEnabled, "no memory pool is configured");
        }
        Ok(())
    }
}
