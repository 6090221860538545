"""The worker process: run tasks that arrive on the socket, send back results.

The worker is single-threaded and takes tasks in the order they arrive. Before it
starts a task it writes the task's index into its slot of a shared array (the
*start marker*), so if it dies the parent knows exactly which tasks it had started
(they fail with ``WorkerDiedError``) and which it had only received (they go to
another worker and run once). It also records the plain task it finished last,
before sending its result, so cancelling a task that has finished never kills
the worker. Each result is written as soon as it exists, so a
crash never loses a result that was already computed by an earlier task.

Plain functions run inline. ``async def`` functions run on the worker's own
event loop (asyncio's, uvloop's or trio's: ``child_loop``), up to
``child_concurrency`` at once, while the socket keeps being read so that more
tasks and cancellations arrive; the worker drops back to the plain loop once no
coroutine is left.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import signal
import sys
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, MutableSequence

from . import _fd, _frames, _lifeline, _loops, _serialize, _wire
from ._serialize import Packed, dump_error, loads

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    import asyncio
    from typing import Any, TypeVar

    import anyio

    R = TypeVar("R")


__all__ = ["forget_wakeup_fd", "worker_main"]

# Check the socket for cancellations at least this often between tasks.
_POLL_INTERVAL = 0.001
_FUNCTION_CACHE_SIZE = 64
# How long an idle worker polls its socket before it sleeps on it: a caller that awaits
# each result sends the next call within this (measured here: the round trip of a lone
# apply went from about 220 to 115 µs on an idle 2-core VM, where waking a sleeping CPU is slow).
_SPIN_SECONDS = 0.0001

Task = tuple[int, bytes, Packed, int, bool]  # index, function, payload, mode, is_async


class _ParentGone(Exception):
    """The parent closed its end of the socket: the worker has nobody to serve."""


class _Worker:
    def __init__(
        self,
        sock: Any,
        marker: MutableSequence[int],
        slot: int,
        maxtasks: int | None,
        concurrency: int,
        child_loop: _loops.Loop = ("asyncio", {}),
        max_memory: int | None = None,
    ) -> None:
        self.fd = sock.fileno()
        self.max_memory = max_memory
        # Over max_memory after a task: it starts no more and exits once idle.
        self.retiring = False
        self.reader = _frames.Reader(sock, exact=False)
        self.writer = _frames.Writer(sock)
        self.markers = _wire.Markers(marker, slot)
        self.left = maxtasks
        self.concurrency = concurrency
        self.queue: deque[Task] = deque()
        self.cancelled: set[int] = set()
        self.functions: dict[bytes, Callable[..., Any]] = {}
        self.stopping = False
        self.last_read = time.monotonic()
        self.child_loop = child_loop
        self.loop: asyncio.AbstractEventLoop | None = None
        # The async tasks running now, each in a cancel scope of its own.
        self.running: dict[int, anyio.CancelScope] = {}
        self.wake: anyio.Event | None = None
        self.semaphore: anyio.Semaphore | None = None
        self.gone = False
        # A task ran out of memory: the worker reports it and exits.
        self.out_of_memory = False

    # -- the plain loop --------------------------------------------------------

    def serve(self) -> None:
        while not (self.left == 0 or self.out_of_memory or self.retiring or (self.stopping and not self.queue)):
            if not self.queue:
                frame = self.next_frame()
                self.accept([frame, *self.reader.take_buffered()])  # and what came with it
                continue
            if time.monotonic() - self.last_read > _POLL_INTERVAL:
                self.accept(self.read_more())
                continue
            if self.queue[0][4]:
                self.on_loop(self.serve_async)
                if self.gone:
                    raise _ParentGone
            else:
                self.run(self.queue.popleft())

    def next_frame(self) -> _frames.Frame:
        """Wait for the parent's next message: briefly awake (the next call of a caller
        that awaits each result comes within microseconds, and waking a sleeping CPU
        costs more than that), then asleep on the socket."""
        reader = self.reader
        deadline = time.perf_counter() + _SPIN_SECONDS
        while True:
            frame = reader.read()
            if frame is not None or time.perf_counter() > deadline:
                break
        if frame is None:
            frame = reader.read_blocking()
            assert frame is not None  # no deadline
        return frame

    def read_more(self) -> list[_frames.Frame]:
        """The frames that are whole now (one read from the socket)."""
        return self.reader.read_all()

    def accept(self, frames: list[_frames.Frame]) -> None:
        """Take in messages from the parent."""
        self.last_read = time.monotonic()
        for frame in frames:
            objects = _serialize.unpack(frame)
            message = objects[0].load()
            kind = message[0]
            if kind == _wire.TASKS:
                for (index, func, mode, is_async), payload in zip(message[1], objects[1:], strict=True):
                    self.queue.append((index, func, payload, mode, is_async))
            elif kind == _wire.CANCEL:
                self.cancel(message[1])
            elif kind == _wire.STOP:
                self.stopping = True
            elif kind == _wire.LEVELS:
                from ._logs import apply_levels

                apply_levels(message[1])

    def cancel(self, indexes: list[int]) -> None:
        queued = {task[0] for task in self.queue}
        for index in indexes:
            if index in self.running:
                self.running[index].cancel()
            elif index in queued:
                self.cancelled.add(index)

    def skip(self, index: int) -> None:
        """Acknowledge a cancelled task instead of running it."""
        self.cancelled.discard(index)
        self.markers.finish(index)
        self.send(index, _wire.CANCELLED, None, 0.0)

    def run(self, task: Task) -> None:
        index, func_data, payload, mode, _ = task
        if index in self.cancelled or not self.markers.start(index):
            self.skip(index)
            return
        start = time.perf_counter()
        token = _wire.TASK.set(index)
        try:
            func = self.function(func_data)
            value = _call(func, payload.load(), mode)
            if isinstance(value, types.CoroutineType):
                value = self.on_loop(functools.partial(_await, value))
        except MemoryError as error:
            self.markers.finish(index)
            self.send_out_of_memory(index, error, time.perf_counter() - start)
            return
        except BaseException as error:  # every failure goes to the caller
            self.markers.finish(index)
            self.check_memory()
            self.send_error(index, error, time.perf_counter() - start)
        else:
            self.markers.finish(index)
            self.check_memory()
            self.send_value(index, value, time.perf_counter() - start)
        finally:
            _wire.TASK.reset(token)
        if self.left is not None:
            self.left -= 1

    def check_memory(self) -> None:
        """Retire if over ``max_memory`` after a task: say so (before its result), take no more."""
        if self.max_memory is None or self.retiring or resident_memory() <= self.max_memory:
            return
        self.retiring = True
        self.writer.queue(_wire.message((_wire.RETIRING,)))
        self.writer.flush_blocking()

    def function(self, data: bytes) -> Callable[..., Any]:
        func = self.functions.get(data)
        if func is None:
            func = loads(data)
            if len(self.functions) >= _FUNCTION_CACHE_SIZE:
                del self.functions[next(iter(self.functions))]
            self.functions[data] = func
        return func

    # -- results ---------------------------------------------------------------

    def send_value(self, index: int, value: object, seconds: float) -> None:
        try:
            # Small and without buffers (the usual case): one object, the value inside.
            buffers: list[Any] = []
            whole = _serialize.dumps((_wire.RESULT, index, _wire.OK, seconds, value), buffers)
            if not buffers and len(whole) < _serialize.LARGE:
                self.writer.queue(_frames.Frame([whole]))
                self.writer.flush_blocking()
                return
            del whole, buffers
            data = _serialize.encode(value)
        except MemoryError as error:
            del value
            self.send_out_of_memory(index, error, seconds)
            return
        except Exception as error:
            _note(error, "aiomp: the task's result could not be pickled")
            self.send_error(index, error, seconds)
            return
        self.send(index, _wire.OK, data, seconds)

    def send_error(self, index: int, error: BaseException, seconds: float) -> None:
        self.send(index, _wire.ERROR, _serialize.encode(dump_error(error)), seconds)

    def send_out_of_memory(self, index: int, error: MemoryError, seconds: float) -> None:
        """Report a task that ran out of memory, then retire.

        What the task allocated may still be held (by module state, or by a
        heap too fragmented to shrink), so no further task runs here: the
        caller gets ``WorkerDiedError`` and a fresh worker takes this one's place.
        """
        if error.__traceback__ is not None:
            import traceback

            traceback.clear_frames(error.__traceback__)  # let go of the task's locals first
        self.out_of_memory = True
        self.send(index, _wire.OUT_OF_MEMORY, _serialize.encode(dump_error(error)), seconds)

    def send(self, index: int, status: int, value: _serialize.Encoded | None, seconds: float) -> None:
        """Send a result: the task's value (or error), or nothing for a cancelled task."""
        values = () if value is None else (value,)
        self.writer.queue(_wire.message((_wire.RESULT, index, status, seconds), *values))
        self.writer.flush_blocking()

    # -- the async mode ----------------------------------------------------------
    #
    # Written on anyio, so one code path serves every child_loop. asyncio and uvloop
    # keep one loop for the worker's life (objects a task leaves behind stay usable);
    # trio has no loop to keep, so each stretch of async tasks is one trio.run.

    def on_loop(self, func: Callable[[], Coroutine[Any, Any, R]]) -> R:
        """Run ``func()`` to completion on this worker's ``child_loop``."""
        if self.child_loop[0] == "trio":
            return _loops.run(self.child_loop, func)
        if self.loop is None:
            self.loop = _loops.new_asyncio_loop(self.child_loop)
        return self.loop.run_until_complete(func())

    async def serve_async(self) -> None:
        """Run async tasks (and plain ones between them) until no coroutine is left."""
        import anyio

        self.semaphore = anyio.Semaphore(self.concurrency)
        reading = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.read_async, reading)
            try:
                while not (self.gone or self.out_of_memory):
                    while self.queue and not (self.gone or self.out_of_memory or self.retiring):
                        task = self.queue[0]
                        if not task[4] and not self.running:
                            return  # only plain tasks left: back to the plain loop
                        self.queue.popleft()
                        if task[4]:
                            self.start(task, tg)
                        else:
                            self.run(task)
                    if not self.running:
                        return
                    self.wake = anyio.Event()
                    await self.wake.wait()
            finally:
                for scope in self.running.values():
                    scope.cancel()
                reading.cancel()

    async def read_async(self, scope: Any) -> None:
        with scope:
            while True:
                await _fd.wait_readable(self.fd)
                try:
                    self.accept(self.read_more())
                except EOFError:
                    self.gone = True
                    return
                finally:
                    self.wake_up()

    def wake_up(self) -> None:
        if self.wake is not None:
            self.wake.set()

    def start(self, task: Task, tg: Any) -> None:
        import anyio

        index = task[0]
        if index in self.cancelled or not self.markers.start(index):
            self.skip(index)
            return
        scope = anyio.CancelScope()
        self.running[index] = scope
        tg.start_soon(self.run_job, task, scope)

    async def run_job(self, task: Task, scope: Any) -> None:
        import anyio

        index = task[0]
        _wire.TASK.set(index)  # this job's own context (a task of its own)
        outcome: tuple[bool, object, float] | None = None
        try:
            with scope:
                try:
                    value, seconds = await self.run_async(task)
                except anyio.get_cancelled_exc_class():
                    raise
                except BaseException as error:  # every failure goes to the caller
                    outcome = (False, error, 0.0)
                else:
                    outcome = (True, value, seconds)
        finally:
            del self.running[index]
            self.wake_up()
        if outcome is None:  # its own scope was cancelled: the parent cancelled it
            if not self.out_of_memory:  # else it was running: it fails as the worker exits
                self.send(index, _wire.CANCELLED, None, 0.0)
            return
        ok, value, seconds = outcome
        self.check_memory()
        if ok:
            self.send_value(index, value, seconds)
        elif isinstance(value, MemoryError):
            self.send_out_of_memory(index, value, seconds)
        else:
            assert isinstance(value, BaseException)
            self.send_error(index, value, seconds)
        if self.left is not None:
            self.left -= 1

    async def run_async(self, task: Task) -> tuple[object, float]:
        import anyio

        _, func_data, payload, mode, _ = task
        start = time.perf_counter()
        func = self.function(func_data)
        args = payload.load()
        if mode == _wire.APPLY:
            value: object = await self.limited(func(*args[0], **args[1]))
            return value, time.perf_counter() - start
        calls = [func(item) if mode == _wire.MAP else func(*item) for item in args]
        results: list[object] = [None] * len(calls)

        async def one(position: int, call: Any) -> None:
            results[position] = await self.limited(call)

        try:
            async with anyio.create_task_group() as tg:
                for position, call in enumerate(calls):
                    tg.start_soon(one, position, call)
        except anyio.get_cancelled_exc_class():
            raise
        except BaseException as group:  # the first item's own error, as for a plain map
            raise _first_error(group) from None
        finally:
            for call in calls:  # any never started: no "never awaited" warning
                getattr(call, "close", lambda: None)()
        return results, time.perf_counter() - start

    async def limited(self, call: Any) -> object:
        assert self.semaphore is not None
        async with self.semaphore:
            return await call


async def _await(value: Awaitable[R]) -> R:
    return await value


def _first_error(error: BaseException) -> BaseException:
    """The first leaf of an exception group (anyio's task groups raise groups)."""
    while isinstance(getattr(error, "exceptions", None), tuple) and error.exceptions:  # type: ignore[attr-defined]
        error = error.exceptions[0]  # type: ignore[attr-defined]
    return error


def _call(func: Callable[..., Any], data: Any, mode: int) -> Any:
    if mode == _wire.APPLY:
        return func(*data[0], **data[1])
    if mode == _wire.MAP:
        return list(map(func, data))
    return list(itertools.starmap(func, data))


def resident_memory() -> int:
    """This process's resident set size in bytes (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except OSError:  # pragma: no cover - not Linux
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def forget_wakeup_fd() -> None:
    """A child forked from a running event loop inherits its signal wakeup fd: drop it.

    Otherwise a loop started in the child (trio's above all) finds a wakeup fd it did
    not set, warns that it may collide with another library, and writes into the
    parent loop's socket on every signal.
    """
    with contextlib.suppress(ValueError):  # not the main thread: nothing was inherited there
        signal.set_wakeup_fd(-1)


def _note(error: BaseException, text: str) -> None:
    if hasattr(error, "add_note"):
        error.add_note(text)


def worker_main(
    conn: Any,
    marker: MutableSequence[int],
    slot: int,
    init: bytes | tuple[bytes, tuple[Any, ...]] | None,
    maxtasks: int | None,
    concurrency: int,
    niceness: int = 0,
    logs: tuple[Any, Any] | None = None,
    lifeline: Any = None,
    child_loop: _loops.Loop = ("asyncio", {}),
    max_memory: int | None = None,
) -> None:
    """The target of every worker process."""
    # The parent decides what Ctrl-C means; a worker must not print a traceback.
    # The parent started it with SIGINT blocked, so one that came meanwhile is
    # pending: ignoring the signal before unblocking it discards that one too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forget_wakeup_fd()
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if lifeline is not None:
        _lifeline.arm(lifeline)  # die with the parent, however it ends
    if niceness and hasattr(os, "nice"):
        # Below the parent's priority: its event loop wins the CPU when they compete.
        os.nice(niceness)
    if logs is not None:
        from ._logs import install

        install(logs, _wire.Markers(marker, slot).count_logged)  # before the initializer, whose records count too
    conn.setblocking(False)
    writer = _frames.Writer(conn)
    if init is not None:
        try:
            func_data, initargs = loads(init) if isinstance(init, bytes) else init
            loads(func_data)(*initargs)
        except BaseException as error:
            writer.queue(_wire.message((_wire.INIT_FAILED,), _serialize.encode(dump_error(error))))
            writer.flush_blocking()
            sys.exit(1)
    writer.queue(_wire.message((_wire.READY, os.getpid())))
    writer.flush_blocking()
    worker = _Worker(conn, marker, slot, maxtasks, concurrency, child_loop, max_memory)
    try:
        worker.serve()
    except (_ParentGone, EOFError, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        if worker.loop is not None:
            worker.loop.close()
        conn.close()
    if worker.out_of_memory:
        sys.exit(_wire.EXIT_OUT_OF_MEMORY)
