"""cancel: cancel calls that are running, then time how soon the pool runs a new call.

Each library runs ``processes`` calls of ``nap(5)`` (one per worker) in a task group, cancels it
after 0.3 s, and times (a) how long the cancellation takes to return and (b) from the cancel to the
result of a fresh ``apply(inc, (1,))``. A library that stops the running calls (kills or replaces
their workers) answers the new call at once; one that only abandons them answers when a nap ends.
trio's peer is ``trio_parallel.run_sync(kill_on_cancel=True)``; anyio's ``to_process.run_sync`` is
called with ``cancellable=True``.
"""

from __future__ import annotations

import anyio

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, rows
from benchmarks._report import fmt_fixed
from benchmarks._types import Cell, Metric, WorkloadResult

LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "anyio", "trio-parallel"]
NAP = 5.0
METRICS = [
    Metric("cancel_ms", "cancel returns ms", "lower", fmt_fixed(1)),
    Metric("next_ms", "cancel -> next result ms", "lower", fmt_fixed(1)),
]


async def _measure(ctx: Ctx) -> None:
    runner, cell = ctx.runner, ctx.cell
    async with runner.opened():
        await runner.warm()
        async with anyio.create_task_group() as tg:
            for _ in range(runner.processes):
                tg.start_soon(runner.apply, _work.nap, (NAP,))
            await anyio.sleep(0.3)
            t0 = now()
            tg.cancel_scope.cancel()
        cell.samples.setdefault("cancel_s", []).append(now() - t0)
        with anyio.move_on_after(ctx.cfg.hang_timeout) as scope:
            await runner.apply(_work.inc, (1,))
            cell.samples.setdefault("next_s", []).append(now() - t0)
        if scope.cancelled_caught:
            cell.notes.append(f"no next result within {ctx.cfg.hang_timeout:g} s of the cancel")


def _finish(row: Cell) -> None:
    for key in ("cancel", "next"):
        if row.samples.get(f"{key}_s"):
            row.values[f"{key}_ms"] = median(row.samples[f"{key}_s"]) * 1e3


def run(cfg: Config) -> WorkloadResult:
    cells = rows(cfg, LIBS, _measure, "cancel", finish=_finish, timeout=cfg.hang_timeout + 4 * NAP + 30)
    notes = [
        f"{cfg.processes} calls of nap({NAP:g}) cancelled after 0.3 s; median of {cfg.rounds} round(s); a next "
        f"result near {NAP * 1e3 - 300:.0f} ms means the cancelled calls ran on to their end",
    ]
    return WorkloadResult("cancel", "cancel running calls; how soon a new call runs", METRICS, cells, notes)


WORKLOADS = {"cancel": run}
