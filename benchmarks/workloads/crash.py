"""crash: 20 ``apply`` calls gathered, one of them kills its worker with ``os._exit(1)``."""

from __future__ import annotations

import collections

import anyio

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, error_types, rows
from benchmarks._procs import ProcessTracker
from benchmarks._report import fmt_text
from benchmarks._runners import Runner
from benchmarks._types import Cell, Metric, SummaryRow, WorkloadResult

LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "anyio", "trio-parallel"]
CRASH_INDEX = 3  # early, so that most calls are still queued or running when the worker dies
TASK_SECONDS = 0.05
METRICS = [
    Metric("ok", "ok", None, fmt_text),
    Metric("failed", "failed", None, fmt_text),
    Metric("hung", "hung", None, fmt_text),
    Metric("errors", "errors", None, fmt_text),
    Metric("after", "pool afterwards", None, fmt_text),
    Metric("size", "workers before -> after", None, fmt_text),
]
TARGET = "only that call fails (WorkerDiedError); pool works, keeps size"


class _Abandon(Exception):
    """Leave the pool by the exception path, which terminates it."""


async def _calls(runner: Runner, n: int, timeout: float) -> list[str]:
    """``"ok"``, the exception's type name, or ``"hung"`` (no answer within ``timeout``) per call."""
    states = ["hung"] * n

    async def one(i: int) -> None:
        try:
            result = await runner.apply(_work.crash_at, (i, CRASH_INDEX, TASK_SECONDS))
            states[i] = "ok" if result == i else f"wrong result {result!r}"
        except Exception as exc:
            states[i] = type(exc).__name__

    with anyio.move_on_after(timeout):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
    return states


async def _afterwards(runner: Runner, timeout: float) -> str:
    """Does the pool still run ``2 x processes`` concurrent calls?"""
    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                for _ in range(2 * runner.processes):
                    tg.start_soon(runner.apply, _work.nap, (TASK_SECONDS,))
    except TimeoutError:
        return "hangs"
    except Exception as exc:
        return f"fails ({error_types(exc)})"
    return "works"


async def _size(tracker: ProcessTracker, before: int, timeout: float = 3.0) -> int:
    """Live worker processes, waiting up to ``timeout`` s for replacements to reach ``before``."""
    with anyio.move_on_after(timeout):
        while len(tracker.live_new()) != before:
            await anyio.sleep(0.05)
    return len(tracker.live_new())


def _record(cell: Cell, states: list[str]) -> None:
    errors = collections.Counter(s for s in states if s not in ("ok", "hung"))
    cell.values.update(
        ok=states.count("ok"),
        hung=states.count("hung"),
        failed=sum(errors.values()),
        errors=", ".join(f"{k} x{v}" for k, v in errors.items()) or "-",
    )
    cell.samples["calls"] = [float(s == "ok") for s in states]


async def _measure(ctx: Ctx) -> None:
    runner, cfg, cell = ctx.runner, ctx.cfg, ctx.cell
    try:
        async with runner.opened():
            await runner.warm()
            before = len(ctx.tracker.live_new())
            states = await _calls(runner, cfg.crash_calls, cfg.hang_timeout)
            _record(cell, states)
            cell.values["after"] = await _afterwards(runner, cfg.hang_timeout)
            size = await _size(ctx.tracker, before)
            cell.values["size"] = f"{before} -> {size}"
            cell.values["size_kept"] = size == before
            if "hung" in states or cell.values["after"] != "works":
                raise _Abandon
    except _Abandon:
        cell.notes.append("hung or broken: pool terminated")


def _score(cell: Cell) -> tuple[int, int, int, int]:
    """Best behaviour first: most calls answered, fewest hung, pool still working, size kept."""
    v = cell.values
    ok, hung = v.get("ok"), v.get("hung")
    if not isinstance(ok, int) or not isinstance(hung, int):
        return (-1, 0, 0, 0)
    return (ok, -hung, int(v.get("after") == "works"), int(v.get("size_kept") is True))


def _outcome(cell: Cell) -> str:
    if cell.error and "ok" not in cell.values:
        return f"ERROR: {cell.error}"
    v = cell.values
    return (
        f"{v.get('ok')} ok, {v.get('failed')} failed ({v.get('errors')}), {v.get('hung')} hung; "
        f"{v.get('after')}; {v.get('size')}"
    )


def _met(cell: Cell | None, calls: int) -> bool:
    if cell is None:
        return False
    v = cell.values
    return (
        v.get("ok") == calls - 1
        and v.get("failed") == 1
        and "WorkerDiedError" in str(v.get("errors"))
        and v.get("after") == "works"
        and v.get("size_kept") is True
    )


def _summarize(calls: int, result: WorkloadResult) -> list[SummaryRow]:
    mine = result.cell("aiomp")
    peers = [c for c in result.cells if c.lib != "aiomp" and not c.skipped]
    best = max(peers, key=_score, default=None)
    return [
        SummaryRow(
            "crash",
            f"{calls} calls, one os._exit(1)",
            _outcome(mine) if mine else "-",
            f"{_outcome(best)} ({best.lib})" if best else "-",
            "-",
            TARGET,
            _met(mine, calls),
        )
    ]


def run(cfg: Config) -> WorkloadResult:
    limit = 3 * cfg.hang_timeout + 30
    cells = rows(cfg, LIBS, _measure, "crash", rounds=1, timeout=limit)
    notes = [
        f"call #{CRASH_INDEX} of {cfg.crash_calls} exits its worker, each call sleeps {TASK_SECONDS * 1e3:.0f} "
        f"ms; a call with no answer after {cfg.hang_timeout:g} s counts as hung; 'pool afterwards' = "
        f"{2 * cfg.processes} more calls; sizes count live worker processes"
    ]
    return WorkloadResult(
        "crash", "one worker dies mid-task", METRICS, cells, notes, summarize=lambda r: _summarize(cfg.crash_calls, r)
    )


WORKLOADS = {"crash": run}
