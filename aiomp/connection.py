"""``Pipe`` and ``Connection``: message pipes between processes, blocking and awaitable.

A message is an 8-byte big-endian length and the payload. Both ends are Unix
stream sockets in blocking mode, with no timeout of their own (the process's
``socket.setdefaulttimeout()`` does not apply): the blocking methods sleep in
the kernel as the standard library's do, and the awaiting ones pass ``MSG_DONTWAIT`` and wait
on the event loop (putting the mode back after uvloop, which changes it).

Sending never blocks the event loop: bytes go out as the peer makes room, so a
message of any size, or two peers sending big messages at each other, cannot
stall the loop or deadlock. Every outgoing message is queued whole before its
first byte is written, and written in order, so a sender that is cancelled
half-way leaves its message to be finished by the next send on the connection
(the stream never tears). Reading keeps partial messages in the connection, so
a cancelled ``arecv`` loses nothing: the next receive returns the message.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import mmap
import operator
import os
import pickle
import socket
import struct
import threading
import weakref
from collections import deque
from collections.abc import Callable
from multiprocessing import BufferTooShort, reduction
from typing import Any

import anyio
import anyio.lowlevel
from typing_extensions import Buffer, Self

from . import _fd, _serialize
from ._checks import blocking_timeout

__all__ = ["Connection", "Pipe"]

_HEADER = struct.Struct("!Q")
_IOV_MAX = 64
_DONTWAIT = socket.MSG_DONTWAIT
_DIRECT = 256 << 10  # bodies up to this size are read into a bytes object directly
_SLICE = 1 << 20  # bytes moved per non-blocking call before the loop gets a turn
_OOB = 1 << 63  # header flag: an object whose buffers follow its pickle, uncopied
_COUNT = struct.Struct("!I")
_SIZE = struct.Struct("!Q")


class _Reader:
    """Reads whole messages, one at a time, from a stream socket.

    Reads exactly one message's bytes, so several processes may share a reading
    end (as a queue's consumers do) under a lock. ``read(block=False)`` never
    blocks (``MSG_DONTWAIT``); ``read(block=True)`` sleeps in the kernel like
    the standard library's, unless an event loop elsewhere made the socket
    non-blocking, in which case it returns None as well.
    """

    __slots__ = ("_body", "_filled", "_head", "limit", "oob", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._head = b""
        self._body: Any = None  # a bytearray, or an mmap for big bodies
        self._filled = 0
        self.limit: int | None = None
        self.oob = False  # whether the last message read is an object with out-of-band buffers

    @property
    def in_message(self) -> bool:
        """True between a message's first byte and its last."""
        return bool(self._head) or self._body is not None

    def read(self, block: bool) -> bytes | bytearray | None:
        """The next whole message, or None if it has not all arrived yet.

        Raises ``EOFError`` at the end of the stream, ``OSError`` if it ends
        inside a message or a message exceeds ``limit``.
        """
        flags = 0 if block else _DONTWAIT
        while self._body is None:
            chunk = self._recv(8 - len(self._head), flags)
            if chunk is None:
                return None
            self._head += chunk
            if len(self._head) < 8:
                continue
            (size,) = _HEADER.unpack(self._head)
            self._head = b""
            self.oob = bool(size & _OOB)
            size &= ~_OOB
            if self.limit is not None and size > self.limit:
                raise OSError(errno.EMSGSIZE, f"message of {size} bytes is longer than maxlength={self.limit}")
            if size == 0:
                return b""
            first = self._recv(size, flags, body=True) if size <= _DIRECT else None
            if first is not None and len(first) == size:
                return first  # the common case: one read, no copy
            # Anonymous memory: the kernel zero-fills pages as they are written,
            # where a bytearray would memset the whole body holding the GIL.
            self._body = bytearray(size) if size <= _DIRECT else _BigBody.new(size)
            self._filled = 0
            if first:
                self._body[: len(first)] = first
                self._filled = len(first)
        view = memoryview(self._body)
        budget = _SLICE
        while self._filled < len(view):
            if not block and budget <= 0:
                return None  # let the loop run other tasks between slices of a big message
            try:
                n = self.sock.recv_into(view[self._filled : self._filled + _SLICE], 0, flags)
            except BlockingIOError:
                return None
            except ConnectionResetError:
                n = 0
            if n == 0:
                raise OSError(errno.EPIPE, "got end of file during message")
            self._filled += n
            budget -= n
        body, self._body = self._body, None
        return body  # type: ignore[no-any-return]

    def _recv(self, n: int, flags: int, body: bool = False) -> bytes | None:
        try:
            chunk = self.sock.recv(n, flags)
        except BlockingIOError:
            return None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            if not body and not self._head:
                raise EOFError
            raise OSError(errno.EPIPE, "got end of file during message")
        return chunk


class _Writer:
    """Writes queued messages in order on a stream socket."""

    __slots__ = ("_out", "_queued", "sent", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: deque[memoryview] = deque()
        self._queued = 0  # bytes ever queued
        self.sent = 0  # bytes ever written

    def queue(self, payload: Buffer) -> int:
        """Queue one message; return the byte count at which it has been sent."""
        return self.queue_parts([memoryview(payload).cast("B")], 0)

    def queue_parts(self, parts: list[memoryview], flag: int) -> int:
        """Queue one message made of several parts (flag bits go in its header)."""
        size = sum(len(part) for part in parts)
        self._out.append(memoryview(_HEADER.pack(size | flag)))
        self._out.extend(part for part in parts if part)
        self._queued += 8 + size
        return self._queued

    @property
    def queued(self) -> int:
        """Bytes ever queued."""
        return self._queued

    def withdraw(self, start: int, end: int) -> None:
        """Take back the message queued between ``start`` and ``end`` if none of it is sent
        and nothing was queued after it."""
        if self.sent > start or self._queued != end:
            return
        size = end - start
        while size:
            size -= len(self._out.pop())
        self._queued = start

    def flush(self, block: bool) -> bool:
        """Write what the socket takes (without waiting unless ``block``); True once all is out.

        Without ``block`` it stops after about ``_SLICE`` bytes, so a big message
        goes out in slices with the event loop running in between.
        """
        out = self._out
        flags = 0 if block else _DONTWAIT
        budget = _SLICE
        while out:
            if not block and budget <= 0:
                return False  # let the loop run other tasks between slices of a big message
            try:
                n = self.sock.sendmsg(
                    _first(out, _SLICE) if not block else list(itertools.islice(out, _IOV_MAX)), (), flags
                )
            except BlockingIOError:
                return False
            self.sent += n
            budget -= n
            while n:
                head = out[0]
                if n >= len(head):
                    n -= len(head)
                    out.popleft()
                else:
                    out[0] = head[n:]
                    n = 0
        return True


class Connection:
    """One end of a ``Pipe``: the ``multiprocessing.connection.Connection`` methods
    (``send``, ``recv``, ``send_bytes``, ``recv_bytes``, ``recv_bytes_into``,
    ``poll``, ``close``, ``fileno``) and their awaitable twins (``asend``,
    ``arecv``, ``asend_bytes``, ``arecv_bytes``).

    ``async for message in conn:`` receives until the other end is closed. Send
    it to another process as a ``Process`` argument, in a queue, or through
    another connection, like the standard library's.
    """

    def __init__(self, sock: socket.socket, readable: bool = True, writable: bool = True) -> None:
        if not isinstance(sock, socket.socket):
            raise TypeError(f"sock must be a socket.socket, not {type(sock).__name__}")
        if not readable and not writable:
            raise ValueError("at least one of readable and writable must be True")
        fd = sock.fileno()
        # Blocking mode with no timeout of the socket object's own, whatever
        # socket.setdefaulttimeout() says: blocking methods sleep in the kernel as the
        # standard library's do; awaiting ones pass MSG_DONTWAIT.
        sock.settimeout(None)
        self._sock = sock
        self._handle: int | None = fd
        self._readable = readable
        self._writable = writable
        self._reader = _Reader(sock)
        self._writer = _Writer(sock)
        self._unread: list[Any] = []  # (message, oob) whose arecv was cancelled while decoding it
        self._rwait = _fd.SharedWait(fd, blocking=True)
        self._wwait = _fd.SharedWait(fd, writable=True, blocking=True)
        self._closer = weakref.finalize(self, _fd.close_socket, sock)

    # -- state ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` was called."""
        return self._handle is None

    @property
    def readable(self) -> bool:
        """True if this end can receive."""
        return self._readable

    @property
    def writable(self) -> bool:
        """True if this end can send."""
        return self._writable

    def fileno(self) -> int:
        """The underlying file descriptor."""
        return self._check(None)

    def close(self) -> None:
        """Close this end. A message a cancelled send left half-written is cut off."""
        if self._handle is not None:
            self._handle = None
            self._closer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._handle is None else f"fd={self._handle}"
        return f"<aiomp.Connection({state}, readable={self._readable}, writable={self._writable})>"

    def __reduce__(self) -> tuple[Callable[..., Connection], tuple[Any, ...]]:
        return _rebuild, (reduction.DupFd(self._check(None)), self._readable, self._writable)

    def _check(self, need: str | None) -> int:
        fd = self._handle
        if fd is None:
            raise OSError(errno.EBADF, "handle is closed")
        if need == "read" and not self._readable:
            raise OSError(errno.EBADF, "connection is write-only")
        if need == "write" and not self._writable:
            raise OSError(errno.EBADF, "connection is read-only")
        return fd

    # -- sending -------------------------------------------------------------------

    def send_bytes(self, buf: Buffer, offset: int = 0, size: int | None = None) -> None:
        """Send a bytes-like object as one message, blocking until it is written."""
        self._send(([_slice(buf, offset, size)], 0))

    def send(self, obj: Any) -> None:
        """Send a picklable object, blocking until it is written.

        Buffers that support pickle protocol 5 (NumPy arrays, ``bytearray``,
        ``pickle.PickleBuffer``) are written from where they lie, not copied.
        """
        self._check("write")
        self._send(_encode(obj))

    def _send(self, message: tuple[list[memoryview], int]) -> None:
        fd = self._check("write")
        end = self._writer.queue_parts(*message)
        while not self._writer.flush(True) and self._writer.sent < end:
            _fd.block_until(fd, True, None)  # an event loop elsewhere made the socket non-blocking

    async def asend_bytes(self, buf: Buffer, offset: int = 0, size: int | None = None) -> None:
        """Send a bytes-like object as one message, without blocking the event loop.

        If cancelled before its first byte went out, nothing is sent (unless a
        later message of another task is already queued behind it); if after,
        the rest of the message is sent by the next send on this connection.
        """
        await self._asend(([_slice(buf, offset, size)], 0))

    async def _asend(self, message: tuple[list[memoryview], int]) -> None:
        self._check("write")
        await anyio.lowlevel.checkpoint()  # yield before anything is sent: a send loop never starves the loop
        writer = self._writer
        start = writer.queued
        end = writer.queue_parts(*message)
        try:
            while not writer.flush(False) and writer.sent < end:
                await self._wwait.wait()
                self._check("write")
        except BaseException:
            writer.withdraw(start, end)  # unsent and last in line: it never goes out
            raise

    async def asend(self, obj: Any) -> None:
        """Send a picklable object without blocking the event loop.

        Buffers that support pickle protocol 5 are written from where they lie;
        other objects that look large are pickled in a thread.
        """
        self._check("write")
        if _serialize.likely_large(obj):
            parts = await anyio.to_thread.run_sync(_encode, obj)
        else:
            parts = _encode(obj)
        await self._asend(parts)

    # -- receiving -----------------------------------------------------------------

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Block until a message arrives and return it; ``EOFError`` at the end.

        A message longer than ``maxlength`` raises ``OSError`` and, as in the standard
        library, this end reads no more (it is closed if it cannot send either).
        """
        maxlength = _check_maxlength(maxlength)
        data = self._recv_blocking(maxlength, None)
        return data if isinstance(data, bytes) else _to_bytes(data)

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive a message into ``buf`` at ``offset``; return its size.

        Raises ``multiprocessing.BufferTooShort`` (carrying the message) if it
        does not fit.
        """
        view = _view(buf, writable=True)
        offset = _check_offset(offset, len(view))
        data = self._recv_blocking(None, None)
        if len(data) > len(view) - offset:
            raise BufferTooShort(bytes(data))
        view[offset : offset + len(data)] = data
        return len(data)

    def recv(self) -> Any:
        """Block until an object arrives and return it; ``EOFError`` at the end."""
        data = self._recv_blocking(None, None)
        return _decode(data, self._reader.oob)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or the end of the stream) is ready, waiting up to ``timeout``.

        ``None`` waits for ever.
        """
        timeout = blocking_timeout(timeout)
        fd = self._check("read")
        if self._unread or self._reader.in_message:
            return True
        return _fd.block_until(fd, False, _fd.deadline_after(timeout))

    def _recv_blocking(self, maxlength: int | None, deadline: float | None) -> bytes | bytearray:
        fd = self._check("read")
        if self._unread:
            data, self._reader.oob = self._unread.pop()
            return data  # type: ignore[no-any-return]
        self._reader.limit = maxlength
        while True:
            message = self._read(True)
            if message is not None:
                return message
            _fd.block_until(fd, False, deadline)  # an event loop elsewhere made the socket non-blocking

    async def arecv_bytes(self, maxlength: int | None = None) -> bytes:
        """Await a message and return it; ``EOFError`` once the peer closed and it is drained.

        If cancelled, nothing is lost: the next receive returns the message. A message
        longer than ``maxlength`` is handled as by ``recv_bytes``.
        """
        maxlength = _check_maxlength(maxlength)
        data = await self._arecv(maxlength)
        if isinstance(data, bytes):
            return data
        oob = self._reader.oob
        try:  # a big body: copied, and its memory released, off the loop
            out = await anyio.to_thread.run_sync(_to_bytes, data)
        except anyio.get_cancelled_exc_class():
            self._unread.append((data, oob))
            raise
        _release(data)
        return out

    async def arecv(self) -> Any:
        """Await an object; ``EOFError`` once the peer closed and it is drained.

        Big messages are unpickled in a thread. If cancelled, nothing is lost.
        """
        data = await self._arecv(None)
        oob = self._reader.oob
        if len(data) < _serialize.LARGE or oob:  # out-of-band buffers are not copied
            return _decode(data, oob)
        try:
            return await anyio.to_thread.run_sync(_decode, data, oob)
        except anyio.get_cancelled_exc_class():
            self._unread.append((data, oob))
            raise

    async def _arecv(self, maxlength: int | None) -> bytes | bytearray:
        self._check("read")
        await anyio.lowlevel.checkpoint()  # yield before anything is taken: a receive loop never starves the loop
        if self._unread:
            data, self._reader.oob = self._unread.pop()
            return data  # type: ignore[no-any-return]
        reader = self._reader
        reader.limit = maxlength
        while True:
            message = self._read(False)
            if message is not None:
                return message
            await self._rwait.wait()
            self._check("read")

    def _read(self, block: bool) -> bytes | bytearray | None:
        try:
            return self._reader.read(block)
        except OSError as error:
            if error.errno == errno.EMSGSIZE:  # over maxlength: its body is left unread, so stop reading
                if self._writable:
                    self._readable = False
                else:
                    self.close()
            raise

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.arecv()
        except EOFError:
            raise StopAsyncIteration from None


def _first(out: deque[memoryview], limit: int) -> list[memoryview]:
    """The leading views of ``out``, cut to at most ``limit`` bytes in all."""
    views = []
    for view in itertools.islice(out, _IOV_MAX):
        if len(view) >= limit:
            views.append(view[:limit])
            break
        views.append(view)
        limit -= len(view)
    return views


def _encode(obj: Any) -> tuple[list[memoryview], int]:
    """A message for ``obj``: its pickle, or its pickle and its out-of-band buffers."""
    buffers: list[pickle.PickleBuffer] = []
    out = io.BytesIO()
    reduction.ForkingPickler(out, 5, True, buffers.append).dump(obj)  # positional: 3.11 takes no keywords
    envelope = out.getbuffer()
    if not buffers:
        return [envelope], 0
    views = [buffer.raw() for buffer in buffers]
    meta = _COUNT.pack(len(views)) + b"".join(_SIZE.pack(len(view)) for view in views)
    return [memoryview(meta), memoryview(_SIZE.pack(len(envelope))), envelope, *views], _OOB


def _decode(data: Any, oob: bool) -> Any:
    if not oob:
        return reduction.ForkingPickler.loads(data)
    if isinstance(data, bytes):
        data = bytearray(data)  # arrays rebuilt on its memory must be writable, as after a copy
    view = memoryview(data)
    (count,) = _COUNT.unpack_from(view)
    sizes = [_SIZE.unpack_from(view, 4 + 8 * i)[0] for i in range(count)]
    at = 4 + 8 * count
    (envelope_size,) = _SIZE.unpack_from(view, at)
    at += 8
    envelope = view[at : at + envelope_size]
    at += envelope_size
    buffers = []
    for size in sizes:
        buffers.append(view[at : at + size])
        at += size
    return pickle.loads(envelope, buffers=buffers)


class _BigBody(mmap.mmap):
    """A big message's memory: pages the kernel zero-fills as they are written.

    Backed by a memfd where there is one, so that ``to_bytes`` can have the
    kernel copy it into a new ``bytes`` object (``pread``) without the GIL; a
    copy made by Python would hold the GIL, and stall the event loop, for tens of
    milliseconds at 64 MiB.
    """

    memfd = -1

    @classmethod
    def new(cls, size: int) -> _BigBody:
        if not hasattr(os, "memfd_create"):  # pragma: no cover - non-Linux
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


def _to_bytes(data: Any) -> bytes:
    """``bytes(data)``, made off the loop and, for a big body, without the GIL.

    Leaves ``data`` open: a cancelled receive gives it to the next one.
    """
    if not isinstance(data, _BigBody):
        return bytes(data)
    return bytes(data) if data.memfd < 0 else os.pread(data.memfd, len(data), 0)


def _release(data: Any) -> None:
    """Unmap a big body in a thread: unmapping 64 MiB on the loop would stall it."""
    if isinstance(data, _BigBody):
        threading.Thread(target=data.close, name="aiomp-unmap", daemon=True).start()


def _slice(buf: Buffer, offset: int, size: int | None) -> memoryview:
    view = _view(buf)
    offset = _check_offset(offset, len(view))
    if size is None:
        size = len(view) - offset
    else:
        size = _index("size", size, "an int or None")
        if not 0 <= size <= len(view) - offset:
            raise ValueError(f"size must be between 0 and {len(view) - offset}, not {size}")
    return view[offset : offset + size]


def _view(buf: object, writable: bool = False) -> memoryview:
    """``buf``'s bytes, or ``TypeError`` naming it."""
    try:
        view = memoryview(buf)  # type: ignore[arg-type]
    except TypeError:
        view = None
    if view is None or (writable and view.readonly):
        kind = "a writable bytes-like object" if writable else "a bytes-like object"
        raise TypeError(f"buf must be {kind}, not {type(buf).__name__}")
    return view.cast("B")


def _index(name: str, value: object, kind: str = "an int") -> int:
    """``value`` as an int: an int or any integer type but bool (as slicing takes), or ``TypeError``."""
    if not isinstance(value, bool):
        with contextlib.suppress(TypeError):
            return operator.index(value)  # type: ignore[arg-type]
    raise TypeError(f"{name} must be {kind}, not {type(value).__name__}")


def _check_offset(offset: object, length: int) -> int:
    offset = _index("offset", offset)
    if not 0 <= offset <= length:
        raise ValueError(f"offset must be between 0 and {length}, not {offset}")
    return offset


def _check_maxlength(maxlength: object) -> int | None:
    if maxlength is None:
        return None
    maxlength = _index("maxlength", maxlength, "an int or None")
    if maxlength < 0:
        raise ValueError(f"maxlength must not be negative, not {maxlength}")
    return maxlength


def _rebuild(dup: Any, readable: bool, writable: bool) -> Connection:
    return Connection(socket.socket(fileno=dup.detach()), readable, writable)


def Pipe(duplex: bool = True) -> tuple[Connection, Connection]:
    """A pair of connected ``Connection`` objects.

    With ``duplex=True`` (the default) both ends send and receive; otherwise the
    first end only receives and the second only sends. Both are Unix stream
    sockets, so each call can choose to wait or not (``MSG_DONTWAIT``) whatever
    mode the shared descriptor is in.
    """
    if not isinstance(duplex, bool):
        raise TypeError(f"duplex must be a bool, not {type(duplex).__name__}")
    left, right = socket.socketpair()
    if duplex:
        return Connection(left), Connection(right)
    return Connection(left, writable=False), Connection(right, readable=False)


Connection.__module__ = "aiomp"
Pipe.__module__ = "aiomp"
