"""Callbacks and lifetimes: the layer synchronizer on library threads (exceptions,
reentrancy), finalize with live tasks, release of tasks and instances on GC, the
context manager, and interpreter exit with work in flight."""

import gc
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import procs
from llm_datadist import (
    BlocksCacheKey,
    CacheDesc,
    DataType,
    LayerSynchronizer,
    LLMConfig,
    LLMDataDist,
    LLMException,
    LLMRole,
    LLMStatusCode,
    TransferWithCacheKeyConfig,
)
from llm_datadist import _handles

S = LLMStatusCode
LAYERS = 4
BLOCKS = 4


class Recorder(LayerSynchronizer):
    """Calls ``action(layer)`` and records each layer it is asked for."""

    def __init__(self, action=lambda layer: True) -> None:
        self.calls = []
        self.threads = set()
        self.action = action

    def synchronize_layer(self, layer_index, timeout_in_millis):
        self.calls.append(layer_index)
        self.threads.add(threading.get_ident())
        return self.action(layer_index)


def setup_async(remote_pair):
    """Decoder-side source cache (client) and prompt-side destination (server), linked."""
    d = CacheDesc(2 * LAYERS, [BLOCKS, 32], DataType.DT_FLOAT)
    dst = [np.zeros((BLOCKS, 32), np.float32) for _ in range(2 * LAYERS)]
    remote_pair.prompt.cache_manager.register_blocks_cache(d, dst, BlocksCacheKey(remote_pair.prompt.cluster_id))
    src = [np.full((BLOCKS, 32), t + 1, np.float32) for t in range(2 * LAYERS)]
    cache = remote_pair.decoder.cache_manager.register_blocks_cache(d, src)
    remote_pair.link()
    cfg = TransferWithCacheKeyConfig(BlocksCacheKey(remote_pair.prompt.cluster_id), range(0, LAYERS),
                                     range(0, LAYERS))
    return cache, cfg, src, dst


def start(remote_pair, cache, cfg, sync):
    return remote_pair.decoder.cache_manager.transfer_cache_async(cache, sync, [cfg], [0, 1], [2, 3])


def arrived(dst, layer):
    return all(np.array_equal(dst[2 * layer + k][2:4], np.full((2, 32), 2 * layer + k + 1)) for k in range(2))


def test_synchronizer_runs_on_a_library_thread(remote_pair):
    cache, cfg, src, dst = setup_async(remote_pair)
    sync = Recorder()
    task = start(remote_pair, cache, cfg, sync)
    assert task.synchronize(10000) == S.LLM_SUCCESS
    assert task.get_results() == [S.LLM_SUCCESS]
    assert sync.calls == list(range(LAYERS))
    assert threading.get_ident() not in sync.threads
    assert all(arrived(dst, layer) for layer in range(LAYERS))
    remote_pair.unlink()


def test_synchronizer_that_raises_fails_its_layer(remote_pair, llm_logs):
    cache, cfg, src, dst = setup_async(remote_pair)

    def action(layer):
        if layer == 2:
            raise ValueError("model crashed at layer 2")
        return True

    sync = Recorder(action)
    task = start(remote_pair, cache, cfg, sync)
    assert task.synchronize() == S.LLM_PARAM_INVALID
    assert task.get_results() == [S.LLM_PARAM_INVALID]
    assert sync.calls == [0, 1, 2]  # never called again after the failure
    assert arrived(dst, 0) and arrived(dst, 1)
    assert not arrived(dst, 2) and not arrived(dst, 3)
    errors = [r for r in llm_logs.records if "layer synchronizer" in r.getMessage()]
    assert errors and errors[0].exc_info and "model crashed at layer 2" in str(errors[0].exc_info[1])
    remote_pair.unlink()


@pytest.mark.parametrize("answer", [False, None, 0])
def test_synchronizer_that_refuses(remote_pair, answer):
    cache, cfg, src, dst = setup_async(remote_pair)
    sync = Recorder(lambda layer: answer if layer == 1 else True)
    task = start(remote_pair, cache, cfg, sync)
    assert task.synchronize() == S.LLM_PARAM_INVALID
    assert sync.calls == [0, 1]
    assert arrived(dst, 0) and not arrived(dst, 1)
    remote_pair.unlink()


def test_synchronizer_cannot_wait_for_its_own_task_or_finalize(remote_pair, llm_logs):
    cache, cfg, src, dst = setup_async(remote_pair)
    box = {}
    started = threading.Event()

    def action(layer):
        if layer == 0:
            started.wait(10)  # the callback may run before transfer_cache_async has returned
            box["task"].synchronize()  # would wait forever: refused
        return True

    sync = Recorder(action)
    box["task"] = start(remote_pair, cache, cfg, sync)
    started.set()
    assert box["task"].synchronize() == S.LLM_PARAM_INVALID
    assert any(isinstance(r.exc_info[1], RuntimeError) for r in llm_logs.records if r.exc_info)
    llm_logs.clear()

    def finalizer(layer):
        remote_pair.decoder.finalize()  # would deadlock: refused
        return True

    task = start(remote_pair, cache, cfg, Recorder(finalizer))
    assert task.synchronize() == S.LLM_PARAM_INVALID
    assert any(isinstance(r.exc_info[1], LLMException) for r in llm_logs.records if r.exc_info)
    remote_pair.unlink()  # the decoder is still initialized and usable


def test_finalize_with_live_tasks(remote_pair):
    cache, cfg, src, dst = setup_async(remote_pair)
    release = threading.Event()
    sync = Recorder(lambda layer: release.wait(10))
    task = start(remote_pair, cache, cfg, sync)
    waiter_result = []
    waiter = threading.Thread(target=lambda: waiter_result.append(task.synchronize()))
    waiter.start()
    while not sync.calls:
        time.sleep(0.01)
    live_before = len(_handles._LIVE_TASKS)
    threading.Timer(0.3, release.set).start()  # the running callback returns, then finalize completes
    t0 = time.monotonic()
    remote_pair.decoder.finalize()
    assert time.monotonic() - t0 < 10
    waiter.join(10)
    assert not waiter.is_alive()
    assert waiter_result == [S.LLM_FAILED]
    assert sync.calls == [0]  # cancelled: no further layer asked for
    assert task.synchronize() == S.LLM_FAILED  # results stay readable after the handle is released
    assert task.get_results() in ([S.LLM_FAILED], [None])
    assert len(_handles._LIVE_TASKS) == live_before - 1
    assert not arrived(dst, 1)


def test_finished_task_released_on_gc(remote_pair):
    cache, cfg, src, dst = setup_async(remote_pair)
    before = len(_handles._LIVE_TASKS)
    task = start(remote_pair, cache, cfg, Recorder())
    assert len(_handles._LIVE_TASKS) == before + 1
    assert task.synchronize() == S.LLM_SUCCESS
    del task
    gc.collect()
    assert len(_handles._LIVE_TASKS) == before
    remote_pair.unlink()


def test_dropped_running_task_keeps_running_then_is_released(remote_pair):
    cache, cfg, src, dst = setup_async(remote_pair)
    before = len(_handles._LIVE_TASKS)
    release = threading.Event()
    sync = Recorder(lambda layer: release.wait(10))
    start(remote_pair, cache, cfg, sync)  # dropped at once, still running
    gc.collect()
    assert len(_handles._LIVE_TASKS) == before + 1  # kept alive with its synchronizer
    release.set()
    deadline = time.monotonic() + 10
    while not arrived(dst, LAYERS - 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(arrived(dst, layer) for layer in range(LAYERS))
    time.sleep(0.1)
    task = start(remote_pair, cache, cfg, Recorder())  # sweeps finished orphans
    assert len(_handles._LIVE_TASKS) == before + 1
    assert task.synchronize() == S.LLM_SUCCESS
    remote_pair.unlink()


def _config(port=None):
    c = LLMConfig()
    c.device_id = 0
    c.enable_cache_manager = True
    if port:
        c.listen_ip_info = f"127.0.0.1:{port}"
    return c.generate_options()


def _port_free(port):
    """True unless something listens on the port (procs.free_port's own hold
    and SO_REUSEADDR let a probe bind it otherwise)."""
    import socket

    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def test_instance_released_on_gc():
    port = procs.free_port()
    d = LLMDataDist(LLMRole.PROMPT, 77)
    d.init(_config(port))
    assert not _port_free(port)
    cm = d.cache_manager
    del d
    gc.collect()
    assert not _port_free(port)  # the CacheManager still holds the instance
    del cm
    gc.collect()
    assert _port_free(port)  # finalized and destroyed: the listener is gone


def test_context_manager_finalizes_on_exit():
    port = procs.free_port()
    with LLMDataDist(LLMRole.PROMPT, 78) as d:
        d.init(_config(port))
        assert not _port_free(port)
    assert _port_free(port)
    with pytest.raises(RuntimeError, match="not initialized"):
        d.cache_manager
    d.init(_config(port))  # init after finalize starts afresh
    d.finalize()


def test_registered_arrays_kept_alive_until_unregistered(pair):
    pair.link()
    cm = pair.prompt.cache_manager
    d = CacheDesc(1, [BLOCKS, 1024], DataType.DT_UINT8)
    mine = np.arange(BLOCKS * 1024, dtype=np.uint8).reshape(BLOCKS, 1024)
    cache = cm.register_blocks_cache(d, [mine.copy()], BlocksCacheKey(pair.prompt.cluster_id))
    del cache  # the only reference to the registered array is now the package's
    gc.collect()
    junk = [np.full((BLOCKS, 1024), 0xEE, np.uint8) for _ in range(64)]  # would reuse freed memory
    out = np.zeros((BLOCKS, 1024), np.uint8)
    dcache = pair.decoder.cache_manager.register_blocks_cache(d, [out])
    pair.decoder.cache_manager.pull_blocks(BlocksCacheKey(pair.prompt.cluster_id), dcache, [0, 3], [0, 3])
    assert np.array_equal(out[[0, 3]], mine[[0, 3]])
    del junk
    pair.unlink()


def test_torch_like_tensors_are_accepted_by_duck_typing(make):
    """torch is not installed here; a stand-in with torch's Tensor surface exercises the path."""

    class Device:
        def __init__(self, kind):
            self.type = kind

    class Tensor:
        __module__ = "torch"

        def __init__(self, arr, device="cpu", contiguous=True):
            self.arr, self.device, self._contiguous = arr, Device(device), contiguous

        def data_ptr(self):
            return self.arr.ctypes.data

        def element_size(self):
            return self.arr.itemsize

        def numel(self):
            return self.arr.size

        def is_contiguous(self):
            return self._contiguous

    cm = make().cache_manager
    d = CacheDesc(2, [4, 16], DataType.DT_FLOAT16)
    ts = [Tensor(np.zeros((4, 16), np.float16)) for _ in range(2)]
    cache = cm.register_cache(d, ts)
    assert cache.tensor_addrs == [t.data_ptr() for t in ts]
    with pytest.raises(ValueError, match="on 'npu'"):
        cm.register_cache(d, [Tensor(np.zeros((4, 16), np.float16), device="npu")] * 2)
    with pytest.raises(ValueError, match="not a contiguous tensor"):
        cm.register_cache(d, [Tensor(np.zeros((4, 16), np.float16), contiguous=False)] * 2)
    with pytest.raises(ValueError, match="less than"):
        cm.register_cache(d, [Tensor(np.zeros((4, 8), np.float16))] * 2)


EXIT_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    import numpy as np
    from llm_datadist import *

    def config(port=None, remote=True):
        c = LLMConfig(); c.device_id = 0; c.enable_cache_manager = True
        c.enable_remote_cache_accessible = remote
        if port: c.listen_ip_info = f"127.0.0.1:{port}"
        return c.generate_options()

    class Slow(LayerSynchronizer):
        # Still sleeping (GIL released) when the main thread reaches exit: the package
        # must finalize before Python does, or this thread would need the GIL of a
        # finalizing interpreter when it wakes.
        def synchronize_layer(self, layer, timeout):
            print(f"layer {layer} start", flush=True)
            time.sleep(0.5)
            print(f"layer {layer} returned", flush=True)
            return True

    port = int(sys.argv[1])
    server = LLMDataDist(LLMRole.DECODER, 1); server.init(config(port))
    client = LLMDataDist(LLMRole.PROMPT, 2); client.init(config())
    d = CacheDesc(8, [4, 256], DataType.DT_FLOAT)
    keep = [np.zeros((4, 256), np.float32) for _ in range(16)]
    server.cache_manager.register_blocks_cache(d, keep[:8], BlocksCacheKey(1))
    src = client.cache_manager.register_blocks_cache(d, keep[8:])
    c = LLMClusterInfo(); c.remote_cluster_id = 1
    c.append_local_ip_info("127.0.0.1", 0); c.append_remote_ip_info("127.0.0.1", port)
    assert client.link_clusters([c])[0] == LLMStatusCode.LLM_SUCCESS
    cfg = TransferWithCacheKeyConfig(BlocksCacheKey(1), range(0, 4), range(0, 4))
    task = client.cache_manager.transfer_cache_async(src, Slow(), [cfg], [0], [1])
    time.sleep(0.1)
    print("exiting with a running task", flush=True)
    # no unlink, no finalize: the package finalizes at exit
    """
)


def test_interpreter_exit_with_running_task_and_links():
    r = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(procs.free_port())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert "exiting with a running task" in r.stdout
    # Finalized at exit: the callback in progress was waited for, and no further layer was asked.
    assert "layer 0 returned" in r.stdout and "layer 1 start" not in r.stdout, r.stdout
    assert "Traceback" not in r.stderr and "Fatal" not in r.stderr, r.stderr
