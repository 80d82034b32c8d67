"""Owners of the library's handles: instances, async tasks and the layer-sync callback.

Rules this module enforces, so that no Python program can crash the process
through the C ABI:

- An ``llmdd_instance_t`` is owned by one :class:`InstanceHandle`. Calls on it
  are counted; ``llmdd_finalize`` and ``llmdd_destroy`` run only when no call
  is in flight (the C contract), and calls started meanwhile raise
  ``LLMException(LLM_FAILED)`` instead of waiting (a layer synchronizer that
  calls into its instance while that instance finalizes would otherwise wait
  for a thread that waits for it).
- An ``llmdd_task_t`` is owned by one :class:`TaskState`. ``llmdd_task_free``
  runs only when no other call on the task is in flight, exactly once.
- The synchronizer of a task is reached through one module-level C function
  pointer (:data:`_SYNC_C`) and an integer id passed as ``user_data``; the
  :class:`TaskState` (and so the user's ``LayerSynchronizer``) stays in
  :data:`_LIVE_TASKS` until ``llmdd_task_free`` has returned, after which the
  library never calls it again.
- At interpreter exit every live instance is finalized (cancelling and
  joining task threads) and destroyed before Python tears itself down, so no
  library thread calls into a dying interpreter.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import weakref
from contextlib import contextmanager
from ctypes import byref, c_uint32, c_void_p
from typing import Any, Dict, Iterator, List, Optional

from llm_datadist import _log_bridge, _native
from llm_datadist.status import LLMException, LLMStatusCode, check, code_2_status

_log = logging.getLogger("llm_datadist")
_tls = threading.local()


class _Guard:
    """Counts calls in flight; ``exclusive()`` waits for none and refuses new ones meanwhile."""

    def __init__(self, what: str, wait_while_closing: bool = False) -> None:
        self._what = what
        self._wait = wait_while_closing
        self._cond = threading.Condition(threading.Lock())
        self._active = 0
        self._closing = False
        self._closed = False

    @contextmanager
    def call(self, func_name: str) -> Iterator[None]:
        with self._cond:
            while self._wait and self._closing:
                self._cond.wait()
            if self._closed or self._closing:
                state = "released" if self._closed else "being finalized"
                raise LLMException(
                    f"{func_name} failed, error code is {LLMStatusCode.LLM_FAILED}, the {self._what} is {state}",
                    status_code=LLMStatusCode.LLM_FAILED,
                )
            self._active += 1
        try:
            yield
        finally:
            with self._cond:
                self._active -= 1
                if self._active == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self, close: bool = False) -> Iterator[bool]:
        """Runs the body with no call in flight; yields False if already closed."""
        with self._cond:
            if self._closed:
                yield False
                return
            self._closing = True
            while self._active:
                self._cond.wait()
        try:
            yield True
        finally:
            with self._cond:
                self._closing = False
                self._closed = self._closed or close
                self._cond.notify_all()


class InstanceHandle:
    """Owns one ``llmdd_instance_t`` and the tasks started on it."""

    def __init__(self, role: int, cluster_id: int) -> None:
        ptr = c_void_p()
        check(_native.lib.llmdd_create(role, cluster_id, byref(ptr)), "[LLMDataDist]")
        self._ptr = ptr
        self._guard = _Guard("LLMDataDist")
        self._tasks_lock = threading.Lock()
        self._tasks: Dict[int, "TaskState"] = {}
        self._finalizer = weakref.finalize(self, _destroy_instance, ptr, self._guard, self._tasks_lock, self._tasks)
        self._finalizer.atexit = False
        _LIVE_INSTANCES.add(self)

    @contextmanager
    def call(self, func_name: str) -> Iterator[c_void_p]:
        """The raw handle for one C call (raises if the instance is finalizing or released)."""
        with self._guard.call(func_name):
            yield self._ptr

    def finalize(self) -> None:
        """``llmdd_finalize``, then releases every task handle (their results stay readable)."""
        if getattr(_tls, "sync_owner", None) is self:
            raise LLMException(
                "[finalize] failed, a layer synchronizer of this LLMDataDist cannot finalize it "
                "(finalize waits for the synchronizer to return)",
                status_code=LLMStatusCode.LLM_FAILED,
            )
        with self._guard.exclusive() as live:
            if live:
                check(_native.lib.llmdd_finalize(self._ptr), "[finalize]")
                _release_tasks(self._tasks_lock, self._tasks)

    def destroy(self) -> None:
        """Finalizes and frees the instance now (it cannot be used afterwards).

        Calls the finalizer's function through ``detach()``: calling a
        ``weakref.finalize`` does nothing once the interpreter's exit hook of
        weakref has run, which happens before ours.
        """
        detached = self._finalizer.detach()
        if detached is not None:
            _, func, args, kwargs = detached
            func(*args, **kwargs)

    def add_task(self, state: "TaskState") -> None:
        with self._tasks_lock:
            self._tasks[state.id] = state

    def forget_task(self, state: "TaskState") -> None:
        with self._tasks_lock:
            self._tasks.pop(state.id, None)

    def sweep_orphans(self) -> None:
        """Frees tasks whose CacheTask was garbage-collected and that have finished since."""
        with self._tasks_lock:
            orphans = [s for s in self._tasks.values() if s.orphan]
        for s in orphans:
            try:
                if s.finished():
                    s.free()
            except LLMException:
                pass  # being freed by finalize


def _release_tasks(lock: threading.Lock, tasks: Dict[int, "TaskState"]) -> None:
    with lock:
        states = list(tasks.values())
    for s in states:
        s.free(keep_results=True)


def _destroy_instance(
    ptr: c_void_p, guard: _Guard, tasks_lock: threading.Lock, tasks: Dict[int, "TaskState"]
) -> None:
    with guard.exclusive(close=True) as live:
        if live:
            # Finalizing cancels and joins every task thread; then the tasks and the instance go.
            _native.lib.llmdd_finalize(ptr)
            _release_tasks(tasks_lock, tasks)
            _native.lib.llmdd_destroy(ptr)


# ---------------------------------------------------------------------------
# Async tasks and the layer synchronizer trampoline.
# ---------------------------------------------------------------------------
_ids = itertools.count(1)
_LIVE_TASKS: Dict[int, "TaskState"] = {}


class TaskState:
    """Owns one ``llmdd_task_t`` and keeps its synchronizer alive until the task is freed."""

    def __init__(self, owner: InstanceHandle, synchronizer: Any, num_configs: int) -> None:
        self.id = next(_ids)
        # Weak: an orphaned task must not keep its instance alive (finalizing the instance frees it).
        self._owner = weakref.ref(owner)
        self.synchronizer = synchronizer
        self.num_configs = num_configs
        self.handle = c_void_p()
        self.orphan = False
        # A call racing with free() waits for it, then reads the kept results.
        self._guard = _Guard("CacheTask", wait_while_closing=True)
        self._final: Optional[tuple] = None  # (synchronize status, results) once freed
        self._freed = False
        self._free_lock = threading.Lock()

    def register(self) -> None:
        """Makes the state reachable from the trampoline (before the task can call it)."""
        _LIVE_TASKS[self.id] = self
        owner = self._owner()
        if owner is not None:
            owner.add_task(self)

    def unregister(self) -> None:
        """Drops the state after a failed start or after the task was freed."""
        _LIVE_TASKS.pop(self.id, None)
        owner = self._owner()
        if owner is not None:
            owner.forget_task(self)

    def _check_not_inside(self, func_name: str) -> None:
        if getattr(_tls, "sync_task", None) is self:
            raise RuntimeError(
                f"CacheTask.{func_name} called from the task's own layer synchronizer would wait forever"
            )

    def synchronize(self, timeout_ms: int) -> LLMStatusCode:
        self._check_not_inside("synchronize")
        if self._final is not None:
            return self._final[0]
        try:
            with self._guard.call("[CacheTask.synchronize]"):
                return code_2_status(_native.lib.llmdd_task_synchronize(self.handle, timeout_ms))
        except LLMException:
            if self._final is not None:  # freed meanwhile (finalize)
                return self._final[0]
            raise

    def get_results(self, timeout_ms: int) -> List[Optional[LLMStatusCode]]:
        self._check_not_inside("get_results")
        if self._final is not None:
            return list(self._final[1])
        try:
            with self._guard.call("[CacheTask.get_results]"):
                return self._results(timeout_ms)
        except LLMException:
            if self._final is not None:
                return list(self._final[1])
            raise

    def _results(self, timeout_ms: int) -> List[Optional[LLMStatusCode]]:
        out = (c_uint32 * self.num_configs)()
        ret = _native.lib.llmdd_task_get_results(self.handle, timeout_ms, out, self.num_configs)
        if ret == _native.TIMEOUT:
            return [LLMStatusCode.LLM_TIMEOUT] * self.num_configs
        check(ret, "[CacheTask.get_results]")
        return [None if r == _native.TASK_RESULT_NOT_STARTED else code_2_status(r) for r in out]

    def finished(self) -> bool:
        """Whether the task has ended (polls without waiting)."""
        if self._freed:
            return True
        with self._guard.call("[CacheTask]"):
            return _native.lib.llmdd_task_synchronize(self.handle, 0) != _native.TIMEOUT

    def free(self, keep_results: bool = False) -> None:
        """``llmdd_task_free`` once no call on the task is in flight (cancels a running task)."""
        with self._free_lock:
            if self._freed:
                return
            with self._guard.exclusive(close=True) as live:
                if not live:
                    return
                if keep_results:
                    status = code_2_status(_native.lib.llmdd_task_synchronize(self.handle, 0))
                    self._final = (status, tuple(self._results(0)))
                _native.lib.llmdd_task_free(self.handle)
                self._freed = True
        self.unregister()

    def call_synchronizer(self, layer: int, timeout_ms: int) -> bool:
        """Runs the user's ``synchronize_layer`` on the library thread (GIL held by ctypes)."""
        _tls.sync_task = self
        _tls.sync_owner = self._owner()
        try:
            return bool(self.synchronizer.synchronize_layer(layer, None if timeout_ms < 0 else timeout_ms))
        except BaseException:  # noqa: BLE001 - any exception fails this layer, never the process
            _log.exception(
                "layer synchronizer %r raised for layer %d; the layer fails (LLM_PARAM_INVALID) "
                "and no further layer is sent",
                self.synchronizer,
                layer,
            )
            return False
        finally:
            _tls.sync_task = None
            _tls.sync_owner = None


def release_task(state: TaskState) -> None:
    """Called when a CacheTask is garbage-collected: frees it if done, else leaves it to finish."""
    try:
        if state.finished():
            state.free()
        else:
            # Like the reference's transfer thread, a dropped task keeps running;
            # it is freed when it has finished (next transfer_cache_async) or at finalize.
            state.orphan = True
    except LLMException:
        pass  # the instance is being finalized; finalize frees the task


def _sync_trampoline(user_data: Optional[int], layer: int, timeout_ms: int) -> bool:
    try:
        state = _LIVE_TASKS.get(user_data or 0)
        if state is None:
            return False
        return state.call_synchronizer(layer, timeout_ms)
    except BaseException:  # noqa: BLE001 - nothing may propagate into the library
        return False


#: The one C function pointer every task's synchronizer goes through (lives as long as the module).
_SYNC_C = _native.LAYER_SYNC_FN(_sync_trampoline)


def sync_fn() -> Any:
    """The C ``llmdd_layer_sync_fn`` to pass to ``llmdd_transfer_cache_async``."""
    return _SYNC_C


# ---------------------------------------------------------------------------
# Interpreter exit.
# ---------------------------------------------------------------------------
_LIVE_INSTANCES: "weakref.WeakSet[InstanceHandle]" = weakref.WeakSet()


def _at_exit() -> None:
    for inst in list(_LIVE_INSTANCES):
        try:
            inst.destroy()
        except Exception:  # noqa: BLE001 - best effort at exit
            _log.warning("error while finalizing an LLMDataDist at exit", exc_info=True)
    _log_bridge.uninstall()


atexit.register(_at_exit)
