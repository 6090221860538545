"""aiomp's Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier."""

from __future__ import annotations

import math
import multiprocessing
import random
import threading
import time
from typing import Any

import anyio
import pytest

import aiomp

from . import _prims
from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

ASYNCIO_BACKENDS = [param for param in BACKENDS if param.id != "trio"]


LOCKS = ["Lock", "RLock", "Semaphore", "BoundedSemaphore"]


def _make(kind: str) -> Any:
    return getattr(aiomp, kind)()


async def _hold_in_child(lock: Any) -> tuple[Any, Any]:
    """Start a child that holds ``lock`` until the returned event is set."""
    ready, release = aiomp.Event(), aiomp.Event()
    holder = aiomp.Process(target=_prims.hold_until, args=(lock, ready, release))
    await holder.start()
    assert await ready.await_(timeout=20), "the child never took the lock"
    return holder, release


async def _child_can_acquire(lock: Any, timeout: float = 5) -> bool:
    async with aiomp.Process(target=_prims.try_acquire, args=(lock, timeout)) as p:
        pass
    return p.exitcode == 0


# -- Lock and RLock: the blocking API ----------------------------------------------------------


def test_lock_blocking_api() -> None:
    lock = aiomp.Lock()
    assert lock.acquire() is True
    assert lock.acquire(False) is False
    assert lock.acquire(timeout=0.05) is False
    lock.release()
    with pytest.raises(ValueError):
        lock.release()  # released more often than acquired, as in multiprocessing
    with lock:
        assert lock.acquire(block=False) is False
    assert lock.acquire(timeout=1)
    lock.release()


def test_rlock_blocking_api() -> None:
    rlock = aiomp.RLock()
    with rlock, rlock:
        assert rlock.acquire(timeout=1)
        rlock.release()
    assert rlock.acquire(False)
    rlock.release()


# -- the awaitable API -------------------------------------------------------------------------


async def test_aacquire_returns_true_or_false() -> None:
    lock = aiomp.Lock()
    with anyio.fail_after(10):
        assert await lock.aacquire() is True
        started = time.monotonic()
        assert await lock.aacquire(timeout=0.1) is False
        assert 0.08 < time.monotonic() - started < 3
        assert await lock.aacquire(timeout=0) is False
        lock.release()
        assert await lock.aacquire(timeout=0) is True
        lock.release()
        async with lock:
            assert lock.acquire(False) is False
        assert lock.acquire(False) is True
        lock.release()


@pytest.mark.parametrize("kind", LOCKS)
async def test_tasks_in_one_process_exclude_each_other(kind: str) -> None:
    lock = _make(kind)
    inside = 0
    most = 0
    entries = 0

    async def worker() -> None:
        nonlocal inside, most, entries
        for _ in range(5):
            async with lock:
                inside += 1
                entries += 1
                most = max(most, inside)
                await anyio.sleep(0.002)
                inside -= 1

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(worker)
    assert entries == 25
    assert most == 1, f"{most} tasks held the {kind} at once"


async def test_rlock_is_reentrant_for_one_task_only() -> None:
    rlock = aiomp.RLock()
    with anyio.fail_after(20):
        async with rlock, rlock:
            assert await rlock.aacquire(timeout=1)
            rlock.release()

            async def other() -> bool:
                return bool(await rlock.aacquire(timeout=0.2))

            result: list[bool] = []
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    result.append(await other())

                tg.start_soon(run)
            assert result == [False], "another task entered an RLock the first task holds"
            assert not await _child_can_acquire(rlock, 0.2)
        assert await _child_can_acquire(rlock)


async def test_aacquire_waits_for_a_child_without_blocking_the_loop() -> None:
    """The child holds the lock until the loop has ticked 50 times while aacquire waited."""
    lock = aiomp.Lock()
    with anyio.fail_after(20):
        holder, release = await _hold_in_child(lock)
        assert await lock.aacquire(timeout=0.05) is False
        acquired, max_gap, ticks, released_first = await _prims.while_ticking_then(lock.aacquire, release.set)
        assert acquired is True
        lock.release()
        await holder.join()
    assert released_first, "aacquire returned while the child still held the lock"
    assert ticks >= 50
    # A blocking acquire would stall the loop until the 20 s way out: the bound is generous.
    assert max_gap < 0.5, f"the loop stalled for {max_gap:.3f} s"


async def test_child_waits_for_the_parent() -> None:
    lock = aiomp.Lock()
    with anyio.fail_after(20):
        async with lock:
            assert not await _child_can_acquire(lock, 0.2)
        assert await _child_can_acquire(lock)


# -- cancellation ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Lock", "RLock", "Semaphore"])
async def test_cancelled_aacquire_leaves_the_lock_unheld(kind: str) -> None:
    lock = _make(kind)
    with anyio.fail_after(30):
        holder, release = await _hold_in_child(lock)
        with anyio.move_on_after(0.1) as scope:
            await lock.aacquire()
        assert scope.cancelled_caught
        with anyio.move_on_after(0.1) as scope:
            async with lock:
                pytest.fail("entered a lock that a child holds")
        assert scope.cancelled_caught
        release.set()
        await holder.join()
        assert holder.exitcode == 0
        assert await _child_can_acquire(lock, 2), "a cancelled aacquire kept the lock"
        assert await lock.aacquire(timeout=2)
        lock.release()


async def test_cancelled_aacquire_in_same_process() -> None:
    lock = aiomp.Lock()
    with anyio.fail_after(20):
        lock.acquire()
        with anyio.move_on_after(0.2) as scope:
            await lock.aacquire()
        assert scope.cancelled_caught
        lock.release()
        assert await _child_can_acquire(lock, 2)
        scope = anyio.CancelScope()
        scope.cancel()
        with scope:
            await lock.aacquire()
        if not scope.cancelled_caught:  # it may take a free lock before the checkpoint
            lock.release()
        assert await _child_can_acquire(lock, 2)


@pytest.mark.parametrize("kind", ["Lock", "RLock"])
async def test_aacquire_cancelled_at_random_moments(kind: str) -> None:
    """A child takes and releases the lock in a loop while the parent's attempts keep being cancelled."""
    lock = _make(kind)
    rng = random.Random(4)
    entered = cancelled = 0
    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.toggle_lock, args=(lock, 80, 0.002)) as child:
            while child.is_alive():
                with anyio.move_on_after(rng.choice([0, 0.0002, 0.001, 0.002, 0.004])) as scope:
                    async with lock:
                        entered += 1
                        await anyio.sleep(0)
                cancelled += scope.cancelled_caught
        assert child.exitcode == 0, "the child got stuck: a cancelled acquire kept the lock"
        assert await _child_can_acquire(lock, 2)
    assert entered > 0 and cancelled > 0


@pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)
async def test_asyncio_task_cancel(anyio_backend: Any) -> None:
    """asyncio.Task.cancel is asyncio's own: asyncio and uvloop only."""
    lock, event, cond, barrier = aiomp.Lock(), aiomp.Event(), aiomp.Condition(), aiomp.Barrier(2)
    with anyio.fail_after(30):
        lock.acquire()
        await _prims.cancel_asyncio_task(lock.aacquire())

        async def enter() -> None:
            async with lock:
                pass

        await _prims.cancel_asyncio_task(enter())
        lock.release()
        assert await _child_can_acquire(lock, 2)

        await _prims.cancel_asyncio_task(event.await_())

        async def cond_wait() -> None:
            async with cond:
                await cond.await_()

        await _prims.cancel_asyncio_task(cond_wait())
        assert cond.acquire(timeout=1)
        cond.release()

        async def barrier_wait() -> None:
            await barrier.await_()

        await _prims.cancel_asyncio_task(barrier_wait())


# -- Semaphore and BoundedSemaphore ------------------------------------------------------------


async def test_semaphore_counts() -> None:
    sem = aiomp.Semaphore(2)
    with anyio.fail_after(20):
        assert await sem.aacquire() is True
        assert await sem.aacquire(timeout=1) is True
        assert await sem.aacquire(timeout=0.1) is False
        assert sem.acquire(False) is False
        async with aiomp.Process(target=_prims.release_after, args=(sem, 0.15)):
            assert await sem.aacquire(timeout=10) is True
        sem.release()
        sem.release()
        sem.release()
        sem.release()  # an unbounded semaphore may go above its start value
        for _ in range(4):
            assert await sem.aacquire(timeout=1)
        assert await sem.aacquire(timeout=0) is False


async def test_semaphore_zero_and_many_waiters() -> None:
    sem = aiomp.Semaphore(0)
    woke: list[int] = []

    async def waiter(i: int) -> None:
        async with sem:
            woke.append(i)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(waiter, i)
            await anyio.sleep(0.1)
            assert woke == []
            async with aiomp.Process(target=_prims.release_after, args=(sem, 0.1, 2)):
                pass
    assert sorted(woke) == [0, 1, 2, 3]


def test_bounded_semaphore() -> None:
    sem = aiomp.BoundedSemaphore(2)
    sem.acquire()
    sem.release()
    with pytest.raises(ValueError):
        sem.release()


async def test_bounded_semaphore_async() -> None:
    sem = aiomp.BoundedSemaphore(1)
    with anyio.fail_after(10):
        async with sem:
            assert await sem.aacquire(timeout=0.05) is False
        with pytest.raises(ValueError):
            sem.release()


# -- Event ---------------------------------------------------------------------------------------


async def test_event_api() -> None:
    event = aiomp.Event()
    with anyio.fail_after(10):
        assert not event.is_set()
        assert event.wait(0.01) is False
        started = time.monotonic()
        assert await event.await_(timeout=0.1) is False
        assert 0.08 < time.monotonic() - started < 3
        event.set()
        assert event.is_set()
        assert event.wait(0) is True
        assert await event.await_() is True
        assert await event.await_(timeout=0) is True
        event.clear()
        assert not event.is_set()
        assert await event.await_(timeout=0) is False


async def test_event_set_by_a_child_wakes_every_waiter() -> None:
    event = aiomp.Event()
    woke: list[bool] = []

    async def waiter() -> None:
        woke.append(await event.await_(timeout=15))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(waiter)
            async with aiomp.Process(target=_prims.set_event_after, args=(event, 0.1)):
                pass
    assert woke == [True] * 4


async def test_children_wait_for_the_parents_event() -> None:
    event = aiomp.Event()
    with anyio.fail_after(20):
        children = [aiomp.Process(target=_prims.wait_event, args=(event, 10)) for _ in range(2)]
        for c in children:
            await c.start()
        await anyio.sleep(0.1)
        event.set()
        for c in children:
            await c.join()
    assert [c.exitcode for c in children] == [0, 0]


async def test_cancelled_event_wait_takes_nothing_from_the_others() -> None:
    event = aiomp.Event()
    woke: list[bool] = []

    async def waiter() -> None:
        woke.append(await event.await_(timeout=10))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(waiter)
            with anyio.move_on_after(0.1):
                await event.await_()
            event.set()
    assert woke == [True, True]
    assert event.is_set()


# -- Condition -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lock", [None, "Lock", "RLock"])
async def test_condition_notify_all_from_a_child(lock: str | None) -> None:
    cond = aiomp.Condition(None if lock is None else _make(lock))
    value = aiomp.Value("i", 0)
    woke: list[bool] = []

    async def waiter() -> None:
        async with cond:
            woke.append(await cond.await_for(lambda: value.value > 0, timeout=15))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            async with aiomp.Process(target=_prims.notify_after, args=(cond, value, 0.1, None)):
                pass
    assert woke == [True, True, True]


async def test_condition_notify_counts() -> None:
    cond = aiomp.Condition()
    value = aiomp.Value("i", 0)
    woke: list[bool] = []
    sleeping = aiomp.Semaphore(0)  # released under the lock: once the lock is ours again, they wait
    first = anyio.Event()

    async def waiter() -> None:
        async with cond:
            sleeping.release()
            woke.append(await cond.await_(timeout=15))
            first.set()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            for _ in range(3):
                assert await sleeping.aacquire(timeout=15)
            async with cond:
                assert cond._sleeping() == 3
            async with aiomp.Process(target=_prims.notify_after, args=(cond, value, 0, 1)):
                pass
            await first.wait()
            async with cond:  # the woken one has left; the others still wait, not notified
                assert woke == [True], "notify(1) should wake exactly one waiter"
                assert cond._sleeping() == 2
                cond.notify(2)
    assert woke == [True, True, True]


async def test_condition_await_times_out() -> None:
    cond = aiomp.Condition()
    with anyio.fail_after(10):
        async with cond:
            started = time.monotonic()
            assert await cond.await_(timeout=0.1) is False
            assert await cond.await_for(lambda: False, timeout=0.1) is False
            assert await cond.await_for(lambda: True, timeout=0) is True
            assert 0.15 < time.monotonic() - started < 5
        # the lock is released after the block
        assert cond.acquire(False)
        cond.release()


async def test_cancelled_condition_wait_consumes_no_notification() -> None:
    cond = aiomp.Condition()
    value = aiomp.Value("i", 0)
    woke: list[bool] = []

    async def waiter() -> None:
        async with cond:
            woke.append(await cond.await_(timeout=10))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            with anyio.move_on_after(0.15) as scope:
                async with cond:
                    await cond.await_()
            assert scope.cancelled_caught
            # the cancelled waiter gave the lock back
            assert await _child_can_acquire(cond, 2)
            async with aiomp.Process(target=_prims.notify_after, args=(cond, value, 0, 1)):
                pass
    assert woke == [True]


async def test_parent_notifies_a_child() -> None:
    cond = aiomp.Condition()
    value = aiomp.Value("i", 0)
    sleeping = aiomp.Semaphore(0)
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.wait_condition, args=(cond, value, 10, sleeping)) as child:
            assert await sleeping.aacquire(timeout=15)  # the child holds the lock and is about to wait
            async with cond:
                value.value = 1
                cond.notify_all()
    assert child.exitcode == 0


# -- Barrier -------------------------------------------------------------------------------------


async def test_barrier_across_processes(start_method: str) -> None:
    barrier = aiomp.Barrier(3)
    out = aiomp.Queue()
    assert barrier.parties == 3
    with anyio.fail_after(30):
        children = [
            aiomp.Process(target=_prims.barrier_wait, args=(barrier, out), context=start_method) for _ in range(2)
        ]
        for c in children:
            await c.start()
        mine = await barrier.await_(timeout=20)
        theirs = [await out.aget(), await out.aget()]
        for c in children:
            await c.join()
    out.close()
    out.join_thread()
    assert sorted([mine, theirs[0][1], theirs[1][1]]) == [0, 1, 2], theirs


async def test_barrier_tasks_in_one_process_and_action(tmp_path: Any) -> None:
    path = tmp_path / "action"

    def action() -> None:
        with path.open("a") as f:
            f.write("x")

    barrier = aiomp.Barrier(3, action=action)
    indexes: list[int] = []

    async def party() -> None:
        indexes.append(await barrier.await_(timeout=10))

    with anyio.fail_after(20):
        for _ in range(2):  # the barrier can be used again
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(party)
    assert sorted(indexes) == [0, 0, 1, 1, 2, 2]
    assert path.read_text() == "xx"


async def test_barrier_timeout_breaks_it() -> None:
    barrier = aiomp.Barrier(2)
    with anyio.fail_after(10):
        started = time.monotonic()
        with pytest.raises(threading.BrokenBarrierError):
            await barrier.await_(timeout=0.1)
        assert time.monotonic() - started < 3
        assert barrier.broken
        with pytest.raises(threading.BrokenBarrierError):
            await barrier.await_(timeout=1)
        barrier.reset()
        assert not barrier.broken
    default = aiomp.Barrier(2, timeout=0.1)
    with anyio.fail_after(10), pytest.raises(threading.BrokenBarrierError):
        await default.await_()


async def test_cancelled_barrier_wait_returns_promptly() -> None:
    barrier = aiomp.Barrier(2)
    with anyio.fail_after(10):
        started = time.monotonic()
        with anyio.move_on_after(0.1) as scope:
            await barrier.await_()
        assert scope.cancelled_caught
        assert time.monotonic() - started < 2


# -- threads -------------------------------------------------------------------------------------


async def test_waiting_uses_no_thread() -> None:
    lock, sem, event = aiomp.Lock(), aiomp.Semaphore(0), aiomp.Event()
    cond, barrier = aiomp.Condition(), aiomp.Barrier(5)
    with anyio.fail_after(20):
        holder, release = await _hold_in_child(lock)
        before = threading.active_count()

        async def cond_wait() -> None:
            async with cond:
                await cond.await_()

        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(lock.aacquire)
                tg.start_soon(sem.aacquire)
                tg.start_soon(event.await_)
                tg.start_soon(cond_wait)
                tg.start_soon(barrier.await_)
            await anyio.sleep(0.15)
            during = threading.active_count()
            tg.cancel_scope.cancel()
        release.set()
        await holder.join()
    assert during <= before, f"{during - before} threads started to wait"


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "error", "match"),
    [
        (lambda: aiomp.Barrier(0), ValueError, "parties"),
        (lambda: aiomp.Barrier(-2), ValueError, "parties"),
        (lambda: aiomp.Barrier("2"), TypeError, "parties"),
        (lambda: aiomp.Barrier(2, action=3), TypeError, "action"),
        (lambda: aiomp.Barrier(2, timeout=-1), ValueError, "timeout"),
        (lambda: aiomp.Semaphore(-1), ValueError, "value"),
        (lambda: aiomp.Semaphore("1"), TypeError, "value"),
        (lambda: aiomp.BoundedSemaphore(-1), ValueError, "value"),
        (lambda: aiomp.Condition(lock=3), TypeError, "lock"),
    ],
)
def test_bad_constructor_arguments(factory: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        factory()


async def test_bad_timeouts() -> None:
    """NaN and non-numbers are refused; a negative timeout counts as 0 (see the next tests)."""
    lock, event, cond, barrier = aiomp.Lock(), aiomp.Event(), aiomp.Condition(), aiomp.Barrier(2)
    for bad, error in ((math.nan, ValueError), ("1", TypeError)):
        with pytest.raises(error, match="timeout"):
            await lock.aacquire(timeout=bad)
        with pytest.raises(error, match="timeout"):
            await event.await_(timeout=bad)
        with pytest.raises(error, match="timeout"):
            await barrier.await_(timeout=bad)
        async with cond:
            with pytest.raises(error, match="timeout"):
                await cond.await_(timeout=bad)
            with pytest.raises(error, match="timeout"):
                await cond.await_for(lambda: True, timeout=bad)
    async with cond:
        with pytest.raises(TypeError, match="predicate"):
            await cond.await_for(3)  # type: ignore[arg-type]
    # nothing was left held or broken
    assert lock.acquire(False)
    lock.release()
    assert not barrier.broken


# -- regressions: who a notification reaches ----------------------------------------------------


async def _start_sleepers(cond: Any, n: int, timeout: float, context: str | None = None) -> list[Any]:
    """``n`` children each waiting once on ``cond`` (exit 0 if notified, 3 if not); returns
    once all of them wait (each signals with the lock held, so taking it proves it)."""
    sleeping = aiomp.Semaphore(0)
    children = [
        aiomp.Process(target=_prims.condition_sleeper, args=(cond, sleeping, timeout), context=context)
        for _ in range(n)
    ]
    for child in children:
        await child.start()
    for _ in range(n):
        assert await sleeping.aacquire(timeout=20), "a child never started waiting"
    async with cond:
        assert cond._sleeping() == n
    return children


def test_notify_all_then_wait_takes_no_wake_up_of_the_sleepers(start_method: str) -> None:
    """Three children sleep in wait(5); with the lock held, notify_all() then wait(0.1) three
    times: those waits time out, and all three children are woken (before: the three waits
    took the wake-ups and the children timed out)."""
    cond = aiomp.Condition()
    ctx = multiprocessing.get_context(start_method)
    sleeping = aiomp.Semaphore(0)
    children = [ctx.Process(target=_prims.condition_sleeper, args=(cond, sleeping, 5)) for _ in range(3)]
    for child in children:
        child.start()
    try:
        for _ in range(3):
            assert sleeping.acquire(timeout=20)
        with cond:
            assert cond._sleeping() == 3
            cond.notify_all()
            mine = [cond.wait(0.1) for _ in range(3)]
    finally:
        for child in children:
            child.join(20)
    assert mine == [False, False, False]
    assert [child.exitcode for child in children] == [0, 0, 0], "a sleeper missed its notification"
    assert (cond._sleeping(), cond._wake.get_value()) == (0, 0)


async def test_notify_all_then_await_takes_no_wake_up_of_the_sleepers(start_method: str) -> None:
    """The same with the notifier awaiting, the sleepers blocking in children."""
    cond = aiomp.Condition()
    with anyio.fail_after(40):
        children = await _start_sleepers(cond, 3, 10, start_method)
        async with cond:
            cond.notify_all()
            mine = [await cond.await_(0.1) for _ in range(3)]
            assert await cond.await_for(lambda: False, 0.1) is False
        for child in children:
            await child.join()
    assert mine == [False, False, False]
    assert [child.exitcode for child in children] == [0, 0, 0], "a sleeper missed its notification"


async def test_notify_all_reaches_awaiting_tasks_not_a_late_child() -> None:
    """Three tasks await; a child takes the lock, notify_all(), then waits three times: the
    tasks are woken, the child's waits time out."""
    cond = aiomp.Condition()
    sleeping = aiomp.Semaphore(0)
    woke: list[bool] = []

    async def waiter() -> None:
        async with cond:
            sleeping.release()
            woke.append(await cond.await_(timeout=10))

    with anyio.fail_after(40):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            for _ in range(3):
                assert await sleeping.aacquire(timeout=20)
            async with aiomp.Process(target=_prims.notify_all_then_wait, args=(cond, 3, 0.1)) as late:
                pass
    assert late.exitcode == 0, "the late waiter took a wake-up meant for the tasks"
    assert woke == [True, True, True]


async def _cancel_a_woken_round(cond: Any) -> list[bool]:
    sleeping = threading.Semaphore(0)
    thread_woke: list[bool] = []

    def blocking_waiter() -> None:
        with cond:
            sleeping.release()
            thread_woke.append(cond.wait(10))

    thread = threading.Thread(target=blocking_waiter, daemon=True)
    thread.start()
    assert await anyio.to_thread.run_sync(sleeping.acquire, True, 10)
    scope = anyio.CancelScope()
    task_waits = anyio.Event()

    async def task_waiter() -> None:
        with scope:
            async with cond:
                task_waits.set()
                await cond.await_(10)

    async with anyio.create_task_group() as tg:
        tg.start_soon(task_waiter)
        await task_waits.wait()
        async with cond:  # the task waits now
            assert cond._sleeping() == 2
            cond.notify(1)
            while cond._wake.get_value():  # until the wake-up is taken, by either
                await anyio.sleep(0)
            scope.cancel()
    await anyio.to_thread.run_sync(thread.join, 10)
    return thread_woke


async def test_cancelled_waiter_swallows_no_wake_up() -> None:
    """A task and a thread wait; notify(1); the task is cancelled at once. Whichever took
    the wake-up, the thread is woken (a cancelled task that had it passes it on), and the
    counts are back to zero. Several rounds, so both orders happen."""
    cond = aiomp.Condition()
    for _ in range(10):
        with anyio.fail_after(20):
            thread_woke = await _cancel_a_woken_round(cond)
        assert thread_woke == [True], "the wake-up went to the cancelled task and stayed there"
        assert (cond._sleeping(), cond._wake.get_value()) == (0, 0)


def test_barrier_reused_a_thousand_times_by_two_processes(start_method: str) -> None:
    """Before: two forkserver processes hung within the first rounds (a returning party
    took the wake-up of the other)."""
    barrier = aiomp.Barrier(2)
    ctx = multiprocessing.get_context(start_method)
    children = [ctx.Process(target=_prims.barrier_rounds, args=(barrier, 1000, 20)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(50)  # the way out; the rounds take well under a second
    for child in children:
        if child.exitcode is None:
            child.kill()
            child.join()
    assert [child.exitcode for child in children] == [0, 0]
    assert not barrier.broken and barrier.n_waiting == 0


async def test_barrier_reused_by_the_loop_and_a_process(start_method: str) -> None:
    barrier = aiomp.Barrier(2)
    rounds = 300
    with anyio.fail_after(50):
        async with aiomp.Process(
            target=_prims.barrier_rounds, args=(barrier, rounds, 20), context=start_method
        ) as child:
            indexes = [await barrier.await_(timeout=20) for _ in range(rounds)]
    assert child.exitcode == 0
    assert set(indexes) <= {0, 1}
    assert not barrier.broken


# -- regressions: a negative timeout counts as 0 ------------------------------------------------


def test_negative_timeout_counts_as_zero() -> None:
    lock, sem, event, cond = aiomp.Lock(), aiomp.Semaphore(0), aiomp.Event(), aiomp.Condition()
    lock.acquire()
    try:
        assert lock.acquire(timeout=-1) is False
        assert lock.acquire(True, -0.5) is False
    finally:
        lock.release()
    assert sem.acquire(timeout=-1) is False
    assert event.wait(-1) is False
    event.set()
    assert event.wait(-1) is True
    with cond:
        assert cond.wait(-1) is False
        assert cond.wait_for(lambda: False, -1) is False
    barrier = aiomp.Barrier(2)
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(-1)  # as threading.Barrier with timeout 0: it breaks
    with pytest.raises(ValueError, match="timeout"):
        lock.acquire(timeout=math.nan)


async def test_negative_timeout_counts_as_zero_awaited() -> None:
    lock, sem, event, cond = aiomp.Lock(), aiomp.Semaphore(0), aiomp.Event(), aiomp.Condition()
    with anyio.fail_after(10):
        async with lock:
            assert await lock.aacquire(-1) is False
        assert await sem.aacquire(-1) is False
        assert await event.await_(-1) is False
        async with cond:
            assert await cond.await_(-1) is False
            assert await cond.await_for(lambda: False, -1) is False
        with pytest.raises(threading.BrokenBarrierError):
            await aiomp.Barrier(2).await_(-1)
        with pytest.raises(ValueError, match="timeout"):
            await event.await_(math.nan)
