"""One adapter per library, so that every workload is written once.

Each runner is used as ``async with runner.opened():`` (start the pool; on a normal exit close
it gracefully, on an exception or cancellation terminate it) and offers ``map``, ``apply`` and
``warm``. Blocking library calls run in a thread, the way an asyncio program would use them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import importlib.util
import multiprocessing.pool
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.to_process
import anyio.to_thread
import sniffio

from benchmarks import _work
from benchmarks._config import Config

T = TypeVar("T")

#: How long a graceful close or a terminate may take before the process reaper steps in.
STOP_TIMEOUT = 10.0


def chunksize_for(n_items: int, processes: int) -> int:
    """``multiprocessing.Pool.map``'s default chunk size, reused for ``ProcessPoolExecutor.map``."""
    chunks, extra = divmod(n_items, processes * 4)
    return max(1, chunks + bool(extra))


async def in_daemon_thread(fn: Callable[[], T], timeout: float) -> T:
    """Run ``fn()`` in a new daemon thread; raise ``TimeoutError`` after ``timeout`` seconds.

    ``anyio.to_thread`` threads are not daemons: one stuck in a hung library call (a hung pool's
    ``join``) would keep the interpreter from exiting. A daemon thread can be abandoned."""
    reply = _Reply()

    def target() -> None:
        try:
            reply.ok(fn())
        except BaseException as exc:
            reply.failed(exc)

    threading.Thread(target=target, name=f"bench-{getattr(fn, '__name__', 'call')}", daemon=True).start()
    with anyio.fail_after(timeout):
        return await reply.wait()  # type: ignore[no-any-return]


class Runner:
    name: ClassVar[str] = "?"
    #: True when the library sends one message per item (tiny uses fewer items for those).
    per_item: ClassVar[bool] = False

    def __init__(self, cfg: Config, processes: int, label: str | None = None) -> None:
        self.cfg = cfg
        self.processes = processes
        self.label = label or self.name

    def opened(self) -> AbstractAsyncContextManager[Any]:
        """Start the pool; close it on a normal exit, terminate it on an exception or cancellation."""
        raise NotImplementedError

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        """One ``apply`` per item, all at once (libraries without a map of their own)."""
        results: list[Any] = [None] * len(items)

        async def one(i: int, x: Any) -> None:
            results[i] = await self.apply(func, (x,))

        async with anyio.create_task_group() as tg:
            for i, x in enumerate(items):
                tg.start_soon(one, i, x)
        return results

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        raise NotImplementedError

    async def warm(self) -> None:
        """Start every worker and import the work module in it."""
        await self.map(_work.nap, [0.02] * (2 * self.processes))
        await self.apply(_work.inc, (1,))


class SerialRunner(Runner):
    """A plain loop on the event loop thread: the cost floor."""

    name = "serial"

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[SerialRunner]:
        yield self

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return [func(x) for x in items]

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return func(*args)

    async def warm(self) -> None:
        return None


class AiompRunner(Runner):
    name = "aiomp"

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[AiompRunner]:
        import aiomp

        async with aiomp.Pool(self.processes, context=self.cfg.start_method) as pool:
            self._pool = pool
            yield self

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(await self._pool.map(func, items))

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return await self._pool.apply(func, args)


def loop_caller() -> Callable[..., Any]:
    """``call(fn, *args)``, safe from any thread: runs ``fn(*args)`` soon on this event loop's thread."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    return asyncio.get_running_loop().call_soon_threadsafe


class _Reply:
    """A result that a library's own thread delivers, awaited on any event loop."""

    def __init__(self) -> None:
        self._call = loop_caller()
        self._event = anyio.Event()
        self._outcome: tuple[Any, BaseException | None] = (None, None)

    def _set(self, value: Any, exc: BaseException | None) -> None:
        self._outcome = (value, exc)
        self._event.set()

    def ok(self, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._call(self._set, value, None)

    def failed(self, exc: BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            self._call(self._set, None, exc)

    async def wait(self) -> Any:
        await self._event.wait()
        value, exc = self._outcome
        if exc is not None:
            raise exc
        return value


class MpPoolRunner(Runner):
    """``multiprocessing.Pool``: ``map`` blocks in a thread; ``apply`` is ``apply_async`` + callback."""

    name = "mp.Pool"

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[MpPoolRunner]:
        pool = await anyio.to_thread.run_sync(partial(self.cfg.context.Pool, self.processes))
        self._pool: multiprocessing.pool.Pool = pool
        try:
            yield self
        except BaseException:
            with anyio.CancelScope(shield=True):
                await in_daemon_thread(pool.terminate, STOP_TIMEOUT)
            raise
        pool.close()
        await in_daemon_thread(pool.join, STOP_TIMEOUT)

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return await anyio.to_thread.run_sync(self._pool.map, func, items, abandon_on_cancel=True)

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        reply = _Reply()
        self._pool.apply_async(func, args, callback=reply.ok, error_callback=reply.failed)
        return await reply.wait()


class PPERunner(Runner):
    """``ProcessPoolExecutor``: one ``run_in_executor`` per item + ``gather``."""

    name = "PPE per item"
    per_item = True

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[PPERunner]:
        ex = concurrent.futures.ProcessPoolExecutor(self.processes, mp_context=self.cfg.context)
        self._ex = ex
        try:
            yield self
        except BaseException:
            _terminate_executor(ex)
            raise
        await in_daemon_thread(ex.shutdown, STOP_TIMEOUT)

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self._ex, func, x) for x in items)))

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._ex, func, *args)


class PPEChunkedRunner(PPERunner):
    """``ProcessPoolExecutor.map`` with ``multiprocessing.Pool``'s chunk size, from a thread (any event loop)."""

    name = "PPE chunked"
    per_item = False

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        reply = _Reply()

        def done(fut: concurrent.futures.Future[Any]) -> None:
            exc = fut.exception()
            reply.ok(fut.result()) if exc is None else reply.failed(exc)

        self._ex.submit(func, *args).add_done_callback(done)
        return await reply.wait()

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        chunksize = chunksize_for(len(items), self.processes)
        call = partial(self._ex.map, func, items, chunksize=chunksize)
        return await anyio.to_thread.run_sync(lambda: list(call()), abandon_on_cancel=True)


def _terminate_executor(ex: concurrent.futures.ProcessPoolExecutor) -> None:
    terminate = getattr(ex, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(ex, "_processes", None) or {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        if proc.is_alive():
            proc.terminate()


class AiomultiprocessRunner(Runner):
    """``aiomultiprocess.Pool``: runs the ``async def`` twins of the work functions."""

    name = "aiomultiprocess"
    per_item = True

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[AiomultiprocessRunner]:
        import aiomultiprocess  # type: ignore[import-untyped, unused-ignore]

        aiomultiprocess.set_start_method(self.cfg.start_method)
        pool = aiomultiprocess.Pool(self.processes)
        self._pool = pool
        try:
            yield self
        except BaseException:
            pool.terminate()
            with anyio.move_on_after(STOP_TIMEOUT, shield=True):
                await pool.join()
            raise
        pool.close()
        with anyio.fail_after(STOP_TIMEOUT):
            await pool.join()

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(await self._pool.map(_work.async_twin(func), items))

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return await self._pool.apply(_work.async_twin(func), args)


def start_shared_helpers(cfg: Config) -> None:
    """aiomultiprocess keeps one manager process for its whole life: start it before any pool is counted."""
    if skip_reason("aiomultiprocess", cfg.loop):
        return
    import aiomultiprocess.core  # type: ignore[import-untyped, unused-ignore]

    aiomultiprocess.set_start_method(cfg.start_method)
    aiomultiprocess.core.get_manager()


class AnyioRunner(Runner):
    """``anyio.to_process.run_sync`` with a limiter of ``processes`` (it starts its own interpreters)."""

    name = "anyio"
    per_item = True

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[AnyioRunner]:
        # Workers belong to the event loop; each cell runs on a fresh loop, which kills them at its end.
        self._limiter = anyio.CapacityLimiter(self.processes)
        yield self

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return await anyio.to_process.run_sync(func, *args, limiter=self._limiter, cancellable=True)


class TrioParallelRunner(Runner):
    """``trio_parallel``: a worker context of the start method, ``run_sync(kill_on_cancel=True)`` per call."""

    name = "trio-parallel"
    per_item = True

    @asynccontextmanager
    async def opened(self) -> AsyncIterator[TrioParallelRunner]:
        import trio
        import trio_parallel

        worker_type = trio_parallel.WorkerType(self.cfg.start_method)
        async with trio_parallel.open_worker_context(worker_type=worker_type, grace_period=STOP_TIMEOUT) as ctx:
            self._ctx, self._limiter = ctx, trio.CapacityLimiter(self.processes)
            yield self

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return await self._ctx.run_sync(func, *args, kill_on_cancel=True, limiter=self._limiter)


RUNNERS: dict[str, type[Runner]] = {
    "serial": SerialRunner,
    "aiomp": AiompRunner,
    "mp.Pool": MpPoolRunner,
    "PPE": PPERunner,
    "PPE per item": PPERunner,
    "PPE chunked": PPEChunkedRunner,
    "aiomultiprocess": AiomultiprocessRunner,
    "anyio": AnyioRunner,
    "trio-parallel": TrioParallelRunner,
}

#: The module a row needs: without it the row is skipped (and says so), not failed.
REQUIRES = {
    "aiomultiprocess": "aiomultiprocess",
    "aioprocessing": "aioprocessing",
    "trio-parallel": "trio_parallel",
    "client.map": "distributed",
    "client.submit": "distributed",
}
#: Rows that only run on one kind of event loop (asyncio covers uvloop).
ASYNCIO_ONLY = {"PPE", "PPE per item", "aiomultiprocess", "aioprocessing", "cookbook", "client.map", "client.submit"}
TRIO_ONLY = {"trio-parallel"}


def skip_reason(label: str, loop: str) -> str | None:
    """Why row ``label`` cannot run here (a module is missing, or it needs another event loop), else None."""
    if label in ASYNCIO_ONLY and loop == "trio":
        return "needs asyncio: skipped on trio"
    if label in TRIO_ONLY and loop != "trio":
        return "trio's peer: runs with --loop trio"
    module = REQUIRES.get(label)
    if module is not None and importlib.util.find_spec(module) is None:
        return f"{module} not installed: skipped"
    return None


def make_runner(label: str, cfg: Config, processes: int) -> Runner:
    """The pool adapter of row ``label``; rows that are not pools get the plain loop (and ignore it)."""
    return RUNNERS.get(label, SerialRunner)(cfg, processes, label)
