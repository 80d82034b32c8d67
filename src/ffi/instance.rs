//! Exported functions of the instance: lifecycle, roles and linking.

use crate::datadist::Instance;
use crate::ffi::boundary::{output, run};
use crate::ffi::types::{
    clusters_from_c, instance, llmdd_cluster_info_t, llmdd_instance_t, llmdd_option_t,
    options_from_c, INSTANCE_MAGIC,
};
use crate::status::{Result, Status};

/// Creates an instance with a role (`LLMDD_ROLE_*`) and a cluster id that is
/// unique among every instance that will link to it. No I/O.
///
/// On success `*out` receives a handle owned by the caller, released with
/// `llmdd_destroy`. Statuses: `LLMDD_PARAM_INVALID` (bad role, NULL `out`).
#[no_mangle]
pub unsafe extern "C" fn llmdd_create(
    role: u32,
    cluster_id: u64,
    out: *mut *mut llmdd_instance_t,
) -> u32 {
    run("llmdd_create", || {
        let out = output(out, "out")?;
        let inner = Instance::new(role, cluster_id)?;
        *out = Box::into_raw(Box::new(llmdd_instance_t {
            magic: INSTANCE_MAGIC,
            inner,
        }));
        Ok(())
    })
}

/// Finalizes (if needed) and frees an instance. NULL is a no-op. The handle
/// must not be used afterwards, and no other call on it may be in progress.
#[no_mangle]
pub unsafe extern "C" fn llmdd_destroy(inst: *mut llmdd_instance_t) {
    let _ = run("llmdd_destroy", || {
        if inst.is_null() || (*inst).magic != INSTANCE_MAGIC {
            return Ok(());
        }
        (*inst).magic = 0;
        drop(Box::from_raw(inst));
        Ok(())
    });
}

/// Initializes the instance with `num_options` `{key, value}` options (spec §3;
/// build them with the `llmdd_config_*` builder). Required: `llm.DeviceId` (or
/// `ge.exec.deviceId`) and cache-manager mode (`llm.EnableCacheManager=1` or
/// `llm.LocalCommRes`). With `llm.ListenIpInfo` the instance listens (server).
/// A second init on an initialized instance is a no-op success; init after
/// finalize starts afresh.
///
/// Statuses: `LLMDD_PARAM_INVALID` (bad or unknown option, NULL pointers),
/// `LLMDD_FEATURE_NOT_ENABLED` (no cache-manager mode, backend unavailable),
/// `LLMDD_OUT_OF_MEMORY` (pool creation), `LLMDD_FAILED` (cannot listen).
#[no_mangle]
pub unsafe extern "C" fn llmdd_init(
    inst: *mut llmdd_instance_t,
    options: *const llmdd_option_t,
    num_options: usize,
) -> u32 {
    run("llmdd_init", || {
        let i = instance(inst)?;
        let opts = options_from_c(options, num_options)?;
        i.init(&opts)
    })
}

/// Tears down every link, listener, thread, registration and pool. Idempotent;
/// must not overlap other calls on the instance. Returns `LLMDD_SUCCESS`, or
/// `LLMDD_PARAM_INVALID` for a NULL/invalid handle.
#[no_mangle]
pub unsafe extern "C" fn llmdd_finalize(inst: *mut llmdd_instance_t) -> u32 {
    run("llmdd_finalize", || {
        instance(inst)?.finalize();
        Ok(())
    })
}

/// Writes the instance's cluster id to `*out`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_get_cluster_id(inst: *const llmdd_instance_t, out: *mut u64) -> u32 {
    run("llmdd_get_cluster_id", || {
        let i = instance(inst)?;
        *output(out, "out")? = i.cluster_id();
        Ok(())
    })
}

/// Writes the instance's current role (`LLMDD_ROLE_*`) to `*out`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_get_role(inst: *const llmdd_instance_t, out: *mut u32) -> u32 {
    run("llmdd_get_role", || {
        let i = instance(inst)?;
        *output(out, "out")? = i.role();
        Ok(())
    })
}

/// Changes the role label; `options` may carry `llm.ListenIpInfo` to listen on
/// (or move to) an endpoint; without it a listening instance stops listening.
/// Requires zero links (`LLMDD_EXIST_LINK`). Not initialized: `LLMDD_FAILED`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_switch_role(
    inst: *mut llmdd_instance_t,
    role: u32,
    options: *const llmdd_option_t,
    num_options: usize,
) -> u32 {
    run("llmdd_switch_role", || {
        let i = instance(inst)?;
        let opts = options_from_c(options, num_options)?;
        i.switch_role(role, &opts)
    })
}

fn fill(results: Vec<Result<()>>, rets: *mut u32) -> Result<()> {
    let mut first = None;
    for (k, r) in results.iter().enumerate() {
        let code = match r {
            Ok(()) => Status::Success.code(),
            Err(e) => {
                if first.is_none() {
                    first = Some(e.clone());
                }
                e.status.code()
            }
        };
        if !rets.is_null() {
            // SAFETY: the caller provides `num_clusters` entries.
            unsafe { *rets.add(k) = code };
        }
    }
    match first {
        None => Ok(()),
        Some(mut e) => {
            if results.len() > 1 {
                e.message = format!(
                    "{} of {} clusters failed; first: {}",
                    results.iter().filter(|r| r.is_err()).count(),
                    results.len(),
                    e.message
                );
            }
            Err(e)
        }
    }
}

/// Links this client to each cluster's server (`remote_ip_infos[0]`), up to 16
/// clusters in parallel, each within `timeout_ms` (> 0; 3000 is the documented
/// default). Only clients (instances initialized without `llm.ListenIpInfo`)
/// call it. `rets` (NULL, or `num_clusters` entries) receives one status per
/// cluster: `LLMDD_ALREADY_LINK`, `LLMDD_LINK_FAILED`, `LLMDD_PARAM_INVALID`…
/// Returns `LLMDD_SUCCESS` only if all succeeded, else the first failure.
/// Argument errors before any linking (empty list, >16 clusters =
/// `LLMDD_CLUSTER_NUM_EXCEED_LIMIT`, timeout <= 0) leave `rets` untouched.
#[no_mangle]
pub unsafe extern "C" fn llmdd_link_clusters(
    inst: *mut llmdd_instance_t,
    clusters: *const llmdd_cluster_info_t,
    num_clusters: usize,
    timeout_ms: i32,
    rets: *mut u32,
) -> u32 {
    run("llmdd_link_clusters", || {
        let i = instance(inst)?;
        let cs = clusters_from_c(clusters, num_clusters)?;
        let results = i.link_clusters(&cs, timeout_ms)?;
        fill(results, rets)
    })
}

/// Unlinks each cluster. `force = false` (client only): tells the server to
/// drop its side, then drops ours (`LLMDD_UNLINK_FAILED` if the peer cannot be
/// told: then force-unlink both ends). `force = true`: drops only the local
/// side and must be called on both ends; only `remote_cluster_id` is used.
/// Unlinking a cluster that is not linked succeeds. Waits for in-flight
/// transfers on the link (up to `timeout_ms`). Result shape as link_clusters.
#[no_mangle]
pub unsafe extern "C" fn llmdd_unlink_clusters(
    inst: *mut llmdd_instance_t,
    clusters: *const llmdd_cluster_info_t,
    num_clusters: usize,
    timeout_ms: i32,
    force: bool,
    rets: *mut u32,
) -> u32 {
    run("llmdd_unlink_clusters", || {
        let i = instance(inst)?;
        let cs = clusters_from_c(clusters, num_clusters)?;
        let results = i.unlink_clusters(&cs, timeout_ms, force)?;
        fill(results, rets)
    })
}
