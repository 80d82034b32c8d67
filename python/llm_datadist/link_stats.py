"""Per-link statistics and link states (llmdd extensions: CANN's package has no such calls).

:meth:`LLMDataDist.link_stats`, :meth:`LLMDataDist.link_state`,
:meth:`LLMDataDist.list_links` and :meth:`LLMDataDist.reset_link_stats`
return and take these types. docs/operating.md says what every counter means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional

from llm_datadist.status import LLMStatusCode, code_2_status

__all__ = ["LinkState", "LinkPath", "LinkInfo", "LinkLatency", "LinkError", "LinkStats"]


class LinkState(Enum):
    """State of the link to one cluster (``LLMDD_LINK_STATE_*``)."""

    UNLINKED = 0
    LINKING = 1
    LINKED = 2
    FAILED = 3


class LinkPath(Enum):
    """How a link moves bytes (``LLMDD_PATH_*``)."""

    SAME_PROCESS = 0
    SAME_HOST = 1
    TCP = 2
    HCCL = 3


@dataclass(frozen=True)
class LinkInfo:
    """One entry of :meth:`LLMDataDist.list_links`."""

    cluster_id: int
    state: LinkState
    #: This side dialled (or is dialling) the link; False: it accepted it.
    dialed: bool
    #: Rank-table comm id (``link``), 0 for ``link_clusters``.
    comm_id: int


@dataclass(frozen=True)
class LinkLatency:
    """Latency of the completed operations of one direction, in nanoseconds.

    ``p50`` and ``p99`` are within 1.6 % (a log-linear histogram); ``max`` is exact.
    """

    count: int
    p50: int
    p99: int
    max: int


@dataclass(frozen=True)
class LinkError:
    """The last failed operation on a link."""

    status: LLMStatusCode
    message: str
    #: When it failed, in nanoseconds since the Unix epoch.
    time_ns: int


@dataclass(frozen=True)
class LinkStats:
    """Counters of one link (:meth:`LLMDataDist.link_stats`), counted since ``since_ns``.

    ``ops`` and ``bytes`` count the operations this side started and
    completed (on the link's ``path``), keyed by ``"pull"`` / ``"push"``; ``errors`` counts its failed
    operations by status. ``served_*`` count the peer's TCP requests this side
    served (same-host and HCCL transfers are one-sided: never counted there).
    """

    cluster_id: int
    state: LinkState
    path: LinkPath
    dialed: bool
    comm_id: int
    linked_ns: int
    since_ns: int
    ops: Dict[str, int]
    bytes: Dict[str, int]
    failed_ops: int
    errors: Dict[LLMStatusCode, int]
    in_flight: int
    latency: Dict[str, LinkLatency]
    served_requests: Dict[str, int]
    served_bytes: Dict[str, int]
    served_refused: int
    last_error: Optional[LinkError] = field(default=None)


_DIRS = ("pull", "push")


def stats_from_c(st, error_slot) -> LinkStats:
    """Builds :class:`LinkStats` from an ``llmdd_link_stats_t``; ``error_slot(code)`` is the C helper."""
    path = LinkPath(st.path)
    errors = {}
    for s in LLMStatusCode:
        slot = error_slot(s.value)
        # Slot 31 holds codes without a slot of their own (none that llmdd returns).
        if s is not LLMStatusCode.LLM_SUCCESS and slot != 31 and st.errors[slot]:
            errors[s] = st.errors[slot]
    last = None
    if st.last_error_status != 0:
        last = LinkError(code_2_status(st.last_error_status), st.last_error_message.decode("utf-8", "replace"),
                         st.last_error_unix_ns)
    return LinkStats(
        cluster_id=st.remote_cluster_id,
        state=LinkState(st.state),
        path=path,
        dialed=bool(st.dialed),
        comm_id=st.comm_id,
        linked_ns=st.linked_unix_ns,
        since_ns=st.since_unix_ns,
        ops={d: sum(st.ops[i]) for i, d in enumerate(_DIRS)},
        bytes={d: sum(st.bytes[i]) for i, d in enumerate(_DIRS)},
        failed_ops=st.failed_ops,
        errors=errors,
        in_flight=st.in_flight,
        latency={d: LinkLatency(st.latency_count[i], st.latency_p50_ns[i], st.latency_p99_ns[i],
                                st.latency_max_ns[i]) for i, d in enumerate(_DIRS)},
        served_requests={d: st.served_requests[i] for i, d in enumerate(_DIRS)},
        served_bytes={d: st.served_bytes[i] for i, d in enumerate(_DIRS)},
        served_refused=st.served_refused,
        last_error=last,
    )
