"""Argument checks with the reference package's exception types.

A value of the wrong type raises ``TypeError``; an integer outside the range
of its C type raises ``ValueError``. (Checks of a value's meaning, such as
"timeout must be > 0", raise ``LLMException(LLM_PARAM_INVALID)`` through
:func:`llm_datadist.status.raise_if_false`, as in the reference.)
"""

from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence, Tuple, Type, Union

_ClassOrClasses = Union[Type[Any], Tuple[Type[Any], ...]]

_LIMITS = {
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}


def _names(classes: Tuple[Type[Any], ...]) -> str:
    return ", ".join(c.__name__ for c in classes)


def check_type(
    name: str,
    value: Any,
    classes: _ClassOrClasses,
    inner: Optional[_ClassOrClasses] = None,
    allow_none: bool = True,
) -> None:
    """``TypeError`` unless ``value`` is one of ``classes`` (or None when allowed).

    With ``inner``, every element of ``value`` must be an instance of it.
    ``bool`` is not accepted where only ``int`` is.
    """
    if value is None and allow_none:
        return
    cs = classes if isinstance(classes, tuple) else (classes,)
    if not isinstance(value, cs) or (isinstance(value, bool) and bool not in cs and int in cs):
        raise TypeError(f"{name} only supports {_names(cs)}, but got {type(value).__name__}.")
    if inner is not None:
        ins = inner if isinstance(inner, tuple) else (inner,)
        for i, v in enumerate(value):
            if not isinstance(v, ins) or (isinstance(v, bool) and bool not in ins and int in ins):
                raise TypeError(f"{name}[{i}] only supports {_names(ins)}, but got {type(v).__name__}.")


def check_int(name: str, value: Any, ctype: str) -> None:
    """``TypeError`` unless ``value`` is an int, ``ValueError`` unless it fits ``ctype``."""
    check_type(name, value, int, allow_none=False)
    lo, hi = _LIMITS[ctype]
    if not lo <= value <= hi:
        raise ValueError(f"{name}'s value {value} is out of range, it is not a {ctype} value.")


def check_ints(name: str, values: Iterable[Any], ctype: str) -> None:
    """:func:`check_int` for every element."""
    for i, v in enumerate(values):
        check_int(f"{name}[{i}]", v, ctype)


def check_str_dict(name: str, value: Any) -> None:
    """``TypeError`` unless ``value`` is a dict of str to str."""
    check_type(name, value, dict, allow_none=False)
    for k, v in value.items():
        if not isinstance(k, str):
            raise TypeError(f"{name} keys only support str, but got {type(k).__name__}.")
        if not isinstance(v, str):
            raise TypeError(f"{name}[{k!r}] only supports str, but got {type(v).__name__}.")


def check_int_list(name: str, value: Any, ctype: str, allow_none: bool = False) -> Sequence[int]:
    """A list or tuple of ints that fit ``ctype`` (``TypeError`` / ``ValueError`` otherwise)."""
    if value is None and allow_none:
        return ()
    check_type(name, value, (list, tuple), int, allow_none=False)
    check_ints(name, value, ctype)
    return value
