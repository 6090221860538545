"""The one frame format, and the one reader and writer, of every aiomp channel.

The pool's channel to each worker, ``Connection``, the queues and the log
channels all move *frames* over Unix stream sockets::

    !I  number of parts n
    !I  number of descriptors that travel with the frame (SCM_RIGHTS)
    !Q  body size: 8 * n + the sizes of the parts
    !Q  size of each part, n times
    the parts, back to back

What the parts mean is the user's business (``_serialize`` packs objects into
them). Descriptors are shared-memory segments (``_shm``): the writer sends a
frame's descriptors with the frame's first byte, in a ``sendmsg`` that begins
there, so that whoever reads that byte gets them, even when several processes
read one socket (a queue).

``Reader`` and ``Writer`` never wait: each call moves what the socket takes or
holds now, so they serve both the blocking methods (which then wait in
``_fd.block_until``) and the awaiting ones (which wait on the event loop through
``_fd``). A reader is *exact* on a socket that other processes read too (it never
reads past the frame it is in) and *greedy* on a private one (it reads ahead,
fewer system calls). Big messages move in slices of ``SLICE`` bytes so that the
event loop runs between them.
"""

from __future__ import annotations

import array
import contextlib
import errno
import itertools
import mmap
import os
import socket
import struct
import threading
import weakref
from collections import deque

from . import _fd

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    from typing import Any, TypeAlias

__all__ = ["SLICE", "Frame", "Reader", "Writer"]

Buffer: TypeAlias = "bytes | bytearray | memoryview"

_HEADER = struct.Struct("!IIQ")
_SIZE = struct.Struct("!Q")
# Descriptors a frame may carry at most; the reader's ancillary buffer holds that many.
MAX_FDS = 32
_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
_IOV_MAX = 512
_READ_AHEAD = 64 << 10  # a greedy reader asks for this much at a time (from 128 KiB, each call mmaps a buffer)
_DIRECT = 256 << 10  # bodies above this get a buffer of their own, read into in place
SLICE = 1 << 20  # bytes moved per non-blocking call before the event loop gets a turn
# As plain ints: the enum's operators cost more than the system call around them.
_DONTWAIT = int(socket.MSG_DONTWAIT)
_CTRUNC = int(socket.MSG_CTRUNC)
_SOL_SOCKET = int(socket.SOL_SOCKET)
_SCM_RIGHTS = int(socket.SCM_RIGHTS)
# Frames with at most this many bytes of parts are written as one buffer.
_COALESCE = 16 << 10
_HEADERS: dict[int, struct.Struct] = {}
_SIZES: dict[int, struct.Struct] = {}


_AGAIN = object()  # Reader._read_small: go on the long way
_NO_FDS: list[int] = []  # shared by the frames that carry none: never changed in place


def _header(count: int) -> struct.Struct:
    """The fixed header and the size table of a frame of ``count`` parts."""
    layout = _HEADERS.get(count)
    if layout is None:
        layout = _HEADERS[count] = struct.Struct(f"!IIQ{count}Q")
    return layout


def _sizes(count: int) -> struct.Struct:
    layout = _SIZES.get(count)
    if layout is None:
        layout = _SIZES[count] = struct.Struct(f"!{count}Q")
    return layout


class Frame:
    """One message: its parts, and the descriptors that travel with it.

    A sent frame's ``keep`` holds whatever must stay alive until it is written
    (the shared-memory segments behind its descriptors). A received frame owns
    its ``fds`` until someone takes them.
    """

    __slots__ = ("fds", "keep", "parts")

    def __init__(self, parts: list[Buffer], fds: list[int] | None = None, keep: object = None) -> None:
        self.parts = parts
        self.fds: list[int] = _NO_FDS if fds is None else fds
        self.keep = keep

    def __len__(self) -> int:
        """The number of parts (a queue's end marker is the frame with none)."""
        return len(self.parts)

    def resend(self) -> Frame:
        """This received frame, to be sent again: its descriptors close once sent."""
        self.keep = _Owned(self.fds)
        return self

    def nbytes(self) -> int:
        """The size of the frame's body on the wire (without the fixed header)."""
        return 8 * len(self.parts) + sum(_nbytes(p) for p in self.parts)

    def close_fds(self) -> None:
        """Close descriptors nobody took (a received frame that is dropped)."""
        fds, self.fds = self.fds, _NO_FDS
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _nbytes(part: Buffer) -> int:
    return part.nbytes if isinstance(part, memoryview) else len(part)


def _sent(keep: object) -> None:
    """Tell the shared-memory segments of a frame that their descriptors are out."""
    for item in keep if isinstance(keep, list) else (keep,):
        if hasattr(item, "sent"):
            item.sent = True


class _Owned:
    """Closes received descriptors once the frame that sends them on is written."""

    __slots__ = ("fds",)

    def __init__(self, fds: list[int]) -> None:
        self.fds = list(fds)

    def __del__(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)


# -- writing ---------------------------------------------------------------------


class _Chunk:
    __slots__ = ("fds", "keep", "view")

    def __init__(self, view: memoryview, fds: list[int] | None = None, keep: object = None) -> None:
        self.view = view
        self.fds = fds  # sent with this chunk's first byte, at the start of a sendmsg
        self.keep = keep


class Writer:
    """Writes queued frames in order on a stream socket, as it takes them."""

    __slots__ = ("_out", "_queued", "fd", "sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self._out: deque[_Chunk] = deque()
        self._queued = 0  # bytes ever queued
        self.sent = 0  # bytes ever written

    @property
    def queued(self) -> int:
        """Bytes ever queued: a frame is sent once ``sent`` reaches its ``queue()`` result."""
        return self._queued

    def pending(self) -> bool:
        """Whether something queued is not written yet."""
        return bool(self._out)

    def queue(self, frame: Frame) -> int:
        """Queue one frame; return the byte count at which it has been sent."""
        parts = frame.parts
        fds = frame.fds
        if len(fds) > MAX_FDS:
            raise ValueError(f"a frame carries at most {MAX_FDS} descriptors, not {len(fds)}")
        sizes = [p.nbytes if type(p) is memoryview else len(p) for p in parts]
        total = sum(sizes)
        body = 8 * len(parts) + total
        header = _header(len(parts)).pack(len(parts), len(fds), body, *sizes)
        out = self._out
        if total <= _COALESCE:
            # Small: one buffer, header and parts together (a copy costs less than an iovec).
            out.append(_Chunk(memoryview(header + b"".join(parts) if parts else header), fds or None, frame.keep))
        else:
            # Small parts are joined into runs (the first begins with the header and
            # carries the descriptors); big ones go out from where they lie.
            chunks: list[_Chunk] = []
            run: list[Buffer] = [header]
            for part, size in zip(parts, sizes, strict=True):
                if size < _COALESCE:
                    run.append(part)
                    continue
                if run:
                    chunks.append(_Chunk(memoryview(b"".join(run))))
                    run = []
                view = part if isinstance(part, memoryview) else memoryview(part)
                chunks.append(_Chunk(view.cast("B") if view.format != "B" or view.ndim != 1 else view))
            if run:
                chunks.append(_Chunk(memoryview(b"".join(run))))
            chunks[0].fds = fds or None
            chunks[0].keep = frame.keep
            out.extend(chunks)
        self._queued += 16 + body
        return self._queued

    def withdraw(self, start: int, end: int) -> None:
        """Take back the frame queued between ``start`` and ``end`` if none of it was
        sent and nothing was queued after it."""
        if self.sent > start or self._queued != end:
            return
        size = end - start
        while size:
            size -= self._out.pop().view.nbytes
        self._queued = start

    def flush(self, block: bool) -> bool:
        """Write what the socket takes; True once everything queued is out.

        With ``block`` the socket may put the thread to sleep (if it is in blocking
        mode); without, each call moves at most about ``SLICE`` bytes, so a big
        frame goes out in slices with the event loop running in between.
        """
        out = self._out
        flags = 0 if block else _DONTWAIT
        if len(out) == 1 and not out[0].fds and out[0].view.nbytes <= SLICE:
            # One small frame, the usual case: one plain send.
            head = out[0]
            try:
                n = os.write(self.fd, head.view) if block else self.sock.send(head.view, flags)
            except BlockingIOError:
                return False
            self.sent += n
            if n == head.view.nbytes:
                out.popleft()
                return True
            head.view = head.view[n:]
            return False
        budget = SLICE
        while out:
            if not block and budget <= 0:
                return False
            head = out[0]
            views = [head.view]
            room = SLICE - head.view.nbytes
            for chunk in itertools.islice(out, 1, _IOV_MAX):
                if chunk.fds or room <= 0:
                    break  # descriptors must begin a sendmsg of their own
                views.append(chunk.view if chunk.view.nbytes <= room or block else chunk.view[:room])
                room -= chunk.view.nbytes
            ancillary = [] if not head.fds else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", head.fds))]
            try:
                # writev is the same as a plain sendmsg, a little cheaper.
                n = self.sock.sendmsg(views, ancillary, flags) if ancillary or not block else os.writev(self.fd, views)
            except BlockingIOError:
                return False
            if head.fds:
                head.fds = None  # whatever was written carried them
                _sent(head.keep)
            self.sent += n
            budget -= n
            while n:
                chunk = out[0]
                if n >= chunk.view.nbytes:
                    n -= chunk.view.nbytes
                    out.popleft()
                else:
                    chunk.view = chunk.view[n:]
                    n = 0
        return True

    def flush_blocking(self, deadline: float | None = None) -> bool:
        """Write everything, waiting (``_fd.block_until``) while the socket is full.

        Returns False if ``deadline`` passed first.
        """
        while not self.flush(True):
            if not _fd.block_until(self.fd, True, deadline):  # an event loop made it non-blocking
                return False
        return True


# -- reading ---------------------------------------------------------------------


class Reader:
    """Reads frames from a stream socket, never waiting.

    ``read(block)`` returns the next whole frame, or None if it has not all
    arrived. It raises ``EOFError`` at the end of the stream and ``OSError``
    (``EPIPE``) if the stream ends inside a frame, or (``EMSGSIZE``) if a frame's
    body is longer than ``limit``. An *exact* reader reads no byte past the frame
    it is reading, so that processes may take turns on one socket.

    Offsets in the stream: ``received`` counts the bytes taken from the socket so
    far, ``consumed`` those handed out as frames (header included); the bytes in
    between wait in the reader. ``read(upto=offset)`` takes no byte at or past
    ``offset`` from the socket, even a greedy reader: with ``upto`` set to
    ``received`` plus the socket's unread bytes, a reader catches up with what
    was written until now without following a writer that goes on writing.
    """

    __slots__ = (
        "_body",
        "_buf",
        "_fds",
        "_filled",
        "_head",
        "_pos",
        "consumed",
        "exact",
        "fd",
        "limit",
        "received",
        "sock",
    )

    def __init__(self, sock: socket.socket, exact: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.exact = exact
        self.limit: int | None = None
        self._buf = bytearray()
        self._pos = 0
        self._head: tuple[int, int, int] | None = None
        self._body: Any = None  # a big frame's own buffer while it is read into
        self._filled = 0
        self._fds: deque[int] = deque()  # arrived, not yet claimed by a frame
        self.received = 0  # stream bytes taken from the socket
        self.consumed = 0  # stream bytes handed out as frames

    @property
    def in_frame(self) -> bool:
        """True between a frame's first byte and its last."""
        return self._head is not None or self._pos < len(self._buf)

    def close(self) -> None:
        """Close descriptors that arrived for frames never read."""
        while self._fds:
            with contextlib.suppress(OSError):
                os.close(self._fds.popleft())

    def read_all(self) -> list[Frame]:
        """The frames whole now, with one read from the socket (or none, if a whole
        frame is buffered already): a greedy reader's batch. ``EOFError`` at the end."""
        frame = self.read()
        return [] if frame is None else [frame, *self.take_buffered()]

    def take_buffered(self) -> list[Frame]:
        """The frames already whole in the reader's buffer (no read from the socket)."""
        frames = []
        while (frame := self.read(refill=False)) is not None:
            frames.append(frame)
        return frames

    def read(self, block: bool = False, upto: int | None = None, refill: bool = True) -> Frame | None:
        """The next whole frame, or None if it has not all arrived yet.

        With ``upto`` (a stream offset), no byte at or past it is taken from the
        socket: None also if the frame needs one. Without ``refill``, nothing is
        taken from the socket: only a frame already buffered is returned.
        """
        if not refill:
            if self._body is not None or len(self._buf) - self._pos < _HEADER.size:
                return None
            upto = self.received  # nothing more from the socket
        flags = 0 if block else _DONTWAIT
        if self.exact and upto is None and self._head is None and self._pos == len(self._buf):
            frame = self._read_small(flags)
            if frame is not _AGAIN:
                return frame  # type: ignore[return-value]
        while True:
            if self._body is not None:
                return self._read_body(flags, block, upto)
            have = len(self._buf) - self._pos
            head = self._head
            if head is None:
                if have < _HEADER.size:
                    if not self._fill(_HEADER.size - have, flags, upto):
                        return None
                    continue
                head = self._head = _HEADER.unpack_from(self._buf, self._pos)
                self._pos += _HEADER.size
                have -= _HEADER.size
                if self.limit is not None and head[2] - 8 * head[0] > self.limit:
                    raise OSError(
                        errno.EMSGSIZE,
                        f"message of {head[2] - 8 * head[0]} bytes is longer than maxlength={self.limit}",
                    )
            body = head[2]
            if have >= body:
                return self._buffered_frame(head)
            if body > _DIRECT:
                self._begin_body(body, have)
                continue
            if not self._fill(body - have, flags, upto):
                return None

    def _read_small(self, flags: int) -> Frame | object | None:
        """An exact reader's usual case: the header, then a small body, read straight
        into bytes (no staging buffer). ``_AGAIN`` if ``read`` must go on the long way."""
        data = self._recv(_HEADER.size, flags)
        if data is None:
            return None
        if len(data) < _HEADER.size:
            self._buf += data
            return _AGAIN
        count, nfds, body = head = _HEADER.unpack(data)
        if self.limit is not None and body - 8 * count > self.limit:
            self._head = head
            raise OSError(errno.EMSGSIZE, f"message of {body - 8 * count} bytes is longer than maxlength={self.limit}")
        self._head = head
        if body > _DIRECT:
            return _AGAIN
        rest = self._recv(body, flags) if body else b""
        if rest is None:
            return None
        if len(rest) < body:
            self._buf += rest
            return _AGAIN
        self._head = None
        self.consumed += _HEADER.size + body
        if count == 1:
            parts: list[Buffer] = [rest[8:]]
        else:
            parts = []
            at = 8 * count
            for size in _sizes(count).unpack_from(rest):
                parts.append(rest[at : at + size])
                at += size
        if not nfds:
            return Frame(parts)
        if len(self._fds) < nfds:
            raise OSError(errno.EPROTO, f"a message came without its {nfds} descriptor(s)")
        return Frame(parts, [self._fds.popleft() for _ in range(nfds)])

    def _buffered_frame(self, head: tuple[int, int, int]) -> Frame:
        """The frame whose body is whole in the buffer: its parts, copied out."""
        count, nfds, body = head
        buf, start = self._buf, self._pos
        self._head = None
        self.consumed += _HEADER.size + body
        if count == 1:
            parts: list[Buffer] = [buf[start + 8 : start + body]]
        else:
            parts = []
            at = start + 8 * count
            for size in _sizes(count).unpack_from(buf, start):
                parts.append(buf[at : at + size])
                at += size
        self._pos = start + body
        if self._pos == len(buf):
            del buf[:]
            self._pos = 0
        if not nfds:
            return Frame(parts)
        if len(self._fds) < nfds:
            raise OSError(errno.EPROTO, f"a message came without its {nfds} descriptor(s)")
        return Frame(parts, [self._fds.popleft() for _ in range(nfds)])

    def _fill(self, missing: int, flags: int, upto: int | None) -> bool:
        """Read at least one byte more into the buffer; False if none is there (or may be)."""
        size = missing if self.exact else max(missing, _READ_AHEAD)
        if upto is not None:
            size = min(size, upto - self.received)
            if size <= 0:
                return False
        data = self._recv(size, flags)
        if data is None:
            return False
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data
        return True

    def _recv(self, size: int, flags: int) -> bytes | None:
        try:
            data, ancillary, msg_flags, _ = self.sock.recvmsg(size, _ANCILLARY, flags)
        except BlockingIOError:
            return None
        except ConnectionResetError:  # the peer exited with our bytes unread; what it wrote is here
            data, ancillary, msg_flags = b"", [], 0
        self._take_fds(ancillary, msg_flags)
        if not data:
            if self.in_frame:
                raise OSError(errno.EPIPE, "got end of file during message")
            raise EOFError
        self.received += len(data)
        return data

    def _take_fds(self, ancillary: list[tuple[int, int, bytes]], msg_flags: int) -> None:
        if ancillary:
            for level, kind, data in ancillary:
                if level == _SOL_SOCKET and kind == _SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                    self._fds.extend(fds)
        if msg_flags & _CTRUNC:
            raise OSError(errno.EPROTO, "descriptors sent with a message were lost (ancillary data truncated)")

    def _begin_body(self, body: int, have: int) -> None:
        """Give a big frame's body a buffer of its own and move what is here into it."""
        self._body = bytearray(body) if body <= 4 * _DIRECT else _BigBody.new(body)
        self._body[:have] = memoryview(self._buf)[self._pos : self._pos + have]
        self._filled = have
        del self._buf[:]
        self._pos = 0

    def _read_body(self, flags: int, block: bool, upto: int | None) -> Frame | None:
        view = memoryview(self._body)
        budget = SLICE
        try:
            while self._filled < len(view):
                if not block and budget <= 0:
                    return None  # the loop runs other tasks between slices of a big frame
                size = SLICE if upto is None else min(SLICE, upto - self.received)
                if size <= 0:
                    return None
                try:
                    n, ancillary, msg_flags, _ = self.sock.recvmsg_into(
                        [view[self._filled : self._filled + size]], _ANCILLARY, flags
                    )
                except BlockingIOError:
                    return None
                except ConnectionResetError:
                    n, ancillary, msg_flags = 0, [], 0
                self._take_fds(ancillary, msg_flags)
                if n == 0:
                    raise OSError(errno.EPIPE, "got end of file during message")
                self._filled += n
                self.received += n
                budget -= n
        finally:
            view.release()
        body, self._body = self._body, None
        return self._frame(memoryview(body), copy=False)

    def _frame(self, body: memoryview, copy: bool) -> Frame:
        assert self._head is not None
        count, nfds, body_size = self._head
        self._head = None
        self.consumed += _HEADER.size + body_size
        sizes = _sizes(count).unpack_from(body)
        at = 8 * count
        parts: list[Buffer] = []
        for size in sizes:
            part = body[at : at + size]
            if copy:
                parts.append(bytes(part))
                part.release()
            else:
                parts.append(part)
            at += size
        if copy:
            body.release()
        if len(self._fds) < nfds:
            raise OSError(errno.EPROTO, f"a message came without its {nfds} descriptor(s)")
        return Frame(parts, [self._fds.popleft() for _ in range(nfds)])

    def read_blocking(self, deadline: float | None = None) -> Frame | None:
        """Wait (``_fd.block_until``) for the next frame; None if ``deadline`` passed first.

        Once a frame has begun to arrive it is read whole, deadline or not.
        """
        while True:
            frame = self.read(True)
            if frame is not None:
                return frame
            if not _fd.block_until(self.fd, False, None if self.in_frame else deadline):
                return None


class _BigBody(mmap.mmap):
    """A big frame's memory: pages the kernel zero-fills as they are written.

    Backed by a memfd, so that ``to_bytes`` can have the kernel copy it into a new
    ``bytes`` (``pread``) without the GIL: a copy made by Python would hold the
    GIL, and stall the event loop, for tens of milliseconds at 64 MiB.
    """

    memfd = -1

    @classmethod
    def new(cls, size: int) -> _BigBody:
        if not hasattr(os, "memfd_create"):  # pragma: no cover - not Linux
            return cls(-1, size)
        fd = os.memfd_create("aiomp-message", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            body = cls(fd, size)
        except BaseException:
            os.close(fd)
            raise
        body.memfd = fd
        weakref.finalize(body, _close_quietly, fd)
        return body


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def to_bytes(part: Buffer) -> bytes:
    """``bytes(part)``; for a part of a big frame, copied by the kernel without the GIL."""
    if isinstance(part, bytes):
        return part
    if isinstance(part, memoryview) and isinstance(part.obj, _BigBody):
        return pread_view(part, part.obj.memfd)
    return bytes(part)


def pread_view(view: memoryview, fd: int) -> bytes:
    """``bytes(view)`` for a view of a mapping of ``fd``: read with ``pread``, which copies
    without holding the GIL (a copy made by Python holds it for the whole copy)."""
    owner = view.obj
    if fd < 0 or view.readonly or not view.contiguous:
        return bytes(view)
    import ctypes

    with memoryview(owner) as whole:
        start = ctypes.addressof(ctypes.c_char.from_buffer(whole))
    offset = ctypes.addressof(ctypes.c_char.from_buffer(view)) - start
    data = os.pread(fd, view.nbytes, offset)
    return data if len(data) == view.nbytes else bytes(view)


def release(part: Buffer) -> None:
    """Unmap a big frame's memory in a thread: unmapping 64 MiB on the loop would stall it."""
    if isinstance(part, memoryview) and isinstance(part.obj, _BigBody):
        body = part.obj
        part.release()
        threading.Thread(target=_close_when_free, args=(body,), name="aiomp-unmap", daemon=True).start()


def _close_when_free(body: _BigBody) -> None:
    with contextlib.suppress(BufferError):  # still viewed elsewhere: it goes when they do
        body.close()
