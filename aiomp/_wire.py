"""The pool's protocol between the parent and one worker, over one socket.

Messages are ``_frames`` frames, each packing objects with ``_serialize``: a
control tuple first (its first item says which message it is), then the values
it announces, each its own object in the frame, never a pickle inside a pickle.
Big buffers of arguments and results therefore travel through shared memory.

Neither side ever makes a blocking read or write on the socket, because uvloop
leaves a descriptor non-blocking once it has watched it (see PITFALLS): the
parent waits for readiness on its event loop (``_fd``), a worker in
``_fd.block_until``, which is fine in a process that does nothing else.

Parent to worker::

    (TASKS, [(index, func_bytes, mode, is_async), ...]), payload, payload, ...
    (CANCEL, [index, ...])        drop these if not started; cancel if async
    (STOP,)                       exit once idle
    (LEVELS, levels)              the parent's logging levels changed (_logs.Levels)

Worker to parent::

    (READY, pid)                  the initializer ran; the worker takes tasks
    (INIT_FAILED,), error         the initializer raised; the worker exits
    (RESULT, index, status, seconds), value
    (RESULT, index, OK, seconds, value)   a small value without buffers: one object
    (RETIRING,)                   over max_memory_per_child after a task (sent before its
                                  result): it takes no more and exits

``func_bytes`` is the function's pickle (small, and the worker's cache key);
``error`` and an ERROR result's value are ``_serialize.dump_error`` bytes.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import MutableSequence

from . import _serialize
from ._frames import Frame

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    from typing import Final

__all__ = ["Markers", "fence", "message"]

# Message kinds.
TASKS: Final = 1
CANCEL: Final = 2
STOP: Final = 3
READY: Final = 4
INIT_FAILED: Final = 5
RESULT: Final = 6
LEVELS: Final = 7
RETIRING: Final = 8  # a worker over max_memory_per_child: it takes no more tasks and exits

# In a worker: the index of the pool task running in this context (0: none). Log
# records carry it, so that the parent handles them in the context of the call.
TASK: contextvars.ContextVar[int] = contextvars.ContextVar("aiomp_task", default=0)

# Task modes: how a worker applies the function to the payload. The values of
# aiomp.backends.CallKind, as plain ints: a worker does not import the seam (its
# import stays light); tests/test_backend_seam.py checks that they agree.
APPLY: Final = 0  # CallKind.APPLY: payload is (args, kwds): func(*args, **kwds)
MAP: Final = 1  # CallKind.MAP: payload is a list of items: [func(x) for x in items]
STARMAP: Final = 2  # CallKind.STARMAP: payload is a list of tuples: [func(*x) for x in items]

# Result statuses.
OK: Final = 0
ERROR: Final = 1  # payload is a pickled (exception, traceback text) pair
CANCELLED: Final = 2  # the worker dropped or cancelled the task
OUT_OF_MEMORY: Final = 3  # payload as for ERROR (a MemoryError); the worker exits next

# The exit status of a worker that retires after a task ran out of memory.
EXIT_OUT_OF_MEMORY: Final = 1


def message(control: tuple[object, ...], *values: _serialize.Encoded) -> Frame:
    """One message: a control tuple, then the encoded values it announces."""
    return _serialize.pack([_serialize.encode(control), *values])


# Cancel requests a worker's slot holds at once (a ring indexed by task index).
_RING = 64
_STRIDE = 3 + _RING  # started, finished, records logged, the ring
_FENCE = threading.Lock()


def fence() -> None:
    """A full memory barrier: an uncontended lock is an atomic read-modify-write."""
    _FENCE.acquire()
    _FENCE.release()


class Markers:
    """One worker's slots in the pool's shared array, written by both sides.

    ``started``: index of the task the worker started last (tasks start in the
    order they arrive). ``finished``: index of the plain task it finished last,
    written before its result is sent. ``logged``: how many log records the worker
    has written to its log channel, updated after each (so a result read after it
    knows which records came first, without asking the socket). A ring of cancel
    requests, written by the parent. The worker writes ``started``, fences, then reads the ring; the parent
    writes the ring, fences, then reads ``started``: whichever comes second sees
    the other, so a cancelled task is either skipped or known to be running.
    """

    __slots__ = ("array", "base")

    def __init__(self, array: MutableSequence[int], slot: int) -> None:
        self.array = array
        self.base = slot * _STRIDE

    @staticmethod
    def allocate(context: object, slots: int) -> MutableSequence[int]:
        return context.RawArray("q", slots * _STRIDE)  # type: ignore[attr-defined, no-any-return]

    def reset(self) -> None:
        for i in range(self.base, self.base + _STRIDE):
            self.array[i] = 0

    @property
    def started(self) -> int:
        return self.array[self.base]

    @property
    def finished(self) -> int:
        return self.array[self.base + 1]

    def start(self, index: int) -> bool:
        """Record that ``index`` starts; False if its cancellation was requested."""
        self.array[self.base] = index
        fence()
        return self.array[self.base + 3 + index % _RING] != index

    @property
    def logged(self) -> int:
        """How many log records the worker has written to its log channel."""
        return self.array[self.base + 2]

    def count_logged(self, count: int) -> None:
        self.array[self.base + 2] = count

    def finish(self, index: int) -> None:
        self.array[self.base + 1] = index

    def request_cancel(self, index: int) -> None:
        self.array[self.base + 3 + index % _RING] = index
        fence()
