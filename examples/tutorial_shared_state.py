"""Shared memory between processes: the multiprocessing docs' "Sharing state between
processes: Shared memory" (``Value`` and ``Array``), awaited.

Mirrors ``f(n, a)`` setting ``n.value = 3.1415927`` and negating every item of ``a`` in a
child, after which the parent prints ``3.1415927`` and ``[0, -1, -2, ..., -9]``. Then the
tutorials' counter: four children add to one shared ``Value`` under its lock
(``get_lock()``, blocking, in the children) while the parent adds to it under the same
lock, awaited (``async with lock:``).

Run it with ``python examples/tutorial_shared_state.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import anyio

import aiomp

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized, SynchronizedArray


def f(n: Synchronized[float], a: SynchronizedArray[int]) -> None:
    n.value = 3.1415927
    for i in range(len(a)):
        a[i] = -a[i]


def add(counter: Synchronized[int], times: int) -> None:
    for _ in range(times):
        with counter.get_lock():  # += reads, then writes: without the lock, updates get lost
            counter.value += 1


async def main(context: str | None) -> None:
    num: Synchronized[float] = aiomp.Value("d", 0.0)
    arr: SynchronizedArray[int] = aiomp.Array("i", range(10))
    async with aiomp.Process(target=f, args=(num, arr), context=context):
        pass  # the child runs; leaving the block joins it
    print(num.value)
    print(arr[:])

    # What get_lock() returns: by default a new aiomp.RLock, made here to await it below.
    # A recursive lock: reading and writing .value take it too, under get_lock() as well.
    lock = aiomp.RLock()
    counter: Synchronized[int] = aiomp.Value("i", 0, lock=lock)
    children = [aiomp.Process(target=add, args=(counter, 1000), context=context) for _ in range(4)]
    for p in children:
        await p.start()
    for _ in range(100):
        async with lock:  # an aiomp lock: awaited here, blocking in the children
            counter.value += 1
        await anyio.sleep(0)
    for p in children:
        await p.join()
    print("counter", counter.value)  # 4 * 1000 + 100


if __name__ == "__main__":  # needed: the children import this module
    parser = argparse.ArgumentParser(description="Shared memory between processes: Value and Array.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
