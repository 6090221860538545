"""Shared memory for big buffers: memfd segments whose descriptors travel over the sockets.

A buffer of at least ``THRESHOLD`` bytes in a message (a NumPy array, a bytearray,
a big ``bytes``) is not written into the socket. The sender copies it once into a
*segment*, an anonymous ``memfd_create`` file, with ``os.pwrite`` (the kernel
copies without the GIL), and the segment's descriptor rides along with the
message (``SCM_RIGHTS``). The receiver maps the segment and rebuilds the object
on the mapping: a NumPy array comes back backed by shared memory, with no
further copy.

Why memfd and not named segments (``/dev/shm``): a memfd has no name, so
nothing can be left behind. Its memory is freed by the kernel once the last
descriptor and mapping are gone, whoever holds them and however the processes
end (a crash mid-transfer, a SIGKILLed parent, a message left unread in a
socket that is closed). No resource tracker is involved.

Reuse: fresh pages cost a page fault and a zeroing each, about three times the
cost of a copy into warm pages. So each process keeps its segments in a cache
(``_Cache``) and reuses them. A segment's first page holds a state word: the
sender sets it to BUSY before it sends the segment, the receiver sets it back to
FREE (with ``pwrite``) once every object rebuilt on it has been collected. The
sender reuses a segment only when it reads FREE there.

Releasing: a received mapping is a ``_Mapping``. When the last view of it is
collected its ``__del__`` hands it to the *reaper*, one daemon thread per
process, which unmaps it, marks the segment FREE and closes the descriptor: an
unmap or the freeing of pages never runs on the event loop thread.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import queue
import sys
import threading
from collections.abc import Sequence

from ._frames import pread_view

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["THRESHOLD", "Placed", "Received", "place", "reaper_put"]

# Buffers of at least this many bytes go through shared memory. Below it, a copy
# into the socket and one out of it cost less than a segment's round of system
# calls and the reaper's wake-up: measured with a Pipe echo of a NumPy array
# (forkserver, 2 cores): 512 KiB took 0.46 ms through the socket and 0.82 ms
# through a segment; 1 MiB 1.9 ms and 1.0 ms; 4 MiB 5.9 ms and 2.5 ms.
THRESHOLD = 1 << 20

_PAGE = mmap.PAGESIZE
_ALIGN = 64  # every buffer starts on a cache line (NumPy wants at least 16)
_FREE = (0).to_bytes(8, "little")
_BUSY = 1
# What a process keeps in segments that are free for reuse.
_CACHE_BYTES = 512 << 20
# Segments a process tracks at most (busy ones included).
_CACHE_COUNT = 64
# Below this, a new segment is not worth its own size class.
_MIN_SEGMENT = 1 << 20


def _round_up(n: int, step: int) -> int:
    return (n + step - 1) // step * step


def _size_class(n: int) -> int:
    """``n`` rounded up to one of eight steps per power of two, so sizes are reused."""
    n = max(n, _MIN_SEGMENT)
    step = 1 << max(n.bit_length() - 4, 12)
    return _round_up(n, step)


class _Segment:
    """The sender's handle on one memfd segment: its descriptor and its state word."""

    __slots__ = ("__weakref__", "capacity", "fd", "state")

    def __init__(self, capacity: int) -> None:
        fd = os.memfd_create("aiomp-buffer", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, capacity)
            self.state = mmap.mmap(fd, _PAGE)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.capacity = capacity

    def busy(self) -> bool:
        return self.state[0] != 0

    def mark_busy(self) -> None:
        self.state[0] = _BUSY

    def __del__(self) -> None:
        # Dropped by the cache and by every message that carried it: close it in the
        # reaper (closing the last descriptor frees the memory, which takes a while).
        # A receiver's mapping keeps the memory alive until it is released too.
        _release_soon((self.state, self.fd))


class _Cache:
    """This process's segments, free or in flight, most recently used last."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.segments: list[_Segment] = []
        self.lock = threading.Lock()

    def take(self, nbytes: int) -> _Segment:
        """A free segment with room for ``nbytes`` after the state page, marked busy."""
        need = _PAGE + nbytes
        with self.lock:
            if self.pid != os.getpid():  # forked: the parent's segments are not ours to fill
                self.pid, self.segments = os.getpid(), []
            best: _Segment | None = None
            for segment in self.segments:
                if segment.busy():
                    continue
                if need <= segment.capacity <= max(4 * need, _MIN_SEGMENT) and (
                    best is None or segment.capacity < best.capacity
                ):
                    best = segment
            if best is None:
                best = _Segment(_size_class(need))
                self._trim()
            else:
                self.segments.remove(best)
            best.mark_busy()
            self.segments.append(best)
            return best

    def _trim(self) -> None:
        """Keep what this process holds in segments under the budget.

        Free segments go first, then the oldest busy ones (a message never read, a
        receiver that died): forgetting one is always safe, since a receiver that
        maps it later keeps its memory alive on its own.
        """
        total = sum(segment.capacity for segment in self.segments)
        for segment in [s for s in self.segments if not s.busy()] + [s for s in self.segments if s.busy()]:
            if total <= _CACHE_BYTES and len(self.segments) < _CACHE_COUNT:
                break
            self.segments.remove(segment)
            total -= segment.capacity


_cache = _Cache()


class Placed:
    """Buffers written into one segment: the descriptor to send and where each buffer lies.

    The message that carries it sets ``sent`` once the descriptor is out. One never
    sent (a cancelled send, a full queue, a task cancelled before it left) frees
    the segment when it is dropped.
    """

    __slots__ = ("layout", "segment", "sent")

    def __init__(self, segment: _Segment, layout: list[tuple[int, int]]) -> None:
        self.segment = segment  # keeps the descriptor open until the message is sent
        self.layout = layout  # (offset, size) of each buffer
        self.sent = False

    def __del__(self) -> None:
        if not self.sent:
            with contextlib.suppress(Exception):
                self.segment.state[0] = 0

    @property
    def fd(self) -> int:
        return self.segment.fd


def place(buffers: Sequence[memoryview]) -> Placed:
    """Copy ``buffers`` into a segment, once each, without holding the GIL while copying."""
    layout = []
    at = _PAGE
    for buffer in buffers:
        layout.append((at, buffer.nbytes))
        at = _round_up(at + buffer.nbytes, _ALIGN)
    segment = _cache.take(at - _PAGE)
    try:
        for (offset, _), buffer in zip(layout, buffers, strict=True):
            _pwrite_all(segment.fd, buffer, offset)
    except BaseException:
        segment.state[0] = 0  # never sent: free again
        raise
    return Placed(segment, layout)


def _pwrite_all(fd: int, buffer: memoryview, offset: int) -> None:
    view = buffer.cast("B") if buffer.format != "B" or buffer.ndim != 1 else buffer
    done = 0
    while done < view.nbytes:
        done += os.pwrite(fd, view[done:], offset + done)


class _Mapping(mmap.mmap):
    """A received segment, mapped. Collected (no view left): the reaper unmaps it.

    ``__del__`` keeps the object alive by handing it to the reaper thread, so the
    unmap runs there; the mapping has no exports left by then.
    """

    fd = -1

    def __del__(self) -> None:
        if not self.closed:
            _release_soon(self)


_collecting = False


def _note_collection(phase: str, info: object) -> None:
    global _collecting
    _collecting = phase == "start"


gc.callbacks.append(_note_collection)


class Received:
    """A segment descriptor that arrived with a message; owns it until ``views``."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def views(self, layout: Sequence[tuple[int, int]]) -> list[memoryview]:
        """Map the segment; the views keep it mapped, and it is released once they are gone."""
        fd, self.fd = self.fd, -1
        if fd < 0:
            raise RuntimeError("segment already mapped")
        try:
            # Map only as far as the buffers go: the segment may be a bigger one reused.
            size = _round_up(max((offset + size for offset, size in layout), default=_PAGE), _PAGE)
            flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
            mapping = _Mapping(fd, size, flags=flags)
        except BaseException:
            reaper_put(fd)
            raise
        mapping.fd = fd
        whole = memoryview(mapping)
        views = [whole[offset : offset + size] for offset, size in layout]
        whole.release()
        return views

    def __del__(self) -> None:
        if self.fd >= 0:  # never mapped (a cancelled task, a dropped message): free it
            fd, self.fd = self.fd, -1
            _release_soon(fd)


def _release_soon(item: object) -> None:
    """``reaper_put``, from a finalizer.

    While the garbage collector runs, or the interpreter exits, the release is done
    here instead. An object the collector is finalizing (a segment or a mapping that
    hung off a reference cycle) must not be handed to another thread: that thread
    could drop the last reference, and free it, in the middle of the collection.
    """
    try:
        if _collecting or sys.is_finalizing():
            _release(item)
        else:
            reaper_put(item)
    except Exception:
        with contextlib.suppress(Exception):
            _release(item)


def copy_out(buffer: Any) -> bytes:
    """``bytes(buffer)``; from a segment, copied by the kernel (``pread``) without the GIL."""
    view = memoryview(buffer)
    if isinstance(view.obj, _Mapping):
        return pread_view(view, view.obj.fd)
    return bytes(view)


# -- the reaper ---------------------------------------------------------------------

_reaper: tuple[int, queue.SimpleQueue[object]] | None = None
_reaper_lock = threading.Lock()


def reaper_put(item: object) -> None:
    """Release ``item`` in the reaper thread: a ``_Mapping``, a received descriptor,
    or a sender's ``(state map, descriptor)`` pair."""
    global _reaper
    reaper = _reaper
    if reaper is None or reaper[0] != os.getpid():
        with _reaper_lock:
            reaper = _reaper
            if reaper is None or reaper[0] != os.getpid():
                work: queue.SimpleQueue[object] = queue.SimpleQueue()
                thread = threading.Thread(target=_reap, args=(work,), name="aiomp-shm-reaper", daemon=True)
                thread.start()
                reaper = _reaper = (os.getpid(), work)
                _settle_at_exit()
    reaper[1].put(item)


def _reap(work: queue.SimpleQueue[object]) -> None:
    while True:
        item = work.get()
        with contextlib.suppress(Exception):
            _release(item)
        del item


def _release(item: object) -> None:
    if isinstance(item, _Mapping):
        fd, item.fd = item.fd, -1
        item.close()
        _release_fd(fd)
    elif isinstance(item, int):
        _release_fd(item)
    elif isinstance(item, threading.Event):
        item.set()
    elif isinstance(item, tuple):
        state, fd = item
        state.close()
        os.close(fd)


def _release_fd(fd: int) -> None:
    """Mark a received segment free (the sender may fill it again) and close it."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.pwrite(fd, _FREE, 0)
        with contextlib.suppress(OSError):
            os.close(fd)


def _settle_at_exit() -> None:
    """Finish queued releases when this process exits (the reaper is a daemon thread).

    Else a receiver that exits right after it is done with a buffer never marks the
    segment free, and the sender cannot reuse it. ``multiprocessing`` children that
    end with ``os._exit`` run its finalizers but not ``atexit``: register with both.
    """
    import atexit
    from multiprocessing import util

    atexit.register(settle, 1.0)
    util.Finalize(None, settle, args=(1.0,), exitpriority=-100)


def settle(timeout: float) -> bool:
    """Wait until the reaper has done every release queued so far (for tests and exit).

    Returns False if that took longer than ``timeout`` seconds.
    """
    reaper = _reaper
    if reaper is None or reaper[0] != os.getpid():
        return True
    done = threading.Event()
    reaper[1].put(done)
    return done.wait(timeout)


def forget_cache(busy_too: bool = False) -> None:
    """Drop this process's free segments, or all of them (the reaper closes them).

    Forgetting a busy one is safe: a receiver that still maps it keeps its memory.
    """
    with _cache.lock:
        _cache.segments = [] if busy_too else [segment for segment in _cache.segments if segment.busy()]
