"""A tour of aiomp.Pool: every way to submit work, and what errors look like.

Run it with ``python examples/pool_basics.py`` (add ``trio`` or ``uvloop`` as an argument
to run it on that event loop). The functions below are defined in the script itself, so
aiomp sends them to the workers by value (with cloudpickle), which works under every
start method. Under spawn and forkserver each worker also imports this file; the
``if __name__ == "__main__":`` guard at the bottom keeps it from running the tour again.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator

import anyio

import aiomp


def square(x: int) -> int:
    return x * x


def power(base: int, exponent: int) -> int:
    return int(base**exponent)


def slow_square(x: int) -> int:
    time.sleep(0.05 * (x % 4))
    return x * x


def check_positive(x: int) -> int:
    if x < 0:
        raise ValueError(f"{x} is negative")
    return x


def crash() -> None:
    os._exit(3)  # a worker that dies without a word, as a segfault would


async def download(name: str) -> str:
    await asyncio.sleep(0.2)  # runs on the worker's own asyncio loop
    return name.upper()


async def numbers(n: int) -> AsyncIterator[int]:
    """An async source, as a database cursor or a socket would be."""
    for i in range(n):
        await anyio.sleep(0)
        yield i


async def tour() -> None:
    async with aiomp.Pool(2) as pool:
        print(f"a pool of {pool.processes} worker processes")

        # One call; the await never blocks the event loop.
        print("apply:", await pool.apply(power, (2, 10)))
        print("apply with kwds:", await pool.apply(power, (), {"base": 3, "exponent": 4}))

        # Many items, results in input order, sent to the workers in chunks.
        print("map:", await pool.map(square, range(10)))
        print("starmap:", await pool.starmap(power, [(2, 3), (3, 2), (10, 3)]))
        print("map over an async source:", await pool.map(square, numbers(5)))

        # Lazy iteration with backpressure; `async with` stops leftover work if we leave early.
        async with pool.imap(square, range(1_000_000), chunksize=100) as results:
            async for value in results:
                if value > 50:
                    print("imap: stopped at", value, "without squaring a million numbers")
                    break
        finished = [x async for x in pool.imap_unordered(slow_square, range(8))]
        print("imap_unordered (completion order):", finished)

        # Fire-and-forget with an AsyncResult; callbacks run on the event loop.
        pending = pool.apply_async(square, (12,), callback=lambda v: print("callback got", v))
        print("apply_async:", await pending, "ready:", pending.ready(), "successful:", pending.successful())

        # Lambdas and closures work too (they travel with cloudpickle).
        offset = 100
        print("lambda and closure:", await pool.map(lambda x: x + offset, [1, 2, 3]))

        # async def functions run concurrently inside each worker.
        start = time.monotonic()
        names = await pool.map(download, [f"file{i}" for i in range(8)], chunksize=4)
        print(f"async def: {names} in {time.monotonic() - start:.2f} s (each one sleeps 0.2 s)")

        # A task's exception keeps its type; the worker's traceback is its __cause__.
        try:
            await pool.map(check_positive, [3, 2, -1, 5])
        except ValueError as error:
            print(f"ValueError: {error} (worker traceback attached: {type(error.__cause__).__name__})")

        # A timeout stops the running task: its worker is replaced.
        try:
            await pool.apply(time.sleep, (10,), timeout=0.5)
        except TimeoutError:
            print("timeout: TimeoutError after 0.5 s, the sleeping worker was stopped")

        # A worker that dies fails only the task it was running.
        try:
            await pool.apply(crash)
        except aiomp.WorkerDiedError as error:
            print(f"WorkerDiedError: {error} (exitcode {error.exitcode})")
        print("the pool goes on:", await pool.apply(square, (7,)))

        print(pool.statistics())
    # Leaving the block normally closed the pool and waited for its work.


def main() -> None:
    loop = sys.argv[1] if len(sys.argv) > 1 else "asyncio"
    if loop == "trio":
        anyio.run(tour, backend="trio")
    else:
        anyio.run(tour, backend_options={"use_uvloop": loop == "uvloop"})


if __name__ == "__main__":
    main()
