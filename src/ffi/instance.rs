//! Exported functions of the instance: lifecycle, roles and linking.

use std::ffi::c_char;

use crate::datadist::comm::MemStatus;
use crate::datadist::Instance;
use crate::ffi::boundary::{cstr, output, run, set_last_error};
use crate::ffi::types::{
    cluster_ranks_from_c, clusters_from_c, instance, llmdd_cluster_info_t, llmdd_cluster_rank_t,
    llmdd_instance_t, llmdd_option_t, options_from_c, INSTANCES,
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
        let h = INSTANCES
            .insert(inner)
            .ok_or_else(|| crate::err!(OutOfMemory, "too many live instances"))?;
        *out = h;
        Ok(())
    })
}

/// Finalizes (if needed) and frees an instance. NULL is a no-op; a destroyed
/// (or foreign) handle is detected, never read, and is a no-op too. The
/// handle must not be used afterwards (calls with it return
/// `LLMDD_PARAM_INVALID`), and no other call on it should be in progress (one
/// that is keeps the instance alive until it returns).
#[no_mangle]
pub unsafe extern "C" fn llmdd_destroy(inst: *mut llmdd_instance_t) {
    let _ = run("llmdd_destroy", || {
        if inst.is_null() {
            return Ok(());
        }
        if let Some(i) = INSTANCES.remove(inst) {
            i.finalize();
        }
        Ok(())
    });
}

/// Initializes the instance with `num_options` `{key, value}` options (spec §3;
/// build them with the `llmdd_config_*` builder). Required: `llm.DeviceId` (or
/// `ge.exec.deviceId`). Cache-manager mode is implied, as in C++ `Initialize`
/// (`llm.EnableCacheManager=0`, Python's v1 engine, is refused); remote-cache-
/// accessible mode is off unless `llm.EnableRemoteCacheAccessible=1` or
/// `llm.LocalCommRes` is given. With `llm.ListenIpInfo` the instance listens
/// (server). A second init on an initialized instance is a no-op success; init
/// after finalize starts afresh.
///
/// Statuses: `LLMDD_PARAM_INVALID` (bad option, unknown `llmdd.` key or, with
/// `llmdd.StrictOptions=1`, unknown `llm.` key; NULL pointers; unknown `llm.`
/// keys are otherwise logged and ignored),
/// `LLMDD_FEATURE_NOT_ENABLED` (`llm.EnableCacheManager=0`, backend unavailable),
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
/// Other keys are ignored, as the reference's `SetRole` does (rejected with
/// `LLMDD_PARAM_INVALID` when the instance was initialised with
/// `llmdd.StrictOptions=1`).
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

/// Links this instance to each cluster's server (`remote_ip_infos[0]`), up to
/// 16 clusters in parallel, each within `timeout_ms` (> 0; 3000 is the
/// documented default). Any initialized instance may call it, whether it
/// listens itself or not (the side that dials is the link's client). `rets`
/// (NULL, or `num_clusters` entries) receives one status per cluster:
/// `LLMDD_ALREADY_LINK` (a live link this instance dialled to that cluster
/// exists, or the server already has a live link from this cluster id), `LLMDD_LINK_FAILED` (also at once, with the server's
/// reason, when the server refuses: its connection limits, or no file
/// descriptor or thread left), `LLMDD_PARAM_INVALID`…
/// A link whose server is gone (its control connection closed, keepalive
/// failed: see `llmdd.DeadPeerTimeoutMs`, or, on the same host, its process
/// exited) is dead: transfers on it return `LLMDD_LINK_FAILED` without moving
/// a byte, and linking that cluster again replaces it (no forced unlink
/// needed).
/// Two instances may link to each other (both call this, at once or not):
/// each call makes a link of its own, each unlinked by the side that made it;
/// transfers use the link this side dialled while it is open, else the one
/// it accepted.
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

/// Unlinks each cluster. `force = false` ends the link this side dialled
/// (with only an accepted link to that cluster, `LLMDD_PARAM_INVALID`): no new transfer starts on the
/// link; those in flight are waited for up to `timeout_ms` (then cut); the
/// peer is told (its answer is awaited for at least 2 s, whatever is left of
/// `timeout_ms`) and drops its side once the requests it is still serving are
/// done; then ours is dropped. `LLMDD_UNLINK_FAILED` if the peer is alive but
/// cannot be told (then force-unlink both ends); a dead link (its peer is
/// gone) is just dropped: `LLMDD_SUCCESS`. `force = true`: drops only the
/// local side of every link to that cluster (dialled and accepted) after waiting up to `timeout_ms` for its transfers; the peer
/// notices at once (the accepting side drops its side; the dialling side's
/// link becomes dead, see `llmdd_link_clusters`); only `remote_cluster_id` is
/// used. Unlinking a cluster that is not linked succeeds. With
/// `llm.TransferBackend=hixl`, as the reference's hixl engine: the cluster id
/// alone names the link this side made (no remote ip info needed), `force` has
/// no effect, and a cluster this side did not link is a success. Result shape
/// as link_clusters.
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

/// Two-sided linking by rank table (Python `link(comm_name, cluster_rank_info,
/// rank_table)`): every member of the comm domain calls it with the same
/// members and table at about the same time. Returns as soon as the comm
/// exists: `*comm_id_out` receives its id (1, 2, … per instance, never
/// reused) while the links between every pair of members are set up in the
/// background; poll `llmdd_query_register_mem_status` until
/// `LLMDD_MEM_STATUS_OK` before transferring (earlier transfers to a member
/// give `LLMDD_NOT_YET_LINK`). The links are ordinary links keyed by cluster
/// id, so every pull/push works over them. See docs/rank-table.md.
///
/// Inputs are borrowed for the call only. `comm_name`: 1..127 bytes.
/// `cluster_ranks`: 2..4 entries, unique cluster ids, rank ids strictly
/// ascending in array order, including this instance's cluster id.
/// `rank_table_json`: HCCL rank table (spec §6) containing every rank; on
/// the host backend each member's TCP endpoint is IP = the server's `host_ip`,
/// else the device's `device_ip`; port = the device's `host_port`, else its
/// `device_port`, else 16666 (`llmdd.RankTableDefaultPort`). The higher rank dials the lower one, retrying for
/// `llm.LinkTotalTime` seconds (0: `HCCL_CONNECT_TIMEOUT`, else 120 s); at most
/// 16 comm setups run at once per instance, others wait (PREPARING).
///
/// Statuses: `LLMDD_PARAM_INVALID` (NULL pointers, any check above, malformed
/// table, a member without a usable IP or port, two dialled members with one
/// endpoint, 512 comms already);
/// `LLMDD_ALREADY_LINK` (a member cluster is already linked by
/// `llmdd_link_clusters` or belongs to another comm of this instance);
/// `LLMDD_LINK_FAILED` (this member's endpoint cannot be bound);
/// `LLMDD_FEATURE_NOT_ENABLED` (`llm.TransferBackend=hixl`); `LLMDD_FAILED`
/// (not initialized). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn llmdd_link(
    inst: *mut llmdd_instance_t,
    comm_name: *const c_char,
    cluster_ranks: *const llmdd_cluster_rank_t,
    num_cluster_ranks: usize,
    rank_table_json: *const c_char,
    comm_id_out: *mut u64,
) -> u32 {
    run("llmdd_link", || {
        let i = instance(inst)?;
        let out = output(comm_id_out, "comm_id_out")?;
        let name = cstr(comm_name, "comm_name")?;
        let ranks = cluster_ranks_from_c(cluster_ranks, num_cluster_ranks)?;
        let table = cstr(rank_table_json, "rank_table_json")?;
        *out = i.link(name, &ranks, table)?;
        Ok(())
    })
}

/// Unlinks a rank-table comm (Python `unlink(comm_id)`); every member calls
/// it for its own comm id. Aborts a setup still running, tears down this
/// side of every link of the comm (waiting up to `llm.SyncKvCacheWaitTime`
/// for transfers in flight, like a forced unlink), closes the comm's own
/// listener if it bound one, and forgets the comm. Works in any status
/// (PREPARING, OK, FAILED).
///
/// Statuses: `LLMDD_NOT_YET_LINK` (unknown or already unlinked comm id),
/// `LLMDD_FEATURE_NOT_ENABLED` (hixl), `LLMDD_FAILED` (not initialized),
/// `LLMDD_PARAM_INVALID` (NULL instance). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn llmdd_unlink(inst: *mut llmdd_instance_t, comm_id: u64) -> u32 {
    run("llmdd_unlink", || instance(inst)?.unlink(comm_id))
}

/// Writes the comm's registered-memory status to `*status_out`:
/// `LLMDD_MEM_STATUS_PREPARING` while the links are being set up,
/// `LLMDD_MEM_STATUS_OK` once every pair of members is linked, or
/// `LLMDD_MEM_STATUS_FAILED` (final; unlink the comm). When it writes FAILED
/// the call returns `LLMDD_SUCCESS` and `llmdd_last_error_message()` gives the
/// reason (the one exception to "empty after success").
///
/// Statuses: `LLMDD_NOT_YET_LINK` (unknown or unlinked comm id),
/// `LLMDD_FEATURE_NOT_ENABLED` (hixl), `LLMDD_FAILED` (not initialized),
/// `LLMDD_PARAM_INVALID` (NULL pointers). Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn llmdd_query_register_mem_status(
    inst: *mut llmdd_instance_t,
    comm_id: u64,
    status_out: *mut u32,
) -> u32 {
    run("llmdd_query_register_mem_status", || {
        let i = instance(inst)?;
        let out = output(status_out, "status_out")?;
        let (status, why) = i.query_register_mem_status(comm_id)?;
        *out = status as u32;
        if status == MemStatus::Failed {
            set_last_error(&format!(
                "llmdd_query_register_mem_status: comm {comm_id} FAILED: {why}"
            ));
        }
        Ok(())
    })
}
