"""A tour of aiomp's primitives: the multiprocessing tutorials, awaited.

Run it with ``python examples/primitives.py`` (add ``--loop uvloop`` or
``--loop trio``). The code inside each child process is plain blocking
``multiprocessing`` code; the parent awaits everything, so its event loop stays
free the whole time.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

import anyio

import aiomp

if TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized, SynchronizedArray

# -- code that runs in child processes: plain, blocking ---------------------------


def greet(name: str) -> None:
    print(f"hello {name} from process {os.getpid()}", flush=True)


def produce(q: aiomp.Queue, count: int) -> None:
    for i in range(count):
        q.put(i * i)
    q.shutdown()  # consumers drain what is queued, then their loops end


def echo(conn: aiomp.Connection) -> None:
    for message in iter(conn.recv, None):
        conn.send(f"echo: {message}")


def report(lock: aiomp.Lock, i: int) -> None:
    with lock:
        print(f"worker {i} has the lock", flush=True)


def count(total: Synchronized[int], hits: SynchronizedArray[int], times: int) -> None:
    for _ in range(times):
        with total.get_lock():
            total.value += 1
        with hits.get_lock():
            hits[os.getpid() % len(hits)] += 1


async def wait_then_set(event: aiomp.Event) -> None:
    await anyio.sleep(0.1)  # an async target runs on a fresh loop in the child
    event.set()


# -- the parent: every wait is awaited ---------------------------------------------


async def main(context: str | None) -> None:
    # Process hello: start and join without blocking the loop.
    async with aiomp.Process(target=greet, args=("bob",), context=context) as p:
        pass
    print("exit code", p.exitcode)

    # Producer/consumer: `async for` ends when the producer shuts the queue down.
    q = aiomp.Queue(maxsize=4)
    async with aiomp.Process(target=produce, args=(q, 10), context=context):
        squares = [item async for item in q]
    print("squares", squares)

    # Pipe hello.
    here, there = aiomp.Pipe()
    async with aiomp.Process(target=echo, args=(there,), context=context):
        there.close()  # the child has its own copy
        await here.asend("hello")
        print(await here.arecv())
        await here.asend(None)
    here.close()

    # A lock guarding output, taken by the parent too.
    lock = aiomp.Lock()
    async with lock:
        procs = [aiomp.Process(target=report, args=(lock, i), context=context) for i in range(3)]
        for proc in procs:
            await proc.start()
        # flush: the workers print as soon as they get the lock, and when the output is a
        # pipe or a file (not a terminal) an unflushed line would come out after theirs.
        print("parent holds the lock while the workers start", flush=True)
    for proc in procs:
        await proc.join()

    # Shared counters; the parent increments under the same lock, awaited.
    counter_lock = aiomp.RLock()  # the parent awaits the same lock that the children take with `with`
    total: Synchronized[int] = aiomp.Value("i", 0, lock=counter_lock)
    hits: SynchronizedArray[int] = aiomp.Array("i", 4)
    procs = [aiomp.Process(target=count, args=(total, hits, 200), context=context) for _ in range(3)]
    for proc in procs:
        await proc.start()
    for _ in range(200):
        async with counter_lock:
            total.value += 1
    for proc in procs:
        await proc.join()
    print("total", total.value, "hits per slot", sum(hits[:]))

    # An event set by an async child.
    event = aiomp.Event()
    started = time.perf_counter()
    async with aiomp.Process(target=wait_then_set, args=(event,), context=context):
        await event.await_(timeout=10)
    print(f"event set after {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], default=None)
    args = parser.parse_args()
    backend = "trio" if args.loop == "trio" else "asyncio"
    options = {"use_uvloop": True} if args.loop == "uvloop" else {}
    anyio.run(main, args.context, backend=backend, backend_options=options)
