"""startup: create a pool, time to the first result of one trivial task (fresh pool every time)."""

from __future__ import annotations

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, rows
from benchmarks._report import fmt_fixed
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "anyio", "trio-parallel"]
METRICS = [
    Metric(
        "startup_ms",
        "first result ms (median)",
        "lower",
        fmt_fixed(1),
        Target("<= 80 ms and below the best peer", lambda a, b: a <= 80 and (b is None or a < b)),
    ),
    Metric("min_ms", "min ms", None, fmt_fixed(1)),
]


async def _trial(ctx: Ctx) -> None:
    t0 = now()
    async with ctx.runner.opened():
        await ctx.runner.apply(_work.inc, (1,))
        ctx.cell.samples["startup_s"] = [now() - t0]


def _finish(row: Cell) -> None:
    times = row.samples.get("startup_s", [])[1:]  # the first trial pays one-off costs: not counted
    if times:
        row.values.update(startup_ms=median(times) * 1e3, min_ms=min(times) * 1e3)


def run(cfg: Config) -> WorkloadResult:
    cells = rows(cfg, LIBS, _trial, "startup", finish=_finish, rounds=cfg.startup_trials + 1)
    notes = [
        f"median of {cfg.startup_trials} fresh pools, the libraries taking turns, after one uncounted warm-up each "
        "(it pays imports in the parent and the forkserver's first fork), each on a fresh event loop in this "
        "process; anyio has no pool: its first run_sync starts a worker",
    ]
    return WorkloadResult("startup", "create pool -> first result", METRICS, cells, notes)


WORKLOADS = {"startup": run}
