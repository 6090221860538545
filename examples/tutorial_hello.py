"""Hello from a child process: the multiprocessing docs' "The Process class", awaited.

Mirrors the stdlib's first ``Process`` examples: ``f('bob')`` prints ``hello bob`` in a
child, and ``info(title)`` prints the module name, the parent's process id and the
process's own id, once in the main process and once in the child. The child's code is
unchanged; the parent awaits ``start()`` and ``join()``, so its event loop stays free.

Run it with ``python examples/tutorial_hello.py`` (add ``--loop uvloop`` or ``--loop trio``,
``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
import os

import anyio

import aiomp


def info(title: str) -> None:
    print(title)
    # The child imported this script as __mp_main__, but f came from __main__ by value
    # (cloudpickle), with the parent's globals: so it says __main__ here too.
    print("module name:", __name__)
    parent = aiomp.parent_process()  # None in the main process
    # In a child the parent is the process that started it (under forkserver, os.getppid()
    # would name the fork server instead).
    print("parent process:", parent.pid if parent is not None else os.getppid())
    print("process id:", os.getpid(), flush=True)


def f(name: str) -> None:
    info("function f")
    print("hello", name, flush=True)


async def main(context: str | None) -> None:
    info("main line")
    p = aiomp.Process(target=f, args=("bob",), context=context)
    await p.start()
    await p.join()
    print("exit code", p.exitcode)


if __name__ == "__main__":  # needed: the child imports this module
    parser = argparse.ArgumentParser(description="Hello from a child process.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
