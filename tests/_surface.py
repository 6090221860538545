"""Functions that tests/test_untested_surface.py runs in workers and children.

Module level, so spawn and forkserver children can import them.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

BROKEN_EXIT = 7  # a child whose barrier wait was broken exits with this
_BARRIER: Any = None


def keep_barrier(barrier: Any) -> None:
    """Pool initializer: a barrier cannot travel as a task argument, only at start."""
    global _BARRIER
    _BARRIER = barrier


def meet(_: object) -> tuple[int, int]:
    """Wait at the initializer's barrier; every party must be in its own worker at once."""
    return os.getpid(), _BARRIER.wait(timeout=30)


def pid(_: object = None) -> int:
    return os.getpid()


async def loop_library() -> tuple[int, str]:
    """This process, and the async library that anyio finds running this coroutine."""
    import anyio
    import sniffio

    await anyio.sleep(0)
    return os.getpid(), sniffio.current_async_library()


async def touch(path: str) -> None:
    """An async target: proves it ran by writing ``path``."""
    import anyio

    await anyio.sleep(0)
    with open(path, "w") as out:
        out.write(str(os.getpid()))


def exit_now(code: int) -> None:
    os._exit(code)


def wait_at_barrier(barrier: Any) -> None:
    """Block at the barrier; exit with BROKEN_EXIT if it breaks, 0 if it lets us through."""
    try:
        barrier.wait(timeout=30)
    except threading.BrokenBarrierError:
        sys.exit(BROKEN_EXIT)


def abort_when_waited_on(barrier: Any, waiting: int) -> None:
    """Abort the barrier once ``waiting`` parties wait at it (the parent's ``await_``)."""
    deadline = time.monotonic() + 30
    while barrier.n_waiting < waiting:
        if time.monotonic() > deadline:
            sys.exit(1)
        time.sleep(0.005)
    barrier.abort()


def wait_for_event(event: Any) -> None:
    if not event.wait(30):
        sys.exit(1)


def report_ends(conn: Any, other: Any = None) -> None:
    """Send what this process thinks of each end's direction, through ``conn``."""
    ends = [conn] if other is None else [conn, other]
    conn.send([(end.readable, end.writable) for end in ends])
