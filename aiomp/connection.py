"""``Pipe`` and ``Connection``: message pipes between processes, blocking and awaitable.

Both ends are Unix stream sockets in blocking mode, with no timeout of their own
(the process's ``socket.setdefaulttimeout()`` does not apply): the blocking
methods sleep in the kernel as the standard library's do, and the awaiting ones
pass ``MSG_DONTWAIT`` and wait on the event loop (putting the mode back after
uvloop, which changes it). Messages are ``_frames`` frames; objects are packed by
``_serialize``, so big buffers travel through shared memory (``_shm``).

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
import operator
import socket
import weakref
from collections.abc import Callable
from multiprocessing import BufferTooShort, reduction
from typing import Any

import anyio
import anyio.lowlevel
from typing_extensions import Buffer, Self

from . import _fd, _frames, _serialize
from ._checks import blocking_timeout
from ._frames import Frame

__all__ = ["Connection", "Pipe"]


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
        self._reader = _frames.Reader(sock, exact=True)  # another process may read this end too
        self._writer = _frames.Writer(sock)
        # Frames, or objects already unpickled, whose arecv was cancelled: the next receive's.
        self._unread: list[tuple[bool, Any]] = []
        self._rwait = _fd.SharedWait(fd, blocking=True)
        self._wwait = _fd.SharedWait(fd, writable=True, blocking=True)
        self._closer = weakref.finalize(self, _close, sock, self._reader)

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
        self._send(Frame([_slice(buf, offset, size)]))

    def send(self, obj: Any) -> None:
        """Send a picklable object, blocking until it is written.

        Buffers that support pickle protocol 5 (NumPy arrays, ``bytearray``,
        ``pickle.PickleBuffer``) are not copied into the pickle: big ones are
        written once into shared memory, small ones from where they lie.
        """
        self._check("write")
        self._send(_serialize.frame_of(obj))

    def _send(self, frame: Frame) -> None:
        self._check("write")
        end = self._writer.queue(frame)
        while self._writer.sent < end and not self._writer.flush(True):
            _fd.block_until(self._check("write"), True, None)  # an event loop elsewhere made it non-blocking

    async def asend_bytes(self, buf: Buffer, offset: int = 0, size: int | None = None) -> None:
        """Send a bytes-like object as one message, without blocking the event loop.

        If cancelled before its first byte went out, nothing is sent (unless a
        later message of another task is already queued behind it); if after,
        the rest of the message is sent by the next send on this connection.
        """
        await self._asend(Frame([_slice(buf, offset, size)]))

    async def _asend(self, frame: Frame) -> None:
        self._check("write")
        await anyio.lowlevel.checkpoint()  # yield before anything is sent: a send loop never starves the loop
        writer = self._writer
        start = writer.queued
        end = writer.queue(frame)
        try:
            while writer.sent < end and not writer.flush(False):
                await self._wwait.wait()
                self._check("write")
        except BaseException:
            writer.withdraw(start, end)  # unsent and last in line: it never goes out
            raise

    async def asend(self, obj: Any) -> None:
        """Send a picklable object without blocking the event loop.

        Objects that look large are pickled in a thread, and big buffers are
        copied into shared memory in a thread.
        """
        self._check("write")
        await self._asend(await _aencode(obj))

    # -- receiving    # -- receiving -----------------------------------------------------------------

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Block until a message arrives and return it; ``EOFError`` at the end.

        A message longer than ``maxlength`` raises ``OSError`` and, as in the standard
        library, this end reads no more (it is closed if it cannot send either).
        """
        maxlength = _check_maxlength(maxlength)
        return _message_bytes(self._recv_blocking(maxlength))

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive a message into ``buf`` at ``offset``; return its size.

        Raises ``multiprocessing.BufferTooShort`` (carrying the message) if it
        does not fit.
        """
        view = _view(buf, writable=True)
        offset = _check_offset(offset, len(view))
        data = _message_bytes(self._recv_blocking(None))
        if len(data) > len(view) - offset:
            raise BufferTooShort(data)
        view[offset : offset + len(data)] = data
        return len(data)

    def recv(self) -> Any:
        """Block until an object arrives and return it; ``EOFError`` at the end."""
        frame = self._recv_blocking(None)
        if not isinstance(frame, Frame):
            return frame  # unpickled by an arecv that was cancelled
        return _serialize.decode(frame)

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether a message (or the end of the stream) is ready, waiting up to ``timeout``.

        ``None`` waits for ever.
        """
        timeout = blocking_timeout(timeout)
        fd = self._check("read")
        if self._unread or self._reader.in_frame:
            return True
        return _fd.block_until(fd, False, _fd.deadline_after(timeout))

    def _recv_blocking(self, maxlength: int | None) -> Any:
        """The next frame (or an object an ``arecv`` had unpickled when it was cancelled)."""
        fd = self._check("read")
        if self._unread:
            return self._unread.pop()[1]
        self._reader.limit = maxlength
        while True:
            frame = self._read(True)
            if frame is not None:
                return frame
            _fd.block_until(fd, False, None)  # an event loop elsewhere made the socket non-blocking

    async def arecv_bytes(self, maxlength: int | None = None) -> bytes:
        """Await a message and return it; ``EOFError`` once the peer closed and it is drained.

        If cancelled, nothing is lost: the next receive returns the message. A message
        longer than ``maxlength`` is handled as by ``recv_bytes``.
        """
        maxlength = _check_maxlength(maxlength)
        frame = await self._arecv(maxlength)
        if not isinstance(frame, Frame):
            return _message_bytes(frame)
        if frame.nbytes() < _serialize.LARGE:
            return _message_bytes(frame)
        data: bytes = await self._off_loop(frame, _message_bytes)  # copied, memory released, off the loop
        return data

    async def arecv(self) -> Any:
        """Await an object; ``EOFError`` once the peer closed and it is drained.

        Big messages are unpickled in a thread. If cancelled, nothing is lost.
        """
        frame = await self._arecv(None)
        if not isinstance(frame, Frame):
            return frame
        if frame.nbytes() < _serialize.LARGE and not frame.fds:
            return _serialize.decode(frame)
        return await self._off_loop(frame, _serialize.decode)

    async def _off_loop(self, frame: Frame, convert: Callable[[Frame], Any]) -> Any:
        """``convert(frame)`` in a thread; if cancelled, the next receive gets the result."""
        done: list[Any] = []
        try:
            return await anyio.to_thread.run_sync(_keep, done, convert, frame)
        except anyio.get_cancelled_exc_class():
            self._unread.append((True, done[0]) if done else (False, frame))
            raise

    async def _arecv(self, maxlength: int | None) -> Any:
        self._check("read")
        await anyio.lowlevel.checkpoint()  # yield before anything is taken: a receive loop never starves the loop
        if self._unread:
            return self._unread.pop()[1]
        self._reader.limit = maxlength
        while True:
            frame = self._read(False)
            if frame is not None:
                return frame
            await self._rwait.wait()
            self._check("read")

    def _read(self, block: bool) -> Frame | None:
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


async def _aencode(obj: Any) -> Frame:
    """Pack ``obj`` into a frame, pickling and copying big buffers off the loop."""
    if _serialize.likely_large(obj):  # big containers, big buffers (copied into shared memory)
        return await anyio.to_thread.run_sync(_serialize.frame_of, obj)
    return _serialize.frame_of(obj)


def _keep(box: list[Any], convert: Callable[[Frame], Any], frame: Frame) -> Any:
    """``convert(frame)``, also kept in ``box``: a cancelled wait for it can still find it."""
    box.append(convert(frame))
    return box[0]


def _message_bytes(message: Any) -> bytes:
    """A received message as bytes (an object's message is its parts, joined)."""
    if not isinstance(message, Frame):
        raise TypeError("the message was an object already received by arecv(); use recv()")
    message.close_fds()
    parts = message.parts
    if len(parts) == 1:
        data: bytes = _frames.to_bytes(parts[0])
        _frames.release(parts[0])
        return data
    return b"".join(bytes(part) for part in parts)


def _close(sock: socket.socket, reader: _frames.Reader) -> None:
    reader.close()
    _fd.close_socket(sock)


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
