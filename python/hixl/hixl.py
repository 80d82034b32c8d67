"""CANN HIXL's Python module (``hixl``, ``src/python/hixl_py`` in hicann/hixl)
over libllmdd's ``llmdd_engine_*`` C ABI, loaded with the same ctypes loader
as ``llm_datadist`` (``llm_datadist._native``).

Names, argument names and orders, defaults, enum values and return shapes are
HIXL's: calls return a status (an ``int``) or a ``(status, value)`` tuple and
never raise for a failed call; wrong argument types raise ``TypeError``.
On llmdd's host backend ``MEM_DEVICE`` memory is host memory. Deviations:
``docs/hixl.md``.
"""

from __future__ import annotations

import ctypes
import threading
from ctypes import POINTER, Structure, c_bool, c_char, c_char_p, c_int32, c_size_t, c_uint32, c_void_p
from enum import IntEnum
from typing import Dict, List, Tuple

from llm_datadist import _native

# ---------------------------------------------------------------- constants
SUCCESS = 0
PARAM_INVALID = 103900
TIMEOUT = 103901
NOT_CONNECTED = 103902
ALREADY_CONNECTED = 103903
NOTIFY_FAILED = 103904
UNSUPPORTED = 103905
FAILED = 503900
RESOURCE_EXHAUSTED = 203900

OPTION_ENABLE_USE_FABRIC_MEM = "EnableUseFabricMem"
OPTION_RDMA_TRAFFIC_CLASS = "RdmaTrafficClass"
OPTION_RDMA_SERVICE_LEVEL = "RdmaServiceLevel"
OPTION_BUFFER_POOL = "BufferPool"
OPTION_GLOBAL_RESOURCE_CONFIG = "GlobalResourceConfig"
OPTION_AUTO_CONNECT = "AutoConnect"
OPTION_LOCAL_COMM_RES = "LocalCommRes"

FEATURE_SUPPORTED = 1
FEATURE_NOT_SUPPORTED = 0

_UINT32_MAX = 0xFFFFFFFF
_DEFAULT_TIMEOUT_MS = 1000
_NAME_MAX = 64
_NOTIFY_MAX = 1024


class MemType(IntEnum):
    MEM_DEVICE = 0
    MEM_HOST = 1


class TransferOp(IntEnum):
    READ = 0
    WRITE = 1


class TransferStatus(IntEnum):
    WAITING = 0
    COMPLETED = 1
    TIMEOUT = 2
    FAILED = 3


class AsyncConnectStatus(IntEnum):
    NOT_CONNECT = 0
    CONNECT_PENDING = 1
    CONNECTING = 2
    CONNECTED = 3
    CONNECT_FAILED = 4
    DISCONNECT_PENDING = 5
    DISCONNECTING = 6


class FeatureType(IntEnum):
    AUTO_CONNECT = 0
    CLIENT_SERVER_COMM = 1


# HIXL exports these enum values at module level (pybind11 export_values).
MEM_DEVICE = MemType.MEM_DEVICE
MEM_HOST = MemType.MEM_HOST
READ = TransferOp.READ
WRITE = TransferOp.WRITE
NOT_CONNECT = AsyncConnectStatus.NOT_CONNECT
CONNECT_PENDING = AsyncConnectStatus.CONNECT_PENDING
CONNECTING = AsyncConnectStatus.CONNECTING
CONNECTED = AsyncConnectStatus.CONNECTED
CONNECT_FAILED = AsyncConnectStatus.CONNECT_FAILED
DISCONNECT_PENDING = AsyncConnectStatus.DISCONNECT_PENDING
DISCONNECTING = AsyncConnectStatus.DISCONNECTING
AUTO_CONNECT = FeatureType.AUTO_CONNECT
CLIENT_SERVER_COMM = FeatureType.CLIENT_SERVER_COMM


# ---------------------------------------------------------------- data classes
def _int(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{what} must be an int, got {type(v).__name__}")
    if v < 0 or v >= 1 << 64:
        raise TypeError(f"{what} {v} does not fit an unsigned 64-bit integer")
    return v


class MemDesc:
    """``MemDesc(addr, len)``."""

    def __init__(self, addr: int, len: int) -> None:  # noqa: A002 - HIXL's argument name
        self.addr = _int(addr, "addr")
        self.len = _int(len, "len")

    def __repr__(self) -> str:
        return f"MemDesc(addr=0x{self.addr:x}, len={self.len})"


class TransferOpDesc:
    """``TransferOpDesc(local_addr, remote_addr, len)``."""

    __slots__ = ("local_addr", "remote_addr", "len")

    def __init__(self, local_addr: int, remote_addr: int, len: int) -> None:  # noqa: A002
        self.local_addr = _int(local_addr, "local_addr")
        self.remote_addr = _int(remote_addr, "remote_addr")
        self.len = _int(len, "len")

    def __repr__(self) -> str:
        return f"TransferOpDesc(local_addr=0x{self.local_addr:x}, remote_addr=0x{self.remote_addr:x}, len={self.len})"


class TransferArgs:
    """``TransferArgs()``; ``user_data`` is an int handed back in ``TransferResult``."""

    def __init__(self) -> None:
        self.user_data = 0


class GetTransferStatusArgs:
    """``GetTransferStatusArgs(max_query_count=UINT32_MAX, skip_waiting=False)``."""

    def __init__(self, max_query_count: int = _UINT32_MAX, skip_waiting: bool = False) -> None:
        self.max_query_count = max_query_count
        self.skip_waiting = skip_waiting


class TransferResult:
    """One entry of ``get_all_transfer_status``: ``req``, ``user_data``, ``status``."""

    def __init__(self) -> None:
        self.req = 0
        self.user_data = 0
        self._status = TransferStatus.WAITING

    @property
    def status(self) -> TransferStatus:
        return self._status


class NotifyDesc:
    """``NotifyDesc(name, notify_msg)``."""

    def __init__(self, name: str, notify_msg: str) -> None:
        if not isinstance(name, str) or not isinstance(notify_msg, str):
            raise TypeError("NotifyDesc(name, notify_msg) takes two str")
        self.name = name
        self.notify_msg = notify_msg

    def __repr__(self) -> str:
        return f"NotifyDesc(name={self.name!r}, notify_msg={self.notify_msg!r})"


# ---------------------------------------------------------------- C ABI
class _Desc(Structure):
    _fields_ = [("local_addr", c_size_t), ("remote_addr", c_size_t), ("len", c_size_t)]


class _Result(Structure):
    _fields_ = [("req", c_void_p), ("user_data", c_void_p), ("status", c_uint32), ("result", c_uint32)]


class _Peer(Structure):
    _fields_ = [("remote", c_char * _NAME_MAX), ("state", c_uint32)]


_P = POINTER
_E = c_void_p
_PROTOTYPES = {
    "llmdd_engine_create": (c_uint32, [c_char_p, _P(_native.OptionT), c_size_t, _P(_E)]),
    "llmdd_engine_destroy": (None, [_E]),
    "llmdd_engine_register_mem": (c_uint32, [_E, c_size_t, c_size_t, c_uint32, _P(c_void_p)]),
    "llmdd_engine_deregister_mem": (c_uint32, [_E, c_void_p]),
    "llmdd_engine_connect": (c_uint32, [_E, c_char_p, c_int32]),
    "llmdd_engine_disconnect": (c_uint32, [_E, c_char_p, c_int32]),
    "llmdd_engine_connect_async": (c_uint32, [_E, c_char_p, c_int32]),
    "llmdd_engine_disconnect_async": (c_uint32, [_E, c_char_p, c_int32]),
    "llmdd_engine_connect_status": (c_uint32, [_E, c_char_p, _P(c_uint32), c_char_p, c_size_t]),
    "llmdd_engine_connect_statuses": (c_uint32, [_E, _P(_Peer), c_size_t, _P(c_size_t)]),
    "llmdd_engine_transfer": (
        c_uint32,
        [_E, c_char_p, c_uint32, _P(_Desc), c_size_t, c_int32, c_char_p, c_char_p],
    ),
    "llmdd_engine_transfer_async": (
        c_uint32,
        [_E, c_char_p, c_uint32, _P(_Desc), c_size_t, c_int32, c_char_p, c_char_p, c_void_p, _P(c_void_p)],
    ),
    "llmdd_engine_req_status": (c_uint32, [_E, c_void_p, _P(c_uint32), _P(c_uint32)]),
    "llmdd_engine_outstanding": (c_uint32, [_E, _P(c_size_t)]),
    "llmdd_engine_poll": (c_uint32, [_E, c_uint32, c_bool, _P(_Result), c_size_t, _P(c_size_t)]),
    "llmdd_engine_send_notify": (c_uint32, [_E, c_char_p, c_char_p, c_char_p, c_int32]),
    "llmdd_engine_next_notify": (
        c_uint32,
        [_E, c_char_p, c_size_t, c_char_p, c_size_t, _P(c_bool)],
    ),
    "llmdd_engine_capability": (c_uint32, [c_int32, _P(c_int32)]),
    "llmdd_engine_hixl_status": (c_uint32, [c_uint32]),
}


def _load():
    lib = _native.lib
    for name, (restype, argtypes) in _PROTOTYPES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise ImportError(f"hixl: {_native.library_path()} has no function {name} (library too old?)") from e
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


_lib = _load()


def _code(status: int) -> int:
    return _lib.llmdd_engine_hixl_status(status)


def last_error() -> str:
    """The calling thread's last llmdd error message (HIXL logs it instead)."""
    return _native.last_error()


def _str(v, what: str) -> bytes:
    if not isinstance(v, str):
        raise TypeError(f"{what} must be a str, got {type(v).__name__}")
    return v.encode()


def _timeout(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError("timeout_in_millis must be an int")
    return max(min(v, 2**31 - 1), -(2**31))


def _descs(op_descs):
    if not isinstance(op_descs, (list, tuple)):
        raise TypeError("op_descs must be a list of TransferOpDesc")
    arr = (_Desc * max(len(op_descs), 1))()
    for i, d in enumerate(op_descs):
        if not isinstance(d, TransferOpDesc):
            raise TypeError(f"op_descs[{i}] is not a TransferOpDesc")
        arr[i].local_addr = d.local_addr
        arr[i].remote_addr = d.remote_addr
        arr[i].len = d.len
    return arr, len(op_descs)


def _op(op) -> int:
    if not isinstance(op, TransferOp):
        raise TypeError("op must be a TransferOp")
    return int(op)


class Hixl:
    """``hixl.Hixl``: one transfer engine; ``initialize`` before anything else."""

    def __init__(self) -> None:
        self._engine = None
        self._lock = threading.RLock()

    def __del__(self) -> None:
        try:
            self.finalize()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _live(self):
        return self._engine

    def initialize(self, local_engine: str, options: Dict[str, str] = None) -> int:
        name = _str(local_engine, "local_engine")
        opts = dict(options or {})
        for k, v in opts.items():
            _str(k, "option key")
            _str(v, "option value")
        with self._lock:
            if self._engine is not None:
                return SUCCESS
            arr, n = _native.options_array(opts)
            out = c_void_p()
            r = _lib.llmdd_engine_create(name, arr, n, ctypes.byref(out))
            if r != 0:
                return _code(r)
            self._engine = out
            return SUCCESS

    def finalize(self) -> None:
        with self._lock:
            e, self._engine = self._engine, None
        if e is not None:
            _lib.llmdd_engine_destroy(e)

    def register_mem(self, mem_desc: MemDesc, mem_type: MemType) -> Tuple[int, int]:
        if not isinstance(mem_desc, MemDesc) or not isinstance(mem_type, MemType):
            raise TypeError("register_mem(mem_desc: MemDesc, mem_type: MemType)")
        e = self._live()
        if e is None:
            return FAILED, 0
        out = c_void_p()
        r = _lib.llmdd_engine_register_mem(e, mem_desc.addr, mem_desc.len, int(mem_type), ctypes.byref(out))
        return _code(r), (out.value or 0) if r == 0 else 0

    def deregister_mem(self, mem_handle: int) -> int:
        _int(mem_handle, "mem_handle")
        e = self._live()
        if e is None:
            return FAILED
        if mem_handle == 0:
            return PARAM_INVALID
        return _code(_lib.llmdd_engine_deregister_mem(e, mem_handle))

    def _conn(self, fn, remote_engine, timeout_in_millis) -> int:
        remote = _str(remote_engine, "remote_engine")
        t = _timeout(timeout_in_millis)
        e = self._live()
        if e is None:
            return FAILED
        return _code(fn(e, remote, t))

    def connect(self, remote_engine: str, timeout_in_millis: int = _DEFAULT_TIMEOUT_MS) -> int:
        return self._conn(_lib.llmdd_engine_connect, remote_engine, timeout_in_millis)

    def disconnect(self, remote_engine: str, timeout_in_millis: int = _DEFAULT_TIMEOUT_MS) -> int:
        return self._conn(_lib.llmdd_engine_disconnect, remote_engine, timeout_in_millis)

    def connect_async(self, remote_engine: str, timeout_in_millis: int = _DEFAULT_TIMEOUT_MS) -> int:
        return self._conn(_lib.llmdd_engine_connect_async, remote_engine, timeout_in_millis)

    def disconnect_async(self, remote_engine: str, timeout_in_millis: int = _DEFAULT_TIMEOUT_MS) -> int:
        return self._conn(_lib.llmdd_engine_disconnect_async, remote_engine, timeout_in_millis)

    def get_async_connect_status(self, remote_engine: str) -> Tuple[int, AsyncConnectStatus]:
        remote = _str(remote_engine, "remote_engine")
        e = self._live()
        if e is None:
            return FAILED, AsyncConnectStatus.NOT_CONNECT
        s = c_uint32(0)
        r = _lib.llmdd_engine_connect_status(e, remote, ctypes.byref(s), None, 0)
        if r != 0:
            return _code(r), AsyncConnectStatus.NOT_CONNECT
        return SUCCESS, AsyncConnectStatus(s.value)

    def get_all_async_connect_status(self) -> Tuple[int, Dict[str, AsyncConnectStatus]]:
        e = self._live()
        if e is None:
            return FAILED, {}
        n = c_size_t(0)
        r = _lib.llmdd_engine_connect_statuses(e, None, 0, ctypes.byref(n))
        peers = (_Peer * max(n.value, 1))()
        if r == 0 and n.value > 0:
            r = _lib.llmdd_engine_connect_statuses(e, peers, n.value, ctypes.byref(n))
        if r != 0:
            return _code(r), {}
        count = min(n.value, len(peers)) if n.value else 0
        return SUCCESS, {peers[i].remote.decode(): AsyncConnectStatus(peers[i].state) for i in range(count)}

    def transfer_sync(
        self, remote_engine: str, op: TransferOp, op_descs: List[TransferOpDesc], timeout_in_millis: int = _DEFAULT_TIMEOUT_MS
    ) -> int:
        remote = _str(remote_engine, "remote_engine")
        o = _op(op)
        arr, n = _descs(op_descs)
        t = _timeout(timeout_in_millis)
        e = self._live()
        if e is None:
            return FAILED
        return _code(_lib.llmdd_engine_transfer(e, remote, o, arr, n, t, None, None))

    def transfer_async(
        self, remote_engine: str, op: TransferOp, op_descs: List[TransferOpDesc], args: TransferArgs = None
    ) -> Tuple[int, int]:
        remote = _str(remote_engine, "remote_engine")
        o = _op(op)
        arr, n = _descs(op_descs)
        args = args if args is not None else TransferArgs()
        if not isinstance(args, TransferArgs):
            raise TypeError("args must be a TransferArgs")
        e = self._live()
        if e is None:
            return FAILED, 0
        out = c_void_p()
        user = _int(args.user_data, "user_data") or None
        r = _lib.llmdd_engine_transfer_async(e, remote, o, arr, n, -1, None, None, user, ctypes.byref(out))
        return _code(r), (out.value or 0) if r == 0 else 0

    def get_transfer_status(self, req: int) -> Tuple[int, TransferStatus]:
        _int(req, "req")
        e = self._live()
        if e is None or req == 0:
            return FAILED, TransferStatus.FAILED
        s = c_uint32(0)
        r = _lib.llmdd_engine_req_status(e, req, ctypes.byref(s), None)
        if r != 0:
            return _code(r), TransferStatus.FAILED
        return SUCCESS, TransferStatus(s.value)

    def get_all_transfer_status(self, args: GetTransferStatusArgs = None) -> Tuple[int, List[TransferResult]]:
        args = args if args is not None else GetTransferStatusArgs()
        if not isinstance(args, GetTransferStatusArgs):
            raise TypeError("args must be a GetTransferStatusArgs")
        e = self._live()
        if e is None:
            return FAILED, []
        n = c_size_t(0)
        r = _lib.llmdd_engine_outstanding(e, ctypes.byref(n))
        if r != 0:
            return _code(r), []
        cap = min(n.value, int(args.max_query_count))
        if cap == 0:
            return SUCCESS, []
        out = (_Result * cap)()
        m = c_size_t(0)
        r = _lib.llmdd_engine_poll(e, min(int(args.max_query_count), _UINT32_MAX), bool(args.skip_waiting), out, cap,
                                   ctypes.byref(m))
        if r != 0:
            return _code(r), []
        results = []
        for i in range(m.value):
            t = TransferResult()
            t.req = out[i].req or 0
            t.user_data = out[i].user_data or 0
            t._status = TransferStatus(out[i].status)
            results.append(t)
        return SUCCESS, results

    def send_notify(self, remote_engine: str, notify: NotifyDesc, timeout_in_millis: int = _DEFAULT_TIMEOUT_MS) -> int:
        remote = _str(remote_engine, "remote_engine")
        if not isinstance(notify, NotifyDesc):
            raise TypeError("notify must be a NotifyDesc")
        t = _timeout(timeout_in_millis)
        e = self._live()
        if e is None:
            return FAILED
        s = _code(_lib.llmdd_engine_send_notify(e, remote, notify.name.encode(), notify.notify_msg.encode(), t))
        return s if s in (SUCCESS, PARAM_INVALID, NOT_CONNECTED, TIMEOUT) else NOTIFY_FAILED

    def get_notifies(self) -> Tuple[int, List[NotifyDesc]]:
        e = self._live()
        if e is None:
            return FAILED, []
        name = ctypes.create_string_buffer(_NOTIFY_MAX + 1)
        msg = ctypes.create_string_buffer(_NOTIFY_MAX + 1)
        got = c_bool(False)
        out = []
        while True:
            r = _lib.llmdd_engine_next_notify(e, name, len(name), msg, len(msg), ctypes.byref(got))
            if r != 0:
                return _code(r), out
            if not got.value:
                return SUCCESS, out
            out.append(NotifyDesc(name.value.decode("utf-8", "replace"), msg.value.decode("utf-8", "replace")))


def get_capability(feature_type: FeatureType) -> Tuple[int, int]:
    """``(status, value)``: value is ``FEATURE_SUPPORTED`` or ``FEATURE_NOT_SUPPORTED``."""
    if not isinstance(feature_type, FeatureType):
        raise TypeError("feature_type must be a FeatureType")
    v = c_int32(FEATURE_NOT_SUPPORTED)
    r = _lib.llmdd_engine_capability(int(feature_type), ctypes.byref(v))
    return _code(r), v.value
