"""aiomp: awaitable multiprocessing for asyncio, uvloop and trio.

Run CPU-bound Python on every core from an event loop without blocking it::

    async with aiomp.Pool() as pool:
        results = await pool.map(work, items)
"""

from __future__ import annotations

from ._exceptions import BrokenPoolError, PoolClosedError, ProcessError, RemoteTraceback, WorkerDiedError
from .backends import PoolStatistics
from .pool import AsyncResult, IMapIterator, Pool

__all__ = [
    "AsyncResult",
    "BrokenPoolError",
    "IMapIterator",
    "Pool",
    "PoolClosedError",
    "PoolStatistics",
    "ProcessError",
    "RemoteTraceback",
    "WorkerDiedError",
]

__version__ = "0.1.0"

# Reprs, docs and pickles name the public module, not the private one.
for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
