//! Exported functions of layer-wise async transfer (`transfer_cache_async`,
//! Python `CacheTask`): start a task, wait for it, read its per-config
//! results, free it.

use std::ffi::c_void;
use std::sync::Arc;
use std::time::Duration;

use crate::datadist::async_transfer::{AsyncBlocks, AsyncConfig, AsyncDst};
use crate::ffi::boundary::{output, run, slice};
use crate::ffi::handles::HandleTable;
use crate::ffi::types::{
    instance, key_from_c, layers_from_c, llmdd_cache_key_t, llmdd_instance_t, llmdd_layer_range_t,
};
use crate::status::{Result, Status};
use crate::transfer::task::{ConfigResult, Task};
use crate::{bail, err};

/// Transfer config kind: explicit destination addresses (`TransferConfig`);
/// request/response mode only.
pub const LLMDD_TRANSFER_BY_ADDRS: u32 = 0;
/// Transfer config kind: destination named by a cache key
/// (`TransferWithCacheKeyConfig`); remote-cache-accessible mode only.
pub const LLMDD_TRANSFER_BY_CACHE_KEY: u32 = 1;
/// `llmdd_task_get_results` entry of a config none of whose layers started
/// (Python `None`). Distinct from every status (`LLMDD_FAILED` is 0xFFFFFFFF).
pub const LLMDD_TASK_RESULT_NOT_STARTED: u32 = 0xFFFF_FFFEu32;

/// Layer synchronizer: called by a library thread with each source layer, in
/// ascending order, that some config includes. Return true once layer
/// `layer_index` may be sent (its KV values are final), false to fail the task.
/// `timeout_ms` is always -1 (no limit; reserved). It may block; the transfer
/// of the previous layer runs meanwhile.
pub type llmdd_layer_sync_fn =
    Option<unsafe extern "C" fn(user_data: *mut c_void, layer_index: u32, timeout_ms: i64) -> bool>;

/// One destination of `llmdd_transfer_cache_async`.
///
/// - `LLMDD_TRANSFER_BY_ADDRS` (`TransferConfig`, request/response mode): the
///   layers go to cluster `dst_cluster_id` at `dst_addrs`, 2 addresses (K, V)
///   per selected source layer, in layer order. For a contiguous destination
///   the addresses point at the destination slot; for a blocks destination at
///   the tensor bases. Every destination byte must lie inside a cache the peer
///   registered. `cache_key` is ignored; `layers.dst_begin` must be -1.
/// - `LLMDD_TRANSFER_BY_CACHE_KEY` (`TransferWithCacheKeyConfig`,
///   remote-cache-accessible mode): the destination is the peer's cache named
///   by `cache_key` (`LLMDD_KEY_BLOCKS`, or `LLMDD_KEY_ID_AND_INDEX` naming a
///   batch slot); source layer L goes to destination layer
///   `dst_begin + (L - src_begin)`. `dst_cluster_id`/`dst_addrs` are ignored.
///
/// `layers`: half-open source (and, by key, destination) layer ranges, -1 =
/// all layers of that side; both sides must cover the same number of layers;
/// `tensor_num_per_layer` must be 0 or 2. `reserved` must be zero.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_transfer_config_t {
    /// `LLMDD_TRANSFER_BY_ADDRS` or `LLMDD_TRANSFER_BY_CACHE_KEY`.
    pub kind: u32,
    /// Destination cluster id (`LLMDD_TRANSFER_BY_ADDRS` only).
    pub dst_cluster_id: u64,
    /// Destination tensor addresses, 2 per selected source layer (`LLMDD_TRANSFER_BY_ADDRS` only).
    pub dst_addrs: *const u64,
    /// Number of entries at `dst_addrs`.
    pub num_dst_addrs: usize,
    /// The peer's destination cache (`LLMDD_TRANSFER_BY_CACHE_KEY` only).
    pub cache_key: llmdd_cache_key_t,
    /// Source (and, by key, destination) layer ranges.
    pub layers: llmdd_layer_range_t,
    /// Source batch slot of a contiguous source cache (0 for a blocks source or key).
    pub src_batch_index: u32,
    /// Reserved, must be zero.
    pub reserved: [u8; 32],
}

/// Opaque async transfer task (Python `CacheTask`). Created by
/// `llmdd_transfer_cache_async`, owned by the caller, released only by
/// `llmdd_task_free`. It stays usable after its instance is finalized. Like an
/// instance handle it is looked up in a table of live tasks, never read.
pub struct llmdd_task_t {
    _opaque: [u8; 0],
}

/// The live tasks, by handle.
static TASKS: HandleTable<Task, llmdd_task_t> = HandleTable::new();

/// Resolves a task handle through the table of live tasks.
fn task_ref(p: *const llmdd_task_t) -> Result<Arc<Task>> {
    TASKS.resolve(p, "task")
}

fn timeout(ms: i64) -> Result<Option<Duration>> {
    match ms {
        -1 => Ok(None),
        0.. => Ok(Some(Duration::from_millis(ms as u64))),
        _ => bail!(
            ParamInvalid,
            "timeout_ms must be -1 (wait forever) or >= 0 (got {ms})"
        ),
    }
}

unsafe fn config_from_c(i: usize, c: &llmdd_transfer_config_t) -> Result<AsyncConfig> {
    if c.reserved.iter().any(|&b| b != 0) {
        bail!(ParamInvalid, "configs[{i}].reserved must be zero");
    }
    let dst = match c.kind {
        LLMDD_TRANSFER_BY_ADDRS => AsyncDst::Addrs {
            cluster_id: c.dst_cluster_id,
            addrs: slice(
                c.dst_addrs,
                c.num_dst_addrs,
                &format!("configs[{i}].dst_addrs"),
            )?
            .to_vec(),
        },
        LLMDD_TRANSFER_BY_CACHE_KEY => AsyncDst::Key(key_from_c(&c.cache_key).map_err(|e| {
            err!(ParamInvalid, "configs[{i}].cache_key: {}", e.message)
        })?),
        k => bail!(
            ParamInvalid,
            "configs[{i}].kind {k} is neither LLMDD_TRANSFER_BY_ADDRS (0) nor LLMDD_TRANSFER_BY_CACHE_KEY (1)"
        ),
    };
    let layers = layers_from_c(&c.layers)
        .map_err(|e| err!(ParamInvalid, "configs[{i}].layers: {}", e.message))?;
    Ok(AsyncConfig {
        dst,
        layers,
        src_batch_index: c.src_batch_index,
    })
}

/// Layer-wise async push (Python `transfer_cache_async`): sends the layers of
/// local cache `src_cache_id` to every config's destination as soon as `sync`
/// approves each layer, and returns at once. On success `*task_out` receives a
/// task owned by the caller, released with `llmdd_task_free` (`configs`,
/// `dst_addrs` and the block arrays are copied; they need not outlive the call).
///
/// Blocks (shared by all configs): `src_blocks` non-empty = blocks → blocks
/// (`dst_blocks` of equal length; `dst_block_memory_size` 0 or the source
/// block size); `src_blocks` empty with `dst_blocks` = contiguous → blocks
/// (`dst_block_memory_size` = destination block size, required); both empty =
/// contiguous → contiguous (`dst_block_memory_size` 0). Without indices a
/// blocks cache (source or destination) counts as one batch of stride one
/// block, as in the reference: slot 0 is block 0. The source cache must
/// be DEVICE with an even number of tensors (2 per layer).
///
/// Everything is validated before anything starts; errors are returned here
/// and no task is created: `LLMDD_PARAM_INVALID` (NULL `sync`/`configs`/
/// `task_out`, no configs, bad kind/range/index/size, HOST source, wrong mode
/// for the kind, raw destination outside the peer's registered caches),
/// `LLMDD_KV_CACHE_NOT_EXIST` (unknown local cache, or the peer has no such
/// cache), `LLMDD_NOT_YET_LINK` (no link to a destination cluster),
/// `LLMDD_FAILED` (not initialized).
///
/// Threads: tasks run on the instance's worker pool (started by its first
/// task, joined by `llmdd_finalize`; no thread starts per task).
/// `sync(user_data, L, -1)` is called from one pool thread per task, never
/// concurrently with itself; it may block (other tasks keep running) but must
/// not call `llmdd_finalize` nor wait for its own task (`llmdd_task_free` from
/// inside it only cancels). Each layer is moved by a pool thread within
/// `llm.SyncKvCacheWaitTime`. Source memory must stay valid and unchanged for
/// the layers not yet sent until the task finishes or is freed.
#[no_mangle]
pub unsafe extern "C" fn llmdd_transfer_cache_async(
    inst: *mut llmdd_instance_t,
    src_cache_id: i64,
    sync: llmdd_layer_sync_fn,
    user_data: *mut c_void,
    configs: *const llmdd_transfer_config_t,
    num_configs: usize,
    src_blocks: *const u64,
    num_src_blocks: usize,
    dst_blocks: *const u64,
    num_dst_blocks: usize,
    dst_block_memory_size: u64,
    task_out: *mut *mut llmdd_task_t,
) -> u32 {
    run("llmdd_transfer_cache_async", || {
        let s = instance(inst)?.session()?;
        let Some(f) = sync else {
            bail!(ParamInvalid, "sync (the layer synchronizer) is NULL");
        };
        if configs.is_null() || num_configs == 0 {
            bail!(
                ParamInvalid,
                "configs must be a non-NULL array with num_configs > 0"
            );
        }
        let out = output(task_out, "task_out")?;
        let cs = slice(configs, num_configs, "configs")?
            .iter()
            .enumerate()
            .map(|(i, c)| config_from_c(i, c))
            .collect::<Result<Vec<_>>>()?;
        let blocks = AsyncBlocks {
            src: slice(src_blocks, num_src_blocks, "src_blocks")?,
            dst: slice(dst_blocks, num_dst_blocks, "dst_blocks")?,
            dst_block_size: dst_block_memory_size,
        };
        let user = UserData(user_data);
        let cb = Box::new(move |layer: u32| {
            let u = &user;
            // SAFETY: the caller's function and user data, as documented.
            unsafe { f(u.0, layer, -1) }
        });
        let t = s
            .caches()
            .transfer_cache_async(src_cache_id, &cs, blocks, cb)?;
        match TASKS.insert(t) {
            Some(h) => *out = h,
            // Dropping the task cancels it and joins its threads.
            None => bail!(OutOfMemory, "too many live async tasks"),
        }
        Ok(())
    })
}

/// The caller's `user_data`, handed to the library thread that calls `sync`.
struct UserData(*mut c_void);
// SAFETY: the API documents that `sync` is called from a library thread with
// this pointer; making that safe is the caller's contract.
unsafe impl Send for UserData {}

/// Waits for the task (Python `CacheTask.synchronize`). `timeout_ms`: -1 =
/// forever, else >= 0 (0 polls). Returns `LLMDD_TIMEOUT` if the task is still
/// running at the deadline (it keeps running); otherwise the first failure
/// (chronologically) of any config, `LLMDD_FAILED` if a config never started,
/// else `LLMDD_SUCCESS`. NULL or invalid task, bad timeout: `LLMDD_PARAM_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_task_synchronize(task: *mut llmdd_task_t, timeout_ms: i64) -> u32 {
    run("llmdd_task_synchronize", || {
        let t = task_ref(task)?;
        t.synchronize(timeout(timeout_ms)?)
    })
}

/// Per-config results (Python `CacheTask.get_results`): waits like
/// `llmdd_task_synchronize`, then writes one entry per config, in config order,
/// to `results` (`num_results` must equal the task's number of configs):
/// `LLMDD_SUCCESS`, the config's failure status, `LLMDD_FAILED` (cut short by
/// another config's failure or by cancellation) or
/// `LLMDD_TASK_RESULT_NOT_STARTED`; returns `LLMDD_SUCCESS`. If the wait
/// expires, every entry is set to `LLMDD_TIMEOUT` and `LLMDD_TIMEOUT` is
/// returned (an exception to "outputs only on success").
#[no_mangle]
pub unsafe extern "C" fn llmdd_task_get_results(
    task: *mut llmdd_task_t,
    timeout_ms: i64,
    results: *mut u32,
    num_results: usize,
) -> u32 {
    run("llmdd_task_get_results", || {
        let t = task_ref(task)?;
        let to = timeout(timeout_ms)?;
        if results.is_null() {
            bail!(ParamInvalid, "results (output) is NULL");
        }
        if num_results != t.num_configs() {
            bail!(
                ParamInvalid,
                "num_results = {num_results} but the task has {} configs",
                t.num_configs()
            );
        }
        let out = std::slice::from_raw_parts_mut(results, num_results);
        match t.results(to) {
            Some(rs) => {
                for (o, r) in out.iter_mut().zip(rs) {
                    *o = match r {
                        ConfigResult::Done(s) => s.code(),
                        ConfigResult::NotStarted => LLMDD_TASK_RESULT_NOT_STARTED,
                    };
                }
                Ok(())
            }
            None => {
                out.fill(Status::Timeout.code());
                bail!(Timeout, "the task is still running after {timeout_ms} ms")
            }
        }
    })
}

/// Frees a task. NULL is a no-op; a freed (or foreign) handle is detected,
/// never read, and is a no-op too. If the task is still running it is
/// cancelled: no further layer starts and the synchronizer is not called
/// again; this call waits for a synchronizer call in progress and for the
/// layer in flight to return. After it returns the library never calls the
/// synchronizer again nor reads the source cache for this task. (Called from
/// inside the task's own synchronizer it only cancels.) The handle must not be
/// used afterwards (calls with it return `LLMDD_PARAM_INVALID`).
#[no_mangle]
pub unsafe extern "C" fn llmdd_task_free(task: *mut llmdd_task_t) {
    let _ = run("llmdd_task_free", || {
        if task.is_null() {
            return Ok(());
        }
        if let Some(t) = TASKS.remove(task) {
            t.cancel_and_wait();
        }
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn async_timeouts_parse() {
        assert_eq!(timeout(-1).unwrap(), None);
        assert_eq!(timeout(0).unwrap(), Some(Duration::ZERO));
        assert_eq!(timeout(1500).unwrap(), Some(Duration::from_millis(1500)));
        let e = timeout(-2).unwrap_err();
        assert_eq!(e.status, Status::ParamInvalid);
        assert!(e.message.contains("-1 (wait forever)"));
    }

    #[test]
    fn async_not_started_is_not_a_status() {
        assert!(Status::ALL
            .iter()
            .all(|s| s.code() != LLMDD_TASK_RESULT_NOT_STARTED));
    }
}
