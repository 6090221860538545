"""Progress bars over a pool: tqdm over ``imap_unordered``, and ``Pool.statistics()``.

Run it with ``python examples/progress.py`` (``--loop trio`` or ``--loop uvloop`` for
another event loop). Needs tqdm: ``pip install tqdm``.

* A source with a length (a list, a range): ``len()`` of ``imap``/``imap_unordered``
  is the number of results to come, so tqdm shows the total by itself.
* An async source (a database cursor, a socket) has no length: give tqdm the total
  if you know it.
* No total at all: ``Pool.statistics()`` says how many tasks have completed, are
  running and are queued; a small task prints it while the work goes on.

The bars go to stderr; the results to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import AsyncIterator

import anyio
from tqdm.asyncio import tqdm

import aiomp


def square(x: int) -> int:
    time.sleep(0.002)  # a little CPU-bound work
    return x * x


async def readings(count: int) -> AsyncIterator[int]:
    """An async source without a length."""
    for i in range(count):
        await anyio.sleep(0)
        yield i


async def sized_source(pool: aiomp.Pool) -> None:
    total = 0
    async for value in tqdm(pool.imap_unordered(square, range(200)), desc="sized source", file=sys.stderr):
        total += value
    print(f"sized source: sum of squares below 200 = {total}")


async def async_source(pool: aiomp.Pool) -> None:
    total = 0
    results = pool.imap_unordered(square, readings(100), chunksize=4)
    async for value in tqdm(results, total=100, desc="async source", file=sys.stderr):
        total += value
    print(f"async source: sum of squares below 100 = {total}")


async def no_total(pool: aiomp.Pool) -> None:
    async def report() -> None:
        while True:
            stats = pool.statistics()
            print(
                f"\rcompleted {stats.tasks_completed}, running {stats.tasks_running}, queued {stats.tasks_queued}",
                end="",
                file=sys.stderr,
            )
            await anyio.sleep(0.05)

    values: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(report)
        values = await pool.map(square, readings(300), chunksize=10)
        tg.cancel_scope.cancel()
    print(file=sys.stderr)
    print(f"no total: {len(values)} results, statistics counted {pool.statistics().tasks_completed} tasks")


async def main() -> None:
    async with aiomp.Pool(2) as pool:
        await sized_source(pool)
        await async_source(pool)
        before = pool.statistics().tasks_completed
        await no_total(pool)
        print(f"the map ran {pool.statistics().tasks_completed - before} tasks of 10 items")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    loop = parser.parse_args().loop
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    anyio.run(main, backend="trio" if loop == "trio" else "asyncio", backend_options=options)
