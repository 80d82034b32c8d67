"""Bad input: Python-level mistakes raise TypeError/ValueError (or the reference's
LLMException(LLM_PARAM_INVALID) for its own value checks); library refusals raise
LLMException with the library's status and message. Nothing crashes or hangs."""

import numpy as np
import pytest

import procs
from llm_datadist import (
    BlocksCacheKey,
    Cache,
    CacheDesc,
    CacheKey,
    CacheKeyByIdAndIndex,
    DataType,
    LayerSynchronizer,
    LLMClusterInfo,
    LLMConfig,
    LLMDataDist,
    LLMException,
    LLMRole,
    LLMStatusCode,
    MemInfo,
    Memtype,
    Placement,
    TransferConfig,
    TransferWithCacheKeyConfig,
)

S = LLMStatusCode


def raises_llm(status, match=None):
    return pytest.raises(LLMException, match=match)


def check_status(excinfo, status):
    assert excinfo.value.status_code == status, excinfo.value


def desc(num=2, shape=(4, 16), dt=DataType.DT_FLOAT16, placement=Placement.DEVICE):
    return CacheDesc(num, list(shape), dt, placement)


def arrays(n=2, shape=(4, 16), dtype=np.float16):
    return [np.zeros(shape, dtype=dtype) for _ in range(n)]


class Never(LayerSynchronizer):
    def synchronize_layer(self, layer_index, timeout_in_millis):
        return False


# -- constructors and value types ---------------------------------------------------
def test_llmdatadist_constructor_types():
    with pytest.raises(TypeError):
        LLMDataDist("prompt", 1)
    with pytest.raises(TypeError):
        LLMDataDist(1, 1)  # an int is not an LLMRole
    with pytest.raises(ValueError):
        LLMDataDist(LLMRole.PROMPT, -1)
    with pytest.raises(ValueError):
        LLMDataDist(LLMRole.PROMPT, 2**64)
    with pytest.raises(TypeError):
        LLMDataDist(LLMRole.PROMPT, "1")


def test_cache_desc_checks():
    with pytest.raises(ValueError):
        CacheDesc(-1, [1], DataType.DT_FLOAT)
    with pytest.raises(TypeError):
        CacheDesc(1, "4,4", DataType.DT_FLOAT)
    with pytest.raises(TypeError):
        CacheDesc(1, [4, "4"], DataType.DT_FLOAT)
    with pytest.raises(TypeError):
        CacheDesc(1, [4], 1)  # a code, not a DataType
    with pytest.raises(TypeError):
        CacheDesc(1, [4], DataType.DT_FLOAT, placement=1)
    with pytest.raises(LLMException, match="batch_dim_index 2 out of range") as e:
        CacheDesc(1, [4, 4], DataType.DT_FLOAT, batch_dim_index=2)
    check_status(e, S.LLM_PARAM_INVALID)
    with pytest.raises(LLMException, match="seq_len_dim_index 5 is invalid"):
        CacheDesc(1, [4, 4], DataType.DT_FLOAT, seq_len_dim_index=5)
    with pytest.raises(LLMException):
        CacheDesc(1, [], DataType.DT_FLOAT)
    with pytest.raises(ValueError):
        CacheDesc(1, [2**63], DataType.DT_FLOAT)
    with pytest.raises(LLMException, match="Failed to calc tensor size"):
        CacheDesc(1, [-1, 4], DataType.DT_FLOAT).size
    assert CacheDesc(3, (2, 5, 7), DataType.DT_BF16).size == 2 * 5 * 7 * 2


def test_key_checks():
    with pytest.raises(LLMException, match="Param req_id is required"):
        CacheKey(1)
    with pytest.raises(LLMException, match="Param num is over limit"):
        CacheKey(1, 2, 3, 4, 5)
    with pytest.raises(LLMException, match="Unsupported param:foo"):
        CacheKey(1, req_id=2, foo=3)
    with pytest.raises(LLMException, match="prompt_cluster_id or cluster_id is required"):
        BlocksCacheKey(model_id=1)
    with pytest.raises(TypeError):
        CacheKey("1", 2)
    with pytest.raises(ValueError):
        CacheKey(1, -2)
    with pytest.raises(TypeError):
        BlocksCacheKey(1, "0")
    with pytest.raises(ValueError):
        CacheKeyByIdAndIndex(1, 2, batch_index=-1)
    with pytest.raises(ValueError):
        CacheKeyByIdAndIndex(1, 2**63)
    k = CacheKey(prompt_cluster_id=3, req_id=4)
    assert (k.cluster_id, k.prompt_cluster_id, k.req_id, k.model_id, k.prefix_id) == (3, 3, 4, 0, 2**64 - 1)
    b = BlocksCacheKey(prompt_cluster_id=5, model_id=6)
    assert (b.cluster_id, b.model_id) == (5, 6)


def test_cluster_info_checks():
    c = LLMClusterInfo()
    with pytest.raises(ValueError) as e:
        c.append_remote_ip_info("not-an-ip", 1)
    assert isinstance(e.value, RuntimeError)  # the reference raises RuntimeError
    with pytest.raises(ValueError):
        c.append_remote_ip_info("127.0.0.1", 70000)
    with pytest.raises(TypeError):
        c.append_remote_ip_info(1.5, 1)
    with pytest.raises(ValueError):
        c.remote_cluster_id = -1
    c.append_remote_ip_info("127.0.0.1", 26000)
    c.append_local_ip_info(0x0100007F, 0)  # the reference's integer form of 127.0.0.1
    assert c.remote_ip_info_list == [(0x0100007F, 26000)]
    assert c.local_ip_info_list == [(0x0100007F, 0)]


def test_transfer_config_checks():
    with pytest.raises(TypeError):
        TransferWithCacheKeyConfig(CacheKey(1, 2), range(0, 1), range(0, 1))
    with pytest.raises(TypeError):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), None, range(0, 1))
    with pytest.raises(LLMException, match="step == 1"):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 4, 2), range(0, 2))
    with pytest.raises(LLMException, match="0 <= range.start < range.stop"):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(2, 2), range(0, 0))
    with pytest.raises(LLMException, match="size should be equal"):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 2), range(0, 3))
    with pytest.raises(LLMException, match="src_batch_index should be 0"):
        TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 1), range(0, 1), src_batch_index=1)
    with pytest.raises(TypeError):
        TransferConfig(1, [np.zeros(2)])  # remote addresses are ints
    with pytest.raises(ValueError):
        TransferConfig(1, [-1, 2])


def test_llm_config_checks():
    c = LLMConfig()
    with pytest.raises(TypeError):
        c.device_id = "0"
    with pytest.raises(LLMException, match="greater than or equal to zero"):
        c.device_id = -1
    with pytest.raises(LLMException, match="link_retry_count"):
        c.link_retry_count = 0
    with pytest.raises(LLMException, match="must be digit"):
        c.sync_kv_timeout = "abc"
    with pytest.raises(LLMException, match="greater than zero"):
        c.sync_kv_timeout = 0
    with pytest.raises(TypeError):
        c.enable_cache_manager = 1
    with pytest.raises(TypeError):
        c.ge_options = {"a": 1}
    with pytest.raises(LLMException, match="mem_utilization"):
        c.mem_utilization = 1.5


# -- init and lifecycle ---------------------------------------------------------------
def test_init_bad_options(make):
    d = make(init=False)
    with pytest.raises(TypeError):
        d.init([("llm.DeviceId", "0")])
    with pytest.raises(TypeError):
        d.init({"llm.DeviceId": 0, "llm.EnableCacheManager": "1"})
    with pytest.raises(LLMException, match="cache manager mode") as e:
        d.init({"ge.exec.deviceId": "0"})
    check_status(e, S.LLM_FEATURE_NOT_ENABLED)
    with pytest.raises(LLMException, match="llm.SyncKvCacheWaitTime") as e:
        d.init({"ge.exec.deviceId": "0", "llm.EnableCacheManager": "1", "llm.SyncKvCacheWaitTime": "soon"})
    check_status(e, S.LLM_PARAM_INVALID)
    assert "llmdd_init" in str(e.value)  # the library's own message is carried
    with pytest.raises(RuntimeError, match="not initialized"):
        d.cache_manager


def test_listen_port_in_use(make):
    port = procs.free_port()
    make(listen=port)
    d = make(init=False)
    c = LLMConfig()
    c.device_id = 0
    c.enable_cache_manager = True
    c.listen_ip_info = f"127.0.0.1:{port}"
    with pytest.raises(LLMException) as e:
        d.init(c.generate_options())
    check_status(e, S.LLM_FAILED)


def test_calls_after_finalize(make):
    d = make()
    cm = d.cache_manager
    d.finalize()
    d.finalize()  # idempotent
    with pytest.raises(RuntimeError, match="not initialized"):
        d.link_clusters([], 1000)
    with pytest.raises(RuntimeError, match="not initialized"):
        d.cache_manager
    with pytest.raises(LLMException) as e:
        cm.register_cache(desc(), arrays())
    check_status(e, S.LLM_FAILED)


# -- linking ---------------------------------------------------------------------------
def test_link_clusters_checks(pair):
    c = pair.cluster()
    with pytest.raises(LLMException, match="timeout should be greater than 0") as e:
        pair.decoder.link_clusters([c], 0)
    check_status(e, S.LLM_PARAM_INVALID)
    with pytest.raises(TypeError):
        pair.decoder.link_clusters([c], "5000")
    with pytest.raises(ValueError):
        pair.decoder.link_clusters([c], 2**31)
    with pytest.raises(TypeError):
        pair.decoder.link_clusters(c, 5000)
    with pytest.raises(TypeError):
        pair.decoder.link_clusters([c, "x"], 5000)
    no_local = LLMClusterInfo()
    no_local.remote_cluster_id = pair.prompt.cluster_id
    no_local.append_remote_ip_info("127.0.0.1", pair.port)
    with pytest.raises(LLMException, match="local_ip_info_list is empty"):
        pair.decoder.link_clusters([no_local], 5000)
    unset = LLMClusterInfo()
    unset.append_local_ip_info("127.0.0.1", 0)
    with pytest.raises(TypeError):
        pair.decoder.link_clusters([unset], 5000)


def test_link_failures_are_returned_not_raised(pair):
    dead = LLMClusterInfo()
    dead.remote_cluster_id = 999
    dead.append_local_ip_info("127.0.0.1", 0)
    dead.append_remote_ip_info("127.0.0.1", procs.free_port())  # nothing listens there
    ret, rets = pair.decoder.link_clusters([pair.cluster(), dead], 3000)
    assert ret == S.LLM_LINK_FAILED
    assert rets == [S.LLM_SUCCESS, S.LLM_LINK_FAILED]
    ret, rets = pair.decoder.link_clusters([pair.cluster()], 3000)
    assert (ret, rets) == (S.LLM_ALREADY_LINK, [S.LLM_ALREADY_LINK])
    many = [pair.cluster() for _ in range(17)]
    ret, rets = pair.decoder.link_clusters(many, 3000)
    assert ret == S.LLM_CLUSTER_NUM_EXCEED_LIMIT
    assert rets == [S.LLM_CLUSTER_NUM_EXCEED_LIMIT] * 17
    pair.unlink()


def test_listening_instance_cannot_switch_role_with_links(pair):
    pair.link()
    with pytest.raises(LLMException) as e:
        pair.prompt.switch_role(LLMRole.DECODER)
    check_status(e, S.LLM_EXIST_LINK)
    with pytest.raises(TypeError):
        pair.decoder.switch_role("PROMPT")
    with pytest.raises(TypeError):
        pair.decoder.switch_role(LLMRole.PROMPT, [("llm.listenIpInfo", "x")])
    pair.unlink()
    pair.prompt.switch_role(LLMRole.DECODER)


def test_rank_table_link_checks(make):
    d = make()
    cid = d.cluster_id
    with pytest.raises(LLMException, match="comm_name can not be empty"):
        d.link("", {cid: 0, 2: 1}, "{}")
    with pytest.raises(LLMException, match="smaller than 128"):
        d.link("x" * 128, {cid: 0, 2: 1}, "{}")
    with pytest.raises(TypeError):
        d.link("c", [(cid, 0)], "{}")
    with pytest.raises(LLMException, match="greater than 4"):
        d.link("c", {cid: 0, 2: 1, 3: 2, 4: 3, 5: 4}, "{}")
    with pytest.raises(LLMException, match="bigger than 1"):
        d.link("c", {cid: 0}, "{}")
    with pytest.raises(LLMException, match="must be ordered"):
        d.link("c", {cid: 1, 2: 0}, "{}")
    with pytest.raises(LLMException) as e:
        d.link("c", {cid: 0, 2: 1}, "not json")
    check_status(e, S.LLM_PARAM_INVALID)
    with pytest.raises(LLMException) as e:
        d.unlink(12345)
    check_status(e, S.LLM_NOT_YET_LINK)
    with pytest.raises(LLMException) as e:
        d.query_register_mem_status(12345)
    check_status(e, S.LLM_NOT_YET_LINK)
    with pytest.raises(ValueError):
        d.unlink(-1)


# -- caches ------------------------------------------------------------------------------
def test_register_checks(make):
    cm = make().cache_manager
    with pytest.raises(TypeError):
        cm.register_cache("desc", arrays())
    with pytest.raises(LLMException, match="addrs can not be empty"):
        cm.register_blocks_cache(desc(), [])
    with pytest.raises(LLMException, match="equal to num_tensors"):
        cm.register_cache(desc(num=3), arrays(2))
    with pytest.raises(LLMException, match="addr can not be zero"):
        cm.register_cache(desc(), [0, 0])
    with pytest.raises(ValueError, match="less than the 128 bytes"):
        cm.register_cache(desc(), arrays(shape=(4, 8)))
    ro = arrays()
    ro[0].setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        cm.register_cache(desc(), ro)
    with pytest.raises(ValueError, match="C-contiguous"):
        cm.register_cache(desc(), [np.zeros((16, 8), np.float16)[:, ::2].T, np.zeros((4, 16), np.float16)])
    with pytest.raises(TypeError, match="only supports int, numpy.ndarray"):
        cm.register_cache(desc(), ["0x1000", "0x2000"])
    with pytest.raises(TypeError):
        cm.register_cache(desc(), arrays(), remote_accessible=1)
    with pytest.raises(TypeError):
        cm.register_blocks_cache(desc(), arrays(), CacheKey(1, 2))
    mem = arrays()
    cm.register_cache(desc(), mem)
    with pytest.raises(LLMException, match="overlaps") as e:
        cm.register_cache(desc(), mem)  # the library refuses overlapping registrations
    check_status(e, S.LLM_PARAM_INVALID)
    with pytest.raises(ValueError):
        cm.unregister_cache(2**63)
    cm.unregister_cache(424242)  # unknown id: success, as documented


def test_allocate_checks(make):
    cm = make().cache_manager
    with pytest.raises(LLMException, match="config memory pool firstly"):
        cm.allocate_cache(desc())
    cm2 = make(mem_pool_cfg='{"memory_size": 1048576}').cache_manager
    with pytest.raises(LLMException, match="config memory pool firstly"):
        cm2.allocate_cache(desc(placement=Placement.HOST))
    with pytest.raises(TypeError):
        cm2.allocate_cache(desc(), [BlocksCacheKey(1)])
    with pytest.raises(LLMException) as e:
        cm2.allocate_cache(desc(shape=(4096, 1024)))  # 8 MiB per tensor > the 1 MiB pool
    check_status(e, S.LLM_OUT_OF_MEMORY)
    c = cm2.allocate_blocks_cache(desc(), BlocksCacheKey(5))
    with pytest.raises(LLMException, match="can not be blocks cache"):
        cm2.deallocate_cache(c)
    cm2.deallocate_blocks_cache(c)
    assert c.tensor_addrs == []


def test_pull_checks(pair):
    pair.link()
    cm = pair.decoder.cache_manager
    blocks = cm.register_blocks_cache(desc(), arrays())
    batch = cm.register_cache(desc(), arrays())
    key = BlocksCacheKey(pair.prompt.cluster_id)
    with pytest.raises(LLMException, match="dst_cache should be blocks cache"):
        cm.pull_blocks(key, batch, [0], [0])
    with pytest.raises(LLMException, match="dst_blocks can not be empty"):
        cm.pull_blocks(key, blocks, [0], [])
    with pytest.raises(LLMException, match="src_blocks can not be empty"):
        cm.pull_blocks(key, blocks, [], [0])
    with pytest.raises(LLMException, match="src_blocks should be empty"):
        cm.pull_blocks(CacheKey(pair.prompt.cluster_id, 1), blocks, [0], [0])
    with pytest.raises(LLMException, match="one of req id and prefix id"):
        cm.pull_blocks(CacheKey(pair.prompt.cluster_id, 2**64 - 1), blocks, [], [0])
    with pytest.raises(LLMException, match="only one of req id and prefix id"):
        cm.pull_cache(CacheKey(pair.prompt.cluster_id, 1, prefix_id=2), batch)
    with pytest.raises(TypeError, match="unexpected keyword"):
        cm.pull_blocks(key, blocks, [0], [0], src_layer_rang=range(0, 1))
    with pytest.raises(LLMException, match="step == 1"):
        cm.pull_blocks(key, blocks, [0], [0], src_layer_range=range(0, 2, 2))
    with pytest.raises(TypeError):
        cm.pull_blocks(key, blocks, [0], [0], src_layer_range=(0, 1))
    with pytest.raises(LLMException, match="tensor_num_per_layer"):
        cm.pull_blocks(key, blocks, [0], [0], tensor_num_per_layer=0)
    with pytest.raises(TypeError):
        cm.pull_blocks(key, blocks, ["0"], [0])
    with pytest.raises(ValueError):
        cm.pull_blocks(key, blocks, [-1], [0])
    with pytest.raises(LLMException, match="can not be blocks cache"):
        cm.pull_cache(CacheKey(pair.prompt.cluster_id, 1), blocks)
    with pytest.raises(LLMException, match="size"):
        cm.pull_cache(CacheKey(pair.prompt.cluster_id, 1), batch, size=0)
    # Library refusals: the prompt has no such cache; no link to cluster 777.
    with pytest.raises(LLMException) as e:
        cm.pull_blocks(key, blocks, [0], [0])
    check_status(e, S.LLM_KV_CACHE_NOT_EXIST)
    with pytest.raises(LLMException) as e:
        cm.pull_blocks(BlocksCacheKey(777), blocks, [0], [0])
    check_status(e, S.LLM_NOT_YET_LINK)
    pair.unlink()


def test_push_needs_remote_accessible_mode(pair):
    cm = pair.decoder.cache_manager
    c = cm.register_cache(desc(), arrays())
    with pytest.raises(LLMException, match="enable_remote_cache_accessible"):
        cm.push_cache(CacheKeyByIdAndIndex(pair.prompt.cluster_id, 1), c)
    with pytest.raises(LLMException, match="enable_remote_cache_accessible"):
        cm.push_blocks(BlocksCacheKey(pair.prompt.cluster_id), c, [0], [0])


def test_push_checks(remote_pair):
    remote_pair.link()
    cm = remote_pair.decoder.cache_manager
    batch = cm.register_cache(desc(num=4), arrays(4))
    blocks = cm.register_blocks_cache(desc(num=4), arrays(4))
    key = CacheKeyByIdAndIndex(remote_pair.prompt.cluster_id, 1)
    with pytest.raises(LLMException, match="size"):
        cm.push_cache(key, batch, size=16)
    with pytest.raises(LLMException, match="can not be blocks cache"):
        cm.push_cache(key, blocks)
    with pytest.raises(TypeError):
        cm.push_cache(BlocksCacheKey(1), batch)
    with pytest.raises(LLMException, match="size should be equal"):
        cm.push_cache(key, batch, src_layer_range=range(0, 2), dst_layer_range=range(0, 1))
    with pytest.raises(LLMException, match="cache should be blocks cache"):
        cm.push_blocks(BlocksCacheKey(1), batch, [0], [0])
    with pytest.raises(LLMException) as e:
        cm.push_cache(key, batch)  # the prompt registered nothing
    check_status(e, S.LLM_KV_CACHE_NOT_EXIST)
    remote_pair.unlink()


def test_copy_swap_remap_checks(make):
    cm = make().cache_manager
    a = cm.register_cache(desc(placement=Placement.HOST), arrays())
    blocks = cm.register_blocks_cache(desc(), arrays())
    with pytest.raises(LLMException, match="size"):
        cm.copy_cache(a, a, size=0)
    with pytest.raises(LLMException, match="can not be blocks cache"):
        cm.copy_cache(blocks, a)
    with pytest.raises(TypeError):
        cm.copy_blocks(blocks, {0: 1})
    with pytest.raises(LLMException, match="should be blocks cache"):
        cm.copy_blocks(a, {0: [1]})
    cpu = Cache.create_cpu_cache(desc(shape=(4, 16), placement=Placement.HOST), arrays())
    with pytest.raises(LLMException, match="must be in"):
        cm.swap_blocks(blocks, cpu, {0: 4})
    with pytest.raises(LLMException, match="is not support"):
        cm.swap_blocks(blocks, blocks, {0: 1})
    with pytest.raises(LLMException, match="block size"):
        cm.swap_blocks(blocks, Cache.create_cpu_cache(desc(shape=(4, 8), placement=Placement.HOST),
                                                       arrays(shape=(4, 8))), {0: 1})
    with pytest.raises(LLMException, match="placement must be HOST"):
        Cache.create_cpu_cache(desc(), arrays())
    with pytest.raises(LLMException, match="MEM_TYPE_DEVICE"):
        cm.remap_registered_memory(MemInfo(Memtype.MEM_TYPE_HOST, 4096, 10))
    with pytest.raises(LLMException, match="addr can not be zero"):
        cm.remap_registered_memory([MemInfo(Memtype.MEM_TYPE_DEVICE, 0, 10)])
    with pytest.raises(LLMException) as e:
        cm.remap_registered_memory([MemInfo(Memtype.MEM_TYPE_DEVICE, 4096, 10)])
    check_status(e, S.LLM_FEATURE_NOT_ENABLED)  # validated, then not supported (as documented)
    with pytest.raises(TypeError):
        MemInfo(0, 1, 1)


def test_transfer_cache_async_checks(pair, remote_pair):
    cm = pair.decoder.cache_manager
    src = cm.register_blocks_cache(desc(num=4), arrays(4))
    host = cm.register_blocks_cache(desc(num=4, placement=Placement.HOST), arrays(4))
    cfg = TransferConfig(pair.prompt.cluster_id, [1, 2, 3, 4])
    with pytest.raises(LLMException, match="placement HOST"):
        cm.transfer_cache_async(host, Never(), [cfg])
    with pytest.raises(TypeError):
        cm.transfer_cache_async(src, lambda layer, t: True, [cfg])
    with pytest.raises(TypeError):
        cm.transfer_cache_async(src, Never(), [TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 1),
                                                                            range(0, 1))])
    with pytest.raises(LLMException, match="blocks to cache is not supported"):
        cm.transfer_cache_async(src, Never(), [cfg], src_block_indices=[0])
    with pytest.raises(LLMException, match="num_block_indices mismatches"):
        cm.transfer_cache_async(src, Never(), [cfg], [0, 1], [0])
    with pytest.raises(LLMException, match="dst_block_memory_size must be set"):
        cm.transfer_cache_async(src, Never(), [cfg], None, [0])
    with pytest.raises(LLMException, match="neither None nor 0"):
        cm.transfer_cache_async(src, Never(), [cfg], dst_block_memory_size=64)
    with pytest.raises(LLMException, match="expect 4 dst_addrs"):
        cm.transfer_cache_async(src, Never(), [TransferConfig(1, [1, 2], range(0, 2))])
    with pytest.raises(LLMException, match="out of range"):
        cm.transfer_cache_async(src, Never(), [TransferConfig(1, [1, 2], range(2, 3))])
    with pytest.raises(LLMException) as e:  # the library: no link to the destination
        cm.transfer_cache_async(src, Never(), [cfg], [0], [0])
    check_status(e, S.LLM_NOT_YET_LINK)
    rcm = remote_pair.decoder.cache_manager
    rsrc = rcm.register_blocks_cache(desc(num=4), arrays(4))
    with pytest.raises(TypeError, match="enable_remote_cache_accessible is True"):
        rcm.transfer_cache_async(rsrc, Never(), [cfg])
