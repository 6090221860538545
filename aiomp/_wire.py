"""The frames that travel between the parent and one worker, over one socket.

Both sides use this module; neither ever makes a blocking read or write on the
socket, because uvloop leaves a descriptor non-blocking once it has watched it
(see PITFALLS). The parent waits for readiness on its event loop (``_fd``); a
worker waits with ``poll(2)``, which is fine in a process that does nothing else.

A frame is one message: a header, then its parts back to back::

    !I  number of parts n
    !Q  size of each part, n times
    part 0: the envelope, a protocol-5 pickle
    part 1..n-1: the envelope's out-of-band buffers (PickleBuffer), raw

Large buffers (NumPy arrays, bytearrays) therefore go from the sender's memory to
the socket and from the socket into the receiver's buffer with no pickling copy.

Messages, parent to worker (the envelope's first item says which)::

    (TASKS, [(index, func_bytes, payload, nbuffers, mode, is_async), ...])
    (CANCEL, [index, ...])        drop these if not started; cancel if async
    (STOP,)                       exit once idle
    (LEVELS, levels)              the parent's logging levels changed (_logs.Levels)

worker to parent::

    (READY, pid)                  the initializer ran; the worker takes tasks
    (INIT_FAILED, error_payload)  the initializer raised; the worker exits
    (RESULT, index, status, payload, nbuffers, seconds)
"""

from __future__ import annotations

import os
import select
import struct
import threading
from collections.abc import MutableSequence, Sequence
from typing import Final

__all__ = ["FrameReader", "Markers", "encode_frame", "fence", "write_frame_blocking"]

from typing import TypeAlias

Buffer: TypeAlias = "bytes | bytearray | memoryview"

# Message kinds.
TASKS: Final = 1
CANCEL: Final = 2
STOP: Final = 3
READY: Final = 4
INIT_FAILED: Final = 5
RESULT: Final = 6
LEVELS: Final = 7

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

_COUNT = struct.Struct("!I")
_SIZE = struct.Struct("!Q")
_READ_SIZE = 256 * 1024
# Parts larger than this are read straight into their own buffer.
_DIRECT_READ = 256 * 1024
# Write no more iovecs than this in one writev call (IOV_MAX is 1024 on Linux).
_MAX_IOV = 512


def encode_frame(parts: Sequence[Buffer]) -> list[Buffer]:
    """Return the header followed by ``parts``, ready for ``writev``."""
    header = struct.pack(f"!I{len(parts)}Q", len(parts), *(_nbytes(p) for p in parts))
    return [header, *parts]


def _nbytes(part: Buffer) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def write_some(fd: int, chunks: list[memoryview]) -> None:
    """Write as much of ``chunks`` as the socket takes now, consuming it in place.

    Raises ``BlockingIOError`` when nothing could be written.
    """
    written = os.writev(fd, chunks[:_MAX_IOV])
    while written:
        head = chunks[0]
        if written >= head.nbytes:
            written -= head.nbytes
            del chunks[0]
        else:
            chunks[0] = head[written:]
            written = 0


def as_chunks(parts: Sequence[Buffer]) -> list[memoryview]:
    """Byte-format memoryviews of ``parts``, the form ``write_some`` consumes."""
    return [memoryview(p).cast("B") for p in parts if _nbytes(p)]


def write_frame_blocking(fd: int, parts: Sequence[Buffer]) -> None:
    """Write a whole frame, waiting with ``poll(2)`` while the socket is full."""
    chunks = as_chunks(encode_frame(parts))
    poller: select.poll | None = None
    while chunks:
        try:
            write_some(fd, chunks)
        except BlockingIOError:
            if poller is None:
                poller = select.poll()
                poller.register(fd, select.POLLOUT)
            poller.poll()


class FrameReader:
    """Reads frames from a non-blocking descriptor, one call at a time.

    ``read()`` takes what the socket holds now and returns the complete frames,
    each a list of parts; a partial frame is kept for the next call. It raises
    ``EOFError`` once the peer has closed and every whole frame was returned.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()
        self._pos = 0
        # A frame whose large parts are being read straight into place.
        self._parts: list[bytearray] | None = None
        self._part = 0
        self._filled = 0
        self._poller: select.poll | None = None

    def read(self) -> list[list[Buffer]]:
        """Return the frames that are complete now (maybe none)."""
        frames: list[list[Buffer]] = []
        while True:
            if self._parts is not None:
                if not self._read_direct():
                    return frames
                frames.append(list(self._parts))
                self._parts = None
            self._parse(frames)
            if self._parts is not None:
                continue
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return frames
            except ConnectionResetError:
                # A peer that exits with our bytes unread resets the socket
                # instead of closing it; what it wrote before is still here.
                data = b""
            if not data:
                if frames:
                    return frames
                raise EOFError
            if self._pos:
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += data

    def read_blocking(self) -> list[list[Buffer]]:
        """Wait with ``poll(2)`` until at least one frame is complete."""
        while True:
            frames = self.read()
            if frames:
                return frames
            if self._poller is None:
                self._poller = select.poll()
                self._poller.register(self.fd, select.POLLIN)
            self._poller.poll()

    def pending(self) -> bool:
        """Whether part of a frame has been read and the rest is still due."""
        return self._parts is not None or self._pos < len(self._buf)

    def _parse(self, frames: list[list[Buffer]]) -> None:
        buf, pos, end = self._buf, self._pos, len(self._buf)
        while end - pos >= 4:
            (n,) = _COUNT.unpack_from(buf, pos)
            head = 4 + 8 * n
            if end - pos < head:
                break
            sizes = [_SIZE.unpack_from(buf, pos + 4 + 8 * i)[0] for i in range(n)]
            total = head + sum(sizes)
            if end - pos >= total:
                start = pos + head
                parts: list[Buffer] = []
                for size in sizes:
                    parts.append(bytes(buf[start : start + size]))
                    start += size
                frames.append(parts)
                pos += total
                continue
            if total - (end - pos) > _DIRECT_READ:
                self._start_direct(pos + head, sizes)
                pos = end
            break
        self._pos = pos

    def _start_direct(self, start: int, sizes: list[int]) -> None:
        """Move a large frame's buffered bytes into parts of their own."""
        self._parts = [bytearray(size) for size in sizes]
        self._part = self._filled = 0
        data = memoryview(self._buf)[start:]
        offset = 0
        for i, part in enumerate(self._parts):
            take = min(len(part), data.nbytes - offset)
            part[:take] = data[offset : offset + take]
            offset += take
            if take < len(part):
                self._part, self._filled = i, take
                break
        data.release()
        del self._buf[:]
        self._pos = 0

    def _read_direct(self) -> bool:
        """Read into the parts of a large frame; True once it is complete."""
        assert self._parts is not None
        while True:
            while self._part < len(self._parts) and self._filled >= len(self._parts[self._part]):
                self._part += 1
                self._filled = 0
            if self._part >= len(self._parts):
                return True
            views = [memoryview(self._parts[self._part])[self._filled :]]
            views += [memoryview(p) for p in self._parts[self._part + 1 : self._part + _MAX_IOV]]
            try:
                got = os.readv(self.fd, views)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                got = 0
            finally:
                for v in views:
                    v.release()
            if not got:
                raise EOFError
            while got:
                room = len(self._parts[self._part]) - self._filled
                step = min(room, got)
                self._filled += step
                got -= step
                if self._filled >= len(self._parts[self._part]):
                    self._part += 1
                    self._filled = 0


# Cancel requests a worker's slot holds at once (a ring indexed by task index).
_RING = 64
_STRIDE = 2 + _RING
_FENCE = threading.Lock()


def fence() -> None:
    """A full memory barrier: an uncontended lock is an atomic read-modify-write."""
    _FENCE.acquire()
    _FENCE.release()


class Markers:
    """One worker's slots in the pool's shared array, written by both sides.

    ``started``: index of the task the worker started last (tasks start in the
    order they arrive). ``finished``: index of the plain task it finished last,
    written before its result is sent. A ring of cancel requests, written by the
    parent. The worker writes ``started``, fences, then reads the ring; the parent
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
        return self.array[self.base + 2 + index % _RING] != index

    def finish(self, index: int) -> None:
        self.array[self.base + 1] = index

    def request_cancel(self, index: int) -> None:
        self.array[self.base + 2 + index % _RING] = index
        fence()
