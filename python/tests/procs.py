"""Runs the two (or more) sides of a flow in separate processes on 127.0.0.1.

Each side is a fresh interpreter (multiprocessing "spawn"), so every process
loads libllmdd itself, as two serving processes would. A shared barrier
stands in for the samples' ``torch.distributed.barrier()``; a side that
fails aborts the barrier so its peer fails fast instead of hanging, and the
whole run is bounded by a deadline.
"""

from __future__ import annotations

import multiprocessing as mp
import socket
import traceback
from typing import Any, Callable, List, Sequence, Tuple

BARRIER_TIMEOUT_S = 90
RUN_TIMEOUT_S = 180


_HELD_PORTS: List[socket.socket] = []


def free_port() -> int:
    """A TCP port on 127.0.0.1 that stays free until llmdd binds it.

    A port found free and closed again can be taken by any process before the
    side that listens binds it (another test, or the source port of any
    outgoing connection): "Address already in use" on a busy machine. So a
    socket bound to it with SO_REUSEADDR, never listening, holds it for the
    life of this process: the kernel gives a held port to no other bind(0) nor
    connect(), while llmdd's listener (SO_REUSEADDR too) can still bind it.
    """
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    _HELD_PORTS.append(s)
    return s.getsockname()[1]


class Dist:
    """The part of ``torch.distributed`` the samples use (``barrier()``), plus a mailbox.

    ``send(side, obj)`` / ``recv()`` pass small picklable values between sides
    (e.g. tensor addresses a peer needs).
    """

    def __init__(self, barrier: Any, inboxes: Sequence[Any], index: int) -> None:
        self._barrier = barrier
        self._inboxes = inboxes
        self.index = index

    def barrier(self) -> None:
        self._barrier.wait()

    def send(self, side: int, obj: Any) -> None:
        self._inboxes[side].put(obj)

    def recv(self) -> Any:
        return self._inboxes[self.index].get(timeout=BARRIER_TIMEOUT_S)


def _child(index: int, fn: Callable[..., Any], args: tuple, barrier: Any, inboxes: Any, results: Any) -> None:
    try:
        out = fn(Dist(barrier, inboxes, index), *args)
        results.put((index, "ok", out))
    except BaseException:  # noqa: BLE001 - reported to the parent
        results.put((index, "error", traceback.format_exc()))
        barrier.abort()


def run(sides: Sequence[Tuple[Callable[..., Any], tuple]], timeout: float = RUN_TIMEOUT_S) -> List[Any]:
    """Runs ``fn(dist, *args)`` for each side in its own process; returns their results in order.

    Raises AssertionError with every failing side's traceback, or if a side
    does not finish within ``timeout`` seconds (it is then killed).
    """
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(sides), timeout=BARRIER_TIMEOUT_S)
    results = ctx.Queue()
    inboxes = [ctx.Queue() for _ in sides]
    procs = [
        ctx.Process(target=_child, args=(i, fn, args, barrier, inboxes, results), daemon=True)
        for i, (fn, args) in enumerate(sides)
    ]
    for p in procs:
        p.start()
    got: dict = {}
    try:
        while len(got) < len(procs):
            try:
                i, kind, value = results.get(timeout=timeout)
            except Exception:  # queue.Empty
                raise AssertionError(f"flow did not finish within {timeout} s (finished: {sorted(got)})")
            got[i] = (kind, value)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    errors = [f"--- side {i} ---\n{v}" for i, (k, v) in sorted(got.items()) if k == "error"]
    if errors:
        raise AssertionError("\n".join(errors))
    for i, p in enumerate(procs):
        assert p.exitcode == 0, f"side {i} exited with {p.exitcode}"
    return [got[i][1] for i in range(len(procs))]
