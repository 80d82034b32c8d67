//! `#[repr(C)]` types of the C API and their conversions to engine types.

use std::ffi::c_char;
use std::sync::Arc;

use crate::bail;
use crate::cache::types::{CacheDesc, CacheKey, DataType, LayerSel, Placement, MAX_DIMS};
use crate::datadist::{ClusterInfo, IpInfo};
use crate::ffi::boundary::{cstr, slice};
use crate::ffi::handles::HandleTable;
use crate::status::Result;

/// Opaque LLMDataDist instance. Created by `llmdd_create`, owned by the
/// caller, released only by `llmdd_destroy`. The handle is not a pointer to
/// readable memory: the library looks it up in its table of live instances,
/// so a destroyed or foreign handle is detected and never read.
pub struct llmdd_instance_t {
    _opaque: [u8; 0],
}

/// The live instances, by handle.
pub(crate) static INSTANCES: HandleTable<crate::datadist::Instance, llmdd_instance_t> =
    HandleTable::new();

/// One `{key, value}` option, both NUL-terminated UTF-8 strings (a pair: it
/// has no reserved space and will not grow).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_option_t {
    /// Option name, e.g. `"llm.DeviceId"`; NUL-terminated UTF-8.
    pub key: *const c_char,
    /// Option value as text; NUL-terminated UTF-8.
    pub value: *const c_char,
}

/// An IP endpoint: `ip` is an IPv4 or IPv6 literal (NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_ip_info_t {
    /// IPv4 or IPv6 literal, NUL-terminated.
    pub ip: *const c_char,
    /// TCP port (host byte order).
    pub port: u16,
    /// Reserved, must be zero.
    pub reserved: [u8; 16],
}

/// One peer of `llmdd_link_clusters` / `llmdd_unlink_clusters`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_cluster_info_t {
    /// Cluster id of the peer.
    pub remote_cluster_id: u64,
    /// Accepted and ignored (as in LLM-DataDist).
    pub remote_role_type: i32,
    /// At most one local endpoint (only its IP is used); may be NULL with count 0.
    pub local_ip_infos: *const llmdd_ip_info_t,
    /// Number of entries at `local_ip_infos` (0 or 1).
    pub num_local_ip_infos: usize,
    /// Exactly one remote endpoint (the server's listen ip:port) for a
    /// link or a non-forced unlink; ignored by a forced unlink.
    pub remote_ip_infos: *const llmdd_ip_info_t,
    /// Number of entries at `remote_ip_infos` (1, or any for a forced unlink).
    pub num_remote_ip_infos: usize,
    /// Reserved, must be zero.
    pub reserved: [u8; 32],
}

/// One member of a rank-table comm (`llmdd_link`): a cluster id and its rank
/// id in the rank table (Python's `cluster_rank_info` entry). A map entry: it
/// has no reserved space and will not grow.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_cluster_rank_t {
    /// Cluster id of the member.
    pub cluster_id: u64,
    /// The member's rank id in the rank table.
    pub rank_id: u32,
}

/// Description of a cache: `num_tensors` tensors of one shape and data type.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_cache_desc_t {
    /// `LLMDD_PLACEMENT_HOST` (0) or `LLMDD_PLACEMENT_DEVICE` (1).
    pub placement: u32,
    /// Number of tensors (> 0).
    pub num_tensors: u32,
    /// `LLMDD_DT_*` code.
    pub data_type: u32,
    /// Number of valid entries in `shape` (1..=31).
    pub num_dims: u32,
    /// Dimensions; dim 0 is the batch size or the block count.
    pub shape: [i64; 32],
    /// Accepted and range-checked, unused by transfers (default 0).
    pub batch_dim_index: i32,
    /// Accepted and range-checked, unused (-1 = none).
    pub seq_len_dim_index: i32,
    /// Reserved, must be zero.
    pub reserved: [u8; 64],
}

/// A cache as returned by register/allocate. `tensor_addrs` is owned by the
/// library and stays valid until the cache is unregistered or deallocated
/// (or the instance finalized).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_cache_t {
    /// Id of the cache on this instance (names it in later calls and in peers' keys).
    pub cache_id: i64,
    /// The cache's description, as registered or allocated.
    pub desc: llmdd_cache_desc_t,
    /// One base address per tensor; owned by the library.
    pub tensor_addrs: *const u64,
    /// Number of entries at `tensor_addrs` (= `desc.num_tensors`).
    pub num_tensor_addrs: usize,
    /// Reserved; the library writes zeros.
    pub reserved: [u8; 32],
}

/// How a peer names a cache. `kind` selects the fields that matter:
/// - `LLMDD_KEY_CACHE_KEY`: cluster_id, req_id, model_id, prefix_id (unset = `LLMDD_ID_UNSET`)
/// - `LLMDD_KEY_ID_AND_INDEX`: cluster_id, cache_id, batch_index
/// - `LLMDD_KEY_BLOCKS`: cluster_id, model_id
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_cache_key_t {
    /// `LLMDD_KEY_CACHE_KEY`, `LLMDD_KEY_ID_AND_INDEX` or `LLMDD_KEY_BLOCKS`.
    pub kind: u32,
    /// Batch slot in the peer's cache (`LLMDD_KEY_ID_AND_INDEX` only).
    pub batch_index: u32,
    /// Cluster id of the peer that owns the cache.
    pub cluster_id: u64,
    /// Request id, or `LLMDD_ID_UNSET` (`LLMDD_KEY_CACHE_KEY` only).
    pub req_id: u64,
    /// Prefix id, or `LLMDD_ID_UNSET` (`LLMDD_KEY_CACHE_KEY` only).
    pub prefix_id: u64,
    /// Model id (`LLMDD_KEY_CACHE_KEY` and `LLMDD_KEY_BLOCKS`).
    pub model_id: u64,
    /// Id of the peer's cache (`LLMDD_KEY_ID_AND_INDEX` only; -1 otherwise).
    pub cache_id: i64,
    /// Reserved, must be zero.
    pub reserved: [u8; 16],
}

/// Layer selection for transfers: half-open layer ranges `[begin, end)`;
/// `begin = -1` selects all layers of that side. `tensor_num_per_layer` 0
/// means the default (2). Pass NULL for "all layers, 2 tensors per layer".
/// (C++ inclusive pairs `(first, second)` convert as `begin = first, end = second + 1`.)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_layer_range_t {
    /// First source layer, or -1 for all source layers.
    pub src_begin: i32,
    /// One past the last source layer (ignored when `src_begin` is -1).
    pub src_end: i32,
    /// First destination layer, or -1 for all destination layers.
    pub dst_begin: i32,
    /// One past the last destination layer (ignored when `dst_begin` is -1).
    pub dst_end: i32,
    /// Tensors per layer; 0 means the default (2).
    pub tensor_num_per_layer: u32,
    /// Reserved, must be zero.
    pub reserved: [u8; 12],
}

/// A `(src_block, dst_block)` pair for copy_blocks / swap_blocks (a pair: it
/// has no reserved space and will not grow).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_block_pair_t {
    /// Source block index.
    pub src: u64,
    /// Destination block index.
    pub dst: u64,
}

/// Host memory described for swap_blocks without registration
/// (Python `Cache.create_cpu_cache`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_host_cache_t {
    /// Description of the host memory; `placement` must be `LLMDD_PLACEMENT_HOST`.
    pub desc: llmdd_cache_desc_t,
    /// One base address per tensor, each of the size `desc` implies.
    pub tensor_addrs: *const u64,
    /// Number of entries at `tensor_addrs` (= `desc.num_tensors`).
    pub num_tensor_addrs: usize,
    /// Reserved, must be zero.
    pub reserved: [u8; 16],
}

/// Memory range for remap_registered_memory (`mem_type`: `LLMDD_MEM_TYPE_DEVICE` 0, `LLMDD_MEM_TYPE_HOST` 1).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_mem_info_t {
    /// `LLMDD_MEM_TYPE_DEVICE` (0) or `LLMDD_MEM_TYPE_HOST` (1).
    pub mem_type: u32,
    /// Start address of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub size: u64,
    /// Reserved, must be zero.
    pub reserved: [u8; 8],
}

/// Key kind: request/prefix key (`CacheKey`).
pub const LLMDD_KEY_CACHE_KEY: u32 = 0;
/// Key kind: cache id and batch index (`CacheKeyByIdAndIndex` / C++ `CacheIndex`).
pub const LLMDD_KEY_ID_AND_INDEX: u32 = 1;
/// Key kind: blocks cache of a model (`BlocksCacheKey`).
pub const LLMDD_KEY_BLOCKS: u32 = 2;
/// An unset req_id / prefix_id (2^64 - 1).
pub const LLMDD_ID_UNSET: u64 = u64::MAX;

/// `reserved` space of an input struct must be zero (so a later version can
/// give it a meaning whose zero value is today's behaviour).
pub(crate) fn zeroed(reserved: &[u8], what: &str) -> Result<()> {
    // An OR over every byte (no early exit) compiles to a few vector
    // operations; `any` checks byte by byte, on every transfer call.
    if reserved.iter().fold(0u8, |acc, &b| acc | b) != 0 {
        bail!(ParamInvalid, "{what}.reserved must be zero");
    }
    Ok(())
}

pub(crate) fn desc_from_c(d: &llmdd_cache_desc_t) -> Result<CacheDesc> {
    if d.num_dims == 0 || d.num_dims as usize > MAX_DIMS {
        bail!(
            ParamInvalid,
            "cache_desc.num_dims must be in 1..={MAX_DIMS} (got {})",
            d.num_dims
        );
    }
    zeroed(&d.reserved, "cache_desc")?;
    Ok(CacheDesc {
        placement: Placement::from_code(d.placement)?,
        num_tensors: d.num_tensors,
        data_type: DataType::from_code(d.data_type)?,
        shape: d.shape[..d.num_dims as usize].to_vec(),
        batch_dim_index: d.batch_dim_index,
        seq_len_dim_index: d.seq_len_dim_index,
    })
}

pub(crate) fn desc_to_c(d: &CacheDesc) -> llmdd_cache_desc_t {
    let mut shape = [0i64; 32];
    shape[..d.shape.len()].copy_from_slice(&d.shape);
    llmdd_cache_desc_t {
        placement: d.placement as u32,
        num_tensors: d.num_tensors,
        data_type: d.data_type as u32,
        num_dims: d.shape.len() as u32,
        shape,
        batch_dim_index: d.batch_dim_index,
        seq_len_dim_index: d.seq_len_dim_index,
        reserved: [0; 64],
    }
}

pub(crate) fn key_from_c(k: &llmdd_cache_key_t) -> Result<CacheKey> {
    zeroed(&k.reserved, "cache key")?;
    Ok(match k.kind {
        LLMDD_KEY_CACHE_KEY => CacheKey::Req {
            cluster_id: k.cluster_id,
            req_id: k.req_id,
            model_id: k.model_id,
            prefix_id: k.prefix_id,
        },
        LLMDD_KEY_ID_AND_INDEX => CacheKey::IdIndex {
            cluster_id: k.cluster_id,
            cache_id: k.cache_id,
            batch_index: k.batch_index,
        },
        LLMDD_KEY_BLOCKS => CacheKey::Blocks {
            cluster_id: k.cluster_id,
            model_id: k.model_id,
        },
        other => bail!(
            ParamInvalid,
            "cache key kind {other} is not CACHE_KEY (0), ID_AND_INDEX (1) or BLOCKS (2)"
        ),
    })
}

fn range(begin: i32, end: i32, what: &str) -> Result<Option<(u32, u32)>> {
    if begin == -1 {
        return Ok(None);
    }
    if begin < 0 || end <= begin {
        bail!(ParamInvalid, "{what} layer range [{begin}, {end}) must satisfy 0 <= begin < end (or begin = -1 for all)");
    }
    Ok(Some((begin as u32, end as u32)))
}

pub(crate) fn layers_from_c(p: *const llmdd_layer_range_t) -> Result<LayerSel> {
    // SAFETY: NULL or a valid struct, per the API contract.
    let Some(r) = (unsafe { p.as_ref() }) else {
        return Ok(LayerSel::default());
    };
    zeroed(&r.reserved, "layer range")?;
    Ok(LayerSel {
        src: range(r.src_begin, r.src_end, "src")?,
        dst: range(r.dst_begin, r.dst_end, "dst")?,
        per_layer: if r.tensor_num_per_layer == 0 {
            2
        } else {
            r.tensor_num_per_layer
        },
    })
}

unsafe fn ip_list(p: *const llmdd_ip_info_t, n: usize, what: &str) -> Result<Vec<IpInfo>> {
    slice(p, n, what)?
        .iter()
        .enumerate()
        .map(|(i, x)| {
            zeroed(&x.reserved, &format!("{what}[{i}]"))?;
            Ok(IpInfo {
                ip: cstr(x.ip, &format!("{what}[{i}].ip"))?.to_string(),
                port: x.port,
            })
        })
        .collect()
}

/// Converts a C cluster list.
///
/// # Safety
/// Pointers must be valid per the API contract.
pub(crate) unsafe fn clusters_from_c(
    p: *const llmdd_cluster_info_t,
    n: usize,
) -> Result<Vec<ClusterInfo>> {
    slice(p, n, "clusters")?
        .iter()
        .enumerate()
        .map(|(i, c)| {
            zeroed(&c.reserved, &format!("clusters[{i}]"))?;
            Ok(ClusterInfo {
                remote_cluster_id: c.remote_cluster_id,
                local_ip_infos: ip_list(
                    c.local_ip_infos,
                    c.num_local_ip_infos,
                    &format!("clusters[{i}].local_ip_infos"),
                )?,
                remote_ip_infos: ip_list(
                    c.remote_ip_infos,
                    c.num_remote_ip_infos,
                    &format!("clusters[{i}].remote_ip_infos"),
                )?,
            })
        })
        .collect()
}

/// Converts a C option array into an option map.
///
/// # Safety
/// Pointers must be valid per the API contract.
pub(crate) unsafe fn options_from_c(
    p: *const llmdd_option_t,
    n: usize,
) -> Result<crate::datadist::options::Options> {
    let opts = slice(p, n, "options")?;
    let mut pairs = Vec::with_capacity(opts.len());
    for (i, o) in opts.iter().enumerate() {
        let k = cstr(o.key, &format!("options[{i}].key"))?;
        let v = cstr(o.value, &format!("options[{i}].value"))?;
        pairs.push((k, v));
    }
    crate::datadist::options::collect(pairs)
}

/// The members of a `llmdd_link` call as `(cluster_id, rank_id)` pairs.
///
/// # Safety
/// When non-NULL, `p` must point to `n` valid entries.
pub(crate) unsafe fn cluster_ranks_from_c(
    p: *const llmdd_cluster_rank_t,
    n: usize,
) -> Result<Vec<(u64, u32)>> {
    Ok(slice(p, n, "cluster_ranks")?
        .iter()
        .map(|m| (m.cluster_id, m.rank_id))
        .collect())
}

/// Resolves an instance handle through the table of live instances (never
/// reading the memory the handle might point at).
pub(crate) fn instance(p: *const llmdd_instance_t) -> Result<Arc<crate::datadist::Instance>> {
    INSTANCES.resolve(p, "instance")
}

/// A request/prefix key (`CacheKey`): pass `LLMDD_ID_UNSET` for the unused one
/// of `req_id` / `prefix_id`.
#[no_mangle]
pub extern "C" fn llmdd_cache_key(
    cluster_id: u64,
    req_id: u64,
    model_id: u64,
    prefix_id: u64,
) -> llmdd_cache_key_t {
    llmdd_cache_key_t {
        kind: LLMDD_KEY_CACHE_KEY,
        batch_index: 0,
        cluster_id,
        req_id,
        prefix_id,
        model_id,
        cache_id: -1,
        reserved: [0; 16],
    }
}

/// A key naming a peer's cache by id and batch slot (`CacheKeyByIdAndIndex` / C++ `CacheIndex`).
#[no_mangle]
pub extern "C" fn llmdd_cache_key_by_id(
    cluster_id: u64,
    cache_id: i64,
    batch_index: u32,
) -> llmdd_cache_key_t {
    llmdd_cache_key_t {
        kind: LLMDD_KEY_ID_AND_INDEX,
        batch_index,
        cluster_id,
        req_id: LLMDD_ID_UNSET,
        prefix_id: LLMDD_ID_UNSET,
        model_id: 0,
        cache_id,
        reserved: [0; 16],
    }
}

/// A key naming a peer's blocks cache bound to `model_id` (`BlocksCacheKey`).
#[no_mangle]
pub extern "C" fn llmdd_blocks_cache_key(cluster_id: u64, model_id: u64) -> llmdd_cache_key_t {
    llmdd_cache_key_t {
        kind: LLMDD_KEY_BLOCKS,
        batch_index: 0,
        cluster_id,
        req_id: LLMDD_ID_UNSET,
        prefix_id: LLMDD_ID_UNSET,
        model_id,
        cache_id: -1,
        reserved: [0; 16],
    }
}
