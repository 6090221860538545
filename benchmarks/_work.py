"""Worker functions for the benchmarks.

They live in an importable module (not ``__main__``) so that spawn and forkserver workers can
unpickle them by reference. ``aiomultiprocess`` only runs coroutine functions, so every function
has an ``async def`` twin named with an ``a`` prefix (see :func:`async_twin`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def nap(seconds: float) -> float:
    """Sleep, so that a warm-up batch spreads over every worker."""
    time.sleep(seconds)
    return seconds


def busy(n: int) -> int:
    """Pure-Python CPU work: about ``n`` loop iterations."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def crash_at(i: int, target: int, seconds: float) -> int:
    """Sleep ``seconds``, then return ``i``; the call with ``i == target`` kills its worker."""
    time.sleep(seconds)
    if i == target:
        os._exit(1)
    return i


def arr_sum(a: Any) -> float:
    """payload: a NumPy array in, a float out (this module imports no NumPy: the array brings it)."""
    return float(a.sum())


def echo(a: Any) -> Any:
    """payload: the array goes back the way it came."""
    return a


def check_echo(sent: Any, got: Any) -> None:
    """In the parent: ``got`` is the array ``sent`` came back as (its shape and first and last items)."""
    if got.shape != sent.shape or got[0] != sent[0] or got[-1] != sent[-1]:
        raise RuntimeError("the array came back different")


async def ainc(x: int) -> int:
    return inc(x)


async def aadd(x: int, y: int) -> int:
    return add(x, y)


async def anap(seconds: float) -> float:
    return nap(seconds)


async def abusy(n: int) -> int:
    return busy(n)


async def acrash_at(i: int, target: int, seconds: float) -> int:
    return crash_at(i, target, seconds)


async def aarr_sum(a: Any) -> float:
    return arr_sum(a)


async def aecho(a: Any) -> Any:
    return echo(a)


def async_twin(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """The ``async def`` version of one of the functions above (for aiomultiprocess)."""
    twin = globals().get("a" + func.__name__)
    if twin is None:
        raise LookupError(f"no async twin for {func.__name__}")
    return twin  # type: ignore[no-any-return]
