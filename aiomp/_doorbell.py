"""Awaiting a POSIX semaphore without a thread and without polling.

A ``multiprocessing`` semaphore (``SemLock``) has no file descriptor, so an event
loop cannot wait on it. Each aiomp primitive pairs its semaphore with:

* a **doorbell**: an ``eventfd`` (a pipe where there is none) that any process may
  ring and that an event loop can wait on;
* a **waiter count**: a second semaphore, counting the async waiters of every
  process (``release`` adds one, ``acquire(False)`` takes one away, both atomic).

An async waiter counts itself in, tries the semaphore, and waits on the doorbell
until a try succeeds. ``release`` rings the doorbell after posting the semaphore,
but only while somebody is counted in, so uncontended use costs one extra read of
a counter. Blocking waiters (threads, worker code) wait on the semaphore itself,
as in the standard library, and need no bell.

No wake-up is lost: a waiter counts itself in *before* its try, so a release
that the try missed sees the count and rings. A woken waiter drains the bell
before trying, so stale rings cost one spurious wake-up, never a busy loop. When
a waiter leaves (with the semaphore, by timeout or by cancellation) and the
semaphore still has units while others wait, it rings again: the units its drain
may have swallowed are passed on. Cancellation can strike only while waiting on
the bell, before anything is taken, so a cancelled wait holds nothing and leaves
no thread behind.

Several tasks of one process may wait on one doorbell: the first waits on the
descriptor, the rest on an event the first sets when it wakes.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Callable
from multiprocessing import context, reduction, util
from typing import Any

import anyio
import anyio.lowlevel

from . import _fd

__all__ = ["Doorbell", "acquire_async", "uncancellable"]

_EVENTFD = hasattr(os, "eventfd")


class Doorbell:
    """A wake-up signal that every process holding a copy can ring and await."""

    def __init__(self, fds: tuple[int, int] | None = None) -> None:
        if fds is None:
            if _EVENTFD:
                fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
                fds = (fd, fd)
            else:  # pragma: no cover - non-Linux
                r, w = os.pipe()
                os.set_blocking(r, False)
                os.set_blocking(w, False)
                fds = (r, w)
        self._rfd, self._wfd = fds
        self._waiting = _fd.SharedWait(self._rfd)
        self._closer = weakref.finalize(self, _close_fds, *set(fds))
        util.register_after_fork(self, Doorbell._after_fork)

    def _after_fork(self) -> None:
        self._waiting = _fd.SharedWait(self._rfd)

    def ring(self) -> None:
        """Wake the processes and tasks waiting on this bell (never blocks)."""
        try:
            if _EVENTFD:
                os.eventfd_write(self._wfd, 1)
            else:  # pragma: no cover - non-Linux
                os.write(self._wfd, b"\0")
        except BlockingIOError:
            pass  # full of rings already: the waiters will wake

    def drain(self) -> None:
        """Take every pending ring, so they cause no further wake-ups."""
        try:
            if _EVENTFD:
                os.eventfd_read(self._rfd)
            else:  # pragma: no cover - non-Linux
                while os.read(self._rfd, 4096):
                    pass
        except BlockingIOError:
            pass

    async def wait(self) -> None:
        """Return after the bell may have rung (spurious returns are possible)."""
        await self._waiting.wait()

    def __reduce__(self) -> tuple[Callable[..., Doorbell], tuple[Any, ...]]:
        context.assert_spawning(self)
        if self._rfd == self._wfd:
            return _rebuild, (reduction.DupFd(self._rfd), None)
        return _rebuild, (reduction.DupFd(self._rfd), reduction.DupFd(self._wfd))  # pragma: no cover


def _rebuild(rfd: Any, wfd: Any) -> Doorbell:
    r = rfd.detach()
    return Doorbell((r, r if wfd is None else wfd.detach()))


def _close_fds(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            _fd.close(fd)


async def acquire_async(
    try_acquire: Callable[[], bool],
    value: Callable[[], int],
    waiters: Any,
    bell: Doorbell,
    timeout: float | None,
) -> bool:
    """Await ``try_acquire()`` succeeding, up to ``timeout`` seconds; see the module doc.

    ``value()`` reads the semaphore's free units and ``waiters`` is the SemLock
    counting async waiters. Returns True once acquired, False on timeout.
    """
    await anyio.lowlevel.checkpoint()  # a cancellation and scheduling point, before anything is taken
    if try_acquire():
        return True
    if timeout is not None and timeout <= 0:
        return False
    waiters.release()  # count me in before the next try
    acquired = False
    try:
        with anyio.move_on_after(timeout):
            while not (acquired := try_acquire()):
                await bell.wait()
                bell.drain()
    finally:
        waiters.acquire(False)  # count me out
        if waiters._get_value() and value() > 0:
            bell.ring()  # pass on units a drain of mine may have swallowed
    return acquired


async def uncancellable(step: Callable[[], Any]) -> None:
    """Await ``step()`` to completion, even through cancellation, then re-raise it.

    For the steps that must finish once begun, such as a condition's waiter taking
    its lock back. anyio's shield covers anyio and trio cancellation; a native
    ``asyncio.Task.cancel()`` still raises in the awaiting task, so it is caught,
    the step retried, and the cancellation raised once the step is done.
    """
    pending: BaseException | None = None
    with anyio.CancelScope(shield=True):
        while True:
            try:
                await step()
                break
            except anyio.get_cancelled_exc_class() as cancelled:
                pending = cancelled
    if pending is not None:
        raise pending
