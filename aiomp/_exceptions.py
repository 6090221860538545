"""The errors aiomp raises.

::

    multiprocessing.ProcessError
     └── ProcessError            base of every aiomp-specific failure
          ├── WorkerDiedError    the worker running a task exited (crash, signal, OOM)
          ├── BrokenPoolError    workers keep dying while starting: the pool gave up
          └── PoolClosedError    the pool was closed or terminated (also a ValueError)
    QueueShutDown               the queue was shut down (and, for gets, drained)
    RemoteTraceback             the worker's formatted traceback, set as ``__cause__``

An exception raised by a task is re-raised in the caller with its own type; the
worker's traceback travels as text and is attached as ``__cause__``.
"""

from __future__ import annotations

import multiprocessing
import queue

__all__ = [
    "BrokenPoolError",
    "PoolClosedError",
    "ProcessError",
    "QueueShutDown",
    "RemoteTraceback",
    "WorkerDiedError",
]


class ProcessError(multiprocessing.ProcessError):
    """Base class of aiomp's own errors."""


class WorkerDiedError(ProcessError):
    """The worker process running a task exited before it returned a result.

    ``exitcode`` is the worker's exit status; a negative value ``-N`` means it was
    killed by signal ``N`` (``-9``: SIGKILL, ``-11``: SIGSEGV); ``None`` when it is not
    known (a Dask worker).
    """

    def __init__(self, exitcode: int | None, detail: str = "") -> None:
        self.exitcode = exitcode
        self.detail = detail
        super().__init__(exitcode, detail)

    def __str__(self) -> str:
        if self.exitcode is None:  # not known: a remote engine's worker (Dask's) was lost
            how = "died"
        elif self.exitcode < 0:
            how = f"was killed by signal {-self.exitcode}"
        else:
            how = f"exited with code {self.exitcode}"
        text = f"the worker process running this task {how}"
        return f"{text} ({self.detail})" if self.detail else text


class BrokenPoolError(ProcessError):
    """Worker processes keep failing while they start, so the pool stopped trying.

    The usual causes: a script without an ``if __name__ == "__main__":`` guard,
    an ``initializer`` that raises, or a module the workers cannot import.
    """


class PoolClosedError(ProcessError, ValueError):
    """The pool is closed or terminated and takes no more work.

    A ``ValueError`` too, as the standard library raises ``ValueError("Pool not
    running")`` in the same situation.
    """


# Python 3.13's queue.ShutDown where it exists, so one except clause catches both.
_ShutDown: type[Exception] = getattr(queue, "ShutDown", Exception)


class QueueShutDown(_ShutDown):  # type: ignore[valid-type,misc]
    """Raised by a put on a queue that was shut down, and by a get once it is drained.

    Python 3.13's ``queue.ShutDown`` for queues shared between processes; on 3.13
    and later it is a subclass of ``queue.ShutDown``.
    """


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, as text.

    Set as ``__cause__`` of the re-raised exception, so the worker's frames are
    printed above the caller's.
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


for _cls in (BrokenPoolError, PoolClosedError, ProcessError, QueueShutDown, RemoteTraceback, WorkerDiedError):
    _cls.__module__ = "aiomp"  # reprs and pickles name the public package
del _cls
