"""The one place where aiomp waits on file descriptors and process sentinels.

Waiting goes through the running event loop (asyncio's or uvloop's selector, or
trio's IO manager, reached through anyio), which wakes the waiter when the
descriptor is ready: no polling loop and no thread per waiter. A cancelled wait
unregisters itself. Callers own their descriptors: they make sure at most one task
waits on each, and call ``forget`` before closing one, so a reused number is never
watched by mistake.

anyio, sniffio and asyncio are imported where they are used: the blocking
helpers serve children (workers) that start without them.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
import time
from collections.abc import Callable

TYPE_CHECKING = False  # a worker does not import typing (start-up time)

if TYPE_CHECKING:
    import anyio

__all__ = [
    "SharedWait",
    "block_until",
    "close",
    "close_socket",
    "deadline_after",
    "forget",
    "keep_blocking",
    "wait_readable",
    "wait_writable",
    "watch_readable",
]


async def wait_readable(fd: int) -> None:
    """Return once ``fd`` is readable (data, EOF, or a process sentinel that fired)."""
    import anyio

    await anyio.wait_readable(fd)


async def wait_writable(fd: int) -> None:
    """Return once ``fd`` can take more bytes."""
    import anyio

    await anyio.wait_writable(fd)


async def watch_readable(fd: int, callback: Callable[[], bool]) -> None:
    """Call ``callback()`` each time ``fd`` is readable, until it returns False.

    Returns then, or when cancelled. On asyncio and uvloop the callback is a
    persistent reader of the selector, so a stream of messages costs neither a
    task switch nor a registration per message; on trio it runs in this task.
    The callback must not raise.
    """
    import asyncio

    import anyio
    import sniffio

    if sniffio.current_async_library() != "asyncio":
        while True:
            await anyio.wait_readable(fd)
            if not callback():
                return
    loop = asyncio.get_running_loop()
    finished = anyio.Event()
    # The callback runs in a copy of this task's context, outside any task: say which
    # library runs it, or sniffio (and so anyio, should the callback start a task) cannot
    # tell under a plain asyncio.run(), where only a running task tells it.
    sniffio.current_async_library_cvar.set("asyncio")

    def ready() -> None:
        if not callback():
            loop.remove_reader(fd)
            finished.set()

    loop.add_reader(fd, ready)
    try:
        await finished.wait()
    finally:
        loop.remove_reader(fd)


class SharedWait:
    """Lets any number of tasks of one process await the same descriptor.

    The event loops allow one waiter per descriptor and direction: the first
    task waits on the descriptor, the others on an event it sets when it wakes
    (or is cancelled). Every waiter must then re-check what it waits for.
    """

    __slots__ = ("_followers", "_leading", "blocking", "fd", "writable")

    def __init__(self, fd: int, writable: bool = False, blocking: bool = False) -> None:
        self.fd = fd
        self.writable = writable
        self.blocking = blocking  # keep the descriptor in blocking mode (see keep_blocking)
        self._leading = False
        self._followers: anyio.Event | None = None  # made by the first follower

    async def wait(self) -> None:
        """Return once the descriptor may be ready (spurious returns are possible)."""
        import anyio

        if self._leading:
            if self._followers is None:
                self._followers = anyio.Event()
            await self._followers.wait()
            return
        self._leading = True
        try:
            if self.writable:
                await anyio.wait_writable(self.fd)
            else:
                await anyio.wait_readable(self.fd)
        finally:
            self._leading = False
            if self.blocking:
                keep_blocking(self.fd)
            followers, self._followers = self._followers, None
            if followers is not None:
                followers.set()


def keep_blocking(fd: int) -> None:
    """Undo uvloop's switch of a watched descriptor to non-blocking mode.

    Sockets that blocking code in other processes reads (pipes, queues) stay in
    blocking mode, so that code sleeps in the kernel, the fastest wake-up; the
    awaiting side passes ``MSG_DONTWAIT`` on each call instead.
    """
    with contextlib.suppress(OSError):
        if not os.get_blocking(fd):
            os.set_blocking(fd, True)


def forget(fd: int) -> None:
    """Tell the event loop that ``fd`` is about to be closed."""
    import anyio

    anyio.notify_closing(fd)


def close(fd: int) -> None:
    """Close ``fd``, first telling a running event loop (if any) to stop watching it."""
    with contextlib.suppress(RuntimeError):
        _notify_if_watched(fd)
    os.close(fd)


def close_socket(sock: socket.socket) -> None:
    """Close a socket, first telling a running event loop (if any) to stop watching it."""
    with contextlib.suppress(RuntimeError, OSError):
        _notify_if_watched(sock.fileno())
    sock.close()


def _notify_if_watched(fd: int) -> None:
    """``anyio.notify_closing(fd)`` if an event loop runs in this thread; else nothing."""
    anyio = sys.modules.get("anyio")
    if anyio is None:
        return  # nothing in this process waits through anyio (a child without it)
    import sniffio

    try:
        sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return
    anyio.notify_closing(fd)


def deadline_after(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` deadline of a blocking wait of ``timeout`` seconds."""
    return None if timeout is None else time.monotonic() + timeout


_MAX_POLL_MS = 2**31 - 1


def block_until(fd: int, writable: bool, deadline: float | None) -> bool:
    """Block the calling thread until ``fd`` is ready or ``deadline`` passes.

    For the blocking methods, which every process may call on descriptors that
    are non-blocking (they are shared, and an event loop may watch them).
    Returns False on timeout.
    """
    poller = select.poll()
    poller.register(fd, select.POLLOUT if writable else select.POLLIN)
    while True:
        if deadline is None:
            wait_ms = None
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bool(poller.poll(0))  # a deadline already reached still looks once
            # poll() takes at most about 24.8 days; a longer wait takes several.
            wait_ms = min(max(1, int(remaining * 1000 + 0.999)), _MAX_POLL_MS)
        if poller.poll(wait_ms):
            return True
