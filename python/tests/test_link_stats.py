"""LLMDataDist.link_stats / link_state / list_links / reset_link_stats (llmdd extensions)
over an in-process pair (the same-process path) and a failed link attempt."""

import socket
import time

import numpy as np
import pytest

from llm_datadist import (
    BlocksCacheKey,
    CacheDesc,
    DataType,
    LinkInfo,
    LinkPath,
    LinkState,
    LLMClusterInfo,
    LLMException,
    LLMRole,
    LLMStatusCode,
)

S = LLMStatusCode
BLOCKS = 8
BLOCK = 1024


def _caches(pair):
    d = CacheDesc(2, [BLOCKS, BLOCK], DataType.DT_UINT8)
    src = [np.arange(BLOCKS * BLOCK, dtype=np.uint8).reshape(BLOCKS, BLOCK) + t for t in range(2)]
    pair.prompt.cache_manager.register_blocks_cache(d, src, BlocksCacheKey(pair.prompt.cluster_id))
    dst = [np.zeros((BLOCKS, BLOCK), np.uint8) for _ in range(2)]
    cache = pair.decoder.cache_manager.register_blocks_cache(d, dst)
    return src, dst, cache


def test_counts_states_and_reset(pair):
    p, d = pair.prompt.cluster_id, pair.decoder
    assert d.link_state(p) == (LinkState.UNLINKED, "")
    assert d.list_links() == []
    with pytest.raises(LLMException) as e:
        d.link_stats(p)
    assert e.value.status_code == S.LLM_NOT_YET_LINK
    src, dst, cache = _caches(pair)
    pair.link()
    assert d.link_state(p) == (LinkState.LINKED, "")
    assert d.list_links() == [LinkInfo(p, LinkState.LINKED, True, 0)]
    assert pair.prompt.list_links() == [LinkInfo(d.cluster_id, LinkState.LINKED, False, 0)]
    t0 = time.time_ns()
    for _ in range(3):
        d.cache_manager.pull_blocks(BlocksCacheKey(p), cache, [1, 2], [4, 5])
    assert np.array_equal(dst[1][[4, 5]], src[1][[1, 2]])
    with pytest.raises(LLMException) as e:
        d.cache_manager.pull_blocks(BlocksCacheKey(p, model_id=7), cache, [1], [4])
    assert e.value.status_code == S.LLM_KV_CACHE_NOT_EXIST

    st = d.link_stats(p)
    assert (st.cluster_id, st.state, st.path, st.dialed, st.comm_id) == (p, LinkState.LINKED,
                                                                         LinkPath.SAME_PROCESS, True, 0)
    assert st.ops == {"pull": 3, "push": 0}
    assert st.bytes == {"pull": 3 * 2 * 2 * BLOCK, "push": 0}
    assert st.failed_ops == 1 and st.errors == {S.LLM_KV_CACHE_NOT_EXIST: 1}
    assert st.in_flight == 0
    lat = st.latency["pull"]
    assert lat.count == 3 and 0 < lat.p50 <= lat.p99 <= lat.max
    assert st.latency["push"].count == 0
    assert st.last_error is not None and st.last_error.status == S.LLM_KV_CACHE_NOT_EXIST
    assert st.last_error.message and st.last_error.time_ns >= t0
    assert st.linked_ns <= st.since_ns <= st.last_error.time_ns
    # The accepting side started nothing; the same-process path is one-sided.
    served = pair.prompt.link_stats(d.cluster_id)
    assert served.ops == {"pull": 0, "push": 0} and served.served_requests == {"pull": 0, "push": 0}
    assert served.served_refused == 1  # the lookup of the missing key

    d.reset_link_stats(p)
    st = d.link_stats(p)
    assert st.ops == {"pull": 0, "push": 0} and st.failed_ops == 0 and st.errors == {}
    assert st.last_error is None and st.latency["pull"].count == 0 and st.since_ns >= t0
    assert pair.prompt.link_stats(d.cluster_id).served_refused == 1
    pair.prompt.reset_link_stats()
    assert pair.prompt.link_stats(d.cluster_id).served_refused == 0

    pair.unlink()
    assert d.link_state(p) == (LinkState.UNLINKED, "")
    assert d.list_links() == []
    with pytest.raises(LLMException) as e:
        d.reset_link_stats(p)
    assert e.value.status_code == S.LLM_NOT_YET_LINK


def test_failed_link_attempt_is_failed_until_unlinked(make):
    d = make(LLMRole.DECODER)
    with socket.socket() as s:  # accepts, never answers: the handshake times out
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        c = LLMClusterInfo()
        c.remote_cluster_id = 4242
        c.append_local_ip_info("127.0.0.1", 0)
        c.append_remote_ip_info("127.0.0.1", s.getsockname()[1])
        ret, rets = d.link_clusters([c], 300)
    assert (ret, rets) == (S.LLM_LINK_FAILED, [S.LLM_LINK_FAILED])
    state, why = d.link_state(4242)
    assert state == LinkState.FAILED and "link_clusters failed" in why
    assert d.list_links() == [LinkInfo(4242, LinkState.FAILED, True, 0)]
    ret, _ = d.unlink_clusters([c], 1000, force=True)
    assert ret == S.LLM_SUCCESS
    assert d.link_state(4242) == (LinkState.UNLINKED, "")


def test_bad_arguments(make):
    d = make(LLMRole.DECODER)
    with pytest.raises(TypeError):
        d.link_stats("1")
    with pytest.raises(ValueError):
        d.link_state(-1)
    with pytest.raises(ValueError):
        d.reset_link_stats(2**64)
    u = make(LLMRole.DECODER, init=False)
    with pytest.raises(RuntimeError):
        u.list_links()
