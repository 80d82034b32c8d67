#!/usr/bin/env python3
"""CTest driver for llmdd_bench at a tiny size (benches/CMakeLists.txt).

    test_bench.py loopback|pair|bad_args PATH_TO_LLMDD_BENCH

loopback: the fork mode over every transport and both cache shapes, as JSON
lines and as a table. pair: a target and an initiator as two processes on
127.0.0.1 (a port the kernel picked), JSON lines checked field by field, then
the target stopped by SIGTERM. Every initiator run ends with its link's
statistics, which must equal what the run moved. bad_args: every malformed command line exits
non-zero with a message and prints nothing on stdout.
"""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

BENCH = ""
TINY = ["--buffer-size", "256K", "--block-size", "16K,64K"]
PATH_OF = {"same-host": "same-host", "pool": "same-host", "tcp": "tcp"}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def run(args, timeout=90):
    p = subprocess.run([BENCH] + args, capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


_HELD_PORTS = []


def free_port():
    """A loopback port held until llmdd_bench binds it: a socket bound to it with
    SO_REUSEADDR, never listening, stays open, so no other bind(0) or connect()
    on the machine takes it in between (llmdd's listener sets SO_REUSEADDR)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    _HELD_PORTS.append(s)
    return s.getsockname()[1]


def check_stats(stats, rows):
    """The link's statistics after one initiator run: counted exactly what the
    run moved (the tool compares them with its own count of every call), and
    at least the timed calls of its rows, on the transport's path."""
    if len(stats) != 1:
        fail("expected one link_stats line, got %r" % stats)
    st = stats[0]
    if st["exact"] is not True or st["failed_ops"] != 0 or st["in_flight"] != 0:
        fail("link statistics: %r" % st)
    if st["path"] != PATH_OF[rows[0]["transport"]]:
        fail("link path %r for transport %r" % (st["path"], rows[0]["transport"]))
    for op in ("pull", "push"):
        timed = [r for r in rows if r["op"] == op]
        if st[op + "_ops"] != st[op + "_ops_counted_by_bench"] or \
                st[op + "_ops"] < sum(r["calls"] for r in timed) or \
                st[op + "_bytes"] < sum(r["bytes"] for r in timed):
            fail("link statistics for %s: %r" % (op, st))
        if timed and not 0 < st[op + "_p50_us"] <= st[op + "_p99_us"] <= st[op + "_max_us"]:
            fail("link latency for %s: %r" % (op, st))


def json_rows(out, expect, runs=1):
    """Parses every stdout line as JSON and checks each measurement, and the
    link's statistics after each of the `runs` initiator runs."""
    lines = [json.loads(line) for line in out.splitlines()]
    rows, stats, run = [], [], []
    for obj in lines:
        if obj.get("event") == "link_stats":
            check_stats([obj], run)
            stats.append(obj)
            run = []
        else:
            rows.append(obj)
            run.append(obj)
    if len(stats) != runs or run:
        fail("expected %d link_stats lines, each after its run's rows:\n%s" % (runs, out))
    if len(rows) != expect:
        fail("expected %d JSON lines, got %d:\n%s" % (expect, len(rows), out))
    for r in rows:
        for key in ("mode", "transport", "cache", "op", "block_size", "blocks_per_call", "threads",
                    "calls", "bytes", "seconds", "gbps", "p50_us", "p99_us", "max_us", "verified"):
            if key not in r:
                fail("JSON line lacks %r: %r" % (key, r))
        if r["verified"] is not True:
            fail("bytes not verified: %r" % r)
        if r["calls"] <= 0 or r["bytes"] != r["calls"] * r["blocks_per_call"] * r["block_size"]:
            fail("calls/bytes inconsistent: %r" % r)
        if not (r["gbps"] > 0 and 0 < r["p50_us"] <= r["p99_us"] <= r["max_us"]):
            fail("figures out of order: %r" % r)
    return rows


def loopback():
    code, out, err = run(TINY + ["--calls", "6", "--blocks-per-call", "2", "--threads", "2", "--runs", "1",
                                 "--json"])
    if code != 0:
        fail("loopback --json exited %d: %s" % (code, err))
    rows = json_rows(out, 3 * 2 * 2, runs=3)
    if {r["transport"] for r in rows} != {"same-host", "pool", "tcp"}:
        fail("not every transport measured: %r" % rows)
    for r in rows:
        if r["mode"] != "loopback" or r["threads"] != 2 or r["calls"] != 12 or not r["limit_gbps"] > 0:
            fail("loopback row: %r" % r)
    code, out, err = run(TINY + ["--cache", "contiguous", "--op", "push,pull", "--calls", "4", "--runs", "1",
                                 "--transport", "same-host,tcp"])
    if code != 0:
        fail("contiguous table run exited %d: %s" % (code, err))
    table = [line for line in out.splitlines()
             if line.split(" | ")[0] in ("| pull", "| push") and len(line.split("|")) == 12]
    if len(table) != 2 * 2 * 2 or any(not line.endswith("| yes |") for line in table):
        fail("table rows:\n" + out)
    if out.count("link statistics (llmdd_get_link_stats") != 2 or \
            out.count("failed operations 0, in flight 0") != 2:
        fail("link statistics after each run:\n" + out)


def start_target(args):
    port = free_port()
    listen = "127.0.0.1:%d" % port
    t = subprocess.Popen([BENCH, "--mode", "target", "--listen", listen, "--json", "--duration", "100"] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([t.stdout], [], [], 60)
    if not ready:
        t.kill()
        fail("target printed nothing within 60 s")
    line = t.stdout.readline()
    if not line:
        t.wait()
        fail("target exited %s: %s" % (t.returncode, t.stderr.read()))
    info = json.loads(line)
    if info["event"] != "target_ready" or info["listen"] != listen:
        fail("target's ready line: %r" % info)
    return t, info


def stop_target(t):
    t.send_signal(signal.SIGTERM)
    try:
        code = t.wait(timeout=30)
    except subprocess.TimeoutExpired:
        t.kill()
        fail("target did not stop within 30 s of SIGTERM")
    if code != 0:
        fail("target exited %d after SIGTERM: %s" % (code, t.stderr.read()))


def pair():
    t, info = start_target(TINY)
    try:
        base = ["--mode", "initiator", "--connect", info["listen"]] + TINY
        code, out, err = run(base + ["--calls", "5", "--blocks-per-call", "3", "--json"])
        if code != 0:
            fail("initiator exited %d: %s" % (code, err))
        rows = json_rows(out, 4)
        got = sorted((r["op"], r["block_size"]) for r in rows)
        if got != [("pull", 16384), ("pull", 65536), ("push", 16384), ("push", 65536)]:
            fail("rows: %r" % got)
        if any(r["mode"] != "initiator" or r["limit_gbps"] is not None for r in rows):
            fail("initiator rows: %r" % rows)
        # A second run against the same target: the first one left its bytes as they were.
        code, out, err = run(base + ["--duration", "0.05", "--threads", "2", "--op", "pull", "--json"])
        if code != 0:
            fail("second initiator exited %d: %s" % (code, err))
        json_rows(out, 2)
        # A block size the target does not serve: the library says so.
        code, out, err = run(["--mode", "initiator", "--connect", info["listen"], "--buffer-size", "256K",
                              "--block-size", "32K", "--calls", "1"])
        if code == 0 or "32768" not in err:
            fail("unserved block size: exit %d, %s" % (code, err))
    finally:
        stop_target(t)
    t, info = start_target(TINY + ["--cache", "contiguous", "--transport", "tcp"])
    try:
        ids = ",".join(str(i) for i in info["cache_ids"])
        code, out, err = run(["--mode", "initiator", "--connect", info["listen"], "--cache", "contiguous",
                              "--transport", "tcp", "--target-cache-ids", ids, "--calls", "4", "--json"] + TINY)
        if code != 0:
            fail("contiguous initiator exited %d: %s" % (code, err))
        json_rows(out, 4)
    finally:
        stop_target(t)


BAD = [
    ["--bogus"],
    ["stray"],
    ["--mode", "sideways"],
    ["--block-size"],
    ["--block-size", "12x"],
    ["--block-size", "0"],
    ["--block-size", "12"],
    ["--block-size", "16K,16K"],
    ["--block-size", "-16K"],
    ["--buffer-size", "1K", "--block-size", "16K"],
    ["--threads", "0"],
    ["--threads", "65"],
    ["--op", "pul"],
    ["--op", ""],
    ["--transport", "rdma"],
    ["--cache", "paged"],
    ["--duration", "soon"],
    ["--duration", "-1"],
    ["--runs", "10"],
    ["--option", "novalue"],
    ["--cache", "contiguous", "--blocks-per-call", "4"],
    ["--mode", "target"],
    ["--mode", "target", "--listen", "127.0.0.1:1", "--calls", "3"],
    ["--mode", "initiator"],
    ["--mode", "initiator", "--connect", "127.0.0.1:1", "--listen", "127.0.0.1:2"],
    ["--mode", "initiator", "--connect", "127.0.0.1:1", "--cache", "contiguous"],
    ["--mode", "initiator", "--connect", "127.0.0.1:1", "--transport", "tcp,pool"],
    ["--mode", "initiator", "--connect", "127.0.0.1:1", "--cluster-id", "11"],
    ["--mode", "initiator", "--connect", "127.0.0.1"],
    ["--mode", "initiator", "--connect", "127.0.0.1:99999"],
    ["--listen", "127.0.0.1:1"],
    ["--target-cache-ids", "1"],
]


def bad_args():
    for args in BAD:
        code, out, err = run(args, timeout=30)
        if code == 0 or "llmdd_bench: " not in err or out:
            fail("%r: exit %d, stdout %r, stderr %r" % (args, code, out, err))
    code, out, err = run(["--help"])
    if code != 0 or "usage: llmdd_bench" not in out:
        fail("--help: exit %d, %r" % (code, out))
    # Nothing listens there: the link fails with the library's message, no hang.
    code, out, err = run(["--mode", "initiator", "--connect", "127.0.0.1:%d" % free_port(), "--link-timeout",
                          "2000", "--calls", "1", "--json"] + TINY)
    if code == 0 or "llmdd_link_clusters failed" not in err:
        fail("initiator without a target: exit %d, %r" % (code, err))


def main():
    global BENCH
    if len(sys.argv) != 3 or sys.argv[1] not in ("loopback", "pair", "bad_args"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    BENCH = os.path.abspath(sys.argv[2])
    start = time.monotonic()
    {"loopback": loopback, "pair": pair, "bad_args": bad_args}[sys.argv[1]]()
    print("%s passed in %.1f s" % (sys.argv[1], time.monotonic() - start))


if __name__ == "__main__":
    main()
