"""The Python quick starts in README.md and docs/python.md run as written (with a
prompt listening in this process on a free port instead of 26000)."""

import re
from pathlib import Path

import numpy as np
import pytest

import procs
from llm_datadist import BlocksCacheKey, CacheDesc, DataType, LLMConfig, LLMDataDist, LLMRole

REPO = Path(__file__).resolve().parents[2]


def first_python_block(path):
    text = path.read_text()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("doc", ["README.md", "docs/python.md"])
def test_quick_start_runs(doc):
    code = first_python_block(REPO / doc)
    assert "26000" in code and "LLMDataDist(LLMRole.DECODER, 2)" in code
    port = procs.free_port()
    config = LLMConfig()
    config.device_id = 0
    config.enable_cache_manager = True
    config.listen_ip_info = f"127.0.0.1:{port}"
    with LLMDataDist(LLMRole.PROMPT, 1) as prompt:
        prompt.init(config.generate_options())
        src = [np.full((16, 4096), t + 1, np.float16) for t in range(2)]
        desc = CacheDesc(num_tensors=2, shape=[16, 4096], data_type=DataType.DT_FLOAT16)
        prompt.cache_manager.register_blocks_cache(desc, src, BlocksCacheKey(1, 0))
        scope = {}
        exec(compile(code.replace("26000", str(port)), doc, "exec"), scope)
        kv = scope["kv"]
        for t in range(2):
            assert np.all(kv[t][[3, 4]] == t + 1) and np.all(kv[t][:3] == 0)
