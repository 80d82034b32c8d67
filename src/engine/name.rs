//! Engine names: HIXL identifies an engine by `"ip:port"` (`"[ipv6]:port"`),
//! or by a bare `"ip"` (`"[ipv6]"`) for an engine that only dials. The name is
//! the engine's identity on the link table: its cluster id is a hash of the
//! canonical name, so both ends derive the same id from the same name.

use std::net::{IpAddr, SocketAddr};

use crate::bail;
use crate::status::Result;

/// A parsed engine name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineName {
    /// The canonical spelling (`1.2.3.4:5`, `[::1]:5`, `1.2.3.4`, `[::1]`).
    pub text: String,
    /// The engine's IP address (v4 or v6).
    pub ip: IpAddr,
    /// 0 when the name has no port (the engine does not listen).
    pub port: u16,
}

impl EngineName {
    /// Parses `s`; `what` names the argument in messages.
    pub fn parse(what: &str, s: &str) -> Result<EngineName> {
        let t = s.trim();
        if t.is_empty() {
            bail!(ParamInvalid, "{what} is empty");
        }
        let (host, port) = if let Some(rest) = t.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                bail!(ParamInvalid, "{what} {s:?} opens '[' without closing it");
            };
            let tail = &rest[end + 1..];
            let port = match tail.strip_prefix(':') {
                Some(p) => Some(p),
                None if tail.is_empty() => None,
                None => bail!(
                    ParamInvalid,
                    "{what} {s:?} must be \"[ipv6]\" or \"[ipv6]:port\""
                ),
            };
            (&rest[..end], port)
        } else if t.matches(':').count() == 1 {
            let (h, p) = t.split_once(':').unwrap_or((t, ""));
            (h, Some(p))
        } else {
            (t, None)
        };
        let Ok(ip) = host.parse::<IpAddr>() else {
            bail!(
                ParamInvalid,
                "{what} {s:?} must be \"ip:port\", \"ip\", \"[ipv6]:port\" or \"[ipv6]\" with a literal address"
            );
        };
        let port = match port {
            None => 0,
            Some(p) => match p.parse::<u16>() {
                Ok(v) => v,
                Err(_) => bail!(ParamInvalid, "{what} {s:?} has an invalid port {p:?}"),
            },
        };
        let host = match ip {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let text = if port == 0 {
            host
        } else {
            format!("{host}:{port}")
        };
        Ok(EngineName { text, ip, port })
    }

    /// The address to dial, if the name has a port.
    pub fn addr(&self) -> Option<SocketAddr> {
        (self.port != 0).then(|| SocketAddr::new(self.ip, self.port))
    }

    /// The engine's cluster id on the link table: FNV-1a (64 bit) of the
    /// canonical name.
    pub fn id(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.text.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        let n = EngineName::parse("e", " 127.0.0.1:16000 ").unwrap();
        assert_eq!(n.text, "127.0.0.1:16000");
        assert_eq!(n.addr().unwrap().port(), 16000);
        let n = EngineName::parse("e", "10.0.0.1").unwrap();
        assert_eq!((n.text.as_str(), n.port), ("10.0.0.1", 0));
        assert!(n.addr().is_none());
        let n = EngineName::parse("e", "[::1]:7").unwrap();
        assert_eq!(n.text, "[::1]:7");
        let n = EngineName::parse("e", "[0:0::1]").unwrap();
        assert_eq!(n.text, "[::1]");
        let n = EngineName::parse("e", "::1").unwrap();
        assert_eq!(n.text, "[::1]");
        for bad in [
            "",
            "host:1",
            "1.2.3.4:x",
            "1.2.3.4:70000",
            "[::1",
            "[::1]x",
            "1.2.3",
        ] {
            assert!(EngineName::parse("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_follow_the_canonical_name() {
        let a = EngineName::parse("e", "[0::1]:5").unwrap();
        let b = EngineName::parse("e", "[::1]:5").unwrap();
        assert_eq!(a.id(), b.id());
        let c = EngineName::parse("e", "[::1]:6").unwrap();
        assert_ne!(a.id(), c.id());
    }
}
