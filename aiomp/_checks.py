"""Argument checks shared by the public classes.

Each raises ``TypeError`` for a value of the wrong type and ``ValueError`` for a
value out of range, naming the parameter, before anything has changed state.
"""

from __future__ import annotations

import functools
import inspect
import math
import multiprocessing
import multiprocessing.context
import multiprocessing.synchronize
import operator
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "SEM_VALUE_MAX",
    "blocking_timeout",
    "check_args",
    "check_block",
    "check_kwds",
    "check_timeout",
    "clamp_timeout",
    "context",
    "default_context",
    "is_async",
    "non_negative_int",
    "positive_int",
    "semaphore_value",
]

SEM_VALUE_MAX: int = multiprocessing.synchronize.SEM_VALUE_MAX  # type: ignore[attr-defined]  # a semaphore's top count


def check_timeout(timeout: float | None, name: str = "timeout") -> None:
    """A timeout is None (wait for ever) or a non-negative number of seconds."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout) or timeout < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, not {timeout!r}")


def clamp_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """A timeout for a wait, as the standard library's primitives take it: None (wait for
    ever) or a number of seconds, a negative number counting as 0 (``poll(deadline - now)``
    is common code). NaN is refused with ``ValueError``, a non-number with ``TypeError``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(timeout).__name__}")
    if math.isnan(timeout):
        raise ValueError(f"{name} must be a number of seconds, not {timeout!r}")
    return timeout if timeout > 0 else 0.0


def blocking_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    """``clamp_timeout``, with inf made None: what SemLock, poll() and the deadline
    helpers take for "wait for ever" (they fail on inf). The primitives' waits, blocking
    and awaitable, all take their timeout through here."""
    timeout = clamp_timeout(timeout, name)
    return None if timeout == math.inf else timeout


def check_block(block: object) -> None:
    """``block`` is a bool (or any integer, which the standard library's SemLock takes too)."""
    try:
        operator.index(block)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"block must be a bool, not {type(block).__name__}") from None


def positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a positive int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def non_negative_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {value}")
    return value


def semaphore_value(name: str, value: object) -> int:
    """A semaphore's initial count: an int from 0 to the platform's ``SEM_VALUE_MAX``."""
    count = non_negative_int(name, value)
    if count > SEM_VALUE_MAX:
        raise ValueError(f"{name} must be at most {SEM_VALUE_MAX}, not {count}")
    return count


def check_args(args: object) -> tuple[Any, ...]:
    if type(args) is tuple:  # the usual case, without the ABC check
        return args
    if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
        raise TypeError(f"args must be a tuple of arguments, not {type(args).__name__}")
    return tuple(args)


def check_kwds(kwds: object, name: str = "kwds") -> dict[str, Any]:
    if not kwds and type(kwds) is dict:  # the usual case: none (a fresh dict: callers may keep theirs)
        return {}
    if not isinstance(kwds, Mapping):
        raise TypeError(f"{name} must be a mapping of keyword arguments, not {type(kwds).__name__}")
    for key in kwds:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be str, not {type(key).__name__}")
    return dict(kwds)


def default_context() -> multiprocessing.context.BaseContext:
    """forkserver where it exists (never fork a process that runs an event loop), else spawn."""
    if sys.platform != "win32" and "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def context(value: object) -> multiprocessing.context.BaseContext:
    """A start-method name, a multiprocessing context, or None for aiomp's default."""
    if value is None:
        return default_context()
    if isinstance(value, multiprocessing.context.BaseContext):
        return value
    if isinstance(value, str):
        methods = multiprocessing.get_all_start_methods()
        if value not in methods:
            raise ValueError(f"context must be one of {methods} or None, not {value!r}")
        return multiprocessing.get_context(value)
    raise TypeError(f"context must be a start method name or None, not {type(value).__name__}")


_ASYNC_CACHE: dict[Callable[..., Any], bool] = {}


def is_async(func: Callable[..., Any]) -> bool:
    """Whether calling ``func`` makes a coroutine (remembered: inspect is slow)."""
    try:
        return _ASYNC_CACHE[func]
    except (KeyError, TypeError):
        pass
    target = func
    while isinstance(target, functools.partial):
        target = target.func
    answer = inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(type(target).__call__)
    try:
        if len(_ASYNC_CACHE) >= 256:
            _ASYNC_CACHE.clear()
        _ASYNC_CACHE[func] = answer
    except TypeError:  # unhashable
        pass
    return answer
