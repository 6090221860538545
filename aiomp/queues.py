"""``Queue``, ``JoinableQueue`` and ``SimpleQueue`` shared between processes.

The layout is the standard library's: one pipe that every process may write and
read, a lock for readers, a lock for writers, and a semaphore counting free
places for ``maxsize``. What changes is who waits and how:

* Putting never blocks on the pipe. A put writes its message straight into the
  pipe when nothing else of this process is queued and the pipe has room (one
  system call), and otherwise hands it to this process's feeder thread, which
  writes in order. Either way, the message is pickled by the caller, so an
  unpicklable object raises in the caller, not in a thread.
* Awaiting waits on descriptors: the read end of the pipe, and the doorbells of
  the reader lock and the ``maxsize`` semaphore (see ``_doorbell``).
* ``aget`` takes a message off the pipe only while it cannot be cancelled: it
  is cancellable while it waits for the reader lock and for the first byte;
  once a message has begun to arrive it is read whole. If a cancellation
  arrives while a big message is still coming in, a short-lived thread finishes
  reading it and puts it back at the end of the queue, so nothing is lost.
* ``shutdown()`` marks the queue in shared memory and puts an end marker (an
  empty message) behind the items; a consumer that reads the marker puts it
  back for the next consumer and raises ``QueueShutDown``.

The pipe is a Unix stream socket pair in blocking mode: blocking methods sleep
in the kernel, awaiting ones pass ``MSG_DONTWAIT`` (see ``connection``). Like
the standard library's, queues reach other processes by inheritance
(``Process`` arguments, ``Pool`` initargs).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
import weakref
from collections import deque
from multiprocessing import context, reduction, sharedctypes, util
from typing import Any

import anyio
import anyio.lowlevel
from typing_extensions import Self

from . import _fd, _serialize
from ._checks import SEM_VALUE_MAX, blocking_timeout, check_block
from ._exceptions import QueueShutDown
from ._frames import Frame, Reader, Writer
from .connection import _aencode, _keep
from .synchronize import _CTX, Condition, Lock, Semaphore

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]

_SHUTDOWN = Frame([])  # the end marker: an item's frame always has a part
_BATCH = 256  # messages the feeder writes per turn of the writer lock
_SEM_MAX = 2**31 - 1  # an unbounded queue's count of free places
_RECHECK = 0.05  # holding the end marker: how often to look whether late puts are still coming


class _Feeder:
    """Writes this process's messages to a queue's pipe, in order, never blocking ``put``."""

    def __init__(self, sock: socket.socket, wlock: Any, unwritten: Any) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._wlock = wlock  # a SemLock shared by every writing process
        self._unwritten = unwritten  # a SemLock counting accepted puts not yet in the pipe
        self._cond = threading.Condition(threading.Lock())
        self._pending: deque[Any] = deque()
        self._head: Writer | None = None  # a message the fast path began, writer lock held
        self._head_counted = 0
        self._busy = False
        self._thread: threading.Thread | None = None
        self._closed = False
        self.join_at_exit = True

    def put(self, payload: Any, counted: bool = True) -> None:
        """Write ``payload`` as one message, now or from the thread; ``counted``
        items are in the shared count of unwritten puts until they are written."""
        with self._cond:
            if self._closed:
                raise ValueError("the queue is closed in this process")
            if counted:
                self._unwritten.release()
            if not (self._pending or self._busy or self._head) and self._wlock.acquire(False):
                writer = Writer(self._sock)
                writer.queue(payload)
                try:
                    done = writer.flush(False)
                except BaseException:
                    self._wlock.release()
                    raise
                if done:
                    self._wlock.release()
                    if counted:
                        self._unwritten.acquire(False)
                    return
                self._head = writer  # the pipe is full: the thread finishes it
                self._head_counted = int(counted)
            else:
                self._pending.append((payload, counted))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aiomp-queue-feeder", daemon=True)
                self._thread.start()
            else:
                self._cond.notify()

    def _run(self) -> None:
        fd, sock, wlock = self._fd, self._sock, self._wlock
        while True:
            with self._cond:
                while not (self._pending or self._head):
                    if self._closed:
                        sock.close()
                        return
                    self._cond.wait()
                writer, self._head = self._head, None
                if writer is None:
                    writer = Writer(sock)
                    counted = 0
                    for _ in range(min(len(self._pending), _BATCH)):
                        payload, one = self._pending.popleft()
                        writer.queue(payload)
                        counted += one
                    locked = False
                else:
                    locked = True
                    counted = self._head_counted
                self._busy = True
            try:
                if not locked:
                    wlock.acquire()
                try:
                    while not writer.flush(True):
                        _fd.block_until(fd, True, None)  # an event loop made it non-blocking
                finally:
                    wlock.release()
                for _ in range(counted):
                    self._unwritten.acquire(False)
            except OSError:  # pragma: no cover - the pipe went away under us
                pass
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def close(self) -> None:
        """No more puts; the thread exits once everything queued is written."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            if self._thread is None:
                self._sock.close()
            else:
                self._cond.notify_all()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def at_end(self) -> None:
        """The queue was collected, or the process is exiting."""
        self.close()
        if self.join_at_exit and util.is_exiting():
            self.join()


class _Queue:
    """What the three queues share."""

    _maxsize = 0

    def __init__(self, maxsize: int | None) -> None:
        r, w = socket.socketpair()
        w.shutdown(socket.SHUT_RD)
        sem = None if maxsize is None else Semaphore(maxsize or _SEM_MAX)
        state = (maxsize, r, w, Lock(), _CTX.Lock(), sem, sharedctypes.RawValue("i", 0), _CTX.Semaphore(0))
        self._setup(state)

    def __getstate__(self) -> tuple[Any, ...]:
        context.assert_spawning(self)
        maxsize, r, w, *rest = self._state
        return (maxsize, reduction.DupFd(r.fileno()), reduction.DupFd(w.fileno()), *rest)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        maxsize, r, w, *rest = state
        self._setup((maxsize, socket.socket(fileno=r.detach()), socket.socket(fileno=w.detach()), *rest))

    def _setup(self, state: tuple[Any, ...]) -> None:
        self._state = state
        maxsize, r, w, self._rlock, _, self._sem, self._flag, unwritten = state
        for sock in (r, w):  # blocking, whatever socket.setdefaulttimeout() says (see connection)
            sock.settimeout(None)
        self._unwritten = unwritten._semlock
        self._maxsize = maxsize or 0
        self._rfd = r.fileno()
        self._reader = Reader(r, exact=True)  # every consumer reads this socket, in turn
        self._rwait = _fd.SharedWait(self._rfd, blocking=True)  # one waiter: the reader lock's holder
        self._closed = False
        self._close_reader = weakref.finalize(self, _fd.close_socket, r)
        self._new_feeder()
        util.register_after_fork(self, _Queue._new_feeder)

    def _new_feeder(self) -> None:
        """This process's feeder (a forked child starts its own: threads do not fork)."""
        _, _, w, _, wlock, _, _, unwritten = self._state
        self._feeder = feeder = _Feeder(w, wlock._semlock, unwritten._semlock)
        util.Finalize(self, feeder.at_end, exitpriority=-5)

    # -- state ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r} is closed")

    def _shut(self) -> bool:
        return bool(self._flag.value)

    def close(self) -> None:
        """This process puts and gets no more; buffered puts are still written out."""
        if not self._closed:
            self._closed = True
            self._feeder.close()
            self._close_reader()

    def join_thread(self) -> None:
        """Wait until this process's buffered puts are written (after ``close``)."""
        if not self._closed:
            raise ValueError("join_thread() needs close() first")
        self._feeder.join()

    def cancel_join_thread(self) -> None:
        """Let this process exit without waiting for its buffered puts to be written."""
        self._feeder.join_at_exit = False

    def shutdown(self) -> None:
        """Shut the queue down for every process.

        Puts raise ``QueueShutDown`` from now on; consumers get the items already
        put, then ``QueueShutDown`` (and ``async for`` ends).
        """
        self._check_open()
        if self._flag.value:
            return
        self._flag.value = 1
        self._feeder.put(_SHUTDOWN, counted=False)
        self._free_place()  # a put waiting for room wakes, sees the flag, passes it on

    # -- putting -------------------------------------------------------------------

    def _before_put(self) -> None:
        pass

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj``, waiting up to ``timeout`` for room if the queue is full.

        Raises ``queue.Full`` when no room came, ``QueueShutDown`` after
        ``shutdown()``.
        """
        check_block(block)
        timeout = blocking_timeout(timeout)
        self._check_open()
        if self._flag.value:
            raise QueueShutDown
        data = _serialize.frame_of(obj)
        sem = self._sem
        if sem is not None:
            if not sem.acquire(block, timeout):
                raise queue.Full
            if self._flag.value:
                self._free_place()
                raise QueueShutDown
        self._before_put()
        self._feeder.put(data)

    async def aput(self, obj: Any, timeout: float | None = None) -> None:
        """Put ``obj``, awaiting room for up to ``timeout`` seconds if the queue is full.

        Raises ``queue.Full`` when no room came, ``QueueShutDown`` after
        ``shutdown()``. A negative timeout counts as 0, as in ``put``. If
        cancelled, nothing was put.
        """
        timeout = blocking_timeout(timeout)
        self._check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._flag.value:
            raise QueueShutDown
        data = await _aencode(obj)
        sem = self._sem
        if sem is None:
            await anyio.lowlevel.checkpoint()  # a put loop never starves the loop
        else:
            if not await sem.aacquire(timeout):  # yields first
                raise queue.Full
            if self._flag.value:
                self._free_place()
                raise QueueShutDown
        self._before_put()
        self._feeder.put(data)

    # -- getting -------------------------------------------------------------------

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return an item, waiting up to ``timeout`` for one.

        Raises ``queue.Empty`` when none came, ``QueueShutDown`` once the queue
        is shut down and drained.
        """
        check_block(block)
        timeout = blocking_timeout(timeout)
        self._check_open()
        deadline = _fd.deadline_after(timeout if block else 0)
        if not self._rlock.acquire(block, timeout):
            raise queue.Empty
        try:
            data = self._take(block, deadline)
        finally:
            self._rlock.release()
        return self._decode(data)

    async def aget(self, timeout: float | None = None) -> Any:
        """Remove and return an item, awaiting one for up to ``timeout`` seconds.

        Raises ``queue.Empty`` when none came, ``QueueShutDown`` once the queue
        is shut down and drained. A negative timeout counts as 0, as in ``get``.
        A cancelled ``aget`` loses no item.
        """
        timeout = blocking_timeout(timeout)
        self._check_open()
        deadline = None if timeout is None else anyio.current_time() + timeout
        if not await self._rlock.aacquire(timeout):  # yields first: a get loop never starves the loop
            raise queue.Empty
        handed_over: list[bool] = []
        try:
            data = await self._atake(deadline, handed_over)
        finally:
            if not handed_over:
                self._rlock.release()
        if data.nbytes() < _serialize.LARGE and not data.fds:
            return self._decode(data)
        self._check_marker(data)
        done: list[Any] = []
        try:
            obj = await anyio.to_thread.run_sync(_keep, done, _serialize.decode, data)
        except anyio.get_cancelled_exc_class():
            # Back at the end of the queue, its place still taken.
            self._feeder.put(_serialize.frame_of(done[0]) if done else data.resend())
            raise
        except BaseException:
            self._free_place()
            raise
        self._free_place()
        return obj

    def _unwritten_left(self) -> bool:
        return bool(self._unwritten._get_value())

    def _take(self, block: bool, deadline: float | None) -> Any:
        """The next message, with the reader lock held; ``queue.Empty`` at the deadline.

        The end marker is held back while puts accepted before the shutdown are
        still on their way to the pipe (in some process's feeder): the next item
        is returned instead, and the marker put back behind it.
        """
        held = False
        while True:
            until = deadline
            if held:
                recheck = time.monotonic() + _RECHECK
                until = recheck if deadline is None else min(deadline, recheck)
            try:
                data = self._read_blocking(block or held, until)
            except BaseException:
                if held:
                    self._feeder.put(_SHUTDOWN, counted=False)
                raise
            if data is None:
                if held:
                    if not self._unwritten_left():
                        return _SHUTDOWN  # drained: the caller passes the marker on
                    if deadline is None or time.monotonic() < deadline:
                        continue
                    self._feeder.put(_SHUTDOWN, counted=False)
                raise queue.Empty
            if len(data) == 0 and self._unwritten_left():
                if not block:
                    self._feeder.put(_SHUTDOWN, counted=False)
                    raise queue.Empty
                held = True
                continue
            if held and len(data):
                self._feeder.put(_SHUTDOWN, counted=False)  # behind the item
            return data

    def _read_blocking(self, forever: bool, until: float | None) -> Any:
        reader, fd = self._reader, self._rfd
        if forever and until is None:
            while (data := reader.read(True)) is None:
                _fd.block_until(fd, False, None)  # an event loop made it non-blocking
            return data
        while (data := reader.read(False)) is None:
            if reader.in_frame:
                _fd.block_until(fd, False, None)  # finish what has begun
            elif not _fd.block_until(fd, False, until):
                return None
        return data

    async def _atake(self, deadline: float | None, handed_over: list[bool]) -> Any:
        """``_take`` for ``aget``: same rules, awaited (deadline in ``anyio.current_time()``)."""
        held = False
        while True:
            until = deadline
            if held:
                recheck = anyio.current_time() + _RECHECK
                until = recheck if deadline is None else min(deadline, recheck)
            try:
                data = await self._aread(until, handed_over)
            except BaseException:
                if held:
                    self._feeder.put(_SHUTDOWN, counted=False)  # a cancelled holder passes it on
                raise
            if data is None:
                if held:
                    if not self._unwritten_left():
                        return _SHUTDOWN
                    if deadline is None or anyio.current_time() < deadline:
                        continue
                    self._feeder.put(_SHUTDOWN, counted=False)
                raise queue.Empty
            if len(data) == 0 and self._unwritten_left():
                held = True
                continue
            if held and len(data):
                self._feeder.put(_SHUTDOWN, counted=False)
            return data

    async def _aread(self, until: float | None, handed_over: list[bool]) -> Any:
        reader = self._reader
        while (data := reader.read(False)) is None:
            if reader.in_frame:
                try:
                    await self._rwait.wait()
                except BaseException:
                    self._rescue()  # finishes the message; its thread releases the reader lock
                    handed_over.append(True)
                    raise
                continue
            remaining = None if until is None else until - anyio.current_time()
            if remaining is not None and remaining <= 0:
                return None
            with anyio.move_on_after(remaining):
                await self._rwait.wait()
        return data

    def _rescue(self) -> None:
        """Finish a message whose ``aget`` was cancelled, and put it back, in a thread."""
        reader, rlock, feeder, rfd = self._reader, self._rlock, self._feeder, self._rfd

        def finish() -> None:
            try:
                while (data := reader.read(True)) is None:
                    _fd.block_until(rfd, False, None)
                feeder.put(data.resend())
            finally:
                rlock.release()

        threading.Thread(target=finish, name="aiomp-queue-rescue", daemon=True).start()

    def _check_marker(self, data: Any) -> None:
        if len(data) == 0:  # the end marker
            if not self._closed:
                self._feeder.put(_SHUTDOWN, counted=False)  # for the next consumer
            raise QueueShutDown

    def _decode(self, data: Any) -> Any:
        self._check_marker(data)
        try:
            return _serialize.decode(data)
        finally:
            self._free_place()

    def _free_place(self) -> None:
        if self._sem is not None:
            with contextlib.suppress(ValueError):  # an unbounded queue at its count's ceiling
                self._sem.release()

    def empty(self) -> bool:
        """True if no item is waiting in the pipe (a snapshot, as in the standard library)."""
        self._check_open()
        return not (self._reader.in_frame or _fd.block_until(self._rfd, False, _fd.deadline_after(0)))

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.aget()
        except QueueShutDown:
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        state = " closed" if self._closed else " shut down" if self._shut() else ""
        return f"<aiomp.{type(self).__name__}{state}>"


class Queue(_Queue):
    """A FIFO queue shared between processes (``multiprocessing.Queue``).

    The standard library's blocking methods in every process, plus ``await
    aput(obj, timeout=None)``, ``await aget(timeout=None)``, ``shutdown()`` and
    ``async for item in queue`` (which ends at shutdown). ``maxsize <= 0`` means
    unbounded; otherwise ``put``/``aput`` wait for room.
    """

    def __init__(self, maxsize: int = 0) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if maxsize > SEM_VALUE_MAX:
            raise ValueError(f"maxsize must be at most {SEM_VALUE_MAX}, not {maxsize}")
        super().__init__(maxsize if maxsize > 0 else 0)

    def qsize(self) -> int:
        """The approximate number of items in the queue."""
        assert self._sem is not None
        return max(0, (self._maxsize or _SEM_MAX) - int(self._sem.get_value()))

    def full(self) -> bool:
        """True if a put would have to wait for room."""
        assert self._sem is not None
        return bool(self._sem.get_value() == 0)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)


class JoinableQueue(Queue):
    """A ``Queue`` that counts unfinished items (``multiprocessing.JoinableQueue``).

    Consumers call ``task_done()`` per item; ``join()`` blocks and ``await
    ajoin()`` awaits until every item put has been marked done.
    """

    def __init__(self, maxsize: int = 0) -> None:
        super().__init__(maxsize)  # checks maxsize before anything is made
        self._unfinished: Any = _CTX.Semaphore(0)
        self._cond = Condition(Lock())

    def __getstate__(self) -> tuple[Any, ...]:
        return (*super().__getstate__(), self._unfinished, self._cond)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        *base, self._unfinished, self._cond = state
        super().__setstate__(tuple(base))

    def _before_put(self) -> None:
        self._unfinished.release()

    def task_done(self) -> None:
        """Mark one item as processed; ``ValueError`` if called more times than items put."""
        with self._cond:
            if not self._unfinished.acquire(False):
                raise ValueError("task_done() called too many times")
            if self._unfinished._semlock._is_zero():
                self._cond.notify_all()

    def join(self) -> None:
        """Block until every item put has been marked done."""
        with self._cond:
            self._cond.wait_for(self._unfinished._semlock._is_zero)

    async def ajoin(self) -> None:
        """Await every item put being marked done."""
        async with self._cond:
            await self._cond.await_for(self._unfinished._semlock._is_zero)


class SimpleQueue(_Queue):
    """An unbounded queue shared between processes (``multiprocessing.SimpleQueue``).

    ``put``/``get``/``empty``/``close`` in every process, plus ``await aput(obj)``,
    ``await aget(timeout=None)``, ``shutdown()`` and ``async for``.
    """

    def __init__(self) -> None:
        super().__init__(None)


for _cls in (JoinableQueue, Queue, SimpleQueue):
    _cls.__module__ = "aiomp"  # reprs name the public package
del _cls
