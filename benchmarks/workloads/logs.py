"""logs: a burst of worker log records, aiomp's forwarding against the logging cookbook.

The workers each log their share of ``log_records`` INFO records as fast as they can while the
1 ms ticker runs on the parent's loop. The parent's logging is configured once (a formatter and a
file handler writing to ``/dev/null``), and a filter on the handler checks that each worker's
records arrive in the order they were logged. Then a **debug flood**: each worker calls
``log.debug`` ``log_flood`` times while the parent logs at INFO; the workers' time is reported.

Rows: ``aiomp`` is ``aiomp.Pool`` with its default log forwarding (the workers configure nothing);
``cookbook`` the Python logging cookbook's recipe, a ``QueueHandler`` installed by the initializer of
a ``ProcessPoolExecutor`` driven with ``run_in_executor`` and a ``QueueListener`` thread in the parent
(asyncio only); ``busy, no logs`` the same aiomp pool as busy for as long, logging nothing: the
scheduler's share of the lag, the floor. None of the pool peers forwards worker logs by itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import logging.handlers
import os
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, lag_figures, median, now, rows, ticking
from benchmarks._report import fmt_fixed, fmt_rate, fmt_text
from benchmarks._types import Cell, Metric, WorkloadResult

LIBS = ["aiomp", "cookbook", "busy, no logs"]
METRICS = [
    Metric("records_per_s", "records/s", "higher", fmt_rate),
    Metric("lag_p99_ms", "lag p99 ms", "lower", fmt_fixed(2)),
    Metric("lag_max_ms", "lag max ms", "lower", fmt_fixed(1)),
    Metric("flood_s", "debug flood s (worker)", "lower", fmt_fixed(3)),
    Metric("received", "received", None, fmt_text),
    Metric("violations", "order violations", None, fmt_text),
]
_BURST = re.compile(r"record (\d+) of burst (\d+)")
#: The floor row spins as long as aiomp's last burst took (1 s before the first).
_last_burst = {"seconds": 1.0}


class OrderCheck(logging.Filter):
    """Counts records and per-process order violations (the message carries the index)."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected, self.count, self.violations = expected, 0, 0
        self.last: dict[int, int] = {}
        self.all_in = threading.Event()

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += 1
        match = _BURST.fullmatch(record.getMessage())
        if match is None or int(match[2]) != record.process or int(match[1]) <= self.last.get(int(match[2]), -1):
            self.violations += 1
        if match is not None:
            self.last[int(match[2])] = int(match[1])
        if self.count >= self.expected:
            self.all_in.set()
        return True


@contextlib.contextmanager
def configured(expected: int) -> Iterator[OrderCheck]:
    """The application's logging set-up, made before any pool starts (as apps do); undone after."""
    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"))
    check = OrderCheck(expected)
    handler.addFilter(check)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield check
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        handler.close()


Run = Callable[[Callable[..., Any], Any], Awaitable[list[Any]]]  # (func, arg): one call per worker


@contextlib.asynccontextmanager
async def _aiomp(cfg: Config) -> AsyncIterator[Run]:
    import aiomp

    async with aiomp.Pool(cfg.processes, context=cfg.start_method) as pool:
        await pool.map(abs, range(cfg.processes))  # the workers are up

        async def each(func: Callable[..., Any], arg: Any) -> list[Any]:
            # A task's result is delivered after the records it logged.
            return list(await pool.map(func, [arg] * cfg.processes, chunksize=1))

        yield each


@contextlib.asynccontextmanager
async def _cookbook(cfg: Config, check: OrderCheck) -> AsyncIterator[Run]:
    loop, ctx = asyncio.get_running_loop(), cfg.context
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, *logging.getLogger().handlers, respect_handler_level=True)
    executor = concurrent.futures.ProcessPoolExecutor(
        cfg.processes, mp_context=ctx, initializer=_work.install_queue_handler, initargs=(queue,)
    )
    listener.start()
    try:
        await asyncio.gather(*(loop.run_in_executor(executor, abs, i) for i in range(cfg.processes)))

        async def each(func: Callable[..., Any], arg: Any) -> list[Any]:
            out = await asyncio.gather(*(loop.run_in_executor(executor, func, arg) for _ in range(cfg.processes)))
            # The results come back before the records: they are still in the workers' queue feeder
            # threads and the listener thread.
            await anyio.to_thread.run_sync(check.all_in.wait, cfg.hang_timeout)
            return list(out)

        yield each
    finally:
        await anyio.to_thread.run_sync(executor.shutdown)
        listener.stop()
        queue.close()
        queue.join_thread()


def _pool(ctx: Ctx, check: OrderCheck) -> contextlib.AbstractAsyncContextManager[Run]:
    return _cookbook(ctx.cfg, check) if ctx.cell.lib == "cookbook" else _aiomp(ctx.cfg)


async def _measure(ctx: Ctx) -> None:
    cfg, cell = ctx.cfg, ctx.cell
    floor = cell.lib == "busy, no logs"
    records = 0 if floor else cfg.log_records
    share = records // cfg.processes
    with configured(share * cfg.processes) as check:
        async with _pool(ctx, check) as each:
            lags = cell.samples.setdefault("lag_s", [])
            async with ticking(lags):
                await anyio.sleep(0.05)
                t0 = now()
                await (each(_work.spin, _last_burst["seconds"]) if floor else each(_work.burst, share))
                seconds = now() - t0
            if cell.lib == "aiomp":
                _last_burst["seconds"] = seconds
            if not floor:
                cell.samples.setdefault("records_per_s", []).append(check.count / seconds)
                cell.values.update(received=check.count, violations=check.violations)
    if not floor:
        with configured(0) as check:
            async with _pool(ctx, check) as each:
                cell.samples.setdefault("flood_s", []).append(max(await each(_work.flood, cfg.log_flood)))


def _finish(row: Cell) -> None:
    row.values.update(lag_figures(row.samples.get("lag_s", [])))
    for key in ("records_per_s", "flood_s"):
        if row.samples.get(key):
            row.values[key] = median(row.samples[key])


def run(cfg: Config) -> WorkloadResult:
    cells = rows(cfg, LIBS, _measure, "logs", finish=_finish)
    notes = [
        f"{cfg.log_records:,} INFO records from {cfg.processes} workers, as fast as they can; the parent's "
        f"handler formats them into /dev/null and checks their order per worker; debug flood: {cfg.log_flood:,} "
        f"log.debug calls per worker; medians of {cfg.rounds} round(s)",
    ]
    title = "worker log records: forwarding cost and loop lag"
    return WorkloadResult("logs", title, METRICS, cells, notes, reference="busy, no logs")


WORKLOADS = {"logs": run}
