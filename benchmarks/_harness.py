"""Running one library in one workload ("a cell") on a fresh event loop, with every wait bounded."""

from __future__ import annotations

import math
import statistics
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import anyio

from benchmarks._config import Config
from benchmarks._procs import ProcessTracker, Watchdog
from benchmarks._runners import Runner, make_runner, missing_module
from benchmarks._types import Cell

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

now = time.perf_counter
#: The loop-lag ticker's period (s).
TICK = 0.001

#: Called with a message if the watchdog gives up on a cell (run.py writes the partial JSON).
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


async def ticker(lags: list[float], stop: anyio.Event) -> None:
    """Sleep ``TICK`` in a loop until ``stop`` is set; append how late each wake-up was (s) to ``lags``."""
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
    return [Cell(lib, notes=[f"skipped: {why}"]) for lib in libs]


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
    """Run ``measure`` for library ``label`` in its own ``anyio.run``; never raises, never hangs.

    A library that is not installed is skipped: its row says so and holds no figure."""
    module = missing_module(label)
    if module is not None:
        cell = Cell(label, notes=[f"{module} is not installed: skipped"])
        _progress(tag, cell)
        return cell
    limit = timeout or cfg.cell_timeout
    tracker = ProcessTracker()
    ctx = Ctx(cfg, make_runner(label, cfg, processes or cfg.processes), tracker, Cell(label))
    started = now()
    with Watchdog(limit + 60, f"{tag} {label}", tracker, _fire):
        try:
            anyio.run(
                partial(_guarded, ctx, measure, limit),
                backend="asyncio",
                backend_options={"use_uvloop": cfg.loop == "uvloop"},
            )
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
    status = f"ERROR {cell.error}" if cell.error else "ok"
    notes = f" ({'; '.join(cell.notes)})" if cell.notes else ""
    print(f"  [{tag}] {cell.lib:<16} {cell.seconds:6.1f} s  {status}{notes}", file=sys.stderr, flush=True)


def merge_cells(lib: str, cells: Sequence[Cell]) -> Cell:
    """One row from several cells of the same library (e.g. two pool sizes, or repeated trials)."""
    merged = Cell(lib)
    for cell in cells:
        merged.values.update({k: v for k, v in cell.values.items() if v is not None})
        for key, xs in cell.samples.items():
            merged.samples.setdefault(key, []).extend(xs)
        merged.notes += [n for n in cell.notes if n not in merged.notes]
        merged.error = merged.error or cell.error
        merged.seconds += cell.seconds
    return merged
