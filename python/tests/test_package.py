"""The installed package: where it is loaded from, its version, and the public surface
(names, argument names and order, defaults, enum members and values) of CANN's
llm_datadist package, written down here from its source (hicann/hixl,
src/python/llm_datadist, v2)."""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import llm_datadist as ld
from llm_datadist import _native

REPO = Path(__file__).resolve().parents[2]


def test_loaded_from_an_installed_package():
    # ./scripts/test.sh installs the package into a fresh venv: the tests must not
    # import the source tree, and must use the bundled library.
    pkg = Path(ld.__file__).resolve().parent
    assert "site-packages" in pkg.parts, pkg
    if not os.environ.get(_native.LIBRARY_ENV):
        assert _native.library_path() == pkg / "libllmdd.so"
        assert (pkg / "libllmdd.so").is_file()
        assert (pkg / "py.typed").is_file()


def test_versions_agree():
    cargo = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    pyproject = re.search(r'^version = "([^"]+)"', (REPO / "python" / "pyproject.toml").read_text(), re.M).group(1)
    assert ld.__version__ == cargo == pyproject
    assert ld.library_version == f"llmdd {cargo}"
    from importlib.metadata import version

    assert version("llmdd") == ld.__version__


def test_llmdd_library_env_selects_another_library(tmp_path):
    code = "import llm_datadist, llm_datadist._native as n; print(n.library_path())"
    env = dict(os.environ, **{_native.LIBRARY_ENV: str(tmp_path / "missing.so")})
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "LLMDD_LIBRARY" in r.stderr and "missing.so" in r.stderr
    env[_native.LIBRARY_ENV] = str(_native.library_path())
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == str(_native.library_path())


REFERENCE_NAMES = [
    "LLMClusterInfo", "LLMStatusCode", "LLMException", "LLMRole", "LlmConfig", "LLMConfig", "DataType", "Status",
    "CacheDesc", "CacheKey", "CacheKeyByIdAndIndex", "Cache", "BlocksCacheKey", "LLMDataDist", "Placement",
    "RegisterMemStatus", "LayerSynchronizer", "TransferConfig", "CacheTask", "TransferWithCacheKeyConfig",
    "Memtype", "MemInfo",
]


def test_reference_names_exported():
    for name in REFERENCE_NAMES:
        assert hasattr(ld, name) and name in ld.__all__, name
    assert ld.LLMConfig is ld.LlmConfig
    from llm_datadist.configs import LLMClusterInfo  # the reference's module layout
    from llm_datadist.status import LLMException
    from llm_datadist.v2.cache_manager import CacheManager
    from llm_datadist.v2.llm_datadist import LLMDataDist
    from llm_datadist.v2.llm_types import CacheDesc

    assert (LLMClusterInfo, LLMException, LLMDataDist, CacheDesc) == (
        ld.LLMClusterInfo, ld.LLMException, ld.LLMDataDist, ld.CacheDesc)
    assert CacheManager is ld.CacheManager
    try:
        ld.KvCacheManager
    except AttributeError as e:
        assert "v1 engine" in str(e)
    else:
        raise AssertionError("KvCacheManager (v1) should not exist")


def test_enums_match_the_reference():
    assert {m.name: m.value for m in ld.LLMRole} == {"PROMPT": 1, "DECODER": 2, "MIX": 3}
    assert {m.name: m.value for m in ld.Placement} == {"HOST": 0, "DEVICE": 1}
    assert {m.name: m.value for m in ld.Memtype} == {"MEM_TYPE_DEVICE": 0, "MEM_TYPE_HOST": 1}
    assert {m.name: m.value for m in ld.RegisterMemStatus} == {"OK": 0, "PREPARING": 1, "FAILED": 2}
    assert {m.name: m.value for m in ld.DataType} == {
        "DT_FLOAT": 0, "DT_FLOAT16": 1, "DT_BF16": 27, "DT_INT8": 2, "DT_INT16": 6, "DT_UINT16": 7,
        "DT_UINT8": 4, "DT_INT32": 3, "DT_INT64": 9, "DT_UINT32": 8, "DT_UINT64": 10, "DT_BOOL": 12,
        "DT_DOUBLE": 11, "DT_STRING": 13,
    }
    codes = {m.name: m.value for m in ld.LLMStatusCode}
    assert codes["LLM_SUCCESS"] == 0 and codes["LLM_FAILED"] == 0xFFFFFFFF and codes["LLM_UNKNOWN_ERROR"] == -1
    assert codes["LLM_PARAM_INVALID"] == 0x5010B005 and codes["LLM_OUT_OF_MEMORY"] == 0x5010B01C
    assert codes["LLM_DEVICE_MEM_ERROR"] == 507053 and codes["LLM_SUSPECT_REMOTE_ERROR"] == 507057
    assert len(codes) == 29
    assert str(ld.LLMStatusCode.LLM_TIMEOUT) == "LLMStatusCode.LLM_TIMEOUT"
    assert str(ld.LLMRole.PROMPT) == "LLMRole.PROMPT" and str(ld.Placement.HOST) == "Placement.HOST"
    assert issubclass(ld.LLMException, RuntimeError)
    assert ld.LLMException("x").status_code == ld.LLMStatusCode.LLM_SUCCESS
    assert ld.Status(ld.LLMStatusCode.LLM_SUCCESS).is_ok()


def params(fn):
    return [(p.name, p.default if p.default is not inspect.Parameter.empty else "-")
            for p in inspect.signature(fn).parameters.values() if p.name != "self"]


def test_signatures_match_the_reference():
    D, C, T = ld.LLMDataDist, ld.CacheManager, ld
    assert params(D.__init__) == [("role", "-"), ("cluster_id", "-")]
    assert params(D.init) == [("options", "-")]
    assert params(D.link_clusters) == [("clusters", "-"), ("timeout", 3000)]
    assert params(D.unlink_clusters) == [("clusters", "-"), ("timeout", 3000), ("force", False)]
    assert params(D.switch_role) == [("role", "-"), ("switch_options", None)]
    assert params(D.link) == [("comm_name", "-"), ("cluster_rank_info", "-"), ("rank_table", "-")]
    assert params(D.unlink) == [("comm_id", "-")]
    assert params(D.query_register_mem_status) == [("comm_id", "-")]
    assert isinstance(inspect.getattr_static(D, "cluster_id"), property)
    assert isinstance(inspect.getattr_static(D, "cache_manager"), property)
    assert params(C.allocate_cache) == [("cache_desc", "-"), ("cache_keys", ())]
    assert params(C.allocate_blocks_cache) == [("cache_desc", "-"), ("blocks_cache_key", None)]
    assert params(C.register_cache) == [("cache_desc", "-"), ("addrs", "-"), ("cache_keys", ()),
                                        ("remote_accessible", None)]
    assert params(C.register_blocks_cache) == [("cache_desc", "-"), ("addrs", "-"), ("blocks_cache_key", None),
                                               ("remote_accessible", None)]
    assert params(C.unregister_cache) == [("cache_id", "-")]
    assert params(C.deallocate_cache) == [("cache", "-")]
    assert params(C.deallocate_blocks_cache) == [("cache", "-")]
    assert params(C.remove_cache_key) == [("cache_key", "-")]
    assert params(C.pull_cache) == [("cache_key", "-"), ("cache", "-"), ("batch_index", 0), ("size", -1),
                                    ("kwargs", "-")]
    assert params(C.pull_blocks) == [("src_cache_key", "-"), ("dst_cache", "-"), ("src_blocks", ()),
                                     ("dst_blocks", ()), ("kwargs", "-")]
    assert params(C.push_cache) == [("dst_cache_key", "-"), ("src_cache", "-"), ("src_batch_index", 0),
                                    ("src_layer_range", None), ("dst_layer_range", None), ("size", -1),
                                    ("tensor_num_per_layer", 2)]
    assert params(C.push_blocks) == [("dst_cache_key", "-"), ("src_cache", "-"), ("src_blocks", ()),
                                     ("dst_blocks", ()), ("src_layer_range", None), ("dst_layer_range", None),
                                     ("tensor_num_per_layer", 2)]
    assert params(C.copy_cache) == [("dst", "-"), ("src", "-"), ("dst_batch_index", 0), ("src_batch_index", 0),
                                    ("offset", 0), ("size", -1), ("req_id", None)]
    assert params(C.copy_blocks) == [("cache", "-"), ("copy_block_info", "-")]
    assert params(C.swap_blocks) == [("src_cache", "-"), ("dst_cache", "-"), ("src_to_dst", "-")]
    assert params(C.remap_registered_memory) == [("mem_infos", "-")]
    assert params(C.transfer_cache_async) == [("src_cache", "-"), ("layer_synchronizer", "-"),
                                              ("transfer_configs", "-"), ("src_block_indices", None),
                                              ("dst_block_indices", None), ("dst_block_memory_size", None)]
    assert params(T.CacheDesc.__init__) == [("num_tensors", "-"), ("shape", "-"), ("data_type", "-"),
                                            ("placement", ld.Placement.DEVICE), ("batch_dim_index", 0),
                                            ("seq_len_dim_index", -1), ("kv_tensor_format", None)]
    assert params(T.CacheKeyByIdAndIndex.__init__) == [("cluster_id", "-"), ("cache_id", "-"), ("batch_index", 0)]
    assert params(T.TransferConfig.__init__) == [("dst_cluster_id", "-"), ("dst_addrs", "-"),
                                                 ("src_layer_range", None), ("src_batch_index", 0)]
    assert params(T.TransferWithCacheKeyConfig.__init__) == [("cache_key", "-"), ("src_layer_range", None),
                                                             ("dst_layer_range", None), ("src_batch_index", 0)]
    assert params(T.CacheTask.synchronize) == [("timeout_in_millis", None)]
    assert params(T.CacheTask.get_results) == [("timeout_in_millis", None)]
    assert params(T.LayerSynchronizer.synchronize_layer) == [("layer_index", "-"), ("timeout_in_millis", "-")]
    assert params(T.MemInfo.__init__) == [("mem_type", "-"), ("addr", "-"), ("size", "-")]
    assert params(T.Cache.create_cpu_cache) == [("cache_desc", "-"), ("addrs", "-")]
    assert params(T.LLMClusterInfo.append_local_ip_info) == [("ip", "-"), ("port", "-")]
    assert params(T.LLMClusterInfo.append_remote_ip_info) == [("ip", "-"), ("port", "-")]
    for prop in ("cache_id", "cache_desc", "tensor_addrs", "is_blocks_cache"):
        assert isinstance(inspect.getattr_static(T.Cache, prop), property), prop


def test_llm_config_generates_the_reference_options():
    c = ld.LLMConfig()
    assert c.generate_options() == {"llm.MemoryUtilization": "0.95"}  # the reference's default
    c = ld.LLMConfig()
    c.device_id = 3
    c.listen_ip_info = "127.0.0.1:26000"
    c.sync_kv_timeout = 2000
    c.enable_cache_manager = True
    c.enable_remote_cache_accessible = False
    c.local_comm_res = ""
    c.transfer_backend = "hixl"
    c.global_resource_config = "{}"
    c.rdma_traffic_class = 132
    c.rdma_service_level = 4
    c.link_total_time = 10
    c.link_retry_count = 3
    c.mem_pool_cfg = '{"memory_size": 1024}'
    c.host_mem_pool_cfg = '{"memory_size": 2048}'
    c.buf_pool_cfg = "{}"
    c.enable_switch_role = True
    c.ge_options = {"ge.flowGraphMemMaxSize": "1024", "llmdd.SameHost": "off"}
    c.deploy_res_path = "/x"
    c.output_max_size = 7
    c.mem_utilization = 0.5
    c.cluster_info = '{"listen_ip_info": [{"ip": "127.0.0.1", "port": 1}]}'
    assert c.generate_options() == {
        "ge.flowGraphMemMaxSize": "1024", "llmdd.SameHost": "off",
        "ge.exec.deviceId": "3", "ge.session_device_id": "3", "llm.SyncKvCacheWaitTime": "2000",
        "llm.deployResPath": "/x", "llm.BufPoolCfg": "{}", "llm.MemPoolConfig": '{"memory_size": 1024}',
        "llm.HostMemPoolConfig": '{"memory_size": 2048}', "llm.EnableCacheManager": "1",
        "llm.EnableRemoteCacheAccessible": "0", "llm.listenIpInfo": "127.0.0.1:26000", "llm.LinkTotalTime": "10",
        "llm.LinkRetryCount": "3", "llm.RdmaTrafficClass": "132", "llm.RdmaServiceLevel": "4",
        "llm.LocalCommRes": "", "llm.TransferBackend": "hixl", "llm.GlobalResourceConfig": "{}",
        "llm.ClusterInfo": '{"listen_ip_info": [{"ip": 16777343, "port": 1}]}', "llm.OutputMaxSize": "7",
        "llm.EnableSwitchRole": "1", "llm.MemoryUtilization": "0.5",
    }
    c2 = ld.LLMConfig()
    c2.device_id = [0, 1]
    assert c2.generate_options()["ge.exec.deviceId"] == "0;1"
    assert (ld.LLMConfig().link_retry_count, ld.LLMConfig().link_total_time) == (1, 0)
