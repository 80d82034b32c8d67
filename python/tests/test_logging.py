"""libllmdd's log lines arrive in Python's logging (llmdd_set_log_callback), from
library threads, with levels and module names, filtered as the Python loggers are.

Each case runs in a fresh interpreter without LLMDD_LOG (which would override the
package's filter), linking and unlinking two instances on 127.0.0.1.
"""

import json
import os
import subprocess
import sys
import textwrap

import procs

SCRIPT = textwrap.dedent(
    """
    import json, logging, sys, threading
    from llm_datadist import *
    from llm_datadist import _log_bridge

    records = []
    class Keep(logging.Handler):
        def emit(self, r):
            records.append({"name": r.name, "level": r.levelname, "msg": r.getMessage(),
                            "main": r.thread == threading.main_thread().ident})
    logging.getLogger("llm_datadist").addHandler(Keep())
    logging.getLogger("llm_datadist").propagate = False
    for name, level in json.loads(sys.argv[2]).items():
        logging.getLogger(name).setLevel(level)

    def config(port=None):
        c = LLMConfig(); c.device_id = 0; c.enable_cache_manager = True
        if port: c.listen_ip_info = f"127.0.0.1:{port}"
        return c.generate_options()

    port = int(sys.argv[1])
    server = LLMDataDist(LLMRole.PROMPT, 1); server.init(config(port))
    client = LLMDataDist(LLMRole.DECODER, 2); client.init(config())
    c = LLMClusterInfo(); c.remote_cluster_id = 1
    c.append_local_ip_info("127.0.0.1", 0); c.append_remote_ip_info("127.0.0.1", port)
    assert client.link_clusters([c])[0] == LLMStatusCode.LLM_SUCCESS
    assert client.unlink_clusters([c])[0] == LLMStatusCode.LLM_SUCCESS
    if sys.argv[3] == "exit":
        assert client.link_clusters([c])[0] == LLMStatusCode.LLM_SUCCESS
        print(json.dumps({"installed": _log_bridge._installed, "filter": "", "records": []}))
        sys.exit(0)  # linked, not finalized: the package finalizes at exit, still logging
    client.finalize(); server.finalize()
    print(json.dumps({"filter": _log_bridge.current_filter(), "installed": _log_bridge._installed,
                      "records": [r for r in records if r["name"].startswith("llm_datadist.llmdd")]}))
    """
)


def run_case(levels, mode="finalize"):
    env = {k: v for k, v in os.environ.items() if k != "LLMDD_LOG"}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(procs.free_port()), json.dumps(levels), mode],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["installed"]
    return out


def test_library_lines_reach_python_logging():
    out = run_case({"llm_datadist.llmdd": "INFO"})
    assert out["filter"] == "info"
    recs = out["records"]
    assert recs, "no library line arrived"
    assert all(r["level"] in ("INFO", "WARNING", "ERROR") for r in recs)
    names = {r["name"] for r in recs}
    assert any(n.startswith("llm_datadist.llmdd.datadist") for n in names), names
    assert any(not r["main"] for r in recs), "expected lines logged on library threads"
    assert any("link" in r["msg"] for r in recs)


def test_filter_follows_python_levels():
    out = run_case({"llm_datadist.llmdd": "WARNING"})
    assert out["filter"] == "warn"
    assert not [r for r in out["records"] if r["level"] == "INFO"]
    quiet = run_case({"llm_datadist.llmdd": "INFO", "llm_datadist.llmdd.datadist": "ERROR"})
    assert quiet["filter"] == "info,llmdd::datadist=error"
    assert not [r for r in quiet["records"] if r["name"].startswith("llm_datadist.llmdd.datadist")]


def test_llmdd_log_env_wins():
    env = dict(os.environ, LLMDD_LOG="off")
    code = "import llm_datadist, llm_datadist._log_bridge as b; print(b._last_filter)"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "None", (r.stdout, r.stderr)


def test_exit_while_lines_are_routed():
    run_case({"llm_datadist.llmdd": "DEBUG"}, mode="exit")
