#!/usr/bin/env python3
"""NIXL's re-posted same-host READ, for comparison with llmdd's single-block pull.

Not a test (never run by ./scripts/test.sh). Two processes on this host: a
target registers one page-aligned buffer of host memory (DRAM) with NIXL's UCX
backend, an initiator (no progress thread: NIXL's fastest configuration on this
2-vCPU machine kind, ../shared/bench/README.md) loads its metadata, prepares
one READ of `--size` bytes once (`initialize_xfer`) and re-posts it `--iters`
times (`transfer`, then `check_xfer_state` until DONE), timing each post to
completion. UCX picks its CMA transport (process_vm_readv) for host memory
between local processes. The bytes are checked after the timed loop.

The timed loop runs in Python, so each figure carries Python's own cost of the
two bound calls; the script measures that floor too (the same loop around a
no-op bound call) and prints it beside the result.

Usage (installs nixl-cu12 1.5.1 into target/nixl-venv on first use; its torch
dependency is not needed for host memory and is left out):

    python3 benches/peer_nixl.py [--size 16384] [--iters 3000] [--rounds 1]
"""

import argparse
import mmap
import os
import subprocess
import sys
import time

NIXL = "nixl-cu12==1.5.1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, "target", "nixl-venv")
VPY = os.path.join(VENV, "bin", "python")


def ensure_venv():
    """Re-executes this script in target/nixl-venv, creating it if needed."""
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return
    if not os.path.exists(VPY):
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
        pip = [VPY, "-m", "pip", "install", "-q"]
        subprocess.check_call(pip + ["numpy"])
        subprocess.check_call(pip + ["--no-deps", NIXL])
    os.execv(VPY, [VPY] + sys.argv)


def agent(name, progress_thread):
    from nixl_cu12._api import nixl_agent, nixl_agent_config

    conf = nixl_agent_config(enable_prog_thread=progress_thread, backends=["UCX"])
    return nixl_agent(name, conf)


def buffer(size, fill):
    """A page-aligned anonymous buffer filled with `fill` (bytes, repeated)."""
    m = mmap.mmap(-1, size)
    m.write((fill * (size // len(fill) + 1))[:size])
    return m


def address(m):
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(m))


def pattern(size):
    return bytes((i * 7 + 3) & 0xFF for i in range(size))


def target(size, fd):
    """Registers the buffer, writes its metadata to `fd`, serves until stdin closes."""
    import pickle

    a = agent("target", True)
    m = buffer(size, pattern(size))
    addr = address(m)
    a.register_memory([(addr, size, 0, "")], "DRAM")
    md = a.get_agent_metadata()
    with os.fdopen(fd, "wb") as out:
        out.write(pickle.dumps((md, addr)))
    sys.stdin.buffer.read()


def percentile(v, q):
    return v[min(len(v) - 1, int(len(v) * q))]


def initiator(size, iters, rounds):
    import pickle

    rfd, wfd = os.pipe()
    t = subprocess.Popen(
        [sys.executable, __file__, "--role", "target", "--size", str(size), "--fd", str(wfd)],
        stdin=subprocess.PIPE,
        pass_fds=[wfd],
    )
    os.close(wfd)
    try:
        with os.fdopen(rfd, "rb") as f:
            md, raddr = pickle.load(f)
        a = agent("initiator", False)
        m = buffer(size, b"\0")
        laddr = address(m)
        a.register_memory([(laddr, size, 0, "")], "DRAM")
        peer = a.add_remote_agent(md)
        local = a.get_xfer_descs([(laddr, size, 0)], "DRAM")
        remote = a.get_xfer_descs([(raddr, size, 0)], "DRAM")
        # Metadata may need a moment before a request can be made.
        for _ in range(1000):
            try:
                h = a.initialize_xfer("READ", local, remote, peer)
                break
            except Exception:
                time.sleep(0.01)
        else:
            raise RuntimeError("could not prepare a READ towards the target")
        post, state = a.agent.postXferReq, a.agent.getXferStatus
        hv = h._handle
        import nixl_cu12._bindings as nb

        ok, busy = nb.NIXL_SUCCESS, nb.NIXL_IN_PROG
        clock = time.perf_counter_ns

        def once():
            t0 = clock()
            s = post(hv, b"")
            while s == busy:
                s = state(hv)
            t1 = clock()
            if s != ok:
                raise RuntimeError(f"NIXL transfer failed: status {s}")
            return t1 - t0

        for _ in range(200):
            once()
        for r in range(rounds):
            lat = sorted(once() for _ in range(iters))
            # Python's share: the same loop shape around one bound no-op call.
            floor = []
            for _ in range(iters):
                t0 = clock()
                s = state(hv)
                while s == busy:
                    s = state(hv)
                floor.append(clock() - t0)
            floor.sort()
            if bytes(m[:size]) != pattern(size):
                raise RuntimeError("the bytes read differ from the target's")
            print(
                f"nixl 1.5.1 UCX (CMA), re-posted READ of {size} B: p50 {percentile(lat, 0.5) / 1e3:.2f} us, "
                f"p99 {percentile(lat, 0.99) / 1e3:.2f} us ({iters} reads, verified); "
                f"python loop floor p50 {percentile(floor, 0.5) / 1e3:.2f} us",
                flush=True,
            )
        h.release()
    finally:
        t.stdin.close()
        t.wait(timeout=30)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=16384)
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--role", choices=["initiator", "target"], default="initiator")
    p.add_argument("--fd", type=int, default=-1, help=argparse.SUPPRESS)
    o = p.parse_args()
    ensure_venv()
    if o.role == "target":
        target(o.size, o.fd)
    else:
        initiator(o.size, o.iters, o.rounds)


if __name__ == "__main__":
    main()
