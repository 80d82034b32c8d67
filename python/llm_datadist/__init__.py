"""``llm_datadist`` over libllmdd: CANN's LLM-DataDist Python API on llmdd's C ABI.

A drop-in for the names of CANN's ``llm_datadist`` package (v2, cache-manager
mode): :class:`LLMDataDist`, :class:`CacheManager` (``LLMDataDist.cache_manager``),
:class:`LLMConfig`, the cache, key and transfer types, the enums and
:class:`LLMException`. Memory is host memory: addresses may be ints, numpy
arrays or CPU torch tensors. See docs/python.md for the mapping to the C
functions and every difference from CANN's package.

Quick start::

    from llm_datadist import LLMDataDist, LLMRole, LLMConfig

    config = LLMConfig()
    config.device_id = 0
    config.enable_cache_manager = True
    with LLMDataDist(LLMRole.DECODER, 2) as datadist:
        datadist.init(config.generate_options())
        ...
"""

from llm_datadist import _native
from llm_datadist._log_bridge import install as _install_log_bridge
from llm_datadist.configs import LLMClusterInfo, LLMConfig, LlmConfig, LLMRole
from llm_datadist.data_type import DataType
from llm_datadist.link_stats import LinkError, LinkInfo, LinkLatency, LinkPath, LinkState, LinkStats
from llm_datadist.status import LLMException, LLMStatusCode, Status
from llm_datadist.v2.cache_manager import CacheManager
from llm_datadist.v2.llm_datadist import LLMDataDist
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
    RegisterMemStatus,
    TransferConfig,
    TransferWithCacheKeyConfig,
)

__version__ = "0.1.0"

#: Version string of the loaded libllmdd, e.g. ``"llmdd 0.1.0"``.
library_version: str = _native.LIBRARY_VERSION

__all__ = [
    "LLMClusterInfo",
    "LLMStatusCode",
    "LLMException",
    "LLMRole",
    "LlmConfig",
    "LLMConfig",
    "DataType",
    "Status",
    "CacheDesc",
    "CacheKey",
    "CacheKeyByIdAndIndex",
    "Cache",
    "BlocksCacheKey",
    "LLMDataDist",
    "CacheManager",
    "Placement",
    "RegisterMemStatus",
    "LayerSynchronizer",
    "TransferConfig",
    "CacheTask",
    "TransferWithCacheKeyConfig",
    "Memtype",
    "MemInfo",
    # llmdd extensions (link statistics and states)
    "LinkState",
    "LinkPath",
    "LinkInfo",
    "LinkLatency",
    "LinkError",
    "LinkStats",
]

_V1_ONLY = ("KvCache", "KvCacheManager", "Tensor", "TensorDesc")


def __getattr__(name: str):
    if name in _V1_ONLY:
        raise AttributeError(
            f"llm_datadist.{name} belongs to the v1 engine of CANN's package, which llmdd does not provide "
            "(use the cache-manager API: LLMConfig.enable_cache_manager = True)"
        )
    raise AttributeError(f"module 'llm_datadist' has no attribute '{name}'")


_install_log_bridge()
