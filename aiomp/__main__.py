"""``python -m aiomp``: CPU-bound work on every core while the event loop stays responsive.

The demo times some pure-Python CPU work twice: first serially, in the event loop's
own thread (which blocks the loop for the whole run), then spread over an
``aiomp.Pool`` with ``await pool.map(...)``. While the pool runs, a ticker task sleeps
1 ms at a time and records how late each wake-up is: that lag is what every other
task of a server would feel. It prints the speedup over the serial run, the number of
worker processes, and the loop's p99 and worst lag.

Run ``python -m aiomp --help`` for the options (event loop, processes, start method).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import multiprocessing
import sys
import time
from collections.abc import Sequence

import anyio

import aiomp

__all__ = ["crunch", "main"]

LOOPS = ("asyncio", "uvloop", "trio")
# The serial run should take about this long, whatever the machine.
_SERIAL_SECONDS = 2.0
_TASKS_PER_PROCESS = 8
_MIN_TASK_SECONDS = 0.005
_TICK = 0.001
_DESCRIPTION = (
    "Time CPU-bound work serially, then on every core through aiomp.Pool, while a ticker task "
    "measures how late the event loop wakes up."
)


# Run as ``python -m aiomp``, this function lives in ``__main__``, which spawn and
# forkserver workers do not import for a package's ``__main__.py``; aiomp sends such
# functions by value (cloudpickle), so it works under every start method.
def crunch(n: int) -> int:
    """Pure-Python arithmetic: it holds the GIL throughout, so threads could not share it."""
    total = 0
    for i in range(n):
        total = (total + i * i) % 1_000_003
    return total


def _calibrate(seconds: float) -> int:
    """The ``n`` for which ``crunch(n)`` takes about ``seconds`` on this machine."""
    n = 20_000
    while True:
        start = time.perf_counter()
        crunch(n)
        took = time.perf_counter() - start
        if took >= 0.05:
            return max(1, round(n * seconds / took))
        n *= 4


async def _ticker(lags: list[float]) -> None:
    """Sleep 1 ms forever, recording how much later than asked each wake-up comes."""
    while True:
        start = time.perf_counter()
        await anyio.sleep(_TICK)
        lags.append(max(0.0, time.perf_counter() - start - _TICK))


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


async def _demo(loop_name: str, processes: int | None, context: str | None) -> int:
    pool = aiomp.Pool(processes, context=context)
    tasks = _TASKS_PER_PROCESS * pool.processes
    per_task = max(_MIN_TASK_SECONDS, _SERIAL_SECONDS / tasks)
    work = [_calibrate(per_task)] * tasks
    print(f"aiomp demo: {tasks} CPU-bound tasks of about {per_task * 1000:.0f} ms each, on the {loop_name} event loop")
    print()

    start = time.perf_counter()
    expected = [crunch(n) for n in work]
    serial = time.perf_counter() - start
    _row("serial, in the event loop's thread", f"{serial:.2f} s", "the loop is blocked all along")

    lags: list[float] = []
    start = time.perf_counter()
    async with pool:
        # One tiny task per worker, so the timing below starts with every worker up.
        await pool.map(crunch, [0] * pool.processes, chunksize=1)
        startup = time.perf_counter() - start
        async with anyio.create_task_group() as tg:
            tg.start_soon(_ticker, lags)
            start = time.perf_counter()
            results = await pool.map(crunch, work)
            parallel = time.perf_counter() - start
            tg.cancel_scope.cancel()
    if results != expected:
        print("error: the pool's results differ from the serial ones", file=sys.stderr)
        return 1

    _row("await pool.map(crunch, work)", f"{parallel:.2f} s", f"after {startup:.2f} s to start the workers")
    workers = f"{pool.processes} worker process" + ("es" if pool.processes > 1 else "")
    _row("speedup over serial", f"{serial / parallel:.2f}x", f"with {workers}")
    if lags:
        p99, worst = _percentile(lags, 0.99) * 1000, max(lags) * 1000
        _row("event-loop lag during pool.map", f"p99 {p99:.1f} ms, worst {worst:.1f} ms", f"{len(lags)} ticks of 1 ms")
    if processes is None and pool.processes > 1:
        print()
        print(
            f"The {pool.processes} workers keep every CPU busy, so the loop shares its CPU with one of them;"
            f" `python -m aiomp -p {pool.processes - 1}` leaves it a core of its own."
        )
    return 0


def _row(label: str, value: str, note: str) -> None:
    print(f"  {label:<36} {value:<26} {note}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m aiomp", description=_DESCRIPTION)
    parser.add_argument("--loop", choices=LOOPS, default="asyncio", help="the event loop to run on (default: asyncio)")
    parser.add_argument(
        "--processes", "-p", type=int, default=None, help="worker processes (default: every usable CPU)"
    )
    parser.add_argument(
        "--context",
        choices=multiprocessing.get_all_start_methods(),
        default=None,
        help="the start method of the worker processes (default: aiomp's, forkserver where it exists)",
    )
    args = parser.parse_args(argv)
    if args.processes is not None and args.processes < 1:
        parser.error("--processes must be at least 1")
    needed = {"uvloop": "uvloop", "trio": "trio"}.get(args.loop)
    if needed is not None and importlib.util.find_spec(needed) is None:
        parser.error(f"--loop {args.loop} needs the {needed} package: pip install {needed}")

    backend = "trio" if args.loop == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.loop == "uvloop" else {}
    try:
        return anyio.run(_demo, args.loop, args.processes, args.context, backend=backend, backend_options=options)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
