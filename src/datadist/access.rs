//! What a linked peer may reach on the serving side, per cache (spec §1.4,
//! §1.7, §1.8 rule 2, §4.2–4.3). Refusals are logged through
//! [`crate::log::rate::warn_refusal`].
//!
//! - Only caches registered (or allocated) `remote_accessible` are ever
//!   served: in tables (`GetTable`), key resolutions (`Resolve`) and remote
//!   reads and writes. `remote_accessible = 0` memory is local-only.
//! - Remote-cache-accessible mode: a link sees the caches that existed when it
//!   was created (its table); later ones are invisible to it, reads and writes
//!   included, and keys are never consumed over it.
//! - Request/response mode: keys resolve against the current tables (a cache
//!   registered after the link can be pulled by key), and a pull consumes a
//!   one-shot key.
//!
//! A same-host peer is handed only these caches' addresses, but its one-sided
//! access is ptrace-level by nature (docs/security.md).

use crate::bail;
use crate::cache::registry::CacheRecord;
use crate::status::Result;
use crate::transfer::link::Link;

/// The access rules of one link on the serving side.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Access {
    /// This instance runs in remote-cache-accessible mode.
    pub remote_mode: bool,
    /// Registry generation when the link was created.
    pub generation: u64,
}

impl Access {
    /// The rules for requests arriving over `link`.
    pub fn of(remote_mode: bool, link: &Link) -> Access {
        Access {
            remote_mode,
            generation: link.generation,
        }
    }

    /// Why the peer may not reach `rec`, or `Ok` if it may.
    pub fn check(&self, rec: &CacheRecord) -> std::result::Result<(), String> {
        if !rec.remote_accessible {
            return Err("is registered with remote_accessible = 0 (local only)".into());
        }
        if self.remote_mode && rec.generation > self.generation {
            return Err(
                "was registered after this link was created (remote-cache-accessible mode: register before linking)"
                    .into(),
            );
        }
        Ok(())
    }

    /// Keys are consumed only in request/response mode.
    pub fn check_consume(&self) -> Result<()> {
        if self.remote_mode {
            bail!(
                ParamInvalid,
                "keys are never consumed in remote-cache-accessible mode"
            );
        }
        Ok(())
    }
}
