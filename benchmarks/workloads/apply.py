"""apply: many concurrent ``await pool.apply(add, (i, 1))`` (calls/s) and the sequential round trip."""

from __future__ import annotations

from functools import partial

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, gather, median, now, rows
from benchmarks._report import fmt_fixed, fmt_rate
from benchmarks._runners import Runner
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "anyio", "trio-parallel"]
METRICS = [
    Metric("calls_per_s", "calls/s (concurrent)", "higher", fmt_rate, Target(">= 50k calls/s", lambda a, b: a >= 50e3)),
    Metric("round_trip_us", "round trip us (median)", "lower", fmt_fixed(0), Target("<= 66 us", lambda a, b: a <= 66)),
]


async def _concurrent(runner: Runner, n: int) -> float:
    """Calls per second for ``n`` applies started at once, each from its own task."""
    t0 = now()
    results = await gather([partial(runner.apply, _work.add, (i, 1)) for i in range(n)])
    elapsed = now() - t0
    if results != [i + 1 for i in range(n)]:
        raise RuntimeError("apply returned wrong results")
    return n / elapsed


async def _measure(ctx: Ctx) -> None:
    runner, cfg, cell = ctx.runner, ctx.cfg, ctx.cell
    async with runner.opened():
        await runner.warm()
        cell.samples["calls_per_s"] = [await _concurrent(runner, cfg.apply_concurrent)]
        trips = cell.samples.setdefault("round_trip_s", [])
        for _ in range(cfg.apply_sequential):
            t0 = now()
            await runner.apply(_work.inc, (1,))
            trips.append(now() - t0)


def _finish(row: Cell) -> None:
    if row.samples.get("calls_per_s"):
        row.values["calls_per_s"] = median(row.samples["calls_per_s"])
    if row.samples.get("round_trip_s"):
        row.values["round_trip_us"] = median(row.samples["round_trip_s"]) * 1e6


def run(cfg: Config) -> WorkloadResult:
    cells = rows(cfg, LIBS, _measure, "apply", finish=_finish)
    notes = [
        f"{cfg.apply_concurrent:,} concurrent calls, each its own task (asyncio.gather; a nursery on trio), "
        f"median of {cfg.rounds} round(s); round trip: median of {cfg.apply_sequential} sequential calls x "
        f"{cfg.rounds} round(s); mp.Pool: apply_async + callback; PPE: run_in_executor; anyio: "
        "to_process.run_sync; trio-parallel: run_sync(kill_on_cancel=True)",
    ]
    return WorkloadResult("apply", "concurrent apply calls/s; sequential round trip", METRICS, cells, notes)


WORKLOADS = {"apply": run}
