"""Logging with ``log_to_stderr``: the multiprocessing docs' "Logging" section, awaited.

Mirrors::

    logger = multiprocessing.log_to_stderr()
    logger.setLevel(logging.INFO)
    logger.warning('doomed')

which prints ``[WARNING/MainProcess] doomed`` on stderr. With aiomp the records a child
process or a pool worker logs are sent to the parent and printed there, by the handler
``log_to_stderr`` added, tagged with the process they came from; a worker's DEBUG record
is dropped in the worker, below the level set here.

Run it with ``python examples/tutorial_logging.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
import logging

import anyio

import aiomp


def child() -> None:
    aiomp.get_logger().info("hello from a child process")


def task(n: int) -> int:
    logger = aiomp.get_logger()
    logger.debug("task(%d) starts", n)  # below INFO: never sent
    logger.info("task(%d) = %d", n, n * n)
    return n * n


async def main(context: str | None) -> None:
    logger = aiomp.log_to_stderr()
    logger.setLevel(logging.INFO)
    logger.warning("doomed")

    async with aiomp.Process(target=child, context=context):
        pass  # when the child is joined, its records have been printed
    async with aiomp.Pool(2, context=context) as pool:
        # A task's records are printed before its result is handed back.
        print("results", await pool.map(task, range(3), chunksize=1), flush=True)


if __name__ == "__main__":  # needed: the children import this module
    parser = argparse.ArgumentParser(description="Logging with log_to_stderr.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
