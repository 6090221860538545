"""Where a Pool's tasks run: the seam between the Pool's API and an engine.

``aiomp.Pool`` turns each call into ``Task`` objects and hands them to a
``Backend``. A task carries the call itself, not bytes: the callable, how to call
it (a ``CallKind``), its payload as a Python object, and a ``done`` callback for
the outcome. Each backend serializes as its engine needs (``Backend.prepare``).
The local backend (``backends.local``) runs tasks on worker processes of this
machine; a Dask distributed backend implements the same interface.

How to call ``task.func`` with ``task.payload``, and what ``done`` then receives:

======================  ===============================  ================================
``task.kind``           ``task.payload``                 the value passed to ``done``
======================  ===============================  ================================
``CallKind.APPLY``      ``(args_tuple, kwds_dict)``      ``func(*args, **kwds)``
``CallKind.MAP``        a list of items                  ``[func(x) for x in items]``
``CallKind.STARMAP``    a list of argument tuples        ``[func(*x) for x in items]``
======================  ===============================  ================================

When ``task.is_async`` is true, each call returns a coroutine, and its result is
what the coroutine returns.

What a backend must do (``Backend`` says it method by method):

* ``submit`` never blocks, and never raises for a task it accepts. It raises
  ``PoolClosedError`` once closed or terminated, ``BrokenPoolError`` once broken.
* Every accepted task that is not cancelled gets exactly one ``done`` call, on the
  event loop thread: ``done(True, value)`` or ``done(False, exception)``. Before the
  call the backend sets ``task.cancelled = True`` (the task is settled; the Pool
  cancels only tasks that are not), and it never calls ``done`` for a task that is
  ``cancelled`` already.
* An exception raised by the function is delivered as itself (its own type), with
  a ``RemoteTraceback`` holding the remote traceback's text as its ``__cause__``.
  A task whose worker was lost while running it fails with ``WorkerDiedError``.
* ``cancel`` drops the given tasks that have not started; they never start.
* ``statistics()`` returns a ``PoolStatistics`` of the engine's counters.

What a backend may decline:

* stopping tasks that are running: ``cancel(..., stop_running=True)`` then only
  drops the queued ones, and a running task's outcome is discarded (no ``done``);
* forwarding workers' log records, and running an initializer;
* any option of ``Pool`` that configures local worker processes (``processes``,
  ``initializer``, ...): passing one with a backend that does not list it in its
  ``supported_options`` raises ``TypeError``, so nothing is silently dropped.
"""

from __future__ import annotations

import abc
import contextvars
import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .._serialize import likely_large

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["APPLY", "MAP", "STARMAP", "Backend", "CallKind", "PoolStatistics", "Task"]


class CallKind(enum.IntEnum):
    """How a task's function is applied to its payload (see the module's table)."""

    #: ``func(*args, **kwds)``; the payload is ``(args_tuple, kwds_dict)``.
    APPLY = 0
    #: ``[func(x) for x in items]``; the payload is a list of items.
    MAP = 1
    #: ``[func(*x) for x in items]``; the payload is a list of argument tuples.
    STARMAP = 2


APPLY = CallKind.APPLY
MAP = CallKind.MAP
STARMAP = CallKind.STARMAP


class Task:
    """One unit of work: ``func`` applied to one payload (an apply, or a chunk of a map).

    The Pool sets ``func``, ``kind``, ``payload``, ``is_async``, ``done`` and
    ``context``; the backend owns the rest.
    """

    __slots__ = ("cancelled", "context", "done", "encoded", "func", "index", "is_async", "kind", "payload", "worker")

    def __init__(
        self,
        func: Callable[..., Any],
        kind: CallKind,
        payload: Any,
        is_async: bool,
        done: Callable[[bool, Any], None],
    ) -> None:
        #: The callable itself (a function, lambda, closure, ``async def``...).
        self.func = func
        #: How to apply ``func`` to ``payload``.
        self.kind = kind
        #: The arguments, as Python objects (see ``CallKind``).
        self.payload = payload
        #: Whether ``func`` returns a coroutine to await.
        self.is_async = is_async
        #: ``done(True, value)`` or ``done(False, exception)``, called once.
        self.done = done
        #: The ``contextvars`` context of the call that submitted the task (a copy):
        #: a backend that forwards worker log records handles the task's in it, so
        #: that filters reading context variables (a request id) tag them too.
        self.context: contextvars.Context | None = None
        #: Settled: cancelled, or its outcome delivered. Set by the backend.
        self.cancelled = False
        # Owned by the backend: its serialized form (``prepare``), where the task
        # was sent, and its number there.
        self.encoded: Any = None
        self.worker: Any = None
        self.index = 0

    def __repr__(self) -> str:
        name = getattr(self.func, "__qualname__", type(self.func).__name__)
        return f"<aiomp.backends.Task {self.kind.name} {name}{' cancelled' if self.cancelled else ''}>"


@dataclasses.dataclass(frozen=True)
class PoolStatistics:
    """A snapshot of a pool, from ``Pool.statistics()``."""

    #: The number of worker processes the pool keeps (for another engine: how
    #: many tasks it runs at once).
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
    """The engine behind a ``Pool``: subclass it to run a pool's tasks elsewhere.

    Every method is called on the event loop thread, except ``prepare``, which
    the Pool may call in a worker thread. The Pool calls, in order: ``configure``
    (only with options listed in ``supported_options``), ``start``; then
    ``prepare`` and ``submit`` for each task, ``cancel`` for tasks it no longer
    wants; finally ``close`` and ``join``, or ``terminate``. See the module's
    docstring for the contract a backend keeps.
    """

    #: How many tasks run at once (worker processes, for the local backend). A
    #: backend sets it in ``__init__`` (or ``configure``); ``Pool.processes`` reads it.
    processes: int

    #: The local-process options of ``Pool`` (``processes``, ``initializer``,
    #: ``initargs``, ``maxtasksperchild``, ``context``, ``child_concurrency``,
    #: ``worker_niceness``, ``forward_logs``, ``child_loop``) this backend honours.
    #: The Pool passes the ones the caller set to ``configure``; any other one set
    #: together with this backend raises ``TypeError``.
    supported_options: ClassVar[frozenset[str]] = frozenset()

    def configure(self, **options: Any) -> None:
        """Take the options of ``supported_options`` that the caller of ``Pool`` set.

        Called by ``Pool.__init__``, before ``start``, only if the caller set some: with
        each option whose value differs from its default, as the caller gave it. A
        backend that lists options must override this and check their values.
        """
        if options:
            raise NotImplementedError(f"{type(self).__name__} lists supported_options but does not configure them")

    @abc.abstractmethod
    async def start(self, task_group: TaskGroup) -> None:
        """Start the workers; run background work in ``task_group`` (it outlives this call)."""

    def prepare(self, task: Task) -> None:  # noqa: B027 - optional, does nothing by default
        """Serialize (or otherwise check) a task before ``submit``.

        The Pool calls it once for every task before submitting it (for ``apply``
        and ``map``, before submitting any task of the call). What it raises (a
        pickling error, say) reaches the caller, and the task is not submitted.
        Store the result on ``task.encoded``. It may run in a worker thread (see ``prepare_in_thread``),
        so it must touch nothing but the task and thread-safe state.
        """

    def prepare_in_thread(self, task: Task) -> bool:
        """Whether the Pool should call ``prepare(task)`` in a worker thread.

        By default: when this backend overrides ``prepare`` and the payload looks
        large (big strings or containers), so that serializing it would stall the
        event loop.
        """
        return type(self).prepare is not Backend.prepare and likely_large(task.payload)

    @abc.abstractmethod
    def submit(self, task: Task) -> None:
        """Queue a task; never block. Raises ``PoolClosedError`` or ``BrokenPoolError``."""

    @abc.abstractmethod
    def cancel(self, tasks: list[Task], stop_running: bool = True) -> None:
        """Settle ``tasks`` (set ``cancelled``): drop those not started, and stop the
        running ones if ``stop_running`` (or let them finish and discard their outcome).
        Tasks already settled are skipped. None of them gets a ``done`` call."""

    @abc.abstractmethod
    def close(self) -> None:
        """Take no more tasks; finish the queued ones."""

    @abc.abstractmethod
    async def join(self) -> None:
        """Wait until every queued task has finished and the workers are gone.

        Raises ``ValueError`` unless ``close`` or ``terminate`` was called first.
        """

    @abc.abstractmethod
    async def terminate(self) -> None:
        """Fail every unfinished task with ``PoolClosedError`` and stop the workers now."""

    def abandon(self) -> None:  # noqa: B027 - optional, does nothing by default
        """The pool was garbage-collected while running: stop the work now, without awaiting."""

    @abc.abstractmethod
    def statistics(self) -> PoolStatistics:
        """Counters that describe the backend now."""


PoolStatistics.__module__ = "aiomp"
