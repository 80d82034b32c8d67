//! The one registration point of the backends and the selection of one for
//! `llmdd.Backend`.

use std::sync::Arc;

use crate::backend::{acl, host, Device, Factory};
use crate::device::config::{BackendChoice, DeviceConfig};
use crate::log_info;
use crate::status::{Error, Result};
use crate::transport::wire::DeviceEndpoint;

/// The one registration point: every backend's factory, in the order
/// `llmdd.Backend=auto` tries them (the last, host, always opens).
static REGISTRY: &[&dyn Factory] = &[&acl::FACTORY, &host::FACTORY];

/// Every registered backend's factory ([`REGISTRY`]'s order).
pub fn registry() -> &'static [&'static dyn Factory] {
    REGISTRY
}

/// The registered backend named `name`.
pub fn find(name: &str) -> Option<&'static dyn Factory> {
    registry().iter().copied().find(|f| f.name() == name)
}

/// The values `llmdd.Backend` takes, for messages: "auto, host or acl"
/// (the registered names from the last, the fallback, up).
pub fn choices() -> String {
    let mut out = String::from("auto");
    let n = registry().len();
    for (i, f) in registry().iter().rev().enumerate() {
        out.push_str(if i + 1 == n { " or " } else { ", " });
        out.push_str(f.name());
    }
    out
}

/// Checks that both ends run the same backend. `ours` / `theirs`: whether
/// each end sent a device endpoint (acl backend).
pub fn check_offers(
    ours: bool,
    theirs: Option<&DeviceEndpoint>,
    we_are_server: bool,
) -> Result<()> {
    acl::setup::check_backends(ours, theirs, we_are_server)
}

/// Picks the backend for `config` (`llmdd.Backend`) and logs the choice.
///
/// - a backend's name (`host`, `acl`): that backend must open; for acl the
///   Ascend runtime must load, export every symbol the backend needs, and
///   open `llm.DeviceId`; otherwise init fails (`FeatureNotEnabled` naming
///   the libraries and paths tried or the missing symbols; the mapped ACL
///   status when the device cannot be opened).
/// - `auto` (default): the first of [`registry`] that opens (acl, else host;
///   the reason is logged at info level).
///
/// Once the runtime has loaded, a malformed `llm.LocalCommRes` fails init
/// (`ParamInvalid`) with either choice.
pub fn select(config: &DeviceConfig) -> Result<Arc<dyn Device>> {
    let named = match config.backend {
        BackendChoice::Auto => None,
        BackendChoice::Named(name) => Some(name),
    };
    let log = |d: &Arc<dyn Device>, choice: &str, why: Option<&str>| {
        let tail = match (d.report(), why) {
            (Some(r), _) => format!("; {r})"),
            (None, Some(w)) => format!("): {w}"),
            (None, None) => ")".to_string(),
        };
        log_info!(
            "using the {} backend (llmdd.Backend={choice}{tail}",
            d.name()
        );
    };
    if let Some(name) = named {
        let Some(f) = find(name) else {
            crate::bail!(ParamInvalid, "no backend named {name}");
        };
        return match f.open(config)? {
            Ok(d) => {
                log(&d, name, None);
                Ok(d)
            }
            Err(e) => Err(Error::new(
                e.status,
                format!("llmdd.Backend={name}: {}", e.message),
            )),
        };
    }
    let mut why: Option<String> = None;
    let mut last = None;
    for f in registry() {
        match f.open(config)? {
            Ok(d) => {
                log(&d, "auto", why.as_deref());
                return Ok(d);
            }
            Err(e) => {
                why = Some(match why {
                    Some(w) => format!("{w}; {}", e.message),
                    None => e.message.clone(),
                });
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| crate::err!(FeatureNotEnabled, "no backend is registered")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_backend_is_found_by_its_name_and_listed_in_messages() {
        for f in registry() {
            assert_eq!(find(f.name()).map(|g| g.name()), Some(f.name()));
        }
        assert!(find("auto").is_none() && find("cuda").is_none());
        assert_eq!(choices(), "auto, host or acl");
    }
}
