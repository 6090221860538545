"""A pool of workers: the multiprocessing docs' ``Pool`` examples ("Introduction" and
"Using a pool of workers"), awaited.

Mirrors ``with Pool(5) as p: print(p.map(f, [1, 2, 3]))`` and the tour that follows it:
``map``, ``imap_unordered``, ``apply_async(...).get(timeout=1)``, ``os.getpid`` in the
workers, and a ``get`` that times out on a long ``time.sleep``. Three differences show:

* every wait is awaited (``imap_unordered`` is an ``async for``), so the event loop
  stays free;
* ``get(timeout=...)`` raises the builtin ``TimeoutError`` (the stdlib's is
  ``multiprocessing.TimeoutError``) and leaves the work running; ``res.cancel()`` stops it;
* leaving ``async with`` normally waits for the work submitted, where the stdlib's
  ``with`` terminates the pool: without the ``cancel()``, the block would wait out the
  ten-second sleep.

Run it with ``python examples/tutorial_pool_map.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
import os
import time

import anyio

import aiomp


def f(x: int) -> int:
    return x * x


async def main(context: str | None) -> None:
    async with aiomp.Pool(5, context=context) as p:
        print(await p.map(f, [1, 2, 3]))

    # start 4 worker processes
    async with aiomp.Pool(processes=4, context=context) as pool:
        # print "[0, 1, 4,..., 81]"
        print(await pool.map(f, range(10)))

        # print same numbers in arbitrary order
        async for i in pool.imap_unordered(f, range(10)):
            print(i)

        # evaluate "f(20)" asynchronously
        res = pool.apply_async(f, (20,))  # runs in *only* one process
        print(await res.get(timeout=1))  # prints "400"

        # evaluate "os.getpid()" asynchronously
        res_pid = pool.apply_async(os.getpid, ())  # runs in *only* one process
        print(await res_pid.get(timeout=1))  # prints the PID of that process

        # launching multiple evaluations asynchronously *may* use more processes
        multiple_results = [pool.apply_async(os.getpid, ()) for _ in range(4)]
        print([await res.get(timeout=1) for res in multiple_results])

        # make a single worker sleep for 10 seconds
        res_sleep = pool.apply_async(time.sleep, (10,))
        try:
            await res_sleep.get(timeout=1)
        except TimeoutError:
            print("We lacked patience and got a TimeoutError")
        res_sleep.cancel()  # stops the sleeping worker (a fresh one replaces it)

        print("For the moment, the pool remains available for more work")

    # exiting the 'async with' block has closed the pool and waited for its work
    print("Now the pool is closed and no longer available")


if __name__ == "__main__":  # needed: every worker imports this module
    parser = argparse.ArgumentParser(description="A pool of workers: map, imap_unordered, apply_async.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
