"""The C ABI of libllmdd (``include/llmdd.h``), loaded with ctypes.

This module is the only place that knows the C layouts and prototypes. It
loads the library bundled in the package (``llm_datadist/libllmdd.so``), or
the one named by the environment variable ``LLMDD_LIBRARY``, declares every
function it uses with exact argument and result types, and turns a failed
status into :class:`llm_datadist.status.LLMException` carrying the library's
own message.

ctypes releases the GIL around every foreign call, so calls that block
(links, transfers, waits on tasks) let other Python threads run, and a
callback running on a library thread can take the GIL while the caller waits.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    POINTER,
    Structure,
    c_bool,
    c_char_p,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Optional, Sequence

# Library version this package is written against (major.minor must match).
ABI_VERSION = (0, 1)

# ---------------------------------------------------------------------------
# Constants (values of the #defines in include/llmdd.h; tests/test_abi.py
# checks every one of them against the header).
# ---------------------------------------------------------------------------
SUCCESS = 0
FAILED = 0xFFFFFFFF
PARAM_INVALID = 0x5010B005
TIMEOUT = 0x5010B01A

ROLE_PROMPT = 1
ROLE_DECODER = 2
ROLE_MIX = 3

PLACEMENT_HOST = 0
PLACEMENT_DEVICE = 1

MEM_TYPE_DEVICE = 0
MEM_TYPE_HOST = 1

MEM_STATUS_OK = 0
MEM_STATUS_PREPARING = 1
MEM_STATUS_FAILED = 2

KEY_CACHE_KEY = 0
KEY_ID_AND_INDEX = 1
KEY_BLOCKS = 2

TRANSFER_BY_ADDRS = 0
TRANSFER_BY_CACHE_KEY = 1
TASK_RESULT_NOT_STARTED = 0xFFFFFFFE

ID_UNSET = 2**64 - 1
MAX_DIMS = 32

LOG_LEVEL_ERROR = 1
LOG_LEVEL_WARN = 2
LOG_LEVEL_INFO = 3
LOG_LEVEL_DEBUG = 4
LOG_LEVEL_TRACE = 5

LINK_STATS_VERSION = 1
LINK_STATE_UNLINKED = 0
LINK_STATE_LINKING = 1
LINK_STATE_LINKED = 2
LINK_STATE_FAILED = 3
PATH_SAME_PROCESS = 0
PATH_SAME_HOST = 1
PATH_TCP = 2
PATH_HCCL = 3
PATH_COUNT = 4
DIR_PULL = 0
DIR_PUSH = 1
STATS_ERROR_SLOTS = 32
STATS_MESSAGE_LEN = 256


# ---------------------------------------------------------------------------
# Structures (field order, types and sizes as in include/llmdd.h).
# ---------------------------------------------------------------------------
class CacheDescT(Structure):
    """``llmdd_cache_desc_t``."""

    _fields_ = [
        ("placement", c_uint32),
        ("num_tensors", c_uint32),
        ("data_type", c_uint32),
        ("num_dims", c_uint32),
        ("shape", c_int64 * MAX_DIMS),
        ("batch_dim_index", c_int32),
        ("seq_len_dim_index", c_int32),
        ("reserved", c_uint8 * 64),
    ]


class CacheKeyT(Structure):
    """``llmdd_cache_key_t``."""

    _fields_ = [
        ("kind", c_uint32),
        ("batch_index", c_uint32),
        ("cluster_id", c_uint64),
        ("req_id", c_uint64),
        ("prefix_id", c_uint64),
        ("model_id", c_uint64),
        ("cache_id", c_int64),
        ("reserved", c_uint8 * 16),
    ]


class CacheT(Structure):
    """``llmdd_cache_t`` (``tensor_addrs`` is owned by the library)."""

    _fields_ = [
        ("cache_id", c_int64),
        ("desc", CacheDescT),
        ("tensor_addrs", POINTER(c_uint64)),
        ("num_tensor_addrs", c_size_t),
        ("reserved", c_uint8 * 32),
    ]


class LayerRangeT(Structure):
    """``llmdd_layer_range_t`` (half-open ranges, -1 = all layers)."""

    _fields_ = [
        ("src_begin", c_int32),
        ("src_end", c_int32),
        ("dst_begin", c_int32),
        ("dst_end", c_int32),
        ("tensor_num_per_layer", c_uint32),
        ("reserved", c_uint8 * 12),
    ]


class BlockPairT(Structure):
    """``llmdd_block_pair_t``."""

    _fields_ = [("src", c_uint64), ("dst", c_uint64)]


class HostCacheT(Structure):
    """``llmdd_host_cache_t`` (unregistered host memory for swap_blocks)."""

    _fields_ = [
        ("desc", CacheDescT),
        ("tensor_addrs", POINTER(c_uint64)),
        ("num_tensor_addrs", c_size_t),
        ("reserved", c_uint8 * 16),
    ]


class MemInfoT(Structure):
    """``llmdd_mem_info_t``."""

    _fields_ = [
        ("mem_type", c_uint32),
        ("addr", c_uint64),
        ("size", c_uint64),
        ("reserved", c_uint8 * 8),
    ]


class OptionT(Structure):
    """``llmdd_option_t``."""

    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class IpInfoT(Structure):
    """``llmdd_ip_info_t``."""

    _fields_ = [("ip", c_char_p), ("port", c_uint16), ("reserved", c_uint8 * 16)]


class ClusterInfoT(Structure):
    """``llmdd_cluster_info_t``."""

    _fields_ = [
        ("remote_cluster_id", c_uint64),
        ("remote_role_type", c_int32),
        ("local_ip_infos", POINTER(IpInfoT)),
        ("num_local_ip_infos", c_size_t),
        ("remote_ip_infos", POINTER(IpInfoT)),
        ("num_remote_ip_infos", c_size_t),
        ("reserved", c_uint8 * 32),
    ]


class ClusterRankT(Structure):
    """``llmdd_cluster_rank_t``."""

    _fields_ = [("cluster_id", c_uint64), ("rank_id", c_uint32)]


class TransferConfigT(Structure):
    """``llmdd_transfer_config_t``."""

    _fields_ = [
        ("kind", c_uint32),
        ("dst_cluster_id", c_uint64),
        ("dst_addrs", POINTER(c_uint64)),
        ("num_dst_addrs", c_size_t),
        ("cache_key", CacheKeyT),
        ("layers", LayerRangeT),
        ("src_batch_index", c_uint32),
        ("reserved", c_uint8 * 32),
    ]


class LinkStatsT(Structure):
    """``llmdd_link_stats_t`` (written by the library)."""

    _fields_ = [
        ("version", c_uint32),
        ("state", c_uint32),
        ("remote_cluster_id", c_uint64),
        ("comm_id", c_uint64),
        ("path", c_uint32),
        ("dialed", c_uint32),
        ("linked_unix_ns", c_uint64),
        ("since_unix_ns", c_uint64),
        ("ops", (c_uint64 * PATH_COUNT) * 2),
        ("bytes", (c_uint64 * PATH_COUNT) * 2),
        ("failed_ops", c_uint64),
        ("errors", c_uint64 * STATS_ERROR_SLOTS),
        ("in_flight", c_uint64),
        ("latency_count", c_uint64 * 2),
        ("latency_p50_ns", c_uint64 * 2),
        ("latency_p99_ns", c_uint64 * 2),
        ("latency_max_ns", c_uint64 * 2),
        ("served_requests", c_uint64 * 2),
        ("served_bytes", c_uint64 * 2),
        ("served_refused", c_uint64),
        ("last_error_status", c_uint32),
        ("pad", c_uint32),
        ("last_error_unix_ns", c_uint64),
        ("last_error_message", ctypes.c_char * STATS_MESSAGE_LEN),
        ("reserved", c_uint8 * 256),
    ]


class LinkEntryT(Structure):
    """``llmdd_link_entry_t``."""

    _fields_ = [
        ("remote_cluster_id", c_uint64),
        ("state", c_uint32),
        ("dialed", c_uint32),
        ("comm_id", c_uint64),
        ("reserved", c_uint8 * 16),
    ]


#: ``llmdd_layer_sync_fn``: ``bool (*)(void *user_data, uint32_t layer, int64_t timeout_ms)``.
LAYER_SYNC_FN = ctypes.CFUNCTYPE(c_bool, c_void_p, c_uint32, c_int64)
#: ``llmdd_log_callback_t``: ``void (*)(uint32_t level, const char *module, const char *message, void *user_data)``.
LOG_CALLBACK_FN = ctypes.CFUNCTYPE(None, c_uint32, c_char_p, c_char_p, c_void_p)

_P = POINTER
_INST = c_void_p
_TASK = c_void_p

# name: (restype, argtypes)
_PROTOTYPES = {
    "llmdd_version": (c_char_p, []),
    "llmdd_status_name": (c_char_p, [c_uint32]),
    "llmdd_last_error_message": (c_char_p, []),
    "llmdd_create": (c_uint32, [c_uint32, c_uint64, _P(_INST)]),
    "llmdd_destroy": (None, [_INST]),
    "llmdd_init": (c_uint32, [_INST, _P(OptionT), c_size_t]),
    "llmdd_finalize": (c_uint32, [_INST]),
    "llmdd_get_cluster_id": (c_uint32, [_INST, _P(c_uint64)]),
    "llmdd_get_role": (c_uint32, [_INST, _P(c_uint32)]),
    "llmdd_get_backend": (c_uint32, [_INST, _P(c_uint32)]),
    "llmdd_switch_role": (c_uint32, [_INST, c_uint32, _P(OptionT), c_size_t]),
    "llmdd_link_clusters": (c_uint32, [_INST, _P(ClusterInfoT), c_size_t, c_int32, _P(c_uint32)]),
    "llmdd_unlink_clusters": (
        c_uint32,
        [_INST, _P(ClusterInfoT), c_size_t, c_int32, c_bool, _P(c_uint32)],
    ),
    "llmdd_link": (
        c_uint32,
        [_INST, c_char_p, _P(ClusterRankT), c_size_t, c_char_p, _P(c_uint64)],
    ),
    "llmdd_unlink": (c_uint32, [_INST, c_uint64]),
    "llmdd_query_register_mem_status": (c_uint32, [_INST, c_uint64, _P(c_uint32)]),
    "llmdd_register_cache": (
        c_uint32,
        [_INST, _P(CacheDescT), _P(c_uint64), c_size_t, _P(CacheKeyT), c_size_t, c_int32, _P(CacheT)],
    ),
    "llmdd_register_blocks_cache": (
        c_uint32,
        [_INST, _P(CacheDescT), _P(c_uint64), c_size_t, _P(CacheKeyT), c_int32, _P(CacheT)],
    ),
    "llmdd_unregister_cache": (c_uint32, [_INST, c_int64]),
    "llmdd_get_cache": (c_uint32, [_INST, c_int64, _P(CacheT)]),
    "llmdd_allocate_cache": (
        c_uint32,
        [_INST, _P(CacheDescT), _P(CacheKeyT), c_size_t, _P(CacheT)],
    ),
    "llmdd_allocate_blocks_cache": (c_uint32, [_INST, _P(CacheDescT), _P(CacheKeyT), _P(CacheT)]),
    "llmdd_deallocate_cache": (c_uint32, [_INST, c_int64]),
    "llmdd_deallocate_blocks_cache": (c_uint32, [_INST, c_int64]),
    "llmdd_remove_cache_key": (c_uint32, [_INST, _P(CacheKeyT)]),
    "llmdd_pull_cache": (c_uint32, [_INST, _P(CacheKeyT), c_int64, c_uint32, c_int64, _P(LayerRangeT)]),
    "llmdd_pull_blocks": (
        c_uint32,
        [_INST, _P(CacheKeyT), c_int64, _P(c_uint64), c_size_t, _P(c_uint64), c_size_t, _P(LayerRangeT)],
    ),
    "llmdd_push_cache": (c_uint32, [_INST, _P(CacheKeyT), c_int64, c_uint32, c_int64, _P(LayerRangeT)]),
    "llmdd_push_blocks": (
        c_uint32,
        [_INST, _P(CacheKeyT), c_int64, _P(c_uint64), c_size_t, _P(c_uint64), c_size_t, _P(LayerRangeT)],
    ),
    "llmdd_copy_cache": (c_uint32, [_INST, c_int64, c_int64, c_uint32, c_uint32, c_uint64, c_int64]),
    "llmdd_copy_blocks": (c_uint32, [_INST, c_int64, _P(BlockPairT), c_size_t]),
    "llmdd_swap_blocks": (
        c_uint32,
        [_INST, c_int64, _P(HostCacheT), c_int64, _P(HostCacheT), _P(BlockPairT), c_size_t],
    ),
    "llmdd_remap_registered_memory": (c_uint32, [_INST, _P(MemInfoT), c_size_t]),
    "llmdd_transfer_cache_async": (
        c_uint32,
        [
            _INST,
            c_int64,
            LAYER_SYNC_FN,
            c_void_p,
            _P(TransferConfigT),
            c_size_t,
            _P(c_uint64),
            c_size_t,
            _P(c_uint64),
            c_size_t,
            c_uint64,
            _P(_TASK),
        ],
    ),
    "llmdd_task_synchronize": (c_uint32, [_TASK, c_int64]),
    "llmdd_task_get_results": (c_uint32, [_TASK, c_int64, _P(c_uint32), c_size_t]),
    "llmdd_task_free": (None, [_TASK]),
    "llmdd_stats_error_slot": (c_uint32, [c_uint32]),
    "llmdd_get_link_stats": (c_uint32, [_INST, c_uint64, _P(LinkStatsT)]),
    "llmdd_reset_link_stats": (c_uint32, [_INST, c_uint64]),
    "llmdd_reset_all_link_stats": (c_uint32, [_INST]),
    "llmdd_query_link_state": (c_uint32, [_INST, c_uint64, _P(c_uint32), ctypes.c_char_p, c_size_t]),
    "llmdd_list_links": (c_uint32, [_INST, _P(LinkEntryT), c_size_t, _P(c_size_t)]),
}

# Present in newer libraries only; looked up without failing the import.
_OPTIONAL_PROTOTYPES = {
    "llmdd_set_log_callback": (c_uint32, [LOG_CALLBACK_FN, c_void_p]),
    "llmdd_set_log_filter": (c_uint32, [c_char_p]),
}

LIBRARY_ENV = "LLMDD_LIBRARY"


def library_path() -> Path:
    """Path of the libllmdd.so to load: ``$LLMDD_LIBRARY`` or the bundled copy."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent / "libllmdd.so"


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.is_file():
        where = f"${LIBRARY_ENV}={path}" if os.environ.get(LIBRARY_ENV) else f"the bundled {path}"
        raise ImportError(
            f"llm_datadist: libllmdd.so not found ({where}); reinstall the package "
            f"(pip install ./python builds it with cargo) or point {LIBRARY_ENV} at a built libllmdd.so"
        )
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise ImportError(f"llm_datadist: {path} has no function {name} (library too old?)") from e
        fn.restype = restype
        fn.argtypes = argtypes
    for name, (restype, argtypes) in _OPTIONAL_PROTOTYPES.items():
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = restype
            fn.argtypes = argtypes
    return lib


lib = _load()
LIBRARY_VERSION: str = lib.llmdd_version().decode()


def _check_version() -> None:
    parts = LIBRARY_VERSION.split()[-1].split(".")
    try:
        got = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError) as e:
        raise ImportError(f"llm_datadist: unexpected library version string {LIBRARY_VERSION!r}") from e
    if got != ABI_VERSION:
        raise ImportError(
            f"llm_datadist: {library_path()} is {LIBRARY_VERSION}, this package needs "
            f"llmdd {ABI_VERSION[0]}.{ABI_VERSION[1]}.x"
        )


_check_version()


def has(name: str) -> bool:
    """Whether the loaded library exports an optional function."""
    return getattr(lib, name, None) is not None


def last_error() -> str:
    """The calling thread's last llmdd error message."""
    return lib.llmdd_last_error_message().decode("utf-8", "replace")


def status_name(code: int) -> str:
    """The documented name of a status code (``LLM_FAILED`` for unknown codes)."""
    return lib.llmdd_status_name(code).decode()


# ---------------------------------------------------------------------------
# Builders of C arguments.
# ---------------------------------------------------------------------------
def u64_array(values: Sequence[int]):
    """A ``uint64_t[]`` (None for an empty sequence, as the C API allows)."""
    if not values:
        return None
    return (c_uint64 * len(values))(*values)


def options_array(options: dict):
    """``llmdd_option_t[]`` plus its length; the encoded strings live in the array."""
    items = list(options.items())
    arr = (OptionT * max(len(items), 1))()
    for i, (k, v) in enumerate(items):
        arr[i].key = k.encode()
        arr[i].value = v.encode()
    return arr, len(items)


def cache_desc(
    num_tensors: int,
    shape: Sequence[int],
    data_type: int,
    placement: int,
    batch_dim_index: int,
    seq_len_dim_index: int,
) -> CacheDescT:
    """An ``llmdd_cache_desc_t``; a shape with more than 31 dims is left to the library to refuse."""
    d = CacheDescT()
    d.placement = placement
    d.num_tensors = num_tensors
    d.data_type = data_type
    dims = list(shape)[:MAX_DIMS]
    d.num_dims = len(shape) if len(shape) <= MAX_DIMS else MAX_DIMS
    for i, v in enumerate(dims):
        d.shape[i] = v
    d.batch_dim_index = batch_dim_index
    d.seq_len_dim_index = seq_len_dim_index
    return d


def layer_range(
    src: Optional[range], dst: Optional[range], tensor_num_per_layer: int = 0
) -> LayerRangeT:
    """An ``llmdd_layer_range_t``: a Python range is ``[start, stop)``, None is all layers (-1)."""
    r = LayerRangeT()
    r.src_begin, r.src_end = (-1, -1) if src is None else (src.start, src.stop)
    r.dst_begin, r.dst_end = (-1, -1) if dst is None else (dst.start, dst.stop)
    r.tensor_num_per_layer = tensor_num_per_layer
    return r


def key_cache(cluster_id: int, req_id: int, model_id: int, prefix_id: int) -> CacheKeyT:
    """``LLMDD_KEY_CACHE_KEY``."""
    k = CacheKeyT()
    k.kind = KEY_CACHE_KEY
    k.cluster_id = cluster_id
    k.req_id = req_id
    k.model_id = model_id
    k.prefix_id = prefix_id
    k.cache_id = -1
    return k


def key_by_id(cluster_id: int, cache_id: int, batch_index: int) -> CacheKeyT:
    """``LLMDD_KEY_ID_AND_INDEX``."""
    k = CacheKeyT()
    k.kind = KEY_ID_AND_INDEX
    k.cluster_id = cluster_id
    k.cache_id = cache_id
    k.batch_index = batch_index
    k.req_id = ID_UNSET
    k.prefix_id = ID_UNSET
    return k


def key_blocks(cluster_id: int, model_id: int) -> CacheKeyT:
    """``LLMDD_KEY_BLOCKS``."""
    k = CacheKeyT()
    k.kind = KEY_BLOCKS
    k.cluster_id = cluster_id
    k.model_id = model_id
    k.cache_id = -1
    k.req_id = ID_UNSET
    k.prefix_id = ID_UNSET
    return k


def cache_addrs(c: CacheT) -> list:
    """Copies the library-owned ``tensor_addrs`` of a returned cache into a list."""
    return [c.tensor_addrs[i] for i in range(c.num_tensor_addrs)]
