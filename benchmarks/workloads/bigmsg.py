"""bigmsg: one big NumPy array parent -> child -> parent, through a queue pair and through a pipe."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from benchmarks import _work, primitives
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, run_cell, skipped, ticking
from benchmarks._report import default_summary, fmt_fixed, number
from benchmarks._types import Metric, SummaryRow, Target, WorkloadResult

AIOMP, STDLIB, AIOP = primitives.AIOMP, primitives.THREAD, primitives.AIOP
LIBS = [AIOMP, STDLIB, AIOP]
KINDS = {"queue": "Queue", "pipe": "Pipe"}
TITLE = "one big array echoed by a child, GB/s (GB = 1e9 bytes, both directions)"
GB = 1e9
MIB = 2**20
THRICE = Target(f">= 3x stdlib ({STDLIB})", lambda a, b: b is None or a >= 3 * b)
METRICS = [
    metric
    for kind, name in KINDS.items()
    for metric in (
        Metric(f"{kind}_ms", f"{name} ms/trip", "lower", fmt_fixed(1)),
        Metric(f"{kind}_gbps", f"{name} GB/s", "higher", fmt_fixed(2), THRICE),
        Metric(f"{kind}_lag_max_ms", f"{name} lag max ms", "lower", fmt_fixed(1)),
    )
]


async def _trips(ctx: Ctx, kit: primitives.Kit, cleanup: primitives.Cleanup, kind: str, a: Any) -> None:
    """One warm-up round trip, then ``bigmsg_trips`` timed ones with the loop-lag ticker running."""
    cell = ctx.cell
    one = await primitives.open_echo(kind, kit, cleanup)
    _work.check_echo(a, await one(a))
    times: list[float] = []
    lags: list[float] = []
    async with ticking(lags):
        for _ in range(ctx.cfg.bigmsg_trips):
            t0 = now()
            got = await one(a)
            times.append(now() - t0)
            _work.check_echo(a, got)
            del got
    cell.samples.update({f"{kind}_s": times, f"{kind}_lag_s": lags})
    cell.values[f"{kind}_ms"] = median(times) * 1e3
    cell.values[f"{kind}_gbps"] = 2 * a.nbytes / median(times) / GB
    cell.values[f"{kind}_lag_max_ms"] = max(lags, default=0.0) * 1e3


async def _measure(ctx: Ctx, a: Any) -> None:
    """The queue pair, then the pipe, each with a fresh child (primitives' kits and echo children)."""
    cfg = ctx.cfg
    kit = primitives.KITS[ctx.cell.lib](primitives.Config.make(cfg.loop, cfg.start_method, cfg.quick), ctx.cell)
    for kind in KINDS:
        cleanup = primitives.Cleanup(ctx.cell)
        try:
            await _trips(ctx, kit, cleanup, kind, a)
        finally:
            await cleanup.arun()


def _summarize(result: WorkloadResult) -> list[SummaryRow]:
    """The targets are against the stdlib, whatever aioprocessing does."""
    return default_summary(dataclasses.replace(result, cells=[c for c in result.cells if c.lib in (AIOMP, STDLIB)]))


def _vs_stdlib(result: WorkloadResult) -> str:
    figures = []
    for kind, name in KINDS.items():
        mine, theirs = number(result.cell(AIOMP), f"{kind}_gbps"), number(result.cell(STDLIB), f"{kind}_gbps")
        figures.append(f"{name} {mine / theirs:.2f}x" if mine is not None and theirs else f"{name} -")
    return f"ratio aiomp / stdlib ({STDLIB}), GB/s: {', '.join(figures)} (higher is better)"


def run(cfg: Config) -> WorkloadResult:
    try:
        import numpy as np
    except ImportError:
        return WorkloadResult("bigmsg", TITLE, METRICS, skipped(LIBS, "NumPy is not installed"))
    a = np.random.default_rng(0).random(cfg.bigmsg_mib * MIB // 8)
    cells = [run_cell(cfg, lib, partial(_measure, a=a), tag="bigmsg") for lib in LIBS]
    result = WorkloadResult("bigmsg", TITLE, METRICS, cells, summarize=_summarize)
    result.notes = [
        _vs_stdlib(result),
        f"a float64 array of {cfg.bigmsg_mib} MiB; median of {cfg.bigmsg_trips} timed round trip(s) after one "
        f"warm-up, per kind, each kind with a fresh child ({cfg.start_method}); GB/s counts the array both ways "
        f"({2 * cfg.bigmsg_mib} MiB per trip); lag max: the 1 ms ticker's worst lateness during the timed trips",
        f"Queue: q1.put(a) -> child q2.put(q1.get()) -> q2.get(); Pipe: c.send(a) -> child c.send(c.recv()) -> "
        f"c.recv(); aiomp: aiomp.Queue / aiomp.Pipe and an aiomp.Process, await aput / aget, asend / arecv; "
        f"{STDLIB}: multiprocessing's Queue / Pipe, the blocking calls through anyio.to_thread.run_sync; "
        f"{AIOP}: coro_put / coro_get, coro_send / coro_recv",
    ]
    return result
