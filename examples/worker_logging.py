"""Logging from worker processes lands in the parent's own logging setup.

Run it with ``python examples/worker_logging.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn``). The workers call plain
``logging.getLogger(__name__)``; they configure nothing. The parent configures
logging once, as any application does, and every record from every worker comes
out through that configuration: its format (note the process names), its levels
(the workers' DEBUG lines cost nothing and never appear), its handlers.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import anyio

import aiomp

log = logging.getLogger("example")

# -- code that runs in the workers: plain logging calls ---------------------------


def crunch(n: int) -> int:
    log.debug("crunch(%d) starts", n)  # below the parent's level: filtered in the worker
    total = sum(i * i for i in range(n * 1000))
    log.info("crunch(%d) = %d", n, total)
    return total


def fragile(n: int) -> int:
    try:
        return 100 // n
    except ZeroDivisionError:
        log.exception("fragile(%d) failed", n)  # the traceback travels as text
        return 0


def last_words() -> None:
    log.warning("about to exit with os._exit(3)")
    os._exit(3)  # no clean-up at all, and the record above is still delivered


# -- the parent: configures logging, awaits the work -----------------------------


async def main(context: str) -> None:
    async with aiomp.Pool(2, context=context) as pool:
        totals = await pool.map(crunch, [1, 2, 3])
        print("totals", totals, flush=True)
        print("fragile", await pool.map(fragile, [0, 5]), flush=True)

    process = aiomp.Process(target=last_words, name="last-words", context=context)
    await process.start()
    await process.join()  # when join() returns, every record the child logged is handled
    print("last-words exit code", process.exitcode, flush=True)

    # The multiprocessing tutorials' way works too: aiomp's own logger on stderr.
    aiomp.log_to_stderr(logging.INFO)
    async with aiomp.Pool(1, context=context) as pool:
        await pool.apply(aiomp.get_logger().info, ("hello from a worker via aiomp.get_logger()",))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], default="forkserver")
    options = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(levelname)-7s %(processName)-16s %(name)s: %(message)s",
    )
    backend = "trio" if options.loop == "trio" else "asyncio"
    backend_options = {"use_uvloop": True} if options.loop == "uvloop" else {}
    anyio.run(main, options.context, backend=backend, backend_options=backend_options)
