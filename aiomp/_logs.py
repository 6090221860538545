"""Worker log records, forwarded to the parent's own logging setup.

Each child (a Pool worker or a ``Process``) gets a stream socket of its own to
the parent. At start the child removes any handlers its root logger already has,
takes on the parent's logging levels (so a record the parent would not handle is
never even made), and puts a ``_Forwarder`` at its root logger.

On the wire each record is one ``_frames`` frame whose single part is the pickle
of the record's attributes (``dump_record``), which is also what
``_serialize.pack`` makes of one object without out-of-band buffers. The
forwarder queues the frame on a ``_frames.Writer`` and blocks until all of it
is written: once ``logger.info()`` returns, the record is in the kernel, so it
survives an ``os._exit`` or a crash that follows.

In the parent a ``Receiver`` reads the other end on the event loop (it waits on
the descriptor; no thread) with a greedy ``_frames.Reader``, unpickles each
frame's part into a record and hands it to
``logging.getLogger(record.name).handle(record)``. It handles records in short
batches and yields to the loop in between, so a flood of records costs the loop
at most one batch of lag. ``after(callback)`` runs a callback once every record
that is in the socket now has been handled: the Pool delivers a task's result
only after the records the task logged. ``drain()``, called once the child has
exited, handles everything the child wrote, which is how ``join()`` promises
that no record is still in flight. Both go by offsets in the stream: the
reader's count of bytes received, plus what the socket holds unread
(``FIONREAD``), is where the child's writing stands now.

What crosses: every standard attribute of the record (``processName``,
``process``, ``threadName``, ``created``, ``stack_info``...), the exception as
text in ``exc_text`` (and as the exception itself when it pickles), extra
attributes that are plain data (others as their ``repr``), and ``msg`` with
``args`` when the arguments are plain scalars. Otherwise the message is
formatted in the child and sent with ``args=None``, so a record is never dropped
for what its arguments hold.

The child half imports nothing heavy (workers start without anyio).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import logging
import os
import pickle
import socket
import struct
import sys
import termios
import time
from collections import deque
from collections.abc import Callable

from . import _frames, _wire

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LevelWatch", "Levels", "Listener", "Receiver", "apply_levels", "install", "levels", "listen_alone"]

_PROTOCOL = 5
# The parent handles records in batches of at most this long (or this many)
# before it lets the rest of the event loop run.
_BATCH_SECONDS = 0.0002
_BATCH_CHECK = 8  # look at the clock every this many records
# Ask for the largest send buffer the kernel allows: a burst of records then
# rarely makes the child wait for the parent.
_SEND_BUFFER = 4 << 20
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
# Attributes every LogRecord gets when it is made; anything else came in
# through ``extra=`` (or a filter).
_BORN = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
_STANDARD = _BORN | {"message", "asctime"}

# (logging.disable level, root level, {logger: level}, [disabled loggers])
Levels = tuple[int, int, dict[str, int], list[str]]


# -- the child's half ------------------------------------------------------------


def install(config: tuple[socket.socket, Levels], counted: Callable[[int], None] | None = None) -> None:
    """Forward this process's log records to the parent (called first thing in a child).

    ``counted(n)`` is called after the n-th record is written (a pool worker puts
    it in shared memory: ``_wire.Markers.logged``).
    """
    sock, parent_levels = config
    # Handlers here now are copies of the parent's: inherited by a fork, or made
    # again by the main module's import (spawn, forkserver). The parent's own
    # handle these records once they arrive, so the copies would print them
    # twice; and every logger must propagate to the forwarder at the root.
    manager = logging.root.manager
    loggers = [logging.root, *(x for x in list(manager.loggerDict.values()) if isinstance(x, logging.Logger))]
    for logger in loggers:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    apply_levels(parent_levels)
    logging.root.addHandler(_Forwarder(sock, counted))


_applied: set[str] = set()  # the loggers whose level apply_levels set


def apply_levels(parent_levels: Levels) -> None:
    """Take on the parent's levels, so records it would not handle are never made."""
    disabled_below, root_level, named, disabled = parent_levels
    logging.disable(disabled_below)
    logging.root.setLevel(root_level)
    for name in _applied - named.keys():
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in named.items():
        logging.getLogger(name).setLevel(level)
    _applied.clear()
    _applied.update(named)
    for name in disabled:
        logging.getLogger(name).disabled = True


class _Forwarder(logging.Handler):
    """Sends each record to the parent before ``emit`` returns."""

    def __init__(self, sock: socket.socket, counted: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._writer: _frames.Writer | None = _frames.Writer(sock)
        self._pid = os.getpid()
        self._counted = counted
        self._count = 0

    def emit(self, record: logging.LogRecord) -> None:
        # ``Handler.handle`` holds self.lock: one thread writes at a time.
        if os.getpid() != self._pid:
            # A process forked from this one (not through aiomp) has no channel
            # of its own; writing to this one would interleave with our frames.
            if logging.lastResort is not None and record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)
            return
        writer = self._writer
        if writer is None:
            return
        try:
            writer.queue(_frames.Frame([dump_record(record)]))
            writer.flush_blocking()
            if self._counted is not None:
                self._count += 1
                self._counted(self._count)
        except OSError:  # the parent stopped listening (it exited or closed us)
            self._writer = None
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        with self.lock if self.lock is not None else contextlib.nullcontext():
            writer, self._writer = self._writer, None
            if writer is not None and os.getpid() == self._pid:
                writer.sock.close()
        super().close()


def dump_record(record: logging.LogRecord) -> bytes:
    """Pickle a record so that the parent can always rebuild it."""
    attrs = dict(record.__dict__)
    task = _wire.TASK.get()
    if task:  # logged by a pool task: the parent handles it in the call's context
        attrs["_aiomp_task"] = task
    if not (type(record.msg) is str and _plain_args(record.args) and _formats(record)):
        attrs["msg"] = _message(record)
        attrs["args"] = None
    exc_info = record.exc_info
    if exc_info:
        attrs["exc_info"] = None
        if exc_info[1] is not None:
            if not record.exc_text:
                attrs["exc_text"] = _FORMATTER.formatException(exc_info)
            from ._serialize import dump_error

            with contextlib.suppress(Exception):
                attrs["_aiomp_exception"] = dump_error(exc_info[1])
    for key, value in attrs.items():
        if key not in _STANDARD and not _plain(value, 3):
            attrs[key] = _safe_repr(value)
    try:
        return pickle.dumps(attrs, _PROTOCOL)
    except Exception:  # a filter put something odd in a standard attribute
        return pickle.dumps({k: v if _plain(v, 3) else _safe_repr(v) for k, v in attrs.items()}, _PROTOCOL)


_FORMATTER = logging.Formatter()


def _plain_args(args: object) -> bool:
    if type(args) is tuple:
        return all(type(arg) in _SCALARS for arg in args)
    if type(args) is dict:
        return all(type(arg) in _SCALARS for arg in args.values())
    return args is None


def _plain(value: object, depth: int) -> bool:
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind in _CONTAINERS and depth:
        if kind is dict:
            return all(type(k) in _SCALARS and _plain(v, depth - 1) for k, v in value.items())  # type: ignore[attr-defined]
        return all(_plain(item, depth - 1) for item in value)  # type: ignore[attr-defined]
    return False


def _formats(record: logging.LogRecord) -> bool:
    """Whether ``msg % args`` works (else the parent's handlers would fail on it)."""
    if not record.args:
        return True
    try:
        record.getMessage()
    except Exception:
        return False
    return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as error:
        return f"{_safe_repr(record.msg)} % {_safe_repr(record.args)} (formatting failed: {error!r})"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


# -- the parent's half -------------------------------------------------------------


def levels() -> Levels:
    """The parent's logging levels, for a child to take on at start."""
    manager = logging.root.manager
    named: dict[str, int] = {}
    disabled: list[str] = []
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):  # not a PlaceHolder
            if logger.level:
                named[name] = logger.level
            if logger.disabled:
                disabled.append(name)
    return manager.disable, logging.root.level, named, disabled


class LevelWatch:
    """Notices when the parent's logging levels may have changed, at the cost of a dict check.

    ``Logger.setLevel``, ``logging.disable``, ``basicConfig`` and ``dictConfig``
    all clear every logger's cache of level decisions; a logger of our own that
    nobody else asks is filled after each snapshot, and found empty after a change.
    """

    def __init__(self) -> None:
        self._probe = logging.getLogger("aiomp._levels")
        self.levels = self.take()

    def take(self) -> Levels:
        snapshot = levels()
        self._probe.isEnabledFor(logging.CRITICAL)  # fills its cache
        return snapshot

    def changed(self) -> bool:
        """True (once) when the levels are not the ones last taken; ``levels`` is then updated."""
        if getattr(self._probe, "_cache", True):
            return False
        snapshot = self.take()
        if snapshot == self.levels:
            return False
        self.levels = snapshot
        return True


_MORE, _IDLE, _EOF = range(3)


class Listener:
    """Handles the records of a set of channels: one short batch per turn of the loop.

    Each channel's ``Receiver.run`` waits on its own descriptor and hands the
    channel over when it is readable; this task does the handling, round-robin
    among the channels with records, and yields to the loop after every batch
    of at most ``_BATCH_SECONDS``. However many workers flood it, the rest of
    the loop waits for one batch, not one batch per worker.
    """

    def __init__(self) -> None:
        self._ready: deque[Receiver] = deque()
        self._wake: Any = None

    def add(self, receiver: Receiver) -> None:
        self._ready.append(receiver)
        if self._wake is not None:
            self._wake.set()

    async def run(self) -> None:
        """Handle records until cancelled."""
        import anyio
        import anyio.lowlevel

        while True:
            if not self._ready:
                self._wake = anyio.Event()
                await self._wake.wait()
                self._wake = None
                continue
            deadline = time.perf_counter() + _BATCH_SECONDS
            while self._ready and time.perf_counter() < deadline:
                receiver = self._ready.popleft()
                if receiver._turn(deadline):
                    self._ready.append(receiver)
            await anyio.lowlevel.checkpoint()


class Receiver:
    """The parent's end of one child's log channel.

    ``child_config()`` is what the child's ``install`` takes; pass it to the child
    at start, then call ``started()`` to close the parent's copy of the child's end.
    """

    def __init__(self) -> None:
        self._sock, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._child: socket.socket | None = child
        with contextlib.suppress(OSError):
            child.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
        self._sock.setblocking(False)
        self._fd = self._sock.fileno()
        # Greedy: nobody else reads this end. Its ``consumed`` is how far the
        # stream has been handled, since each frame is handled once read.
        self._reader = _frames.Reader(self._sock, exact=False)
        self._waiting: deque[tuple[int, Callable[[], object]]] = deque()  # (stream offset, callback)
        self._closed = False
        self._scope: Any = None  # run()'s cancel scope while it runs
        self._handled_turn: Any = None  # set when the listener has emptied the socket
        self._eof = False
        self._loggers: dict[str, logging.Logger] = {}
        #: The context to handle a pool task's records in, by task index (set by the pool's backend).
        self.context_of: Callable[[int], contextvars.Context | None] | None = None
        #: How many records the child has written, if it counts them (a pool worker does).
        self.logged: Callable[[], int] | None = None
        self._handled = 0  # records read and handled

    def child_config(self, parent_levels: Levels | None = None) -> tuple[socket.socket, Levels]:
        """What the child passes to ``install``: its end of the channel, and our levels."""
        if self._child is None:
            raise RuntimeError("the child's end was already handed over")
        return self._child, levels() if parent_levels is None else parent_levels

    def started(self) -> None:
        """The child has its copy of its end: close ours."""
        child, self._child = self._child, None
        if child is not None:
            child.close()

    # -- reading -------------------------------------------------------------------

    async def run(self, listener: Listener, close_at_exit: bool = False) -> None:
        """Hand this channel to ``listener`` whenever it has records, until it ends or ``close()``.

        With ``close_at_exit`` (a listener in the background) the channel is
        also closed when this task is cancelled, so the child never waits on a
        parent that stopped listening.
        """
        import anyio

        try:
            with anyio.CancelScope() as self._scope:
                while not (self._closed or self._eof):
                    await anyio.wait_readable(self._fd)
                    self._handled_turn = anyio.Event()
                    listener.add(self)
                    await self._handled_turn.wait()
        finally:
            self._scope = None
            if self._closed:
                self._sock.close()  # close() left that to us: we were waiting on it
            elif self._eof or close_at_exit:
                self.close()

    def _turn(self, deadline: float) -> bool:
        """Handle a batch for the listener; True if more records are waiting."""
        state = _EOF if self._closed else self._take(deadline)
        if state == _MORE:
            return True
        self._eof = state == _EOF
        if self._handled_turn is not None:
            self._handled_turn.set()  # run() waits for the descriptor again (or ends)
        return False

    async def drain(self) -> None:
        """Handle every record the (exited) child wrote, yielding between batches.

        Does not wait for the end of the stream, nor read past what is there
        now: a process the child forked may hold its end open and go on logging.
        """
        import anyio.lowlevel

        upto = self._mark()
        while not self._closed:
            state = self._take(time.perf_counter() + _BATCH_SECONDS, upto)
            if state != _MORE:
                break
            await anyio.lowlevel.checkpoint()
        self._release()

    def behind(self) -> bool:
        """Whether records that the child has written are not yet handled."""
        if self._closed:
            return False
        reader = self._reader
        if self._waiting or reader.received > reader.consumed:
            return True
        if self.logged is not None:  # a shared counter: no system call
            return self.logged() > self._handled
        return _unread(self._fd) > 0

    def after(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once every record in the channel now has been handled."""
        if not self.behind():
            callback()
            return
        self._waiting.append((self._mark(), callback))

    def close(self) -> None:
        """Stop: handle what is already here, run waiting callbacks, close the socket."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            self._take(None, self._mark())
        self._release()
        self._reader.close()
        self._closed = True
        self.started()
        if self._scope is not None:
            # run() is waiting on the descriptor: it closes the socket once its
            # wait is undone, so the loop never watches a closed (reused) number.
            self._scope.cancel()
        else:
            self._sock.close()

    def _release(self) -> None:
        waiting, self._waiting = self._waiting, deque()
        for _, callback in waiting:
            callback()

    def _mark(self) -> int:
        """The stream offset of the end of what the child has written so far."""
        return self._reader.received + _unread(self._fd)

    def _take(self, deadline: float | None, upto: int | None = None) -> int:
        """Handle frames until the socket is empty, closed, or ``deadline`` passes.

        With ``upto`` (a stream offset), read no further than that: a child that
        is still logging cannot keep the caller handling records forever.
        """
        reader = self._reader
        waiting = self._waiting
        count = 0
        while True:
            try:
                frame = reader.read(False, upto)
            except EOFError:
                return _EOF
            except OSError:  # the stream ended inside a record (the child died writing it)
                return _EOF
            if frame is None:
                if not (reader.in_frame and (upto is None or reader.received < upto) and _unread(self._fd) > 0):
                    return _IDLE
                # A big record is read in slices: the rest is there, read on.
                if deadline is not None and time.perf_counter() > deadline:
                    return _MORE
                continue
            self._handle(frame)
            while waiting and waiting[0][0] <= reader.consumed:
                waiting.popleft()[1]()
            count += 1
            if deadline is not None and count % _BATCH_CHECK == 0 and time.perf_counter() > deadline:
                return _MORE

    def _handle(self, frame: _frames.Frame) -> None:
        self._handled += 1
        try:
            if frame.fds:
                frame.close_fds()  # none are sent with records
            attrs = pickle.loads(frame.parts[0])
            task = attrs.pop("_aiomp_task", 0)
            exception = attrs.pop("_aiomp_exception", None)
            record = _make_record(attrs)
            if exception is not None:
                from ._serialize import load_error

                with contextlib.suppress(Exception):
                    error = load_error(exception)
                    record.exc_info = (type(error), error, None)
            logger = self._loggers.get(record.name)
            if logger is None:
                logger = self._loggers[record.name] = logging.getLogger(record.name)
            context = self.context_of(task) if task and self.context_of is not None else None
            if context is None:
                logger.handle(record)
            else:
                context.run(logger.handle, record)
        except Exception:  # a broken handler or filter: report it, keep listening
            _report()
        finally:
            for part in frame.parts:
                if type(part) is memoryview:  # a big record's: unmapped off the loop
                    _frames.release(part)


def _make_record(attrs: dict[str, Any]) -> logging.LogRecord:
    """``logging.makeLogRecord(attrs)``, without making a record only to overwrite it.

    With the standard record factory, and ``attrs`` holding every attribute a
    record is born with (as the child's record did), that is a bare record with
    ``attrs`` as its attributes: a few microseconds less per record.
    """
    if logging.getLogRecordFactory() is logging.LogRecord and attrs.keys() >= _BORN:
        record = logging.LogRecord.__new__(logging.LogRecord)
        record.__dict__.update(attrs)
        return record
    return logging.makeLogRecord(attrs)


def _report() -> None:
    """Say on stderr that a handler failed, as ``Handler.handleError`` does.

    Not through logging: the failing handler may well be the root's.
    """
    if logging.raiseExceptions and sys.stderr is not None:
        with contextlib.suppress(Exception):
            sys.stderr.write("--- Logging error in a handler, for a record forwarded from a worker by aiomp ---\n")
            import traceback

            traceback.print_exc(file=sys.stderr)


async def listen_alone(receiver: Receiver) -> None:
    """Serve one channel with a listener of its own (a ``Process`` in the background)."""
    import anyio

    listener = Listener()
    # The coroutine is made here so that it can be closed here: a child that is joined at
    # once can end this task before the listener's first step, and a task cancelled
    # before it starts may leave its coroutine never awaited (a RuntimeWarning).
    handling = listener.run()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: handling)
            await receiver.run(listener, close_at_exit=True)
            tg.cancel_scope.cancel()
    finally:
        handling.close()


def _unread(fd: int) -> int:
    """Bytes waiting in a socket's receive queue."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]
    except OSError:
        return 0
