"""Defects found in review, each pinned by the test that shows it."""

from __future__ import annotations

import functools
from typing import Any

import anyio
import pytest

import aiomp

from . import _prims, _work
from ._work import wait_until
from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

# asyncio's own Task.cancel() exists only on asyncio's loops (the default one and uvloop).
ASYNCIO_LOOPS = [param for param in BACKENDS if param.values[0][0] == "asyncio"]


async def test_poll_and_empty_see_what_is_waiting(anyio_backend: Any) -> None:
    a, b = aiomp.Pipe()
    q, sq = aiomp.Queue(), aiomp.SimpleQueue()
    try:
        assert not a.poll()
        b.send("x")
        assert a.poll() and a.poll(0.0)
        assert a.recv() == "x"
        assert q.empty() and sq.empty()
        await q.aput(1)
        await sq.aput(1)
        with anyio.fail_after(30):
            while q.empty():  # the put may still be on its way into the socket
                await anyio.sleep(0.001)
        assert not sq.empty()
        assert q.get_nowait() == 1 and await sq.aget(timeout=30) == 1
    finally:
        for closeable in (a, b, q, sq):
            closeable.close()


async def test_shutdown_waits_for_puts_still_in_another_process(anyio_backend: Any) -> None:
    """Items whose put() returned before shutdown() all come out before the end."""
    n = 500
    q, done = aiomp.Queue(), aiomp.Event()
    with anyio.fail_after(60):
        async with aiomp.Process(target=_prims.put_many_then_signal, args=(q, n, done)):
            assert await done.await_(timeout=30)
            q.shutdown()
            got = [item[0] async for item in q]
    assert got == list(range(n))
    q.close()


async def test_cancelled_unsent_asend_is_withdrawn(anyio_backend: Any) -> None:
    a, b = aiomp.Pipe()
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.asend_bytes, b"F" * (16 << 20))  # fills the socket: nobody reads yet
            await wait_until(b.poll, "the filler to begin to arrive")
            tg.cancel_scope.cancel()  # begun: the rest of it still goes, in the background
    with anyio.move_on_after(0.1) as scope:
        await a.asend("A")  # queued behind the filler (which cannot end: nobody reads), not a byte of it sent
    assert scope.cancelled_caught
    received: list[Any] = []

    async def receive() -> None:
        await b.arecv_bytes()  # the rest of the filler
        while (message := await b.arecv()) != "END":
            received.append(message)

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive)
            await a.asend("A")  # the retry
            await a.asend("END")
    assert received == ["A"]
    a.close()
    b.close()


@pytest.mark.parametrize("anyio_backend", ASYNCIO_LOOPS)  # a second cancellation while shielded: Task.cancel
async def test_condition_bookkeeping_survives_a_second_cancellation(anyio_backend: Any) -> None:
    import asyncio

    cond = aiomp.Condition(aiomp.Lock())
    cond.acquire()  # held by the loop thread, so the waiter cannot take it back at once

    # The library has no public count of a condition's waiters: these read its own.
    def lock_waiters() -> int:
        return int(cond._lock._waiters._get_value())

    async def waiter() -> None:
        async with cond:
            await cond.await_()

    task = asyncio.ensure_future(waiter())
    with anyio.fail_after(30):
        await wait_until(lambda: lock_waiters() == 1, "the waiter to wait for the lock")
        cond.release()
        await wait_until(lambda: cond._sleeping() == 1, "the waiter to sleep in await_")
        cond.acquire()  # free: the waiter let go of it to sleep
        task.cancel()
        await wait_until(
            lambda: cond._sleeping() == 0 and lock_waiters() == 1,
            "the cancelled waiter to retake the lock, which we hold",
        )
        task.cancel()  # a second cancellation while it does
        for _ in range(5):
            await asyncio.sleep(0)  # delivered at the waiter's next step
        assert not task.done()  # still waiting for the lock
        cond.release()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)
    async with cond:
        cond.notify_all()  # nobody waits: must leave no wake-up behind
        assert not await cond.await_(timeout=0.2)


class _Numbers:
    """An async source that never suspends: the feeder reads it in one go."""

    def __init__(self, n: int) -> None:
        self.items = iter(range(n))

    def __aiter__(self) -> _Numbers:
        return self

    async def __anext__(self) -> int:
        try:
            return next(self.items)
        except StopIteration:
            raise StopAsyncIteration from None


@pytest.mark.parametrize("how", ["task error", "break"])
async def test_imap_over_an_async_source_stops_when_the_iteration_ends(anyio_backend: Any, how: str) -> None:
    """The feeder used to spin on a full chunk it could no longer submit, freezing the loop."""
    with anyio.fail_after(20):
        async with aiomp.Pool(2) as pool:
            if how == "task error":
                with pytest.raises(ValueError, match="item 30 is bad"):
                    async for _ in pool.imap(functools.partial(_work.fail_on, bad=30), _Numbers(10_000), 3):
                        pass
            else:
                async with pool.imap_unordered(_work.inc, _Numbers(10_000), 3) as results:
                    async for value in results:
                        if value > 50:
                            break
            assert await pool.apply(_work.inc, (1,)) == 2


async def test_an_error_raised_while_the_pool_block_is_cancelled_is_not_lost(anyio_backend: Any) -> None:
    """On trio the task group's Cancelled used to replace the block's own error."""
    with pytest.raises(ValueError, match="raised while cancelled"), anyio.move_on_after(30) as scope:
        async with aiomp.Pool(1) as pool:
            scope.deadline = anyio.current_time() + 0.1
            try:
                await pool.apply(_work.sleep, (30,))  # cancelled long before it could end
            finally:
                raise ValueError("raised while cancelled")
