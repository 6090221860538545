"""Producers and consumers on queues, ended by ``shutdown()``: the multiprocessing docs'
task-queue example ("Examples": worker processes fed through a queue), awaited.

Mirrors ``worker(input, output)``, four processes that take ``(func, args)`` tasks from
one queue and put ``'Process-1 says that mul(3, 7) = 21'`` on another. The stdlib's
workers stop at a ``'STOP'`` marker, one per worker; here the parent calls
``task_queue.shutdown()`` once: every worker's ``get()`` then drains what is left and
raises ``aiomp.QueueShutDown`` (``queue.ShutDown`` of Python 3.13, for processes). The
parent produces with ``await task_queue.aput(...)``, which waits for room in the
bounded queue without blocking the loop, and consumes with ``await done_queue.aget()``.

The second half turns it round: a child produces and shuts the queue down, and the
parent consumes with ``async for item in queue``, which ends there.

Run it with ``python examples/tutorial_producer_consumer.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import time
from collections.abc import Callable

import anyio

import aiomp

NUMBER_OF_PROCESSES = 4
Task = tuple[Callable[[int, int], int], tuple[int, int]]


# -- the children: plain blocking code ----------------------------------------------


def worker(task_queue: aiomp.Queue, done_queue: aiomp.Queue) -> None:
    try:
        while True:  # the stdlib's: for func, args in iter(input.get, 'STOP')
            func, args = task_queue.get()
            done_queue.put(calculate(func, args))
    except aiomp.QueueShutDown:  # shut down, and every task taken
        pass


def calculate(func: Callable[[int, int], int], args: tuple[int, int]) -> str:
    result = func(*args)
    return f"{aiomp.current_process().name} says that {func.__name__}{args} = {result}"


def mul(a: int, b: int) -> int:
    time.sleep(0.05 * random.random())
    return a * b


def plus(a: int, b: int) -> int:
    time.sleep(0.05 * random.random())
    return a + b


def produce(queue: aiomp.Queue, count: int) -> None:
    for i in range(count):
        queue.put(i * i)
    queue.shutdown()  # the consumer gets every item put, then its loop ends


# -- the parent: every wait is awaited ---------------------------------------------


async def main(context: str | None) -> None:
    tasks1: list[Task] = [(mul, (i, 7)) for i in range(20)]
    tasks2: list[Task] = [(plus, (i, 8)) for i in range(10)]

    task_queue = aiomp.Queue(maxsize=8)  # bounded: aput waits for room
    done_queue = aiomp.Queue()
    async with contextlib.AsyncExitStack() as stack:
        # Each worker starts as it is entered. Leaving the stack normally joins them;
        # leaving it by an exception terminates them, where a worker blocked in get()
        # would otherwise wait for ever (and the program with it, at exit).
        args = (task_queue, done_queue)
        workers = [
            await stack.enter_async_context(aiomp.Process(target=worker, args=args, context=context))
            for _ in range(NUMBER_OF_PROCESSES)
        ]

        async with anyio.create_task_group() as tg:

            async def submit(tasks: list[Task]) -> None:
                for task in tasks:
                    await task_queue.aput(task)

            tg.start_soon(submit, tasks1)
            print("Unordered results:")
            for _ in range(len(tasks1)):
                print("\t", await done_queue.aget())

        for task in tasks2:
            await task_queue.aput(task)
        for _ in range(len(tasks2)):
            print("\t", await done_queue.aget())

        task_queue.shutdown()  # the stdlib puts 'STOP' once per worker instead
    print("workers' exit codes", [p.exitcode for p in workers])

    # The other way round: a child produces, the parent consumes until the shutdown.
    queue = aiomp.Queue()
    async with aiomp.Process(target=produce, args=(queue, 5), context=context):
        async for item in queue:
            print("consumed", item)
    print("the producer shut the queue down")
    for q in (task_queue, done_queue, queue):
        q.close()


if __name__ == "__main__":  # needed: the children import this module
    parser = argparse.ArgumentParser(description="Producers and consumers on queues, ended by shutdown().")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
