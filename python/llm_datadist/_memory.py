"""Addresses of user memory: ints, numpy arrays and CPU torch tensors.

The reference takes device addresses as ints (``tensor.data_ptr()``). Here an
address may also be given as the array or tensor itself; the package then
checks that it is contiguous host memory large enough for one tensor of the
cache and keeps it alive while the library may touch it. Nothing is copied.
Neither numpy nor torch is imported: arrays are recognised by
``__array_interface__``, tensors by ``data_ptr``/``element_size``/``device``.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple

from llm_datadist._checks import check_int


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "data_ptr") and hasattr(obj, "element_size")


def _array_address(name: str, obj: Any, nbytes: Optional[int]) -> int:
    iface = obj.__array_interface__
    addr, readonly = iface["data"]
    if readonly:
        raise ValueError(f"{name} is a read-only array; the library may write into it")
    shape = tuple(iface["shape"])
    itemsize = int(iface["typestr"][2:])
    strides = iface.get("strides")
    if strides is not None:
        expect, step = [], itemsize
        for dim in reversed(shape):
            expect.append(step)
            step *= dim
        if tuple(reversed(expect)) != tuple(strides) and 0 not in shape:
            raise ValueError(f"{name} is not a C-contiguous array")
    size = itemsize
    for dim in shape:
        size *= dim
    if nbytes is not None and size < nbytes:
        raise ValueError(f"{name} has {size} bytes, less than the {nbytes} bytes of one tensor of the cache")
    if addr == 0:
        raise ValueError(f"{name} has no data (address 0)")
    return int(addr)


def _tensor_address(name: str, obj: Any, nbytes: Optional[int]) -> int:
    device = getattr(getattr(obj, "device", None), "type", "cpu")
    if device != "cpu":
        raise ValueError(
            f"{name} is a torch tensor on {device!r}; llmdd moves host memory, pass a CPU tensor or its address"
        )
    if not obj.is_contiguous():
        raise ValueError(f"{name} is not a contiguous tensor")
    size = obj.numel() * obj.element_size()
    if nbytes is not None and size < nbytes:
        raise ValueError(f"{name} has {size} bytes, less than the {nbytes} bytes of one tensor of the cache")
    addr = int(obj.data_ptr())
    if addr == 0:
        raise ValueError(f"{name} has no data (address 0)")
    return addr


def address_of(name: str, obj: Any, nbytes: Optional[int] = None) -> Tuple[int, bool]:
    """``(address, is_object)`` of an int, a numpy array or a CPU torch tensor.

    ``nbytes``: the least size an array or tensor must have. Ints are taken
    as they are (their memory is the caller's responsibility, as in the
    reference). Other types raise ``TypeError``.
    """
    if isinstance(obj, int) and not isinstance(obj, bool):
        check_int(name, obj, "uint64")
        return obj, False
    if _is_torch_tensor(obj):
        return _tensor_address(name, obj, nbytes), True
    if hasattr(obj, "__array_interface__"):
        return _array_address(name, obj, nbytes), True
    raise TypeError(f"{name} only supports int, numpy.ndarray or a CPU torch.Tensor, but got {type(obj).__name__}.")


def addresses_of(name: str, objs: Any, nbytes: Optional[int] = None) -> Tuple[List[int], List[Any]]:
    """Addresses of a list/tuple of memory objects, and the objects to keep alive."""
    if not isinstance(objs, (list, tuple)):
        raise TypeError(f"{name} only supports list, tuple, but got {type(objs).__name__}.")
    addrs: List[int] = []
    keep: List[Any] = []
    for i, o in enumerate(objs):
        addr, is_obj = address_of(f"{name}[{i}]", o, nbytes)
        addrs.append(addr)
        if is_obj:
            keep.append(o)
    return addrs, keep


def all_ints(objs: Sequence[Any]) -> bool:
    """Whether every element is a plain int (the reference's only accepted form)."""
    return all(isinstance(o, int) and not isinstance(o, bool) for o in objs)
