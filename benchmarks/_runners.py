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
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any, ClassVar

import anyio
import anyio.to_process
import anyio.to_thread

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._threads import in_daemon_thread, settle

#: How long a graceful close or a terminate may take before the process reaper steps in.
STOP_TIMEOUT = 10.0


def chunksize_for(n_items: int, processes: int) -> int:
    """``multiprocessing.Pool.map``'s default chunk size, reused for ``ProcessPoolExecutor.map``."""
    chunks, extra = divmod(n_items, processes * 4)
    return max(1, chunks + bool(extra))


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
        raise NotImplementedError

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


def _from_thread(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], value: Any, failed: bool) -> None:
    exc = value if failed else None
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(settle, fut, None if failed else value, exc)


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
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pool.apply_async(
            func,
            args,
            callback=partial(_from_thread, loop, fut, failed=False),
            error_callback=partial(_from_thread, loop, fut, failed=True),
        )
        return await fut


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
    """``ProcessPoolExecutor.map`` with ``multiprocessing.Pool``'s chunk size, from a thread."""

    name = "PPE chunked"
    per_item = False

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
    if missing_module("aiomultiprocess"):
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

    async def map(self, func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        results: list[Any] = [None] * len(items)

        async def one(i: int, x: Any) -> None:
            results[i] = await anyio.to_process.run_sync(func, x, limiter=self._limiter, cancellable=True)

        async with anyio.create_task_group() as tg:
            for i, x in enumerate(items):
                tg.start_soon(one, i, x)
        return results

    async def apply(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return await anyio.to_process.run_sync(func, *args, limiter=self._limiter, cancellable=True)


RUNNERS: dict[str, type[Runner]] = {
    "serial": SerialRunner,
    "idle": SerialRunner,
    "aiomp": AiompRunner,
    "mp.Pool": MpPoolRunner,
    "PPE": PPERunner,
    "PPE per item": PPERunner,
    "PPE chunked": PPEChunkedRunner,
    "aiomultiprocess": AiomultiprocessRunner,
    "anyio": AnyioRunner,
    # no pool: bigmsg's rows, whose queues and pipes come from benchmarks.primitives' kits
    "mp to_thread": SerialRunner,
    "aioprocessing": SerialRunner,
    # no pool either: the dask workload's peers, which it drives itself (workloads/dask.py)
    "client.map": SerialRunner,
    "client.submit": SerialRunner,
}

#: The module a row needs: without it the row is skipped (and says so), not failed.
REQUIRES = {
    "aiomultiprocess": "aiomultiprocess",
    "aioprocessing": "aioprocessing",
    "client.map": "distributed",
    "client.submit": "distributed",
}


def missing_module(label: str) -> str | None:
    """The module that row ``label`` needs if it is not installed, else None."""
    module = REQUIRES.get(label)
    return module if module is not None and importlib.util.find_spec(module) is None else None


def make_runner(label: str, cfg: Config, processes: int) -> Runner:
    return RUNNERS[label](cfg, processes, label)
