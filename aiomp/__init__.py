"""aiomp: awaitable multiprocessing for asyncio, uvloop and trio.

Run CPU-bound Python on every core from an event loop without blocking it::

    async with aiomp.Pool() as pool:
        results = await pool.map(work, items)

The public names are imported on first use, so a worker process, which imports
only ``aiomp._worker``, starts without loading anyio and the Pool machinery.

``aiomp.DaskBackend`` (the optional ``dask`` extra) is importable the same way but is
not in ``__all__``: ``from aiomp import *`` must neither need Dask nor import it.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing is not imported: a worker imports this package too

__all__ = [
    "Array",
    "AsyncResult",
    "Barrier",
    "BoundedSemaphore",
    "BrokenPoolError",
    "Condition",
    "Connection",
    "Event",
    "IMapIterator",
    "JoinableQueue",
    "Lock",
    "Pipe",
    "Pool",
    "PoolClosedError",
    "PoolStatistics",
    "Process",
    "ProcessError",
    "Queue",
    "QueueShutDown",
    "RLock",
    "RemoteTraceback",
    "Semaphore",
    "SimpleQueue",
    "Value",
    "WorkerDiedError",
    "active_children",
    "cpu_count",
    "current_process",
    "get_logger",
    "log_to_stderr",
    "parent_process",
]

__version__ = "0.1.0"

# Where each public name lives. Each module sets __module__ = "aiomp" on its
# public classes, so reprs and pickles name this package.
_HOMES = {
    "Array": "sharedctypes",
    "AsyncResult": "pool",
    "Barrier": "synchronize",
    "BoundedSemaphore": "synchronize",
    "BrokenPoolError": "_exceptions",
    "Condition": "synchronize",
    "Connection": "connection",
    "DaskBackend": "backends.dask",
    "Event": "synchronize",
    "IMapIterator": "pool",
    "JoinableQueue": "queues",
    "Lock": "synchronize",
    "Pipe": "connection",
    "Pool": "pool",
    "PoolClosedError": "_exceptions",
    "PoolStatistics": "backends",
    "Process": "process",
    "ProcessError": "_exceptions",
    "Queue": "queues",
    "QueueShutDown": "_exceptions",
    "RLock": "synchronize",
    "RemoteTraceback": "_exceptions",
    "Semaphore": "synchronize",
    "SimpleQueue": "queues",
    "Value": "sharedctypes",
    "WorkerDiedError": "_exceptions",
    "active_children": "process",
    "cpu_count": "process",
    "current_process": "process",
    "get_logger": "util",
    "log_to_stderr": "util",
    "parent_process": "process",
}

# Public names that need an optional extra, so they are not in __all__.
_OPTIONAL = ("DaskBackend",)

if TYPE_CHECKING:
    from ._exceptions import (
        BrokenPoolError,
        PoolClosedError,
        ProcessError,
        QueueShutDown,
        RemoteTraceback,
        WorkerDiedError,
    )
    from .backends import PoolStatistics
    from .backends.dask import DaskBackend as DaskBackend
    from .connection import Connection, Pipe
    from .pool import AsyncResult, IMapIterator, Pool
    from .process import Process, active_children, cpu_count, current_process, parent_process
    from .queues import JoinableQueue, Queue, SimpleQueue
    from .sharedctypes import Array, Value
    from .synchronize import Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore
    from .util import get_logger, log_to_stderr


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'aiomp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__, *_OPTIONAL})
