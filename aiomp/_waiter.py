"""The running loop's own cheap primitives, for the pool's per-call path.

anyio's ``Event`` looks up the running library on every use; a pool call needs one
wait per call, so it takes the loop's own objects once (when the pool is entered):

* ``event_class()``: asyncio's or trio's ``Event`` (anyio's under another library).
* ``waiter_class()``: a one-shot ``Waiter``. The backend calls ``done(ok, value)`` on
  the loop thread, once; one task awaits ``wait()`` for ``(ok, value)``. Under asyncio
  it is one future; under trio the waiting task is parked and rescheduled directly.
  A ``done`` after the wait was cancelled is ignored.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import sniffio

__all__ = ["AnyioWaiter", "Event", "Waiter", "event_class", "waiter_class"]


class Event(Protocol):
    def set(self) -> None: ...
    def is_set(self) -> bool: ...
    async def wait(self) -> Any: ...


class Waiter(Protocol):
    def done(self, ok: bool, value: Any) -> None: ...
    def wait(self) -> Awaitable[tuple[bool, Any]]: ...


def event_class() -> Callable[[], Event]:
    """The running loop's own event class."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        return asyncio.Event
    if library == "trio":
        import trio

        return trio.Event
    return anyio.Event


def waiter_class() -> Callable[[], Waiter]:
    """The running loop's ``Waiter`` class."""
    library = sniffio.current_async_library()
    if library == "asyncio":
        return _AsyncioWaiter
    if library == "trio":
        return _trio_waiter()
    return AnyioWaiter


class _AsyncioWaiter:
    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()

    def done(self, ok: bool, value: Any) -> None:
        if not self.future.done():  # cancelled: nobody waits
            self.future.set_result((ok, value))

    def wait(self) -> Awaitable[tuple[bool, Any]]:
        return self.future


class AnyioWaiter:
    """Any other anyio backend: an anyio event and the outcome beside it."""

    __slots__ = ("event", "outcome")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.outcome: tuple[bool, Any] | None = None

    def done(self, ok: bool, value: Any) -> None:
        if self.outcome is None:
            self.outcome = (ok, value)
            self.event.set()

    async def wait(self) -> tuple[bool, Any]:
        await self.event.wait()
        assert self.outcome is not None
        return self.outcome


_ABORTED = (False, None)


@functools.cache
def _trio_waiter() -> Callable[[], Waiter]:
    import trio

    lowlevel = trio.lowlevel

    class _TrioWaiter:
        __slots__ = ("outcome", "task")

        def __init__(self) -> None:
            self.outcome: tuple[bool, Any] | None = None
            self.task: Any = None  # the parked task, while it waits

        def done(self, ok: bool, value: Any) -> None:
            if self.outcome is not None:
                return  # delivered, or the wait was cancelled
            self.outcome = (ok, value)
            task, self.task = self.task, None
            if task is not None:
                lowlevel.reschedule(task)

        def abort(self, _raise_cancel: object) -> Any:
            self.outcome = _ABORTED
            self.task = None
            return lowlevel.Abort.SUCCEEDED

        async def wait(self) -> tuple[bool, Any]:
            if self.outcome is None:
                self.task = lowlevel.current_task()
                await lowlevel.wait_task_rescheduled(self.abort)
            else:
                await lowlevel.checkpoint()
            assert self.outcome is not None
            return self.outcome

    return _TrioWaiter
