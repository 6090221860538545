"""Functions that tests run in worker processes (importable under spawn and forkserver)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Any

STATE: dict[str, Any] = {}


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def kw(a: int, *, b: int = 0) -> tuple[int, int]:
    return a, b


def pid(_: object = None) -> int:
    return os.getpid()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def asleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def araise(message: str) -> None:
    await asyncio.sleep(0)
    raise KeyError(message)


def boom(x: object) -> None:
    raise ValueError(f"boom {x}")


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


def exit_now(code: int = 1) -> None:
    os._exit(code)


def kill_self(_: object = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault(_: object = None) -> None:
    ctypes.string_at(0)


def exit_on(x: int, bad: int) -> int:
    if x == bad:
        os._exit(7)
    return x


def touch(path: str, seconds: float = 0.0) -> str:
    """Record a run by appending to ``path``, after sleeping ``seconds``."""
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return path


def touch_first(path: str, seconds: float) -> str:
    """Record that the task started, then sleep, then record that it finished."""
    Path(path + ".start").write_text("x")
    time.sleep(seconds)
    Path(path + ".end").write_text("x")
    return path


def init_state(value: str) -> None:
    STATE["value"] = value


def get_state(_: object = None) -> Any:
    return STATE.get("value")


def init_fail() -> None:
    raise RuntimeError("initializer failed on purpose")


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


def make_unpicklable(_: object = None) -> Unpicklable:
    return Unpicklable()


class BadInitError(Exception):
    """An exception that pickles but cannot be rebuilt (its __init__ needs two args)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)
        self.b = b


def raise_bad_init(_: object = None) -> None:
    raise BadInitError("first", "second")


def raise_unpicklable(_: object = None) -> None:
    error = RuntimeError("carries an unpicklable payload")
    error.payload = Unpicklable()  # type: ignore[attr-defined]
    raise error


def array_sum(arr: Any) -> float:
    return float(arr.sum())


def echo(x: Any) -> Any:
    return x
