"""Shared fixtures: in-process instances on 127.0.0.1 (several per process are allowed)."""

import itertools
import logging

import pytest

import procs
from llm_datadist import LLMClusterInfo, LLMConfig, LLMDataDist, LLMRole, LLMStatusCode

_ids = itertools.count(100)


class Pair:
    """A listening prompt and a decoder client linked to it, in this process."""

    def __init__(self, make, remote: bool) -> None:
        self.port = procs.free_port()
        self.prompt = make(LLMRole.PROMPT, listen=self.port, remote=remote)
        self.decoder = make(LLMRole.DECODER, remote=remote)

    def cluster(self) -> LLMClusterInfo:
        c = LLMClusterInfo()
        c.remote_cluster_id = self.prompt.cluster_id
        c.append_local_ip_info("127.0.0.1", 0)
        c.append_remote_ip_info("127.0.0.1", self.port)
        return c

    def link(self) -> None:
        ret, rets = self.decoder.link_clusters([self.cluster()], 5000)
        assert (ret, rets) == (LLMStatusCode.LLM_SUCCESS, [LLMStatusCode.LLM_SUCCESS])

    def unlink(self) -> None:
        ret, _ = self.decoder.unlink_clusters([self.cluster()], 5000)
        assert ret == LLMStatusCode.LLM_SUCCESS


@pytest.fixture
def make():
    """make(role, listen=port|None, remote=False, **config) -> an initialized LLMDataDist."""
    made = []

    def _make(role=LLMRole.PROMPT, listen=None, remote=False, init=True, **config):
        d = LLMDataDist(role, next(_ids))
        made.append(d)
        if init:
            c = LLMConfig()
            c.device_id = 0
            c.enable_cache_manager = True
            if remote:
                c.enable_remote_cache_accessible = True
            if listen:
                c.listen_ip_info = f"127.0.0.1:{listen}"
            for k, v in config.items():
                setattr(c, k, v)
            d.init(c.generate_options())
        return d

    yield _make
    for d in made:
        d.finalize()


@pytest.fixture
def pair(make):
    """A request/response-mode prompt (listening) and decoder, not yet linked."""
    return Pair(make, remote=False)


@pytest.fixture
def remote_pair(make):
    """A remote-cache-accessible prompt (listening) and decoder, not yet linked."""
    return Pair(make, remote=True)


@pytest.fixture
def llm_logs(caplog):
    """Records of the llm_datadist loggers at DEBUG and above."""
    caplog.set_level(logging.DEBUG, logger="llm_datadist")
    return caplog
