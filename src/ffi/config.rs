//! The config builder mirroring Python's `LLMConfig`: setters validate their
//! value against the option schema (`datadist::options::schema`, the table
//! `init` parses with) and `llmdd_config_generate_options` emits the
//! documented option keys.

use std::collections::BTreeMap;
use std::ffi::{c_char, CString};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bail;
use crate::datadist::options::{self, schema};
use crate::ffi::boundary::{cstr, output, run};
use crate::ffi::handles::HandleTable;
use crate::ffi::types::llmdd_option_t;
use crate::status::Result;

// A handle of `CONFIGS` (`ffi::handles`): looked up, never read. (The doc
// comment below is the C header's, which stays as it was.)
/// Opaque option builder. Created by `llmdd_config_new`, owned by the caller,
/// released by `llmdd_config_free`. Not thread-safe: use from one thread at a time.
pub struct llmdd_config_t {
    _opaque: [u8; 0],
}

/// What a config builder holds.
struct Config {
    map: BTreeMap<String, String>,
    /// Strings and pairs handed out by `generate_options`.
    strings: Vec<CString>,
    pairs: Vec<llmdd_option_t>,
}

// SAFETY: the pairs' pointers point into this builder's own `strings`, which
// move with it; nothing else refers to them from Rust.
unsafe impl Send for Config {}

/// The live config builders, by handle.
static CONFIGS: HandleTable<Mutex<Config>, llmdd_config_t> = HandleTable::new();

fn cfg(p: *mut llmdd_config_t) -> Result<Arc<Mutex<Config>>> {
    CONFIGS.resolve(p, "config")
}

fn lock(c: &Mutex<Config>) -> MutexGuard<'_, Config> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

fn put(c: &mut Config, k: &str, v: String) {
    c.map.insert(k.to_string(), v);
    c.pairs.clear();
    c.strings.clear();
}

/// Creates an empty config builder in `*out`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_new(out: *mut *mut llmdd_config_t) -> u32 {
    run("llmdd_config_new", || {
        let o = output(out, "out")?;
        let Some(h) = CONFIGS.insert(Mutex::new(Config {
            map: BTreeMap::new(),
            strings: Vec::new(),
            pairs: Vec::new(),
        })) else {
            bail!(OutOfMemory, "too many live config builders");
        };
        *o = h;
        Ok(())
    })
}

// A dead (already freed) or foreign handle is a no-op too.
/// Frees a config builder (and the options it generated). NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_free(config: *mut llmdd_config_t) {
    if !config.is_null() {
        let _ = run("llmdd_config_free", || {
            drop(CONFIGS.remove(config));
            Ok(())
        });
    }
}

/// `device_id` (>= 0): emits `ge.exec.deviceId` and `ge.session_device_id`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_device_id(
    config: *mut llmdd_config_t,
    device_id: i32,
) -> u32 {
    run("llmdd_config_set_device_id", || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let spec = schema::spec("ge.exec.deviceId");
        if device_id < 0 || spec.violation(device_id as u64).is_some() {
            let (lo, _, _) = spec.range();
            bail!(ParamInvalid, "device_id must be >= {lo} (got {device_id})");
        }
        put(c, "ge.exec.deviceId", device_id.to_string());
        put(c, "ge.session_device_id", device_id.to_string());
        Ok(())
    })
}

/// `listen_ip_info` ("ip:port" or "[ipv6]:port"): emits `llm.listenIpInfo`;
/// the instance becomes a server.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_listen_ip_info(
    config: *mut llmdd_config_t,
    ip_port: *const c_char,
) -> u32 {
    run("llmdd_config_set_listen_ip_info", || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let v = cstr(ip_port, "ip_port")?;
        options::parse_endpoint("listen_ip_info", v)?;
        put(c, "llm.listenIpInfo", v.to_string());
        Ok(())
    })
}

/// `sync_kv_timeout` in ms (> 0): emits `llm.SyncKvCacheWaitTime`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_sync_kv_timeout(
    config: *mut llmdd_config_t,
    timeout_ms: i32,
) -> u32 {
    run("llmdd_config_set_sync_kv_timeout", || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let spec = schema::spec("llm.SyncKvCacheWaitTime");
        if timeout_ms < 0 || spec.violation(timeout_ms as u64).is_some() {
            let (lo, _, _) = spec.range();
            bail!(
                ParamInvalid,
                "sync_kv_timeout must be > {} ms (got {timeout_ms})",
                lo - 1
            );
        }
        put(c, "llm.SyncKvCacheWaitTime", timeout_ms.to_string());
        Ok(())
    })
}

unsafe fn flag(config: *mut llmdd_config_t, key: &'static str, v: bool, name: &str) -> u32 {
    run(name, || {
        let h = cfg(config)?;
        put(&mut lock(&h), key, if v { "1" } else { "0" }.into());
        Ok(())
    })
}

/// `enable_cache_manager`: emits `llm.EnableCacheManager` "1"/"0".
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_enable_cache_manager(
    config: *mut llmdd_config_t,
    enable: bool,
) -> u32 {
    flag(
        config,
        "llm.EnableCacheManager",
        enable,
        "llmdd_config_set_enable_cache_manager",
    )
}

/// `enable_remote_cache_accessible`: emits `llm.EnableRemoteCacheAccessible`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_enable_remote_cache_accessible(
    config: *mut llmdd_config_t,
    enable: bool,
) -> u32 {
    flag(
        config,
        "llm.EnableRemoteCacheAccessible",
        enable,
        "llmdd_config_set_enable_remote_cache_accessible",
    )
}

/// `enable_switch_role`: emits `llm.EnableSwitchRole` = "1" only when true
/// (accepted and ignored: switch_role is always allowed).
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_enable_switch_role(
    config: *mut llmdd_config_t,
    enable: bool,
) -> u32 {
    run("llmdd_config_set_enable_switch_role", || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        if enable {
            put(c, "llm.EnableSwitchRole", "1".into());
        } else {
            c.map.remove("llm.EnableSwitchRole");
            c.pairs.clear();
            c.strings.clear();
        }
        Ok(())
    })
}

unsafe fn string(
    config: *mut llmdd_config_t,
    key: &'static str,
    v: *const c_char,
    name: &str,
) -> u32 {
    run(name, || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let s = cstr(v, "value")?;
        let json = schema::spec(key).kind == schema::Kind::Json;
        if json && !s.trim().is_empty() && serde_json::from_str::<serde_json::Value>(s).is_err() {
            bail!(ParamInvalid, "value for {key} is not valid JSON");
        }
        put(c, key, s.to_string());
        Ok(())
    })
}

/// `local_comm_res` (JSON, may be ""): emits `llm.LocalCommRes` (even if empty).
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_local_comm_res(
    config: *mut llmdd_config_t,
    json: *const c_char,
) -> u32 {
    string(
        config,
        "llm.LocalCommRes",
        json,
        "llmdd_config_set_local_comm_res",
    )
}

/// `transfer_backend` (only "hixl"): emits `llm.TransferBackend`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_transfer_backend(
    config: *mut llmdd_config_t,
    backend: *const c_char,
) -> u32 {
    run("llmdd_config_set_transfer_backend", || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let s = cstr(backend, "backend")?;
        if !schema::spec("llm.TransferBackend").allows(s) {
            bail!(
                ParamInvalid,
                "transfer_backend supports only \"hixl\" (got {s:?})"
            );
        }
        put(c, "llm.TransferBackend", s.into());
        Ok(())
    })
}

/// `global_resource_config` (JSON): emits `llm.GlobalResourceConfig`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_global_resource_config(
    config: *mut llmdd_config_t,
    json: *const c_char,
) -> u32 {
    string(
        config,
        "llm.GlobalResourceConfig",
        json,
        "llmdd_config_set_global_resource_config",
    )
}

/// `mem_pool_cfg` (JSON `{"memory_size":N,"page_shift":S}`): emits `llm.MemPoolConfig`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_mem_pool_cfg(
    config: *mut llmdd_config_t,
    json: *const c_char,
) -> u32 {
    string(
        config,
        "llm.MemPoolConfig",
        json,
        "llmdd_config_set_mem_pool_cfg",
    )
}

/// `host_mem_pool_cfg` (same JSON): emits `llm.HostMemPoolConfig`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_host_mem_pool_cfg(
    config: *mut llmdd_config_t,
    json: *const c_char,
) -> u32 {
    string(
        config,
        "llm.HostMemPoolConfig",
        json,
        "llmdd_config_set_host_mem_pool_cfg",
    )
}

/// `buf_pool_cfg` (JSON, v1 engine only; accepted and ignored): emits `llm.BufPoolCfg`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_buf_pool_cfg(
    config: *mut llmdd_config_t,
    json: *const c_char,
) -> u32 {
    string(
        config,
        "llm.BufPoolCfg",
        json,
        "llmdd_config_set_buf_pool_cfg",
    )
}

unsafe fn ranged(config: *mut llmdd_config_t, key: &'static str, v: u32, name: &str) -> u32 {
    run(name, || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let spec = schema::spec(key);
        if spec.violation(v.into()).is_some() {
            let (lo, hi, step) = spec.range();
            bail!(
                ParamInvalid,
                "{key} must be in [{lo}, {hi}]{} (got {v})",
                if step > 1 {
                    format!(" and a multiple of {step}")
                } else {
                    String::new()
                }
            );
        }
        put(c, key, v.to_string());
        Ok(())
    })
}

/// `rdma_traffic_class` (0..=255, multiple of 4): emits `llm.RdmaTrafficClass`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_rdma_traffic_class(
    config: *mut llmdd_config_t,
    value: u32,
) -> u32 {
    ranged(
        config,
        "llm.RdmaTrafficClass",
        value,
        "llmdd_config_set_rdma_traffic_class",
    )
}

/// `rdma_service_level` (0..=7): emits `llm.RdmaServiceLevel`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_rdma_service_level(
    config: *mut llmdd_config_t,
    value: u32,
) -> u32 {
    ranged(
        config,
        "llm.RdmaServiceLevel",
        value,
        "llmdd_config_set_rdma_service_level",
    )
}

/// `link_total_time` in seconds: emits `llm.LinkTotalTime`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_link_total_time(
    config: *mut llmdd_config_t,
    seconds: u32,
) -> u32 {
    ranged(
        config,
        "llm.LinkTotalTime",
        seconds,
        "llmdd_config_set_link_total_time",
    )
}

/// `link_retry_count` (1..=100): emits `llm.LinkRetryCount`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_link_retry_count(
    config: *mut llmdd_config_t,
    count: u32,
) -> u32 {
    ranged(
        config,
        "llm.LinkRetryCount",
        count,
        "llmdd_config_set_link_retry_count",
    )
}

/// Any other option, emitted verbatim (e.g. `ge_options`, or an `llmdd.*`
/// extension such as `llmdd.Backend`). Validated at init.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_set_option(
    config: *mut llmdd_config_t,
    key: *const c_char,
    value: *const c_char,
) -> u32 {
    run("llmdd_config_set_option", || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let k = cstr(key, "key")?;
        let v = cstr(value, "value")?;
        if k.is_empty() {
            bail!(ParamInvalid, "key must not be empty");
        }
        put(c, k, v.into());
        Ok(())
    })
}

/// Emits the options set so far: `*out_options` points to `*out_num`
/// `{key, value}` pairs owned by the builder, valid until the builder is
/// modified or freed.
#[no_mangle]
pub unsafe extern "C" fn llmdd_config_generate_options(
    config: *mut llmdd_config_t,
    out_options: *mut *const llmdd_option_t,
    out_num: *mut usize,
) -> u32 {
    run("llmdd_config_generate_options", || {
        let h = cfg(config)?;
        let mut g = lock(&h);
        let c = &mut *g;
        let oo = output(out_options, "out_options")?;
        let on = output(out_num, "out_num")?;
        if c.pairs.len() != c.map.len() {
            c.strings.clear();
            c.pairs.clear();
            for (k, v) in &c.map {
                c.strings.push(CString::new(k.as_str()).unwrap_or_default());
                c.strings.push(CString::new(v.as_str()).unwrap_or_default());
            }
            for kv in c.strings.chunks(2) {
                c.pairs.push(llmdd_option_t {
                    key: kv[0].as_ptr(),
                    value: kv[1].as_ptr(),
                });
            }
        }
        *oo = c.pairs.as_ptr();
        *on = c.pairs.len();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Status;

    #[test]
    fn freed_and_foreign_builders_are_refused_not_read() {
        let mut c: *mut llmdd_config_t = std::ptr::null_mut();
        unsafe {
            assert_eq!(llmdd_config_new(&mut c), 0);
            assert_eq!(llmdd_config_set_device_id(c, 3), 0);
            let (mut opts, mut n) = (std::ptr::null(), 0usize);
            assert_eq!(llmdd_config_generate_options(c, &mut opts, &mut n), 0);
            assert_eq!(n, 2);
            llmdd_config_free(c);
            // Freed: refused, and freeing again is a no-op.
            let bad = Status::ParamInvalid.code();
            assert_eq!(llmdd_config_set_device_id(c, 3), bad);
            llmdd_config_free(c);
            // Foreign values and NULL: refused.
            let mut x = 0u64;
            let foreign = &mut x as *mut u64 as *mut llmdd_config_t;
            assert_eq!(llmdd_config_set_device_id(foreign, 3), bad);
            llmdd_config_free(foreign);
            assert_eq!(llmdd_config_set_device_id(std::ptr::null_mut(), 3), bad);
        }
    }
}
