"""The one place where aiomp waits on file descriptors and process sentinels.

Waiting goes through anyio, which asks the running event loop (asyncio's
``add_reader``, uvloop's, or trio's IO manager) to wake this task when the
descriptor is ready: no polling loop and no thread per waiter. A cancelled wait
unregisters itself. Callers own their descriptors: they make sure at most one task
waits on each, and call ``forget`` before closing one, so a reused number is never
watched by mistake.
"""

from __future__ import annotations

import anyio

__all__ = ["forget", "wait_readable", "wait_writable"]


async def wait_readable(fd: int) -> None:
    """Return once ``fd`` is readable (data, EOF, or a process sentinel that fired)."""
    await anyio.wait_readable(fd)


async def wait_writable(fd: int) -> None:
    """Return once ``fd`` can take more bytes."""
    await anyio.wait_writable(fd)


def forget(fd: int) -> None:
    """Tell the event loop that ``fd`` is about to be closed."""
    anyio.notify_closing(fd)
