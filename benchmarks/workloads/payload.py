"""payload: NumPy arrays through a pool, ``map(arr_sum, arrays)`` and ``map(echo, arrays)``, in GB/s."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, rows, skipped, ticking
from benchmarks._report import fmt_fixed
from benchmarks._types import Cell, Metric, Target, WorkloadResult

LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "anyio", "trio-parallel"]
TITLE = "NumPy arrays through a pool, GB/s (GB = 1e9 bytes)"
GB = 1e9
MIB = 2**20
FAST = Target(">= 1.5 GB/s and >= 3x best peer", lambda a, b: a >= 1.5 and (b is None or a >= 3 * b))
SMOOTH = Target("<= 10 ms", lambda a, b: a <= 10)
METRICS = [
    Metric("sum_gbps", "sum GB/s (sent)", "higher", fmt_fixed(2), FAST),
    Metric("echo_gbps", "echo GB/s (sent + returned)", "higher", fmt_fixed(2), FAST),
    Metric("sum_lag_max_ms", "sum lag max ms", "lower", fmt_fixed(1), SMOOTH),
    Metric("echo_lag_max_ms", "echo lag max ms", "lower", fmt_fixed(1), SMOOTH),
]


def _check_sums(sums: list[float], out: list[Any]) -> None:
    if len(out) != len(sums) or not all(math.isclose(x, s, rel_tol=1e-9) for x, s in zip(out, sums, strict=True)):
        raise RuntimeError("map(arr_sum) returned wrong sums")


def _check_echoes(arrays: list[Any], out: list[Any]) -> None:
    if len(out) != len(arrays):
        raise RuntimeError("map(echo) returned the wrong number of arrays")
    for sent, got in zip(arrays, out, strict=True):
        _work.check_echo(sent, got)


async def _figure(
    ctx: Ctx, name: str, func: Callable[[Any], Any], check: Callable[[list[Any]], None], arrays: list[Any], moved: int
) -> None:
    """One warm-up map, then one timed map with the loop-lag ticker running."""
    runner, cell = ctx.runner, ctx.cell
    check(await runner.map(func, arrays))
    lags = cell.samples.setdefault(f"{name}_lag_s", [])
    async with ticking(lags):
        t0 = now()
        out = await runner.map(func, arrays)
        cell.samples.setdefault(f"{name}_gbps", []).append(moved / (now() - t0) / GB)
    check(out)


async def _measure(ctx: Ctx, arrays: list[Any], sums: list[float]) -> None:
    sent = sum(a.nbytes for a in arrays)
    async with ctx.runner.opened():
        await ctx.runner.warm()
        await _figure(ctx, "sum", _work.arr_sum, partial(_check_sums, sums), arrays, sent)
        await _figure(ctx, "echo", _work.echo, partial(_check_echoes, arrays), arrays, 2 * sent)


def _finish(row: Cell) -> None:
    for name in ("sum", "echo"):
        if row.samples.get(f"{name}_gbps"):
            row.values[f"{name}_gbps"] = median(row.samples[f"{name}_gbps"])
            row.values[f"{name}_lag_max_ms"] = max(row.samples[f"{name}_lag_s"], default=0.0) * 1e3


def run(cfg: Config) -> WorkloadResult:
    try:
        import numpy as np
    except ImportError:
        return WorkloadResult("payload", TITLE, METRICS, skipped(LIBS, "NumPy is not installed"))
    rng = np.random.default_rng(0)
    arrays = [rng.random(cfg.payload_mib * MIB // 8) for _ in range(cfg.payload_arrays)]
    sums = [float(a.sum()) for a in arrays]
    cells = rows(cfg, LIBS, partial(_measure, arrays=arrays, sums=sums), "payload", finish=_finish)
    total = cfg.payload_arrays * cfg.payload_mib
    notes = [
        f"{cfg.payload_arrays} float64 arrays of {cfg.payload_mib} MiB ({total} MiB), made once before timing; "
        f"pool of {cfg.processes}; median of {cfg.rounds} round(s), each one timed map after one warm-up map",
        f"GB/s counts array bytes, GB = 1e9 bytes: sum = the arrays sent ({total} MiB per map), echo = sent + "
        f"returned ({2 * total} MiB per map); echo's parent checks each result's first and last items",
        "lag max: the 1 ms ticker's worst lateness during the timed maps (target for 256 MiB through a pool); "
        "mp.Pool: map in a thread; PPE: run_in_executor per array; anyio: to_process.run_sync per array",
    ]
    return WorkloadResult("payload", TITLE, METRICS, cells, notes)


WORKLOADS = {"payload": run}
