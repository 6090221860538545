"""The one place where aiomp waits on file descriptors and process sentinels.

Waiting goes through the running event loop (asyncio's or uvloop's selector, or
trio's IO manager, reached through anyio), which wakes the waiter when the
descriptor is ready: no polling loop and no thread per waiter. A cancelled wait
unregisters itself. Callers own their descriptors: they make sure at most one task
waits on each, and call ``forget`` before closing one, so a reused number is never
watched by mistake.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import sniffio

__all__ = ["forget", "wait_readable", "wait_writable", "watch_readable"]


async def wait_readable(fd: int) -> None:
    """Return once ``fd`` is readable (data, EOF, or a process sentinel that fired)."""
    await anyio.wait_readable(fd)


async def wait_writable(fd: int) -> None:
    """Return once ``fd`` can take more bytes."""
    await anyio.wait_writable(fd)


async def watch_readable(fd: int, callback: Callable[[], bool]) -> None:
    """Call ``callback()`` each time ``fd`` is readable, until it returns False.

    Returns then, or when cancelled. On asyncio and uvloop the callback is a
    persistent reader of the selector, so a stream of messages costs neither a
    task switch nor a registration per message; on trio it runs in this task.
    The callback must not raise.
    """
    if sniffio.current_async_library() != "asyncio":
        while True:
            await anyio.wait_readable(fd)
            if not callback():
                return
    loop = asyncio.get_running_loop()
    finished = anyio.Event()

    def ready() -> None:
        if not callback():
            loop.remove_reader(fd)
            finished.set()

    loop.add_reader(fd, ready)
    try:
        await finished.wait()
    finally:
        loop.remove_reader(fd)


def forget(fd: int) -> None:
    """Tell the event loop that ``fd`` is about to be closed."""
    anyio.notify_closing(fd)
