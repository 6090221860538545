"""Running one library in one workload ("a cell") on a fresh event loop, with every wait bounded."""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import sniffio

from benchmarks._config import Config
from benchmarks._procs import ProcessTracker, Watchdog
from benchmarks._runners import Runner, make_runner, skip_reason
from benchmarks._types import Cell

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

now = time.perf_counter
#: The loop-lag ticker's period (s).
TICK = 0.001

#: Called with a message if the watchdog gives up on a cell (the command line writes the partial JSON).
on_watchdog: list[Callable[[str], None]] = []


@dataclass
class Ctx:
    cfg: Config
    runner: Runner
    tracker: ProcessTracker
    cell: Cell


Measure = Callable[[Ctx], Awaitable[None]]


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))


def percentile(xs: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    ordered = sorted(xs)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def lag_figures(lags: Sequence[float], suffix: str = "") -> dict[str, float | None]:
    """The ticker's p99 and max lateness in ms (``lag_p99_ms``, ``lag_max_ms``, with ``suffix``)."""
    if not lags:
        return {f"lag_p99_ms{suffix}": None, f"lag_max_ms{suffix}": None}
    return {f"lag_p99_ms{suffix}": percentile(lags, 99) * 1e3, f"lag_max_ms{suffix}": max(lags) * 1e3}


async def gather(calls: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run the calls concurrently, each its own task; their results in order.

    On asyncio (and uvloop) ``asyncio.gather``, the cheapest task per call there (an anyio task
    group costs about 40 us a task on this kind of machine); on trio a nursery."""
    if sniffio.current_async_library() == "asyncio":
        return list(await asyncio.gather(*(call() for call in calls)))
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results


async def ticker(lags: list[float], stop: anyio.Event) -> None:
    """The one loop-lag ticker: sleep ``TICK`` in a loop until ``stop`` is set; append how late each
    wake-up was (s) to ``lags``."""
    while not stop.is_set():
        t0 = now()
        await anyio.sleep(TICK)
        lags.append(max(0.0, now() - t0 - TICK))


@asynccontextmanager
async def ticking(lags: list[float]) -> AsyncIterator[None]:
    """Run :func:`ticker` while the body of the ``async with`` runs: the event loop's lag under that load."""
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, lags, stop)
        try:
            yield
        finally:
            stop.set()


def skipped(libs: Sequence[str], why: str) -> list[Cell]:
    """Rows with no figure, for a workload that cannot run here (e.g. NumPy is missing)."""
    print(f"  skipped: {why}", file=sys.stderr, flush=True)
    return [Cell(lib, skipped=why) for lib in libs]


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def error_types(exc: BaseException) -> str:
    """The distinct exception type names in ``exc`` (leaves of an exception group)."""
    if isinstance(exc, BaseExceptionGroup):
        return ", ".join(dict.fromkeys(error_types(e) for e in exc.exceptions))
    return type(exc).__name__


def run_cell(
    cfg: Config,
    label: str,
    measure: Measure,
    *,
    processes: int | None = None,
    timeout: float | None = None,
    tag: str = "",
) -> Cell:
    """Run ``measure`` for library ``label`` in its own ``anyio.run`` on the configured event loop;
    never raises, never hangs.

    A library that is not installed, or needs another event loop, is skipped: its row says so and
    holds no figure."""
    reason = skip_reason(label, cfg.loop)
    if reason is not None:
        cell = Cell(label, skipped=reason)
        _progress(tag, cell)
        return cell
    limit = timeout or cfg.cell_timeout
    tracker = ProcessTracker()
    ctx = Ctx(cfg, make_runner(label, cfg, processes or cfg.processes), tracker, Cell(label))
    started = now()
    with Watchdog(limit + 60, f"{tag} {label}", tracker, _fire):
        try:
            anyio.run(partial(_guarded, ctx, measure, limit), **cfg.anyio_backend())
        except BaseException as exc:  # the loop's own shutdown failed
            ctx.cell.error = ctx.cell.error or describe(exc)
            traceback.print_exc()
        _check_leftovers(ctx.cell, tracker)
    ctx.cell.seconds = now() - started
    _progress(tag, ctx.cell)
    return ctx.cell


async def _guarded(ctx: Ctx, measure: Measure, limit: float) -> None:
    try:
        with anyio.move_on_after(limit) as scope:
            await measure(ctx)
        if scope.cancelled_caught:
            ctx.cell.error = f"timed out after {limit:.0f} s"
    except Exception as exc:
        ctx.cell.error = describe(exc)
        print(f"--- {ctx.cell.lib} failed:", file=sys.stderr)
        traceback.print_exc()


def _check_leftovers(cell: Cell, tracker: ProcessTracker) -> None:
    if not tracker.wait_gone(3.0):
        return
    pids = tracker.reap()
    cell.notes.append(f"{len(pids)} process(es) still alive 3 s after the pool was closed; terminated")


def _fire(message: str) -> None:
    for callback in on_watchdog:
        callback(message)


def _progress(tag: str, cell: Cell) -> None:
    status = f"ERROR {cell.error}" if cell.error else (cell.skipped or "ok")
    notes = f" ({'; '.join(cell.notes)})" if cell.notes else ""
    print(f"  [{tag}] {cell.lib:<16} {cell.seconds:6.1f} s  {status}{notes}", file=sys.stderr, flush=True)


def rows(
    cfg: Config,
    libs: Sequence[str],
    measure: Measure,
    tag: str,
    *,
    finish: Callable[[Cell], None] | None = None,
    rounds: int | None = None,
    processes: int | None = None,
    timeout: float | None = None,
) -> list[Cell]:
    """One row per library from ``rounds`` cells each, the libraries taking turns: round 1 in the order
    given, round 2 the reverse, and so on, so that a drift of the machine's load reaches every library
    alike. The cells' samples are pooled; ``finish(row)`` turns them into the row's figures (medians)."""
    rounds = rounds or cfg.rounds
    runs: dict[str, list[Cell]] = {lib: [] for lib in libs}
    for r in range(rounds):
        for lib in libs if r % 2 == 0 else reversed(libs):
            if runs[lib] and runs[lib][0].skipped:
                continue
            label = f"{tag} {r + 1}/{rounds}" if rounds > 1 else tag
            runs[lib].append(run_cell(cfg, lib, measure, processes=processes, timeout=timeout, tag=label))
    merged = [merge_cells(lib, cells) for lib, cells in runs.items()]
    for row in merged:
        if finish is not None and not row.skipped:
            finish(row)
    return merged


def merge_cells(lib: str, cells: Sequence[Cell]) -> Cell:
    """One row from several cells of the same library (e.g. two pool sizes, or repeated trials)."""
    merged = Cell(lib)
    for cell in cells:
        merged.values.update({k: v for k, v in cell.values.items() if v is not None})
        for key, xs in cell.samples.items():
            merged.samples.setdefault(key, []).extend(xs)
        merged.notes += [n for n in cell.notes if n not in merged.notes]
        merged.error = merged.error or cell.error
        merged.skipped = merged.skipped or cell.skipped
        merged.seconds += cell.seconds
    return merged
