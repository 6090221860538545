"""Blocking calls that may never return (a hung pool's ``join``) run in daemon threads.

``anyio.to_thread`` threads are not daemons: one stuck in a hung library call would keep the
interpreter from exiting. A daemon thread can be abandoned after its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is None:
        fut.set_result(value)
    else:
        fut.set_exception(exc)


async def in_daemon_thread(fn: Callable[[], T], timeout: float) -> T:
    """Run ``fn()`` in a new daemon thread; raise ``TimeoutError`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def target() -> None:
        value: Any = None
        exc: BaseException | None = None
        try:
            value = fn()
        except BaseException as e:
            exc = e
        with contextlib.suppress(RuntimeError):  # loop closed: the caller gave up long ago
            loop.call_soon_threadsafe(settle, fut, value, exc)

    threading.Thread(target=target, name=f"bench-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    with anyio.fail_after(timeout):
        return await fut
