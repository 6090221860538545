"""A program that awaits a pool until something ends it, for the hardening tests.

``python -m tests._victim LOOP START_METHOD`` starts a 2-worker pool and gives
each worker a task that never ends: one in a single long C call that holds the
GIL (no Python-level watcher could run in that worker), one asleep. Each task
prints ``worker <pid>``. Then it awaits them until the test kills or interrupts it
(SIGUSR1 makes it leave by ``os._exit``). With a third argument ``fork`` it also forks
a child that only sleeps.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import anyio

import aiomp


def stall(kind: int) -> None:
    os.write(1, f"worker {os.getpid()}\n".encode())  # one write: the two workers share the pipe
    if kind == 0:
        sum(range(10**13))
    else:
        time.sleep(3600)


async def main(start_method: str, fork_a_child: bool) -> None:
    lock = aiomp.Lock()  # a named semaphore: the resource tracker would report it if it leaked
    async with lock, aiomp.Pool(2, context=start_method) as pool:
        if fork_a_child and os.fork() == 0:
            # An unrelated child forked without exec, which inherits the pool's
            # descriptors: it must not keep the workers alive after the parent died.
            time.sleep(60)
            os._exit(0)
        await pool.map(stall, [0, 1], chunksize=1)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(3))
    loop, method, fork_a_child = sys.argv[1], sys.argv[2], "fork" in sys.argv[3:]
    options = {}
    if loop == "uvloop":
        import uvloop

        options = {"loop_factory": uvloop.new_event_loop}
    anyio.run(main, method, fork_a_child, backend="trio" if loop == "trio" else "asyncio", backend_options=options)
