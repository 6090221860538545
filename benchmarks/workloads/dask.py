"""dask: aiomp's Dask backend against plain Dask futures, on one 2-worker LocalCluster.

Two figures per row, in one run each: **tiny**, ``map(inc, range(N))`` in tasks/s
(the cost per item: aiomp sends chunks, the peers one task per item), and **cpu**,
1,000 tasks of about 50 ms of pure-Python work (``busy(n)``, ``n`` calibrated here):
the wall time and the efficiency, serial time / (wall x 2 workers), where the serial
time is 1,000 x one task's time on this process (measured, best of 5).

Rows: ``aiomp`` is ``aiomp.Pool(backend=aiomp.DaskBackend(address))`` and
``await pool.map(func, items)``; ``client.map`` is an asynchronous
``distributed.Client``'s ``client.map(func, items, pure=False)`` then ``await
client.gather(futures)``; ``client.submit`` is one ``client.submit(func, x,
pure=False)`` per item, each future awaited in turn. The cluster (processes, one
thread per worker) is started once for all rows; its scheduler runs in this process,
as a LocalCluster's does. Skipped when ``distributed`` is not installed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from typing import Any

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, now, rows, skipped
from benchmarks._report import fmt_fixed, fmt_rate, fmt_text
from benchmarks._types import Metric, Target, WorkloadResult
from benchmarks.workloads.cpu import calibrate

LIBS = ["aiomp", "client.map", "client.submit"]
TITLE = "Dask: tiny-task map (tasks/s) and 1,000 CPU tasks of 50 ms on a 2-worker LocalCluster"
WORKERS = 2
CPU_TASKS = 1_000
CPU_TASKS_QUICK = 100
CPU_TASK_SECONDS = 0.05
# Peers send one task per item, at a few hundred tasks/s: they map fewer items.
TINY_PER_ITEM = 2_000
TINY_PER_ITEM_QUICK = 500
CELL_TIMEOUT = 600.0

METRICS = [
    Metric(
        "tiny_per_s",
        "tiny tasks/s",
        "higher",
        fmt_rate,
        Target(">= 10x best peer", lambda a, b: b is None or a >= 10 * b),
    ),
    Metric("tiny_items", "tiny items", None, fmt_text),
    Metric("cpu_wall_s", "cpu wall s", "lower", fmt_fixed(2)),
    Metric("cpu_efficiency", "cpu efficiency", "higher", fmt_fixed(2)),
]

Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], Any]


@asynccontextmanager
async def _aiomp(address: str) -> AsyncIterator[Mapper]:
    import aiomp

    async with aiomp.Pool(backend=aiomp.DaskBackend(address)) as pool:

        async def run(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            return await pool.map(func, items)

        yield run


@asynccontextmanager
async def _client(address: str, per_item: bool) -> AsyncIterator[Mapper]:
    import distributed

    async with distributed.Client(address, asynchronous=True, set_as_default=False) as client:

        async def by_map(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            futures = client.map(func, items, pure=False)
            return list(await client.gather(futures))

        async def by_submit(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
            futures = [client.submit(func, x, pure=False) for x in items]
            return [await future for future in futures]

        yield by_submit if per_item else by_map


ADAPTERS: dict[str, Callable[[str], AbstractAsyncContextManager[Mapper]]] = {
    "aiomp": _aiomp,
    "client.map": partial(_client, per_item=False),
    "client.submit": partial(_client, per_item=True),
}


async def _measure(ctx: Ctx, address: str, work: list[int]) -> None:
    cfg, cell = ctx.cfg, ctx.cell
    per_item = cell.lib != "aiomp"
    n = (TINY_PER_ITEM_QUICK if cfg.quick else TINY_PER_ITEM) if per_item else cfg.tiny_items
    items = list(range(n))
    async with ADAPTERS[cell.lib](address) as run:
        await run(_work.nap, [0.02] * (2 * WORKERS))  # every worker has run a task and imported _work
        t0 = now()
        out = await run(_work.inc, items)
        tiny = now() - t0
        if out != [x + 1 for x in items]:
            raise RuntimeError("map returned wrong results")
        t0 = now()
        await run(_work.busy, work)
        cpu = now() - t0
    cell.samples.update(tiny_s=[tiny], cpu_s=[cpu])
    cell.values.update(tiny_items=n, tiny_per_s=n / tiny, cpu_wall_s=cpu)


def _task_seconds(n: int) -> float:
    """One ``busy(n)`` on this process, best of 5."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        _work.busy(n)
        best = min(best, time.perf_counter() - t0)
    return best


def run(cfg: Config) -> WorkloadResult:
    try:
        from distributed import LocalCluster
    except ImportError:
        return WorkloadResult("dask", TITLE, METRICS, skipped(LIBS, "distributed is not installed"))
    n = calibrate(CPU_TASK_SECONDS)
    tasks = CPU_TASKS_QUICK if cfg.quick else CPU_TASKS
    work = [n] * tasks
    with contextlib.ExitStack() as stack:
        cluster = stack.enter_context(
            LocalCluster(
                n_workers=WORKERS,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=":0",
            )
        )
        address = cluster.scheduler_address
        measure = partial(_measure, address=address, work=work)
        cells = rows(cfg, LIBS, measure, "dask", rounds=1, timeout=CELL_TIMEOUT)
    serial = tasks * _task_seconds(n)
    for cell in cells:
        wall = cell.values.get("cpu_wall_s")
        if isinstance(wall, float):
            cell.values["cpu_efficiency"] = serial / (wall * WORKERS)
    result = WorkloadResult("dask", TITLE, METRICS, cells)
    result.notes = [
        f"a LocalCluster of {WORKERS} worker processes, one thread each, scheduler in this process; one run per figure",
        f"tiny: aiomp maps {cfg.tiny_items:,} items in chunks (chunksize=None); client.map and client.submit map "
        f"{TINY_PER_ITEM_QUICK if cfg.quick else TINY_PER_ITEM:,} items, one task each",
        f"cpu: {tasks:,} tasks of busy({n:,}), about {CPU_TASK_SECONDS * 1e3:.0f} ms each; efficiency = "
        f"{tasks:,} x one task's serial time ({serial / tasks * 1e3:.1f} ms, best of 5) / (wall x {WORKERS})",
    ]
    return result


WORKLOADS = {"dask": run}
