//! Device endpoints of the acl backend: where a peer's HCCL communicator reaches
//! this instance's device, and the two-rank table built from both ends.
//!
//! Derivation (docs/ascend.md, "Device endpoint"):
//! - `llm.LocalCommRes` (version 1.0 / 1.2) names this instance's device:
//!   `server_list[0].server_id` and `server_list[0].device[0].{device_id,
//!   device_ip, device_port}`; every field present there is used as is.
//! - Missing fields are derived per link: `server_id` and `device_ip` = the local
//!   IP of the link (the client's `local_ip_infos[0]`, the server's listen IP, or
//!   else the local address of the control connection); `device_id` =
//!   `llm.DeviceId`; `device_port` = a free TCP port reserved on that IP for the
//!   lifetime of the link setup ([`PortReservation`]).

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use serde_json::{json, Value};

use crate::status::Result;
use crate::transport::wire::DeviceEndpoint;
use crate::{bail, err};

/// What `llm.LocalCommRes` says about this instance's device (all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalDevice {
    /// `server_list[0].server_id`.
    pub server_id: Option<String>,
    /// `server_list[0].device[0].device_id`.
    pub device_id: Option<u32>,
    /// `server_list[0].device[0].device_ip`.
    pub device_ip: Option<String>,
    /// `server_list[0].device[0].device_port`.
    pub device_port: Option<u16>,
}

/// A rank-table value: a string (the documented form) or a bare number.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field<T: std::str::FromStr>(obj: &Value, key: &str) -> Result<Option<T>> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    let s = text(v).ok_or_else(|| {
        err!(
            ParamInvalid,
            "llm.LocalCommRes: {key} must be a string or a number"
        )
    })?;
    s.trim().parse::<T>().map(Some).map_err(|_| {
        err!(
            ParamInvalid,
            "llm.LocalCommRes: {key} {s:?} is out of range"
        )
    })
}

impl LocalDevice {
    /// Reads the device fields of an `llm.LocalCommRes` value. Absent, empty and
    /// version 1.3 (which describes no device) give an empty `LocalDevice`.
    /// Errors: `ParamInvalid` for malformed JSON or fields.
    pub fn parse(local_comm_res: Option<&str>) -> Result<LocalDevice> {
        let Some(text_json) = local_comm_res.filter(|s| !s.trim().is_empty()) else {
            return Ok(LocalDevice::default());
        };
        let v: Value = serde_json::from_str(text_json)
            .map_err(|e| err!(ParamInvalid, "llm.LocalCommRes is not valid JSON: {e}"))?;
        let Some(servers) = v.get("server_list") else {
            return Ok(LocalDevice::default());
        };
        let Some(server) = servers.as_array().and_then(|a| a.first()) else {
            bail!(
                ParamInvalid,
                "llm.LocalCommRes: server_list must be a non-empty array"
            );
        };
        let server_id = field::<String>(server, "server_id")?;
        let Some(device) = server
            .get("device")
            .and_then(|d| d.as_array())
            .and_then(|a| a.first())
        else {
            bail!(
                ParamInvalid,
                "llm.LocalCommRes: server_list[0].device must be a non-empty array"
            );
        };
        let device_ip = field::<String>(device, "device_ip")?;
        if let Some(ip) = &device_ip {
            if ip.parse::<IpAddr>().is_err() {
                bail!(
                    ParamInvalid,
                    "llm.LocalCommRes: device_ip {ip:?} is not an IP address"
                );
            }
        }
        let device_port = field::<u16>(device, "device_port")?;
        if device_port == Some(0) {
            bail!(ParamInvalid, "llm.LocalCommRes: device_port must be > 0");
        }
        Ok(LocalDevice {
            server_id,
            device_id: field::<u32>(device, "device_id")?,
            device_ip,
            device_port,
        })
    }

    /// This instance's endpoint for one link whose local IP is `local_ip`,
    /// reserving a port when `llm.LocalCommRes` names none.
    pub fn endpoint(
        &self,
        device_id: i32,
        local_ip: IpAddr,
    ) -> Result<(DeviceEndpoint, Option<PortReservation>)> {
        let device_ip = self
            .device_ip
            .clone()
            .unwrap_or_else(|| local_ip.to_string());
        let (device_port, reservation) = match self.device_port {
            Some(p) => (p, None),
            None => {
                let ip: IpAddr = device_ip.parse().unwrap_or(local_ip);
                let r = PortReservation::new(ip)?;
                (r.port(), Some(r))
            }
        };
        Ok((
            DeviceEndpoint {
                server_id: self
                    .server_id
                    .clone()
                    .unwrap_or_else(|| local_ip.to_string()),
                device_id: self.device_id.unwrap_or(device_id.max(0) as u32),
                device_ip,
                device_port,
            },
            reservation,
        ))
    }
}

/// A TCP port kept out of the kernel's ephemeral pool: a socket bound with
/// `SO_REUSEADDR` (not listening), so the HCCL communicator can still bind and
/// listen on the port. Dropped once the communicator exists.
#[derive(Debug)]
pub struct PortReservation {
    _fd: OwnedFd,
    port: u16,
}

impl PortReservation {
    /// Reserves a free port on `ip` (or, when `ip` is not a local address, on
    /// the wildcard address of its family).
    pub fn new(ip: IpAddr) -> Result<PortReservation> {
        match Self::bind(ip) {
            Ok(r) => Ok(r),
            Err(_) => {
                let any = match ip {
                    IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                    IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                };
                Self::bind(any).map_err(|e| {
                    err!(
                        LinkFailed,
                        "cannot reserve a device port on {ip} or {any}: {e}"
                    )
                })
            }
        }
    }

    fn bind(ip: IpAddr) -> std::io::Result<PortReservation> {
        let family = if ip.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // SAFETY: plain socket creation; the fd is owned below.
        let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: valid fd and option buffer.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_REUSEADDR,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let (storage, len) = sockaddr(SocketAddr::new(ip, 0));
        // SAFETY: `storage` holds a valid sockaddr of `len` bytes.
        if unsafe { libc::bind(fd.as_raw_fd(), &storage as *const _ as *const _, len) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: zeroed sockaddr_storage is a valid out-buffer.
        let mut out: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut out_len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: valid fd and out-buffer.
        if unsafe { libc::getsockname(fd.as_raw_fd(), &mut out as *mut _ as *mut _, &mut out_len) }
            != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let port = match i32::from(out.ss_family) {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            libc::AF_INET => unsafe {
                u16::from_be((*(&out as *const _ as *const libc::sockaddr_in)).sin_port)
            },
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            _ => unsafe {
                u16::from_be((*(&out as *const _ as *const libc::sockaddr_in6)).sin6_port)
            },
        };
        Ok(PortReservation { _fd: fd, port })
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large enough for sockaddr_in.
            let p = unsafe { &mut *(&mut s as *mut _ as *mut libc::sockaddr_in) };
            p.sin_family = libc::AF_INET as libc::sa_family_t;
            p.sin_port = v4.port().to_be();
            p.sin_addr = libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            };
            (
                s,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_storage is large enough for sockaddr_in6.
            let p = unsafe { &mut *(&mut s as *mut _ as *mut libc::sockaddr_in6) };
            p.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            p.sin6_port = v6.port().to_be();
            p.sin6_addr = libc::in6_addr {
                s6_addr: v6.ip().octets(),
            };
            p.sin6_scope_id = v6.scope_id();
            (
                s,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

/// The HCCL rank table (version 1.0) of a two-rank communicator: `ranks[0]` is
/// rank 0 (the link's server), `ranks[1]` rank 1 (the client). Devices with the
/// same `server_id` share one `server_list` entry.
pub fn two_rank_table(ranks: [&DeviceEndpoint; 2]) -> String {
    let mut servers: Vec<(String, Vec<Value>)> = Vec::new();
    for (rank, ep) in ranks.iter().enumerate() {
        let dev = json!({
            "device_id": ep.device_id.to_string(),
            "device_ip": ep.device_ip,
            "device_port": ep.device_port.to_string(),
            "rank_id": rank.to_string(),
        });
        match servers.iter_mut().find(|(id, _)| *id == ep.server_id) {
            Some((_, devs)) => devs.push(dev),
            None => servers.push((ep.server_id.clone(), vec![dev])),
        }
    }
    let server_list: Vec<Value> = servers
        .into_iter()
        .map(|(id, devs)| json!({"server_id": id, "device": devs}))
        .collect();
    json!({
        "version": "1.0",
        "server_count": server_list.len().to_string(),
        "status": "completed",
        "server_list": server_list,
    })
    .to_string()
}

/// Endpoint fields a peer sent: checked before they reach a rank table.
pub fn check_peer(ep: &DeviceEndpoint) -> Result<()> {
    if ep.device_ip.parse::<IpAddr>().is_err() {
        bail!(
            LinkFailed,
            "peer sent device_ip {:?}, not an IP address",
            ep.device_ip
        );
    }
    if ep.device_port == 0 || ep.server_id.is_empty() || ep.server_id.len() > 255 {
        bail!(LinkFailed, "peer sent an invalid device endpoint {ep:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    #[test]
    fn local_comm_res_fields() {
        let d = LocalDevice::parse(Some(
            r#"{"version":"1.0","server_list":[{"server_id":"10.0.0.1","device":[{"device_id":"3","device_ip":"192.168.0.3","device_port":16667}]}]}"#,
        ))
        .unwrap();
        assert_eq!(d.server_id.as_deref(), Some("10.0.0.1"));
        assert_eq!(d.device_id, Some(3));
        assert_eq!(d.device_ip.as_deref(), Some("192.168.0.3"));
        assert_eq!(d.device_port, Some(16667));
        for empty in [None, Some(""), Some("  "), Some(r#"{"version":"1.3"}"#)] {
            assert_eq!(LocalDevice::parse(empty).unwrap(), LocalDevice::default());
        }
        for bad in [
            r#"{"version":"1.0","server_list":[]}"#,
            r#"{"version":"1.0","server_list":[{"device":[]}]}"#,
            r#"{"version":"1.0","server_list":[{"device":[{"device_ip":"nope"}]}]}"#,
            r#"{"version":"1.0","server_list":[{"device":[{"device_port":"70000"}]}]}"#,
            r#"{"version":"1.0","server_list":[{"device":[{"device_id":true}]}]}"#,
        ] {
            let e = LocalDevice::parse(Some(bad)).unwrap_err();
            assert_eq!(e.status, Status::ParamInvalid, "{bad}");
        }
    }

    #[test]
    fn derived_endpoint_reserves_a_port() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (ep, r) = LocalDevice::default().endpoint(2, ip).unwrap();
        let r = r.expect("a reservation");
        assert_eq!(ep.device_ip, "127.0.0.1");
        assert_eq!(ep.server_id, "127.0.0.1");
        assert_eq!(ep.device_id, 2);
        assert_eq!(ep.device_port, r.port());
        // The communicator can still listen on the reserved port (SO_REUSEADDR) …
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        assert_ne!(l.local_addr().unwrap().port(), r.port());
        let (ep2, r2) = LocalDevice::default().endpoint(0, ip).unwrap();
        assert_ne!(ep2.device_port, ep.device_port);
        drop((r2, l));
        // … and a fixed port from llm.LocalCommRes needs no reservation.
        let fixed = LocalDevice {
            device_port: Some(16666),
            device_ip: Some("10.1.1.1".into()),
            ..LocalDevice::default()
        };
        let (ep, r) = fixed.endpoint(0, ip).unwrap();
        assert!(r.is_none());
        assert_eq!((ep.device_ip.as_str(), ep.device_port), ("10.1.1.1", 16666));
    }

    #[test]
    fn table_groups_by_server() {
        let a = DeviceEndpoint {
            server_id: "10.0.0.1".into(),
            device_id: 0,
            device_ip: "192.168.0.1".into(),
            device_port: 1000,
        };
        let mut b = a.clone();
        b.device_id = 1;
        b.device_port = 1001;
        let one: Value = serde_json::from_str(&two_rank_table([&a, &b])).unwrap();
        assert_eq!(one["server_count"], "1");
        assert_eq!(one["server_list"][0]["device"][1]["rank_id"], "1");
        assert_eq!(one["server_list"][0]["device"][1]["device_port"], "1001");
        b.server_id = "10.0.0.2".into();
        let two: Value = serde_json::from_str(&two_rank_table([&a, &b])).unwrap();
        assert_eq!(two["server_count"], "2");
        assert_eq!(two["server_list"][1]["server_id"], "10.0.0.2");
        assert_eq!(two["server_list"][1]["device"][0]["rank_id"], "1");
        assert!(check_peer(&a).is_ok());
        b.device_ip = "x".into();
        assert_eq!(check_peer(&b).unwrap_err().status, Status::LinkFailed);
    }
}
