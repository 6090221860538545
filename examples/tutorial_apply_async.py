"""``apply_async`` with a callback: the tutorials' way of collecting results as they come.

Mirrors the common pattern of the ``multiprocessing`` tutorials::

    results = []
    with Pool() as pool:
        for i in range(10):
            pool.apply_async(square, (i,), callback=results.append)
        pool.close()
        pool.join()
    print(sorted(results))

plus ``error_callback`` for a task that raises. The callbacks run in the parent, on the
event loop's thread, one at a time, so they may touch the parent's state without a lock
(keep them short: they run on the loop). ``pool.join()`` is awaited.

Run it with ``python examples/tutorial_apply_async.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
import threading

import anyio

import aiomp


def square(x: int) -> int:
    return x * x


def reciprocal(x: int) -> float:
    return 1 / x


async def main(context: str | None) -> None:
    results: list[int] = []
    threads: set[str] = set()

    def collect(result: int) -> None:  # runs in the parent, on the event loop
        results.append(result)
        threads.add(threading.current_thread().name)

    def report(error: BaseException) -> None:  # runs in the parent when a task raised
        print("error_callback got", type(error).__name__ + ":", error)

    async with aiomp.Pool(context=context) as pool:
        for i in range(10):
            pool.apply_async(square, (i,), callback=collect)
        pool.apply_async(reciprocal, (0,), error_callback=report)
        pool.close()  # no more work
        await pool.join()  # wait for every task; their callbacks have run by then
    print(sorted(results))
    print("callbacks ran in", sorted(threads))


if __name__ == "__main__":  # needed: every worker imports this module
    parser = argparse.ArgumentParser(description="apply_async with a callback.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
