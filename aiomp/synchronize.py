"""Locks, semaphores, events, conditions and barriers shared between processes.

Each keeps the standard library's blocking methods, so code running in a worker
is plain ``multiprocessing`` code, and adds awaitable twins for the event loop:
``await lock.aacquire()``, ``async with lock:``, ``await event.await_()``,
``await cond.await_for(...)``, ``await barrier.await_()``.

The state lives in POSIX semaphores, as in the standard library; how an event
loop awaits them without a thread or a polling loop is told in ``_doorbell``.
Like the standard library's, these objects reach other processes by inheritance:
as arguments of a ``Process`` or the ``initargs`` of a ``Pool``.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.synchronize
import sys
import threading
from collections.abc import Callable
from multiprocessing import context, sharedctypes
from types import TracebackType
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from ._checks import (
    blocking_timeout,
    check_block,
    check_timeout,
    clamp_timeout,
    non_negative_int,
    positive_int,
    semaphore_value,
)
from ._doorbell import Doorbell, acquire_async

__all__ = ["Barrier", "BoundedSemaphore", "Condition", "Event", "Lock", "RLock", "Semaphore"]

T = TypeVar("T")

# Named semaphores (the spawn context's kind) can be reopened by a child started
# by any start method, so one primitive serves every context.
_CTX = multiprocessing.get_context("spawn" if sys.platform != "win32" else None)


class _SemBase:
    """A SemLock with an awaitable acquire: the shared core of the locks and semaphores."""

    _sem: Any
    _waiters: Any

    def _setup(self, std: Any, waiters: Any, bell: Doorbell) -> None:
        self._std, self._waiters_std, self._bell = std, waiters, bell
        self._sem = std._semlock
        self._waiters = waiters._semlock
        self._try = functools.partial(self._sem.acquire, False)

    def __getstate__(self) -> tuple[Any, ...]:
        context.assert_spawning(self)
        return self._std, self._waiters_std, self._bell

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._setup(*state)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take a unit, blocking the calling thread up to ``timeout`` seconds; True if taken."""
        check_block(block)
        timeout = blocking_timeout(timeout)
        return bool(self._sem.acquire(block, timeout))

    def release(self) -> None:
        """Give a unit back, waking a blocked or awaiting waiter in any process."""
        self._sem.release()
        if self._waiters._get_value():
            self._bell.ring()

    async def aacquire(self, timeout: float | None = None) -> bool:
        """Await a unit for up to ``timeout`` seconds (None: no limit); True if taken.

        Waits without blocking the event loop, without a thread and without
        polling. A negative timeout counts as 0, as in ``acquire``. If cancelled,
        nothing is taken.
        """
        timeout = blocking_timeout(timeout)
        return await acquire_async(self._try, self._sem._get_value, self._waiters, self._bell, timeout)

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    async def __aenter__(self) -> bool:
        return await self.aacquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    # The protocol Condition uses to let go of its lock while waiting.
    def _is_owned(self) -> bool:
        return bool(self._sem._is_mine())

    def _release_save(self) -> Any:
        self.release()
        return None

    def _acquire_restore(self, state: Any) -> None:
        self._sem.acquire()

    async def _aacquire_restore(self, state: Any) -> None:
        await self.aacquire()


class Semaphore(_SemBase):
    """A counting semaphore shared between processes (``multiprocessing.Semaphore``).

    ``acquire``/``release`` in any process; ``await aacquire(timeout=None)`` and
    ``async with`` on an event loop.
    """

    def __init__(self, value: int = 1) -> None:
        semaphore_value("value", value)
        self._setup(_CTX.Semaphore(value), _CTX.Semaphore(0), Doorbell())

    def get_value(self) -> int:
        """The number of free units (not available on macOS, as in the standard library)."""
        return int(self._sem._get_value())

    def __repr__(self) -> str:
        try:
            value = self._sem._get_value()
        except Exception:  # pragma: no cover - macOS
            value = "unknown"
        return f"<aiomp.{type(self).__name__}(value={value})>"


class BoundedSemaphore(Semaphore):
    """A semaphore whose ``release`` raises ``ValueError`` above its initial value."""

    def __init__(self, value: int = 1) -> None:
        semaphore_value("value", value)
        self._setup(_CTX.BoundedSemaphore(value), _CTX.Semaphore(0), Doorbell())


class Lock(_SemBase):
    """A non-recursive lock shared between processes (``multiprocessing.Lock``).

    Any process or task may release it. ``async with lock:`` excludes other
    processes and other tasks of the same event loop alike.
    """

    def __init__(self) -> None:
        self._setup(_CTX.Lock(), _CTX.Semaphore(0), Doorbell())

    def __repr__(self) -> str:
        try:
            state = "unlocked" if self._sem._get_value() else "locked"
        except Exception:  # pragma: no cover - macOS
            state = "unknown"
        return f"<aiomp.Lock({state})>"


class RLock(_SemBase):
    """A recursive lock shared between processes (``multiprocessing.RLock``).

    Blocking ``acquire`` is recursive per thread, as in the standard library. On
    an event loop it is recursive per task: ``async with rlock:`` in two tasks of
    one loop exclude each other, and a task may re-enter its own lock.
    """

    def __init__(self) -> None:
        self._setup(_CTX.RLock(), _CTX.Semaphore(0), Doorbell())

    def _setup(self, std: Any, waiters: Any, bell: Doorbell) -> None:
        super()._setup(std, waiters, bell)
        self._owner: object = None  # the task holding it through aacquire, in this process

    async def aacquire(self, timeout: float | None = None) -> bool:
        """Await the lock for up to ``timeout`` seconds; True if taken.

        Re-entering from the task that holds it succeeds at once. If cancelled,
        nothing is taken.
        """
        timeout = blocking_timeout(timeout)
        me = _current_task()
        if self._owner == me and self._sem.acquire(False):
            return True
        return await acquire_async(
            functools.partial(self._try_for, me), self._sem._get_value, self._waiters, self._bell, timeout
        )

    def _try_for(self, task: object) -> bool:
        if self._owner is not None or not self._sem.acquire(False):
            return False
        self._owner = task
        return True

    def release(self) -> None:
        """Release one level; the last level wakes a waiter in any process.

        Raises ``AssertionError`` (as the standard library does) if this thread
        does not hold the lock.
        """
        self._sem.release()
        if not self._sem._count():
            self._owner = None
        if self._waiters._get_value():
            self._bell.ring()

    def _release_save(self) -> Any:
        depth, owner = self._sem._count(), self._owner
        for _ in range(depth):
            self.release()
        return depth, owner

    def _acquire_restore(self, state: Any) -> None:
        for _ in range(state[0]):
            self._sem.acquire()

    async def _aacquire_restore(self, state: Any) -> None:
        await self.aacquire()
        for _ in range(state[0] - 1):
            self._sem.acquire(False)  # recursive: this thread holds it

    def __repr__(self) -> str:
        try:
            held = "locked" if not self._sem._get_value() else "unlocked"
        except Exception:  # pragma: no cover - macOS
            held = "unknown"
        return f"<aiomp.RLock({held}, depth in this process={self._sem._count()})>"


def _current_task() -> object:
    return anyio.get_current_task().id


class Condition:
    """A condition variable shared between processes (``multiprocessing.Condition``).

    ``lock`` is an ``aiomp.Lock`` or ``aiomp.RLock`` (a new ``RLock`` by default).
    ``wait``/``wait_for``/``notify``/``notify_all`` in any process; ``await
    await_()`` and ``await await_for(predicate)`` on an event loop, inside ``async
    with cond:``.

    As in the standard library, a notification wakes waiters that were waiting
    when it was sent: a waiter that arrives later never takes it. A cancelled
    ``await_`` takes its lock back before it raises, and if it had been woken it
    passes its wake-up on to another waiter.

    How: waiters count themselves in (``slots``) and sleep on a semaphore
    (``wake``); ``notify`` turns slots into wake-ups. A waiter that takes a
    wake-up says so (``acks``), before it takes the lock back. A waiter may
    start sleeping only once every wake-up released so far has been taken (it
    collects the acks, holding the lock, so no notify comes meanwhile): the
    standard library's notify waits for those acks itself, which an event loop
    cannot do. A waiter that stops waiting without a wake-up (timeout,
    cancellation) takes back its slot, or, if every waiter left has been
    notified, the wake-up that is then on its way to it; so counts stay exact and
    nothing is swallowed.
    """

    def __init__(self, lock: Lock | RLock | None = None) -> None:
        if lock is None:
            lock = RLock()
        elif not isinstance(lock, (Lock, RLock)):
            raise TypeError(f"lock must be an aiomp.Lock, an aiomp.RLock or None, not {type(lock).__name__}")
        # Invariant: slots + wake-ups released and not yet taken == waiters that have neither
        # a slot back nor a wake-up; owed (under the lock) == wake-ups released, acks not yet counted.
        self.__setstate__((lock, _CTX.Semaphore(0), Semaphore(0), Semaphore(0), sharedctypes.RawValue("i", 0)))

    def __getstate__(self) -> tuple[Any, ...]:
        context.assert_spawning(self)
        return self._lock, self._slots_std, self._wake, self._acks, self._owed

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._lock: Lock | RLock = state[0]
        self._slots_std: Any = state[1]
        self._wake: Semaphore = state[2]
        self._acks: Semaphore = state[3]
        self._owed: Any = state[4]
        self._slots: Any = self._slots_std._semlock
        self.acquire = self._lock.acquire
        self.release = self._lock.release
        self.aacquire = self._lock.aacquire

    def __enter__(self) -> bool:
        return self._lock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.__exit__()

    async def __aenter__(self) -> bool:
        return await self._lock.aacquire()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._lock.release()

    def _check_owned(self, what: str) -> None:
        if not self._lock._is_owned():
            raise RuntimeError(f"cannot {what} on un-acquired lock")

    def _sleeping(self) -> int:
        """How many waiters are waiting and not yet notified (a snapshot)."""
        return int(self._slots._get_value())

    def _count_acks(self) -> None:
        """Count the wake-ups taken since the last look (the lock is held)."""
        acks = self._acks._sem
        while self._owed.value > 0 and acks.acquire(False):
            self._owed.value -= 1

    def _leave(self) -> bool:
        """A waiter stops waiting without a wake-up in hand; True if one was owed to it.

        It takes back a slot if one is left. If none is, every waiter still counted
        has been notified, so a wake-up is released (or about to be, by a notify in
        progress) for each of them, this one included, and nobody else may take it.
        """
        if self._slots.acquire(False):
            return False
        self._wake._sem.acquire()  # comes at once: see above
        return True

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, block until notified or ``timeout``, retake the lock.

        Returns False if the timeout expired, True otherwise. A negative timeout
        counts as 0.
        """
        timeout = blocking_timeout(timeout)
        self._check_owned("wait")
        deadline = None if timeout is None else _monotonic() + timeout
        self._count_acks()
        while self._owed.value > 0:  # wake-ups sent before I came are not mine: let them be taken
            if not self._acks._sem.acquire(True, _remaining(deadline, _monotonic)):
                return False
            self._owed.value -= 1
        self._slots.release()
        state = self._lock._release_save()
        woken = False
        try:
            woken = bool(self._wake._sem.acquire(True, _remaining(deadline, _monotonic)))
        finally:
            try:
                if not woken:
                    woken = self._leave()
                if woken:
                    self._acks.release()
            finally:
                self._lock._acquire_restore(state)
        return woken

    async def await_(self, timeout: float | None = None) -> bool:
        """Release the lock, await a notification or ``timeout``, retake the lock.

        Returns False if the timeout expired, True otherwise. A negative timeout
        counts as 0. If cancelled, it retakes the lock before it raises, and a
        wake-up it had received goes to another waiter.
        """
        timeout = blocking_timeout(timeout)
        self._check_owned("wait")
        deadline = None if timeout is None else anyio.current_time() + timeout
        self._count_acks()
        while self._owed.value > 0:  # wake-ups sent before I came are not mine: let them be taken
            if not await self._acks.aacquire(_remaining(deadline, anyio.current_time)):
                return False
            self._owed.value -= 1
        self._slots.release()
        state = self._lock._release_save()
        woken = False
        error: BaseException | None = None
        try:
            woken = await self._wake.aacquire(_remaining(deadline, anyio.current_time))
        except BaseException as exc:  # a cancellation, most likely: raised once the lock is back
            error = exc
        woken, late = await self._arejoin(woken, state)
        error = error or late
        if error is None:
            try:  # a cancellation that came while the lock was being retaken is raised now
                await anyio.lowlevel.checkpoint_if_cancelled()
            except BaseException as exc:
                error = exc
        if error is not None:
            if woken:
                self.notify(1)  # a wake-up this waiter will not use: pass it on
            try:
                raise error
            finally:
                del error
        return woken

    async def _arejoin(self, woken: bool, state: Any) -> tuple[bool, BaseException | None]:
        """Leave the wait and retake the lock, whatever is cancelled meanwhile.

        Returns whether this waiter was woken, and a cancellation that arrived
        while it could not be honoured (to raise once the lock is back).
        """
        pending: BaseException | None = None
        need_unit = not woken and not self._slots.acquire(False)
        acked = False
        with anyio.CancelScope(shield=True):  # asyncio's Task.cancel() still comes through: retried below
            locked = False
            while not locked:
                try:
                    if need_unit and not woken:
                        woken = await self._wake.aacquire()  # comes at once: see _leave
                    if woken and not acked:
                        self._acks.release()
                        acked = True
                    await self._lock._aacquire_restore(state)  # takes nothing if cancelled
                    locked = True
                except anyio.get_cancelled_exc_class() as cancelled:
                    pending = cancelled
        return woken, pending

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Block until ``predicate()`` is true or ``timeout``; return its last value."""
        _check_predicate(predicate)
        timeout = blocking_timeout(timeout)
        deadline = None if timeout is None else _monotonic() + timeout
        result = predicate()
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - _monotonic()
                if remaining <= 0:
                    break
            self.wait(remaining)
            result = predicate()
        return result

    async def await_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Await until ``predicate()`` is true or ``timeout``; return its last value."""
        _check_predicate(predicate)
        timeout = blocking_timeout(timeout)
        deadline = None if timeout is None else anyio.current_time() + timeout
        result = predicate()
        while not result:
            remaining = None
            if deadline is not None:
                remaining = deadline - anyio.current_time()
                if remaining <= 0:
                    break
            await self.await_(remaining)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` of the waiters waiting now, in any process. The lock must be held.

        Never blocks: the woken waiters take their wake-ups when they run.
        """
        non_negative_int("n", n)
        self._check_owned("notify")
        self._count_acks()
        slots, owed, wake = self._slots, self._owed, self._wake
        for _ in range(n):  # n may be sys.maxsize: stops at the last waiter
            if not slots.acquire(False):
                break
            owed.value += 1
            wake.release()

    def notify_all(self) -> None:
        """Wake every waiter waiting now. The lock must be held."""
        self.notify(sys.maxsize)

    def __repr__(self) -> str:
        return f"<aiomp.Condition({self._lock!r}, waiting={self._sleeping()})>"


def _remaining(deadline: float | None, now: Callable[[], float]) -> float | None:
    return None if deadline is None else max(0.0, deadline - now())


def _check_predicate(predicate: object) -> None:
    if not callable(predicate):
        raise TypeError(f"predicate must be callable, not {type(predicate).__name__}")


def _monotonic() -> float:
    import time

    return time.monotonic()


class Event:
    """An event flag shared between processes (``multiprocessing.Event``).

    ``set``/``clear``/``is_set``/``wait`` in any process; ``await await_()`` on an
    event loop.
    """

    def __init__(self) -> None:
        self.__setstate__((Condition(Lock()), sharedctypes.RawValue("i", 0)))

    def __getstate__(self) -> tuple[Any, ...]:
        context.assert_spawning(self)
        return self._cond, self._flag

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._cond, self._flag = state

    def is_set(self) -> bool:
        """True once ``set`` and until ``clear``."""
        return bool(self._flag.value)

    def set(self) -> None:
        """Set the flag and wake every waiter, in every process."""
        with self._cond:
            self._flag.value = 1
            self._cond.notify_all()

    def clear(self) -> None:
        """Reset the flag."""
        with self._cond:
            self._flag.value = 0

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout``; return the flag."""
        timeout = blocking_timeout(timeout)
        with self._cond:
            if not self._flag.value:
                self._cond.wait(timeout)
            return bool(self._flag.value)

    async def await_(self, timeout: float | None = None) -> bool:
        """Await the flag being set, up to ``timeout`` seconds; return the flag."""
        timeout = blocking_timeout(timeout)
        async with self._cond:
            if not self._flag.value:
                await self._cond.await_(timeout)
            return bool(self._flag.value)

    def __repr__(self) -> str:
        return f"<aiomp.Event({'set' if self.is_set() else 'unset'})>"


class Barrier(threading.Barrier):
    """A barrier for ``parties`` processes or tasks (``multiprocessing.Barrier``).

    ``wait`` in any process, ``await await_()`` on an event loop; both return the
    arrival index. ``action`` runs in the last party to arrive. A cancelled
    ``await_`` withdraws its arrival (the barrier is not broken); a timeout breaks
    the barrier, as in the standard library.
    """

    def __init__(self, parties: int, action: Callable[[], object] | None = None, timeout: float | None = None) -> None:
        positive_int("parties", parties)
        if action is not None and not callable(action):
            raise TypeError(f"action must be callable or None, not {type(action).__name__}")
        check_timeout(timeout)  # a default limit is a setting, not a time left: negative is refused
        timeout = blocking_timeout(timeout)  # inf: no default limit
        state = sharedctypes.RawArray("i", 2)  # [state, count], guarded by the condition
        self.__setstate__((parties, action, timeout, Condition(Lock()), state))

    def __getstate__(self) -> tuple[Any, ...]:
        context.assert_spawning(self)
        return self._parties, self._action, self._timeout, self._cond, self._array

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self._parties, self._action, self._timeout, self._cond, self._array = state

    @property
    def _state(self) -> int:
        return int(self._array[0])

    @_state.setter
    def _state(self, value: int) -> None:
        self._array[0] = value

    @property
    def _count(self) -> int:
        return int(self._array[1])

    @_count.setter
    def _count(self, value: int) -> None:
        self._array[1] = value

    def wait(self, timeout: float | None = None) -> int:
        """Block until all parties have arrived; return this arrival's index.

        A negative timeout counts as 0; None means the barrier's default.
        """
        timeout = clamp_timeout(timeout)  # inf is left as it is (no limit): None would mean the barrier's default
        return super().wait(timeout)

    async def await_(self, timeout: float | None = None) -> int:
        """Await all parties, up to ``timeout`` (default: the barrier's); return the index.

        Raises ``threading.BrokenBarrierError`` if the barrier breaks or times out.
        A negative timeout counts as 0.
        """
        timeout = clamp_timeout(timeout)
        if timeout is None:
            timeout = self._timeout
        async with self._cond:
            while self._state in (-1, 1):  # draining or resetting
                await self._cond.await_()
            if self._state < 0:
                raise threading.BrokenBarrierError
            index = self._count
            self._count = index + 1
            try:
                if index + 1 == self._parties:
                    self._release()  # type: ignore[attr-defined]
                else:
                    if not await self._cond.await_for(lambda: self._state != 0, timeout):
                        self._break()  # type: ignore[attr-defined]
                        raise threading.BrokenBarrierError
                    if self._state < 0:
                        raise threading.BrokenBarrierError
                return index
            finally:
                self._count -= 1
                self._exit()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"<aiomp.Barrier(parties={self._parties}, waiting={self._count})>"


for _cls in (Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore):
    _cls.__module__ = "aiomp"  # reprs name the public package
del _cls
