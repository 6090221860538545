"""``Value`` and ``Array``: ctypes objects in shared memory, guarded by an aiomp lock.

As ``multiprocessing.Value`` and ``multiprocessing.Array``, except that the lock
(``get_lock()``) is an aiomp lock, so the event loop can take it without
blocking: ``async with counter.get_lock(): counter.value += 1``.
"""

from __future__ import annotations

import ctypes
import sys
from multiprocessing import sharedctypes
from typing import Any

from .synchronize import Lock, RLock

__all__ = ["Array", "Value"]


def _lock(lock: object) -> Lock | RLock | None:
    if lock is True or lock is None:
        return RLock()
    if lock is False:
        return None
    if isinstance(lock, (Lock, RLock)):
        return lock
    raise TypeError(f"lock must be True, False, an aiomp.Lock or an aiomp.RLock, not {type(lock).__name__}")


def _typecode(typecode_or_type: object) -> Any:
    """The ctypes type ``typecode_or_type`` stands for."""
    codes: dict[str, Any] = sharedctypes.typecode_to_type  # type: ignore[attr-defined]
    if isinstance(typecode_or_type, str):
        if typecode_or_type not in codes:
            raise ValueError(
                f"typecode_or_type must be one of {sorted(codes)} or a ctypes type, not {typecode_or_type!r}"
            )
        return codes[typecode_or_type]
    if not (
        isinstance(typecode_or_type, type) and issubclass(typecode_or_type, (ctypes._SimpleCData, ctypes.Structure))
    ):
        raise TypeError(f"typecode_or_type must be an array typecode or a ctypes type, not {typecode_or_type!r}")
    return typecode_or_type


def Value(typecode_or_type: Any, *args: Any, lock: Any = True) -> Any:
    """A ctypes object in shared memory, with a lock unless ``lock=False``.

    ``lock=True`` (the default) makes a new ``aiomp.RLock``; an ``aiomp.Lock`` or
    ``aiomp.RLock`` may be passed to share one. The result has ``.value``,
    ``get_lock()``, ``acquire()``/``release()`` and ``with``.
    """
    _typecode(typecode_or_type)
    guard = _lock(lock)
    obj = sharedctypes.RawValue(typecode_or_type, *args)
    if guard is None:
        return obj
    return sharedctypes.synchronized(obj, guard)  # type: ignore[call-overload]


def Array(typecode_or_type: Any, size_or_initializer: Any, *, lock: Any = True) -> Any:
    """A ctypes array in shared memory, with a lock unless ``lock=False``.

    ``size_or_initializer`` is a length (zero-filled) or a sequence of initial
    values. Locking is as for ``Value``; the result supports indexing, slicing,
    ``len()`` and ``get_lock()``.
    """
    ctype = _typecode(typecode_or_type)
    if isinstance(size_or_initializer, bool) or not isinstance(size_or_initializer, int):
        try:
            len(size_or_initializer)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"size_or_initializer must be an int or a sequence, not {type(size_or_initializer).__name__}"
            ) from None
    elif size_or_initializer < 0:
        raise ValueError(f"size_or_initializer must not be negative, not {size_or_initializer}")
    elif size_or_initializer * ctypes.sizeof(ctype) > sys.maxsize:  # ctypes' limit on an array's bytes
        most = sys.maxsize // ctypes.sizeof(ctype)
        raise ValueError(f"size_or_initializer must be at most {most} for {ctype.__name__}, not {size_or_initializer}")
    guard = _lock(lock)
    try:
        obj = sharedctypes.RawArray(typecode_or_type, size_or_initializer)
    except TypeError as error:  # an initial value the type cannot hold
        raise TypeError(f"size_or_initializer must hold {ctype.__name__} values: {error}") from None
    if guard is None:
        return obj
    return sharedctypes.synchronized(obj, guard)  # type: ignore[call-overload]


Value.__module__ = "aiomp"
Array.__module__ = "aiomp"
