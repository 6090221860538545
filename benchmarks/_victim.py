"""A victim program for the faults suite: ``python -m benchmarks._victim LOOP START_METHOD LIBRARY``.

It holds a lock of its library (a named semaphore: the resource tracker would report it if it
leaked) and a 2-worker pool whose two tasks print their pid with one ``os.write`` and never end,
one inside a C call that holds the GIL. The faults suite ends it from outside (a signal, Ctrl-C)
and watches its workers go. SIGUSR1 makes it call ``os._exit(3)``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import anyio
import anyio.to_thread

from benchmarks._config import anyio_backend
from benchmarks._work import astall, stall

LIBRARIES = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "trio-parallel"]


async def aiomp_victim(context: str) -> None:
    import aiomp

    async with aiomp.Lock(), aiomp.Pool(2, context=context) as pool:
        await pool.map(stall, [0, 1], chunksize=1)


async def trio_parallel_victim(context: str) -> None:
    import trio
    import trio_parallel

    with multiprocessing.get_context(context).Lock():
        worker_type = trio_parallel.WorkerType(context)
        async with trio_parallel.open_worker_context(worker_type=worker_type) as ctx, trio.open_nursery() as nursery:
            for kind in (0, 1):
                nursery.start_soon(partial(ctx.run_sync, stall, kind, kill_on_cancel=True))


async def mp_pool_victim(context: str) -> None:
    """``multiprocessing.Pool``, its blocking ``get`` in threads (any event loop)."""
    ctx = multiprocessing.get_context(context)
    with ctx.Lock(), ctx.Pool(2) as pool:  # a named semaphore of the same context, as in aiomp's victim
        results = [pool.apply_async(stall, (kind,)) for kind in (0, 1)]
        async with anyio.create_task_group() as tg:
            for result in results:
                tg.start_soon(partial(anyio.to_thread.run_sync, result.get, abandon_on_cancel=True))


async def asyncio_victim(library: str, context: str) -> None:
    """The same two tasks on a peer's 2-worker pool, driven from asyncio the usual way."""
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context(context)
    if library == "aiomultiprocess":
        import aiomultiprocess  # type: ignore[import-untyped, unused-ignore]

        aiomultiprocess.set_start_method(context)
        ctx = aiomultiprocess.core.get_context()
    with ctx.Lock():  # a named semaphore of the same context, as in aiomp's victim
        if library == "PPE":
            with ProcessPoolExecutor(2, mp_context=ctx) as executor:
                await asyncio.gather(*(loop.run_in_executor(executor, stall, kind) for kind in (0, 1)))
        else:  # one task per worker: with its default of 16, one worker would take both
            async with aiomultiprocess.Pool(processes=2, childconcurrency=1) as pool:
                await pool.map(astall, [0, 1])


def main(loop: str, context: str, library: str) -> None:
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(3))  # how the "os._exit" row ends it
    backend = anyio_backend(loop)
    if library == "aiomp":
        anyio.run(aiomp_victim, context, **backend)
    elif library == "trio-parallel":
        anyio.run(trio_parallel_victim, context, backend="trio")
    elif library == "mp.Pool":
        anyio.run(mp_pool_victim, context, **backend)
    else:
        anyio.run(asyncio_victim, library, context, **backend)


if __name__ == "__main__":
    main(*sys.argv[1:4])
