"""How many CPUs: ``cpu_count()`` of the ``multiprocessing`` tutorials, and the pool it sizes.

Mirrors ``print("Number of cpu :", multiprocessing.cpu_count())``. ``aiomp.cpu_count()``
counts the CPUs this process may run on (a container's or ``taskset``'s limit included),
which is the default size of ``aiomp.Pool()``; ``multiprocessing.cpu_count()`` counts
every CPU of the machine. A pool one worker smaller leaves the event loop a core of its
own, which keeps it responsive while the workers are busy.

Run it with ``python examples/tutorial_cpu_count.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os

import anyio

import aiomp


def whoami(_: int) -> int:
    return os.getpid()


async def main(context: str | None) -> None:
    print("Number of cpu :", aiomp.cpu_count())
    print("CPUs of the machine:", multiprocessing.cpu_count())
    async with aiomp.Pool(context=context) as pool:  # one worker per usable CPU
        print("Pool() workers:", pool.processes)
    async with aiomp.Pool(max(1, aiomp.cpu_count() - 1), context=context) as pool:
        pids = await pool.map(whoami, range(100), chunksize=1)
        print("Pool(cpu_count() - 1) workers:", pool.processes)
        print(len(pids), "tasks ran in", len(set(pids)), "of them")


if __name__ == "__main__":  # needed: every worker imports this module
    parser = argparse.ArgumentParser(description="How many CPUs, and the pool they size.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
