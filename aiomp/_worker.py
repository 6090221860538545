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
asyncio loop, up to ``child_concurrency`` at once, while the socket keeps being
read so that more tasks and cancellations arrive; the worker drops back to the
plain loop once no coroutine is left.
"""

from __future__ import annotations

import itertools
import os
import pickle
import signal
import sys
import time
import traceback
import types
from collections import deque
from collections.abc import Callable, MutableSequence
from typing import TYPE_CHECKING, Any

from . import _lifeline, _wire
from ._serialize import dump_error, dumps, loads
from ._wire import Buffer, FrameReader

if TYPE_CHECKING:
    import asyncio

__all__ = ["worker_main"]

# Check the socket for cancellations at least this often between tasks.
_POLL_INTERVAL = 0.001
_FUNCTION_CACHE_SIZE = 64

Task = tuple[int, bytes, bytes, list[Buffer], int, bool]


class _ParentGone(Exception):
    """The parent closed its end of the socket: the worker has nobody to serve."""


class _Worker:
    def __init__(
        self,
        fd: int,
        marker: MutableSequence[int],
        slot: int,
        maxtasks: int | None,
        concurrency: int,
    ) -> None:
        self.fd = fd
        self.reader = FrameReader(fd)
        self.markers = _wire.Markers(marker, slot)
        self.left = maxtasks
        self.concurrency = concurrency
        self.queue: deque[Task] = deque()
        self.cancelled: set[int] = set()
        self.functions: dict[bytes, Callable[..., Any]] = {}
        self.stopping = False
        self.last_read = time.monotonic()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running: dict[int, asyncio.Task[Any]] = {}
        self.wake: asyncio.Event | None = None
        self.semaphore: asyncio.Semaphore | None = None
        self.gone = False
        # A task ran out of memory: the worker reports it and exits.
        self.out_of_memory = False

    # -- the plain loop --------------------------------------------------------

    def serve(self) -> None:
        while not (self.left == 0 or self.out_of_memory or (self.stopping and not self.queue)):
            if not self.queue:
                self.accept(self.reader.read_blocking())
                continue
            if time.monotonic() - self.last_read > _POLL_INTERVAL:
                self.accept(self.reader.read())
                continue
            if self.queue[0][5]:
                self.async_loop().run_until_complete(self.serve_async())
                if self.gone:
                    raise _ParentGone
            else:
                self.run(self.queue.popleft())

    def accept(self, frames: list[list[Buffer]]) -> None:
        """Take in messages from the parent."""
        self.last_read = time.monotonic()
        for frame in frames:
            message = pickle.loads(frame[0])
            kind = message[0]
            if kind == _wire.TASKS:
                buffers = frame[1:]
                at = 0
                for index, func, payload, nbuf, mode, is_async in message[1]:
                    self.queue.append((index, func, payload, buffers[at : at + nbuf], mode, is_async))
                    at += nbuf
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
        self.send(index, _wire.CANCELLED, b"", [], 0.0)

    def run(self, task: Task) -> None:
        index, func_data, payload, buffers, mode, _ = task
        if index in self.cancelled or not self.markers.start(index):
            self.skip(index)
            return
        start = time.perf_counter()
        try:
            func = self.function(func_data)
            value = _call(func, loads(payload, buffers), mode)
            if isinstance(value, types.CoroutineType):
                value = self.async_loop().run_until_complete(value)
        except MemoryError as error:
            self.markers.finish(index)
            self.send_out_of_memory(index, error, time.perf_counter() - start)
            return
        except BaseException as error:  # every failure goes to the caller
            self.markers.finish(index)
            self.send_error(index, error, time.perf_counter() - start)
        else:
            self.markers.finish(index)
            self.send_value(index, value, time.perf_counter() - start)
        if self.left is not None:
            self.left -= 1

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
        buffers: list[pickle.PickleBuffer] = []
        try:
            data = dumps(value, buffers)
        except MemoryError as error:
            del value, buffers
            self.send_out_of_memory(index, error, seconds)
            return
        except Exception as error:
            _note(error, "aiomp: the task's result could not be pickled")
            self.send_error(index, error, seconds)
            return
        self.send(index, _wire.OK, data, buffers, seconds)

    def send_error(self, index: int, error: BaseException, seconds: float) -> None:
        self.send(index, _wire.ERROR, dump_error(error), [], seconds)

    def send_out_of_memory(self, index: int, error: MemoryError, seconds: float) -> None:
        """Report a task that ran out of memory, then retire.

        What the task allocated may still be held (by module state, or by a
        heap too fragmented to shrink), so no further task runs here: the
        caller gets ``WorkerDiedError`` and a fresh worker takes this one's place.
        """
        if error.__traceback__ is not None:
            traceback.clear_frames(error.__traceback__)  # let go of the task's locals first
        self.out_of_memory = True
        self.send(index, _wire.OUT_OF_MEMORY, dump_error(error), [], seconds)

    def send(self, index: int, status: int, data: bytes, buffers: list[pickle.PickleBuffer], seconds: float) -> None:
        head = pickle.dumps((_wire.RESULT, index, status, data, len(buffers), seconds), 5)
        _wire.write_frame_blocking(self.fd, [head, *(b.raw() for b in buffers)])

    # -- the asyncio mode --------------------------------------------------------

    def async_loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            import asyncio  # only workers that run coroutines pay for it

            self.loop = asyncio.new_event_loop()
        return self.loop

    async def serve_async(self) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.concurrency)
        loop.add_reader(self.fd, self.on_readable)
        try:
            while not (self.gone or self.out_of_memory):
                while self.queue and not (self.gone or self.out_of_memory):
                    task = self.queue[0]
                    if not task[5] and not self.running:
                        return  # only plain tasks left: back to the plain loop
                    self.queue.popleft()
                    if task[5]:
                        self.start(task)
                    else:
                        self.run(task)
                if not self.running:
                    return
                self.wake.clear()
                await self.wake.wait()
        finally:
            loop.remove_reader(self.fd)
            for pending in self.running.values():
                pending.cancel()
            if self.running:
                await asyncio.gather(*self.running.values(), return_exceptions=True)

    def on_readable(self) -> None:
        try:
            self.accept(self.reader.read())
        except EOFError:
            self.gone = True
        assert self.wake is not None
        self.wake.set()

    def start(self, task: Task) -> None:
        index = task[0]
        if index in self.cancelled or not self.markers.start(index):
            self.skip(index)
            return
        job = self.async_loop().create_task(self.run_async(task))
        self.running[index] = job
        job.add_done_callback(lambda job: self.finished(index, job))

    async def run_async(self, task: Task) -> tuple[object, float]:
        import asyncio

        _, func_data, payload, buffers, mode, _ = task
        start = time.perf_counter()
        func = self.function(func_data)
        args = loads(payload, buffers)
        if mode == _wire.APPLY:
            value: object = await self.limited(func(*args[0], **args[1]))
        else:
            calls = (func(item) if mode == _wire.MAP else func(*item) for item in args)
            value = list(await asyncio.gather(*(self.limited(call) for call in calls)))
        return value, time.perf_counter() - start

    async def limited(self, call: Any) -> object:
        assert self.semaphore is not None
        async with self.semaphore:
            return await call

    def finished(self, index: int, job: asyncio.Task[tuple[object, float]]) -> None:
        del self.running[index]
        if job.cancelled():
            if not self.out_of_memory:  # else it was running: it fails as the worker exits
                self.send(index, _wire.CANCELLED, b"", [], 0.0)
        else:
            error = job.exception()
            if isinstance(error, MemoryError):
                self.send_out_of_memory(index, error, 0.0)
            elif error is not None:
                self.send_error(index, error, 0.0)
            else:
                value, seconds = job.result()
                self.send_value(index, value, seconds)
            if self.left is not None:
                self.left -= 1
        assert self.wake is not None
        self.wake.set()


def _call(func: Callable[..., Any], data: Any, mode: int) -> Any:
    if mode == _wire.APPLY:
        return func(*data[0], **data[1])
    if mode == _wire.MAP:
        return list(map(func, data))
    return list(itertools.starmap(func, data))


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
) -> None:
    """The target of every worker process."""
    # The parent decides what Ctrl-C means; a worker must not print a traceback.
    # The parent started it with SIGINT blocked, so one that came meanwhile is
    # pending: ignoring the signal before unblocking it discards that one too.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    if lifeline is not None:
        _lifeline.arm(lifeline)  # die with the parent, however it ends
    if niceness and hasattr(os, "nice"):
        # Below the parent's priority: its event loop wins the CPU when they compete.
        os.nice(niceness)
    if logs is not None:
        from ._logs import install

        install(logs)  # before the initializer, whose records count too
    fd = conn.fileno()
    os.set_blocking(fd, False)
    if init is not None:
        try:
            func_data, initargs = loads(init) if isinstance(init, bytes) else init
            loads(func_data)(*initargs)
        except BaseException as error:
            head = pickle.dumps((_wire.INIT_FAILED, dump_error(error)), 5)
            _wire.write_frame_blocking(fd, [head])
            sys.exit(1)
    _wire.write_frame_blocking(fd, [pickle.dumps((_wire.READY, os.getpid()), 5)])
    worker = _Worker(fd, marker, slot, maxtasks, concurrency)
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
