"""aiomp.Value and aiomp.Array: shared ctypes whose lock is an aiomp lock."""

from __future__ import annotations

import ctypes

import anyio
import pytest

import aiomp

from . import _prims

pytestmark = pytest.mark.anyio


def test_value_basics() -> None:
    v = aiomp.Value("i", 7)
    assert v.value == 7
    v.value += 1
    assert v.value == 8
    d = aiomp.Value("d", 0.5)
    assert d.value == 0.5
    c = aiomp.Value(ctypes.c_double, 2.0)
    assert c.value == 2.0
    z = aiomp.Value("q")
    assert z.value == 0


def test_array_basics() -> None:
    a = aiomp.Array("i", range(10))
    assert len(a) == 10
    assert a[:] == list(range(10))
    a[3] = -3
    a[5:7] = [50, 60]
    assert a[3] == -3 and a[5:7] == [50, 60]
    zeros = aiomp.Array("d", 4)
    assert list(zeros) == [0.0] * 4
    s = aiomp.Array("c", b"hello")
    assert s.value == b"hello"
    assert s.raw == b"hello"


def test_lock_options() -> None:
    raw = aiomp.Value("i", 1, lock=False)
    assert not hasattr(raw, "get_lock")
    assert raw.value == 1
    raw_arr = aiomp.Array("i", 3, lock=False)
    assert not hasattr(raw_arr, "get_lock")
    mine = aiomp.Lock()
    v = aiomp.Value("i", 1, lock=mine)
    assert v.get_lock() is mine
    a = aiomp.Array("i", 3, lock=mine)
    assert a.get_lock() is mine
    assert aiomp.Value("i", 0, lock=True).get_lock() is not None


def test_get_lock_blocking() -> None:
    v = aiomp.Value("i", 0)
    with v.get_lock():
        v.value += 1
    lock = v.get_lock()
    assert lock.acquire(timeout=1)
    lock.release()
    assert v.get_obj().value == 1
    a = aiomp.Array("d", 2)
    with a.get_lock():
        a[0] = 1.5
    assert a.get_obj()[0] == 1.5


async def test_get_lock_is_an_aiomp_lock() -> None:
    v = aiomp.Value("i", 0)
    a = aiomp.Array("i", 4)
    for lock in (v.get_lock(), a.get_lock()):
        if isinstance(aiomp.Lock, type) and isinstance(aiomp.RLock, type):
            assert isinstance(lock, (aiomp.Lock, aiomp.RLock))
        with anyio.fail_after(5):
            async with lock:
                pass
            assert await lock.aacquire(timeout=1) is True
            lock.release()
    with anyio.fail_after(5):
        async with v.get_lock():
            v.value += 1
        async with a.get_lock():
            a[0] += 1
    assert v.value == 1 and a[0] == 1


async def test_child_changes_are_seen() -> None:
    num = aiomp.Value("d", 0.0)
    arr = aiomp.Array("i", range(10))
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.negate, args=(num, arr)) as p:
            pass
    assert p.exitcode == 0
    assert num.value == 3.1415927
    assert arr[:] == [-i for i in range(10)]


async def test_counter_race_between_processes_and_the_parent() -> None:
    """Four children increment under ``with v.get_lock()`` while the parent uses ``async with``."""
    per_child, in_parent = 300, 300
    v = aiomp.Value("i", 0)
    arr = aiomp.Array("i", 3)
    with anyio.fail_after(40):
        children = [aiomp.Process(target=_prims.increment, args=(v, per_child)) for _ in range(3)]
        children.append(aiomp.Process(target=_prims.increment_array, args=(arr, per_child)))
        for c in children:
            await c.start()
        for i in range(in_parent):
            async with v.get_lock():
                v.value += 1
            async with arr.get_lock():
                for j in range(len(arr)):
                    arr[j] += 1
            if i % 50 == 0:
                await anyio.sleep(0)
        for c in children:
            await c.join()
    assert [c.exitcode for c in children] == [0, 0, 0, 0]
    assert v.value == 3 * per_child + in_parent
    assert arr[:] == [per_child + in_parent] * 3


async def test_two_tasks_exclude_each_other_on_get_lock() -> None:
    v = aiomp.Value("i", 0)
    inside = most = 0

    async def worker() -> None:
        nonlocal inside, most
        for _ in range(20):
            async with v.get_lock():
                inside += 1
                most = max(most, inside)
                current = v.value
                await anyio.sleep(0)
                v.value = current + 1
                inside -= 1

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(worker)
    assert most == 1
    assert v.value == 80


async def test_through_pool_initargs(start_method: str) -> None:
    v = aiomp.Value("i", 0)
    with anyio.fail_after(30):
        async with aiomp.Pool(2, initializer=_prims.init_shared, initargs=(v,), context=start_method) as pool:
            results = await pool.map(_prims.bump_shared, range(40), chunksize=1)
    assert v.value == 40
    assert sorted(results) == list(range(1, 41))


def test_bad_arguments() -> None:
    with pytest.raises((TypeError, ValueError)):
        aiomp.Value("not a typecode")
    with pytest.raises((TypeError, ValueError)):
        aiomp.Array("i", "not a size")
    with pytest.raises((TypeError, ValueError, AttributeError), match=r"lock|acquire"):
        aiomp.Value("i", 0, lock="yes")
