"""``CacheManager``: register, allocate, pull, push, copy and swap caches.

Mirrors ``llm_datadist.v2.cache_manager`` of CANN's package. Every method
checks its arguments as the reference does (``TypeError`` / ``ValueError``
for wrong types and ranges, ``LLMException(LLM_PARAM_INVALID)`` for the
reference's own value checks), then makes one libllmdd call; a refusal by the
library raises ``LLMException`` with its status and message.
"""

from __future__ import annotations

import logging
import threading
from ctypes import byref
from typing import Any, Dict, List, Optional, Tuple, Union

from llm_datadist import _native
from llm_datadist._checks import check_int, check_int_list, check_type
from llm_datadist._handles import InstanceHandle, TaskState, sync_fn
from llm_datadist._memory import addresses_of
from llm_datadist.status import LLMException, check, raise_if_false
from llm_datadist.v2.llm_types import (
    BlocksCacheKey,
    Cache,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    CacheTask,
    LayerSynchronizer,
    MemInfo,
    Memtype,
    Placement,
    TransferConfig,
    TransferWithCacheKeyConfig,
    check_layer_range,
)

__all__ = ["CacheManager"]

_log = logging.getLogger("llm_datadist")
_NUM_TENSORS_PER_LAYER = 2
_INVALID_ID = 2**64 - 1
_PULL_KWARGS = {"src_layer_range", "dst_layer_range", "tensor_num_per_layer"}

_AnyKey = Union[CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey]


def _is_unset(i: int) -> bool:
    return i < 0 or i == _INVALID_ID


def _c_desc(desc: CacheDesc) -> _native.CacheDescT:
    return _native.cache_desc(
        desc.num_tensors,
        desc.shape,
        desc.data_type.value,
        int(desc.placement),
        desc.batch_dim,
        desc.seq_len_dim_index,
    )


def _c_key(key: _AnyKey) -> _native.CacheKeyT:
    if isinstance(key, BlocksCacheKey):
        return _native.key_blocks(key.cluster_id, key.model_id)
    if isinstance(key, CacheKeyByIdAndIndex):
        return _native.key_by_id(key.cluster_id, key.cache_id, key.batch_index)
    return _native.key_cache(key.cluster_id, key.req_id, key.model_id, key.prefix_id)


def _keys_array(keys: List[CacheKey]):
    if not keys:
        return None, 0
    arr = (_native.CacheKeyT * len(keys))()
    for i, k in enumerate(keys):
        arr[i] = _c_key(k)
    return arr, len(keys)


def _pull_layers(name: str, kwargs: Dict[str, Any]) -> Tuple[Optional[range], Optional[range], int]:
    unknown = set(kwargs) - _PULL_KWARGS
    if unknown:
        raise TypeError(f"{name}() got unexpected keyword arguments {sorted(unknown)}")
    src = kwargs.get("src_layer_range")
    dst = kwargs.get("dst_layer_range")
    per_layer = kwargs.get("tensor_num_per_layer", _NUM_TENSORS_PER_LAYER)
    check_layer_range("src_layer_range", src)
    check_layer_range("dst_layer_range", dst)
    return src, dst, per_layer


def _check_per_layer(func: str, per_layer: Any, num_tensors: int) -> None:
    check_int("tensor_num_per_layer", per_layer, "uint32")
    raise_if_false(
        per_layer > 0,
        f"[{func}] param check failed, tensor_num_per_layer ({per_layer}) is invalid, should [1, {num_tensors}]",
    )


def _pairs_array(pairs: List[Tuple[int, int]]):
    if not pairs:
        return None, 0
    arr = (_native.BlockPairT * len(pairs))()
    for i, (s, d) in enumerate(pairs):
        arr[i].src = s
        arr[i].dst = d
    return arr, len(pairs)


class CacheManager:
    """Cache operations of one ``LLMDataDist`` (``LLMDataDist.cache_manager``)."""

    def __init__(self, handle: InstanceHandle, options: Dict[str, str]) -> None:
        self._handle = handle
        self._initialized = True
        self._is_call_linked = False
        self._enabled_mem_pool = bool(options.get("llm.MemPoolConfig"))
        self._enable_host_mem_pool = bool(options.get("llm.HostMemPoolConfig"))
        self._enable_remote_cache_accessible = options.get("llm.EnableRemoteCacheAccessible", "0") == "1"
        self._enable_local_comm_res = "llm.LocalCommRes" in options
        # Arrays/tensors registered by object: kept alive until unregistered.
        self._registered_memory: Dict[int, List[Any]] = {}
        self._memory_lock = threading.Lock()

    def _forget_all_memory(self) -> None:
        """Called on finalize: the library no longer touches any registered memory."""
        with self._memory_lock:
            self._registered_memory.clear()

    @staticmethod
    def check_cache_key(cache_key: CacheKey) -> None:
        """``LLMException`` unless exactly one of ``req_id`` / ``prefix_id`` is set."""
        raise_if_false(
            not (_is_unset(cache_key.req_id) and _is_unset(cache_key.prefix_id)),
            f"one of req id and prefix id should contain valid value:[0, 2**64-1), "
            f"req id:{cache_key.req_id},prefix id:{cache_key.prefix_id}.",
        )
        raise_if_false(
            _is_unset(cache_key.req_id) or _is_unset(cache_key.prefix_id),
            f"only one of req id and prefix id should contain valid value:[0, 2**64-1), "
            f"req id:{cache_key.req_id}, prefix id:{cache_key.prefix_id}.",
        )

    def _make_cache(self, c: _native.CacheT, desc: CacheDesc, registered: bool, blocks: bool) -> Cache:
        return Cache(c.cache_id, desc, _native.cache_addrs(c), self, registered, blocks)

    def _check_pool(self, desc: CacheDesc) -> None:
        raise_if_false(
            (self._enabled_mem_pool and desc.placement == Placement.DEVICE)
            or (self._enable_host_mem_pool and desc.placement == Placement.HOST),
            "you should config memory pool firstly and then set placement that matches it.",
        )

    # -- allocate / deallocate ------------------------------------------------
    def allocate_cache(
        self, cache_desc: CacheDesc, cache_keys: Union[Tuple[CacheKey, ...], List[CacheKey]] = ()
    ) -> Cache:
        """Allocates a batch cache from the pool of its placement.

        Slot i is bound to ``cache_keys[i]`` (a key with ``req_id`` 2**64-1
        leaves its slot unbound); a peer's ``pull_cache`` of a key consumes it
        (request/response mode). Free it with :meth:`deallocate_cache`.
        """
        check_type("cache_desc", cache_desc, CacheDesc, allow_none=False)
        check_type("cache_keys", cache_keys, (list, tuple), CacheKey, allow_none=False)
        raise_if_false(cache_desc.num_tensors > 0, "num_tensors should be bigger than zero.")
        self._check_pool(cache_desc)
        keys, n = _keys_array(list(cache_keys))
        out = _native.CacheT()
        with self._handle.call("[allocate_cache]") as h:
            check(_native.lib.llmdd_allocate_cache(h, byref(_c_desc(cache_desc)), keys, n, byref(out)),
                  "[allocate_cache]")
        return self._make_cache(out, cache_desc, False, False)

    def allocate_blocks_cache(self, cache_desc: CacheDesc, blocks_cache_key: Optional[BlocksCacheKey] = None) -> Cache:
        """Allocates a blocks cache (dim 0 = block count); free it with :meth:`deallocate_blocks_cache`."""
        check_type("cache_desc", cache_desc, CacheDesc, allow_none=False)
        check_type("blocks_cache_key", blocks_cache_key, BlocksCacheKey)
        raise_if_false(cache_desc.num_tensors > 0, "num_tensors should be bigger than zero.")
        self._check_pool(cache_desc)
        cache_desc._is_blocks = True
        key = byref(_c_key(blocks_cache_key)) if blocks_cache_key is not None else None
        out = _native.CacheT()
        with self._handle.call("[allocate_blocks_cache]") as h:
            check(_native.lib.llmdd_allocate_blocks_cache(h, byref(_c_desc(cache_desc)), key, byref(out)),
                  "[allocate_blocks_cache]")
        return self._make_cache(out, cache_desc, False, True)

    def _deallocate(self, cache: Cache, blocks: bool) -> None:
        check_type("cache", cache, Cache, allow_none=False)
        if blocks:
            raise_if_false(cache.is_blocks_cache, "param check failed, cache should be blocks cache.")
            func, fn = "[deallocate_blocks_cache]", _native.lib.llmdd_deallocate_blocks_cache
        else:
            raise_if_false(not cache.is_blocks_cache, "param check failed, cache can not be blocks cache.")
            func, fn = "[deallocate_cache]", _native.lib.llmdd_deallocate_cache
        with self._handle.call(func) as h:
            check(fn(h, cache.cache_id), func)
        cache._tensor_addrs = []
        cache._valid = False

    def deallocate_cache(self, cache: Cache) -> None:
        """Drops the id reference of an allocated batch cache (freed once its keys are gone too)."""
        self._deallocate(cache, blocks=False)

    def deallocate_blocks_cache(self, cache: Cache) -> None:
        """Frees an allocated blocks cache."""
        self._deallocate(cache, blocks=True)

    def remove_cache_key(self, cache_key: CacheKey) -> None:
        """Unbinds a key so it can no longer be pulled (frees its cache if it was deallocated)."""
        check_type("cache_key", cache_key, CacheKey, allow_none=False)
        with self._handle.call("[remove_cache_key]") as h:
            check(_native.lib.llmdd_remove_cache_key(h, byref(_c_key(cache_key))), "[remove_cache_key]")

    # -- register / unregister ------------------------------------------------
    def _remote_accessible(self, desc: CacheDesc, remote_accessible: Optional[bool]) -> int:
        if remote_accessible is not None:
            return int(remote_accessible)
        if self._is_call_linked:
            return 0
        return 1 if desc.placement == Placement.DEVICE else 0

    def _register(
        self,
        func: str,
        cache_desc: CacheDesc,
        addrs: List[Any],
        remote_accessible: Optional[bool],
        register,
    ) -> Tuple[_native.CacheT, List[Any]]:
        check_type("remote_accessible", remote_accessible, bool)
        raise_if_false(
            not (self._is_call_linked and remote_accessible),
            "you can not register remote accessible cache after link.",
        )
        raise_if_false(len(addrs) > 0, "addrs can not be empty.")
        size = cache_desc.size
        ints, keep = addresses_of("addrs", addrs, size)
        for a in ints:
            raise_if_false(a != 0, "addr can not be zero.")
        flag = self._remote_accessible(cache_desc, remote_accessible)
        out = _native.CacheT()
        with self._handle.call(func) as h:
            check(register(h, byref(_c_desc(cache_desc)), _native.u64_array(ints), len(ints), flag, byref(out)),
                  func)
        if keep:
            with self._memory_lock:
                self._registered_memory[out.cache_id] = keep
        return out, keep

    def register_cache(
        self,
        cache_desc: CacheDesc,
        addrs: List[Any],
        cache_keys: Union[Tuple[CacheKey, ...], List[CacheKey]] = (),
        remote_accessible: Optional[bool] = None,
    ) -> Cache:
        """Registers memory you own as a batch cache, one address per tensor.

        ``addrs`` elements may be ints, numpy arrays or CPU torch tensors
        (each at least ``cache_desc.size`` bytes; kept alive until
        unregistered). ``remote_accessible`` None: DEVICE placement is
        remote-accessible, HOST is not (and nothing is after ``link``).
        """
        check_type("cache_desc", cache_desc, CacheDesc, allow_none=False)
        check_type("addrs", addrs, (list, tuple), allow_none=False)
        check_type("cache_keys", cache_keys, (tuple, list), CacheKey, allow_none=False)
        raise_if_false(len(addrs) == cache_desc.num_tensors or not addrs, "addrs length should be equal to num_tensors.")
        keys, n = _keys_array(list(cache_keys))

        def call(h, desc, arr, num, flag, out):
            return _native.lib.llmdd_register_cache(h, desc, arr, num, keys, n, flag, out)

        out, keep = self._register("[register_cache]", cache_desc, addrs, remote_accessible, call)
        cache = self._make_cache(out, cache_desc, True, False)
        cache._memory = keep
        return cache

    def register_blocks_cache(
        self,
        cache_desc: CacheDesc,
        addrs: List[Any],
        blocks_cache_key: Optional[BlocksCacheKey] = None,
        remote_accessible: Optional[bool] = None,
    ) -> Cache:
        """Registers memory you own as a blocks (paged) cache (dim 0 = block count).

        Same address forms and ``remote_accessible`` default as :meth:`register_cache`.
        """
        check_type("cache_desc", cache_desc, CacheDesc, allow_none=False)
        check_type("addrs", addrs, (list, tuple), allow_none=False)
        check_type("blocks_cache_key", blocks_cache_key, BlocksCacheKey)
        cache_desc._is_blocks = True
        key = byref(_c_key(blocks_cache_key)) if blocks_cache_key is not None else None

        def call(h, desc, arr, num, flag, out):
            return _native.lib.llmdd_register_blocks_cache(h, desc, arr, num, key, flag, out)

        out, keep = self._register("[register_blocks_cache]", cache_desc, addrs, remote_accessible, call)
        cache = self._make_cache(out, cache_desc, True, True)
        cache._memory = keep
        return cache

    def unregister_cache(self, cache_id: int) -> None:
        """Unregisters a registered cache (after every link is gone); the memory stays yours."""
        check_int("cache_id", cache_id, "int64")
        with self._handle.call("[unregister_cache]") as h:
            check(_native.lib.llmdd_unregister_cache(h, cache_id), "[unregister_cache]")
        with self._memory_lock:
            self._registered_memory.pop(cache_id, None)

    # -- pull -------------------------------------------------------------------
    def pull_cache(
        self,
        cache_key: Union[CacheKey, CacheKeyByIdAndIndex],
        cache: Cache,
        batch_index: int = 0,
        size: int = -1,
        **kwargs: Any,
    ) -> None:
        """Pulls a peer's batch slot into slot ``batch_index`` of ``cache``.

        ``size`` -1 = the local slot size. Keyword arguments:
        ``src_layer_range`` / ``dst_layer_range`` (``range``, step 1) and
        ``tensor_num_per_layer`` (default 2).
        """
        if self._enable_remote_cache_accessible:
            check_type("cache_key", cache_key, CacheKeyByIdAndIndex, allow_none=False)
        else:
            check_type("cache_key", cache_key, (CacheKey, CacheKeyByIdAndIndex), allow_none=False)
        src, dst, per_layer = _pull_layers("pull_cache", kwargs)
        check_type("cache", cache, Cache, allow_none=False)
        check_int("batch_index", batch_index, "uint32")
        check_int("size", size, "int64")
        raise_if_false(not cache.is_blocks_cache, "param check failed, cache can not be blocks cache.")
        raise_if_false(size == -1 or size > 0,
                       f"[pull_cache] param check failed, size ({size}) is invalid, should be = -1 or > 0")
        _check_per_layer("pull_cache", per_layer, cache.cache_desc.num_tensors)
        if isinstance(cache_key, CacheKey):
            self.check_cache_key(cache_key)
        layers = _native.layer_range(src, dst, per_layer)
        with self._handle.call("[pull_cache]") as h:
            check(_native.lib.llmdd_pull_cache(h, byref(_c_key(cache_key)), cache.cache_id, batch_index, size,
                                               byref(layers)), "[pull_cache]")

    def pull_blocks(
        self,
        src_cache_key: _AnyKey,
        dst_cache: Cache,
        src_blocks: Optional[Union[Tuple[int, ...], List[int]]] = (),
        dst_blocks: Union[Tuple[int, ...], List[int]] = (),
        **kwargs: Any,
    ) -> None:
        """Pulls blocks of a peer's cache into blocks ``dst_blocks`` of ``dst_cache``.

        With a ``BlocksCacheKey`` the peer's blocks ``src_blocks`` are copied
        (same count); with a ``CacheKey`` / ``CacheKeyByIdAndIndex`` the peer's
        batch slot is cut into blocks (``src_blocks`` empty). Keyword
        arguments as :meth:`pull_cache`.
        """
        src, dst, per_layer = _pull_layers("pull_blocks", kwargs)
        check_type("src_cache_key", src_cache_key, (CacheKey, CacheKeyByIdAndIndex, BlocksCacheKey), allow_none=False)
        check_type("dst_cache", dst_cache, Cache, allow_none=False)
        src_blocks = check_int_list("src_blocks", src_blocks, "uint64", allow_none=True)
        dst_blocks = check_int_list("dst_blocks", dst_blocks, "uint64")
        raise_if_false(dst_cache.is_blocks_cache, "param check failed, dst_cache should be blocks cache.")
        raise_if_false(len(dst_blocks) > 0, "dst_blocks can not be empty.")
        _check_per_layer("pull_blocks", per_layer, dst_cache.cache_desc.num_tensors)
        if isinstance(src_cache_key, BlocksCacheKey):
            raise_if_false(len(src_blocks) > 0, "src_blocks can not be empty.")
        else:
            if isinstance(src_cache_key, CacheKey):
                self.check_cache_key(src_cache_key)
            raise_if_false(
                len(src_blocks) == 0,
                "src_blocks should be empty when src_cache_key is not instance of BlocksCacheKey.",
            )
        layers = _native.layer_range(src, dst, per_layer)
        self._blocks_call("[pull_blocks]", _native.lib.llmdd_pull_blocks, src_cache_key, dst_cache, src_blocks,
                          dst_blocks, layers)

    def _blocks_call(self, func: str, fn, key: _AnyKey, cache: Cache, src_blocks, dst_blocks, layers) -> None:
        """One ``llmdd_pull_blocks`` / ``llmdd_push_blocks`` call (same argument list)."""
        with self._handle.call(func) as h:
            check(fn(h, byref(_c_key(key)), cache.cache_id, _native.u64_array(src_blocks), len(src_blocks),
                     _native.u64_array(dst_blocks), len(dst_blocks), byref(layers)), func)

    # -- push -------------------------------------------------------------------
    def _push_layers(
        self, func: str, src_cache: Cache, src: Optional[range], dst: Optional[range], per_layer: Any
    ) -> _native.LayerRangeT:
        _check_per_layer(func, per_layer, src_cache.cache_desc.num_tensors)
        check_layer_range("src_layer_range", src)
        check_layer_range("dst_layer_range", dst)
        num_layers = src_cache.cache_desc.num_tensors // per_layer
        src_n = len(src) if src is not None else num_layers
        dst_n = len(dst) if dst is not None else num_layers
        raise_if_false(src_n == dst_n, "src_layer_range size should be equal to size of dst_layer_range size.")
        return _native.layer_range(src, dst, per_layer)

    def push_cache(
        self,
        dst_cache_key: CacheKeyByIdAndIndex,
        src_cache: Cache,
        src_batch_index: int = 0,
        src_layer_range: range = None,
        dst_layer_range: range = None,
        size: int = -1,
        tensor_num_per_layer: int = _NUM_TENSORS_PER_LAYER,
    ) -> None:
        """Pushes slot ``src_batch_index`` of ``src_cache`` into the peer's slot named by ``dst_cache_key``.

        Remote-cache-accessible mode only; ``size`` must be -1.
        """
        raise_if_false(self._enable_remote_cache_accessible,
                       "push_cache is only supported while enable_remote_cache_accessible is True")
        check_type("dst_cache_key", dst_cache_key, CacheKeyByIdAndIndex, allow_none=False)
        check_type("src_cache", src_cache, Cache, allow_none=False)
        check_int("src_batch_index", src_batch_index, "uint32")
        raise_if_false(not src_cache.is_blocks_cache, "param check failed, cache can not be blocks cache.")
        layers = self._push_layers("push_cache", src_cache, src_layer_range, dst_layer_range, tensor_num_per_layer)
        check_int("size", size, "int64")
        raise_if_false(size == -1, f"[push_cache] param check failed, size ({size}) is invalid, should be = -1.")
        with self._handle.call("[push_cache]") as h:
            check(_native.lib.llmdd_push_cache(h, byref(_c_key(dst_cache_key)), src_cache.cache_id,
                                               src_batch_index, size, byref(layers)), "[push_cache]")

    def push_blocks(
        self,
        dst_cache_key: BlocksCacheKey,
        src_cache: Cache,
        src_blocks: Optional[Union[Tuple[int, ...], List[int]]] = (),
        dst_blocks: Union[Tuple[int, ...], List[int]] = (),
        src_layer_range: range = None,
        dst_layer_range: range = None,
        tensor_num_per_layer: int = _NUM_TENSORS_PER_LAYER,
    ) -> None:
        """Pushes blocks ``src_blocks`` of ``src_cache`` into blocks ``dst_blocks`` of the peer's cache.

        Remote-cache-accessible mode only. An empty ``src_blocks`` pushes
        from a contiguous source, as in the reference.
        """
        raise_if_false(self._enable_remote_cache_accessible,
                       "push_blocks is only supported while enable_remote_cache_accessible is True")
        check_type("dst_cache_key", dst_cache_key, BlocksCacheKey, allow_none=False)
        check_type("src_cache", src_cache, Cache, allow_none=False)
        src_blocks = check_int_list("src_blocks", src_blocks, "uint64", allow_none=True)
        dst_blocks = check_int_list("dst_blocks", dst_blocks, "uint64")
        raise_if_false(src_cache.is_blocks_cache, "param check failed, cache should be blocks cache.")
        raise_if_false(len(dst_blocks) > 0, "dst_blocks can not be empty.")
        layers = self._push_layers("push_blocks", src_cache, src_layer_range, dst_layer_range, tensor_num_per_layer)
        self._blocks_call("[push_blocks]", _native.lib.llmdd_push_blocks, dst_cache_key, src_cache, src_blocks,
                          dst_blocks, layers)

    # -- local copies -------------------------------------------------------------
    def copy_cache(
        self,
        dst: Cache,
        src: Cache,
        dst_batch_index: int = 0,
        src_batch_index: int = 0,
        offset: int = 0,
        size: int = -1,
        req_id: Optional[int] = None,
    ) -> None:
        """Copies ``size`` bytes (-1: the rest of the slot) at ``offset`` of every tensor between slots.

        ``req_id`` is only recorded in the log, as in the reference.
        """
        check_type("dst", dst, Cache, allow_none=False)
        check_type("src", src, Cache, allow_none=False)
        check_int("dst_batch_index", dst_batch_index, "uint32")
        check_int("src_batch_index", src_batch_index, "uint32")
        check_int("offset", offset, "uint64")
        check_int("size", size, "int64")
        raise_if_false(not src.is_blocks_cache, "param check failed, src cache can not be blocks cache.")
        raise_if_false(not dst.is_blocks_cache, "param check failed, dst cache can not be blocks cache.")
        raise_if_false(size == -1 or size > 0,
                       f"[copy_cache] param check failed, size ({size}) is invalid, should be = -1 or > 0")
        if req_id is not None:
            check_int("req_id", req_id, "uint64")
        _log.debug("[copy_cache] dst=%d src=%d req_id=%s", dst.cache_id, src.cache_id, req_id)
        with self._handle.call("[copy_cache]") as h:
            check(_native.lib.llmdd_copy_cache(h, dst.cache_id, src.cache_id, dst_batch_index, src_batch_index,
                                               offset, size), "[copy_cache]")

    def copy_blocks(self, cache: Cache, copy_block_info: Dict[int, List[int]]) -> None:
        """Copies blocks within one blocks cache: ``{src_block: [dst_block, ...]}``."""
        check_type("cache", cache, Cache, allow_none=False)
        check_type("copy_block_info", copy_block_info, dict, allow_none=False)
        pairs = []
        for s, ds in copy_block_info.items():
            check_type("copy_block_info key", s, int, allow_none=False)
            check_type(f"copy_block_info[{s}]", ds, list, int, allow_none=False)
            check_int("copy_block_info key", s, "uint64")
            for d in ds:
                check_int(f"copy_block_info[{s}]", d, "uint64")
                pairs.append((s, d))
        raise_if_false(cache.is_blocks_cache, "param check failed, cache should be blocks cache.")
        arr, n = _pairs_array(pairs)
        with self._handle.call("[copy_blocks]") as h:
            check(_native.lib.llmdd_copy_blocks(h, cache.cache_id, arr, n), "[copy_blocks]")

    def swap_blocks(self, src_cache: Cache, dst_cache: Cache, src_to_dst: Dict[int, int]) -> None:
        """Swaps blocks between a HOST and a DEVICE blocks cache (``{src_block: dst_block}``)."""
        check_type("src", src_cache, Cache, allow_none=False)
        check_type("dst", dst_cache, Cache, allow_none=False)
        raise_if_false(src_cache.is_blocks_cache, "param check failed, src cache should be blocks cache.")
        raise_if_false(dst_cache.is_blocks_cache, "param check failed, dst cache should be blocks cache.")
        check_type("src_to_dst", src_to_dst, dict, allow_none=False)
        sd, dd = src_cache.cache_desc, dst_cache.cache_desc
        src_block = sd.size // sd.batch_size
        dst_block = dd.size // dd.batch_size
        raise_if_false(src_block == dst_block,
                       f"src block size:{src_block} and dst block size:{dst_block} must be equal")
        raise_if_false(sd.num_tensors == dd.num_tensors,
                       f"src num_tensors:{sd.num_tensors} and dst num_tensors:{dd.num_tensors} must be equal")
        pairs = []
        for s, d in src_to_dst.items():
            check_type("src_to_dst key", s, int, allow_none=False)
            check_type("src_to_dst value", d, int, allow_none=False)
            raise_if_false(0 <= s < sd.batch_size, f"src_block_index:{s} must be in [0, {sd.batch_size})")
            raise_if_false(0 <= d < dd.batch_size, f"dst_block_index:{d} must be in [0, {dd.batch_size})")
            pairs.append((s, d))
        swap_in = sd.placement == Placement.HOST and dd.placement == Placement.DEVICE
        swap_out = sd.placement == Placement.DEVICE and dd.placement == Placement.HOST
        raise_if_false(swap_in or swap_out,
                       f"swap src placement:{sd.placement} to dst placement:{dd.placement} is not support")

        def side(cache: Cache):
            if cache.cache_id >= 0:
                return cache.cache_id, None, None
            host = _native.HostCacheT()
            host.desc = _c_desc(cache.cache_desc)
            arr = _native.u64_array(cache.tensor_addrs)
            host.tensor_addrs = arr
            host.num_tensor_addrs = len(cache.tensor_addrs)
            return -1, host, arr

        src_id, src_host, _src_arr = side(src_cache)
        dst_id, dst_host, _dst_arr = side(dst_cache)
        arr, n = _pairs_array(pairs)
        with self._handle.call("[swap_blocks]") as h:
            check(_native.lib.llmdd_swap_blocks(h, src_id, byref(src_host) if src_host else None, dst_id,
                                                byref(dst_host) if dst_host else None, arr, n), "[swap_blocks]")

    def remap_registered_memory(self, mem_infos: Union[MemInfo, List[MemInfo]]) -> None:
        """Remaps registered memory after a memory fault (validated; llmdd does not support it yet)."""
        raise_if_false(isinstance(mem_infos, (list, MemInfo)),
                       f"mem_infos type only support list of MemInfo or MemInfo, but got {type(mem_infos)}.")
        infos = mem_infos if isinstance(mem_infos, list) else [mem_infos]
        for i, m in enumerate(infos):
            raise_if_false(isinstance(m, MemInfo),
                           f"mem_infos[{i}] type only support MemInfo, but got {type(m)}.")
            raise_if_false(m.mem_type == Memtype.MEM_TYPE_DEVICE,
                           f"check mem_info.mem_type failed, only support Memtype.MEM_TYPE_DEVICE, index={i}.")
            raise_if_false(m.addr != 0, f"check mem_info.addr failed, addr can not be zero, index={i}.")
            raise_if_false(m.size > 0, f"check mem_info.size failed, size must be > 0, index={i}.")
        arr = (_native.MemInfoT * max(len(infos), 1))()
        for i, m in enumerate(infos):
            arr[i].mem_type = m.mem_type.value
            arr[i].addr = m.addr
            arr[i].size = m.size
        with self._handle.call("[remap_registered_memory]") as h:
            check(_native.lib.llmdd_remap_registered_memory(h, arr, len(infos)), "[remap_registered_memory]")

    def set_is_call_linked(self) -> None:
        """Marks that ``link`` was called (later registrations default to not remote-accessible)."""
        self._is_call_linked = True

    # -- layer-wise async transfer ------------------------------------------------
    def transfer_cache_async(
        self,
        src_cache: Cache,
        layer_synchronizer: LayerSynchronizer,
        transfer_configs: Union[
            List[Union[TransferConfig, TransferWithCacheKeyConfig]],
            Tuple[Union[TransferConfig, TransferWithCacheKeyConfig], ...],
        ],
        src_block_indices: Optional[Union[List[int], Tuple[int, ...]]] = None,
        dst_block_indices: Optional[Union[List[int], Tuple[int, ...]]] = None,
        dst_block_memory_size: Optional[int] = None,
    ) -> CacheTask:
        """Sends the layers of ``src_cache`` to every destination as the synchronizer approves each.

        Returns at once with a :class:`CacheTask`. ``TransferConfig`` in
        request/response mode, ``TransferWithCacheKeyConfig`` in
        remote-cache-accessible mode. Block arguments are shared by every
        config: blocks -> blocks (``src_block_indices`` and
        ``dst_block_indices``), contiguous -> blocks (``dst_block_indices``
        and ``dst_block_memory_size``), or neither.
        """
        check_type("src_cache", src_cache, Cache, allow_none=False)
        raise_if_false(src_cache.cache_desc.placement != Placement.HOST, "src cache not support placement HOST")
        src_blocks = check_int_list("src_block_indices", src_block_indices, "uint64", allow_none=True)
        dst_blocks = check_int_list("dst_block_indices", dst_block_indices, "uint64", allow_none=True)
        if dst_block_memory_size is not None:
            check_int("dst_block_memory_size", dst_block_memory_size, "uint64")
        if src_blocks:
            raise_if_false(len(dst_blocks) > 0, "transfer from blocks to cache is not supported")
            raise_if_false(len(src_blocks) == len(dst_blocks),
                           f"num_block_indices mismatches, src_num = {len(src_blocks)}, dst_num = {len(dst_blocks)}")
        elif dst_blocks:
            raise_if_false(dst_block_memory_size is not None,
                           "dst_block_memory_size must be set when transfer from cache to blocks")
        check_type("layer_synchronizer", layer_synchronizer, LayerSynchronizer, allow_none=False)
        kind = TransferWithCacheKeyConfig if self._enable_remote_cache_accessible else TransferConfig
        try:
            check_type("transfer_configs", transfer_configs, (list, tuple), kind, allow_none=False)
        except TypeError as e:
            if self._enable_remote_cache_accessible:
                raise TypeError(f"While enable_remote_cache_accessible is True, {e}") from None
            raise
        raise_if_false(bool(dst_blocks) or dst_block_memory_size in (None, 0),
                       f"dst_block_memory_size ({dst_block_memory_size}) is neither None nor 0 while dst is not blocks")
        desc = src_cache.cache_desc
        raise_if_false(desc.num_tensors % 2 == 0, f"cache_desc.num_tensors ({desc.num_tensors}) is not even")
        num_layers = desc.num_tensors // 2
        raise_if_false(len(transfer_configs) > 0, "transfer_configs can not be empty.")
        configs = (_native.TransferConfigT * len(transfer_configs))()
        keep: List[Any] = []
        for i, tc in enumerate(transfer_configs):
            if tc.src_layer_range is None:
                tc.src_layer_range = range(0, num_layers)  # as the reference does
            r = tc.src_layer_range
            if src_blocks:
                raise_if_false(tc.src_batch_index == 0,
                               f"Invalid TransferConfig, src_batch_index ({tc.src_batch_index}) != 0 while src is blocks")
            raise_if_false(0 <= r.start < r.stop <= num_layers,
                           f"src_layer_range: {r} out of range, src_layer_num = {num_layers}")
            c = configs[i]
            c.src_batch_index = tc.src_batch_index
            if isinstance(tc, TransferConfig):
                want = len(r) * _NUM_TENSORS_PER_LAYER
                raise_if_false(len(tc.dst_addrs) == want,
                               f"expect {want} dst_addrs, but len(dst_addrs) = {len(tc.dst_addrs)}, range = {r}")
                c.kind = _native.TRANSFER_BY_ADDRS
                c.dst_cluster_id = tc.dst_cluster_id
                arr = _native.u64_array(list(tc.dst_addrs))
                keep.append(arr)
                c.dst_addrs = arr
                c.num_dst_addrs = len(tc.dst_addrs)
                c.layers = _native.layer_range(r, None, _NUM_TENSORS_PER_LAYER)
            else:
                c.kind = _native.TRANSFER_BY_CACHE_KEY
                c.cache_key = _c_key(tc.cache_key)
                c.layers = _native.layer_range(r, tc.dst_layer_range, _NUM_TENSORS_PER_LAYER)
        self._handle.sweep_orphans()
        state = TaskState(self._handle, layer_synchronizer, len(transfer_configs))
        state.register()
        try:
            with self._handle.call("[transfer_cache_async]") as h:
                check(_native.lib.llmdd_transfer_cache_async(
                    h, src_cache.cache_id, sync_fn(), state.id, configs, len(transfer_configs),
                    _native.u64_array(src_blocks), len(src_blocks), _native.u64_array(dst_blocks), len(dst_blocks),
                    dst_block_memory_size or 0, byref(state.handle)), "[transfer_cache_async]")
        except BaseException:
            state.unregister()
            raise
        return CacheTask(state, self._handle)
