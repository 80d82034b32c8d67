//! Initialisers for the public structs whose all-zero value is not the
//! default of the matching C++/Python type (a zeroed `llmdd_cache_desc_t` is
//! HOST placement, C++ `CacheDesc{}` is device; a zeroed layer range selects no
//! layer, C++ `KvCacheExtParam{}` selects all), and constructors for the small
//! structs usually written inline (their reserved tails stay zero). Structs
//! not listed here are meant to be zero-initialised (`= {0}` / `memset`).

use std::ffi::c_char;

use crate::ffi::constants::{LLMDD_DT_UNDEFINED, LLMDD_PLACEMENT_DEVICE, LLMDD_PLACEMENT_HOST};
use crate::ffi::task::{llmdd_transfer_config_t, LLMDD_TRANSFER_BY_ADDRS};
use crate::ffi::types::{
    llmdd_cache_desc_t, llmdd_cache_key_t, llmdd_cache_t, llmdd_host_cache_t, llmdd_ip_info_t,
    llmdd_layer_range_t, LLMDD_ID_UNSET, LLMDD_KEY_CACHE_KEY,
};

/// A cache description with the C++ `CacheDesc{}` defaults: DEVICE placement,
/// `LLMDD_DT_UNDEFINED`, no tensors, no dims, `batch_dim_index` 0,
/// `seq_len_dim_index` -1 (none), reserved zero. Set `num_tensors`,
/// `data_type`, `num_dims` and `shape` before use.
#[no_mangle]
pub extern "C" fn llmdd_cache_desc_init() -> llmdd_cache_desc_t {
    llmdd_cache_desc_t {
        placement: LLMDD_PLACEMENT_DEVICE,
        num_tensors: 0,
        data_type: LLMDD_DT_UNDEFINED,
        num_dims: 0,
        shape: [0; 32],
        batch_dim_index: 0,
        seq_len_dim_index: -1,
        reserved: [0; 64],
    }
}

/// A cache with the C++ `Cache{}` defaults: `cache_id` -1, a description from
/// `llmdd_cache_desc_init`, no tensor addresses.
#[no_mangle]
pub extern "C" fn llmdd_cache_init() -> llmdd_cache_t {
    llmdd_cache_t {
        cache_id: -1,
        desc: llmdd_cache_desc_init(),
        tensor_addrs: std::ptr::null(),
        num_tensor_addrs: 0,
        reserved: [0; 32],
    }
}

/// Host memory described without registration (Python
/// `Cache.create_cpu_cache`): a description from `llmdd_cache_desc_init` with
/// HOST placement (the only one swap_blocks accepts here), no tensor addresses.
#[no_mangle]
pub extern "C" fn llmdd_host_cache_init() -> llmdd_host_cache_t {
    llmdd_host_cache_t {
        desc: llmdd_cache_desc_t {
            placement: LLMDD_PLACEMENT_HOST,
            ..llmdd_cache_desc_init()
        },
        tensor_addrs: std::ptr::null(),
        num_tensor_addrs: 0,
        reserved: [0; 16],
    }
}

/// An unset request key: `LLMDD_KEY_CACHE_KEY` with `req_id` and `prefix_id`
/// `LLMDD_ID_UNSET` (a zeroed key has prefix_id 0, which is a set prefix),
/// `model_id` 0, `cache_id` -1. The `llmdd_cache_key*` constructors build the
/// usual kinds directly.
#[no_mangle]
pub extern "C" fn llmdd_cache_key_init() -> llmdd_cache_key_t {
    llmdd_cache_key_t {
        kind: LLMDD_KEY_CACHE_KEY,
        batch_index: 0,
        cluster_id: 0,
        req_id: LLMDD_ID_UNSET,
        prefix_id: LLMDD_ID_UNSET,
        model_id: 0,
        cache_id: -1,
        reserved: [0; 16],
    }
}

/// The C++ `KvCacheExtParam{}` defaults: every layer on both sides
/// (`src_begin = dst_begin = -1`) and 2 tensors per layer. (A zeroed range is
/// `[0, 0)`, which selects no layer and is rejected.)
#[no_mangle]
pub extern "C" fn llmdd_layer_range_init() -> llmdd_layer_range_t {
    llmdd_layer_range_t {
        src_begin: -1,
        src_end: -1,
        dst_begin: -1,
        dst_end: -1,
        tensor_num_per_layer: 2,
        reserved: [0; 12],
    }
}

/// A transfer config for `llmdd_transfer_cache_async` with every layer
/// (`llmdd_layer_range_init`), an unset key (`llmdd_cache_key_init`), kind
/// `LLMDD_TRANSFER_BY_ADDRS`, no addresses, source slot 0, reserved zero. Set
/// `kind` and the destination before use.
#[no_mangle]
pub extern "C" fn llmdd_transfer_config_init() -> llmdd_transfer_config_t {
    llmdd_transfer_config_t {
        kind: LLMDD_TRANSFER_BY_ADDRS,
        dst_cluster_id: 0,
        dst_addrs: std::ptr::null(),
        num_dst_addrs: 0,
        cache_key: llmdd_cache_key_init(),
        layers: llmdd_layer_range_init(),
        src_batch_index: 0,
        reserved: [0; 32],
    }
}

/// A layer range `[src_begin, src_end)` → `[dst_begin, dst_end)` with
/// `tensor_num_per_layer` tensors per layer (0 = 2); `begin = -1` selects all
/// layers of that side. Reserved zero. Prefer it to a positional `{...}`
/// initialiser, which would not name the reserved tail.
#[no_mangle]
pub extern "C" fn llmdd_layer_range(
    src_begin: i32,
    src_end: i32,
    dst_begin: i32,
    dst_end: i32,
    tensor_num_per_layer: u32,
) -> llmdd_layer_range_t {
    llmdd_layer_range_t {
        src_begin,
        src_end,
        dst_begin,
        dst_end,
        tensor_num_per_layer,
        reserved: [0; 12],
    }
}

/// An IP endpoint (`ip` is borrowed: it must outlive the struct's use).
/// Reserved zero.
#[no_mangle]
pub extern "C" fn llmdd_ip_info(ip: *const c_char, port: u16) -> llmdd_ip_info_t {
    llmdd_ip_info_t {
        ip,
        port,
        reserved: [0; 16],
    }
}
