"""lag: how late a 1 ms ticker wakes while 20,000-item maps run back to back."""

from __future__ import annotations

import anyio

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, merge_cells, now, percentile, run_cell, ticking
from benchmarks._report import fmt_fixed, fmt_text
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["idle", "aiomp", "mp.Pool", "PPE chunked", "PPE per item", "aiomultiprocess", "anyio"]


def _metrics(sizes: list[int]) -> list[Metric]:
    metrics = []
    for n in sizes:
        metrics += [
            Metric(f"p99_ms@{n}", f"p99 ms ({n}w)", "lower", fmt_fixed(2), Target("<= 1 ms", lambda a, b: a <= 1)),
            Metric(f"max_ms@{n}", f"max ms ({n}w)", "lower", fmt_fixed(1), Target("<= 5 ms", lambda a, b: a <= 5)),
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
    lags: list[float] = []
    async with ctx.runner.opened():
        await ctx.runner.warm()
        async with ticking(lags):
            maps = await _load(ctx, items)
        cell.samples[f"lag_s@{n}"] = lags
        cell.values.update(
            {f"p99_ms@{n}": percentile(lags, 99) * 1e3, f"max_ms@{n}": max(lags) * 1e3, f"maps@{n}": maps}
        )


def _row(cfg: Config, lib: str, sizes: list[int]) -> Cell:
    if lib == "idle":  # no pool: one measurement stands for every size
        cell = run_cell(cfg, "idle", _measure, processes=sizes[0], tag="lag")
        for n in sizes[1:]:
            cell.values.update({k.replace(f"@{sizes[0]}", f"@{n}"): v for k, v in list(cell.values.items())})
        return cell
    return merge_cells(lib, [run_cell(cfg, lib, _measure, processes=n, tag=f"lag {n}w") for n in sizes])


def run(cfg: Config) -> WorkloadResult:
    sizes = list(dict.fromkeys([cfg.processes, cfg.lag_small_pool]))
    cells = [_row(cfg, lib, sizes) for lib in LIBS]
    notes = [
        f"maps of {cfg.lag_items:,} items back to back for {cfg.lag_seconds:g} s (at least one map); "
        f"'Nw' = pool of N workers; {cfg.lag_small_pool}w = cpu_count - 1, the library's own share of the lag "
        "(PITFALLS.md); idle = the ticker alone, the floor"
    ]
    return WorkloadResult("lag", "1 ms ticker lateness under load", _metrics(sizes), cells, notes)
