"""The ctypes declarations in llm_datadist._native match include/llmdd.h.

A C probe compiled against the header prints every struct's size and field
offsets and every LLMDD_* constant; the test compares them with the ctypes
structures and the package's constants. Prototypes are compared by name and
arity with the header's declarations. (A change of the C ABI that the
package does not follow fails here, not at run time.)
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llm_datadist import DataType, LLMRole, LLMStatusCode, Memtype, Placement, RegisterMemStatus, _native
from llm_datadist import link_stats as ld_link

HEADER = Path(__file__).resolve().parents[2] / "include" / "llmdd.h"

STRUCTS = {
    "llmdd_cache_desc_t": _native.CacheDescT,
    "llmdd_cache_key_t": _native.CacheKeyT,
    "llmdd_cache_t": _native.CacheT,
    "llmdd_layer_range_t": _native.LayerRangeT,
    "llmdd_block_pair_t": _native.BlockPairT,
    "llmdd_host_cache_t": _native.HostCacheT,
    "llmdd_mem_info_t": _native.MemInfoT,
    "llmdd_option_t": _native.OptionT,
    "llmdd_ip_info_t": _native.IpInfoT,
    "llmdd_cluster_info_t": _native.ClusterInfoT,
    "llmdd_cluster_rank_t": _native.ClusterRankT,
    "llmdd_transfer_config_t": _native.TransferConfigT,
    "llmdd_link_stats_t": _native.LinkStatsT,
    "llmdd_link_entry_t": _native.LinkEntryT,
}


@pytest.fixture(scope="module")
def header_text():
    if not HEADER.is_file():
        pytest.fail(f"{HEADER} not found: the ABI tests run from the llmdd repository")
    return HEADER.read_text()


@pytest.fixture(scope="module")
def probe(tmp_path_factory, header_text):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed for the ABI probe"
    # Numeric object-like macros (the LLMDD_OPTION_* keys are strings).
    macros = sorted(set(re.findall(r"^#define (LLMDD_[A-Z0-9_]+)[ \t]+[^\s\"]", header_text, re.M)))
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include "llmdd.h"', "int main(void) {", 'printf("{");']
    for name, cls in STRUCTS.items():
        lines.append(f'printf("\\"{name}\\": {{\\"(sizeof)\\": %zu", sizeof({name}));')
        for field, _ in cls._fields_:
            lines.append(f'printf(", \\"{field}\\": %zu", offsetof({name}, {field}));')
        lines.append('printf("}, ");')
    for m in macros:
        lines.append(f'printf("\\"{m}\\": %llu, ", (unsigned long long)({m}));')
    lines.append('printf("\\"_end\\": 0}\\n"); return 0; }')
    d = tmp_path_factory.mktemp("abi")
    (d / "probe.c").write_text("\n".join(lines))
    subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-I", str(HEADER.parent), "probe.c", "-o", "probe"],
                   cwd=d, check=True)
    return json.loads(subprocess.run([str(d / "probe")], check=True, capture_output=True, text=True).stdout)


@pytest.mark.parametrize("name", sorted(STRUCTS))
def test_struct_layout(probe, name):
    cls = STRUCTS[name]
    got = probe[name]
    assert got["(sizeof)"] == _native.ctypes.sizeof(cls), f"sizeof({name})"
    for field, _ in cls._fields_:
        assert got[field] == getattr(cls, field).offset, f"offsetof({name}, {field})"


def test_constants(probe):
    c = {k: v for k, v in probe.items() if k.startswith("LLMDD_")}
    u32 = lambda v: v & 0xFFFFFFFF  # noqa: E731
    pairs = {
        "LLMDD_ROLE_PROMPT": LLMRole.PROMPT, "LLMDD_ROLE_DECODER": LLMRole.DECODER, "LLMDD_ROLE_MIX": LLMRole.MIX,
        "LLMDD_PLACEMENT_HOST": Placement.HOST, "LLMDD_PLACEMENT_DEVICE": Placement.DEVICE,
        "LLMDD_MEM_TYPE_DEVICE": Memtype.MEM_TYPE_DEVICE.value, "LLMDD_MEM_TYPE_HOST": Memtype.MEM_TYPE_HOST.value,
        "LLMDD_MEM_STATUS_OK": RegisterMemStatus.OK.value, "LLMDD_MEM_STATUS_PREPARING":
            RegisterMemStatus.PREPARING.value, "LLMDD_MEM_STATUS_FAILED": RegisterMemStatus.FAILED.value,
        "LLMDD_KEY_CACHE_KEY": _native.KEY_CACHE_KEY, "LLMDD_KEY_ID_AND_INDEX": _native.KEY_ID_AND_INDEX,
        "LLMDD_KEY_BLOCKS": _native.KEY_BLOCKS, "LLMDD_TRANSFER_BY_ADDRS": _native.TRANSFER_BY_ADDRS,
        "LLMDD_TRANSFER_BY_CACHE_KEY": _native.TRANSFER_BY_CACHE_KEY,
        "LLMDD_TASK_RESULT_NOT_STARTED": _native.TASK_RESULT_NOT_STARTED, "LLMDD_ID_UNSET": _native.ID_UNSET,
    }
    for name, value in pairs.items():
        assert c[name] == int(value), name
    for dt in DataType:
        assert c[f"LLMDD_DT_{dt.name[3:]}"] == dt.value, dt
    for s in LLMStatusCode:
        key = "LLMDD_" + s.name[4:]
        if key in c:
            assert u32(c[key]) == s.value, s
    # Every status the library defines has an LLMStatusCode member of the same value.
    statuses = {u32(v) for k, v in c.items() if k in {"LLMDD_SUCCESS", "LLMDD_FAILED"} or
                (0x5010B000 <= u32(v) <= 0x5010B0FF) or k.endswith("_MEM_ERROR") or k.endswith("_REMOTE_ERROR")}
    assert statuses <= {s.value for s in LLMStatusCode}
    for name in ("LLMDD_LINK_STATS_VERSION", "LLMDD_LINK_STATE_UNLINKED", "LLMDD_LINK_STATE_LINKING",
                 "LLMDD_LINK_STATE_LINKED", "LLMDD_LINK_STATE_FAILED", "LLMDD_PATH_SAME_PROCESS",
                 "LLMDD_PATH_SAME_HOST", "LLMDD_PATH_TCP", "LLMDD_PATH_HCCL", "LLMDD_PATH_COUNT",
                 "LLMDD_DIR_PULL", "LLMDD_DIR_PUSH", "LLMDD_STATS_ERROR_SLOTS", "LLMDD_STATS_MESSAGE_LEN"):
        assert c[name] == getattr(_native, name[len("LLMDD_"):]), name
    assert {s.name: s.value for s in ld_link.LinkState} == {
        "UNLINKED": c["LLMDD_LINK_STATE_UNLINKED"], "LINKING": c["LLMDD_LINK_STATE_LINKING"],
        "LINKED": c["LLMDD_LINK_STATE_LINKED"], "FAILED": c["LLMDD_LINK_STATE_FAILED"]}
    assert {p.name: p.value for p in ld_link.LinkPath} == {
        "SAME_PROCESS": c["LLMDD_PATH_SAME_PROCESS"], "SAME_HOST": c["LLMDD_PATH_SAME_HOST"],
        "TCP": c["LLMDD_PATH_TCP"], "HCCL": c["LLMDD_PATH_HCCL"]}
    for name in ("LLMDD_LOG_LEVEL_ERROR", "LLMDD_LOG_LEVEL_WARN", "LLMDD_LOG_LEVEL_INFO",
                 "LLMDD_LOG_LEVEL_DEBUG", "LLMDD_LOG_LEVEL_TRACE"):
        if name in c:
            assert c[name] == getattr(_native, name[len("LLMDD_"):]), name


def test_prototypes(header_text):
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", header_text, flags=re.S)
    decls = {}
    for m in re.finditer(r"\b(llmdd_[a-z0-9_]+)\s*\(([^;{]*?)\)\s*;", code, re.S):
        params = m.group(2).strip()
        decls[m.group(1)] = 0 if params in ("", "void") else params.count(",") + 1
    protos = dict(_native._PROTOTYPES)
    protos.update({k: v for k, v in _native._OPTIONAL_PROTOTYPES.items() if k in decls})
    for name, (_, argtypes) in protos.items():
        assert name in decls, f"{name} is not declared in llmdd.h"
        assert decls[name] == len(argtypes), f"{name}: header has {decls[name]} parameters"
