"""aiomp: awaitable multiprocessing for asyncio, uvloop and trio.

Run CPU-bound Python on every core from an event loop without blocking it::

    async with aiomp.Pool() as pool:
        results = await pool.map(work, items)

The public names are imported on first use, so a worker process, which imports
only ``aiomp._worker``, starts without loading anyio and the Pool machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

# Where each public name lives. Each module sets __module__ = "aiomp" on its
# public classes, so reprs and pickles name this package.
_HOMES = {
    "AsyncResult": "pool",
    "BrokenPoolError": "_exceptions",
    "IMapIterator": "pool",
    "Pool": "pool",
    "PoolClosedError": "_exceptions",
    "PoolStatistics": "backends",
    "ProcessError": "_exceptions",
    "RemoteTraceback": "_exceptions",
    "WorkerDiedError": "_exceptions",
}

if TYPE_CHECKING:
    from ._exceptions import BrokenPoolError, PoolClosedError, ProcessError, RemoteTraceback, WorkerDiedError
    from .backends import PoolStatistics
    from .pool import AsyncResult, IMapIterator, Pool


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aiomp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
