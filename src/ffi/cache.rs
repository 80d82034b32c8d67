//! Exported functions of the cache manager: registration, library-allocated
//! caches, transfers (pull/push of caches and blocks) and local copies.

use crate::datadist::cache_ops::{CacheRef, MemInfo};
use crate::ffi::boundary::{input, output, run, slice};
use crate::ffi::types::*;
use crate::status::Result;

fn remote_accessible(v: i32) -> Result<Option<bool>> {
    match v {
        -1 => Ok(None),
        0 => Ok(Some(false)),
        1 => Ok(Some(true)),
        _ => crate::bail!(
            ParamInvalid,
            "remote_accessible must be -1 (default), 0 or 1 (got {v})"
        ),
    }
}

fn fill_cache(rec: &crate::cache::registry::CacheRecord, out: &mut llmdd_cache_t) {
    *out = llmdd_cache_t {
        cache_id: rec.id,
        desc: desc_to_c(&rec.desc),
        tensor_addrs: rec.addrs.as_ptr(),
        num_tensor_addrs: rec.addrs.len(),
        reserved: [0; 32],
    };
}

unsafe fn keys(
    p: *const llmdd_cache_key_t,
    n: usize,
) -> Result<Vec<crate::cache::types::CacheKey>> {
    slice(p, n, "cache_keys")?.iter().map(key_from_c).collect()
}

unsafe fn opt_key(p: *const llmdd_cache_key_t) -> Result<Option<crate::cache::types::CacheKey>> {
    p.as_ref().map(key_from_c).transpose()
}

/// Registers user-owned memory as a batch cache (`register_cache`).
/// `tensor_addrs` has `desc->num_tensors` non-zero addresses of `T` bytes each;
/// `cache_keys` (may be NULL with 0) binds slot i to key i
/// (`LLMDD_KEY_CACHE_KEY`; req_id `LLMDD_ID_UNSET` = leave slot unbound);
/// `remote_accessible`: -1 default (DEVICE → yes, HOST → no), 0, 1.
/// Memory must stay valid until unregistered. At most 1024 registered
/// addresses in total by default (`llmdd.MaxRegisteredAddrs`, up to 65536);
/// overlapping registrations are rejected. `*out` on success.
#[no_mangle]
pub unsafe extern "C" fn llmdd_register_cache(
    inst: *mut llmdd_instance_t,
    desc: *const llmdd_cache_desc_t,
    tensor_addrs: *const u64,
    num_tensor_addrs: usize,
    cache_keys: *const llmdd_cache_key_t,
    num_cache_keys: usize,
    remote_accessible_flag: i32,
    out: *mut llmdd_cache_t,
) -> u32 {
    run("llmdd_register_cache", || {
        let s = instance(inst)?.session()?;
        let d = desc_from_c(input(desc, "cache_desc")?)?;
        let addrs = slice(tensor_addrs, num_tensor_addrs, "tensor_addrs")?;
        let ks = keys(cache_keys, num_cache_keys)?;
        let o = output(out, "out")?;
        let rec = s.caches().register_cache(
            &d,
            addrs,
            &ks,
            remote_accessible(remote_accessible_flag)?,
            crate::cache::types::CacheKind::Batch,
        )?;
        fill_cache(&rec, o);
        Ok(())
    })
}

/// Registers user-owned memory as a cache usable both as batch and as blocks
/// (C++ `RegisterKvCache`); always remote-accessible. `*out` on success.
#[no_mangle]
pub unsafe extern "C" fn llmdd_register_kv_cache(
    inst: *mut llmdd_instance_t,
    desc: *const llmdd_cache_desc_t,
    tensor_addrs: *const u64,
    num_tensor_addrs: usize,
    out: *mut llmdd_cache_t,
) -> u32 {
    run("llmdd_register_kv_cache", || {
        let s = instance(inst)?.session()?;
        let d = desc_from_c(input(desc, "cache_desc")?)?;
        let addrs = slice(tensor_addrs, num_tensor_addrs, "tensor_addrs")?;
        let o = output(out, "out")?;
        let rec = s.caches().register_cache(
            &d,
            addrs,
            &[],
            Some(true),
            crate::cache::types::CacheKind::Mixed,
        )?;
        fill_cache(&rec, o);
        Ok(())
    })
}

/// Registers user-owned memory as a blocks (paged) cache; dim 0 of the shape
/// is the block count. `blocks_key` (NULL = none) must be `LLMDD_KEY_BLOCKS`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_register_blocks_cache(
    inst: *mut llmdd_instance_t,
    desc: *const llmdd_cache_desc_t,
    tensor_addrs: *const u64,
    num_tensor_addrs: usize,
    blocks_key: *const llmdd_cache_key_t,
    remote_accessible_flag: i32,
    out: *mut llmdd_cache_t,
) -> u32 {
    run("llmdd_register_blocks_cache", || {
        let s = instance(inst)?.session()?;
        let d = desc_from_c(input(desc, "cache_desc")?)?;
        let addrs = slice(tensor_addrs, num_tensor_addrs, "tensor_addrs")?;
        let k = opt_key(blocks_key)?;
        let o = output(out, "out")?;
        let rec = s.caches().register_blocks_cache(
            &d,
            addrs,
            k,
            remote_accessible(remote_accessible_flag)?,
        )?;
        fill_cache(&rec, o);
        Ok(())
    })
}

/// Unregisters a registered cache (unknown id: success). Requires that every
/// link is unlinked (`LLMDD_EXIST_LINK`); an allocated cache id is
/// `LLMDD_PARAM_INVALID`. Does not free user memory.
#[no_mangle]
pub unsafe extern "C" fn llmdd_unregister_cache(inst: *mut llmdd_instance_t, cache_id: i64) -> u32 {
    run("llmdd_unregister_cache", || {
        instance(inst)?
            .session()?
            .caches()
            .unregister_cache(cache_id)
    })
}

/// Looks up a live cache by id into `*out` (`LLMDD_KV_CACHE_NOT_EXIST` if unknown).
#[no_mangle]
pub unsafe extern "C" fn llmdd_get_cache(
    inst: *mut llmdd_instance_t,
    cache_id: i64,
    out: *mut llmdd_cache_t,
) -> u32 {
    run("llmdd_get_cache", || {
        let s = instance(inst)?.session()?;
        let o = output(out, "out")?;
        let rec = s.registry.get(cache_id)?;
        fill_cache(&rec, o);
        Ok(())
    })
}

/// Allocates a batch cache from the pool of `desc->placement` (configure
/// `llm.MemPoolConfig` / `llm.HostMemPoolConfig`), binding keys like
/// register_cache (already-bound or repeated keys are rejected). Pool
/// exhausted: `LLMDD_OUT_OF_MEMORY`; no pool: `LLMDD_FEATURE_NOT_ENABLED`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_allocate_cache(
    inst: *mut llmdd_instance_t,
    desc: *const llmdd_cache_desc_t,
    cache_keys: *const llmdd_cache_key_t,
    num_cache_keys: usize,
    out: *mut llmdd_cache_t,
) -> u32 {
    run("llmdd_allocate_cache", || {
        let s = instance(inst)?.session()?;
        let d = desc_from_c(input(desc, "cache_desc")?)?;
        let ks = keys(cache_keys, num_cache_keys)?;
        let o = output(out, "out")?;
        let rec = s.caches().allocate_cache(&d, &ks)?;
        fill_cache(&rec, o);
        Ok(())
    })
}

/// Allocates a blocks cache from a pool; `blocks_key` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn llmdd_allocate_blocks_cache(
    inst: *mut llmdd_instance_t,
    desc: *const llmdd_cache_desc_t,
    blocks_key: *const llmdd_cache_key_t,
    out: *mut llmdd_cache_t,
) -> u32 {
    run("llmdd_allocate_blocks_cache", || {
        let s = instance(inst)?.session()?;
        let d = desc_from_c(input(desc, "cache_desc")?)?;
        let k = opt_key(blocks_key)?;
        let o = output(out, "out")?;
        let rec = s.caches().allocate_blocks_cache(&d, k)?;
        fill_cache(&rec, o);
        Ok(())
    })
}

/// Drops the id reference of an allocated batch cache: freed now if no keys
/// remain, else when its last key is pulled or removed. Unknown id or a
/// registered cache: no-op. A blocks cache: `LLMDD_PARAM_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_deallocate_cache(inst: *mut llmdd_instance_t, cache_id: i64) -> u32 {
    run("llmdd_deallocate_cache", || {
        instance(inst)?
            .session()?
            .caches()
            .deallocate(cache_id, false)
    })
}

/// Frees an allocated blocks cache and drops its key. A batch cache: `LLMDD_PARAM_INVALID`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_deallocate_blocks_cache(
    inst: *mut llmdd_instance_t,
    cache_id: i64,
) -> u32 {
    run("llmdd_deallocate_blocks_cache", || {
        instance(inst)?
            .session()?
            .caches()
            .deallocate(cache_id, true)
    })
}

/// Unbinds a request/prefix key (`LLMDD_KEY_CACHE_KEY`) so no further pull
/// can use it; frees its cache if it was deallocated and this was its last key.
#[no_mangle]
pub unsafe extern "C" fn llmdd_remove_cache_key(
    inst: *mut llmdd_instance_t,
    cache_key: *const llmdd_cache_key_t,
) -> u32 {
    run("llmdd_remove_cache_key", || {
        let s = instance(inst)?.session()?;
        let k = key_from_c(input(cache_key, "cache_key")?)?;
        s.caches().remove_cache_key(&k)
    })
}

/// Pulls one batch slot from a remote cache into slot `batch_index` of local
/// cache `dst_cache_id`. `src_key`: `LLMDD_KEY_CACHE_KEY` (request/prefix key;
/// a one-shot key of an allocated cache is consumed) or
/// `LLMDD_KEY_ID_AND_INDEX`. `size` -1 = the local slot size, else bytes
/// (<= both slot sizes). `layers` may be NULL. Bounded by `llm.SyncKvCacheWaitTime`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_pull_cache(
    inst: *mut llmdd_instance_t,
    src_key: *const llmdd_cache_key_t,
    dst_cache_id: i64,
    batch_index: u32,
    size: i64,
    layers: *const llmdd_layer_range_t,
) -> u32 {
    run("llmdd_pull_cache", || {
        let s = instance(inst)?.session()?;
        let k = key_from_c(input(src_key, "src_key")?)?;
        let sel = layers_from_c(layers)?;
        s.caches()
            .pull_cache(&k, dst_cache_id, batch_index, size, &sel)
    })
}

/// Pulls blocks from a remote cache into blocks `dst_blocks` of local blocks
/// cache `dst_cache_id`. blocks → blocks: `src_key` is `LLMDD_KEY_BLOCKS` (or
/// `LLMDD_KEY_ID_AND_INDEX` with batch_index 0) and `src_blocks` has as many
/// entries as `dst_blocks`. contiguous → blocks: `src_key` names a batch slot
/// and `src_blocks` is empty; the slot is cut into local-block-sized chunks.
#[no_mangle]
pub unsafe extern "C" fn llmdd_pull_blocks(
    inst: *mut llmdd_instance_t,
    src_key: *const llmdd_cache_key_t,
    dst_cache_id: i64,
    src_blocks: *const u64,
    num_src_blocks: usize,
    dst_blocks: *const u64,
    num_dst_blocks: usize,
    layers: *const llmdd_layer_range_t,
) -> u32 {
    run("llmdd_pull_blocks", || {
        let s = instance(inst)?.session()?;
        let k = key_from_c(input(src_key, "src_key")?)?;
        let sb = slice(src_blocks, num_src_blocks, "src_blocks")?;
        let db = slice(dst_blocks, num_dst_blocks, "dst_blocks")?;
        let sel = layers_from_c(layers)?;
        s.caches().pull_blocks(&k, dst_cache_id, sb, db, &sel)
    })
}

/// Pushes slot `src_batch_index` of local batch cache `src_cache_id` into the
/// remote slot named by `dst_key` (`LLMDD_KEY_ID_AND_INDEX`), layer by layer.
/// Needs remote-cache-accessible mode. `size` must be -1.
#[no_mangle]
pub unsafe extern "C" fn llmdd_push_cache(
    inst: *mut llmdd_instance_t,
    dst_key: *const llmdd_cache_key_t,
    src_cache_id: i64,
    src_batch_index: u32,
    size: i64,
    layers: *const llmdd_layer_range_t,
) -> u32 {
    run("llmdd_push_cache", || {
        let s = instance(inst)?.session()?;
        let k = key_from_c(input(dst_key, "dst_key")?)?;
        let sel = layers_from_c(layers)?;
        s.caches()
            .push_cache(&k, src_cache_id, src_batch_index, size, &sel)
    })
}

/// Pushes blocks of local blocks cache `src_cache_id` into the remote blocks
/// cache named by `dst_key` (`LLMDD_KEY_BLOCKS`, or `LLMDD_KEY_ID_AND_INDEX`
/// with batch_index 0), layer by layer. Needs remote-cache-accessible mode.
#[no_mangle]
pub unsafe extern "C" fn llmdd_push_blocks(
    inst: *mut llmdd_instance_t,
    dst_key: *const llmdd_cache_key_t,
    src_cache_id: i64,
    src_blocks: *const u64,
    num_src_blocks: usize,
    dst_blocks: *const u64,
    num_dst_blocks: usize,
    layers: *const llmdd_layer_range_t,
) -> u32 {
    run("llmdd_push_blocks", || {
        let s = instance(inst)?.session()?;
        let k = key_from_c(input(dst_key, "dst_key")?)?;
        let sb = slice(src_blocks, num_src_blocks, "src_blocks")?;
        let db = slice(dst_blocks, num_dst_blocks, "dst_blocks")?;
        let sel = layers_from_c(layers)?;
        s.caches().push_blocks(&k, src_cache_id, sb, db, &sel)
    })
}

/// Copies `size` bytes (-1: the source slot from `offset` on) of slot
/// `src_batch_index` of `src_cache_id` to slot `dst_batch_index` of
/// `dst_cache_id`, at `offset` within each slot, for every tensor.
#[no_mangle]
pub unsafe extern "C" fn llmdd_copy_cache(
    inst: *mut llmdd_instance_t,
    dst_cache_id: i64,
    src_cache_id: i64,
    dst_batch_index: u32,
    src_batch_index: u32,
    offset: u64,
    size: i64,
) -> u32 {
    run("llmdd_copy_cache", || {
        instance(inst)?.session()?.caches().copy_cache(
            dst_cache_id,
            src_cache_id,
            dst_batch_index,
            src_batch_index,
            offset,
            size,
        )
    })
}

/// Copies blocks within one blocks cache: for each pair, block `src` → block `dst`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_copy_blocks(
    inst: *mut llmdd_instance_t,
    cache_id: i64,
    pairs: *const llmdd_block_pair_t,
    num_pairs: usize,
) -> u32 {
    run("llmdd_copy_blocks", || {
        let s = instance(inst)?.session()?;
        let p: Vec<(u64, u64)> = slice(pairs, num_pairs, "pairs")?
            .iter()
            .map(|p| (p.src, p.dst))
            .collect();
        s.caches().copy_blocks(cache_id, &p)
    })
}

unsafe fn cache_ref(id: i64, host: *const llmdd_host_cache_t, what: &str) -> Result<CacheRef> {
    match host.as_ref() {
        None => Ok(CacheRef::Id(id)),
        Some(h) => Ok(CacheRef::Host {
            desc: {
                zeroed(&h.reserved, what)?;
                desc_from_c(&h.desc)?
            },
            addrs: slice(
                h.tensor_addrs,
                h.num_tensor_addrs,
                &format!("{what}.tensor_addrs"),
            )?
            .to_vec(),
        }),
    }
}

/// Swaps blocks between a HOST and a DEVICE blocks cache (swap-in or
/// swap-out). Each side is a cache id, or — when its `*_host` pointer is
/// non-NULL — host memory described without registration (the id is then
/// ignored). For each pair, block `src` of the source → block `dst` of the destination.
#[no_mangle]
pub unsafe extern "C" fn llmdd_swap_blocks(
    inst: *mut llmdd_instance_t,
    src_cache_id: i64,
    src_host: *const llmdd_host_cache_t,
    dst_cache_id: i64,
    dst_host: *const llmdd_host_cache_t,
    pairs: *const llmdd_block_pair_t,
    num_pairs: usize,
) -> u32 {
    run("llmdd_swap_blocks", || {
        let s = instance(inst)?.session()?;
        let src = cache_ref(src_cache_id, src_host, "src_host")?;
        let dst = cache_ref(dst_cache_id, dst_host, "dst_host")?;
        let p: Vec<(u64, u64)> = slice(pairs, num_pairs, "pairs")?
            .iter()
            .map(|p| (p.src, p.dst))
            .collect();
        s.caches().swap_blocks(&src, &dst, &p)
    })
}

/// Reserved in LLM-DataDist: validates `mem_infos` (DEVICE type, non-zero
/// addr and size) and then returns `LLMDD_FEATURE_NOT_ENABLED`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_remap_registered_memory(
    inst: *mut llmdd_instance_t,
    mem_infos: *const llmdd_mem_info_t,
    num_mem_infos: usize,
) -> u32 {
    run("llmdd_remap_registered_memory", || {
        let s = instance(inst)?.session()?;
        let infos = slice(mem_infos, num_mem_infos, "mem_infos")?
            .iter()
            .enumerate()
            .map(|(i, m)| {
                zeroed(&m.reserved, &format!("mem_infos[{i}]"))?;
                Ok(MemInfo {
                    mem_type: m.mem_type,
                    addr: m.addr,
                    size: m.size,
                })
            })
            .collect::<Result<Vec<MemInfo>>>()?;
        s.caches().remap_registered_memory(&infos)
    })
}
