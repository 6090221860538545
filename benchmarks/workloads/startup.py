"""startup: create a pool, time to the first result of one trivial task (fresh pool every time)."""

from __future__ import annotations

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, merge_cells, now, run_cell
from benchmarks._report import fmt_fixed
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "anyio"]
METRICS = [
    Metric("startup_ms", "first result ms (median)", "lower", fmt_fixed(1), Target("<= 80 ms", lambda a, b: a <= 80)),
    Metric("min_ms", "min ms", None, fmt_fixed(1)),
]


async def _trial(ctx: Ctx) -> None:
    runner = ctx.runner
    t0 = now()
    async with runner.opened():
        await runner.apply(_work.inc, (1,))
        ctx.cell.samples["startup_s"] = [now() - t0]


def _row(cfg: Config, lib: str) -> Cell:
    # The first trial pays one-off costs (imports in the parent, the forkserver's first fork): not counted.
    warm = run_cell(cfg, lib, _trial, tag="startup warm-up")
    trials = [run_cell(cfg, lib, _trial, tag="startup") for _ in range(cfg.startup_trials)]
    cell = merge_cells(lib, trials)
    cell.error = cell.error or warm.error
    times = cell.samples.get("startup_s", [])
    if times:
        cell.values["startup_ms"] = median(times) * 1e3
        cell.values["min_ms"] = min(times) * 1e3
    return cell


def run(cfg: Config) -> WorkloadResult:
    cells = [_row(cfg, lib) for lib in LIBS]
    notes = [
        f"median of {cfg.startup_trials} fresh pools (after one uncounted warm-up), each on a fresh event "
        "loop; anyio has no pool: its first run_sync starts a worker"
    ]
    return WorkloadResult("startup", "create pool -> first result", METRICS, cells, notes)
