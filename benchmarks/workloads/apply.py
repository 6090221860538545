"""apply: many concurrent ``await pool.apply(add, (i, 1))`` (calls/s) and the sequential round trip."""

from __future__ import annotations

import asyncio

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, run_cell
from benchmarks._report import fmt_fixed, fmt_rate
from benchmarks._runners import Runner
from benchmarks._types import Metric, Target, WorkloadResult

LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "anyio"]
METRICS = [
    Metric("calls_per_s", "calls/s (concurrent)", "higher", fmt_rate, Target(">= 50k calls/s", lambda a, b: a >= 50e3)),
    Metric("round_trip_us", "round trip us (median)", "lower", fmt_fixed(0), Target("<= 66 us", lambda a, b: a <= 66)),
]


async def _concurrent(runner: Runner, n: int) -> float:
    """Calls per second for ``n`` applies started at once, each from its own task."""
    results: list[int] = [0] * n

    async def one(i: int) -> None:
        results[i] = await runner.apply(_work.add, (i, 1))

    # asyncio.gather: the cheapest way to start a task per call on asyncio and
    # uvloop (an anyio task group costs about 40 us a task on this kind of
    # machine, which would cap every library near 25k calls/s).
    t0 = now()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = now() - t0
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError("apply returned wrong results")
    return n / elapsed


async def _round_trips(runner: Runner, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = now()
        await runner.apply(_work.inc, (1,))
        times.append(now() - t0)
    return times


async def _measure(ctx: Ctx) -> None:
    runner, cfg, cell = ctx.runner, ctx.cfg, ctx.cell
    async with runner.opened():
        await runner.warm()
        rates = [await _concurrent(runner, cfg.apply_concurrent) for _ in range(cfg.repeats)]
        cell.samples["calls_per_s"] = rates
        cell.values["calls_per_s"] = median(rates)
        trips = await _round_trips(runner, cfg.apply_sequential)
        cell.samples["round_trip_s"] = trips
        cell.values["round_trip_us"] = median(trips) * 1e6


def run(cfg: Config) -> WorkloadResult:
    cells = [run_cell(cfg, lib, _measure, tag="apply") for lib in LIBS]
    notes = [
        f"{cfg.apply_concurrent:,} concurrent calls (median of {cfg.repeats}); {cfg.apply_sequential} "
        "sequential calls; each concurrent call is its own task (asyncio.gather); "
        "mp.Pool uses apply_async + callback, PPE run_in_executor, anyio to_process.run_sync"
    ]
    return WorkloadResult("apply", "concurrent apply calls/s; sequential round trip", METRICS, cells, notes)
