"""Status codes and the exception raised for library refusals.

Mirrors ``llm_datadist.status`` of CANN's package: :class:`LLMStatusCode`
(an ``IntEnum`` whose values are the documented ``LLM_*`` codes, the same
integers libllmdd returns), :class:`LLMException` (a ``RuntimeError`` with a
``status_code``) and :class:`Status`.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from llm_datadist import _native

__all__ = ["LLMStatusCode", "LLMException", "Status"]


class LLMStatusCode(IntEnum):
    """Status of an LLM-DataDist call (values as in ``llm_error_codes.h``)."""

    LLM_SUCCESS = 0
    LLM_FAILED = 0xFFFFFFFF
    LLM_PARAM_INVALID = 0x5010B005
    LLM_WAIT_PROCESS_TIMEOUT = 0x5010B001
    LLM_KV_CACHE_NOT_EXIST = 0x5010B002
    LLM_REPEAT_REQUEST = 0x5010B003
    LLM_REQUEST_ALREADY_COMPLETED = 0x5010B004
    LLM_ENGINE_FINALIZED = 0x5010B006
    LLM_NOT_YET_LINK = 0x5010B007
    LLM_ALREADY_LINK = 0x5010B008
    LLM_LINK_FAILED = 0x5010B009
    LLM_UNLINK_FAILED = 0x5010B00A
    LLM_NOTIFY_PROMPT_UNLINK_FAILED = 0x5010B00B
    LLM_CLUSTER_NUM_EXCEED_LIMIT = 0x5010B00C
    LLM_PROCESSING_LINK = 0x5010B00D
    LLM_DEVICE_OUT_OF_MEMORY = 0x5010B00E
    LLM_PREFIX_ALREADY_EXIST = 0x5010B00F
    LLM_PREFIX_NOT_EXIST = 0x5010B010
    LLM_SEQ_LENOVERLIMIT = 0x5010B011
    LLM_NO_FREE_BLOCK = 0x5010B012
    LLM_BLOCKS_OUT_OF_MEMORY = 0x5010B013
    LLM_EXIST_LINK = 0x5010B018
    LLM_FEATURE_NOT_ENABLED = 0x5010B019
    LLM_TIMEOUT = 0x5010B01A
    LLM_LINK_BUSY = 0x5010B01B
    LLM_OUT_OF_MEMORY = 0x5010B01C
    LLM_DEVICE_MEM_ERROR = 507053
    LLM_SUSPECT_REMOTE_ERROR = 507057
    LLM_UNKNOWN_ERROR = -1

    def __str__(self) -> str:
        return f"{self.__class__.__name__}.{self.name}"


class LLMException(RuntimeError):
    """Raised when the library refuses a call; ``status_code`` says why.

    The message carries the library's own explanation (from
    ``llmdd_last_error_message``).
    """

    def __init__(self, *args: Any, status_code: LLMStatusCode = LLMStatusCode.LLM_SUCCESS) -> None:
        super().__init__(*args)
        self._status_code = status_code

    @property
    def status_code(self) -> LLMStatusCode:
        """The status code of the failure."""
        return self._status_code


class Status:
    """A status code with an ``is_ok`` test (kept for compatibility)."""

    def __init__(self, status: LLMStatusCode) -> None:
        self._status_code = status

    def is_ok(self) -> bool:
        """Whether the status is ``LLM_SUCCESS``."""
        return self._status_code == LLMStatusCode.LLM_SUCCESS

    @property
    def status_code(self) -> LLMStatusCode:
        """The status code."""
        return self._status_code


_BY_VALUE = {m.value: m for m in LLMStatusCode if m is not LLMStatusCode.LLM_UNKNOWN_ERROR}


def code_2_status(code: int) -> LLMStatusCode:
    """The :class:`LLMStatusCode` of an integer code; unknown codes map to ``LLM_FAILED``."""
    return _BY_VALUE.get(code, LLMStatusCode.LLM_FAILED)


def check(ret: int, func_name: str) -> None:
    """Raises :class:`LLMException` for a failed libllmdd status.

    Must be called right after the C call, on the same thread: the message is
    the thread's last library error.
    """
    if ret != _native.SUCCESS:
        status = code_2_status(ret)
        raise LLMException(f"{func_name} failed, error code is {status}, {_native.last_error()}", status_code=status)


def raise_if_false(pred: bool, message: str, status_code: LLMStatusCode = LLMStatusCode.LLM_PARAM_INVALID) -> None:
    """Raises :class:`LLMException` (``LLM_PARAM_INVALID`` by default) unless ``pred``.

    The reference package reports its own argument-value checks this way
    rather than with ``ValueError``; llm_datadist keeps the same types.
    """
    if not pred:
        raise LLMException(message, status_code=status_code)
