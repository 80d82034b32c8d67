"""The ``hixl`` module (HIXL's Python API over libllmdd), two processes on
127.0.0.1. The first flow is hicann/hixl's examples/python/hixl/
hixl_d2rd_multiproc_sample.py with NPU tensors swapped for host buffers and
the samples' socket for the test mailbox; the others add async requests,
notification-after-data, refusals and a server killed mid-transfer."""

import ctypes
import json
import multiprocessing as mp
import os
import signal
import time

import pytest

import hixl
import procs

BUF_SIZE = 8 * 1024 * 1024
BLOCK_SIZE = 16 * 1024
BLOCK_COUNT = BUF_SIZE // BLOCK_SIZE
FILL_VALUE = 0xAA


def _name() -> str:
    return f"127.0.0.1:{procs.free_port()}"


def _options(tcp: bool) -> dict:
    opts = {
        hixl.OPTION_AUTO_CONNECT: "1",
        hixl.OPTION_GLOBAL_RESOURCE_CONFIG: json.dumps({"comm_resource_config.protocol_desc": ["roce:device"]}),
    }
    if tcp:
        opts["llmdd.SameHost"] = "0"
    return opts


def _buf(n: int, fill: int = 0):
    b = (ctypes.c_uint8 * n)()
    if fill:
        ctypes.memset(b, fill, n)
    return b


def _server(dist, name: str, tcp: bool) -> None:
    engine = hixl.Hixl()
    assert engine.initialize(name, _options(tcp)) == hixl.SUCCESS
    buf = _buf(BUF_SIZE, FILL_VALUE)
    inbox = _buf(BUF_SIZE)
    addr, in_addr = ctypes.addressof(buf), ctypes.addressof(inbox)
    ret, handle = engine.register_mem(hixl.MemDesc(addr, BUF_SIZE), hixl.MemType.MEM_DEVICE)
    assert ret == hixl.SUCCESS and handle != 0
    ret, in_handle = engine.register_mem(hixl.MemDesc(in_addr, BUF_SIZE), hixl.MEM_HOST)
    assert ret == hixl.SUCCESS
    dist.send(1, (addr, in_addr))
    # The client's notification says its WRITE landed: check the bytes then.
    deadline = time.monotonic() + 60
    notes = []
    while not notes and time.monotonic() < deadline:
        ret, notes = engine.get_notifies()
        assert ret == hixl.SUCCESS
        time.sleep(0.0005)
    assert [(n.name, n.notify_msg) for n in notes] == [("kv_done", "req-7")]
    expected = bytes((i * 7 + 3) & 0xFF for i in range(256)) * (BUF_SIZE // 256)
    assert bytes(inbox) == expected
    dist.send(1, "verified")
    assert dist.recv() == "done"
    assert engine.deregister_mem(handle) == hixl.SUCCESS
    assert engine.deregister_mem(in_handle) == hixl.SUCCESS
    engine.finalize()


def _client(dist, name: str, server: str, tcp: bool) -> None:
    engine = hixl.Hixl()
    assert engine.connect(server) == hixl.FAILED  # not initialized
    assert engine.initialize(name, _options(tcp)) == hixl.SUCCESS
    assert engine.initialize(name, _options(tcp)) == hixl.SUCCESS  # repeated: ignored
    buf = _buf(BUF_SIZE)
    addr = ctypes.addressof(buf)
    ret, handle = engine.register_mem(hixl.MemDesc(addr, BUF_SIZE), hixl.MemType.MEM_DEVICE)
    assert ret == hixl.SUCCESS
    remote, remote_in = dist.recv()
    assert engine.get_async_connect_status(server) == (hixl.SUCCESS, hixl.AsyncConnectStatus.NOT_CONNECT)
    assert engine.connect(server, timeout_in_millis=5000) == hixl.SUCCESS
    assert engine.get_all_async_connect_status() == (hixl.SUCCESS, {server: hixl.CONNECTED})

    # The sample: READ the whole buffer in 16 KiB descriptors, then verify.
    op_descs = [
        hixl.TransferOpDesc(local_addr=addr + i * BLOCK_SIZE, remote_addr=remote + i * BLOCK_SIZE, len=BLOCK_SIZE)
        for i in range(BLOCK_COUNT)
    ]
    ret = engine.transfer_sync(server, hixl.TransferOp.READ, op_descs, timeout_in_millis=30000)
    assert ret == hixl.SUCCESS
    assert bytes(buf) == bytes([FILL_VALUE]) * BUF_SIZE

    # Outside the server's memory: refused.
    bad = [hixl.TransferOpDesc(addr, remote + BUF_SIZE - 8, 16)]
    assert engine.transfer_sync(server, hixl.READ, bad) == hixl.PARAM_INVALID
    with pytest.raises(TypeError):
        engine.transfer_sync(server, hixl.READ, [object()])
    with pytest.raises(TypeError):
        engine.transfer_sync(server, 0, op_descs)

    # WRITE a pattern asynchronously in 4 requests; poll one by handle, the
    # rest in a batch with their user_data.
    pattern = bytes((i * 7 + 3) & 0xFF for i in range(256)) * (BUF_SIZE // 256)
    ctypes.memmove(buf, pattern, BUF_SIZE)
    quarter = BUF_SIZE // 4
    reqs = []
    for q in range(4):
        args = hixl.TransferArgs()
        args.user_data = 100 + q
        descs = [
            hixl.TransferOpDesc(addr + q * quarter + i * BLOCK_SIZE, remote_in + q * quarter + i * BLOCK_SIZE, BLOCK_SIZE)
            for i in range(quarter // BLOCK_SIZE)
        ]
        ret, req = engine.transfer_async(server, hixl.WRITE, descs, args)
        assert ret == hixl.SUCCESS and req != 0
        reqs.append(req)
    deadline = time.monotonic() + 30
    status = hixl.TransferStatus.WAITING
    while status == hixl.TransferStatus.WAITING and time.monotonic() < deadline:
        ret, status = engine.get_transfer_status(reqs[0])
        assert ret == hixl.SUCCESS
    assert status == hixl.TransferStatus.COMPLETED
    assert engine.get_transfer_status(reqs[0])[0] == hixl.PARAM_INVALID  # reported once, released
    seen = []
    while len(seen) < 3 and time.monotonic() < deadline:
        ret, results = engine.get_all_transfer_status(hixl.GetTransferStatusArgs(skip_waiting=True))
        assert ret == hixl.SUCCESS
        for r in results:
            assert r.status == hixl.TransferStatus.COMPLETED
            seen.append(r.user_data)
    assert sorted(seen) == [101, 102, 103]

    assert engine.send_notify(server, hixl.NotifyDesc("kv_done", "req-7"), timeout_in_millis=5000) == hixl.SUCCESS
    assert engine.send_notify(server, hixl.NotifyDesc("x", "m" * 1025)) == hixl.PARAM_INVALID
    assert dist.recv() == "verified"

    assert hixl.get_capability(hixl.FeatureType.AUTO_CONNECT) == (hixl.SUCCESS, hixl.FEATURE_SUPPORTED)
    assert hixl.get_capability(hixl.CLIENT_SERVER_COMM) == (hixl.SUCCESS, hixl.FEATURE_NOT_SUPPORTED)
    assert engine.disconnect(server, timeout_in_millis=5000) == hixl.SUCCESS
    assert engine.disconnect(server) == hixl.NOT_CONNECTED
    assert engine.deregister_mem(handle) == hixl.SUCCESS
    dist.send(0, "done")
    engine.finalize()
    assert engine.get_notifies() == (hixl.FAILED, [])


@pytest.mark.parametrize("tcp", [False, True], ids=["same_host", "tcp"])
def test_d2rd_sample_async_and_notify(tcp):
    server, client = _name(), _name()
    procs.run([(_server, (server, tcp)), (_client, (client, server, tcp))])


def _doomed_server(name: str, q) -> None:
    engine = hixl.Hixl()
    assert engine.initialize(name, {"llmdd.SameHost": "0"}) == hixl.SUCCESS
    buf = _buf(BUF_SIZE, 1)
    ret, _ = engine.register_mem(hixl.MemDesc(ctypes.addressof(buf), BUF_SIZE), hixl.MEM_HOST)
    assert ret == hixl.SUCCESS
    q.put(ctypes.addressof(buf))
    time.sleep(120)


def test_server_killed_mid_transfer_fails_requests():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    server = _name()
    p = ctx.Process(target=_doomed_server, args=(server, q), daemon=True)
    p.start()
    try:
        remote = q.get(timeout=60)
        engine = hixl.Hixl()
        assert engine.initialize(_name(), {"llmdd.SameHost": "0"}) == hixl.SUCCESS
        buf = _buf(BUF_SIZE)
        addr = ctypes.addressof(buf)
        assert engine.register_mem(hixl.MemDesc(addr, BUF_SIZE), hixl.MEM_HOST)[0] == hixl.SUCCESS
        assert engine.connect_async(server, 5000) == hixl.SUCCESS
        deadline = time.monotonic() + 30
        while engine.get_async_connect_status(server)[1] != hixl.CONNECTED:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        descs = [hixl.TransferOpDesc(addr + i * 4096, remote + i * 4096, 4096) for i in range(BUF_SIZE // 4096)]
        reqs = []
        for _ in range(16):
            ret, req = engine.transfer_async(server, hixl.READ, descs)
            assert ret == hixl.SUCCESS
            reqs.append(req)
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        # On a fast machine the first 16 may all finish before the kill lands;
        # requests posted once the server is dead must fail, at the post or
        # as their status.
        refused = 0
        for _ in range(4):
            ret, req = engine.transfer_async(server, hixl.READ, descs)
            if ret == hixl.SUCCESS:
                reqs.append(req)
            else:
                refused += 1
        finals = []
        deadline = time.monotonic() + 60
        while len(finals) < len(reqs) and time.monotonic() < deadline:
            ret, results = engine.get_all_transfer_status(hixl.GetTransferStatusArgs(skip_waiting=True))
            assert ret == hixl.SUCCESS
            finals += [r.status for r in results]
            time.sleep(0.001)
        assert len(finals) == len(reqs), "a request never finished"
        # Each of the 4 posted after the kill failed one way or the other.
        assert finals.count(hixl.TransferStatus.FAILED) + refused >= 4
        # Later transfers fail with a status at once; the state says why.
        t0 = time.monotonic()
        ret = hixl.SUCCESS
        while ret == hixl.SUCCESS and time.monotonic() - t0 < 10:
            ret = engine.transfer_sync(server, hixl.READ, descs[:1], timeout_in_millis=2000)
        assert ret != hixl.SUCCESS
        assert time.monotonic() - t0 < 10
        engine.finalize()
    finally:
        p.kill()
        p.join()


def test_names_and_values_match_hixl():
    assert (hixl.SUCCESS, hixl.PARAM_INVALID, hixl.TIMEOUT, hixl.NOT_CONNECTED) == (0, 103900, 103901, 103902)
    assert (hixl.ALREADY_CONNECTED, hixl.NOTIFY_FAILED, hixl.UNSUPPORTED) == (103903, 103904, 103905)
    assert (hixl.FAILED, hixl.RESOURCE_EXHAUSTED) == (503900, 203900)
    assert [int(s) for s in hixl.AsyncConnectStatus] == list(range(7))
    assert [s.name for s in hixl.TransferStatus] == ["WAITING", "COMPLETED", "TIMEOUT", "FAILED"]
    assert (int(hixl.MEM_DEVICE), int(hixl.MEM_HOST), int(hixl.READ), int(hixl.WRITE)) == (0, 1, 0, 1)
    assert hixl.GetTransferStatusArgs().max_query_count == 0xFFFFFFFF
    assert hixl.GetTransferStatusArgs().skip_waiting is False
    assert hixl.TransferArgs().user_data == 0
    for n in hixl.__all__:
        assert hasattr(hixl, n), n
    e = hixl.Hixl()
    assert e.initialize("not an engine name") == hixl.PARAM_INVALID
    assert e.initialize(_name(), {"NoSuchOption": "1"}) == hixl.PARAM_INVALID
    assert e.register_mem(hixl.MemDesc(1, 1), hixl.MEM_HOST) == (hixl.FAILED, 0)
    assert e.get_transfer_status(0) == (hixl.FAILED, hixl.TransferStatus.FAILED)
    with pytest.raises(TypeError):
        hixl.MemDesc("x", 1)
    with pytest.raises(TypeError):
        hixl.get_capability(0)
