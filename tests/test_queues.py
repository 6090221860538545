"""aiomp.Queue, JoinableQueue and SimpleQueue: blocking in any process, awaitable in the parent."""

from __future__ import annotations

import math
import multiprocessing.queues
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

import aiomp

from . import _prims, _work
from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

# asyncio's own Task.cancel() exists only on asyncio's loops (the default one and uvloop).
ASYNCIO_LOOPS = [param for param in BACKENDS if param.values[0][0] == "asyncio"]


@pytest.fixture
def make() -> Iterator[Callable[..., Any]]:
    """Create queues that are closed (and their feeder threads joined) after the test."""
    made: list[Any] = []

    def factory(cls: Any = None, *args: Any, **kwargs: Any) -> Any:
        q = (cls or aiomp.Queue)(*args, **kwargs)
        made.append(q)
        return q

    yield factory
    for q in made:
        q.close()
        if hasattr(q, "join_thread"):
            q.join_thread()
    made.clear()  # drop the queues now: the leak check runs before pytest lets go of this fixture


QUEUE_TYPES = [
    pytest.param("Queue", id="Queue"),
    pytest.param("JoinableQueue", id="JoinableQueue"),
    pytest.param("SimpleQueue", id="SimpleQueue"),
]


def _drain_nowait(q: Any, n: int, timeout: float = 30) -> list[Any]:
    return [q.get(timeout=timeout) for _ in range(n)]


# -- the blocking API --------------------------------------------------------------------------


def test_blocking_api(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue)
    assert q.empty() and q.qsize() == 0 and not q.full()
    for i in range(5):
        q.put(i)
    q.put_nowait(5)
    assert q.qsize() == 6
    assert [q.get(timeout=5) for _ in range(5)] == [0, 1, 2, 3, 4]
    deadline = time.monotonic() + 30
    while True:  # put_nowait hands the item to a feeder: it arrives shortly
        try:
            assert q.get_nowait() == 5
            break
        except queue.Empty:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.05)
    with pytest.raises(queue.Empty):
        q.get(block=False)


def test_blocking_maxsize(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue, 2)
    q.put(1)
    q.put(2)
    assert q.full() and q.qsize() == 2
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.05)
    with pytest.raises(queue.Full):
        q.put(3, block=False)
    assert q.get(timeout=5) == 1
    q.put(3, timeout=5)
    assert _drain_nowait(q, 2) == [2, 3]


def test_simple_queue_blocking(make: Callable[..., Any]) -> None:
    q = make(aiomp.SimpleQueue)
    assert q.empty()
    q.put("a")
    q.put(["b"])
    assert q.get() == "a"
    assert q.get() == ["b"]
    assert q.empty()


def test_joinable_blocking(make: Callable[..., Any]) -> None:
    q = make(aiomp.JoinableQueue)
    q.put(1)
    assert q.get(timeout=5) == 1
    q.task_done()
    q.join()  # nothing left undone: returns at once
    with pytest.raises(ValueError):
        q.task_done()


def test_put_after_close_raises(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue)
    q.close()
    with pytest.raises(ValueError):
        q.put(1)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (aiomp.Queue, multiprocessing.queues.Queue),
        (aiomp.JoinableQueue, multiprocessing.queues.JoinableQueue),
        (aiomp.SimpleQueue, multiprocessing.queues.SimpleQueue),
    ],
    ids=["Queue", "JoinableQueue", "SimpleQueue"],
)
def test_queue_methods_exist(ours: type, theirs: type) -> None:
    """Every public method of the standard library's queue, under its name."""
    names = {name for name in dir(theirs) if not name.startswith("_") and callable(getattr(theirs, name))}
    assert names, theirs
    missing = sorted(name for name in names if not callable(getattr(ours, name, None)))
    assert not missing, f"{ours.__name__} lacks {missing}"


async def test_cancel_join_thread_lets_a_child_exit_with_items_unwritten(make: Callable[..., Any]) -> None:
    """A child that put more than the pipe holds, with nobody reading, exits at once after
    cancel_join_thread(); without it, it would wait at exit for its feeder, forever."""
    q = make(aiomp.Queue)
    with anyio.fail_after(30):
        p = aiomp.Process(target=_work.fill_then_leave, args=(q, 2000, 4096, True))
        await p.start()
        await p.join(timeout=20)
        if p.exitcode is None:
            p.kill()
            await p.join()
            pytest.fail("the child did not exit: cancel_join_thread() did not stop the wait for its feeder")
    assert p.exitcode == 0


# -- the awaitable API -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", QUEUE_TYPES)
async def test_aput_aget_round_trip(make: Callable[..., Any], kind: str) -> None:
    q = make(getattr(aiomp, kind))
    with anyio.fail_after(10):
        for i in range(200):
            await q.aput({"i": i, "blob": b"x" * i})
        got = [await q.aget() for _ in range(200)]
    assert [g["i"] for g in got] == list(range(200))
    assert got[7]["blob"] == b"x" * 7


async def test_mixing_blocking_and_awaitable_calls(make: Callable[..., Any]) -> None:
    """After an awaited get (which registers the fd with the loop), a blocking get still works."""
    q = make(aiomp.Queue)
    with anyio.fail_after(10):
        for i in range(6):
            q.put(i)
        assert await q.aget() == 0
        assert q.get(timeout=5) == 1
        assert await q.aget() == 2
        assert q.get(timeout=5) == 3
        assert q.get(timeout=5) == 4
        await q.aput("last")
        assert q.get(timeout=5) == 5
        assert await q.aget() == "last"


async def test_aget_timeout_and_aput_timeout(make: Callable[..., Any]) -> None:
    # The timeouts are the feature: they fire, not early, and not much later on a loaded machine.
    q = make(aiomp.Queue, 1)
    with anyio.fail_after(30):
        started = time.monotonic()
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.1)
        assert 0.08 < time.monotonic() - started < 5
        await q.aput("a", timeout=0.1)
        started = time.monotonic()
        with pytest.raises(queue.Full):
            await q.aput("b", timeout=0.1)
        assert 0.08 < time.monotonic() - started < 5
        assert await q.aget(timeout=30) == "a"
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0)
        # The refused item was never put: the next item out is the one put after it.
        await q.aput("c", timeout=30)
        assert await q.aget(timeout=30) == "c"


async def test_aget_waits_for_a_child_and_keeps_the_loop_free(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue)
    go = aiomp.Event()
    # The child puts only once the parent's loop, ticking while aget waits, says so (or
    # after 10 s: what a blocked loop would make it do).
    async with aiomp.Process(target=_work.put_when, args=(q, "late", go, 10)) as child:
        with anyio.fail_after(30):
            (item, released), max_gap, ticks, _ = await _prims.while_ticking_then(q.aget, go.set)
    assert child.exitcode == 0
    assert item == "late"
    assert released, "the child gave up waiting: the loop did not run while aget waited"
    assert ticks >= 50
    assert max_gap < 1.0, f"the loop stalled for {max_gap:.3f} s"


async def test_aput_on_full_queue_waits_for_a_consumer(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue, 2)
    out = make(aiomp.Queue)
    with anyio.fail_after(20):
        await q.aput(0)
        await q.aput(1)
        async with aiomp.Process(target=_prims.drain_n, args=(q, 5, out)):
            for i in range(2, 5):
                await q.aput(i)  # each waits until the child frees a slot
            assert await out.aget() == [0, 1, 2, 3, 4]


async def test_parent_and_child_in_both_directions(make: Callable[..., Any], start_method: str) -> None:
    to_child, from_child = make(aiomp.Queue), make(aiomp.Queue)
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.square_worker, args=(to_child, from_child), context=start_method):
            for x in range(50):
                await to_child.aput(x)
            await to_child.aput("STOP")
            got = [await from_child.aget() for _ in range(50)]
    assert got == [(x, x * x) for x in range(50)]


async def test_async_child_consumer(make: Callable[..., Any]) -> None:
    tasks, done = make(aiomp.Queue), make(aiomp.Queue)
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.asquare_worker, args=(tasks, done)):
            for x in range(20):
                await tasks.aput(x)
            tasks.shutdown()
            got = [await done.aget() for _ in range(20)]
    assert got == [(x, x * x) for x in range(20)]


async def test_large_items(make: Callable[..., Any]) -> None:
    np = pytest.importorskip("numpy")
    q = make(aiomp.Queue)
    out = make(aiomp.Queue)
    blob = _prims.pattern(8 * 1024 * 1024)
    arr = np.arange(1024 * 1024, dtype=np.float64)
    with anyio.fail_after(30):
        async with aiomp.Process(target=_prims.drain_n, args=(q, 2, out)):
            await q.aput(blob)
            await q.aput(arr)
            back = await out.aget()
    assert back[0] == blob
    assert np.array_equal(back[1], arr)


# -- shutdown ----------------------------------------------------------------------------------


async def test_shutdown_semantics(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue)
    with anyio.fail_after(10):
        for i in range(3):
            await q.aput(i)
        q.shutdown()
        with pytest.raises(aiomp.QueueShutDown):
            q.put(9)
        with pytest.raises(aiomp.QueueShutDown):
            q.put_nowait(9)
        with pytest.raises(aiomp.QueueShutDown):
            await q.aput(9)
        # what was put before is still delivered, then the queue reports the shutdown
        assert await q.aget() == 0
        assert q.get(timeout=5) == 1
        assert [item async for item in q] == [2]
        with pytest.raises(aiomp.QueueShutDown):
            await q.aget()
        with pytest.raises(aiomp.QueueShutDown):
            q.get(timeout=1)
        with pytest.raises(aiomp.QueueShutDown):
            q.get_nowait()
        with pytest.raises(aiomp.QueueShutDown):
            await q.aget(timeout=0.1)


@pytest.mark.parametrize("kind", QUEUE_TYPES)
async def test_shutdown_from_a_child_wakes_every_waiter(make: Callable[..., Any], kind: str) -> None:
    q = make(getattr(aiomp, kind))
    out = make(aiomp.Queue)
    outcomes: list[str] = []

    async def waiter() -> None:
        try:
            await q.aget()
            outcomes.append("item")
        except aiomp.QueueShutDown:
            outcomes.append("shutdown")

    ready = aiomp.Event()
    with anyio.fail_after(30):
        async with aiomp.Process(target=_work.get_one_after, args=(ready, q, out)) as blocked:
            # The child first, alone: once it holds the reader lock it is blocked in get().
            assert await ready.await_(timeout=30)
            await _work.wait_until(lambda: _reader_lock_held(q), "the child to block in get()")
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(waiter)
                await _work.wait_until(lambda: _getters_waiting(q) == 3, "the three aget() calls to wait")
                async with aiomp.Process(target=_prims.shutdown, args=(q,)) as p:
                    pass
                assert p.exitcode == 0
        assert await out.aget() == ("error", "QueueShutDown")
    assert blocked.exitcode == 0
    assert outcomes == ["shutdown"] * 3


# The library has no public count of who waits on a queue; these read the reader lock's
# own (its semaphore, and the count of async waiters its doorbell keeps).


def _reader_lock_held(q: Any) -> bool:
    return int(q._rlock._sem._get_value()) == 0


def _getters_waiting(q: Any) -> int:
    """aget() calls waiting for the reader lock (the holder waits on the pipe instead)."""
    return int(q._rlock._waiters._get_value())


async def test_async_for_ends_at_shutdown(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue, 4)  # bounded: the producer has to wait for the consumer
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.produce_then_shutdown, args=(q, 100)):
            got = [item async for item in q]
    assert got == list(range(100))


async def test_async_producer_child(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue, 3)
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.aproduce_then_shutdown, args=(q, 50)):
            got = [item async for item in q]
    assert got == list(range(50))


# -- several consumers -------------------------------------------------------------------------


async def test_tasks_and_processes_share_one_queue(make: Callable[..., Any]) -> None:
    """Two child consumers and three parent tasks drain one queue: every item once."""
    n = 600
    q = make(aiomp.Queue, 50)
    out = make(aiomp.Queue)
    in_parent: list[list[int]] = [[], [], []]

    async def consume(mine: list[int]) -> None:
        async for item in q:
            mine.append(item)
            if len(mine) % 7 == 0:
                await anyio.sleep(0.001)

    with anyio.fail_after(40):
        consumers = [
            aiomp.Process(target=_prims.consume_until_shutdown, args=(q, out)),
            aiomp.Process(target=_prims.aconsume_until_shutdown, args=(q, out)),
        ]
        for c in consumers:
            await c.start()
        async with anyio.create_task_group() as tg:
            for mine in in_parent:
                tg.start_soon(consume, mine)
            async with aiomp.Process(target=_prims.produce_then_shutdown, args=(q, n)) as producer:
                pass
        in_children = [await out.aget(), await out.aget()]
        for c in consumers:
            await c.join()
    assert producer.exitcode == 0
    assert [c.exitcode for c in consumers] == [0, 0]
    everything = [*in_children[0], *in_children[1], *in_parent[0], *in_parent[1], *in_parent[2]]
    assert sorted(everything) == list(range(n)), "items were lost or delivered twice"
    for part in (*in_children, *in_parent):
        assert part == sorted(part)  # each consumer sees the queue's order


async def test_parent_tasks_share_a_queue(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue)
    got: list[list[int]] = [[] for _ in range(4)]

    async def consume(mine: list[int]) -> None:
        async for item in q:
            mine.append(item)
            await anyio.sleep(0)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for mine in got:
                tg.start_soon(consume, mine)
            for i in range(400):
                await q.aput(i)
            q.shutdown()
    everything = sorted(x for part in got for x in part)
    assert everything == list(range(400))
    assert sum(1 for part in got if part) >= 2, "one consumer took everything"


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_aget_loses_no_item(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue)
    with anyio.fail_after(10):
        with anyio.move_on_after(0.1) as scope:
            await q.aget()
        assert scope.cancelled_caught
        await q.aput("kept")
        assert await q.aget() == "kept"
        scope = anyio.CancelScope()
        scope.cancel()
        await q.aput("also kept")
        with scope:
            await q.aget()
        assert await q.aget(timeout=1) == "also kept"


async def test_aget_cancelled_at_random_moments_loses_nothing(make: Callable[..., Any]) -> None:
    """A child streams items while the parent's agets keep getting cancelled."""
    n = 300
    q = make(aiomp.Queue)
    rng = random.Random(1)
    got: list[int] = []
    cancelled = 0
    with anyio.fail_after(40):
        async with aiomp.Process(target=_prims.put_items, args=(q, list(range(n)), 0.0005)):
            while len(got) < n:
                with anyio.move_on_after(rng.choice([0, 0.0001, 0.0005, 0.001, 0.003])) as scope:
                    got.append(await q.aget())
                cancelled += scope.cancelled_caught
    assert got == list(range(n))
    assert cancelled > 10


async def test_cancelled_aput_on_full_queue_puts_nothing(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue, 1)
    with anyio.fail_after(10):
        await q.aput("first")
        with anyio.move_on_after(0.1) as scope:
            await q.aput("never")
        assert scope.cancelled_caught
        assert q.qsize() == 1 and q.full()
        assert await q.aget() == "first"
        with pytest.raises(queue.Empty):
            await q.aget(timeout=0.2)
        # the slot the cancelled put waited for is free
        await q.aput("second", timeout=1)
        assert await q.aget(timeout=1) == "second"


async def test_aput_cancelled_at_random_moments(make: Callable[..., Any]) -> None:
    """Every aput either completed or put nothing: the consumer sees exactly the completed ones."""
    q = make(aiomp.Queue, 2)
    out = make(aiomp.Queue)
    rng = random.Random(2)
    sent: list[int] = []
    i = 0
    with anyio.fail_after(40):
        consumer = aiomp.Process(target=_prims.aconsume_until_shutdown, args=(q, out))
        await consumer.start()
        while len(sent) < 200:
            with anyio.move_on_after(rng.choice([0, 0.0001, 0.001, 0.003])):
                await q.aput(i)
                sent.append(i)
            i += 1
        q.shutdown()
        received = await out.aget()
        await consumer.join()
    assert received == sent


async def test_cancelled_ajoin(make: Callable[..., Any]) -> None:
    q = make(aiomp.JoinableQueue)
    with anyio.fail_after(20):
        await q.aput(1)
        with anyio.move_on_after(0.1) as scope:
            await q.ajoin()
        assert scope.cancelled_caught
        async with aiomp.Process(target=_prims.get_n_and_ack, args=(q, 1)):
            await q.ajoin()


@pytest.mark.parametrize("anyio_backend", ASYNCIO_LOOPS)
@pytest.mark.parametrize("what", ["aget", "aput", "ajoin", "async_for"])
async def test_asyncio_task_cancel(make: Callable[..., Any], anyio_backend: Any, what: str) -> None:
    q = make(aiomp.JoinableQueue, 1)
    if what == "aget":
        coro = q.aget()
    elif what == "aput":
        q.put("full")
        coro = q.aput("never")
    elif what == "ajoin":
        q.put("undone")
        coro = q.ajoin()
    else:

        async def iterate() -> None:
            async for _ in q:
                pass

        coro = iterate()
    with anyio.fail_after(10):
        await _prims.cancel_asyncio_task(coro)
        # the queue still works
        if what in ("aput", "ajoin"):
            assert await q.aget() in ("full", "undone")
            q.task_done()
        await q.aput("x")
        assert await q.aget() == "x"
        q.task_done()
        await q.ajoin()


# -- JoinableQueue -----------------------------------------------------------------------------


async def test_ajoin_waits_for_task_done_in_a_child(make: Callable[..., Any]) -> None:
    q = make(aiomp.JoinableQueue)
    go = aiomp.Event()
    with anyio.fail_after(30):
        for i in range(5):
            await q.aput(i)
        # The child takes the items, and marks them done only once the parent's loop,
        # ticking while ajoin waits, says so (after 10 s it gives up and exits 3).
        async with aiomp.Process(target=_work.ack_when, args=(q, 5, go, 10)) as child:
            _, max_gap, ticks, released = await _prims.while_ticking_then(q.ajoin, go.set)
    assert released, "ajoin returned before the items were marked done"
    assert child.exitcode == 0, "the child gave up waiting: the loop did not run while ajoin waited"
    assert ticks >= 50
    assert max_gap < 1.0, f"the loop stalled for {max_gap:.3f} s"
    assert q.empty()


# -- no threads, no busy loop ------------------------------------------------------------------


async def test_waiting_uses_no_thread(make: Callable[..., Any]) -> None:
    empty = make(aiomp.Queue)
    full = make(aiomp.Queue, 1)
    undone = make(aiomp.JoinableQueue)
    with anyio.fail_after(10):
        await full.aput("x")  # starts any feeder thread before we count
        await undone.aput("y")
        await empty.aput("z")
        assert await empty.aget() == "z"
        before = threading.active_count()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(empty.aget)
                tg.start_soon(full.aput, "y")
            tg.start_soon(undone.ajoin)
            # Every one of them waits now: one aget holds the reader lock (and waits on
            # the pipe), two wait for the lock; three aputs wait for room; ajoin sleeps
            # on its condition (the library's own counts: it has no public ones).
            await _work.wait_until(
                lambda: (
                    _reader_lock_held(empty)
                    and _getters_waiting(empty) == 2
                    and int(full._sem._waiters._get_value()) == 3
                    and undone._cond._sleeping() == 1
                ),
                "every call to wait",
            )
            during = threading.active_count()
            tg.cancel_scope.cancel()
    assert during <= before, f"{during - before} threads started to wait"


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "args", "error"),
    [
        ("Queue", ("3",), TypeError),
        ("Queue", (1.5,), TypeError),
        ("JoinableQueue", ("3",), TypeError),
        ("JoinableQueue", (None,), TypeError),
    ],
)
def test_bad_maxsize(kind: str, args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error, match="maxsize"):
        getattr(aiomp, kind)(*args)


async def test_bad_timeouts(make: Callable[..., Any]) -> None:
    q = make(aiomp.Queue, 1)
    for bad, error in ((math.nan, ValueError), ("1", TypeError)):
        with pytest.raises(error, match="timeout"):
            await q.aget(timeout=bad)
        with pytest.raises(error, match="timeout"):
            await q.aput(1, timeout=bad)
    assert q.qsize() == 0
    # A negative timeout counts as 0, as in get() and put().
    with pytest.raises(queue.Empty):
        await q.aget(timeout=-1)
    await q.aput(1, timeout=-1)
    with pytest.raises(queue.Full):
        await q.aput(2, timeout=-1)
    assert q.get(timeout=30) == 1
