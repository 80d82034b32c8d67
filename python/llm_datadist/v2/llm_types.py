"""Value types of the v2 API: cache descriptions, caches, keys, transfer configs, tasks.

Mirrors ``llm_datadist.v2.llm_types`` of CANN's package (same names,
constructor arguments, defaults, properties and checks).
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from enum import Enum, IntEnum
from typing import Any, List, Optional, Sequence, Tuple, Union

from llm_datadist._checks import check_int, check_ints, check_type
from llm_datadist._memory import addresses_of
from llm_datadist.data_type import DataType, element_size
from llm_datadist.status import LLMException, LLMStatusCode, raise_if_false

__all__ = [
    "CacheDesc",
    "CacheKey",
    "CacheKeyByIdAndIndex",
    "BlocksCacheKey",
    "Placement",
    "CacheTask",
    "TransferConfig",
    "TransferWithCacheKeyConfig",
    "LayerSynchronizer",
    "Cache",
    "RegisterMemStatus",
    "Memtype",
    "MemInfo",
]

_INVALID_ID = 2**64 - 1


class RegisterMemStatus(Enum):
    """Status of the memory exchange of a rank-table comm (``query_register_mem_status``)."""

    OK = 0
    PREPARING = 1
    FAILED = 2


class Memtype(Enum):
    """Memory type of a :class:`MemInfo` (note: reversed relative to :class:`Placement`)."""

    MEM_TYPE_DEVICE = 0
    MEM_TYPE_HOST = 1


class MemInfo:
    """A memory range for ``remap_registered_memory``."""

    def __init__(self, mem_type: Memtype, addr: int, size: int) -> None:
        check_type("mem_type", mem_type, Memtype)
        check_type("addr", addr, int)
        check_type("size", size, int)
        self._mem_type = mem_type
        self._addr = addr
        self._size = size

    @property
    def mem_type(self) -> Memtype:
        """Type of the memory."""
        return self._mem_type

    @property
    def addr(self) -> int:
        """Start address."""
        return self._addr

    @property
    def size(self) -> int:
        """Size in bytes."""
        return self._size

    def __repr__(self) -> str:
        return f"MemInfo(mem_type={self._mem_type}, addr={self._addr}, size={self._size})"

    __str__ = __repr__


class Placement(IntEnum):
    """Where a cache's memory lives (on the host backend both are host memory)."""

    HOST = 0
    DEVICE = 1

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"


class CacheDesc:
    """Describes a cache: ``num_tensors`` tensors of one shape and data type.

    Args:
        num_tensors: number of tensors (every operation applies to all of them).
        shape: tensor shape; dim ``batch_dim_index`` is the batch size, or the
            block count of a blocks cache.
        data_type: element type.
        placement: ``Placement.DEVICE`` (default) or ``Placement.HOST``.
        batch_dim_index: index of the batch dim (default 0).
        seq_len_dim_index: index of the sequence-length dim, or -1 (default).
        kv_tensor_format: data format label (accepted, unused by transfers).

    Examples:
        >>> desc = CacheDesc(80, [4, 256], DataType.DT_FLOAT16)
        >>> desc.size  # bytes of one tensor
        2048
    """

    def __init__(
        self,
        num_tensors: int,
        shape: Union[Tuple[int, ...], List[int]],
        data_type: DataType,
        placement: Placement = Placement.DEVICE,
        batch_dim_index: int = 0,
        seq_len_dim_index: int = -1,
        kv_tensor_format: Optional[str] = None,
    ) -> None:
        check_int("num_tensors", num_tensors, "uint32")
        check_type("shape", shape, (tuple, list), int, allow_none=False)
        check_type("data_type", data_type, DataType, allow_none=False)
        check_type("placement", placement, Placement, allow_none=False)
        check_type("batch_dim_index", batch_dim_index, int, allow_none=False)
        check_int("seq_len_dim_index", seq_len_dim_index, "int32")
        check_type("kv_tensor_format", kv_tensor_format, str)
        raise_if_false(
            0 <= batch_dim_index < len(shape),
            f"batch_dim_index {batch_dim_index} out of range, [0, {len(shape)})",
        )
        raise_if_false(
            seq_len_dim_index == -1 or 0 <= seq_len_dim_index < len(shape),
            f"seq_len_dim_index {seq_len_dim_index} is invalid, should be -1 or in range [0, {len(shape)})",
        )
        check_ints("shape", shape, "int64")
        self._num_tensors = num_tensors
        self._shape = shape
        self._data_type = data_type
        self._placement = placement
        self._batch_dim = batch_dim_index
        self._batch_size = shape[batch_dim_index]
        self._seq_len_dim_index = seq_len_dim_index
        self._kv_tensor_format = kv_tensor_format
        self._is_blocks = False

    def __repr__(self) -> str:
        return (
            f"CacheDesc(num_tensors={self._num_tensors}, shape={self._shape}, data_type={self._data_type}, "
            f"placement={self._placement}, batch_dim_index={self._batch_dim}, "
            f"seq_len_dim_index={self._seq_len_dim_index}, kv_tensor_format={self._kv_tensor_format})"
        )

    @property
    def num_tensors(self) -> int:
        """Number of tensors."""
        return self._num_tensors

    @property
    def shape(self) -> Union[Tuple[int, ...], List[int]]:
        """Tensor shape."""
        return self._shape

    def update_dim(self, dim_index: int, dim_value: int) -> None:
        """Sets one dimension of the shape."""
        shape = list(self._shape)
        shape[dim_index] = dim_value
        self._shape = shape if isinstance(self._shape, list) else tuple(shape)
        self._batch_size = self._shape[self._batch_dim]

    @property
    def data_type(self) -> DataType:
        """Element type."""
        return self._data_type

    @property
    def batch_dim(self) -> int:
        """Index of the batch dim."""
        return self._batch_dim

    @property
    def batch_size(self) -> int:
        """Batch size (the block count of a blocks cache)."""
        return self._batch_size

    @property
    def seq_len_dim_index(self) -> int:
        """Index of the sequence-length dim, or -1."""
        return self._seq_len_dim_index

    @property
    def size(self) -> int:
        """Bytes of one tensor (``LLMException`` if the shape has a negative dim)."""
        n = element_size(self._data_type)
        for dim in self._shape:
            if dim < 0:
                raise LLMException(
                    f"Failed to calc tensor size, shape = {self._shape}, data_type = {self._data_type}",
                    status_code=LLMStatusCode.LLM_PARAM_INVALID,
                )
            n *= dim
        return n

    @property
    def kv_tensor_format(self) -> Optional[str]:
        """Data format label."""
        return self._kv_tensor_format

    @property
    def placement(self) -> Placement:
        """Where the memory lives."""
        return self._placement


class Cache:
    """A cache returned by ``register_cache`` / ``allocate_cache`` (and the blocks variants).

    Users do not construct it, except host memory for ``swap_blocks`` through
    :meth:`create_cpu_cache`.
    """

    def __init__(
        self,
        cache_id: int,
        cache_desc: CacheDesc,
        tensor_addrs: List[int],
        cache_manager: Any,
        is_registered: bool,
        is_blocks_cache: bool,
    ) -> None:
        check_int("cache_id", cache_id, "int64")
        self._cache_id = cache_id
        self._cache_desc = cache_desc
        self._tensor_addrs = tensor_addrs
        self._valid = True
        self._cache_manager = cache_manager
        self._is_registered = is_registered
        self._is_blocks_cache = is_blocks_cache
        self._memory: List[Any] = []  # arrays/tensors given as addresses, kept alive

    @property
    def cache_id(self) -> int:
        """Id of the cache in its instance (-1 for a CPU cache)."""
        return self._cache_id

    @property
    def cache_desc(self) -> CacheDesc:
        """The description it was created with."""
        return self._cache_desc

    @classmethod
    def create_cpu_cache(cls, cache_desc: CacheDesc, addrs: List[Any]) -> "Cache":
        """Describes host memory for ``swap_blocks`` without registering it.

        ``addrs``: one address per tensor (int, numpy array or CPU torch tensor).
        """
        check_type("cache_desc", cache_desc, CacheDesc, allow_none=False)
        check_type("addrs", addrs, (list, tuple), allow_none=False)
        raise_if_false(cache_desc.placement == Placement.HOST, "cache_desc placement must be HOST")
        raise_if_false(
            cache_desc.num_tensors == len(addrs),
            f"cache_desc num_tensors:{cache_desc.num_tensors} not equal addrs num:{len(addrs)}",
        )
        ints, keep = addresses_of("addrs", addrs, cache_desc.size)
        cache = cls(-1, cache_desc, ints, None, False, True)
        cache._memory = keep
        return cache

    @property
    def tensor_addrs(self) -> List[int]:
        """Address of each tensor (empty after the cache is deallocated)."""
        return self._tensor_addrs

    @property
    def is_blocks_cache(self) -> bool:
        """Whether it is a blocks (paged) cache."""
        return self._is_blocks_cache

    def __str__(self) -> str:
        return (
            f"Cache(cache_id = {self._cache_id}, device_tensor_addrs = {len(self._tensor_addrs)}, "
            f"is_blocks_cache = {self._is_blocks_cache})"
        )

    __repr__ = __str__


def _key_args(args: Sequence[Any], kwargs: dict, names: Sequence[str], limit: int) -> dict:
    raise_if_false(len(args) + len(kwargs) <= limit, "Param num is over limit")
    for name, value in zip(names, args):
        kwargs[name] = value
    raise_if_false(
        "prompt_cluster_id" in kwargs or "cluster_id" in kwargs,
        "Param prompt_cluster_id or cluster_id is required",
    )
    valid = {"prompt_cluster_id", *names}
    for k in kwargs:
        raise_if_false(k in valid, f"Unsupported param:{k}")
    return kwargs


class BlocksCacheKey:
    """Names the blocks cache of a model in a cluster: ``BlocksCacheKey(cluster_id, model_id=0)``.

    ``prompt_cluster_id`` is accepted as an alias of ``cluster_id``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kw = _key_args(args, kwargs, ("cluster_id", "model_id"), 2)
        self._cluster_id_key = "cluster_id" if "cluster_id" in kw else "prompt_cluster_id"
        self._cluster_id = kw[self._cluster_id_key]
        self._model_id = kw.get("model_id", 0)
        check_int("cluster_id", self._cluster_id, "uint64")
        check_int("model_id", self._model_id, "uint64")

    @property
    def prompt_cluster_id(self) -> int:
        """Cluster id (alias)."""
        return self._cluster_id

    @property
    def cluster_id(self) -> int:
        """Cluster id of the cache's owner."""
        return self._cluster_id

    @property
    def model_id(self) -> int:
        """Model id (default 0)."""
        return self._model_id

    def __repr__(self) -> str:
        return f"BlocksCacheKey({self._cluster_id_key}={self._cluster_id}, model_id={self._model_id})"


class CacheKey:
    """Names a request's (or prefix's) batch slot: ``CacheKey(cluster_id, req_id, model_id=0, prefix_id=UNSET)``.

    Exactly one of ``req_id`` and ``prefix_id`` must be set (not 2**64-1)
    when the key is used to pull.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kw = _key_args(args, kwargs, ("cluster_id", "req_id", "model_id", "prefix_id"), 4)
        raise_if_false("req_id" in kw, "Param req_id is required")
        self._cluster_id = kw["cluster_id"] if "cluster_id" in kw else kw["prompt_cluster_id"]
        self._req_id = kw["req_id"]
        self._model_id = kw.get("model_id", 0)
        self._prefix_id = kw.get("prefix_id", _INVALID_ID)
        check_int("cluster_id", self._cluster_id, "uint64")
        check_int("req_id", self._req_id, "uint64")
        check_int("model_id", self._model_id, "uint64")
        check_int("prefix_id", self._prefix_id, "uint64")

    @property
    def prompt_cluster_id(self) -> int:
        """Cluster id (alias)."""
        return self._cluster_id

    @property
    def cluster_id(self) -> int:
        """Cluster id of the cache's owner."""
        return self._cluster_id

    @property
    def req_id(self) -> int:
        """Request id (2**64-1 = unset)."""
        return self._req_id

    @property
    def prefix_id(self) -> int:
        """Prefix id (2**64-1 = unset, the default)."""
        return self._prefix_id

    @property
    def model_id(self) -> int:
        """Model id (default 0)."""
        return self._model_id

    def __repr__(self) -> str:
        return (
            f"CacheKey(cluster_id={self._cluster_id}, req_id={self._req_id}, "
            f"prefix_id={self._prefix_id}, model_id={self._model_id})"
        )


class CacheKeyByIdAndIndex:
    """Names batch slot ``batch_index`` of cache ``cache_id`` of cluster ``cluster_id``."""

    def __init__(self, cluster_id: int, cache_id: int, batch_index: int = 0) -> None:
        check_int("cluster_id", cluster_id, "uint64")
        check_int("cache_id", cache_id, "int64")
        check_int("batch_index", batch_index, "uint32")
        self._cluster_id = cluster_id
        self._cache_id = cache_id
        self._batch_index = batch_index

    @property
    def cluster_id(self) -> int:
        """Cluster id of the cache's owner."""
        return self._cluster_id

    @property
    def cache_id(self) -> int:
        """Cache id in the owner."""
        return self._cache_id

    @property
    def batch_index(self) -> int:
        """Batch slot (default 0)."""
        return self._batch_index

    def __repr__(self) -> str:
        return (
            f"CacheKeyByIdAndIndex(cluster_id={self._cluster_id}, cache_id={self._cache_id}, "
            f"batch_index={self._batch_index})"
        )


class LayerSynchronizer(ABC):
    """Tells ``transfer_cache_async`` when each layer may be sent.

    Subclass it and implement :meth:`synchronize_layer`. It is called on a
    library thread (with the GIL held), once per source layer in ascending
    order, never concurrently with itself. Returning False, or raising, fails
    that layer (``LLM_PARAM_INVALID``) and stops the task; an exception is
    logged to the ``llm_datadist`` logger with its traceback. It must not call
    ``finalize`` of its instance nor wait for its own task.
    """

    @abstractmethod
    def synchronize_layer(self, layer_index: int, timeout_in_millis: Optional[int]) -> bool:
        """Blocks until layer ``layer_index`` is computed; True when it may be sent.

        ``timeout_in_millis`` is None (no limit).
        """


def check_layer_range(name: str, layer_range: Optional[range], allow_none: bool = True) -> None:
    """``TypeError`` unless a range (or None when allowed); ``LLMException`` unless step 1 and ``0 <= start < stop``."""
    if allow_none and layer_range is None:
        return
    check_type(name, layer_range, range, allow_none=False)
    raise_if_false(layer_range.step == 1, f"check {name}.step == 1 failed")
    raise_if_false(
        0 <= layer_range.start < layer_range.stop,
        f"check 0 <= range.start < range.stop failed, {name} = {layer_range}",
    )


class TransferWithCacheKeyConfig:
    """A destination of ``transfer_cache_async`` named by the peer's cache key.

    Remote-cache-accessible mode only. Source layer L goes to destination
    layer ``dst_layer_range.start + (L - src_layer_range.start)``.
    """

    def __init__(
        self,
        cache_key: Union[BlocksCacheKey, CacheKeyByIdAndIndex],
        src_layer_range: range = None,
        dst_layer_range: range = None,
        src_batch_index: int = 0,
    ) -> None:
        check_type("cache_key", cache_key, (BlocksCacheKey, CacheKeyByIdAndIndex), allow_none=False)
        check_layer_range("src_layer_range", src_layer_range, allow_none=False)
        check_layer_range("dst_layer_range", dst_layer_range, allow_none=False)
        raise_if_false(
            len(src_layer_range) == len(dst_layer_range),
            "src_layer_range size should be equal to dst_layer_range size",
        )
        check_int("src_batch_index", src_batch_index, "uint32")
        raise_if_false(
            not (isinstance(cache_key, BlocksCacheKey) and src_batch_index != 0),
            "src_batch_index should be 0 when cache_key is BlocksCacheKey.",
        )
        self._cache_key = cache_key
        self._src_layer_range = src_layer_range
        self._dst_layer_range = dst_layer_range
        self._src_batch_index = src_batch_index
        self.dst_cluster_id = cache_key.cluster_id

    def __repr__(self) -> str:
        return (
            f"TransferWithCacheKeyConfig(cache_key={self._cache_key}, src_layer_range={self._src_layer_range}, "
            f"dst_layer_range={self._dst_layer_range}, src_batch_index={self._src_batch_index})"
        )

    @property
    def cache_key(self) -> Union[BlocksCacheKey, CacheKeyByIdAndIndex]:
        """The destination cache."""
        return self._cache_key

    @cache_key.setter
    def cache_key(self, cache_key: Union[BlocksCacheKey, CacheKeyByIdAndIndex]) -> None:
        check_type("cache_key", cache_key, (BlocksCacheKey, CacheKeyByIdAndIndex), allow_none=False)
        self._cache_key = cache_key
        self.dst_cluster_id = cache_key.cluster_id

    @property
    def src_layer_range(self) -> Optional[range]:
        """Source layers."""
        return self._src_layer_range

    @src_layer_range.setter
    def src_layer_range(self, src_layer_range: Optional[range]) -> None:
        check_layer_range("src_layer_range", src_layer_range)
        self._src_layer_range = src_layer_range

    @property
    def dst_layer_range(self) -> Optional[range]:
        """Destination layers."""
        return self._dst_layer_range

    @dst_layer_range.setter
    def dst_layer_range(self, dst_layer_range: Optional[range]) -> None:
        check_layer_range("dst_layer_range", dst_layer_range)
        self._dst_layer_range = dst_layer_range

    @property
    def src_batch_index(self) -> int:
        """Source batch slot (0 for a blocks destination)."""
        return self._src_batch_index

    @src_batch_index.setter
    def src_batch_index(self, src_batch_index: int) -> None:
        raise_if_false(
            not (isinstance(self._cache_key, BlocksCacheKey) and src_batch_index != 0),
            "src_batch_index should be 0 when cache_key is BlocksCacheKey.",
        )
        check_int("src_batch_index", src_batch_index, "uint32")
        self._src_batch_index = src_batch_index


class TransferConfig:
    """A destination of ``transfer_cache_async`` given by raw addresses (request/response mode).

    ``dst_addrs`` has 2 addresses (K, V) per source layer of
    ``src_layer_range`` (all layers when None), in layer order.
    """

    def __init__(
        self,
        dst_cluster_id: int,
        dst_addrs: List[int],
        src_layer_range: Optional[range] = None,
        src_batch_index: int = 0,
    ) -> None:
        check_int("dst_cluster_id", dst_cluster_id, "uint64")
        self._check_dst_addrs(dst_addrs)
        check_layer_range("src_layer_range", src_layer_range)
        check_int("src_batch_index", src_batch_index, "uint32")
        self._dst_cluster_id = dst_cluster_id
        self._dst_addrs = dst_addrs
        self._src_layer_range = src_layer_range
        self._src_batch_index = src_batch_index
        self.dst_layer_range = None

    @staticmethod
    def _check_dst_addrs(dst_addrs: Any) -> None:
        check_type("dst_addrs", dst_addrs, (list, tuple), int, allow_none=False)
        check_ints("dst_addrs", dst_addrs, "uint64")

    def __repr__(self) -> str:
        return (
            f"TransferConfig(dst_cluster_id={self._dst_cluster_id}, dst_addrs={self._dst_addrs}, "
            f"src_layer_range={self._src_layer_range}, src_batch_index={self._src_batch_index})"
        )

    __str__ = __repr__

    @property
    def dst_cluster_id(self) -> int:
        """Cluster id of the destination."""
        return self._dst_cluster_id

    @dst_cluster_id.setter
    def dst_cluster_id(self, cluster_id: int) -> None:
        check_int("dst_cluster_id", cluster_id, "uint64")
        self._dst_cluster_id = cluster_id

    @property
    def dst_addrs(self) -> List[int]:
        """Destination addresses, 2 per source layer."""
        return self._dst_addrs

    @dst_addrs.setter
    def dst_addrs(self, dst_addrs: List[int]) -> None:
        self._check_dst_addrs(dst_addrs)
        self._dst_addrs = dst_addrs

    @property
    def src_layer_range(self) -> Optional[range]:
        """Source layers (None = all)."""
        return self._src_layer_range

    @src_layer_range.setter
    def src_layer_range(self, layer_range: Optional[range]) -> None:
        check_layer_range("src_layer_range", layer_range)
        self._src_layer_range = layer_range

    @property
    def src_batch_index(self) -> int:
        """Source batch slot."""
        return self._src_batch_index

    @src_batch_index.setter
    def src_batch_index(self, batch_index: int) -> None:
        check_int("src_batch_index", batch_index, "uint32")
        self._src_batch_index = batch_index


class CacheTask:
    """A running ``transfer_cache_async``: wait for it, read per-config results.

    The task's native handle is released when the task object is
    garbage-collected after it finished, or when its ``LLMDataDist`` is
    finalized; results stay readable after that.
    """

    def __init__(self, transfer_async_task: Any, _owner: Any = None) -> None:
        from llm_datadist._handles import release_task

        self._transfer_async_task = transfer_async_task
        self._owner = _owner  # keeps the instance alive while the task is referenced
        self._finalizer = weakref.finalize(self, release_task, transfer_async_task)
        self._finalizer.atexit = False

    @staticmethod
    def _timeout(timeout_in_millis: Optional[int]) -> int:
        if timeout_in_millis is None:
            return -1
        check_int("timeout_in_millis", timeout_in_millis, "uint32")
        return timeout_in_millis

    def synchronize(self, timeout_in_millis: Optional[int] = None) -> LLMStatusCode:
        """Waits for the task (None = no limit).

        Returns ``LLM_TIMEOUT`` if it is still running at the deadline (it
        keeps running), else the first failure of any config, ``LLM_FAILED``
        if a config never started, or ``LLM_SUCCESS``. Never raises for a
        failed transfer.
        """
        return self._transfer_async_task.synchronize(self._timeout(timeout_in_millis))

    def get_results(self, timeout_in_millis: Optional[int] = None) -> List[Optional[LLMStatusCode]]:
        """One entry per config, in config order: its status, or None if none of its layers started.

        If the wait expires every entry is ``LLM_TIMEOUT``.
        """
        return self._transfer_async_task.get_results(self._timeout(timeout_in_millis))
