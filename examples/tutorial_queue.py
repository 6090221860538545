"""A queue filled by a child process: the multiprocessing docs' "Exchanging objects between
processes: Queues" and "Contexts and start methods", awaited.

Mirrors ``f(q)`` putting ``[42, None, 'hello']`` on a ``Queue`` that the parent prints,
and ``foo(q)`` putting ``'hello'`` on a queue of a chosen start method (the stdlib's
``mp.set_start_method('spawn')``; aiomp takes ``context=`` per process). The child's code
is unchanged; the parent awaits ``q.aget()`` instead of blocking in ``q.get()``.

Run it with ``python examples/tutorial_queue.py`` (add ``--loop uvloop`` or ``--loop trio``,
``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse

import anyio

import aiomp


def f(q: aiomp.Queue) -> None:
    q.put([42, None, "hello"])


def foo(q: aiomp.Queue) -> None:
    q.put("hello")


async def main(context: str | None) -> None:
    q = aiomp.Queue()
    p = aiomp.Process(target=f, args=(q,), context=context)
    await p.start()
    print(await q.aget())  # prints "[42, None, 'hello']"
    await p.join()

    # "Contexts and start methods": the same queue works with a child of any start method.
    p = aiomp.Process(target=foo, args=(q,), context="spawn")
    await p.start()
    print(await q.aget())  # prints "hello"
    await p.join()
    q.close()


if __name__ == "__main__":  # needed: the child imports this module
    parser = argparse.ArgumentParser(description="A queue filled by a child process.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
