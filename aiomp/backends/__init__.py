"""Where a Pool's tasks run: the seam between the Pool's API and an engine.

``aiomp.Pool`` turns calls into ``Task`` objects (a pickled function, a pickled
payload, and a callback for the outcome) and hands them to a ``Backend``. The
local backend (``backends.local``) runs them on worker processes of this machine;
a Dask distributed backend will implement the same interface.

A backend promises: ``submit`` never blocks and never raises for a task it has
accepted; every accepted task that is not cancelled gets exactly one call of its
``done`` callback, on the event loop thread; ``cancel`` drops tasks that have not
started and stops those that have.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any

from anyio.abc import TaskGroup

__all__ = ["Backend", "PoolStatistics", "Task"]


class Task:
    """One unit of work: a function applied to one payload (an apply, or a chunk)."""

    __slots__ = ("buffers", "cancelled", "done", "func", "index", "is_async", "mode", "payload", "worker")

    def __init__(
        self,
        func: bytes,
        payload: bytes,
        buffers: list[memoryview],
        mode: int,
        is_async: bool,
        done: Callable[[bool, Any], None],
    ) -> None:
        self.func = func
        self.payload = payload
        self.buffers = buffers
        self.mode = mode
        self.is_async = is_async
        #: ``done(True, value)`` or ``done(False, exception)``, called once.
        self.done = done
        self.cancelled = False
        # Owned by the backend: where the task was sent, and its number there.
        self.worker: Any = None
        self.index = 0


@dataclasses.dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a pool, from ``Pool.statistics()``."""

    #: The number of worker processes the pool keeps.
    processes: int
    #: Worker processes alive now (fewer while a replacement is starting).
    workers_alive: int
    #: Tasks waiting for a worker. A chunk of a ``map`` counts as one task.
    tasks_queued: int
    #: Tasks handed to a worker and not yet finished.
    tasks_running: int
    #: Tasks finished, successfully or with an error.
    tasks_completed: int
    #: Workers that exited early (crash, kill, out of memory, ``maxtasksperchild``, or
    #: while starting) and were replaced.
    workers_restarted: int


class Backend(abc.ABC):
    """The engine behind a ``Pool``."""

    #: How many tasks run at once (worker processes, for the local backend).
    processes: int

    @abc.abstractmethod
    async def start(self, task_group: TaskGroup) -> None:
        """Start the workers; background work runs in ``task_group``."""

    @abc.abstractmethod
    def submit(self, task: Task) -> None:
        """Queue a task. Raises ``PoolClosedError`` or ``BrokenPoolError``."""

    @abc.abstractmethod
    def cancel(self, tasks: list[Task], stop_running: bool = True) -> None:
        """Drop tasks not started yet; stop the running ones if ``stop_running``."""

    @abc.abstractmethod
    def close(self) -> None:
        """Take no more tasks; finish the queued ones."""

    @abc.abstractmethod
    async def join(self) -> None:
        """Wait until every queued task has finished and the workers are gone."""

    @abc.abstractmethod
    async def terminate(self) -> None:
        """Fail every unfinished task with ``PoolClosedError`` and stop the workers now."""

    def abandon(self) -> None:  # noqa: B027 - optional, does nothing by default
        """The pool was garbage-collected while running: stop the work now, without awaiting."""

    @abc.abstractmethod
    def statistics(self) -> PoolStatistics:
        """Counters that describe the backend now."""


PoolStatistics.__module__ = "aiomp"
