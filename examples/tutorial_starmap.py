"""``starmap``: a function of several arguments over a list of argument tuples, awaited.

Mirrors the ``multiprocessing`` tutorials' ``pool.starmap(func, [(1, 1), (2, 1), (3, 1)])``
(``func(*args)`` for each tuple, results in input order), ``starmap`` of
``operator.mul`` over two zipped ranges, and ``starmap_async`` for a result to await later.

Run it with ``python examples/tutorial_starmap.py`` (add ``--loop uvloop`` or
``--loop trio``, ``--context spawn`` or ``--context forkserver``).
"""

from __future__ import annotations

import argparse
import operator

import anyio

import aiomp


def mul(a: int, b: int) -> int:
    return a * b


async def main(context: str | None) -> None:
    async with aiomp.Pool(2, context=context) as pool:
        print(await pool.starmap(mul, [(1, 1), (2, 1), (3, 1)]))  # [1, 2, 3]
        print(await pool.starmap(operator.mul, zip(range(5), range(5, 10), strict=True)))  # [0, 6, 14, 24, 36]
        later = pool.starmap_async(mul, [(2, n) for n in range(8)])  # scheduled now, awaited below
        print("starmap_async:", await later)  # [0, 2, 4, ..., 14]


if __name__ == "__main__":  # needed: every worker imports this module
    parser = argparse.ArgumentParser(description="starmap: several arguments per call.")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--context", choices=["spawn", "forkserver"], help="start method (default: forkserver)")
    options = parser.parse_args()
    if options.loop == "trio":
        anyio.run(main, options.context, backend="trio")
    else:
        anyio.run(main, options.context, backend_options={"use_uvloop": options.loop == "uvloop"})
