"""``Pool`` and ``AsyncResult``: the parent's side of running functions on workers.

A call becomes one or more ``Task`` objects (one per chunk for the map family)
that carry the function, how to call it and its arguments. Each is prepared by
the backend (the local backend pickles it there, so a pickling error reaches the
call that caused it), then handed to the backend. ``AsyncResult`` collects the
outcomes; ``imap`` and ``imap_unordered`` feed a bounded window of chunks from the
source as the consumer pulls results, so an endless source runs in constant memory.

The awaiting forms keep the loop responsive however large the input: they read
it, prepare its tasks and submit them in slices, yielding to the loop between
slices, and a map's results are joined chunk by chunk as they arrive.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import functools
import itertools
import logging
import math
import multiprocessing
import multiprocessing.context
import time
import warnings
from collections import deque
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sized,
)
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

import anyio
from anyio.abc import TaskGroup
from typing_extensions import Self, TypeVarTuple, Unpack

from . import _waiter
from ._checks import check_args as _check_args
from ._checks import check_kwds as _check_kwds
from ._checks import check_timeout as _check_timeout
from ._checks import clamp_timeout as _clamp_timeout
from ._checks import is_async as _is_async
from ._checks import positive_int as _positive_int
from ._exceptions import BrokenPoolError, PoolClosedError
from ._tasks import TaskHost
from .backends import Backend, CallKind, PoolStatistics, Task
from .backends.local import LOCAL_OPTIONS, LocalBackend

__all__ = ["AsyncResult", "Pool"]

R = TypeVar("R")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")  # a call's positional arguments, checked against its function

_logger = logging.getLogger("aiomp")

# The awaiting forms yield to the loop after about this long of reading, preparing
# or submitting, so a big call never holds the loop for long in one step.
_STEP_SECONDS = 0.00025
# Items read from a sync iterable between two looks at the clock.
_READ_SLICE = 8192
# The largest chunk chunksize=None makes: pickling or unpickling 16,384 small
# items (on the loop) takes about 0.2 ms here, and a map of tiny tasks is no
# slower than with four chunks per worker (measured: 8,192 cost a few percent).
_MAX_AUTO_CHUNK = 16384

_NO_GUARD = (
    "a Pool was started while this process was importing the main module to become a worker. "
    'Put the code that creates the pool under an `if __name__ == "__main__":` guard.'
)


class AsyncResult(Generic[R]):
    """The outcome of ``apply_async``, ``map_async`` or ``starmap_async``.

    Await it (``await res``) or call ``await res.get()`` for the value; the task's
    exception is raised there with the worker's traceback as ``__cause__``.
    """

    def __init__(
        self,
        backend: Backend,
        event: _waiter.Event,
        callback: Callable[[R], object] | None,
        error_callback: Callable[[BaseException], object] | None,
        single: bool,
    ) -> None:
        self._backend = backend
        self._callback = callback
        self._error_callback = error_callback
        self._single = single
        self._tasks: list[Task] = []
        self._values: list[Any] = []
        self._remaining = 0
        # A map's results so far: the chunks up to _joined, in order.
        self._joined = 0
        self._out: list[Any] = []
        self._event = event
        self._ok = False
        self._value: Any = None

    def _add(self, tasks: list[Task]) -> None:
        """Adopt the tasks whose outcomes make up this result (before they are submitted).

        Each task's ``done`` is ``functools.partial(self._task_done, position)``.
        """
        self._tasks = tasks
        self._values = [_MISSING] * len(tasks)
        self._remaining = len(tasks)
        if not tasks:
            self._finish(True, [])

    def _task_done(self, position: int, ok: bool, value: Any) -> None:
        if self._event.is_set():
            return
        if not ok:
            # The call has failed: what has not started never will.
            self._backend.cancel([t for t in self._tasks if not t.cancelled], stop_running=False)
            self._finish(False, value)
            return
        self._tasks[position].payload = None  # its arguments are freed as it ends, not with the call
        self._remaining -= 1
        if self._single:
            self._finish(True, value)
            return
        values = self._values
        values[position] = value
        # Join the chunks that are in order now, so that no step of the loop
        # handles the whole result (chunks mostly arrive in order).
        joined = self._joined
        while joined < len(values) and values[joined] is not _MISSING:
            self._out += values[joined]
            values[joined] = None
            joined += 1
        self._joined = joined
        if not self._remaining:
            self._finish(True, self._out)

    def _finish(self, ok: bool, value: Any, notify: bool = True) -> None:
        self._ok, self._value = ok, value
        # Tasks point back here through their done callbacks: drop them, so
        # refcounting frees each call as it ends. Left to the cycle collector,
        # big results pile up and are freed in one long pause of the loop.
        self._tasks = []
        self._values = []
        self._out = []
        self._event.set()
        callback = self._callback if ok else self._error_callback
        self._callback = self._error_callback = None
        if callback is not None and notify:
            try:
                callback(value)
            except Exception:
                _logger.exception("aiomp: a %s raised", "callback" if ok else "error_callback")

    def ready(self) -> bool:
        """Whether the call has finished (with a value, an error, or cancelled)."""
        return self._event.is_set()

    def successful(self) -> bool:
        """Whether the call finished with a value. Raises ``ValueError`` if not ready."""
        if not self.ready():
            raise ValueError(f"{self!r} is not ready")
        return self._ok

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait until the result is ready or ``timeout`` seconds pass; return ``ready()``.

        As in the standard library, a negative ``timeout`` counts as 0.
        """
        timeout = _clamp_timeout(timeout)
        with anyio.move_on_after(timeout):
            await self._event.wait()
        return self.ready()

    async def get(self, timeout: float | None = None) -> R:
        """Return the value, or raise the call's exception.

        Raises the builtin ``TimeoutError`` if it is not ready within ``timeout``
        seconds (the work goes on; ``cancel()`` stops it), and
        ``concurrent.futures.CancelledError`` if the call was cancelled. As in the
        standard library, a negative ``timeout`` counts as 0.
        """
        if timeout is None:
            await self._event.wait()
        else:
            timeout = _clamp_timeout(timeout)
            with anyio.fail_after(timeout):
                await self._event.wait()
        return self._outcome()

    def _outcome(self) -> R:
        if self._ok:
            return self._value  # type: ignore[no-any-return]
        raise self._value

    def __await__(self) -> Generator[Any, None, R]:
        return self.get().__await__()

    def cancel(self) -> bool:
        """Stop the call: tasks that have not started never will, running ones are stopped.

        Returns False if the call had already finished.
        """
        if self.ready():
            return False
        self._backend.cancel([t for t in self._tasks if not t.cancelled], stop_running=True)
        self._finish(False, concurrent.futures.CancelledError(), notify=False)
        return True

    def __repr__(self) -> str:
        state = "pending" if not self.ready() else ("successful" if self._ok else "failed")
        return f"<aiomp.AsyncResult {state}>"


class Pool:
    """A pool of worker processes, driven from an event loop.

    Use it as ``async with aiomp.Pool() as pool:``. Entering starts the workers;
    leaving normally closes the pool and waits for its work, leaving by an
    exception or cancellation terminates it. See ``docs/pool.md``.

    ``worker_niceness`` (an aiomp extension) lowers the workers' CPU priority by
    that much (``os.nice``), so the parent's event loop wins the CPU when they
    compete and stays responsive; 0 keeps them equal.

    ``forward_logs`` (default True) sends every worker's log records to this
    process, where ``logging.getLogger(record.name).handle(record)`` runs them
    through the application's own handlers; see ``docs/logging.md``.

    ``max_memory_per_child`` (bytes): a worker whose resident memory (RSS) is above
    it after a task is replaced before it takes another; the task's result is kept,
    and ``statistics().workers_restarted`` counts the replacement.

    ``child_loop`` is the event loop ``async def`` functions run on in the workers:
    ``"asyncio"``, ``"uvloop"`` or ``"trio"``; None (the default) means asyncio's,
    or uvloop's when this process runs on uvloop, whatever this process's loop.

    A pool may be left (``__aexit__``, ``close``/``join``, ``terminate``) by a task
    other than the one that entered it: its background work runs in a task of its own.

    ``backend`` (an ``aiomp.backends.Backend``) runs the tasks elsewhere; None means
    worker processes of this machine (``LocalBackend``), which the other options
    describe. With a backend, setting one of those options to anything but its
    default raises ``TypeError`` unless the backend lists it in its
    ``supported_options``; ``processes`` is then the backend's.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: str | multiprocessing.context.BaseContext | None = None,
        child_concurrency: int = 16,
        backend: Backend | None = None,
        worker_niceness: int = 5,
        forward_logs: bool = True,
        max_memory_per_child: int | None = None,
        child_loop: str | None = None,
    ) -> None:
        if backend is None:
            backend = LocalBackend(
                processes,
                initializer=initializer,
                initargs=initargs,
                maxtasksperchild=maxtasksperchild,
                context=context,
                child_concurrency=child_concurrency,
                worker_niceness=worker_niceness,
                forward_logs=forward_logs,
                max_memory_per_child=max_memory_per_child,
                child_loop=child_loop,
            )
        elif not isinstance(backend, Backend):
            raise TypeError(f"backend must be an aiomp backend or None, not {type(backend).__name__}")
        else:
            local = {
                "processes": processes,
                "initializer": initializer,
                "initargs": initargs,
                "maxtasksperchild": maxtasksperchild,
                "context": context,
                "child_concurrency": child_concurrency,
                "worker_niceness": worker_niceness,
                "forward_logs": forward_logs,
                "max_memory_per_child": max_memory_per_child,
                "child_loop": child_loop,
            }
            options = _options_for(backend, local)
            if options:
                backend.configure(**options)
        self._backend = backend
        self._tg: TaskGroup | None = None
        self._host: TaskHost | None = None
        self._new_event: Callable[[], _waiter.Event] = anyio.Event
        self._new_waiter: Callable[[], _waiter.Waiter] = _waiter.AnyioWaiter  # the loop's own, on entry
        self._last_func: tuple[Callable[..., Any], bool] | None = None
        self._entered = False
        self._exited = False
        self._closed = False
        # map_async calls still reading an async iterable: the backend is closed
        # only once they have submitted their tasks.
        self._feeding = 0
        self._fed: _waiter.Event | None = None

    @property
    def processes(self) -> int:
        """The number of worker processes (for another backend: how many tasks it runs at once)."""
        return self._backend.processes

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("running" if self._tg is not None else "not started")
        return f"<aiomp.Pool processes={self.processes} {state}>"

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a Pool can be entered only once")
        if getattr(multiprocessing.process.current_process(), "_inheriting", False):
            # This process is a worker importing the main module (spawn or
            # forkserver): the script has no __main__ guard. Fail at once.
            raise BrokenPoolError(_NO_GUARD)
        self._entered = True
        self._new_event = _waiter.event_class()
        self._new_waiter = _waiter.waiter_class()
        # The background work runs in a task group hosted by a task of its own, so
        # that any task may leave the pool (see _tasks); the entering task is free.
        host = self._host = TaskHost(on_error=self._background_failed)
        tg = await host.open()
        try:
            await self._backend.start(tg)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._backend.terminate()
                with contextlib.suppress(Exception):  # the start's own error goes on
                    await host.close()
            raise
        self._tg = tg
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        """Leave the pool: from the task that entered it or from any other."""
        host = self._host
        if host is None or self._tg is None:
            raise RuntimeError("Pool.__aexit__ without a successful __aenter__")
        if self._exited:
            raise RuntimeError("the pool was already exited")
        self._exited = True
        try:
            if exc_type is None:
                self.close()
                await self.join()
        finally:
            # Left by an exception or a cancellation (of the block or of join):
            # stop everything now. After a clean join this finds nothing to do.
            # Then end the background work; what it raised, if anything, goes on.
            with anyio.CancelScope(shield=True):
                await self.terminate()
                await host.close()
        return None

    async def _background_failed(self, error: BaseException) -> None:
        """The pool's background work failed: no call may wait for it any longer."""
        self._closed = True
        await self._backend.terminate()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_tg", None) is not None and not self._exited:
            _warn(
                f"{self!r} was never exited; its workers are killed now. Use `async with aiomp.Pool() as pool:`",
                ResourceWarning,
                source=self,
            )
            self._backend.abandon()

    def close(self) -> None:
        """Take no more work; the work already submitted still runs. Then ``await join()``."""
        self._closed = True
        if self._feeding:
            if self._fed is None:
                self._fed = self._new_event()
        else:
            self._backend.close()

    async def join(self) -> None:
        """Wait for all submitted work to finish and the workers to exit.

        The pool must have been closed (or terminated) first, else ``ValueError``.
        """
        if self._tg is None:
            return
        if self._fed is not None:
            await self._fed.wait()
        await self._backend.join()

    async def terminate(self) -> None:
        """Stop the workers now. Unfinished calls raise ``PoolClosedError``."""
        self._closed = True
        await self._backend.terminate()

    def statistics(self) -> PoolStatistics:
        """A snapshot of the pool's counters (queued, running, completed, restarts)."""
        return self._backend.statistics()

    def _check_open(self) -> None:
        if self._closed:
            raise PoolClosedError("the pool is closed: it takes no more work")
        if self._tg is None:
            raise RuntimeError("the pool is not running: use `async with aiomp.Pool() as pool:`")

    # -- apply ---------------------------------------------------------------------

    # The overloads: ``args`` as a tuple without ``kwds`` (the usual call) is checked
    # against ``func``; ``args`` as a list, or any call with ``kwds``, is taken unchecked,
    # as the standard library's Pool takes it. Each shape comes twice: an ``async def``
    # function's coroutine is unwrapped to its result. The checked shapes come last, so
    # that a checker reports a mismatch against them.
    @overload
    async def apply(
        self, func: Callable[..., Coroutine[Any, Any, R]], args: list[Any], *, timeout: float | None = None
    ) -> R: ...

    @overload
    async def apply(self, func: Callable[..., R], args: list[Any], *, timeout: float | None = None) -> R: ...

    @overload
    async def apply(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        args: Iterable[Any],
        kwds: Mapping[str, Any],
        *,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def apply(
        self, func: Callable[..., R], args: Iterable[Any], kwds: Mapping[str, Any], *, timeout: float | None = None
    ) -> R: ...

    @overload
    async def apply(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        args: Iterable[Any] = ...,
        *,
        kwds: Mapping[str, Any],
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def apply(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = ...,
        *,
        kwds: Mapping[str, Any],
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def apply(
        self, func: Callable[[], Coroutine[Any, Any, R]], args: tuple[()] = ..., *, timeout: float | None = None
    ) -> R: ...

    @overload
    async def apply(self, func: Callable[[], R], args: tuple[()] = ..., *, timeout: float | None = None) -> R: ...

    @overload
    async def apply(
        self,
        func: Callable[[Unpack[Ts]], Coroutine[Any, Any, R]],
        args: tuple[Unpack[Ts]],
        *,
        timeout: float | None = None,
    ) -> R: ...

    @overload
    async def apply(
        self, func: Callable[[Unpack[Ts]], R], args: tuple[Unpack[Ts]], *, timeout: float | None = None
    ) -> R: ...

    async def apply(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run ``func(*args, **kwds)`` in a worker and return its result.

        ``timeout`` (seconds) raises the builtin ``TimeoutError`` and stops the task.
        """
        # The per-call path, kept to one coroutine, one task and one waiter (see _waiter).
        self._check_open()
        if timeout is not None:
            _check_timeout(timeout)
        backend = self._backend
        waiter = self._new_waiter()
        task = Task(func, CallKind.APPLY, (_check_args(args), _check_kwds(kwds)), self._is_async(func), waiter.done)
        task.context = contextvars.copy_context()
        with _deadline(timeout):
            if backend.prepare_in_thread(task):
                await anyio.to_thread.run_sync(backend.prepare, task)
            else:
                backend.prepare(task)
            backend.submit(task)
            try:
                ok, value = await waiter.wait()
            except BaseException:
                if not task.cancelled:  # this wait was cancelled or timed out: so is the call
                    backend.cancel([task])
                raise
        task.payload = None  # its arguments are let go as it ends (a backend may keep the task)
        if ok:
            return value
        raise value

    def _is_async(self, func: Callable[..., Any]) -> bool:
        """Whether ``func`` is an ``async def`` function (checked once per function in a row)."""
        last = self._last_func
        if last is not None and last[0] is func:
            return last[1]
        if not callable(func):
            raise TypeError(f"func must be callable, not {type(func).__name__}")
        is_async = _is_async(func)
        self._last_func = (func, is_async)
        return is_async

    # The same shapes as ``apply``'s, callbacks keyword-only where ``kwds`` is not given.
    @overload
    def apply_async(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        args: list[Any],
        *,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[..., R],
        args: list[Any],
        *,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        args: Iterable[Any],
        kwds: Mapping[str, Any],
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[..., R],
        args: Iterable[Any],
        kwds: Mapping[str, Any],
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        args: Iterable[Any] = ...,
        *,
        kwds: Mapping[str, Any],
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[..., R],
        args: Iterable[Any] = ...,
        *,
        kwds: Mapping[str, Any],
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[[], Coroutine[Any, Any, R]],
        args: tuple[()] = ...,
        *,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[[], R],
        args: tuple[()] = ...,
        *,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[[Unpack[Ts]], Coroutine[Any, Any, R]],
        args: tuple[Unpack[Ts]],
        *,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    @overload
    def apply_async(
        self,
        func: Callable[[Unpack[Ts]], R],
        args: tuple[Unpack[Ts]],
        *,
        callback: Callable[[R], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[R]: ...

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: Mapping[str, Any] = {},
        callback: Callable[[Any], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[Any]:
        """Schedule ``func(*args, **kwds)`` now and return its ``AsyncResult``.

        Callbacks run in the parent, on the event loop, when the result is ready.
        """
        self._check_open()
        _check_callbacks(callback, error_callback)
        call = _Call(func, CallKind.APPLY, self._backend)
        result: AsyncResult[Any] = AsyncResult(self._backend, self._new_event(), callback, error_callback, single=True)
        call.submit_now(result, [(_check_args(args), _check_kwds(kwds))])
        return result

    # -- map and starmap -------------------------------------------------------------

    @overload
    async def map(
        self,
        func: Callable[[T], Coroutine[Any, Any, R]],
        iterable: Iterable[T] | AsyncIterable[T],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[R]: ...

    @overload
    async def map(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T] | AsyncIterable[T],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[R]: ...

    async def map(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[Any]:
        """Apply ``func`` to every item, in chunks, and return the results in order.

        If any item raises, the call raises that exception and its remaining
        chunks are dropped. ``timeout`` raises ``TimeoutError`` and stops the work.
        """
        return await self._map(func, iterable, chunksize, CallKind.MAP, timeout)

    # Items that are tuples are checked against ``func``; items that are lists are taken
    # unchecked. The checked shapes come last, so that a mismatch is reported against them.
    @overload
    async def starmap(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        iterable: Iterable[list[Any]] | AsyncIterable[list[Any]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[R]: ...

    @overload
    async def starmap(
        self,
        func: Callable[..., R],
        iterable: Iterable[list[Any]] | AsyncIterable[list[Any]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[R]: ...

    @overload
    async def starmap(
        self,
        func: Callable[[Unpack[Ts]], Coroutine[Any, Any, R]],
        iterable: Iterable[tuple[Unpack[Ts]]] | AsyncIterable[tuple[Unpack[Ts]]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[R]: ...

    @overload
    async def starmap(
        self,
        func: Callable[[Unpack[Ts]], R],
        iterable: Iterable[tuple[Unpack[Ts]]] | AsyncIterable[tuple[Unpack[Ts]]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[R]: ...

    async def starmap(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]] | AsyncIterable[Iterable[Any]],
        chunksize: int | None = None,
        *,
        timeout: float | None = None,
    ) -> list[Any]:
        """Like ``map``, but each item is a tuple of arguments: ``func(*item)``."""
        return await self._map(func, iterable, chunksize, CallKind.STARMAP, timeout)

    async def _map(
        self, func: Callable[..., Any], iterable: Any, chunksize: int | None, kind: CallKind, timeout: float | None
    ) -> list[Any]:
        self._check_open()
        _check_timeout(timeout)
        chunksize = _check_chunksize(chunksize, allow_none=True)
        call = _Call(func, kind, self._backend)
        with _deadline(timeout):
            steps = _Steps()  # one budget for the loop step, whichever phase it ends in
            items = await _collect(iterable, steps)
            chunks = _chunks(items, chunksize or self._auto_chunksize(len(items)))
            # The chunks hold the items now: they are freed chunk by chunk as results
            # arrive, not all in the loop step that returns the result.
            del items
            result: AsyncResult[list[Any]] = AsyncResult(self._backend, self._new_event(), None, None, single=False)
            await call.submit(result, chunks, steps)
            del chunks
            return await _wait(result)

    def _auto_chunksize(self, count: int) -> int:
        # Four chunks per worker: enough to balance uneven items, few enough
        # that per-message costs vanish for tiny tasks. More for a big input, so
        # that no chunk takes long to pickle or unpickle on the loop: as many
        # whole rounds as that takes, of equal chunks, so that no worker is left
        # alone with a last chunk.
        processes = self.processes
        rounds = max(4, math.ceil(count / (_MAX_AUTO_CHUNK * processes)))
        return max(1, math.ceil(count / (rounds * processes)))

    @overload
    def map_async(
        self,
        func: Callable[[T], Coroutine[Any, Any, R]],
        iterable: Iterable[T] | AsyncIterable[T],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[R]]: ...

    @overload
    def map_async(
        self,
        func: Callable[[T], R],
        iterable: Iterable[T] | AsyncIterable[T],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[R]]: ...

    def map_async(
        self,
        func: Callable[[Any], Any],
        iterable: Iterable[Any] | AsyncIterable[Any],
        chunksize: int | None = None,
        callback: Callable[[list[Any]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[Any]]:
        """Schedule ``map`` now and return its ``AsyncResult``."""
        return self._map_async(func, iterable, chunksize, CallKind.MAP, callback, error_callback)

    @overload
    def starmap_async(
        self,
        func: Callable[..., Coroutine[Any, Any, R]],
        iterable: Iterable[list[Any]] | AsyncIterable[list[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[R]]: ...

    @overload
    def starmap_async(
        self,
        func: Callable[..., R],
        iterable: Iterable[list[Any]] | AsyncIterable[list[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[R]]: ...

    @overload
    def starmap_async(
        self,
        func: Callable[[Unpack[Ts]], Coroutine[Any, Any, R]],
        iterable: Iterable[tuple[Unpack[Ts]]] | AsyncIterable[tuple[Unpack[Ts]]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[R]]: ...

    @overload
    def starmap_async(
        self,
        func: Callable[[Unpack[Ts]], R],
        iterable: Iterable[tuple[Unpack[Ts]]] | AsyncIterable[tuple[Unpack[Ts]]],
        chunksize: int | None = None,
        callback: Callable[[list[R]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[R]]: ...

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]] | AsyncIterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[list[Any]], object] | None = None,
        error_callback: Callable[[BaseException], object] | None = None,
    ) -> AsyncResult[list[Any]]:
        """Schedule ``starmap`` now and return its ``AsyncResult``."""
        return self._map_async(func, iterable, chunksize, CallKind.STARMAP, callback, error_callback)

    def _map_async(
        self,
        func: Callable[..., Any],
        iterable: Any,
        chunksize: int | None,
        kind: CallKind,
        callback: Callable[[list[Any]], object] | None,
        error_callback: Callable[[BaseException], object] | None,
    ) -> AsyncResult[list[Any]]:
        self._check_open()
        _check_callbacks(callback, error_callback)
        chunksize = _check_chunksize(chunksize, allow_none=True)
        call = _Call(func, kind, self._backend)
        result: AsyncResult[list[Any]] = AsyncResult(
            self._backend, self._new_event(), callback, error_callback, single=False
        )
        if isinstance(iterable, AsyncIterable):
            # The items arrive later: read them in the pool's own task group.
            assert self._tg is not None
            self._feeding += 1
            self._tg.start_soon(self._map_later, call, result, iterable, chunksize)
            return result
        items = _list(iterable)
        call.submit_now(result, _chunks(items, chunksize or self._auto_chunksize(len(items))))
        return result

    async def _map_later(
        self, call: _Call, result: AsyncResult[list[Any]], iterable: AsyncIterable[Any], chunksize: int | None
    ) -> None:
        try:
            steps = _Steps()
            items = await _collect(iterable, steps)
            if not result.ready():  # else cancelled meanwhile
                await call.submit(result, _chunks(items, chunksize or self._auto_chunksize(len(items))), steps)
        except BaseException as error:
            if not result.ready():
                if not isinstance(error, Exception):  # the pool is being torn down
                    error = PoolClosedError("the pool stopped before this call's items were read")
                result._finish(False, error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._feeding -= 1
            if self._closed and not self._feeding:
                self._backend.close()
                if self._fed is not None:
                    self._fed.set()

    # -- imap ------------------------------------------------------------------------

    @overload
    def imap(
        self,
        func: Callable[[T], Coroutine[Any, Any, R]],
        iterable: Iterable[T] | AsyncIterable[T],
        chunksize: int = 1,
    ) -> IMapIterator[R]: ...

    @overload
    def imap(
        self, func: Callable[[T], R], iterable: Iterable[T] | AsyncIterable[T], chunksize: int = 1
    ) -> IMapIterator[R]: ...

    def imap(
        self, func: Callable[[Any], Any], iterable: Iterable[Any] | AsyncIterable[Any], chunksize: int = 1
    ) -> IMapIterator[Any]:
        """Iterate over ``func(item)`` for each item, in input order: ``async for r in pool.imap(...)``.

        The source is read lazily with a bounded number of chunks in flight.
        """
        return IMapIterator(self, func, iterable, chunksize, ordered=True)

    @overload
    def imap_unordered(
        self,
        func: Callable[[T], Coroutine[Any, Any, R]],
        iterable: Iterable[T] | AsyncIterable[T],
        chunksize: int = 1,
    ) -> IMapIterator[R]: ...

    @overload
    def imap_unordered(
        self, func: Callable[[T], R], iterable: Iterable[T] | AsyncIterable[T], chunksize: int = 1
    ) -> IMapIterator[R]: ...

    def imap_unordered(
        self, func: Callable[[Any], Any], iterable: Iterable[Any] | AsyncIterable[Any], chunksize: int = 1
    ) -> IMapIterator[Any]:
        """Like ``imap``, but results come in the order they finish."""
        return IMapIterator(self, func, iterable, chunksize, ordered=False)


class IMapIterator(AsyncIterator[R]):
    """The async iterator returned by ``imap`` and ``imap_unordered``.

    It keeps at most ``window`` chunks between the source and the consumer
    (submitted, or finished and not yet consumed): that is the backpressure. A
    sync source is read as the consumer pulls results; an async source is read
    by a task of the pool's own, so a slow source never holds back results that
    are ready, and cancelling one ``__anext__`` never cancels the source. An
    error of the source is raised after the results of the items before it.
    ``aclose()`` (or ``async with``) stops the work still in flight; so does
    reaching the end or an error.

    ``len()`` is the number of results still to come when the source has a length
    (a list, a range...), so that progress bars such as ``tqdm`` show a total;
    ``TypeError`` for a source without one (a generator, an async iterable).
    """

    def __init__(self, pool: Pool, func: Callable[..., Any], iterable: Any, chunksize: int, ordered: bool) -> None:
        pool._check_open()
        self._chunksize = _positive_int("chunksize", chunksize)
        self._call = _Call(func, CallKind.MAP, pool._backend)
        self._backend = pool._backend
        self._tg = pool._tg
        self._length: int | None = None  # the source's, if it has one
        self._yielded = 0
        if isinstance(iterable, AsyncIterable):
            self._async_source: AsyncIterator[Any] | None = aiter(iterable)
            self._source: Iterator[Any] | None = None
        elif isinstance(iterable, Iterable):
            self._length = len(iterable) if isinstance(iterable, Sized) else None
            self._async_source, self._source = None, iter(iterable)
        else:
            raise TypeError(f"iterable must be an iterable or an async iterable, not {type(iterable).__name__}")
        self._ordered = ordered
        self.window = max(8, 4 * pool.processes)
        self._inflight: dict[int, Task] = {}
        self._done: dict[int, tuple[bool, Any]] = {}
        self._ready: deque[Any] = deque()
        self._submitted = 0
        self._next = 0
        self._exhausted = False
        self._closed = False
        self._error: BaseException | None = None  # a task's, raised once the results before it are out
        self._source_error: BaseException | None = None  # raised once every result is out
        self._wakeup = anyio.Event()  # a result arrived, or the feeder finished
        self._room = anyio.Event()  # the window has room again (for the feeder)
        self._feeder: anyio.CancelScope | None = None

    def __aiter__(self) -> Self:
        return self

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def __anext__(self) -> R:
        while True:
            if self._ready:
                if self._feeder is not None:
                    self._room.set()  # an async source may read on once results are taken
                self._yielded += 1
                return self._ready.popleft()  # type: ignore[no-any-return]
            if self._error is not None:
                error, self._error = self._error, None
                self._stop()
                raise error
            if self._closed:
                raise StopAsyncIteration
            self._take_done()
            if self._ready or self._error is not None:
                continue
            if self._source is not None:
                if not self._exhausted and self._has_room():
                    self._feed_sync()
                    continue
            elif self._feeder is None:
                self._start_feeder()
            if self._exhausted and not self._inflight and not self._done:
                failure, self._source_error = self._source_error, None
                self._stop()
                if failure is not None:
                    raise failure
                raise StopAsyncIteration
            await self._wakeup.wait()
            self._wakeup = anyio.Event()

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError(
                "len() of an imap needs a source with a length (a list, a range...), not a generator "
                "or an async iterable; give the progress bar its total yourself"
            )
        return max(0, self._length - self._yielded)

    def _has_room(self) -> bool:
        # Results not consumed yet count too, a chunk's worth at a time.
        ready = -(-len(self._ready) // self._chunksize)
        return len(self._inflight) + len(self._done) + ready < self.window

    def _feed_sync(self) -> None:
        """Read one chunk from a sync source and submit it."""
        assert self._source is not None
        chunk: list[Any] = []
        try:
            # extend() keeps the items it took before the source raised.
            chunk.extend(itertools.islice(self._source, self._chunksize))
        except Exception as error:
            self._source_failed(error)  # the items read before it still run
        if len(chunk) < self._chunksize:
            self._exhausted = True
        if chunk:
            self._submit(chunk)

    def _start_feeder(self) -> None:
        assert self._tg is not None
        self._feeder = anyio.CancelScope()
        self._tg.start_soon(self._feed_async, self._feeder)

    async def _feed_async(self, scope: anyio.CancelScope) -> None:
        """Read an async source chunk by chunk while the window has room."""
        assert self._async_source is not None
        chunk: list[Any] = []
        with scope:
            try:
                while not (self._exhausted or self._closed):
                    while not self._has_room():
                        await self._room.wait()
                        self._room = anyio.Event()
                    chunk = []
                    while len(chunk) < self._chunksize:
                        try:
                            chunk.append(await self._async_source.__anext__())
                        except StopAsyncIteration:
                            self._exhausted = True
                            break
                    if chunk and not self._closed:
                        self._submit(chunk)
                    chunk = []
            except Exception as error:
                self._source_failed(error)
                if chunk and not self._closed:  # the items read before it still run
                    self._submit(chunk)
            finally:
                self._wakeup.set()

    def _submit(self, chunk: list[Any]) -> None:
        seq = self._submitted
        self._submitted += 1
        task = self._call.task(chunk, functools.partial(self._task_done, seq))
        try:
            self._backend.prepare(task)
        except Exception as error:  # an item that cannot be pickled
            self._source_failed(error)
            return
        self._inflight[seq] = task
        try:
            self._backend.submit(task)
        except Exception as error:  # the pool was closed or broke meanwhile
            del self._inflight[seq]
            self._source_failed(error)

    def _source_failed(self, error: BaseException) -> None:
        """No more items: what was submitted still comes out, then ``error``."""
        self._source_error = error
        self._exhausted = True

    def _task_done(self, seq: int, ok: bool, value: Any) -> None:
        if self._inflight.pop(seq, None) is not None:
            self._done[seq] = (ok, value)
            self._wakeup.set()

    def _take_done(self) -> None:
        while self._done:
            if self._ordered:
                if self._next not in self._done:
                    return
                seq = self._next
                self._next += 1
            else:
                seq = next(iter(self._done))
            ok, value = self._done.pop(seq)
            self._room.set()
            if not ok:
                self._error = value
                return
            self._ready.extend(value)

    def _stop(self) -> None:
        self._closed = True
        self._ready.clear()
        self._done.clear()
        if self._feeder is not None:
            self._feeder.cancel()
        if self._inflight:
            self._backend.cancel(list(self._inflight.values()), stop_running=True)
            self._inflight.clear()

    async def aclose(self) -> None:
        """Stop: drop the chunks not started and stop the running ones."""
        self._stop()


class _Call:
    """What every task of one call shares: the function and how to apply it."""

    def __init__(self, func: Callable[..., Any], kind: CallKind, backend: Backend) -> None:
        if not callable(func):
            raise TypeError(f"func must be callable, not {type(func).__name__}")
        self.func = func
        self.is_async = _is_async(func)
        self.kind = kind
        self.backend = backend
        self.context = contextvars.copy_context()  # the caller's, for the tasks' log records

    def task(self, payload: Any, done: Callable[[bool, Any], None]) -> Task:
        task = Task(self.func, self.kind, payload, self.is_async, done)
        task.context = self.context
        return task

    def submit_now(self, result: AsyncResult[Any], payloads: Iterable[Any]) -> None:
        """Prepare every task of ``result`` (on the loop), then submit them."""
        tasks = []
        for position, payload in enumerate(payloads):
            task = self.task(payload, functools.partial(result._task_done, position))
            self.backend.prepare(task)
            tasks.append(task)
        result._add(tasks)
        submitted = 0
        try:
            for task in tasks:
                self.backend.submit(task)
                submitted += 1
        except BaseException:
            self.backend.cancel(tasks[:submitted])
            raise

    async def submit(self, result: AsyncResult[Any], payloads: Iterable[Any], steps: _Steps | None = None) -> None:
        """Prepare every task of ``result``, then submit them, in slices.

        A payload that looks large is prepared in a worker thread; between slices
        the loop runs (``steps``: the caller's, if it has already worked in this
        loop step). A preparing (pickling) error raises before any task is
        submitted; if this is cancelled while submitting, the tasks submitted so
        far are cancelled.
        """
        backend = self.backend
        steps = steps or _Steps()
        tasks = []
        for position, payload in enumerate(payloads):
            task = self.task(payload, functools.partial(result._task_done, position))
            if backend.prepare_in_thread(task):
                await anyio.to_thread.run_sync(backend.prepare, task)
                steps.restart()
            else:
                backend.prepare(task)
                if steps.due():
                    await steps.pause()
            tasks.append(task)
        if result.ready():  # cancelled meanwhile (an AsyncResult of map_async)
            return
        result._add(tasks)
        submitted = 0
        try:
            for task in tasks:
                if result.ready():  # failed or cancelled meanwhile: the rest never run
                    break
                backend.submit(task)
                submitted += 1
                if steps.due():
                    await steps.pause()
        except BaseException:
            backend.cancel(tasks[:submitted])
            raise


class _Steps:
    """When a loop step that reads, prepares or submits has run long enough to yield."""

    __slots__ = ("end",)

    def __init__(self) -> None:
        self.end = time.perf_counter() + _STEP_SECONDS

    def due(self) -> bool:
        return time.perf_counter() >= self.end

    def restart(self) -> None:
        self.end = time.perf_counter() + _STEP_SECONDS

    async def pause(self) -> None:
        """Let the loop run other tasks, then start a new step."""
        await anyio.lowlevel.checkpoint()
        self.restart()


_MISSING: Any = object()  # a chunk's place in AsyncResult._values before its outcome


async def _wait(result: AsyncResult[R]) -> R:
    """Await a result; if this wait is cancelled or times out, cancel the call."""
    try:
        await result._event.wait()
    except BaseException:
        if not result.ready():
            result.cancel()
        raise
    return result._outcome()


_NO_DEADLINE = nullcontext()  # reusable


def _deadline(timeout: float | None) -> AbstractContextManager[Any]:
    return _NO_DEADLINE if timeout is None else anyio.fail_after(timeout)


def _check_chunksize(chunksize: int | None, allow_none: bool) -> int | None:
    if chunksize is None and allow_none:
        return None
    return _positive_int("chunksize", chunksize)


def _check_callbacks(callback: object, error_callback: object) -> None:
    for name, value in (("callback", callback), ("error_callback", error_callback)):
        if value is not None and not callable(value):
            raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")


def _options_for(backend: Backend, local: Mapping[str, object]) -> dict[str, Any]:
    """The local-process options the caller set, for a backend given as ``backend=``.

    An option left at its default is not set. One that is set must be listed in the
    backend's ``supported_options``: nothing is dropped silently.
    """
    options: dict[str, Any] = {}
    for name, value in local.items():
        if _is_default(value, LOCAL_OPTIONS[name]):
            continue
        if name not in backend.supported_options:
            raise TypeError(
                f"the {name} option configures local worker processes; {type(backend).__name__} cannot honour it"
                " (leave it out, or configure the backend itself)"
            )
        options[name] = value
    return options


def _is_default(value: object, default: object) -> bool:
    if value is default:
        return True
    if isinstance(default, tuple):  # initargs: any empty sequence
        return isinstance(value, (tuple, list)) and not value
    return type(value) is type(default) and value == default


def _list(iterable: object) -> list[Any]:
    if not isinstance(iterable, Iterable):
        raise TypeError(f"iterable must be an iterable or an async iterable, not {type(iterable).__name__}")
    return list(iterable)


async def _collect(iterable: object, steps: _Steps) -> list[Any]:
    """Read a sync or async iterable into a list, yielding to the loop between slices."""
    items: list[Any] = []
    if isinstance(iterable, AsyncIterable):
        async for item in iterable:
            items.append(item)
            if steps.due():
                await steps.pause()
        return items
    if not isinstance(iterable, Iterable):
        raise TypeError(f"iterable must be an iterable or an async iterable, not {type(iterable).__name__}")
    iterator = iter(iterable)
    while True:
        before = len(items)
        items.extend(itertools.islice(iterator, _READ_SLICE))
        if len(items) - before < _READ_SLICE:
            return items
        if steps.due():
            await steps.pause()


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """The chunks of ``items``, each sliced when it is taken."""
    return (items[i : i + size] for i in range(0, len(items), size))


for _cls in (AsyncResult, IMapIterator, Pool):
    _cls.__module__ = "aiomp"  # reprs name the public package
del _cls
