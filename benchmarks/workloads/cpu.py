"""cpu: 16 tasks of about 100 ms of pure-Python work; efficiency = serial time / (wall x processes)."""

from __future__ import annotations

import time
from functools import partial

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, rows
from benchmarks._report import fmt_fixed
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["serial", "aiomp", "mp.Pool", "PPE chunked", "PPE per item", "aiomultiprocess", "anyio", "trio-parallel"]
METRICS = [
    Metric("efficiency", "efficiency", "higher", fmt_fixed(2), Target(">= 0.95", lambda a, b: a >= 0.95)),
    Metric("wall_s", "wall s (median)", None, fmt_fixed(3)),
    Metric("serial_s", "serial s (best)", None, fmt_fixed(3)),
]


def calibrate(seconds: float) -> int:
    """Iterations of ``busy`` that take about ``seconds`` here (best of 3 probes)."""
    probe = 200_000
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        _work.busy(probe)
        best = min(best, time.perf_counter() - t0)
    return max(1, int(probe * seconds / best))


def _serial(work: list[int]) -> float:
    """The plain loop, on this thread: the numerator of the efficiency."""
    t0 = now()
    for n in work:
        _work.busy(n)
    return now() - t0


async def _measure(ctx: Ctx, work: list[int]) -> None:
    """One parallel run, with the serial loop timed just before and just after (the machine is shared: both
    figures must see the same load); the fastest serial run is the numerator."""
    runner, cell = ctx.runner, ctx.cell
    serials = [_serial(work)]
    async with runner.opened():
        await runner.warm()
        t0 = now()
        await runner.map(_work.busy, work)
        cell.samples.setdefault("wall_s", []).append(now() - t0)
    serials.append(_serial(work))
    cell.samples.setdefault("serial_s", []).extend(serials)
    cell.values["processes"] = 1 if runner.label == "serial" else runner.processes


def _finish(row: Cell) -> None:
    walls, serials, processes = row.samples.get("wall_s"), row.samples.get("serial_s"), row.values.get("processes")
    if walls and serials and isinstance(processes, int):
        wall, serial = median(walls), min(serials)
        row.values.update(wall_s=wall, serial_s=serial, efficiency=serial / (wall * processes))


def run(cfg: Config) -> WorkloadResult:
    n = calibrate(cfg.cpu_task_seconds)
    work = [n] * cfg.cpu_tasks
    cells = rows(cfg, LIBS, partial(_measure, work=work), "cpu", finish=_finish)
    notes = [
        f"{cfg.cpu_tasks} tasks of busy({n:,}), about {cfg.cpu_task_seconds * 1e3:.0f} ms each; wall: median of "
        f"{cfg.rounds} round(s); serial s: the fastest of the serial loops timed just before and after each of "
        "that row's parallel runs (the machine is shared); the serial row's efficiency is about 1 by definition",
    ]
    return WorkloadResult("cpu", "parallel efficiency, serial / (wall x processes)", METRICS, cells, notes)


WORKLOADS = {"cpu": run}
