//! Device endpoints of the acl backend: where a peer's HCCL communicator reaches
//! this instance's device, and the two-rank table built from both ends.
//!
//! Derivation (docs/ascend.md, "Device endpoint"): every field that
//! `llm.LocalCommRes` (version 1.0 / 1.2) gives is used as is; the others come
//! from the device itself ([`DeviceIdentity`]):
//! - `device_id`: the **physical** id of `llm.DeviceId`
//!   (`aclrtGetPhyDevIdByLogicDevId`; they differ under `ASCEND_RT_VISIBLE_DEVICES`);
//! - `device_ip`: the device NIC's address (`/etc/hccn.conf`, else `hccn_tool`),
//!   never the host's IP; without one the link is refused;
//! - `device_port`: none, so HCCL uses its one default listener per device NIC
//!   (a port per link would open a new NIC listener and register every bound
//!   region again each time);
//! - `server_id`: the local IP of the link;
//! - on A3 (Ascend910_93xx): `super_device_id` and `super_pod_id`
//!   (`aclrtGetDeviceInfo`), which make the table version "1.2".

use std::net::IpAddr;

use serde_json::{json, Value};

use crate::backend::acl::nic::NicSource;
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
    /// `server_list[0].device[0].super_device_id` (1.2).
    pub super_device_id: Option<u32>,
    /// `super_pod_list[0].super_pod_id` (1.2).
    pub super_pod_id: Option<String>,
}

/// What the runtime says about this instance's device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// `llm.DeviceId`.
    pub logical_id: u32,
    /// Its physical id, when the runtime can tell.
    pub physical_id: Option<u32>,
    /// `aclrtGetSocName`.
    pub soc: Option<String>,
    /// A3 only: `ACL_DEV_ATTR_SUPER_POD_DEVICE_ID`.
    pub super_device_id: Option<u32>,
    /// A3 only: `ACL_DEV_ATTR_SUPER_POD_ID`.
    pub super_pod_id: Option<String>,
    /// The NIC address and where it came from, or why none was found.
    pub nic: std::result::Result<(IpAddr, NicSource), String>,
}

impl Default for DeviceIdentity {
    fn default() -> Self {
        DeviceIdentity {
            logical_id: 0,
            physical_id: None,
            soc: None,
            super_device_id: None,
            super_pod_id: None,
            nic: Err("not looked up".to_string()),
        }
    }
}

/// True for an A3 SoC (Ascend910_93xx: 9391, 9381, 9392, 9382, 9372, 9362),
/// whose rank tables need version 1.2 with super-pod fields.
pub fn is_a3_soc(soc: &str) -> bool {
    soc.starts_with("Ascend910_93")
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
        let super_pod_id = match v
            .get("super_pod_list")
            .and_then(|p| p.as_array())
            .and_then(|a| a.first())
        {
            Some(pod) => field::<String>(pod, "super_pod_id")?,
            None => None,
        };
        Ok(LocalDevice {
            server_id,
            device_id: field::<u32>(device, "device_id")?,
            device_ip,
            device_port,
            super_device_id: field::<u32>(device, "super_device_id")?,
            super_pod_id,
        })
    }

    /// Checks the fields that name the device against what the runtime says
    /// (as HIXL does): a `device_id` must be the physical id.
    /// Errors: `ParamInvalid`.
    pub fn check(&self, id: &DeviceIdentity) -> Result<()> {
        if let (Some(given), Some(phy)) = (self.device_id, id.physical_id) {
            if given != phy {
                bail!(
                    ParamInvalid,
                    "llm.LocalCommRes names device_id {given}, but llm.DeviceId {} is physical device {phy}; \
                     a rank table's device_id is the physical id (they differ when ASCEND_RT_VISIBLE_DEVICES remaps devices)",
                    id.logical_id
                );
            }
        }
        Ok(())
    }

    /// This instance's endpoint for one link whose local IP is `local_ip`.
    /// Errors: `ParamInvalid` when neither `llm.LocalCommRes` nor the device
    /// gives the physical id or the NIC address.
    pub fn endpoint(&self, id: &DeviceIdentity, local_ip: IpAddr) -> Result<DeviceEndpoint> {
        let Some(device_id) = self.device_id.or(id.physical_id) else {
            bail!(
                ParamInvalid,
                "the physical id of device {} is unknown (this CANN lacks aclrtGetPhyDevIdByLogicDevId and \
                 ASCEND_RT_VISIBLE_DEVICES remaps devices); give it as device_id in llm.LocalCommRes",
                id.logical_id
            );
        };
        let device_ip = match (&self.device_ip, &id.nic) {
            (Some(ip), _) => ip.clone(),
            (None, Ok((ip, _))) => ip.to_string(),
            (None, Err(why)) => bail!(
                ParamInvalid,
                "no NIC address for device {device_id} ({why}); HCCL needs the device NIC's IP, not the host's: \
                 configure it with hccn_tool (it lands in /etc/hccn.conf), name another file with \
                 llmdd.HccnConf, or give device_ip in llm.LocalCommRes"
            ),
        };
        let (super_device_id, super_pod_id) = match (self.super_device_id, &self.super_pod_id) {
            (Some(d), Some(p)) => (Some(d), Some(p.clone())),
            _ => (id.super_device_id, id.super_pod_id.clone()),
        };
        Ok(DeviceEndpoint {
            server_id: self
                .server_id
                .clone()
                .unwrap_or_else(|| local_ip.to_string()),
            device_id,
            device_ip,
            device_port: self.device_port.unwrap_or(0),
            super_device_id,
            super_pod_id,
        })
    }
}

/// True if the two endpoints share a server (A2) or a super pod (A3): HCCL then
/// connects them over HCCS, which reaches no host memory, unless
/// `HCCL_INTRA_ROCE_ENABLE=1` routes them over RDMA.
pub fn intra_server(a: &DeviceEndpoint, b: &DeviceEndpoint) -> bool {
    match (&a.super_pod_id, &b.super_pod_id) {
        (Some(x), Some(y)) => x == y,
        _ => a.server_id == b.server_id,
    }
}

/// `HCCL_INTRA_ROCE_ENABLE=1`: HCCL uses RDMA within a server too.
pub fn intra_roce_enabled() -> bool {
    std::env::var("HCCL_INTRA_ROCE_ENABLE").is_ok_and(|v| v.trim() == "1")
}

/// The HCCL rank table of a two-rank communicator: `ranks[0]` is rank 0 (the
/// link's server), `ranks[1]` rank 1 (the client). Devices with the same
/// `server_id` share one `server_list` entry; `device_port` appears only when
/// set. Version "1.2" with `super_device_id` and `super_pod_list` when both
/// ends have super-pod ids (A3), else "1.0".
pub fn two_rank_table(ranks: [&DeviceEndpoint; 2]) -> String {
    let v12 = ranks
        .iter()
        .all(|e| e.super_device_id.is_some() && e.super_pod_id.is_some());
    let mut servers: Vec<(String, Vec<Value>)> = Vec::new();
    let mut pods: Vec<(String, Vec<String>)> = Vec::new();
    for (rank, ep) in ranks.iter().enumerate() {
        let mut dev = json!({
            "device_id": ep.device_id.to_string(),
            "device_ip": ep.device_ip,
            "rank_id": rank.to_string(),
        });
        if ep.device_port != 0 {
            dev["device_port"] = json!(ep.device_port.to_string());
        }
        if let (true, Some(sd), Some(pod)) = (v12, ep.super_device_id, &ep.super_pod_id) {
            dev["super_device_id"] = json!(sd.to_string());
            match pods.iter_mut().find(|(p, _)| p == pod) {
                Some((_, s)) if s.contains(&ep.server_id) => {}
                Some((_, s)) => s.push(ep.server_id.clone()),
                None => pods.push((pod.clone(), vec![ep.server_id.clone()])),
            }
        }
        match servers.iter_mut().find(|(id, _)| *id == ep.server_id) {
            Some((_, devs)) => devs.push(dev),
            None => servers.push((ep.server_id.clone(), vec![dev])),
        }
    }
    let server_list: Vec<Value> = servers
        .into_iter()
        .map(|(id, devs)| json!({"server_id": id, "device": devs}))
        .collect();
    let mut table = json!({
        "version": if v12 { "1.2" } else { "1.0" },
        "server_count": server_list.len().to_string(),
        "status": "completed",
        "server_list": server_list,
    });
    if v12 {
        table["super_pod_list"] = pods
            .into_iter()
            .map(|(pod, servers)| {
                json!({
                    "super_pod_id": pod,
                    "server_list": servers.iter().map(|s| json!({"server_id": s})).collect::<Vec<_>>(),
                })
            })
            .collect();
    }
    table.to_string()
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
    let pod_ok = match &ep.super_pod_id {
        Some(p) => !p.is_empty() && p.len() <= 127,
        None => true,
    };
    if ep.server_id.is_empty() || ep.server_id.len() > 255 || !pod_ok {
        bail!(LinkFailed, "peer sent an invalid device endpoint {ep:?}");
    }
    Ok(())
}

/// Refuses a link whose two ends name the same device of the same server:
/// HCCL rejects such a table ("device id repeat for one server").
pub fn check_distinct(a: &DeviceEndpoint, b: &DeviceEndpoint) -> Result<()> {
    if a.server_id == b.server_id && a.device_id == b.device_id {
        bail!(
            LinkFailed,
            "both ends of the link use device {} of server {}; HCCL needs two distinct devices \
             (give each instance its own llm.DeviceId)",
            a.device_id,
            a.server_id
        );
    }
    if a.device_ip == b.device_ip {
        bail!(
            LinkFailed,
            "both ends of the link name device_ip {}; each device has its own NIC address",
            a.device_ip
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    fn ident(phy: u32, nic: &str) -> DeviceIdentity {
        DeviceIdentity {
            logical_id: 0,
            physical_id: Some(phy),
            nic: Ok((
                nic.parse().unwrap(),
                NicSource::HccnConf("/etc/hccn.conf".into()),
            )),
            ..DeviceIdentity::default()
        }
    }

    #[test]
    fn local_comm_res_fields() {
        let d = LocalDevice::parse(Some(
            r#"{"version":"1.2","server_list":[{"server_id":"10.0.0.1","device":[{"device_id":"3","device_ip":"192.168.0.3","device_port":16667,"super_device_id":"19"}]}],"super_pod_list":[{"super_pod_id":"7","server_list":[{"server_id":"10.0.0.1"}]}]}"#,
        ))
        .unwrap();
        assert_eq!(d.server_id.as_deref(), Some("10.0.0.1"));
        assert_eq!(d.device_id, Some(3));
        assert_eq!(d.device_ip.as_deref(), Some("192.168.0.3"));
        assert_eq!(d.device_port, Some(16667));
        assert_eq!(d.super_device_id, Some(19));
        assert_eq!(d.super_pod_id.as_deref(), Some("7"));
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
    fn derived_endpoint_uses_the_device() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let ep = LocalDevice::default()
            .endpoint(&ident(5, "192.0.2.6"), ip)
            .unwrap();
        assert_eq!(ep.device_id, 5, "the physical id");
        assert_eq!(ep.device_ip, "192.0.2.6", "the NIC address, not the host's");
        assert_eq!(ep.server_id, "127.0.0.1");
        assert_eq!(ep.device_port, 0, "no port: HCCL's default listener");
        // No NIC address: refused, never the host IP.
        let mut none = ident(5, "192.0.2.6");
        none.nic = Err("/etc/hccn.conf: No such file".into());
        let e = LocalDevice::default().endpoint(&none, ip).unwrap_err();
        assert_eq!(e.status, Status::ParamInvalid);
        assert!(e.message.contains("not the host's"), "{e}");
        // Unknown physical id: refused unless llm.LocalCommRes names it.
        none.physical_id = None;
        none.nic = ident(0, "192.0.2.1").nic;
        assert!(LocalDevice::default().endpoint(&none, ip).is_err());
        let given = LocalDevice {
            device_id: Some(2),
            ..LocalDevice::default()
        };
        assert_eq!(given.endpoint(&none, ip).unwrap().device_id, 2);
        // A fixed port and IP from llm.LocalCommRes are used as given.
        let fixed = LocalDevice {
            device_port: Some(16666),
            device_ip: Some("10.1.1.1".into()),
            ..LocalDevice::default()
        };
        let ep = fixed.endpoint(&ident(0, "192.0.2.1"), ip).unwrap();
        assert_eq!((ep.device_ip.as_str(), ep.device_port), ("10.1.1.1", 16666));
        // A device_id that is not the physical one is refused.
        let wrong = LocalDevice {
            device_id: Some(0),
            ..LocalDevice::default()
        };
        let e = wrong.check(&ident(3, "192.0.2.4")).unwrap_err();
        assert!(e.message.contains("physical device 3"), "{e}");
    }

    #[test]
    fn table_groups_by_server_and_omits_ports() {
        let a = DeviceEndpoint {
            server_id: "10.0.0.1".into(),
            device_id: 0,
            device_ip: "192.168.0.1".into(),
            ..DeviceEndpoint::default()
        };
        let mut b = a.clone();
        b.device_id = 1;
        b.device_ip = "192.168.0.2".into();
        b.device_port = 1001;
        let one: Value = serde_json::from_str(&two_rank_table([&a, &b])).unwrap();
        assert_eq!(one["version"], "1.0");
        assert_eq!(one["server_count"], "1");
        assert_eq!(one["server_list"][0]["device"][1]["rank_id"], "1");
        assert_eq!(one["server_list"][0]["device"][1]["device_port"], "1001");
        assert!(one["server_list"][0]["device"][0]
            .get("device_port")
            .is_none());
        assert!(intra_server(&a, &b));
        b.server_id = "10.0.0.2".into();
        let two: Value = serde_json::from_str(&two_rank_table([&a, &b])).unwrap();
        assert_eq!(two["server_count"], "2");
        assert_eq!(two["server_list"][1]["server_id"], "10.0.0.2");
        assert_eq!(two["server_list"][1]["device"][0]["rank_id"], "1");
        assert!(!intra_server(&a, &b));
        assert!(check_peer(&a).is_ok());
        assert!(check_distinct(&a, &b).is_ok());
        let mut same = a.clone();
        same.device_ip = "192.168.0.9".into();
        assert_eq!(
            check_distinct(&a, &same).unwrap_err().status,
            Status::LinkFailed
        );
        b.device_ip = "x".into();
        assert_eq!(check_peer(&b).unwrap_err().status, Status::LinkFailed);
    }

    #[test]
    fn a3_tables_are_version_1_2() {
        assert!(is_a3_soc("Ascend910_9391") && !is_a3_soc("Ascend910B3"));
        let a = DeviceEndpoint {
            server_id: "10.0.0.1".into(),
            device_id: 0,
            device_ip: "192.168.0.1".into(),
            super_device_id: Some(0),
            super_pod_id: Some("7".into()),
            ..DeviceEndpoint::default()
        };
        let b = DeviceEndpoint {
            server_id: "10.0.0.2".into(),
            device_id: 0,
            device_ip: "192.168.0.2".into(),
            super_device_id: Some(16),
            super_pod_id: Some("7".into()),
            ..DeviceEndpoint::default()
        };
        let t: Value = serde_json::from_str(&two_rank_table([&a, &b])).unwrap();
        assert_eq!(t["version"], "1.2");
        assert_eq!(t["server_list"][1]["device"][0]["super_device_id"], "16");
        assert_eq!(t["super_pod_list"][0]["super_pod_id"], "7");
        assert_eq!(
            t["super_pod_list"][0]["server_list"][1]["server_id"],
            "10.0.0.2"
        );
        assert!(intra_server(&a, &b), "one super pod: HCCS");
        let mut c = b.clone();
        c.super_pod_id = None;
        let t: Value = serde_json::from_str(&two_rank_table([&a, &c])).unwrap();
        assert_eq!(t["version"], "1.0");
        assert!(t.get("super_pod_list").is_none());
    }
}
