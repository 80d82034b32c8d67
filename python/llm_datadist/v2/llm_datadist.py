"""``LLMDataDist``: one instance of the library (init, link, switch role, finalize).

Mirrors ``llm_datadist.v2.llm_datadist`` of CANN's package, in cache-manager
mode (the only mode libllmdd has). It is also a context manager that
finalizes on exit.
"""

from __future__ import annotations

import logging
from ctypes import byref, c_size_t, c_uint32, c_uint64, create_string_buffer
from types import TracebackType
from typing import Dict, List, Optional, Tuple, Type, Union

from llm_datadist import _log_bridge, _native
from llm_datadist._checks import check_int, check_str_dict, check_type
from llm_datadist._handles import InstanceHandle
from llm_datadist.configs import LLMClusterInfo, LLMRole, ip_to_str
from llm_datadist.link_stats import LinkInfo, LinkState, LinkStats, stats_from_c
from llm_datadist.status import LLMStatusCode, check, code_2_status, raise_if_false
from llm_datadist.v2.cache_manager import CacheManager
from llm_datadist.v2.llm_types import RegisterMemStatus

__all__ = ["LLMDataDist"]

_log = logging.getLogger("llm_datadist")
_MAX_COMM_NAME = 128
_MAX_NODE_NUM = 4
_ROLE_NAMES = {LLMRole.PROMPT: "Prompt", LLMRole.DECODER: "Decoder", LLMRole.MIX: "Mix"}
_MEM_STATUS = {
    _native.MEM_STATUS_OK: RegisterMemStatus.OK,
    _native.MEM_STATUS_PREPARING: RegisterMemStatus.PREPARING,
    _native.MEM_STATUS_FAILED: RegisterMemStatus.FAILED,
}
# Marks an entry of rets[] the library did not write (argument errors before linking).
_UNWRITTEN = 0xFFFFFFFD


def _ip_infos(lst: List[Tuple[Union[int, str], int]]):
    if not lst:
        return None, 0
    arr = (_native.IpInfoT * len(lst))()
    for i, (ip, port) in enumerate(lst):
        arr[i].ip = ip_to_str(ip).encode()
        arr[i].port = port
    return arr, len(lst)


class LLMDataDist:
    """An LLM-DataDist instance with a role and a cluster id unique among its peers.

    Args:
        role: role label (``LLMRole``).
        cluster_id: id of this instance (uint64), unique among every
            instance that links to it.

    Examples:
        >>> config = LLMConfig()
        >>> config.device_id = 0
        >>> config.enable_cache_manager = True
        >>> with LLMDataDist(LLMRole.DECODER, 2) as datadist:
        ...     datadist.init(config.generate_options())
        ...     cache_manager = datadist.cache_manager
    """

    def __init__(self, role: LLMRole, cluster_id: int) -> None:
        check_type("role", role, LLMRole, allow_none=False)
        check_int("cluster_id", cluster_id, "uint64")
        self._role = role
        self._cluster_id = cluster_id
        self._handle = InstanceHandle(int(role), cluster_id)
        self._cache_manager: Optional[CacheManager] = None
        self._is_initialized = False
        self._engine_options: Dict[str, str] = {}
        self._enable_local_comm_res = False

    # -- context manager ------------------------------------------------------
    def __enter__(self) -> "LLMDataDist":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.finalize()

    # -- lifecycle --------------------------------------------------------------
    def _setup_engine_options(self, options: Dict[str, str]) -> Dict[str, str]:
        o = dict(options)
        o["llm.Role"] = _ROLE_NAMES[self._role]
        local_comm_res = "llm.LocalCommRes" in options
        if local_comm_res:
            o.setdefault("llm.EnableCacheManager", "1")
            o.setdefault("llm.EnableRemoteCacheAccessible", "1")
        cache_mgr = o.get("llm.EnableCacheManager") == "1"
        raise_if_false(
            cache_mgr,
            "LLMDataDist.init requires cache manager mode: set LLMConfig.enable_cache_manager = True or "
            "local_comm_res (the v1 engine is not provided by llmdd)",
            LLMStatusCode.LLM_FEATURE_NOT_ENABLED,
        )
        if "llm.TransferBackend" in options:
            o.setdefault("llm.EnableRemoteCacheAccessible", "1")
            raise_if_false(
                o["llm.EnableRemoteCacheAccessible"] == "1",
                "llm.TransferBackend is not supported when llm.EnableRemoteCacheAccessible is not enable.",
            )
            raise_if_false(
                "llm.listenIpInfo" in options or "llm.ListenIpInfo" in options,
                "llm.TransferBackend is not supported when llm.listenIpInfo is not configured.",
            )
        self._enable_local_comm_res = local_comm_res
        return o

    def init(self, options: Dict[str, str]) -> None:
        """Initializes the instance (``llmdd_init``); a second call is a no-op.

        ``options``: usually ``LLMConfig().generate_options()``; must enable
        cache-manager mode (``enable_cache_manager`` or ``local_comm_res``)
        and give a device id. With ``listen_ip_info`` the instance listens.
        """
        if self._is_initialized:
            return
        check_str_dict("options", options)
        engine_options = self._setup_engine_options(options)
        _log_bridge.sync_filter()
        _log.info("LLMDataDist init options = %s", engine_options)
        arr, n = _native.options_array(engine_options)
        with self._handle.call("[LLMDataDist.init]") as h:
            check(_native.lib.llmdd_init(h, arr, n), "[LLMDataDist.init]")
        self._engine_options = engine_options
        self._cache_manager = CacheManager(self._handle, engine_options)
        self._is_initialized = True

    def finalize(self) -> None:
        """Releases links, listeners, caches and threads (``llmdd_finalize``); idempotent.

        Running async tasks are cancelled (their ``synchronize`` then reports
        ``LLM_FAILED``) and their handles released. ``init`` may be called again.
        """
        if not self._is_initialized:
            return
        self._handle.finalize()
        if self._cache_manager is not None:
            self._cache_manager._initialized = False
            self._cache_manager._forget_all_memory()
        self._is_initialized = False

    def _check_is_inited(self) -> None:
        if not self._is_initialized:
            raise RuntimeError("llm datadist is not initialized")

    @property
    def cluster_id(self) -> int:
        """This instance's cluster id."""
        return self._cluster_id

    @property
    def cache_manager(self) -> CacheManager:
        """The :class:`CacheManager` of this instance (after ``init``)."""
        self._check_is_inited()
        assert self._cache_manager is not None
        return self._cache_manager

    # -- one-sided links ------------------------------------------------------
    def _cluster_array(self, clusters, with_local: bool):
        arr = (_native.ClusterInfoT * max(len(clusters), 1))()
        keep = []
        for i, c in enumerate(clusters):
            check_int("remote_cluster_id", c.remote_cluster_id, "uint64")
            arr[i].remote_cluster_id = c.remote_cluster_id
            arr[i].remote_role_type = int(c.remote_role_type) if c.remote_role_type is not None else 0
            if with_local:
                loc, nloc = _ip_infos(c.local_ip_info_list)
                arr[i].local_ip_infos = loc
                arr[i].num_local_ip_infos = nloc
                keep.append(loc)
            rem, nrem = _ip_infos(c.remote_ip_info_list)
            arr[i].remote_ip_infos = rem
            arr[i].num_remote_ip_infos = nrem
            keep.append(rem)
        return arr, keep

    @staticmethod
    def _results(ret: int, rets, n: int) -> Tuple[LLMStatusCode, List[LLMStatusCode]]:
        status = code_2_status(ret)
        return status, [status if r == _UNWRITTEN else code_2_status(r) for r in rets[:n]]

    def link_clusters(
        self, clusters: Union[List[LLMClusterInfo], Tuple[LLMClusterInfo, ...]], timeout: int = 3000
    ) -> Tuple[LLMStatusCode, List[LLMStatusCode]]:
        """Links to each cluster's listening server, in parallel (at most 16 per call).

        Returns ``(ret, rets)``: the overall status and one status per cluster
        (``LLM_ALREADY_LINK``, ``LLM_LINK_FAILED``, ...). Link failures are
        reported there, not raised.
        """
        self._check_is_inited()
        check_int("timeout", timeout, "int32")
        raise_if_false(timeout > 0, "Param timeout should be greater than 0.")
        check_type("clusters", clusters, (list, tuple), LLMClusterInfo, allow_none=False)
        for c in clusters:
            if not self._enable_local_comm_res or not self._engine_options.get("llm.LocalCommRes"):
                raise_if_false(
                    bool(c.local_ip_info_list),
                    "local_ip_info_list is empty. Call append_local_ip_info to add local_ip_info "
                    "when local_comm_res option is unspecified or empty.",
                )
        arr, _keep = self._cluster_array(clusters, with_local=True)
        n = len(clusters)
        rets = (c_uint32 * max(n, 1))(*([_UNWRITTEN] * max(n, 1)))
        with self._handle.call("[link_clusters]") as h:
            ret = _native.lib.llmdd_link_clusters(h, arr, n, timeout, rets)
        if ret != _native.SUCCESS:
            _log.warning("[link_clusters] %s: %s", code_2_status(ret), _native.last_error())
        return self._results(ret, rets, n)

    def unlink_clusters(
        self,
        clusters: Union[List[LLMClusterInfo], Tuple[LLMClusterInfo, ...]],
        timeout: int = 3000,
        force: bool = False,
    ) -> Tuple[LLMStatusCode, List[LLMStatusCode]]:
        """Unlinks each cluster; ``force=True`` drops only the local side (call it on both ends).

        Returns ``(ret, rets)`` like :meth:`link_clusters`.
        """
        self._check_is_inited()
        check_int("timeout", timeout, "int32")
        raise_if_false(timeout > 0, "Param timeout should be greater than 0.")
        check_type("clusters", clusters, (list, tuple), LLMClusterInfo, allow_none=False)
        check_type("force", force, bool)
        arr, _keep = self._cluster_array(clusters, with_local=False)
        n = len(clusters)
        rets = (c_uint32 * max(n, 1))(*([_UNWRITTEN] * max(n, 1)))
        with self._handle.call("[unlink_clusters]") as h:
            ret = _native.lib.llmdd_unlink_clusters(h, arr, n, timeout, bool(force), rets)
        if ret != _native.SUCCESS:
            _log.warning("[unlink_clusters] %s: %s", code_2_status(ret), _native.last_error())
        return self._results(ret, rets, n)

    def switch_role(self, role: LLMRole, switch_options: Optional[Dict[str, str]] = None) -> None:
        """Changes the role; with ``llm.listenIpInfo`` in ``switch_options`` listens there, else stops listening.

        Needs zero links (``LLMException`` with ``LLM_EXIST_LINK`` otherwise).
        Other option keys are ignored, as by the reference.
        """
        self._check_is_inited()
        check_type("role", role, LLMRole, allow_none=False)
        check_type("switch_options", switch_options, dict)
        opts = dict(switch_options or {})
        check_str_dict("switch_options", opts)
        listen = opts.get("llm.listenIpInfo", opts.get("llm.ListenIpInfo"))
        if listen is None and "llm.ListenIp" in opts and "llm.ListenPort" in opts:
            # The reference's C++ form of the endpoint.
            ip = opts["llm.ListenIp"]
            listen = f"[{ip}]:{opts['llm.ListenPort']}" if ":" in ip else f"{ip}:{opts['llm.ListenPort']}"
        passed = {"llm.listenIpInfo": listen} if listen is not None else {}
        ignored = sorted(k for k in opts if k not in ("llm.listenIpInfo", "llm.ListenIpInfo"))
        if ignored:
            _log.debug("[switch_role] ignoring options %s (only the listen endpoint applies)", ignored)
        _log.info("[switch_role] [%s->%s] start, switch_options = %s", self._role.name, role.name, switch_options)
        arr, n = _native.options_array(passed)
        with self._handle.call("[switch_role]") as h:
            check(_native.lib.llmdd_switch_role(h, int(role), arr, n), "[switch_role]")
        self._role = role

    # -- rank-table links -----------------------------------------------------
    def link(self, comm_name: str, cluster_rank_info: Dict[int, int], rank_table: str) -> int:
        """Two-sided link of a comm domain by rank table; returns the comm id.

        Every member calls it at about the same time; then poll
        :meth:`query_register_mem_status` until ``RegisterMemStatus.OK``.
        ``cluster_rank_info`` maps cluster id to rank id (ranks ascending).
        """
        self._check_is_inited()
        check_type("comm_name", comm_name, str, allow_none=False)
        raise_if_false(len(comm_name) != 0, "comm_name can not be empty")
        raise_if_false(len(comm_name) < _MAX_COMM_NAME, "comm_name length should be smaller than 128.")
        check_type("cluster_rank_info", cluster_rank_info, dict, allow_none=False)
        for k, v in cluster_rank_info.items():
            check_type("cluster_rank_info key", k, int, allow_none=False)
            check_type("cluster_rank_info value", v, int, allow_none=False)
        raise_if_false(len(cluster_rank_info) <= _MAX_NODE_NUM, "cluster_rank_info size can not be greater than 4.")
        for k, v in cluster_rank_info.items():
            check_int("cluster_rank_info key", k, "uint64")
            check_int("cluster_rank_info value", v, "uint32")
        check_type("rank_table", rank_table, str, allow_none=False)
        ranks = list(cluster_rank_info.values())
        raise_if_false(len(ranks) > 1, "cluster num must be bigger than 1.")
        raise_if_false(ranks == sorted(ranks), "rank in cluster_rank_info must be ordered")
        members = (_native.ClusterRankT * len(ranks))()
        for i, (cid, rank) in enumerate(cluster_rank_info.items()):
            members[i].cluster_id = cid
            members[i].rank_id = rank
        comm_id = c_uint64()
        with self._handle.call("[link]") as h:
            check(_native.lib.llmdd_link(h, comm_name.encode(), members, len(ranks), rank_table.encode(),
                                         byref(comm_id)), "[link]")
        self.cache_manager.set_is_call_linked()
        return comm_id.value

    def unlink(self, comm_id: int) -> None:
        """Unlinks a rank-table comm (every member calls it for its own comm id)."""
        self._check_is_inited()
        check_int("comm_id", comm_id, "uint64")
        with self._handle.call("[unlink]") as h:
            check(_native.lib.llmdd_unlink(h, comm_id), "[unlink]")

    def query_register_mem_status(self, comm_id: int) -> RegisterMemStatus:
        """Status of a rank-table comm: ``PREPARING``, ``OK`` or ``FAILED`` (the reason is logged)."""
        self._check_is_inited()
        check_int("comm_id", comm_id, "uint64")
        out = c_uint32()
        with self._handle.call("[query_register_mem_status]") as h:
            check(_native.lib.llmdd_query_register_mem_status(h, comm_id, byref(out)), "[query_register_mem_status]")
            reason = _native.last_error() if out.value == _native.MEM_STATUS_FAILED else ""
        if reason:
            _log.error("[query_register_mem_status] comm %d failed: %s", comm_id, reason)
        return _MEM_STATUS.get(out.value, RegisterMemStatus.FAILED)

    # -- llmdd extensions: link statistics and states ---------------------------
    def link_stats(self, cluster_id: int) -> LinkStats:
        """Statistics of the link to ``cluster_id`` (an llmdd extension; docs/operating.md).

        Raises ``LLMException`` with ``LLM_NOT_YET_LINK`` when there is no link
        to that cluster (never linked, unlinked, still linking, or its link failed).
        """
        self._check_is_inited()
        check_int("cluster_id", cluster_id, "uint64")
        st = _native.LinkStatsT()
        with self._handle.call("[link_stats]") as h:
            check(_native.lib.llmdd_get_link_stats(h, cluster_id, byref(st)), "[link_stats]")
        return stats_from_c(st, _native.lib.llmdd_stats_error_slot)

    def reset_link_stats(self, cluster_id: Optional[int] = None) -> None:
        """Zeroes the statistics of the link to ``cluster_id``, or of every link (an llmdd extension)."""
        self._check_is_inited()
        with self._handle.call("[reset_link_stats]") as h:
            if cluster_id is None:
                check(_native.lib.llmdd_reset_all_link_stats(h), "[reset_link_stats]")
            else:
                check_int("cluster_id", cluster_id, "uint64")
                check(_native.lib.llmdd_reset_link_stats(h, cluster_id), "[reset_link_stats]")

    def link_state(self, cluster_id: int) -> Tuple[LinkState, str]:
        """``(state, reason)`` of the link to ``cluster_id`` (an llmdd extension).

        ``reason`` says why the state is ``LinkState.FAILED`` and is empty
        otherwise. An unknown cluster is ``LinkState.UNLINKED``.
        """
        self._check_is_inited()
        check_int("cluster_id", cluster_id, "uint64")
        out = c_uint32()
        buf = create_string_buffer(1024)
        with self._handle.call("[link_state]") as h:
            check(_native.lib.llmdd_query_link_state(h, cluster_id, byref(out), buf, len(buf)), "[link_state]")
        return LinkState(out.value), buf.value.decode("utf-8", "replace")

    def list_links(self) -> List[LinkInfo]:
        """Every cluster whose link is not ``UNLINKED``, by cluster id (an llmdd extension)."""
        self._check_is_inited()
        needed = c_size_t(0)
        cap = 16
        while True:
            arr = (_native.LinkEntryT * cap)()
            with self._handle.call("[list_links]") as h:
                check(_native.lib.llmdd_list_links(h, arr, cap, byref(needed)), "[list_links]")
            if needed.value <= cap:
                return [LinkInfo(e.remote_cluster_id, LinkState(e.state), bool(e.dialed), e.comm_id)
                        for e in arr[: needed.value]]
            cap = needed.value
