"""Roles, cluster descriptions for linking, and the option builder ``LLMConfig``.

Mirrors ``llm_datadist.configs`` of CANN's package. ``LLMConfig`` is pure
Python, as in the reference: it only builds the ``Dict[str, str]`` that
``LLMDataDist.init`` passes to ``llmdd_init``, which validates every value.
"""

from __future__ import annotations

import ipaddress
import json
from enum import IntEnum
from typing import Dict, List, Optional, Sequence, Tuple, Union

from llm_datadist._checks import check_int, check_str_dict, check_type
from llm_datadist.status import raise_if_false

__all__ = ["LLMRole", "LLMClusterInfo", "LlmConfig", "LLMConfig"]

_UINT32_MAX = 2**32 - 1


class LLMRole(IntEnum):
    """Role label of an instance (it does not change how transfers work)."""

    PROMPT = 1
    DECODER = 2
    MIX = 3

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"


class InvalidIpError(ValueError, RuntimeError):
    """An IP string that is not an IPv4 or IPv6 literal.

    The reference raises ``RuntimeError`` here; this is both a ``ValueError``
    and a ``RuntimeError`` so code written for either keeps working.
    """


def trans_str_ip(ip: Union[str, int]) -> Union[int, str]:
    """The stored form of an IP: IPv4 as the reference's little-endian integer, IPv6 as text.

    ``"127.0.0.1"`` becomes ``0x0100007F`` (the bytes of the address read
    little-endian), as in CANN's package; an int is taken as already in that
    form. IPv6 literals (an llmdd extension) are kept as strings.
    """
    if isinstance(ip, int):
        return ip
    try:
        return int.from_bytes(ipaddress.IPv4Address(ip).packed, "little")
    except ValueError:
        pass
    try:
        return str(ipaddress.IPv6Address(ip.strip("[]")))
    except ValueError:
        raise InvalidIpError(f"Can not parse ip str:{ip}") from None


def ip_to_str(ip: Union[int, str]) -> str:
    """The text form of a stored IP (inverse of :func:`trans_str_ip`)."""
    if isinstance(ip, str):
        return ip
    return str(ipaddress.IPv4Address(ip.to_bytes(4, "little")))


class LLMClusterInfo:
    """One peer to link to or unlink from: its cluster id and endpoints.

    Examples:
        >>> cluster = LLMClusterInfo()
        >>> cluster.remote_cluster_id = 1
        >>> cluster.append_local_ip_info("127.0.0.1", 0)
        >>> cluster.append_remote_ip_info("127.0.0.1", 26000)
    """

    def __init__(self) -> None:
        self._remote_cluster_id: Optional[int] = None
        self._remote_role_type: Optional[Union[LLMRole, int]] = None
        self._local_ip_info_list: List[Tuple[Union[int, str], int]] = []
        self._remote_ip_info_list: List[Tuple[Union[int, str], int]] = []

    @staticmethod
    def _checked_ip(ip: Union[str, int], port: int) -> Union[int, str]:
        check_type("ip", ip, (str, int), allow_none=False)
        check_int("port", port, "uint16")
        if isinstance(ip, int):
            check_int("ip", ip, "uint32")
        return trans_str_ip(ip)

    @property
    def remote_cluster_id(self) -> Optional[int]:
        """Cluster id of the peer (required)."""
        return self._remote_cluster_id

    @remote_cluster_id.setter
    def remote_cluster_id(self, remote_cluster_id: int) -> None:
        check_int("remote_cluster_id", remote_cluster_id, "uint64")
        self._remote_cluster_id = remote_cluster_id

    @property
    def remote_role_type(self) -> Optional[Union[LLMRole, int]]:
        """Role of the peer (accepted and unused, as in the reference)."""
        return self._remote_role_type

    @remote_role_type.setter
    def remote_role_type(self, remote_role_type: Union[LLMRole, int]) -> None:
        check_type("remote_role_type", remote_role_type, (LLMRole, int))
        self._remote_role_type = remote_role_type

    @property
    def local_ip_info_list(self) -> List[Tuple[Union[int, str], int]]:
        """Local endpoints as ``(ip, port)``; IPv4 in the reference's integer form."""
        return self._local_ip_info_list

    @property
    def remote_ip_info_list(self) -> List[Tuple[Union[int, str], int]]:
        """Remote endpoints as ``(ip, port)``; IPv4 in the reference's integer form."""
        return self._remote_ip_info_list

    def append_local_ip_info(self, ip: Union[str, int], port: int) -> None:
        """Adds a local endpoint (only its IP is used: the address links go out from)."""
        self._local_ip_info_list.append((self._checked_ip(ip, port), port))

    def append_remote_ip_info(self, ip: Union[str, int], port: int) -> None:
        """Adds the peer's listen endpoint (``ip`` as text, or the reference's integer form)."""
        self._remote_ip_info_list.append((self._checked_ip(ip, port), port))

    def __repr__(self) -> str:
        fmt = lambda lst: [f"{ip_to_str(ip)}:{port}" for ip, port in lst]  # noqa: E731
        return (
            f"LLMClusterInfo(remote_cluster_id={self._remote_cluster_id}, "
            f"local_ip_info_list={fmt(self._local_ip_info_list)}, "
            f"remote_ip_info_list={fmt(self._remote_ip_info_list)})"
        )


class LlmConfig:
    """Builds the options of ``LLMDataDist.init`` (``generate_options()``).

    Each property emits the option key the reference emits; unset properties
    emit nothing. ``mem_utilization`` defaults to 0.95 and is always emitted,
    as in the reference (libllmdd validates it and ignores it).

    Examples:
        >>> config = LLMConfig()
        >>> config.device_id = 0
        >>> config.enable_cache_manager = True
        >>> options = config.generate_options()
    """

    def __init__(self) -> None:
        self._options: Dict[str, str] = {}
        self._listen_ip_info = ""
        self._device_id: Optional[Union[int, Sequence[int]]] = None
        self._sync_kv_timeout: Optional[Union[int, str]] = None
        self._deploy_res_path = ""
        self._ge_options: Dict[str, str] = {}
        self._enable_switch_role = False
        self._link_total_time: Optional[int] = None
        self._link_retry_count: Optional[int] = None
        self._cluster_info = ""
        self._output_max_size: Optional[int] = None
        self._mem_utilization: Optional[float] = 0.95
        self._buf_pool_cfg = ""
        self._mem_pool_cfg = ""
        self._host_mem_pool_cfg = ""
        self._enable_cache_manager: Optional[bool] = None
        self._enable_remote_cache_accessible: Optional[bool] = None
        self._rdma_traffic_class: Optional[int] = None
        self._rdma_service_level: Optional[int] = None
        self._local_comm_res: Optional[str] = None
        self._transfer_backend: Optional[str] = None
        self._global_resource_config: Optional[str] = None

    def generate_options(self) -> Dict[str, str]:
        """The options set so far, as ``{key: value}`` strings for ``LLMDataDist.init``."""
        return self.gen_options()

    def gen_options(self) -> Dict[str, str]:
        """Same as :meth:`generate_options` (the reference's older name)."""
        o = self._options
        if self._ge_options:
            o.update(self._ge_options)
        if self._device_id is not None:
            if isinstance(self._device_id, int):
                o["ge.exec.deviceId"] = str(self._device_id)
                o["ge.session_device_id"] = str(self._device_id)
            else:
                o["ge.session_device_id"] = str(self._device_id[0])
                o["ge.exec.deviceId"] = ";".join(str(d) for d in self._device_id)
        if self._sync_kv_timeout is not None:
            o["llm.SyncKvCacheWaitTime"] = str(self._sync_kv_timeout)
        if self._deploy_res_path:
            o["llm.deployResPath"] = self._deploy_res_path
        if self._buf_pool_cfg:
            o["llm.BufPoolCfg"] = self._buf_pool_cfg
        if self._mem_pool_cfg:
            o["llm.MemPoolConfig"] = self._mem_pool_cfg
        if self._host_mem_pool_cfg:
            o["llm.HostMemPoolConfig"] = self._host_mem_pool_cfg
        if self._enable_cache_manager is not None:
            o["llm.EnableCacheManager"] = "1" if self._enable_cache_manager else "0"
        if self._enable_remote_cache_accessible is not None:
            o["llm.EnableRemoteCacheAccessible"] = "1" if self._enable_remote_cache_accessible else "0"
        if self._listen_ip_info:
            o["llm.listenIpInfo"] = self._listen_ip_info
        if self._link_total_time is not None:
            o["llm.LinkTotalTime"] = str(self._link_total_time)
        if self._link_retry_count is not None:
            o["llm.LinkRetryCount"] = str(self._link_retry_count)
        if self._rdma_traffic_class is not None:
            o["llm.RdmaTrafficClass"] = str(self._rdma_traffic_class)
        if self._rdma_service_level is not None:
            o["llm.RdmaServiceLevel"] = str(self._rdma_service_level)
        if self._local_comm_res is not None:
            o["llm.LocalCommRes"] = self._local_comm_res
        if self._transfer_backend is not None:
            o["llm.TransferBackend"] = self._transfer_backend
        if self._global_resource_config is not None:
            o["llm.GlobalResourceConfig"] = self._global_resource_config
        if self._cluster_info:
            o["llm.ClusterInfo"] = self._cluster_info
        if self._output_max_size is not None:
            o["llm.OutputMaxSize"] = str(self._output_max_size)
        if self._enable_switch_role:
            o["llm.EnableSwitchRole"] = "1"
        if self._mem_utilization is not None:
            o["llm.MemoryUtilization"] = str(self._mem_utilization)
        return o

    @property
    def options(self) -> Dict[str, str]:
        """The options generated so far."""
        return self._options

    @property
    def ge_options(self) -> Dict[str, str]:
        """Extra options copied verbatim (e.g. ``llmdd.*`` extension options)."""
        return self._ge_options

    @ge_options.setter
    def ge_options(self, ge_options: Dict[str, str]) -> None:
        check_str_dict("ge_options", ge_options)
        self._ge_options = ge_options

    @property
    def device_id(self) -> Optional[Union[int, Sequence[int]]]:
        """Device id (``ge.exec.deviceId``); llmdd takes exactly one device."""
        return self._device_id

    @device_id.setter
    def device_id(self, device_id: Union[int, List[int], Tuple[int, ...]]) -> None:
        check_type("device_id", device_id, (list, tuple, int), allow_none=False)
        ids = list(device_id) if isinstance(device_id, (list, tuple)) else [device_id]
        check_type("device_id", ids, list, int)
        for d in ids:
            raise_if_false(d >= 0, "device_id should be greater than or equal to zero.")
            check_int("device_id", d, "int32")
        self._device_id = device_id

    @property
    def listen_ip_info(self) -> str:
        """``"ip:port"`` to listen on (``llm.listenIpInfo``): the instance becomes a server."""
        return self._listen_ip_info

    @listen_ip_info.setter
    def listen_ip_info(self, listen_ip_info: str) -> None:
        check_type("listen_ip_info", listen_ip_info, str)
        self._listen_ip_info = listen_ip_info

    @property
    def deploy_res_path(self) -> str:
        """v1 engine option (``llm.deployResPath``; no effect in llmdd)."""
        return self._deploy_res_path

    @deploy_res_path.setter
    def deploy_res_path(self, deploy_res_path: str) -> None:
        check_type("deploy_res_path", deploy_res_path, str)
        self._deploy_res_path = deploy_res_path

    @property
    def buf_pool_cfg(self) -> str:
        """v1 engine option (``llm.BufPoolCfg``; validated, no effect)."""
        return self._buf_pool_cfg

    @buf_pool_cfg.setter
    def buf_pool_cfg(self, buf_pool_cfg: str) -> None:
        check_type("buf_pool_cfg", buf_pool_cfg, str)
        self._buf_pool_cfg = buf_pool_cfg

    @property
    def output_max_size(self) -> Optional[int]:
        """v1 engine option (``llm.OutputMaxSize``; validated, no effect)."""
        return self._output_max_size

    @output_max_size.setter
    def output_max_size(self, output_max_size: int) -> None:
        check_type("output_max_size", output_max_size, int)
        self._output_max_size = output_max_size

    @property
    def mem_utilization(self) -> Optional[float]:
        """v1 engine option (``llm.MemoryUtilization``, default 0.95; validated, no effect)."""
        return self._mem_utilization

    @mem_utilization.setter
    def mem_utilization(self, mem_utilization: float) -> None:
        check_type("mem_utilization", mem_utilization, float)
        raise_if_false(
            mem_utilization is None or 0.0 <= mem_utilization <= 1.0,
            f"mem_utilization must be in range [0,1], current:{mem_utilization}",
        )
        self._mem_utilization = mem_utilization

    @property
    def cluster_info(self) -> str:
        """v1 engine option (``llm.ClusterInfo`` JSON; no effect)."""
        return self._cluster_info

    @cluster_info.setter
    def cluster_info(self, cluster_info: str) -> None:
        check_type("cluster_info", cluster_info, str)
        info = json.loads(cluster_info)
        for ip_info in info.get("listen_ip_info", []):
            ip_info["ip"] = trans_str_ip(ip_info["ip"])
        self._cluster_info = json.dumps(info)

    @property
    def sync_kv_timeout(self) -> Optional[Union[int, str]]:
        """Timeout of each pull/push and async layer, ms (``llm.SyncKvCacheWaitTime``)."""
        return self._sync_kv_timeout

    @sync_kv_timeout.setter
    def sync_kv_timeout(self, sync_kv_timeout: Union[int, str]) -> None:
        check_type("sync_kv_timeout", sync_kv_timeout, (int, str))
        if isinstance(sync_kv_timeout, str):
            raise_if_false(sync_kv_timeout.isdigit(), "sync_kv_timeout must be digit.")
        raise_if_false(int(sync_kv_timeout) > 0, "sync_kv_timeout should be greater than zero.")
        check_int("sync_kv_timeout", int(sync_kv_timeout), "int32")
        self._sync_kv_timeout = sync_kv_timeout

    @property
    def enable_switch_role(self) -> bool:
        """``llm.EnableSwitchRole`` (accepted; switch_role is always allowed in llmdd)."""
        return self._enable_switch_role

    @enable_switch_role.setter
    def enable_switch_role(self, enable_switch_role: bool) -> None:
        check_type("enable_switch_role", enable_switch_role, bool)
        self._enable_switch_role = enable_switch_role

    @property
    def link_total_time(self) -> int:
        """Budget of a rank-table link setup in seconds (``llm.LinkTotalTime``; 0 = default)."""
        return 0 if self._link_total_time is None else self._link_total_time

    @link_total_time.setter
    def link_total_time(self, link_total_time: int) -> None:
        check_type("link_total_time", link_total_time, int)
        raise_if_false(
            0 <= link_total_time <= _UINT32_MAX,
            f"link_total_time should be an integer between [0, 2^32-1], given value is {link_total_time}",
        )
        self._link_total_time = link_total_time

    @property
    def link_retry_count(self) -> int:
        """Attempts per cluster in ``link_clusters`` (``llm.LinkRetryCount``, 1..100)."""
        return 1 if self._link_retry_count is None else self._link_retry_count

    @link_retry_count.setter
    def link_retry_count(self, link_retry_count: int) -> None:
        check_type("link_retry_count", link_retry_count, int)
        raise_if_false(
            1 <= link_retry_count <= 100,
            f"link_retry_count should be an integer between [1, 100], given value is {link_retry_count}",
        )
        self._link_retry_count = link_retry_count

    @property
    def enable_cache_manager(self) -> bool:
        """Cache-manager mode (``llm.EnableCacheManager``); required unless ``local_comm_res`` is set."""
        return bool(self._enable_cache_manager)

    @enable_cache_manager.setter
    def enable_cache_manager(self, enable_cache_manager: bool) -> None:
        check_type("enable_cache_manager", enable_cache_manager, bool)
        self._enable_cache_manager = enable_cache_manager

    @property
    def enable_remote_cache_accessible(self) -> bool:
        """Remote-cache-accessible mode (``llm.EnableRemoteCacheAccessible``): push, keys not consumed."""
        return bool(self._enable_remote_cache_accessible)

    @enable_remote_cache_accessible.setter
    def enable_remote_cache_accessible(self, enable_remote_cache_accessible: bool) -> None:
        check_type("enable_remote_cache_accessible", enable_remote_cache_accessible, bool)
        self._enable_remote_cache_accessible = enable_remote_cache_accessible

    @property
    def mem_pool_cfg(self) -> str:
        """Pool for DEVICE ``allocate_cache`` (``llm.MemPoolConfig`` JSON)."""
        return self._mem_pool_cfg

    @mem_pool_cfg.setter
    def mem_pool_cfg(self, mem_pool_cfg: str) -> None:
        check_type("mem_pool_cfg", mem_pool_cfg, str)
        self._mem_pool_cfg = mem_pool_cfg

    @property
    def host_mem_pool_cfg(self) -> str:
        """Pool for HOST ``allocate_cache`` (``llm.HostMemPoolConfig`` JSON)."""
        return self._host_mem_pool_cfg

    @host_mem_pool_cfg.setter
    def host_mem_pool_cfg(self, host_mem_pool_cfg: str) -> None:
        check_type("host_mem_pool_cfg", host_mem_pool_cfg, str)
        self._host_mem_pool_cfg = host_mem_pool_cfg

    @property
    def rdma_traffic_class(self) -> Optional[int]:
        """``llm.RdmaTrafficClass`` (acl backend only)."""
        return self._rdma_traffic_class

    @rdma_traffic_class.setter
    def rdma_traffic_class(self, rdma_traffic_class: int) -> None:
        check_int("rdma_traffic_class", rdma_traffic_class, "uint32")
        self._rdma_traffic_class = rdma_traffic_class

    @property
    def rdma_service_level(self) -> Optional[int]:
        """``llm.RdmaServiceLevel`` (acl backend only)."""
        return self._rdma_service_level

    @rdma_service_level.setter
    def rdma_service_level(self, rdma_service_level: int) -> None:
        check_int("rdma_service_level", rdma_service_level, "uint32")
        self._rdma_service_level = rdma_service_level

    @property
    def local_comm_res(self) -> str:
        """``llm.LocalCommRes`` (may be ""): turns on cache-manager and remote-accessible mode."""
        return "" if self._local_comm_res is None else self._local_comm_res

    @local_comm_res.setter
    def local_comm_res(self, local_comm_res: str) -> None:
        check_type("local_comm_res", local_comm_res, str)
        self._local_comm_res = local_comm_res

    @property
    def transfer_backend(self) -> str:
        """``llm.TransferBackend`` (only ``"hixl"``)."""
        return "" if self._transfer_backend is None else self._transfer_backend

    @transfer_backend.setter
    def transfer_backend(self, transfer_backend: str) -> None:
        check_type("transfer_backend", transfer_backend, str)
        self._transfer_backend = transfer_backend

    @property
    def global_resource_config(self) -> str:
        """``llm.GlobalResourceConfig`` JSON (validated, no effect in llmdd)."""
        return "" if self._global_resource_config is None else self._global_resource_config

    @global_resource_config.setter
    def global_resource_config(self, global_resource_config: str) -> None:
        check_type("global_resource_config", global_resource_config, str)
        self._global_resource_config = global_resource_config


LLMConfig = LlmConfig
