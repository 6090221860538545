"""aiomp's Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier."""

from __future__ import annotations

import math
import random
import threading
import time
from typing import Any

import anyio
import pytest

import aiomp

from . import _prims

pytestmark = pytest.mark.anyio


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
    lock = aiomp.Lock()
    ready = aiomp.Event()
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.hold, args=(lock, ready, 0.3)):
            assert await ready.await_(timeout=15)
            assert await lock.aacquire(timeout=0.05) is False
            started = time.monotonic()
            acquired, max_gap, ticks = await _prims.while_ticking(lock.aacquire)
            waited = time.monotonic() - started
            assert acquired is True
            lock.release()
    assert 0.1 < waited < 5
    assert max_gap < 0.1, f"the loop stalled for {max_gap:.3f} s"
    assert ticks > 50


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


async def test_asyncio_task_cancel(anyio_backend: Any) -> None:
    if anyio_backend[0] != "asyncio":
        pytest.skip("asyncio.Task.cancel is asyncio's own")
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

    async def waiter() -> None:
        async with cond:
            woke.append(await cond.await_(timeout=15))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(waiter)
            await anyio.sleep(0.1)
            async with aiomp.Process(target=_prims.notify_after, args=(cond, value, 0, 1)):
                pass
            await anyio.sleep(0.2)
            assert woke == [True], "notify(1) should wake exactly one waiter"
            async with cond:
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
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.wait_condition, args=(cond, value, 10)) as child:
            await anyio.sleep(0.15)
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
