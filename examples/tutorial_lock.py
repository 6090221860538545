"""A lock around prints from several processes: the multiprocessing docs' "Synchronization
between processes", awaited.

Mirrors ``f(l, i)`` taking a shared ``Lock`` so that the ten processes' ``print('hello
world', i)`` lines do not mix. The children's code is the stdlib's, blocking; the parent
takes the same lock with ``async with lock:`` (it awaits, the loop stays free) and holds
it while it starts the children, so every child prints after it.

Run it with ``python examples/tutorial_lock.py`` (add ``--loop uvloop`` or ``--loop trio``,
``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse

import anyio

import aiomp


def f(lock: aiomp.Lock, i: int) -> None:
    lock.acquire()
    try:
        print("hello world", i, flush=True)
    finally:
        lock.release()


async def main(context: str | None) -> None:
    lock = aiomp.Lock()
    processes = [aiomp.Process(target=f, args=(lock, num), context=context) for num in range(10)]
    async with lock:
        for p in processes:
            await p.start()
        print("the parent holds the lock: no child prints yet", flush=True)
    for p in processes:  # the stdlib's example leaves this out; join every child you start
        await p.join()
    print("exit codes", [p.exitcode for p in processes])


if __name__ == "__main__":  # needed: the children import this module
    parser = argparse.ArgumentParser(description="A lock around prints from several processes.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
