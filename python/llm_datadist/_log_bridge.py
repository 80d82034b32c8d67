"""Routes libllmdd's log lines into Python's ``logging``.

With a library that has ``llmdd_set_log_callback``, every line the library
emits (from whatever thread) becomes a record of the logger
``llm_datadist.llmdd.<module>`` (e.g. ``llm_datadist.llmdd.transport.tcp``),
at the matching level (TRACE is level 5). The library's own filter
(``llmdd_set_log_filter``) follows the effective level of the
``llm_datadist.llmdd`` logger and of its children that have a level of their
own (``llm_datadist.llmdd.transport`` -> ``llmdd::transport=...``), read at
import and at each ``LLMDataDist.init`` (so disabled lines never cross into
Python), unless ``LLMDD_LOG`` is set, which then wins. With an older library the lines go
to stderr as before.
"""

from __future__ import annotations

import logging
import os
from typing import Optional

from llm_datadist import _native

NATIVE_LOGGER = "llm_datadist.llmdd"
TRACE = 5

_LEVELS = {
    _native.LOG_LEVEL_ERROR: logging.ERROR,
    _native.LOG_LEVEL_WARN: logging.WARNING,
    _native.LOG_LEVEL_INFO: logging.INFO,
    _native.LOG_LEVEL_DEBUG: logging.DEBUG,
    _native.LOG_LEVEL_TRACE: TRACE,
}
_installed = False
_last_filter: Optional[str] = None


def _on_log(level: int, module: Optional[bytes], message: Optional[bytes], _user: Optional[int]) -> None:
    try:
        name = NATIVE_LOGGER
        if module:
            mod = module.decode("utf-8", "replace").replace("::", ".")
            if mod.startswith("llmdd."):
                mod = mod[len("llmdd."):]
            elif mod == "llmdd":
                mod = ""
            if mod:
                name = f"{NATIVE_LOGGER}.{mod}"
        lvl = _LEVELS.get(level, logging.INFO)
        logger = logging.getLogger(name)
        if logger.isEnabledFor(lvl):
            logger.log(lvl, "%s", (message or b"").decode("utf-8", "replace"))
    except BaseException:  # noqa: BLE001 - nothing may propagate into the library
        pass


#: The C callback (lives as long as the module; uninstalled at exit before it can dangle).
_LOG_C = _native.LOG_CALLBACK_FN(_on_log)


def filter_for_level(level: int) -> str:
    """The library filter that lets through what a logger at ``level`` would emit."""
    if level <= TRACE:
        return "trace"
    if level <= logging.DEBUG:
        return "debug"
    if level <= logging.INFO:
        return "info"
    if level <= logging.WARNING:
        return "warn"
    if level <= logging.ERROR:
        return "error"
    return "off"


def current_filter() -> str:
    """The library filter matching the Python loggers: the level of ``llm_datadist.llmdd``,
    plus one ``llmdd::MODULE=LEVEL`` directive per child logger that has its own level."""
    parts = [filter_for_level(logging.getLogger(NATIVE_LOGGER).getEffectiveLevel())]
    prefix = NATIVE_LOGGER + "."
    for name, lg in sorted(logging.Logger.manager.loggerDict.items()):
        if name.startswith(prefix) and isinstance(lg, logging.Logger) and lg.level != logging.NOTSET:
            module = "llmdd::" + name[len(prefix):].replace(".", "::")
            parts.append(f"{module}={filter_for_level(lg.level)}")
    return ",".join(parts)


def sync_filter() -> None:
    """Sets the library's filter from the Python loggers (unless ``LLMDD_LOG`` is set)."""
    global _last_filter
    if not _installed or os.environ.get("LLMDD_LOG"):
        return
    f = current_filter()
    if f == _last_filter:
        return
    if _native.lib.llmdd_set_log_filter(f.encode()) != _native.SUCCESS:
        logging.getLogger("llm_datadist").warning("libllmdd refused log filter %r: %s", f, _native.last_error())
        f = f.split(",")[0]  # the overall level alone is always valid
        if _native.lib.llmdd_set_log_filter(f.encode()) != _native.SUCCESS:
            return
    _last_filter = f


def install() -> bool:
    """Installs the callback if the library has one; returns whether it did."""
    global _installed
    if _installed or not (_native.has("llmdd_set_log_callback") and _native.has("llmdd_set_log_filter")):
        return _installed
    if _native.lib.llmdd_set_log_callback(_LOG_C, None) == _native.SUCCESS:
        _installed = True
        sync_filter()
    return _installed


def uninstall() -> None:
    """Restores the library's stderr logging (no call of the callback after this returns)."""
    global _installed
    if _installed:
        _native.lib.llmdd_set_log_callback(_native.LOG_CALLBACK_FN(), None)
        _installed = False
