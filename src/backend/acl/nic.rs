//! The device NIC address of an Ascend device, as HCCL's rank table needs it
//! (`device_ip`): the RoCE address configured with `hccn_tool`, which is not
//! the host's IP. Looked up as HIXL and LMCache-Ascend do: `address_<phy>` in
//! `/etc/hccn.conf`, else `hccn_tool -i <phy> -ip -g`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Default location of the NIC configuration file.
pub const HCCN_CONF: &str = "/etc/hccn.conf";
/// Environment variable naming another file (when `llmdd.HccnConf` is not given).
pub const HCCN_CONF_ENV: &str = "LLMDD_HCCN_CONF";
/// Where `hccn_tool` lives in a driver install, besides the `PATH`.
const HCCN_TOOL_PATHS: &[&str] = &[
    "/usr/local/Ascend/driver/tools/hccn_tool",
    "/usr/local/bin/hccn_tool",
];
/// Longest wait for `hccn_tool`.
const HCCN_TOOL_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the NIC address came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NicSource {
    /// An `address_<phy>` line of this file.
    HccnConf(PathBuf),
    /// The output of `hccn_tool` at this path.
    HccnTool(PathBuf),
}

impl std::fmt::Display for NicSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NicSource::HccnConf(p) => write!(f, "{}", p.display()),
            NicSource::HccnTool(p) => write!(f, "{} -ip -g", p.display()),
        }
    }
}

/// `address_<phy>` of an hccn.conf text (`key=value` lines, `#` comments).
pub fn parse_hccn_conf(text: &str, phy: u32) -> Option<IpAddr> {
    let key = format!("address_{phy}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// The address in `hccn_tool -i N -ip -g` output ("ipaddr:192.168.1.10").
pub fn parse_hccn_tool(out: &str) -> Option<IpAddr> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("ipaddr"))
        .filter_map(|rest| rest.trim_start_matches([':', '=', ' ']).trim().parse().ok())
        .next()
}

/// Runs `tool -i phy -ip -g`, waiting at most [`HCCN_TOOL_TIMEOUT`].
fn run_hccn_tool(tool: &Path, phy: u32) -> std::result::Result<IpAddr, String> {
    let mut child = Command::new(tool)
        .args(["-i", &phy.to_string(), "-ip", "-g"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    let end = Instant::now() + HCCN_TOOL_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{} did not answer in time", tool.display()));
            }
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_hccn_tool(&text).ok_or_else(|| format!("{} printed no ipaddr", tool.display()))
}

/// The NIC address of physical device `phy`. `conf`: the hccn.conf to read and
/// whether it was named explicitly (option or environment variable); only a
/// default location falls back to `hccn_tool`. Errors: a message listing what
/// was tried (the caller turns it into a status).
pub fn nic_ip(
    phy: u32,
    conf: &Path,
    explicit: bool,
) -> std::result::Result<(IpAddr, NicSource), String> {
    let mut tried = Vec::new();
    match std::fs::read_to_string(conf) {
        Ok(text) => match parse_hccn_conf(&text, phy) {
            Some(ip) => return Ok((ip, NicSource::HccnConf(conf.to_path_buf()))),
            None => tried.push(format!("{} has no address_{phy}", conf.display())),
        },
        Err(e) => tried.push(format!("{}: {e}", conf.display())),
    }
    if !explicit {
        let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("hccn_tool"))
                .collect::<Vec<_>>()
        });
        let tools: Vec<PathBuf> = on_path
            .chain(HCCN_TOOL_PATHS.iter().map(PathBuf::from))
            .filter(|p| p.is_file())
            .collect();
        if tools.is_empty() {
            tried.push("no hccn_tool on PATH or in /usr/local/Ascend/driver/tools".to_string());
        }
        for t in tools {
            match run_hccn_tool(&t, phy) {
                Ok(ip) => return Ok((ip, NicSource::HccnTool(t))),
                Err(e) => tried.push(e),
            }
        }
    }
    Err(tried.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hccn_conf_lines() {
        let text =
            "# nic\naddress_0=192.168.100.10\nnetmask_0=255.255.255.0\n address_3 = 10.0.0.4 \n";
        assert_eq!(
            parse_hccn_conf(text, 0),
            Some("192.168.100.10".parse().unwrap())
        );
        assert_eq!(parse_hccn_conf(text, 3), Some("10.0.0.4".parse().unwrap()));
        assert_eq!(parse_hccn_conf(text, 1), None);
        assert_eq!(parse_hccn_conf("address_1=nope", 1), None);
        assert_eq!(parse_hccn_conf("#address_1=1.2.3.4", 1), None);
    }

    #[test]
    fn hccn_tool_output() {
        assert_eq!(
            parse_hccn_tool("ipaddr:192.168.1.10\nnetmask:255.255.255.0\n"),
            Some("192.168.1.10".parse().unwrap())
        );
        assert_eq!(parse_hccn_tool("error: device 9 not found"), None);
    }

    #[test]
    fn explicit_file_does_not_fall_back() {
        let dir = std::env::temp_dir().join(format!("llmdd-hccn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("hccn.conf");
        std::fs::write(&f, "address_2=192.0.2.3\n").unwrap();
        let (ip, src) = nic_ip(2, &f, true).unwrap();
        assert_eq!(ip, "192.0.2.3".parse::<IpAddr>().unwrap());
        assert_eq!(src, NicSource::HccnConf(f.clone()));
        let e = nic_ip(5, &f, true).unwrap_err();
        assert!(e.contains("no address_5"), "{e}");
        assert!(!e.contains("hccn_tool"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
