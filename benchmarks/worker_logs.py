"""``python -m benchmarks.worker_logs``: a burst of worker log records, aiomp against the cookbook.

Two workers each log ``--records / 2`` INFO records as fast as they can, while a 1 ms
ticker on the parent's event loop records how late it wakes. The parent's logging is
configured once (``basicConfig``-style: a formatter and a file handler writing to
``/dev/null``), and a filter on the handler checks that each worker's records arrive in
the order they were logged. Reported: wall time until every record is handled,
records per second, the ticker's lateness (p50, p99, max), records received, order
violations; then a **debug flood**: each worker calls ``log.debug`` ``--flood`` times
while the parent logs at INFO, and we time the workers.

Rows (one run, same machine, same handler):

* ``aiomp``: ``aiomp.Pool(2)`` with its default log forwarding; the workers configure nothing.
* ``cookbook``: the Python logging cookbook's recipe for ``multiprocessing``: a
  ``multiprocessing.Queue``, a ``QueueHandler`` installed by the pool initializer of a
  ``concurrent.futures.ProcessPoolExecutor`` driven with ``loop.run_in_executor``, and a
  ``logging.handlers.QueueListener`` thread in the parent. It is what a user writes by
  hand today; none of the peers (anyio, aiomultiprocess, pebble, mpire, loky) forwards
  worker logs by itself.

Usage: ``python -m benchmarks.worker_logs [--loop asyncio|uvloop|trio] [--start-method
forkserver|spawn] [--records 100000] [--flood 1000000] [--repeat 3]``. Figures are
medians over the repeats; compare the ratios (the machine is shared).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import logging.handlers
import multiprocessing
import os
import re
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio

import aiomp
from benchmarks._harness import percentile

log = logging.getLogger("bench.worker")

# -- in the workers ---------------------------------------------------------------


def burst(count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        log.info("record %d of burst %d", i, os.getpid())
    return time.perf_counter() - start


def spin(seconds: float) -> float:
    """The baseline: as busy as a burst, without logging."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def flood(count: int) -> float:
    start = time.perf_counter()
    for i in range(count):
        log.debug("debug record %d", i)
    return time.perf_counter() - start


def install_queue_handler(queue: Any) -> None:
    """The cookbook's worker initializer."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(logging.DEBUG)  # the worker does not know the parent's levels


# -- in the parent ------------------------------------------------------------------


_BURST = re.compile(r"record (\d+) of burst (\d+)")


class OrderCheck(logging.Filter):
    """Counts records and per-process order violations (the message carries the index)."""

    def __init__(self, expected: int) -> None:
        super().__init__()
        self.expected = expected
        self.count = 0
        self.violations = 0
        self.last: dict[int, int] = {}
        self.all_in = threading.Event()

    def filter(self, record: logging.LogRecord) -> bool:
        self.count += 1
        match = _BURST.fullmatch(record.getMessage())
        if match is None:
            self.violations += 1
            return True
        index, source = int(match[1]), int(match[2])
        if source != record.process:  # the pid in the message is the process that logged it
            self.violations += 1
        if index <= self.last.get(source, -1):
            self.violations += 1
        self.last[source] = index
        if self.count >= self.expected:
            self.all_in.set()
        return True


@contextlib.contextmanager
def configured(expected: int) -> Iterator[OrderCheck]:
    """The application's logging setup, made before any pool starts (as apps do)."""
    handler = logging.FileHandler(os.devnull)
    handler.setFormatter(logging.Formatter("%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s"))
    check = OrderCheck(expected)
    handler.addFilter(check)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        yield check
    finally:
        root.handlers[:] = []
        handler.close()


async def ticker(lags: list[float], stop: anyio.Event) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await anyio.sleep(0.001)
        lags.append(max(0.0, time.perf_counter() - start - 0.001))


async def measure(run: Callable[[], Awaitable[None]], check: OrderCheck) -> dict[str, float]:
    lags: list[float] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker, lags, stop)
        await anyio.sleep(0.05)
        start = time.perf_counter()
        await run()
        seconds = time.perf_counter() - start
        stop.set()
    return {
        "seconds": seconds,
        "records/s": check.count / seconds,
        "lag p50 ms": percentile(lags, 50) * 1000,
        "lag p99 ms": percentile(lags, 99) * 1000,
        "lag max ms": max(lags) * 1000,
        "received": check.count,
        "order violations": check.violations,
    }


async def aiomp_burst(records: int, options: argparse.Namespace) -> dict[str, float]:
    with configured(records) as check:
        async with aiomp.Pool(options.workers, context=options.start_method, worker_niceness=options.niceness) as pool:
            await pool.map(abs, range(options.workers))  # workers up
            share = records // options.workers

            async def run() -> None:
                # A task's result is delivered after the records it logged.
                await pool.map(burst, [share] * options.workers, chunksize=1)

            return await measure(run, check)


async def baseline(seconds: float, options: argparse.Namespace) -> dict[str, float]:
    """The same pool as busy for as long, logging nothing: the scheduler's share of the lag."""
    with configured(0) as check:
        async with aiomp.Pool(options.workers, context=options.start_method, worker_niceness=options.niceness) as pool:
            await pool.map(abs, range(options.workers))

            async def run() -> None:
                await pool.map(spin, [seconds] * options.workers, chunksize=1)

            return await measure(run, check)


async def aiomp_flood(count: int, options: argparse.Namespace) -> float:
    with configured(0):
        async with aiomp.Pool(options.workers, context=options.start_method) as pool:
            return max(await pool.map(flood, [count] * options.workers, chunksize=1))


@contextlib.contextmanager
def cookbook_pool(options: argparse.Namespace) -> Iterator[concurrent.futures.ProcessPoolExecutor]:
    ctx = multiprocessing.get_context(options.start_method)
    queue = ctx.Queue()
    listener = logging.handlers.QueueListener(queue, *logging.getLogger().handlers, respect_handler_level=True)
    executor = concurrent.futures.ProcessPoolExecutor(
        options.workers, mp_context=ctx, initializer=install_queue_handler, initargs=(queue,)
    )
    listener.start()
    try:
        yield executor
    finally:
        executor.shutdown()
        listener.stop()
        queue.close()
        queue.join_thread()


async def cookbook_burst(records: int, options: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    with configured(records) as check, cookbook_pool(options) as executor:
        await asyncio.gather(*(loop.run_in_executor(executor, abs, i) for i in range(options.workers)))

        async def run() -> None:
            share = records // options.workers
            await asyncio.gather(*(loop.run_in_executor(executor, burst, share) for _ in range(options.workers)))
            # The results come back before the records: they are still in the
            # workers' queue feeder threads and the listener thread.
            await anyio.to_thread.run_sync(check.all_in.wait, 120)

        return await measure(run, check)


async def cookbook_flood(count: int, options: argparse.Namespace) -> float:
    loop = asyncio.get_running_loop()
    with configured(0), cookbook_pool(options) as executor:
        times = await asyncio.gather(*(loop.run_in_executor(executor, flood, count) for _ in range(options.workers)))
    return max(times)


def table(rows: dict[str, dict[str, float]]) -> str:
    names = list(rows)
    keys = list(dict.fromkeys(key for row in rows.values() for key in row))
    lines = ["| figure | " + " | ".join(names) + " | cookbook / aiomp |", "|---" * (len(names) + 2) + "|"]
    for key in keys:
        values = [rows[name].get(key) for name in names]
        cells = ["-" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}" for v in values]
        ratio = ""
        if "aiomp" in rows and "cookbook" in rows and rows["aiomp"].get(key):
            ratio = f"{rows['cookbook'][key] / rows['aiomp'][key]:.2f}x"
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def medians(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


async def main(options: argparse.Namespace) -> None:
    trio = options.loop == "trio"
    runs: dict[str, list[dict[str, float]]] = {"aiomp": [], "cookbook": [], "busy, no logs": []}
    floods: dict[str, list[float]] = {"aiomp": [], "cookbook": [], "busy, no logs": []}
    for _ in range(options.repeat):
        result = await aiomp_burst(options.records, options)
        runs["aiomp"].append(result)
        runs["busy, no logs"].append(await baseline(result["seconds"], options))
        floods["aiomp"].append(await aiomp_flood(options.flood, options))
        if not trio:  # run_in_executor is asyncio's
            runs["cookbook"].append(await cookbook_burst(options.records, options))
            floods["cookbook"].append(await cookbook_flood(options.flood, options))
    rows: dict[str, dict[str, float]] = {}
    for name, results in runs.items():
        if results:
            rows[name] = medians(results)
            if floods[name]:
                rows[name]["debug flood s (worker)"] = statistics.median(floods[name])
    print(
        f"\n## Worker log burst: {options.records:,} INFO records from {options.workers} workers "
        f"(niceness {options.niceness}); debug flood {options.flood:,} per worker "
        f"(loop {options.loop}, {options.start_method}, median of {options.repeat}, {os.cpu_count()} CPUs)\n"
    )
    print(table(rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="worker log burst: aiomp against the logging cookbook")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--start-method", choices=["forkserver", "spawn"], default="forkserver")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--flood", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--niceness", type=int, default=5, help="aiomp's worker_niceness (its default: 5)")
    opts = parser.parse_args()
    backend = "trio" if opts.loop == "trio" else "asyncio"
    backend_options = {"use_uvloop": True} if opts.loop == "uvloop" else {}
    anyio.run(functools.partial(main, opts), backend=backend, backend_options=backend_options)
