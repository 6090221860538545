"""Background work that belongs to an object, not to the task that happened to create it.

An anyio task group must be exited by the task that entered it. A ``Pool`` is entered by
one task and often left by another: pytest-asyncio sets a fixture up and tears it down in
different tasks, and a service's ``start()`` and ``stop()`` run wherever the application
calls them. So the pool's background work does not run in a task group of the caller's:
it runs in a task group hosted by a task of its own (an asyncio task, or a trio system
task), which any task may close. Nothing here ever cancels the caller's task.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import sniffio
from anyio.abc import TaskGroup

__all__ = ["TaskHost", "in_background"]

# asyncio keeps only weak references to tasks: these are kept here until they end.
_RUNNING: set[asyncio.Task[None]] = set()


def in_background(func: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``func()`` on the current event loop, outside every task group.

    ``func`` must not raise: on trio an exception out of a system task ends the run.
    It runs in a copy of the caller's context, as a task started by the caller would.
    Under asyncio it is cancelled when ``asyncio.run`` finishes; under trio when the
    main task ends.
    """
    if sniffio.current_async_library() == "trio":
        import trio

        trio.lowlevel.spawn_system_task(func, context=contextvars.copy_context())
        return
    task = asyncio.get_running_loop().create_task(func())
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)


class TaskHost:
    """A task group that lives in a background task and can be closed from any task.

    ``await open()`` returns the task group; ``await close()`` cancels what still runs in
    it, waits until all of it has finished, and raises what the background work raised
    (``None`` if nothing did). ``on_error`` is called, in the host task, as soon as the
    background work fails, so the owner can fail what waits on that work.
    """

    def __init__(self, on_error: Callable[[BaseException], Coroutine[Any, Any, None]] | None = None) -> None:
        self._on_error = on_error
        self._scope = anyio.CancelScope()
        self._tg: TaskGroup | None = None
        self._done: anyio.Event | None = None
        self.error: BaseException | None = None

    async def open(self) -> TaskGroup:
        if self._done is not None:
            raise RuntimeError("a TaskHost can be opened only once")
        opened = anyio.Event()
        self._done = anyio.Event()
        in_background(lambda: self._host(opened))
        try:
            await opened.wait()
        except BaseException:
            # Cancelled before the group opened: it must not outlive this call.
            with anyio.CancelScope(shield=True):
                await self.close()
            raise
        if self._tg is None:  # the host failed before it opened the group
            assert self.error is not None
            raise self.error
        return self._tg

    async def _host(self, opened: anyio.Event) -> None:
        assert self._done is not None
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    opened.set()
                    await anyio.sleep_forever()
        except BaseException as error:  # kept, and raised by close()
            # Not our own scope's cancellation (the scope absorbs that): background
            # work failed, or the loop itself is shutting down.
            self.error = error
            if self._on_error is not None:
                with anyio.CancelScope(shield=True):
                    await self._on_error(error)
        finally:
            opened.set()
            self._done.set()

    async def close(self) -> None:
        """Stop the background work and wait for it; re-raise its error if it failed."""
        if self._done is None:
            return
        self._scope.cancel()
        await self._done.wait()
        error = self.error
        if error is not None and not isinstance(error, anyio.get_cancelled_exc_class()):
            raise error
