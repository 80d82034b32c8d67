//! The HCCL rank table given to `link` (spec §6) and the TCP control endpoint
//! of each member on the host backend.
//!
//! Accepted shape (unknown fields are ignored, e.g. `server_id`,
//! `super_device_id`, `super_pod_list`):
//!
//! ```json
//! {"version": "1.0", "server_count": "1", "status": "completed",
//!  "server_list": [{"server_id": "node0", "host_ip": "127.0.0.1",
//!    "device": [{"device_id": "0", "device_ip": "127.0.0.1", "rank_id": "0",
//!                "host_port": "26001"}]}]}
//! ```
//!
//! Integers may be JSON strings of digits (as HCCL writes them) or JSON
//! numbers. A member's endpoint is `IP:port` with IP = the server's `host_ip`
//! if present, else the device's `device_ip`; port = the device's `host_port`
//! if present, else (host backend only) its `device_port`, else (host backend
//! only) the default port [`DEFAULT_DEVICE_PORT`], so a table written as the
//! samples write it (no ports) works. On the acl backend `device_ip` /
//! `device_port` are the member's HCCL endpoint (the shared communicator
//! listens there), so `host_port` is required.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use crate::status::Result;
use crate::transport::wire::DeviceEndpoint;
use crate::{bail, err};

/// Port of a member whose device entry gives none (host backend): 16666, the
/// device NIC's documented default listen port on Atlas A2/A3 (HIXL's
/// `comm_resource_config.listen_port` documentation). `llmdd.RankTableDefaultPort`
/// changes it, e.g. for several processes on one host.
pub const DEFAULT_DEVICE_PORT: u16 = 16666;

/// Longest rank table accepted (bytes).
const MAX_TABLE_BYTES: usize = 1 << 20;

/// One `device[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// `device_id`: the device (NPU) number on its server.
    pub device_id: u64,
    /// `rank_id`: the member's rank, unique across the table.
    pub rank_id: u32,
    /// `device_ip`: the device NIC's address (the endpoint IP when the server has no `host_ip`).
    pub device_ip: Option<String>,
    /// Raw `device_port` / `host_port` values, checked when a member's
    /// endpoint is derived (entries of non-members are not our business).
    pub device_port: Option<Value>,
    /// Raw `host_port` value, checked likewise; the endpoint port when present.
    pub host_port: Option<Value>,
}

/// One `server_list[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    /// `server_id` (trimmed, when a non-empty string): names the server in device endpoints.
    pub server_id: Option<String>,
    /// `host_ip`: the server's address, the endpoint IP of its members when present.
    pub host_ip: Option<String>,
    /// The server's `device[]` entries.
    pub devices: Vec<Device>,
}

/// A parsed rank table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankTable {
    /// `version`: a non-empty string, not otherwise interpreted.
    pub version: String,
    /// The `server_list[]` entries.
    pub servers: Vec<Server>,
}

/// An unsigned integer written as a JSON number or a string of digits.
fn uint(v: &Value, what: &str) -> Result<u64> {
    let parsed = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse::<u64>().ok()
            } else {
                None
            }
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        err!(
            ParamInvalid,
            "rank table: {what} must be an unsigned integer or a string of digits (got {v})"
        )
    })
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a Value> {
    obj.get(key)
        .ok_or_else(|| err!(ParamInvalid, "rank table: {at} has no \"{key}\" field"))
}

/// An optional string field; present but not a string is an error, an empty
/// string counts as absent.
fn opt_str(obj: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(v) => bail!(
            ParamInvalid,
            "rank table: {at}.{key} must be a string (got {v})"
        ),
    }
}

fn opt_raw(obj: &Map<String, Value>, key: &str) -> Option<Value> {
    match obj.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(v) => Some(v.clone()),
    }
}

impl RankTable {
    /// Parses and checks a rank table: `version`, `server_count` (equal to the
    /// number of servers), `status` = "completed", a non-empty `server_list`
    /// whose `device[]` entries carry `device_id` and `rank_id`; rank ids unique.
    pub fn parse(json: &str) -> Result<RankTable> {
        if json.len() > MAX_TABLE_BYTES {
            bail!(
                ParamInvalid,
                "rank table is {} bytes; at most {MAX_TABLE_BYTES} are accepted",
                json.len()
            );
        }
        let v: Value = serde_json::from_str(json)
            .map_err(|e| err!(ParamInvalid, "rank table is not valid JSON: {e}"))?;
        let top = v
            .as_object()
            .ok_or_else(|| err!(ParamInvalid, "rank table must be a JSON object"))?;
        let version = match field(top, "version", "the table")? {
            Value::String(s) if !s.trim().is_empty() => s.trim().to_string(),
            Value::Number(n) => n.to_string(),
            other => bail!(
                ParamInvalid,
                "rank table: \"version\" must be a non-empty string (got {other})"
            ),
        };
        let server_count = uint(field(top, "server_count", "the table")?, "server_count")?;
        match field(top, "status", "the table")? {
            Value::String(s) if s == "completed" => {}
            other => bail!(
                ParamInvalid,
                "rank table: \"status\" must be \"completed\" (got {other})"
            ),
        }
        let list = field(top, "server_list", "the table")?
            .as_array()
            .ok_or_else(|| err!(ParamInvalid, "rank table: \"server_list\" must be an array"))?;
        if list.is_empty() {
            bail!(ParamInvalid, "rank table: \"server_list\" is empty");
        }
        if server_count != list.len() as u64 {
            bail!(
                ParamInvalid,
                "rank table: server_count is {server_count} but server_list has {} entries",
                list.len()
            );
        }
        let mut servers = Vec::with_capacity(list.len());
        let mut seen = std::collections::HashSet::new();
        for (si, s) in list.iter().enumerate() {
            let at = format!("server_list[{si}]");
            let so = s
                .as_object()
                .ok_or_else(|| err!(ParamInvalid, "rank table: {at} must be an object"))?;
            let host_ip = opt_str(so, "host_ip", &at)?;
            let server_id = match so.get("server_id") {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                _ => None,
            };
            let devs = field(so, "device", &at)?
                .as_array()
                .ok_or_else(|| err!(ParamInvalid, "rank table: {at}.device must be an array"))?;
            let mut devices = Vec::with_capacity(devs.len());
            for (di, d) in devs.iter().enumerate() {
                let at = format!("{at}.device[{di}]");
                let dobj = d
                    .as_object()
                    .ok_or_else(|| err!(ParamInvalid, "rank table: {at} must be an object"))?;
                let device_id = uint(field(dobj, "device_id", &at)?, &format!("{at}.device_id"))?;
                let rank = uint(field(dobj, "rank_id", &at)?, &format!("{at}.rank_id"))?;
                let rank_id = u32::try_from(rank).map_err(|_| {
                    err!(
                        ParamInvalid,
                        "rank table: {at}.rank_id {rank} is out of range"
                    )
                })?;
                if !seen.insert(rank_id) {
                    bail!(
                        ParamInvalid,
                        "rank table: rank_id {rank_id} appears more than once"
                    );
                }
                devices.push(Device {
                    device_id,
                    rank_id,
                    device_ip: opt_str(dobj, "device_ip", &at)?,
                    device_port: opt_raw(dobj, "device_port"),
                    host_port: opt_raw(dobj, "host_port"),
                });
            }
            servers.push(Server {
                server_id,
                host_ip,
                devices,
            });
        }
        Ok(RankTable { version, servers })
    }

    /// The server and device entries of `rank`, if the table has it.
    pub fn find(&self, rank: u32) -> Option<(&Server, &Device)> {
        self.servers
            .iter()
            .find_map(|s| s.devices.iter().find(|d| d.rank_id == rank).map(|d| (s, d)))
    }

    /// The TCP control endpoint of `rank` (module docs). `acl`: the acl
    /// backend, where `device_port` is HCCL's and `host_port` is required.
    /// `default_port`: the port of a member without `host_port`/`device_port`
    /// (host backend).
    pub fn endpoint(&self, rank: u32, acl: bool, default_port: u16) -> Result<SocketAddr> {
        let Some((server, dev)) = self.find(rank) else {
            bail!(
                ParamInvalid,
                "rank {rank} does not appear as a rank_id in the rank table"
            );
        };
        let (ip_text, ip_field) = match (&server.host_ip, &dev.device_ip) {
            (Some(h), _) => (h, "host_ip"),
            (None, Some(d)) => (d, "device_ip"),
            (None, None) => bail!(
                ParamInvalid,
                "rank {rank} has no IP in the rank table (needs the server's host_ip or the device's device_ip)"
            ),
        };
        let ip: IpAddr = ip_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                err!(
                    ParamInvalid,
                    "rank {rank}: {ip_field} {ip_text:?} is not an IPv4 or IPv6 literal"
                )
            })?;
        if ip.is_unspecified() {
            bail!(
                ParamInvalid,
                "rank {rank}: {ip_field} {ip} is unspecified; give the address peers can reach"
            );
        }
        let (raw, port_field) = match (&dev.host_port, &dev.device_port) {
            (Some(p), _) => (p, "host_port"),
            (None, _) if acl => bail!(
                ParamInvalid,
                "rank {rank} has no port in the rank table (the acl backend needs the device's host_port: device_ip/device_port are its HCCL endpoint)"
            ),
            (None, Some(p)) => (p, "device_port"),
            (None, None) => return Ok(SocketAddr::new(ip, default_port)),
        };
        let port = uint(raw, &format!("rank {rank}'s {port_field}"))?;
        if port == 0 || port > u64::from(u16::MAX) {
            bail!(
                ParamInvalid,
                "rank {rank}: {port_field} {port} is not a port number in 1..=65535"
            );
        }
        Ok(SocketAddr::new(ip, port as u16))
    }

    /// The HCCL endpoint of `rank` (acl backend): its `server_list` entry's
    /// `server_id` (or host_ip), `device_id`, `device_ip` and `device_port`,
    /// all required. Errors: `ParamInvalid` naming the rank and the field.
    pub fn device_endpoint(&self, rank: u32) -> Result<DeviceEndpoint> {
        let Some((server, dev)) = self.find(rank) else {
            bail!(
                ParamInvalid,
                "rank {rank} does not appear as a rank_id in the rank table"
            );
        };
        let Some(ip) = &dev.device_ip else {
            bail!(
                ParamInvalid,
                "rank {rank} has no device_ip in the rank table (required on the acl backend)"
            );
        };
        if ip.parse::<IpAddr>().is_err() {
            bail!(
                ParamInvalid,
                "rank {rank}: device_ip {ip:?} is not an IPv4 or IPv6 literal"
            );
        }
        let Some(raw) = &dev.device_port else {
            bail!(
                ParamInvalid,
                "rank {rank} has no device_port in the rank table (required on the acl backend)"
            );
        };
        let port = uint(raw, &format!("rank {rank}'s device_port"))?;
        if port == 0 || port > u64::from(u16::MAX) {
            bail!(
                ParamInvalid,
                "rank {rank}: device_port {port} is not a port number in 1..=65535"
            );
        }
        let device_id = u32::try_from(dev.device_id).map_err(|_| {
            err!(
                ParamInvalid,
                "rank {rank}: device_id {} is out of range",
                dev.device_id
            )
        })?;
        Ok(DeviceEndpoint {
            server_id: server
                .server_id
                .clone()
                .or_else(|| server.host_ip.clone())
                .unwrap_or_else(|| ip.clone()),
            device_id,
            device_ip: ip.clone(),
            device_port: port as u16,
            ..DeviceEndpoint::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    fn table(devices: &[(&str, &str)]) -> String {
        // (rank_id, extra fields) on one server with host_ip 127.0.0.1
        let devs: Vec<String> = devices
            .iter()
            .map(|(r, extra)| format!(r#"{{"device_id":"0","rank_id":"{r}"{extra}}}"#))
            .collect();
        format!(
            r#"{{"version":"1.0","server_count":"1","status":"completed","server_list":[{{"server_id":"s","host_ip":"127.0.0.1","device":[{}]}}]}}"#,
            devs.join(",")
        )
    }

    fn perr(json: &str) -> String {
        let e = RankTable::parse(json).unwrap_err();
        assert_eq!(e.status, Status::ParamInvalid);
        e.message
    }

    #[test]
    fn parses_hccl_strings_and_numbers() {
        let t = RankTable::parse(
            r#"{"version":"1.0","server_count":"2","status":"completed","server_list":[
                {"server_id":"a","device":[{"device_id":"0","device_ip":"10.0.0.1","rank_id":"0","device_port":"16666"}]},
                {"server_id":"b","host_ip":"192.168.1.2","device":[{"device_id":1,"device_ip":"10.0.0.2","rank_id":1,"host_port":26001,"device_port":"16667"}]}],
              "super_pod_list":[]}"#,
        )
        .unwrap();
        assert_eq!(t.version, "1.0");
        assert_eq!(t.servers.len(), 2);
        assert_eq!(t.servers[1].devices[0].device_id, 1);
        // device_ip + device_port when there is no host_ip / host_port
        assert_eq!(
            t.endpoint(0, false, DEFAULT_DEVICE_PORT).unwrap(),
            "10.0.0.1:16666".parse().unwrap()
        );
        // host_ip and host_port win
        assert_eq!(
            t.endpoint(1, false, DEFAULT_DEVICE_PORT).unwrap(),
            "192.168.1.2:26001".parse().unwrap()
        );
    }

    #[test]
    fn ipv6_endpoint() {
        let t =
            RankTable::parse(&table(&[("0", r#","device_ip":"::1","host_port":"9""#)])).unwrap();
        assert_eq!(
            t.endpoint(0, false, DEFAULT_DEVICE_PORT).unwrap(),
            "127.0.0.1:9".parse().unwrap()
        );
        let j = r#"{"version":"1.2","server_count":"1","status":"completed","server_list":[{"device":[{"device_id":"0","device_ip":"[::1]","rank_id":"3","device_port":"7"}]}]}"#;
        let t = RankTable::parse(j).unwrap();
        assert_eq!(
            t.endpoint(3, false, DEFAULT_DEVICE_PORT).unwrap(),
            "[::1]:7".parse().unwrap()
        );
    }

    #[test]
    fn malformed_tables() {
        assert!(perr("{").contains("not valid JSON"));
        assert!(perr("[1]").contains("JSON object"));
        assert!(
            perr(r#"{"server_count":"1","status":"completed","server_list":[]}"#)
                .contains("\"version\"")
        );
        assert!(
            perr(r#"{"version":"1.0","status":"completed","server_list":[]}"#)
                .contains("\"server_count\"")
        );
        assert!(
            perr(r#"{"version":"1.0","server_count":"1","server_list":[]}"#).contains("\"status\"")
        );
        assert!(perr(
            r#"{"version":"1.0","server_count":"1","status":"pending","server_list":[]}"#
        )
        .contains("completed"));
        assert!(
            perr(r#"{"version":"1.0","server_count":"1","status":"completed"}"#)
                .contains("\"server_list\"")
        );
        assert!(perr(
            r#"{"version":"1.0","server_count":"0","status":"completed","server_list":[]}"#
        )
        .contains("empty"));
        assert!(perr(
            r#"{"version":"1.0","server_count":"2","status":"completed","server_list":[{"device":[]}]}"#
        )
        .contains("server_count is 2"));
        assert!(perr(
            r#"{"version":"1.0","server_count":"x","status":"completed","server_list":[{"device":[]}]}"#
        )
        .contains("server_count must be an unsigned integer"));
        assert!(perr(
            r#"{"version":"1.0","server_count":"1","status":"completed","server_list":[{}]}"#
        )
        .contains("server_list[0] has no \"device\""));
        assert!(perr(&table(&[("-1", "")])).contains("rank_id must be an unsigned integer"));
        assert!(perr(&table(&[("4294967296", "")])).contains("out of range"));
        assert!(perr(&table(&[("0", ""), ("0", "")])).contains("more than once"));
        let no_dev_id = table(&[("0", "")]).replace(r#""device_id":"0","#, "");
        assert!(perr(&no_dev_id).contains("has no \"device_id\""));
        let bad_ip_type = table(&[("0", r#","device_ip":5"#)]);
        assert!(perr(&bad_ip_type).contains("device_ip must be a string"));
    }

    #[test]
    fn endpoint_errors_name_rank_and_field() {
        let t = RankTable::parse(&table(&[("0", ""), ("1", r#","host_port":"0""#)])).unwrap();
        let e = t.endpoint(1, false, DEFAULT_DEVICE_PORT).unwrap_err();
        assert!(e.message.contains("rank 1: host_port 0"), "{}", e.message);
        let e = t.endpoint(7, false, DEFAULT_DEVICE_PORT).unwrap_err();
        assert!(
            e.message.contains("rank 7 does not appear"),
            "{}",
            e.message
        );
        // No host_ip and no device_ip.
        let j = table(&[("2", r#","device_port":"5""#)]).replace(r#""host_ip":"127.0.0.1","#, "");
        let t = RankTable::parse(&j).unwrap();
        let e = t.endpoint(2, false, DEFAULT_DEVICE_PORT).unwrap_err();
        assert!(e.message.contains("rank 2 has no IP"), "{}", e.message);
        // Bad IP literal, bad port text, port too large, unspecified IP.
        let j = table(&[("0", r#","host_port":"5""#)]).replace("127.0.0.1", "not-an-ip");
        let e = RankTable::parse(&j)
            .unwrap()
            .endpoint(0, false, DEFAULT_DEVICE_PORT)
            .unwrap_err();
        assert!(
            e.message.contains("rank 0: host_ip \"not-an-ip\""),
            "{}",
            e.message
        );
        let t = RankTable::parse(&table(&[("0", r#","device_port":"http""#)])).unwrap();
        assert!(t
            .endpoint(0, false, DEFAULT_DEVICE_PORT)
            .unwrap_err()
            .message
            .contains("rank 0's device_port must be"));
        let t = RankTable::parse(&table(&[("0", r#","device_port":70000"#)])).unwrap();
        assert!(t
            .endpoint(0, false, DEFAULT_DEVICE_PORT)
            .unwrap_err()
            .message
            .contains("70000"));
        let j = table(&[("0", r#","host_port":"5""#)]).replace("127.0.0.1", "0.0.0.0");
        let e = RankTable::parse(&j)
            .unwrap()
            .endpoint(0, false, DEFAULT_DEVICE_PORT)
            .unwrap_err();
        assert!(e.message.contains("unspecified"), "{}", e.message);
        // Empty strings count as absent: device_ip is used when host_ip is "".
        let j = table(&[(
            "0",
            r#","device_ip":"127.0.0.2","host_port":"","device_port":"8""#,
        )])
        .replace(r#""host_ip":"127.0.0.1""#, r#""host_ip":"""#);
        let t = RankTable::parse(&j).unwrap();
        assert_eq!(
            t.endpoint(0, false, DEFAULT_DEVICE_PORT).unwrap(),
            "127.0.0.2:8".parse().unwrap()
        );
    }

    #[test]
    fn acl_needs_host_port_and_device_endpoint() {
        let t = RankTable::parse(&table(&[
            (
                "0",
                r#","device_ip":"127.0.0.1","device_port":"7000","host_port":"26000""#,
            ),
            ("1", r#","device_ip":"127.0.0.1","device_port":"7001""#),
            ("2", r#","host_port":"26002""#),
        ]))
        .unwrap();
        assert_eq!(
            t.endpoint(0, true, DEFAULT_DEVICE_PORT).unwrap(),
            "127.0.0.1:26000".parse().unwrap()
        );
        // No device_port fallback on acl; the host backend keeps it.
        let e = t.endpoint(1, true, DEFAULT_DEVICE_PORT).unwrap_err();
        assert_eq!(e.status, Status::ParamInvalid);
        assert!(
            e.message.contains("rank 1 has no port")
                && e.message.contains("needs the device's host_port"),
            "{}",
            e.message
        );
        assert_eq!(
            t.endpoint(1, false, DEFAULT_DEVICE_PORT).unwrap(),
            "127.0.0.1:7001".parse().unwrap()
        );
        let ep = t.device_endpoint(0).unwrap();
        assert_eq!((ep.device_ip.as_str(), ep.device_port), ("127.0.0.1", 7000));
        assert_eq!(ep.server_id, "s");
        let e = t.device_endpoint(2).unwrap_err();
        assert!(
            e.message.contains("rank 2 has no device_ip"),
            "{}",
            e.message
        );
    }

    #[test]
    fn no_port_means_the_default_device_port() {
        // The samples' tables carry no ports at all.
        let t =
            RankTable::parse(&table(&[("0", ""), ("1", r#","device_ip":"10.0.0.2""#)])).unwrap();
        assert_eq!(
            t.endpoint(0, false, DEFAULT_DEVICE_PORT).unwrap(),
            "127.0.0.1:16666".parse().unwrap()
        );
        assert_eq!(
            t.endpoint(1, false, 4000).unwrap(),
            "127.0.0.1:4000".parse().unwrap()
        );
        // The acl backend still needs host_port (device_port is HCCL's).
        let e = t.endpoint(0, true, DEFAULT_DEVICE_PORT).unwrap_err();
        assert!(e.message.contains("rank 0 has no port"), "{}", e.message);
    }
}
