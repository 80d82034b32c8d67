"""The official Python samples of CANN LLM-DataDist (examples/python/llm_datadist/), on llmdd.

Each ``*_sample`` function is one process of a sample, written the way the
sample is, with only these substitutions (host memory, one machine):

- ``torch.ones(...).npu()`` / ``torch.full(...)`` -> numpy arrays, and
  ``tensor.data_ptr()`` -> ``tensor.ctypes.data``;
- ``dist.barrier()`` -> the harness's barrier (procs.Dist), same places;
- fixed IPs and ports (26000, 192.168.x.x, 10.10.10.x) -> 127.0.0.1 and ports
  the kernel had free; the rank table gets llmdd's ``host_port`` per device;
- where a sample only logs a tensor, the flow asserts its exact bytes; a
  prompt's tensor that the sample fills with ones gets a distinct pattern so
  the check can tell a real copy from an untouched buffer.

The flows return nothing; any exception fails the test with the traceback.
"""

from __future__ import annotations

import ctypes
import json
import logging
import socket
import struct
import threading
import time
from typing import List, Optional

import numpy as np

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
    LLMRole,
    LLMStatusCode,
    Placement,
    RegisterMemStatus,
    TransferConfig,
    TransferWithCacheKeyConfig,
)

log = logging.getLogger("sample")
HOST = "127.0.0.1"


def view(addr: int, nbytes: int, dtype=np.uint8) -> np.ndarray:
    """numpy view of library-owned memory (an allocated cache's tensor)."""
    buf = (ctypes.c_uint8 * nbytes).from_address(addr)
    return np.frombuffer(buf, dtype=dtype)


def pattern(shape, seed: int, dtype=np.float32) -> np.ndarray:
    """Distinct, reproducible contents for a tensor."""
    n = int(np.prod(shape))
    return ((np.arange(n, dtype=np.int64) * 7 + seed * 1009) % 65521).astype(dtype).reshape(shape)


def link_to(datadist, remote_cluster_id: int, local_port: int, remote_port: int) -> None:
    """The samples' link step: one LLMClusterInfo, link_clusters(..., 5000), raise unless success."""
    cluster = LLMClusterInfo()
    cluster.remote_cluster_id = remote_cluster_id
    cluster.append_local_ip_info(HOST, local_port)
    cluster.append_remote_ip_info(HOST, remote_port)
    ret, rets = datadist.link_clusters([cluster], 5000)
    if ret != LLMStatusCode.LLM_SUCCESS:
        raise Exception(f"link failed: {ret} {rets}")


def unlink_from(datadist, remote_cluster_id: int, remote_port: Optional[int] = None, force: bool = False) -> None:
    """The samples' unlink step (a non-forced unlink names the server's endpoint)."""
    cluster = LLMClusterInfo()
    cluster.remote_cluster_id = remote_cluster_id
    if remote_port is not None:
        cluster.append_remote_ip_info(HOST, remote_port)
    ret, _ = datadist.unlink_clusters([cluster], 5000, force=force)
    if ret != LLMStatusCode.LLM_SUCCESS:
        raise Exception(f"unlink failed: {ret}")


# ---------------------------------------------------------------------------
# Rank-table samples: pull_blocks_sample.py, pull_cache_sample.py,
# pull_from_cache_to_blocks.py (cluster ids 1 = prompt, 2 = decoder).
# ---------------------------------------------------------------------------
CACHE_NUM_TENSORS = 4
CACHE_SHAPE = [2, 16 * 1024]
MEM_POOL_SIZE = 64 * 1024 * 1024


def init_llm_datadist(role, cluster_id, device_id: int, enable_mem_pool: bool = True) -> LLMDataDist:
    datadist = LLMDataDist(role, cluster_id)
    llm_config = LLMConfig()
    llm_config.device_id = device_id
    llm_config.enable_cache_manager = True
    if enable_mem_pool:
        llm_config.mem_pool_cfg = f'{{"memory_size": {MEM_POOL_SIZE}}}'
    llm_options = llm_config.generate_options()
    datadist.init(llm_options)
    return datadist


def _build_single_rank_table(host_ip: str, ports: List[int]):
    # The sample's single-machine table (hccn_tool gives the device IPs there);
    # host_port is llmdd's per-device TCP port.
    return {
        "server_count": "1",
        "status": "completed",
        "version": "1.2",
        "server_list": [
            {
                "device": [
                    {"device_id": "0", "device_ip": host_ip, "rank_id": "0", "host_port": str(ports[0])},
                    {"device_id": "1", "device_ip": host_ip, "rank_id": "1", "host_port": str(ports[1])},
                ],
                "host_ip": host_ip,
                "server_id": "1",
            }
        ],
    }


def link(datadist, ports: List[int]):
    cluster_rank_info = {1: 0, 2: 1}
    rank_table = json.dumps(_build_single_rank_table(HOST, ports))
    comm_id = datadist.link("link", cluster_rank_info, rank_table)
    deadline = time.monotonic() + 60
    while True:
        ret = datadist.query_register_mem_status(comm_id)
        if ret == RegisterMemStatus.OK:
            log.info("query_register_mem_status ok")
            return comm_id
        if ret == RegisterMemStatus.FAILED:
            raise RuntimeError("link failed")
        if time.monotonic() > deadline:
            raise RuntimeError("link not ready after 60 s")
        time.sleep(0.05)  # the sample sleeps 1 s


def _allocate_cpu_cache(block_size, num_block, num_tensors):
    cpu_addrs = []
    cpu_tensors = []
    for _ in range(num_tensors):
        kv_tensor = np.random.rand(num_block, block_size).astype(np.float32)
        cpu_addrs.append(kv_tensor.ctypes.data)
        cpu_tensors.append(kv_tensor)
    cpu_cache_desc = CacheDesc(
        num_tensors=num_tensors,
        shape=[num_block, block_size],
        data_type=DataType.DT_FLOAT,
        placement=Placement.HOST,
    )
    return Cache.create_cpu_cache(cpu_cache_desc, cpu_addrs), cpu_tensors


def pull_blocks_sample(dist, cluster_id: int, ports: List[int]) -> None:
    role = LLMRole.PROMPT if cluster_id == 1 else LLMRole.DECODER
    datadist = init_llm_datadist(role, cluster_id, 0, enable_mem_pool=False)
    cache_manager = datadist.cache_manager
    cache_desc = CacheDesc(
        num_tensors=1, shape=[2, 1024 * 1024], data_type=DataType.DT_FLOAT, placement=Placement.DEVICE
    )
    expected = pattern((2, 1024 * 1024), seed=1)
    if role == LLMRole.PROMPT:
        tensor = expected.copy()
        addr = int(tensor.ctypes.data)
        _ = cache_manager.register_blocks_cache(cache_desc, [addr], BlocksCacheKey(1, 0))
        comm_id = link(datadist, ports)
        dist.barrier()  # cache ready
        dist.barrier()  # decoder pull_blocks end
        datadist.unlink(comm_id)
        dist.barrier()  # wait peer unlink end
        datadist.finalize()
        return
    tensor = np.ones((2, 1024 * 1024), dtype=np.float32)
    addr = int(tensor.ctypes.data)
    cache = cache_manager.register_blocks_cache(cache_desc, [addr])
    comm_id = link(datadist, ports)
    dist.barrier()  # cache ready
    cache_manager.pull_blocks(BlocksCacheKey(1, 0), cache, src_blocks=[0, 1], dst_blocks=[0, 1])
    assert np.array_equal(tensor, expected), "pulled blocks differ from the prompt's"
    # swap blocks
    cpu_cache, cpu_tensors = _allocate_cpu_cache(1024 * 1024, 2, 1)
    # swap out
    cache_manager.swap_blocks(cache, cpu_cache, {0: 0, 1: 1})
    assert np.array_equal(cpu_tensors[0], expected), "swap out"
    tensor[:] = 0  # (added) so that swap in is observable
    # swap in
    cache_manager.swap_blocks(cpu_cache, cache, {0: 0, 1: 1})
    assert np.array_equal(tensor, expected), "swap in"
    dist.barrier()  # pull_blocks end
    datadist.unlink(comm_id)
    dist.barrier()  # wait peer unlink end
    datadist.finalize()


def _fill_allocated(cache, seed: int) -> List[np.ndarray]:
    size = cache.cache_desc.size
    out = []
    for i, addr in enumerate(cache.tensor_addrs):
        v = view(addr, size)
        v[:] = pattern((size,), seed + i, np.uint8)
        out.append(v.copy())
    return out


def pull_cache_sample(dist, cluster_id: int, ports: List[int]) -> None:
    role = LLMRole.PROMPT if cluster_id == 1 else LLMRole.DECODER
    datadist = init_llm_datadist(role, cluster_id, 0)
    comm_id = link(datadist, ports)
    cache_manager = datadist.cache_manager
    cache_desc = CacheDesc(
        num_tensors=CACHE_NUM_TENSORS, shape=CACHE_SHAPE, data_type=DataType.DT_FLOAT16, placement=Placement.DEVICE
    )
    cache_key_0 = CacheKey(prompt_cluster_id=1, req_id=0, model_id=0)
    cache_key_1 = CacheKey(prompt_cluster_id=1, req_id=1, model_id=0)
    if role == LLMRole.PROMPT:
        cache = cache_manager.allocate_cache(cache_desc, [cache_key_0, cache_key_1])
        dist.send(1, _fill_allocated(cache, seed=10))
        dist.barrier()  # cache ready
        dist.barrier()  # decoder pull_cache end
        datadist.unlink(comm_id)
        dist.barrier()  # wait peer unlink end
        # After a successful pull_cache this is a no-op, as the sample says.
        cache_manager.remove_cache_key(cache_key_0)
        cache_manager.remove_cache_key(cache_key_1)
        cache_manager.deallocate_cache(cache)
        datadist.finalize()
        return
    cache = cache_manager.allocate_cache(cache_desc)
    dist.barrier()  # cache ready
    prompt_tensors = dist.recv()
    cache_manager.pull_cache(cache_key_0, cache, batch_index=0)
    cache_manager.pull_cache(cache_key_1, cache, batch_index=1)
    slot = cache_desc.size // 2
    for i, addr in enumerate(cache.tensor_addrs):
        got = view(addr, cache_desc.size)
        assert np.array_equal(got, prompt_tensors[i]), f"tensor {i} differs after pulling both slots"
    assert slot > 0
    dist.barrier()  # pull_cache end
    datadist.unlink(comm_id)
    dist.barrier()  # wait peer unlink end
    cache_manager.deallocate_cache(cache)
    datadist.finalize()


def pull_from_cache_to_blocks_sample(dist, cluster_id: int, ports: List[int]) -> None:
    role = LLMRole.PROMPT if cluster_id == 1 else LLMRole.DECODER
    datadist = init_llm_datadist(role, cluster_id, 0)
    cache_manager = datadist.cache_manager
    cache_desc = CacheDesc(
        num_tensors=CACHE_NUM_TENSORS, shape=CACHE_SHAPE, data_type=DataType.DT_FLOAT16, placement=Placement.DEVICE
    )
    cache_key = CacheKey(prompt_cluster_id=1, req_id=0, model_id=0)
    if role == LLMRole.PROMPT:
        comm_id = link(datadist, ports)
        cache = cache_manager.allocate_cache(cache_desc, [cache_key])
        dist.send(1, _fill_allocated(cache, seed=20))
        dist.barrier()  # cache ready
        dist.barrier()  # decoder pull_blocks end
        datadist.unlink(comm_id)
        dist.barrier()  # wait peer unlink end
        cache_manager.remove_cache_key(cache_key)
        cache_manager.deallocate_cache(cache)
        datadist.finalize()
        return
    tensors = []
    addrs = []
    for _ in range(CACHE_NUM_TENSORS):
        tensor = np.ones(CACHE_SHAPE, dtype=np.float16)
        addrs.append(tensor.ctypes.data)
        tensors.append(tensor)
    cache = cache_manager.register_blocks_cache(cache_desc, addrs)
    comm_id = link(datadist, ports)
    dist.barrier()  # cache ready
    prompt_tensors = dist.recv()
    cache_manager.pull_blocks(cache_key, cache, src_blocks=[], dst_blocks=[0])
    slot = cache_desc.size // CACHE_SHAPE[0]
    for i, t in enumerate(tensors):
        raw = t.view(np.uint8).reshape(-1)
        # The prompt's batch slot 0 (one block here) lands in block 0; block 1 keeps its ones.
        assert np.array_equal(raw[:slot], prompt_tensors[i][:slot]), f"tensor {i} block 0"
        assert np.all(t[1] == 1), f"tensor {i} block 1 was touched"
    dist.barrier()  # pull_blocks end
    datadist.unlink(comm_id)
    dist.barrier()  # wait peer unlink end
    datadist.finalize()


# ---------------------------------------------------------------------------
# link_clusters samples: push_blocks_sample.py, push_cache_sample.py,
# switch_role_sample.py, transfer_cache_async_sample.py,
# hixl_transfer_backend_sample.py (cluster ids 0 = prompt, 1 = decoder).
# ---------------------------------------------------------------------------
NUM_TENSORS = 2
BLOCKS_NUM = 3
KV_SHAPE = 10
PROMPT_CLUSTER_ID = 0
DECODER_CLUSTER_ID = 1


def _role(role_name: str):
    """The samples' ``--role p|d``: (role, cluster id)."""
    if role_name == "p":
        return LLMRole.PROMPT, PROMPT_CLUSTER_ID
    return LLMRole.DECODER, DECODER_CLUSTER_ID


def _init_link_sample(role, cluster_id, listen: Optional[str], *, local_comm_res=True, remote_cache=False,
                      transfer_backend: str = "") -> LLMDataDist:
    datadist = LLMDataDist(role, cluster_id)
    llm_config = LLMConfig()
    llm_config.device_id = 0
    if local_comm_res:
        llm_config.local_comm_res = ""
    if transfer_backend:
        llm_config.transfer_backend = transfer_backend
    if listen:
        llm_config.listen_ip_info = listen
    if not local_comm_res:
        llm_config.enable_cache_manager = True
        llm_config.enable_remote_cache_accessible = remote_cache
    datadist.init(llm_config.generate_options())
    return datadist


def _both_listen(role_name: str, p_port: int, d_port: int, **init):
    """The common start of the samples where P listens on p_port and D on d_port."""
    role, cluster_id = _role(role_name)
    listen = f"{HOST}:{p_port}" if role == LLMRole.PROMPT else f"{HOST}:{d_port}"
    datadist = _init_link_sample(role, cluster_id, listen, **init)
    cache_desc = CacheDesc(
        num_tensors=NUM_TENSORS, shape=[BLOCKS_NUM, KV_SHAPE], data_type=DataType.DT_FLOAT, placement=Placement.DEVICE
    )
    return role, datadist, datadist.cache_manager, cache_desc


def push_blocks_sample(dist, role_name: str, p_port: int, d_port: int) -> None:
    # The sample: both listen (P on 26000, D on 26001); D links to P and pushes.
    role, datadist, cache_manager, cache_desc = _both_listen(role_name, p_port, d_port)
    if role == LLMRole.PROMPT:
        tensor = np.ones((BLOCKS_NUM, KV_SHAPE), dtype=np.float32)
        tensor2 = np.ones((BLOCKS_NUM, KV_SHAPE), dtype=np.float32)
        cache = cache_manager.register_blocks_cache(
            cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)], BlocksCacheKey(PROMPT_CLUSTER_ID, 0)
        )
        dist.barrier()  # register end
        dist.barrier()  # decoder push blocks end
        for t, seed in ((tensor, 1), (tensor2, 2)):
            src = pattern((BLOCKS_NUM, KV_SHAPE), seed)
            assert np.array_equal(t[0], src[0]) and np.array_equal(t[2], src[1]), "pushed blocks"
            assert np.all(t[1] == 1), "block 1 was not pushed to"
        unlink_from(datadist, DECODER_CLUSTER_ID, force=True)
        cache_manager.unregister_cache(cache.cache_id)
        datadist.finalize()
        return
    tensor = pattern((BLOCKS_NUM, KV_SHAPE), 1)  # the sample: zeros
    tensor2 = pattern((BLOCKS_NUM, KV_SHAPE), 2)
    cache = cache_manager.register_blocks_cache(
        cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)], BlocksCacheKey(DECODER_CLUSTER_ID, 0)
    )
    dist.barrier()  # register end
    link_to(datadist, PROMPT_CLUSTER_ID, d_port, p_port)
    cache_manager.push_blocks(BlocksCacheKey(PROMPT_CLUSTER_ID, 0), cache, src_blocks=[0, 1], dst_blocks=[0, 2])
    dist.barrier()  # push_blocks end
    unlink_from(datadist, PROMPT_CLUSTER_ID, force=True)
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()


def push_cache_sample(dist, role_name: str, p_port: int, d_port: int) -> None:
    # The sample: both listen; D links to P and pushes its batch slot 0 into P's cache 1, slot 0.
    role, datadist, cache_manager, cache_desc = _both_listen(role_name, p_port, d_port)
    if role == LLMRole.PROMPT:
        tensor = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
        tensor2 = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
        cache = cache_manager.register_cache(cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)])
        assert cache.cache_id == 1  # the sample's decoder names it CacheKeyByIdAndIndex(0, cache_id=1)
        dist.barrier()  # register end
        dist.barrier()  # decoder push cache end
        assert np.all(tensor[0] == 1) and np.all(tensor2[0] == 1), "slot 0 was pushed"
        assert np.all(tensor[1:] == 0) and np.all(tensor2[1:] == 0), "other slots untouched"
        dist.barrier()  # wait unlink end
        cache_manager.unregister_cache(cache.cache_id)
        datadist.finalize()
        return
    tensor = np.full((BLOCKS_NUM, KV_SHAPE), 1, dtype=np.float32)
    tensor2 = np.full((BLOCKS_NUM, KV_SHAPE), 1, dtype=np.float32)
    cache = cache_manager.register_cache(cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)])
    dist.barrier()  # register end
    link_to(datadist, PROMPT_CLUSTER_ID, d_port, p_port)
    cache_manager.push_cache(
        CacheKeyByIdAndIndex(cluster_id=PROMPT_CLUSTER_ID, cache_id=1, batch_index=0), cache, src_batch_index=0
    )
    dist.barrier()  # push cache end
    unlink_from(datadist, PROMPT_CLUSTER_ID, p_port)
    dist.barrier()  # unlink end
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()


def switch_role_sample(dist, role_name: str, port: int) -> None:
    # The sample uses one port (26000) for both: first P listens on it, after the
    # switch D does. Here both run on one host, so D takes over P's port.
    role, cluster_id = _role(role_name)
    listen = f"{HOST}:{port}" if role == LLMRole.PROMPT else None
    datadist = _init_link_sample(role, cluster_id, listen)
    cache_manager = datadist.cache_manager
    cache_desc = CacheDesc(
        num_tensors=NUM_TENSORS, shape=[BLOCKS_NUM, KV_SHAPE], data_type=DataType.DT_FLOAT, placement=Placement.DEVICE
    )
    p_data = [pattern((BLOCKS_NUM, KV_SHAPE), 3), pattern((BLOCKS_NUM, KV_SHAPE), 4)]
    if role == LLMRole.PROMPT:
        tensor, tensor2 = p_data[0].copy(), p_data[1].copy()  # the sample: ones
        cache = cache_manager.register_blocks_cache(
            cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)], BlocksCacheKey(PROMPT_CLUSTER_ID, 0)
        )
        dist.barrier()  # register end
        dist.barrier()  # decoder unlink
        datadist.switch_role(LLMRole.DECODER)
        dist.barrier()  # prompt switch role end, close listen
        dist.barrier()  # decoder switch role end, listen
        link_to(datadist, DECODER_CLUSTER_ID, port, port)
        dist.barrier()  # prompt link end
        dist.barrier()  # decoder push blocks end
        # D pulled P's blocks 0,1 into its blocks 0,2 (block 1 stayed 0), then pushed all 3 back.
        for t, src in ((tensor, p_data[0]), (tensor2, p_data[1])):
            assert np.array_equal(t[0], src[0]) and np.array_equal(t[1], src[0] * 0) and np.array_equal(
                t[2], src[1]
            ), "blocks pushed back after the switch"
        unlink_from(datadist, DECODER_CLUSTER_ID, force=True)
        cache_manager.unregister_cache(cache.cache_id)
        datadist.finalize()
        return
    tensor = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
    tensor2 = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
    cache = cache_manager.register_blocks_cache(
        cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)], BlocksCacheKey(DECODER_CLUSTER_ID, 0)
    )
    dist.barrier()  # register end
    link_to(datadist, PROMPT_CLUSTER_ID, port, port)
    cache_manager.pull_blocks(BlocksCacheKey(PROMPT_CLUSTER_ID, 0), cache, src_blocks=[0, 1], dst_blocks=[0, 2])
    for t, src in ((tensor, p_data[0]), (tensor2, p_data[1])):
        assert np.array_equal(t[0], src[0]) and np.array_equal(t[2], src[1]) and np.all(t[1] == 0), "pull"
    unlink_from(datadist, PROMPT_CLUSTER_ID, port)
    dist.barrier()  # decoder unlink
    dist.barrier()  # prompt switch role end, close listen
    llm_config = LLMConfig()
    llm_config.listen_ip_info = f"{HOST}:{port}"
    llm_options = llm_config.generate_options()
    datadist.switch_role(LLMRole.PROMPT, llm_options)
    dist.barrier()  # decoder switch role end, listen
    dist.barrier()  # prompt link end
    cache_manager.push_blocks(
        BlocksCacheKey(PROMPT_CLUSTER_ID, 0),
        cache,
        src_blocks=[0, 1, 2],
        dst_blocks=[0, 1, 2],
        src_layer_range=range(0, 2),
        dst_layer_range=range(0, 2),
        tensor_num_per_layer=1,
    )
    dist.barrier()  # decoder push blocks end
    unlink_from(datadist, PROMPT_CLUSTER_ID, force=True)
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()


class LayerSynchronizerImpl(LayerSynchronizer):
    def __init__(self, ret=True):
        self._ret = ret

    def synchronize_layer(self, layer_index: int, timeout_in_millis: Optional[int]) -> bool:
        return self._ret


def transfer_cache_async_sample(dist, role_name: str, p_port: int, d_port: int) -> None:
    # The sample: D listens on 26000, P on 26001; P links to D and sends layer 0
    # of its blocks cache (no block indices) into D's blocks cache.
    role, cluster_id = _role(role_name)
    listen = f"{HOST}:{d_port}" if role == LLMRole.DECODER else f"{HOST}:{p_port}"
    datadist = _init_link_sample(role, cluster_id, listen, local_comm_res=False, remote_cache=True)
    cache_manager = datadist.cache_manager
    cache_desc = CacheDesc(
        num_tensors=NUM_TENSORS, shape=[BLOCKS_NUM, KV_SHAPE], data_type=DataType.DT_FLOAT, placement=Placement.DEVICE
    )
    if role == LLMRole.PROMPT:
        tensor = pattern((BLOCKS_NUM, KV_SHAPE), 5)  # the sample: ones
        tensor2 = pattern((BLOCKS_NUM, KV_SHAPE), 6)
        cache = cache_manager.register_blocks_cache(
            cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)], BlocksCacheKey(PROMPT_CLUSTER_ID, 0)
        )
        dist.barrier()  # register end
        link_to(datadist, DECODER_CLUSTER_ID, p_port, d_port)
        transfer_config = TransferWithCacheKeyConfig(BlocksCacheKey(DECODER_CLUSTER_ID, 0), range(0, 1), range(0, 1))
        cache_task = cache_manager.transfer_cache_async(cache, LayerSynchronizerImpl(True), [transfer_config])
        results = cache_task.get_results()
        assert results == [LLMStatusCode.LLM_SUCCESS], results
        dist.barrier()  # transfer cache end
        unlink_from(datadist, DECODER_CLUSTER_ID, force=True)
        cache_manager.unregister_cache(cache.cache_id)
        datadist.finalize()
        return
    tensor = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
    tensor2 = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
    cache = cache_manager.register_blocks_cache(
        cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)], BlocksCacheKey(DECODER_CLUSTER_ID, 0)
    )
    dist.barrier()  # register end
    dist.barrier()  # prompt transfer cache end
    # Without block indices one stride moves, as in the reference: block 0 of both
    # tensors of layer 0; blocks 1 and 2 keep their zeros.
    for t, seed in ((tensor, 5), (tensor2, 6)):
        assert np.array_equal(t[0], pattern((BLOCKS_NUM, KV_SHAPE), seed)[0]), "block 0 after transfer"
        assert np.all(t[1:] == 0), "blocks 1 and 2 were not sent"
    unlink_from(datadist, PROMPT_CLUSTER_ID, force=True)
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()


def hixl_transfer_backend_sample(dist, role_name: str, p_port: int, d_port: int) -> None:
    # The sample: transfer_backend "hixl", both listen, each links to the other;
    # P pulls D's block 2, D pushes its blocks 0,1 into P; P's tensors end all zeros.
    role, datadist, cache_manager, cache_desc = _both_listen(role_name, p_port, d_port, transfer_backend="hixl")
    mine, peer = (p_port, d_port) if role == LLMRole.PROMPT else (d_port, p_port)
    if role == LLMRole.PROMPT:
        tensor = np.ones((BLOCKS_NUM, KV_SHAPE), dtype=np.float32)
        tensor2 = np.ones((BLOCKS_NUM, KV_SHAPE), dtype=np.float32)
        key = BlocksCacheKey(PROMPT_CLUSTER_ID, 0)
    else:
        tensor = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
        tensor2 = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
        key = BlocksCacheKey(DECODER_CLUSTER_ID, 0)
    cache = cache_manager.register_blocks_cache(cache_desc, [int(tensor.ctypes.data), int(tensor2.ctypes.data)], key)
    dist.barrier()  # register end
    link_to(datadist, DECODER_CLUSTER_ID if role == LLMRole.PROMPT else PROMPT_CLUSTER_ID, mine, peer)
    if role == LLMRole.PROMPT:
        cache_manager.pull_blocks(BlocksCacheKey(DECODER_CLUSTER_ID, 0), cache, src_blocks=[2], dst_blocks=[2])
    else:
        cache_manager.push_blocks(BlocksCacheKey(PROMPT_CLUSTER_ID, 0), cache, src_blocks=[0, 1], dst_blocks=[0, 1])
    dist.barrier()  # push_blocks end
    cluster = LLMClusterInfo()
    cluster.remote_cluster_id = DECODER_CLUSTER_ID if role == LLMRole.PROMPT else PROMPT_CLUSTER_ID
    ret, _ = datadist.unlink_clusters([cluster], 5000)
    if ret != LLMStatusCode.LLM_SUCCESS:
        raise Exception(f"unlink failed: {ret}")
    dist.barrier()  # wait peer unlink end
    if role == LLMRole.PROMPT:
        expect_tensor = np.zeros((BLOCKS_NUM, KV_SHAPE), dtype=np.float32)
        assert np.array_equal(expect_tensor, tensor), tensor
        assert np.array_equal(expect_tensor, tensor2), tensor2
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()


# ---------------------------------------------------------------------------
# pull_blocks_xpyd_sample.py: one decoder pulls from several prompts, cluster
# ids derived from "ip:port".
# ---------------------------------------------------------------------------
def ip_port_to_int(ip_port):
    ip, port_str = ip_port.split(":")
    port = int(port_str)
    ip_int = struct.unpack("!I", socket.inet_aton(ip))[0]
    return (ip_int << 16) | port


def pull_blocks_xpyd_sample(dist, role_name: str, local_ip_port: str, remote_ip_port: str = "") -> None:
    role = LLMRole.PROMPT if role_name == "p" else LLMRole.DECODER
    datadist = LLMDataDist(role, ip_port_to_int(local_ip_port))
    llm_config = LLMConfig()
    llm_config.device_id = 0
    llm_config.local_comm_res = ""
    if role_name == "p":
        llm_config.listen_ip_info = local_ip_port
    datadist.init(llm_config.generate_options())
    cache_manager = datadist.cache_manager
    cache_desc = CacheDesc(num_tensors=1, shape=[BLOCKS_NUM, KV_SHAPE], data_type=DataType.DT_FLOAT,
                           placement=Placement.DEVICE)
    if role == LLMRole.PROMPT:
        tensor = np.full((BLOCKS_NUM, KV_SHAPE), ip_port_to_int(local_ip_port), dtype=np.float32)
        cache = cache_manager.register_blocks_cache(
            cache_desc, [int(tensor.ctypes.data)], BlocksCacheKey(ip_port_to_int(local_ip_port), 0)
        )
        dist.barrier()  # register end (the sample sleeps)
        dist.barrier()  # decoder done (the sample sleeps 30 s)
        cache_manager.unregister_cache(cache.cache_id)
        datadist.finalize()
        return
    remote_list = remote_ip_port.split(";")
    tensor = np.full((BLOCKS_NUM, KV_SHAPE), 0, dtype=np.float32)
    cache = cache_manager.register_blocks_cache(
        cache_desc, [int(tensor.ctypes.data)], BlocksCacheKey(ip_port_to_int(local_ip_port), 0)
    )
    dist.barrier()  # register end
    cluster_list = []
    for remote in remote_list:
        cluster = LLMClusterInfo()
        cluster.remote_cluster_id = ip_port_to_int(remote)
        cluster.append_local_ip_info(local_ip_port.split(":")[0], 0)
        cluster.append_remote_ip_info(remote.split(":")[0], int(remote.split(":")[1]))
        cluster_list.append(cluster)
    ret, rets = datadist.link_clusters(cluster_list, 5000)
    if ret != LLMStatusCode.LLM_SUCCESS:
        raise Exception(f"link failed: {ret} {rets}")
    for remote in remote_list:
        cache_manager.pull_blocks(BlocksCacheKey(ip_port_to_int(remote), 0), cache, src_blocks=[0, 1],
                                  dst_blocks=[0, 2])
        value = np.float32(ip_port_to_int(remote))
        assert np.all(tensor[0] == value) and np.all(tensor[2] == value) and np.all(tensor[1] == 0), remote
    ret, _ = datadist.unlink_clusters(cluster_list, 5000)
    if ret != LLMStatusCode.LLM_SUCCESS:
        raise Exception("unlink failed")
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()
    dist.barrier()  # decoder done


# ---------------------------------------------------------------------------
# Flows beyond the samples (only the prompt listens, so they need no compat fix).
# ---------------------------------------------------------------------------
LAYERS = 4


def push_cache_layer_ranges(dist, role_name: str, p_port: int) -> None:
    """D pushes chosen layers of one batch slot into another slot of P's cache."""
    role, cluster_id = _role(role_name)
    datadist = _init_link_sample(role, cluster_id, f"{HOST}:{p_port}" if role == LLMRole.PROMPT else None)
    cache_manager = datadist.cache_manager
    desc = CacheDesc(num_tensors=2 * LAYERS, shape=[BLOCKS_NUM, KV_SHAPE], data_type=DataType.DT_FLOAT)
    if role == LLMRole.PROMPT:
        tensors = [np.zeros((BLOCKS_NUM, KV_SHAPE), dtype=np.float32) for _ in range(2 * LAYERS)]
        cache = cache_manager.register_cache(desc, tensors)  # arrays themselves as addresses
        dist.send(1, cache.cache_id)
        dist.barrier()  # register end
        dist.barrier()  # push end
        src = [pattern((BLOCKS_NUM, KV_SHAPE), 40 + t) for t in range(2 * LAYERS)]
        # push 1: source layers 1..2 (tensors 2..5), slot 2 -> destination layers 0..1, slot 1.
        for t in range(4):
            assert np.array_equal(tensors[t][1], src[t + 2][2]), f"push 1 tensor {t}"
        # push 2: one tensor per layer, source tensor 7 slot 0 -> destination tensor 6 slot 0.
        assert np.array_equal(tensors[6][0], src[7][0]), "push 2"
        for t in range(2 * LAYERS):
            for slot in range(BLOCKS_NUM):
                if (t < 4 and slot == 1) or (t == 6 and slot == 0):
                    continue
                assert np.all(tensors[t][slot] == 0), f"tensor {t} slot {slot} touched"
        dist.barrier()  # unlink end
        cache_manager.unregister_cache(cache.cache_id)
        datadist.finalize()
        return
    tensors = [pattern((BLOCKS_NUM, KV_SHAPE), 40 + t) for t in range(2 * LAYERS)]
    cache = cache_manager.register_cache(desc, [int(t.ctypes.data) for t in tensors])
    p_cache_id = dist.recv()
    dist.barrier()  # register end
    link_to(datadist, PROMPT_CLUSTER_ID, 0, p_port)
    key = CacheKeyByIdAndIndex(PROMPT_CLUSTER_ID, p_cache_id, batch_index=1)
    cache_manager.push_cache(key, cache, src_batch_index=2, src_layer_range=range(1, 3), dst_layer_range=range(0, 2))
    key0 = CacheKeyByIdAndIndex(PROMPT_CLUSTER_ID, p_cache_id, batch_index=0)
    cache_manager.push_cache(key0, cache, src_batch_index=0, src_layer_range=range(7, 8),
                             dst_layer_range=range(6, 7), tensor_num_per_layer=1)
    dist.barrier()  # push end
    unlink_from(datadist, PROMPT_CLUSTER_ID, p_port)
    dist.barrier()  # unlink end
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()


class ComputedLayers(LayerSynchronizer):
    """Releases layer L once the "model" (the main thread) has written it."""

    def __init__(self, n: int) -> None:
        self.ready = [threading.Event() for _ in range(n)]
        self.calls: List[int] = []

    def synchronize_layer(self, layer_index: int, timeout_in_millis: Optional[int]) -> bool:
        assert timeout_in_millis is None
        self.calls.append(layer_index)
        return self.ready[layer_index].wait(timeout=60)


def layerwise_async(dist, role_name: str, d_port: int, by_key: bool) -> None:
    """P sends each layer of a blocks cache as it is "computed" (by key, or by address)."""
    role, cluster_id = _role(role_name)
    listen = f"{HOST}:{d_port}" if role == LLMRole.DECODER else None
    datadist = _init_link_sample(role, cluster_id, listen, local_comm_res=False, remote_cache=by_key)
    cache_manager = datadist.cache_manager
    blocks = 8
    desc = CacheDesc(num_tensors=2 * LAYERS, shape=[blocks, 64], data_type=DataType.DT_FLOAT16)
    src_blocks, dst_blocks = [1, 2, 5], [6, 0, 3]
    if role == LLMRole.DECODER:
        tensors = [np.zeros((blocks, 64), dtype=np.float16) for _ in range(2 * LAYERS)]
        cache = cache_manager.register_blocks_cache(desc, tensors, BlocksCacheKey(DECODER_CLUSTER_ID, 0))
        dist.send(0, cache.tensor_addrs)
        dist.barrier()  # register end
        dist.barrier()  # transfer end
        for t in range(2 * LAYERS):
            src = pattern((blocks, 64), 60 + t, np.float16)
            for s, d in zip(src_blocks, dst_blocks):
                assert np.array_equal(tensors[t][d], src[s]), f"tensor {t} block {d}"
            untouched = [b for b in range(blocks) if b not in dst_blocks]
            assert np.all(tensors[t][untouched] == 0), f"tensor {t} other blocks"
        dist.barrier()  # unlink end
        cache_manager.unregister_cache(cache.cache_id)
        datadist.finalize()
        return
    tensors = [np.zeros((blocks, 64), dtype=np.float16) for _ in range(2 * LAYERS)]
    cache = cache_manager.register_blocks_cache(desc, tensors)
    d_addrs = dist.recv()
    dist.barrier()  # register end
    link_to(datadist, DECODER_CLUSTER_ID, 0, d_port)
    sync = ComputedLayers(LAYERS)
    if by_key:
        config = TransferWithCacheKeyConfig(BlocksCacheKey(DECODER_CLUSTER_ID, 0), range(0, LAYERS), range(0, LAYERS))
    else:
        config = TransferConfig(DECODER_CLUSTER_ID, list(d_addrs))
    task = cache_manager.transfer_cache_async(cache, sync, [config], src_blocks, dst_blocks)
    for layer in range(LAYERS):  # "prefill": compute layer L, then release it
        for k in range(2):
            t = 2 * layer + k
            tensors[t][:] = pattern((blocks, 64), 60 + t, np.float16)
        sync.ready[layer].set()
        if layer == 0:
            assert task.synchronize(0) == LLMStatusCode.LLM_TIMEOUT  # still running: later layers not released
    assert task.synchronize() == LLMStatusCode.LLM_SUCCESS
    assert task.get_results() == [LLMStatusCode.LLM_SUCCESS]
    assert sync.calls == list(range(LAYERS)), sync.calls
    dist.barrier()  # transfer end
    unlink_from(datadist, DECODER_CLUSTER_ID, d_port)
    dist.barrier()  # unlink end
    cache_manager.unregister_cache(cache.cache_id)
    datadist.finalize()
