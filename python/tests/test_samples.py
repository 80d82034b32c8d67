"""The official Python samples' flows, two (or three) processes on 127.0.0.1, byte-exact.

Each test runs the processes of one sample of CANN's examples/python/llm_datadist
(see sample_flows.py for the substitutions: numpy host memory instead of NPU
tensors, loopback and free ports instead of fixed addresses).
"""

import pytest

import procs
import sample_flows as f

def _rank_table_pair(flow):
    ports = [procs.free_port(), procs.free_port()]
    procs.run([(flow, (1, ports)), (flow, (2, ports))])


def test_pull_blocks_sample_rank_table_link_and_swap():
    _rank_table_pair(f.pull_blocks_sample)


def test_pull_cache_sample_rank_table_link():
    _rank_table_pair(f.pull_cache_sample)


def test_pull_from_cache_to_blocks_sample():
    _rank_table_pair(f.pull_from_cache_to_blocks_sample)


def test_switch_role_sample():
    port = procs.free_port()
    procs.run([(f.switch_role_sample, ("p", port)), (f.switch_role_sample, ("d", port))])


def test_pull_blocks_xpyd_sample_two_prompts():
    p1, p2, d = (f"127.0.0.1:{procs.free_port()}" for _ in range(3))
    procs.run(
        [
            (f.pull_blocks_xpyd_sample, ("p", p1)),
            (f.pull_blocks_xpyd_sample, ("p", p2)),
            (f.pull_blocks_xpyd_sample, ("d", d, f"{p1};{p2}")),
        ]
    )


def _listening_pair(flow):
    p_port, d_port = procs.free_port(), procs.free_port()
    procs.run([(flow, ("p", p_port, d_port)), (flow, ("d", p_port, d_port))])


def test_push_blocks_sample():
    _listening_pair(f.push_blocks_sample)


def test_push_cache_sample():
    _listening_pair(f.push_cache_sample)


def test_transfer_cache_async_sample():
    _listening_pair(f.transfer_cache_async_sample)


def test_hixl_transfer_backend_sample():
    _listening_pair(f.hixl_transfer_backend_sample)


def test_push_cache_with_layer_ranges():
    port = procs.free_port()
    procs.run([(f.push_cache_layer_ranges, ("p", port)), (f.push_cache_layer_ranges, ("d", port))])


@pytest.mark.parametrize("by_key", [True, False], ids=["by_cache_key", "by_address"])
def test_layerwise_transfer_cache_async(by_key):
    port = procs.free_port()
    procs.run([(f.layerwise_async, ("p", port, by_key)), (f.layerwise_async, ("d", port, by_key))])
