"""bigmsg: one big NumPy array parent -> child -> parent, through a queue pair and through a pipe."""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, median, now, rows, skipped, ticking
from benchmarks._report import default_summary, fmt_fixed
from benchmarks._types import Cell, Metric, SummaryRow, Target, WorkloadResult
from benchmarks.workloads.primitives import AIOMP, AIOP, KITS, THREAD, Cleanup, open_echo

STDLIB = THREAD
LIBS = [AIOMP, STDLIB, AIOP]
KINDS = {"queue": "Queue", "pipe": "Pipe"}
TITLE = "one big array echoed by a child, GB/s (GB = 1e9 bytes, both directions)"
TRIPS = 2  # timed round trips per cell
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


async def _trips(ctx: Ctx, kind: str, a: Any) -> None:
    """A fresh child; one warm-up round trip, then ``TRIPS`` timed ones with the loop-lag ticker running."""
    cell, cleanup = ctx.cell, Cleanup(ctx.cell)
    try:
        one = await open_echo(kind, KITS[cell.lib](ctx.cfg, cell), cleanup)
        _work.check_echo(a, await one(a))
        async with ticking(cell.samples.setdefault(f"{kind}_lag_s", [])):
            for _ in range(TRIPS):
                t0 = now()
                got = await one(a)
                cell.samples.setdefault(f"{kind}_s", []).append(now() - t0)
                _work.check_echo(a, got)
                del got
    finally:
        await cleanup.arun()


async def _measure(ctx: Ctx, a: Any) -> None:
    for kind in KINDS:
        await _trips(ctx, kind, a)


def _finish(a: Any, row: Cell) -> None:
    for kind in KINDS:
        if row.samples.get(f"{kind}_s"):
            seconds = median(row.samples[f"{kind}_s"])
            row.values[f"{kind}_ms"] = seconds * 1e3
            row.values[f"{kind}_gbps"] = 2 * a.nbytes / seconds / GB
            row.values[f"{kind}_lag_max_ms"] = max(row.samples[f"{kind}_lag_s"], default=0.0) * 1e3


def _summarize(result: WorkloadResult) -> list[SummaryRow]:
    """The targets are against the stdlib, whatever aioprocessing does."""
    return default_summary(dataclasses.replace(result, cells=[c for c in result.cells if c.lib in (AIOMP, STDLIB)]))


def run(cfg: Config) -> WorkloadResult:
    try:
        import numpy as np
    except ImportError:
        return WorkloadResult("bigmsg", TITLE, METRICS, skipped(LIBS, "NumPy is not installed"))
    a = np.random.default_rng(0).random(cfg.bigmsg_mib * MIB // 8)
    cells = rows(cfg, LIBS, partial(_measure, a=a), "bigmsg", finish=partial(_finish, a))
    notes = [
        f"a float64 array of {cfg.bigmsg_mib} MiB; median of {TRIPS} timed round trips x {cfg.rounds} round(s), "
        f"after one warm-up, per kind, each kind with a fresh child ({cfg.start_method}); GB/s counts the array "
        f"both ways ({2 * cfg.bigmsg_mib} MiB per trip); lag max: the 1 ms ticker's worst lateness during the trips",
        f"Queue: q1.put(a) -> child q2.put(q1.get()) -> q2.get(); Pipe: c.send(a) -> child c.send(c.recv()) -> "
        f"c.recv(); aiomp: aiomp.Queue / aiomp.Pipe and an aiomp.Process, await aput / aget, asend / arecv; "
        f"{STDLIB}: multiprocessing's Queue / Pipe, the blocking calls through anyio.to_thread.run_sync; "
        f"{AIOP}: coro_put / coro_get, coro_send / coro_recv",
    ]
    return WorkloadResult("bigmsg", TITLE, METRICS, cells, notes, summarize=_summarize)


WORKLOADS = {"bigmsg": run}
