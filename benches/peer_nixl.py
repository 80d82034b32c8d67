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
bound calls; the script measures that floor too (the same loop around one
status query of the finished request) and prints it beside the result.

Usage (installs nixl-cu12 1.5.1 into target/nixl-venv on first use; its torch
dependency is not needed for host memory and is left out):

    python3 benches/peer_nixl.py [--size 16384] [--iters 3000] [--rounds 1]
        [--llmdd build/release/benches/llmdd_bench ...]

With `--llmdd BENCH` (repeatable: several builds), each round first runs each
llmdd_bench's single-block same-host pull of the same size, re-pulling one
block as NIXL re-reads one buffer (`--buffer-size` = the block), then NIXL's
read, and prints the ratio of each llmdd p50 to NIXL's in that round; after
the last round, the sitting: the median over the rounds of each p50, their
ratio, and how many rounds were at most 0.75x.

The vCPUs of this VM kind do not run alike: a process_vm_readv of 16 KiB
takes ~2.5 us on one and ~3.0 us on the other at the same moment, and which
is which changes. Unpinned, llmdd and NIXL can land on different ones within
a round. `--cpu N` pins this script and every process it starts (llmdd's and
NIXL's, target and initiator) to vCPU N, so both run on the same one.
"""

import argparse
import statistics
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


def llmdd_round(bench, size, iters):
    """One llmdd_bench run: (pull p50 us, process_vm_readv-alone p50 us or None)."""
    import re

    out = subprocess.run(
        [bench, "--block-size", str(size), "--buffer-size", str(size), "--blocks-per-call", "1",
         "--calls", str(iters), "--op", "pull", "--transport", "same-host"],
        check=True, capture_output=True, text=True,
    ).stdout
    pull = floor = None
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 6 and cells[1] == "pull" and cells[3] == "1":
            pull = float(cells[5])
        m = re.search(r"process_vm_readv alone.*p50 ([0-9.]+) us", line)
        if m:
            floor = float(m.group(1))
    if pull is None:
        raise RuntimeError(f"{bench} printed no pull row:\n{out}")
    return pull, floor


def initiator(size, iters):
    """One NIXL measurement in fresh processes: (p50 us, p99 us, floor p50 us)."""
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
        lat = sorted(once() for _ in range(iters))
        # Python's share: the same loop around one status query (already DONE).
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
        h.release()
        return percentile(lat, 0.5) / 1e3, percentile(lat, 0.99) / 1e3, percentile(floor, 0.5) / 1e3
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
    p.add_argument("--llmdd", action="append", default=[], metavar="BENCH",
                   help="an llmdd_bench to run in each round before NIXL (repeatable)")
    p.add_argument("--cpu", type=int, default=None, metavar="N",
                   help="pin this script and every process it starts to vCPU N")
    o = p.parse_args()
    if o.cpu is not None:
        os.sched_setaffinity(0, {o.cpu})
    ensure_venv()
    if o.role == "target":
        target(o.size, o.fd)
    else:
        benches = [os.path.abspath(b) for b in o.llmdd]
        nixl_p50s, pulls = [], {b: [] for b in benches}
        for r in range(o.rounds):
            # llmdd first, while no NIXL process runs (the target's progress
            # thread would take a vCPU), then NIXL in fresh processes.
            mine = [(b, llmdd_round(b, o.size, o.iters)) for b in benches]
            p50, p99, floor = initiator(o.size, o.iters)
            nixl_p50s.append(p50)
            print(
                f"round {r + 1}: nixl 1.5.1 UCX (CMA), re-posted READ of {o.size} B: p50 {p50:.2f} us, "
                f"p99 {p99:.2f} us ({o.iters} reads, verified); python loop floor p50 {floor:.2f} us",
                flush=True,
            )
            for b, (pull, alone) in mine:
                pulls[b].append(pull)
                a = f", process_vm_readv alone {alone:.2f} us" if alone is not None else ""
                print(f"round {r + 1}: {b}: pull p50 {pull:.2f} us{a}; {pull / p50:.2f}x NIXL's",
                      flush=True)
        if benches:
            n = statistics.median(nixl_p50s)
            where = f" on vCPU {o.cpu}" if o.cpu is not None else ""
            for b in benches:
                m = statistics.median(pulls[b])
                under = sum(1 for x, y in zip(pulls[b], nixl_p50s) if x <= 0.75 * y)
                print(f"sitting{where}, {o.rounds} rounds: {b}: median pull p50 {m:.2f} us, "
                      f"NIXL's {n:.2f} us: {m / n:.2f}x; {under} of {o.rounds} rounds at most 0.75x",
                      flush=True)


if __name__ == "__main__":
    main()
