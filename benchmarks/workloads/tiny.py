"""tiny: ``await pool.map(inc, range(100_000))`` in tasks/s (per-message overhead)."""

from __future__ import annotations

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, run_cell
from benchmarks._report import fmt_rate, fmt_text
from benchmarks._types import Metric, Target, WorkloadResult

LIBS = ["serial", "aiomp", "mp.Pool", "PPE chunked", "PPE per item", "aiomultiprocess", "anyio"]
METRICS = [
    Metric("tasks_per_s", "tasks/s", "higher", fmt_rate, Target(">= best peer", lambda a, b: b is None or a >= b)),
    Metric("items", "items", None, fmt_text),
]


async def _measure(ctx: Ctx) -> None:
    runner, cfg = ctx.runner, ctx.cfg
    n = cfg.per_item_items if runner.per_item else cfg.tiny_items
    items = list(range(n))
    expected = [x + 1 for x in items]
    ctx.cell.values["items"] = n
    async with runner.opened():
        await runner.warm()
        times = []
        for _ in range(cfg.repeats):
            t0 = now()
            out = await runner.map(_work.inc, items)
            times.append(now() - t0)
            if out != expected:
                raise RuntimeError("map returned wrong results")
        ctx.cell.samples["seconds"] = times
        ctx.cell.values["tasks_per_s"] = n / median(times)


def run(cfg: Config) -> WorkloadResult:
    cells = [run_cell(cfg, lib, _measure, tag="tiny") for lib in LIBS]
    notes = [
        f"{cfg.tiny_items:,} items; peers that send one message per item (PPE per item, aiomultiprocess, "
        f"anyio) map {cfg.per_item_items:,} items to keep the run short; median of {cfg.repeats} run(s)"
    ]
    return WorkloadResult("tiny", "map(inc, range(N)), tasks/s", METRICS, cells, notes)
