"""lag: how late a 1 ms ticker wakes while 20,000-item maps run back to back."""

from __future__ import annotations

import anyio

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, lag_figures, merge_cells, now, rows, ticking
from benchmarks._report import fmt_fixed, fmt_text
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["idle", "aiomp", "mp.Pool", "PPE chunked", "PPE per item", "aiomultiprocess", "anyio", "trio-parallel"]


def _metrics(sizes: list[int]) -> list[Metric]:
    metrics = []
    for n in sizes:
        metrics += [
            Metric(f"lag_p99_ms@{n}", f"p99 ms ({n}w)", "lower", fmt_fixed(2), Target("<= 1 ms", lambda a, b: a <= 1)),
            Metric(f"lag_max_ms@{n}", f"max ms ({n}w)", "lower", fmt_fixed(1), Target("<= 5 ms", lambda a, b: a <= 5)),
            Metric(f"maps@{n}", f"maps ({n}w)", None, fmt_text),
        ]
    return metrics


async def _load(ctx: Ctx, items: list[int]) -> int:
    """Maps back to back until ``lag_seconds`` have passed (at least one); the idle row just sleeps."""
    if ctx.runner.label == "idle":
        await anyio.sleep(ctx.cfg.lag_seconds)
        return 0
    deadline, maps = now() + ctx.cfg.lag_seconds, 0
    while maps == 0 or now() < deadline:
        await ctx.runner.map(_work.inc, items)
        maps += 1
    return maps


async def _measure(ctx: Ctx) -> None:
    n, cell = ctx.runner.processes, ctx.cell
    items = list(range(ctx.cfg.lag_items))
    lags = cell.samples.setdefault(f"lag_s@{n}", [])
    async with ctx.runner.opened():
        await ctx.runner.warm()
        async with ticking(lags):
            maps = await _load(ctx, items)
    cell.samples.setdefault(f"maps@{n}", []).append(maps)


def _finish(row: Cell) -> None:
    for key, lags in list(row.samples.items()):
        if key.startswith("lag_s@"):
            n = key.split("@")[1]
            row.values.update(lag_figures(lags, f"@{n}"))
            row.values[f"maps@{n}"] = int(sum(row.samples.get(f"maps@{n}", [])))


def run(cfg: Config) -> WorkloadResult:
    sizes = list(dict.fromkeys([cfg.processes, cfg.lag_small_pool]))
    by_size = [rows(cfg, LIBS, _measure, f"lag {n}w", processes=n, finish=_finish) for n in sizes]
    cells = [merge_cells(parts[0].lib, parts) for parts in zip(*by_size, strict=True)]
    notes = [
        f"maps of {cfg.lag_items:,} items back to back for {cfg.lag_seconds:g} s (at least one map) per round, "
        f"{cfg.rounds} round(s) pooled; 'Nw' = pool of N workers; {cfg.lag_small_pool}w = cpu_count - 1, the "
        "library's own share of the lag (PITFALLS.md); idle = the ticker alone, the floor",
    ]
    return WorkloadResult("lag", "1 ms ticker lateness under load", _metrics(sizes), cells, notes, reference="idle")


WORKLOADS = {"lag": run}
