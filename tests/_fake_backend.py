"""A backend that runs tasks in this process: the ``Backend`` seam without processes or pickling.

``FakeBackend`` keeps ``processes`` runner tasks in the task group it is started
with. A runner takes queued tasks in order: a plain function is called on the loop
thread, an ``async def`` function is awaited in the runner. It keeps the seam's
contract: one ``done`` per task that is not cancelled, on the loop thread; the
task's own exception with a ``RemoteTraceback`` cause; ``WorkerDiedError`` for a
"lost worker" (a function that raises ``LoseWorker``); statistics. ``cancel`` drops
queued tasks and stops running coroutines; a running plain function (which holds
the loop thread anyway) cannot be stopped, so its outcome is dropped.

It records what the tests look at: the tasks it prepared and on which thread, the
tasks it was handed, and the options ``configure`` received.
"""

from __future__ import annotations

import functools
import threading
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

import anyio
from anyio.abc import TaskGroup

from aiomp import PoolClosedError, RemoteTraceback, WorkerDiedError
from aiomp.backends import Backend, CallKind, PoolStatistics, Task


class LoseWorker(Exception):
    """Raised by a task function: the fake backend reports its worker as lost."""


class Unpreparable:
    """A payload item that ``FakeBackend.prepare`` refuses, as a pickler would."""


class FakeBackend(Backend):
    """Runs every task in this process, ``processes`` at a time."""

    def __init__(self, processes: int = 2) -> None:
        self.processes = processes
        self.state = "init"
        self.prepared_on: list[int] = []  # the thread each prepare ran on
        self.submitted: list[Task] = []
        self.configured: dict[str, Any] = {}
        self._queue: deque[Task] = deque()
        self._running: dict[Task, anyio.CancelScope] = {}
        self._more = anyio.Event()  # set when the queue gained a task, or on close
        self._runners = 0
        self._idle = anyio.Event()
        self._completed = 0
        self._lost = 0
        self._tg: TaskGroup | None = None

    async def start(self, task_group: TaskGroup) -> None:
        self._tg = task_group
        self.state = "run"
        for _ in range(self.processes):
            self._runners += 1
            task_group.start_soon(self._runner)

    def prepare(self, task: Task) -> None:
        self.prepared_on.append(threading.get_ident())
        items = [task.payload[0]] if task.kind is CallKind.APPLY else task.payload
        if any(isinstance(arg, Unpreparable) for item in items for arg in _flat(item)):
            raise TypeError("Unpreparable refuses to be prepared")
        task.encoded = "prepared"

    def submit(self, task: Task) -> None:
        if self.state != "run":
            raise PoolClosedError("the fake backend is not running")
        assert task.encoded == "prepared", "the Pool submitted a task it did not prepare"
        self.submitted.append(task)
        self._queue.append(task)
        self._more.set()

    def cancel(self, tasks: list[Task], stop_running: bool = True) -> None:
        for task in tasks:
            if task.cancelled:
                continue
            task.cancelled = True
            scope = self._running.get(task)
            if scope is not None and stop_running and task.is_async:
                scope.cancel()
            # Queued: the runner skips it. A plain function running: its outcome is dropped.

    def close(self) -> None:
        if self.state == "run":
            self.state = "close"
            self._more.set()
            self._check_idle()

    async def join(self) -> None:
        if self.state in ("init", "run"):
            raise ValueError("join() needs a closed or terminated backend")
        await self._idle.wait()

    async def terminate(self) -> None:
        self.state = "terminate"
        error = PoolClosedError("the fake backend was terminated before this task finished")
        unfinished = [*self._queue, *self._running]
        self._queue.clear()
        for task in unfinished:
            if not task.cancelled:
                task.cancelled = True
                task.done(False, error)
        for scope in self._running.values():
            scope.cancel()
        self._more.set()
        self._check_idle()
        await self._idle.wait()

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            processes=self.processes,
            workers_alive=self._runners,
            tasks_queued=sum(1 for task in self._queue if not task.cancelled),
            tasks_running=len(self._running),
            tasks_completed=self._completed,
            workers_restarted=self._lost,
        )

    # -- the runners ----------------------------------------------------------------

    async def _runner(self) -> None:
        try:
            while self.state != "terminate":
                task = self._next()
                if task is None:
                    if self.state != "run":
                        return
                    if self._more.is_set():  # consumed by another runner: wait for the next one
                        self._more = anyio.Event()
                    await self._more.wait()
                    continue
                await self._run(task)
                await anyio.lowlevel.checkpoint()  # a plain function never yields: let the loop run
        finally:
            self._runners -= 1
            self._check_idle()

    def _next(self) -> Task | None:
        while self._queue:
            task = self._queue.popleft()
            if not task.cancelled:
                return task
        return None

    async def _run(self, task: Task) -> None:
        scope = anyio.CancelScope()
        self._running[task] = scope
        outcome: tuple[bool, Any] | None = None
        try:
            with scope:
                try:
                    outcome = True, await _call(task)
                except LoseWorker:
                    self._lost += 1
                    outcome = False, WorkerDiedError(-9)
                except Exception as error:
                    outcome = False, _with_remote_traceback(error)
        finally:
            del self._running[task]
        if outcome is None or task.cancelled:
            return  # stopped, or cancelled while it ran: no outcome
        self._completed += 1
        task.cancelled = True
        task.done(*outcome)

    def _check_idle(self) -> None:
        if self.state != "run" and not self._runners:
            self._idle.set()


class SizedBackend(FakeBackend):
    """A fake backend that honours ``processes`` and ``initializer`` given to ``Pool``."""

    supported_options: ClassVar[frozenset[str]] = frozenset({"processes", "initializer"})

    def configure(self, **options: Any) -> None:
        self.configured = options
        self.processes = options.get("processes", self.processes)


async def _call(task: Task) -> Any:
    func, payload = task.func, task.payload
    calls: list[Callable[[], Any]]
    if task.kind is CallKind.APPLY:
        args, kwds = payload
        calls = [functools.partial(func, *args, **kwds)]
    elif task.kind is CallKind.MAP:
        calls = [functools.partial(func, item) for item in payload]
    else:
        calls = [functools.partial(func, *item) for item in payload]
    values = []
    for call in calls:
        value = call()
        if task.is_async:
            value = await _awaited(value)
        values.append(value)
    return values[0] if task.kind is CallKind.APPLY else values


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


def _with_remote_traceback(error: BaseException) -> BaseException:
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    error.__cause__ = RemoteTraceback(f'\n"""\n{text}"""')
    error.__traceback__ = None
    return error


def _flat(item: Any) -> tuple[Any, ...]:
    return item if isinstance(item, tuple) else (item,)
