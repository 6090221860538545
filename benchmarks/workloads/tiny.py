"""tiny: ``await pool.map(inc, range(100_000))`` in tasks/s (per-message overhead)."""

from __future__ import annotations

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, rows
from benchmarks._report import fmt_rate, fmt_text
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["serial", "aiomp", "mp.Pool", "PPE chunked", "PPE per item", "aiomultiprocess", "anyio", "trio-parallel"]
METRICS = [
    Metric("tasks_per_s", "tasks/s", "higher", fmt_rate, Target(">= best peer", lambda a, b: b is None or a >= b)),
    Metric(
        "min_tasks_per_s",
        "worst map tasks/s",
        "higher",
        fmt_rate,
        Target(">= best peer, worst map too", lambda a, b: b is None or a >= b),
    ),
    Metric("items", "items", None, fmt_text),
]
MAPS = 2  # timed maps per cell


async def _measure(ctx: Ctx) -> None:
    runner, cfg = ctx.runner, ctx.cfg
    n = cfg.per_item_items if runner.per_item else cfg.tiny_items
    items = list(range(n))
    expected = [x + 1 for x in items]
    ctx.cell.values["items"] = n
    async with runner.opened():
        await runner.warm()
        for _ in range(MAPS):
            t0 = now()
            out = await runner.map(_work.inc, items)
            ctx.cell.samples.setdefault("seconds", []).append(now() - t0)
            if out != expected:
                raise RuntimeError("map returned wrong results")


def _finish(row: Cell) -> None:
    times, n = row.samples.get("seconds"), row.values.get("items")
    if times and isinstance(n, int):
        row.values.update(tasks_per_s=n / median(times), min_tasks_per_s=n / max(times))


def run(cfg: Config) -> WorkloadResult:
    cells = rows(cfg, LIBS, _measure, "tiny", finish=_finish)
    notes = [
        f"{cfg.tiny_items:,} items; peers that send one message per item (PPE per item, aiomultiprocess, anyio, "
        f"trio-parallel) map {cfg.per_item_items:,} items to keep the run short; median of {MAPS} maps x "
        f"{cfg.rounds} round(s), a fresh pool each round",
    ]
    return WorkloadResult("tiny", "map(inc, range(N)), tasks/s", METRICS, cells, notes, reference="serial")


WORKLOADS = {"tiny": run}
