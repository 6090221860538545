"""The Pool's calls, under every event loop and start method."""

from __future__ import annotations

import gc
import math
import os
import signal
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import aiomp

from . import _work

pytestmark = pytest.mark.anyio


async def test_apply(start_method: str) -> None:
    async with aiomp.Pool(2, context=start_method) as pool:
        assert await pool.apply(_work.add, (1, 2)) == 3
        assert await pool.apply(_work.kw, (1,), {"b": 2}) == (1, 2)
        assert await pool.apply(_work.pid) != os.getpid()


async def test_map_and_starmap(start_method: str) -> None:
    async with aiomp.Pool(2, context=start_method) as pool:
        assert await pool.map(_work.inc, range(1000)) == list(range(1, 1001))
        assert await pool.map(_work.inc, range(10), chunksize=3) == list(range(1, 11))
        assert await pool.map(_work.inc, []) == []
        assert await pool.starmap(_work.add, [(1, 2), (3, 4)]) == [3, 7]
        assert await pool.map(_work.inc, (x for x in range(5))) == [1, 2, 3, 4, 5]


async def test_async_iterable_sources() -> None:
    async def source(n: int) -> Any:
        for i in range(n):
            await anyio.sleep(0)
            yield i

    async with aiomp.Pool(2) as pool:
        assert await pool.map(_work.inc, source(20)) == list(range(1, 21))
        assert await pool.starmap(_work.add, (pair async for pair in _pairs(3))) == [0, 2, 4]
        assert [x async for x in pool.imap(_work.inc, source(7), chunksize=2)] == list(range(1, 8))
        got = [x async for x in pool.imap_unordered(_work.inc, source(7))]
        assert sorted(got) == list(range(1, 8))


async def _pairs(n: int) -> Any:
    for i in range(n):
        yield (i, i)


async def test_imap_order_and_unordered(start_method: str) -> None:
    async with aiomp.Pool(2, context=start_method) as pool:
        delays = [0.2, 0.0, 0.1, 0.0]
        assert [x async for x in pool.imap(_work.sleep, delays)] == delays
        unordered = [x async for x in pool.imap_unordered(_work.sleep, delays)]
        assert sorted(unordered) == sorted(delays)
        assert unordered[0] == 0.0  # a fast item overtakes the slow first one
        assert [x async for x in pool.imap(_work.inc, range(100), chunksize=7)] == list(range(1, 101))


async def test_imap_reads_its_source_lazily() -> None:
    pulled = 0

    def source() -> Any:
        nonlocal pulled
        for i in range(10**9):  # endless for all practical purposes
            pulled += 1
            yield i

    async with aiomp.Pool(2) as pool:
        results = pool.imap(_work.inc, source(), chunksize=2)
        got = []
        async for value in results:
            got.append(value)
            if len(got) == 50:
                break
        await results.aclose()
        assert got == list(range(1, 51))
        # At most the window (in chunks) beyond what was consumed.
        assert pulled <= 50 + results.window * 2


async def test_imap_source_error_reaches_consumer() -> None:
    def source() -> Any:
        yield 1
        yield 2
        raise LookupError("source broke")

    async with aiomp.Pool(2) as pool:
        got = []
        with pytest.raises(LookupError, match="source broke"):
            async for value in pool.imap(_work.inc, source()):
                got.append(value)
        assert await pool.apply(_work.inc, (1,)) == 2


async def test_imap_task_error_stops_iteration() -> None:
    async with aiomp.Pool(2) as pool:
        got = []
        with pytest.raises(ValueError, match="item 3 is bad"):
            async for value in pool.imap(_bad3, range(10)):
                got.append(value)
        assert got == [0, 1, 2]


def _bad3(x: int) -> int:
    return _work.fail_on(x, 3)


async def test_lambdas_closures_and_main_functions() -> None:
    offset = 10

    def closure(x: int) -> int:
        return x + offset

    async with aiomp.Pool(2) as pool:
        assert await pool.apply(lambda: 42) == 42
        assert await pool.map(closure, [1, 2]) == [11, 12]
        assert await pool.map(lambda x: x * 2, range(3)) == [0, 2, 4]


async def test_async_functions_run_concurrently_in_a_worker() -> None:
    async with aiomp.Pool(1, child_concurrency=8) as pool:
        start = time.monotonic()
        assert await pool.map(_work.asleep, [0.3] * 8, chunksize=1) == [0.3] * 8
        assert time.monotonic() - start < 1.5  # serially it would take 2.4 s
        assert await pool.apply(_work.asleep, (0,)) == 0
        with pytest.raises(KeyError, match="nope"):
            await pool.apply(_work.araise, ("nope",))


async def test_child_concurrency_limits_coroutines() -> None:
    async with aiomp.Pool(1, child_concurrency=2) as pool:
        start = time.monotonic()
        await pool.map(_work.asleep, [0.2] * 4, chunksize=1)
        assert time.monotonic() - start >= 0.38  # two rounds of two


async def test_cancelling_a_running_coroutine_keeps_the_worker() -> None:
    async with aiomp.Pool(1) as pool:
        before = await pool.apply(_work.pid)
        with pytest.raises(TimeoutError):
            await pool.apply(_work.asleep, (30,), timeout=0.3)
        assert await pool.apply(_work.pid) == before


# -- errors -----------------------------------------------------------------------


async def test_task_exception_keeps_its_type_and_remote_traceback(start_method: str) -> None:
    async with aiomp.Pool(1, context=start_method) as pool:
        with pytest.raises(ValueError, match="boom 1") as info:
            await pool.apply(_work.boom, (1,))
        cause = info.value.__cause__
        assert isinstance(cause, aiomp.RemoteTraceback)
        assert "in boom" in str(cause)
        with pytest.raises(ValueError, match="item 5 is bad"):
            await pool.starmap(_work.fail_on, [(i, 5) for i in range(20)])
        assert await pool.apply(_work.inc, (1,)) == 2


async def test_exceptions_that_cannot_travel() -> None:
    async with aiomp.Pool(1) as pool:
        with pytest.raises(aiomp.ProcessError, match="BadInitError"):
            await pool.apply(_work.raise_bad_init)
        with pytest.raises(aiomp.ProcessError, match="carries an unpicklable payload"):
            await pool.apply(_work.raise_unpicklable)
        assert await pool.apply(_work.inc, (1,)) == 2


async def test_pickling_errors_reach_the_right_caller() -> None:
    async with aiomp.Pool(1) as pool:
        with pytest.raises(TypeError, match="refuses to be pickled"):
            await pool.apply(_work.echo, (_work.Unpicklable(),))
        with pytest.raises(TypeError, match="refuses to be pickled"):
            pool.apply_async(_work.echo, (_work.Unpicklable(),))
        with pytest.raises(TypeError, match="refuses to be pickled"):
            await pool.apply(_work.make_unpicklable)
        assert await pool.apply(_work.inc, (1,)) == 2
        assert pool.statistics().workers_restarted == 0


@pytest.mark.parametrize(
    ("func", "exitcode"),
    [(_work.exit_now, 1), (_work.kill_self, -signal.SIGKILL), (_work.segfault, -signal.SIGSEGV)],
    ids=["exit", "sigkill", "segfault"],
)
async def test_worker_death_fails_only_its_task(start_method: str, func: Any, exitcode: int) -> None:
    async with aiomp.Pool(2, context=start_method) as pool:
        results = [pool.apply_async(_work.sleep, (0.05,)) for _ in range(10)]
        with pytest.raises(aiomp.WorkerDiedError) as info:
            await pool.apply(func)
        assert info.value.exitcode == exitcode
        assert [await r for r in results] == [0.05] * 10
        assert await pool.map(_work.inc, range(100)) == list(range(1, 101))
        stats = pool.statistics()
        assert stats.workers_alive == 2
        assert stats.workers_restarted == 1


async def test_map_fails_whole_call_when_a_worker_dies() -> None:
    async with aiomp.Pool(2) as pool:
        with pytest.raises(aiomp.WorkerDiedError) as info:
            await pool.starmap(_work.exit_on, [(i, 13) for i in range(40)], chunksize=4)
        assert info.value.exitcode == 7
        assert await pool.map(_work.inc, range(10)) == list(range(1, 11))


async def test_crash_among_gathered_applies() -> None:
    """The benchmark's crash workload: 20 gathered applies, one exits."""
    outcomes: list[Any] = [None] * 20

    async def call(i: int) -> None:
        try:
            if i == 7:
                outcomes[i] = await pool.apply(_work.exit_now, (1,))
            else:
                outcomes[i] = await pool.apply(_work.sleep, (0.02,))
        except aiomp.WorkerDiedError as error:
            outcomes[i] = error

    async with aiomp.Pool(2) as pool:
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(call, i)
        assert isinstance(outcomes[7], aiomp.WorkerDiedError)
        assert outcomes[:7] + outcomes[8:] == [0.02] * 19
        assert pool.statistics().workers_alive == 2


async def test_tasks_handed_to_a_dying_worker_run_exactly_once(tmp_path: Path) -> None:
    async with aiomp.Pool(1) as pool:
        # Teach the pool that tasks are tiny, so it hands the worker many at once.
        await pool.map(_work.inc, range(200), chunksize=1)
        files = [str(tmp_path / f"t{i}") for i in range(30)]
        first = pool.apply_async(_work.touch, (files[0], 0.3))
        doomed = pool.apply_async(_work.exit_now, (3,))
        rest = [pool.apply_async(_work.touch, (f,)) for f in files[1:]]
        assert await first == files[0]
        with pytest.raises(aiomp.WorkerDiedError):
            await doomed
        assert [await r for r in rest] == files[1:]
        for f in files:
            assert len(Path(f).read_text().splitlines()) == 1, f


# -- cancellation and timeouts ------------------------------------------------------


async def test_timeout_stops_a_running_task(tmp_path: Path, start_method: str) -> None:
    marker = str(tmp_path / "slow")
    async with aiomp.Pool(1, context=start_method) as pool:
        before = await pool.apply(_work.pid)
        with pytest.raises(TimeoutError):
            await pool.apply(_work.touch_first, (marker, 1.0), timeout=0.3)
        assert Path(marker + ".start").exists()
        after = await pool.apply(_work.pid)
        assert after != before  # the worker was replaced
        await anyio.sleep(1.0)
        assert not Path(marker + ".end").exists()  # the work really stopped


async def test_cancelled_queued_task_never_starts(tmp_path: Path) -> None:
    blocker = str(tmp_path / "blocker")
    queued = str(tmp_path / "queued")
    async with aiomp.Pool(1) as pool:
        running = pool.apply_async(_work.touch, (blocker, 0.5))
        with anyio.move_on_after(0.2):
            await pool.apply(_work.touch, (queued,))
        assert await running == blocker
        assert await pool.apply(_work.inc, (1,)) == 2
        assert not Path(queued).exists()


async def test_map_timeout_drops_the_rest(tmp_path: Path) -> None:
    files = [str(tmp_path / f"m{i}") for i in range(20)]
    async with aiomp.Pool(2) as pool:
        with pytest.raises(TimeoutError):
            await pool.starmap(_work.touch, [(f, 0.1) for f in files], chunksize=1, timeout=0.35)
        await anyio.sleep(0.5)
        ran = sum(Path(f).exists() for f in files)
        assert ran < 12, ran
        assert await pool.apply(_work.inc, (1,)) == 2


async def test_async_result_cancel(tmp_path: Path) -> None:
    async with aiomp.Pool(1) as pool:
        slow = pool.apply_async(_work.sleep, (10,))
        await anyio.sleep(0.2)
        assert slow.cancel() is True
        assert slow.cancel() is False
        assert slow.ready() and not slow.successful()
        import concurrent.futures

        with pytest.raises(concurrent.futures.CancelledError):
            await slow
        assert await pool.apply(_work.inc, (1,)) == 2


async def test_cancelling_a_finished_task_spares_the_next_one() -> None:
    async with aiomp.Pool(1) as pool:
        first = pool.apply_async(_work.sleep, (0.1,))
        second = pool.apply_async(_work.sleep, (1.0,))
        time.sleep(0.5)  # block the loop: first's result waits unread while second runs
        assert first.cancel() is True
        assert await second == 1.0
        assert pool.statistics().workers_restarted == 0


async def test_asyncio_task_cancel(anyio_backend: Any) -> None:
    if anyio_backend[0] != "asyncio":
        pytest.skip("asyncio.Task.cancel is asyncio's own")
    import asyncio

    async with aiomp.Pool(1) as pool:
        before = await pool.apply(_work.pid)
        task = asyncio.ensure_future(pool.apply(_work.sleep, (10,)))
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await pool.apply(_work.pid) != before


# -- AsyncResult -------------------------------------------------------------------------


async def test_async_results_and_callbacks() -> None:
    seen: list[Any] = []
    async with aiomp.Pool(2) as pool:
        r1 = pool.apply_async(_work.add, (2, 3), callback=seen.append)
        r2 = pool.map_async(_work.inc, range(5), callback=seen.append)
        r3 = pool.starmap_async(_work.add, [(1, 1)], callback=seen.append)
        r4 = pool.apply_async(_work.boom, (9,), error_callback=seen.append)
        assert await r1 == 5
        assert await r2.get(timeout=10) == [1, 2, 3, 4, 5]
        assert await r3 == [2]
        assert await r4.wait(10) is True
        assert r4.ready() and not r4.successful()
        with pytest.raises(ValueError, match="boom 9"):
            await r4.get()
        assert 5 in seen and [1, 2, 3, 4, 5] in seen and [2] in seen
        assert any(isinstance(x, ValueError) for x in seen)
        slow = pool.apply_async(_work.sleep, (0.5,))
        with pytest.raises(ValueError, match="not ready"):
            slow.successful()
        with pytest.raises(TimeoutError):
            await slow.get(timeout=0.05)
        assert await slow.wait(0.01) is False
        assert await slow == 0.5


async def test_map_async_with_async_iterable() -> None:
    async with aiomp.Pool(2) as pool:
        assert await pool.map_async(_work.inc, _pairs_first(4)) == [1, 2, 3, 4]


async def _pairs_first(n: int) -> Any:
    for i in range(n):
        yield i


# -- lifecycle -------------------------------------------------------------------------------


async def test_normal_exit_waits_for_pending_work() -> None:
    async with aiomp.Pool(2) as pool:
        pending = [pool.apply_async(_work.sleep, (0.1,)) for _ in range(6)]
        pids = set(await pool.map(_work.pid, range(2), chunksize=1))
    assert all(r.ready() and r.successful() for r in pending)
    assert [await r for r in pending] == [0.1] * 6
    assert not any(psutil.pid_exists(pid) for pid in pids)


async def test_exception_exit_terminates() -> None:
    with pytest.raises(ZeroDivisionError):
        async with aiomp.Pool(2) as pool:
            slow = pool.apply_async(_work.sleep, (30,))
            await anyio.sleep(0.2)
            raise ZeroDivisionError
    with pytest.raises(aiomp.PoolClosedError):
        await slow


async def test_cancelled_block_terminates() -> None:
    start = time.monotonic()
    with anyio.move_on_after(0.5):
        async with aiomp.Pool(2) as pool:
            await pool.apply(_work.sleep, (30,))
    assert time.monotonic() - start < 5


async def test_closed_pool_refuses_work() -> None:
    async with aiomp.Pool(1) as pool:
        with pytest.raises(ValueError, match="close"):
            await pool.join()
        pool.close()
        with pytest.raises(aiomp.PoolClosedError):
            await pool.apply(_work.inc, (1,))
        with pytest.raises(ValueError):  # PoolClosedError is a ValueError, as in the stdlib
            pool.map_async(_work.inc, [1])
        with pytest.raises(aiomp.PoolClosedError):
            pool.imap(_work.inc, [1])
        await pool.join()


async def test_pool_must_be_entered() -> None:
    pool = aiomp.Pool(1)
    with pytest.raises(RuntimeError, match="async with"):
        await pool.apply(_work.inc, (1,))


async def test_terminate_fails_pending_calls() -> None:
    async with aiomp.Pool(1) as pool:
        pending = [pool.apply_async(_work.sleep, (5,)) for _ in range(3)]
        await anyio.sleep(0.1)
        await pool.terminate()
        for r in pending:
            with pytest.raises(aiomp.PoolClosedError):
                await r
        with pytest.raises(aiomp.PoolClosedError):
            await pool.apply(_work.inc, (1,))


async def test_initializer(start_method: str) -> None:
    async with aiomp.Pool(2, initializer=_work.init_state, initargs=("ready",), context=start_method) as pool:
        assert await pool.map(_work.get_state, range(4)) == ["ready"] * 4


async def test_failing_initializer_breaks_the_pool_clearly() -> None:
    async with aiomp.Pool(1, initializer=_work.init_fail) as pool:
        with pytest.raises(aiomp.BrokenPoolError, match="initializer failed on purpose") as info:
            await pool.apply(_work.inc, (1,), timeout=30)
        assert isinstance(info.value.__cause__, RuntimeError)
        with pytest.raises(aiomp.BrokenPoolError):
            await pool.apply(_work.inc, (1,))


async def test_maxtasksperchild_replaces_workers_without_deadlock(start_method: str) -> None:
    async with aiomp.Pool(2, maxtasksperchild=3, context=start_method) as pool:
        pids = await pool.map(_work.pid, range(30), chunksize=1)
        assert len(set(pids)) >= 10
        assert await pool.map(_work.inc, range(50), chunksize=1) == list(range(1, 51))


async def test_worker_niceness(start_method: str) -> None:
    mine = os.nice(0)
    async with aiomp.Pool(1, context=start_method) as pool:
        assert await pool.apply(os.nice, (0,)) == min(19, mine + 5)
    async with aiomp.Pool(1, worker_niceness=0, context=start_method) as pool:
        assert await pool.apply(os.nice, (0,)) == mine


async def test_statistics() -> None:
    async with aiomp.Pool(2) as pool:
        await pool.map(_work.inc, range(10), chunksize=1)
        stats = pool.statistics()
        assert stats.processes == 2
        assert stats.tasks_completed >= 10
        assert stats.tasks_queued == 0 and stats.tasks_running == 0
        assert pool.processes == 2


async def test_large_arrays_round_trip() -> None:
    np = pytest.importorskip("numpy")
    arr = np.arange(4 * 1024 * 1024, dtype=np.float64)  # 32 MiB
    async with aiomp.Pool(2) as pool:
        assert await pool.map(_work.array_sum, [arr, arr + 1]) == [float(arr.sum()), float((arr + 1).sum())]
        back = await pool.apply(_work.echo, (arr,))
        assert np.array_equal(back, arr)
        blob = bytes(range(256)) * (64 * 1024)  # 16 MiB of bytes
        assert await pool.apply(_work.echo, (blob,)) == blob


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"processes": 0}, ValueError, "processes"),
        ({"processes": -1}, ValueError, "processes"),
        ({"processes": "2"}, TypeError, "processes"),
        ({"processes": 2.0}, TypeError, "processes"),
        ({"maxtasksperchild": 0}, ValueError, "maxtasksperchild"),
        ({"child_concurrency": 0}, ValueError, "child_concurrency"),
        ({"initializer": 3}, TypeError, "initializer"),
        ({"initargs": 3}, TypeError, "initargs"),
        ({"context": "bogus"}, ValueError, "context"),
        ({"context": 3}, TypeError, "context"),
        ({"backend": object()}, TypeError, "backend"),
        ({"worker_niceness": -1}, ValueError, "worker_niceness"),
        ({"worker_niceness": 20}, ValueError, "worker_niceness"),
        ({"worker_niceness": "5"}, TypeError, "worker_niceness"),
    ],
)
def test_bad_pool_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        aiomp.Pool(**kwargs)


async def test_bad_call_arguments() -> None:
    async with aiomp.Pool(1) as pool:
        with pytest.raises(TypeError, match="func must be callable"):
            await pool.apply(3)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="func must be callable"):
            await pool.map(None, [1])  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="chunksize"):
            await pool.map(_work.inc, [1], chunksize=0)
        with pytest.raises(ValueError, match="chunksize"):
            pool.imap(_work.inc, [1], chunksize=-1)
        with pytest.raises(TypeError, match="chunksize"):
            await pool.map(_work.inc, [1], chunksize=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            await pool.apply(_work.inc, (1,), timeout=-1)
        with pytest.raises(ValueError, match="timeout"):
            await pool.map(_work.inc, [1], timeout=math.nan)
        with pytest.raises(TypeError, match="timeout"):
            await pool.apply(_work.inc, (1,), timeout="1")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="args"):
            await pool.apply(_work.inc, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="kwds"):
            await pool.apply(_work.inc, (1,), [1])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="iterable"):
            await pool.map(_work.inc, 5)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="callback"):
            pool.apply_async(_work.inc, (1,), callback=5)  # type: ignore[arg-type]
        # The pool is still fine.
        assert await pool.apply(_work.inc, (1,)) == 2


async def test_finished_calls_leave_no_reference_cycles() -> None:
    """Results are freed by refcount; a cycle would hold them for the collector's next pause."""
    from aiomp.backends import Task

    async with aiomp.Pool(1) as pool:
        await pool.map(_work.inc, range(10))
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                await pool.map(_work.inc, range(100), chunksize=10)
                await pool.apply(_work.inc, (1,))
                await pool.apply_async(_work.inc, (1,), callback=lambda _: None)
                assert [x async for x in pool.imap(_work.inc, range(5))] == [1, 2, 3, 4, 5]
            gc.set_debug(gc.DEBUG_SAVEALL)
            gc.collect()
            cycles = [o for o in gc.garbage if isinstance(o, (aiomp.AsyncResult, aiomp.IMapIterator, Task))]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        assert not cycles


async def test_cancel_just_after_the_worker_takes_the_task_stops_it() -> None:
    """The parent and the worker agree through shared memory whether a task started."""
    async with aiomp.Pool(1) as pool:
        for i in range(15):
            first = pool.apply_async(_work.inc, (i,))
            second = pool.apply_async(_work.sleep, (5,))
            assert await first == i + 1
            second.cancel()
            start = time.monotonic()
            assert await pool.apply(_work.inc, (1,)) == 2
            assert time.monotonic() - start < 3, f"try {i}: the cancelled task kept its worker busy"


async def test_stopping_a_plain_task_spares_a_coroutine_beside_it() -> None:
    async with aiomp.Pool(1) as pool:
        coroutine = pool.apply_async(_work.asleep, (1.5,))
        await anyio.sleep(0.2)
        with pytest.raises(TimeoutError):
            await pool.apply(_work.sleep, (10,), timeout=0.5)
        assert await coroutine == 1.5  # rerun elsewhere, not failed


async def test_map_async_over_an_async_iterable_outlives_close() -> None:
    async with aiomp.Pool(2) as pool:
        left = pool.map_async(_work.inc, _slow_source(4))
        inside = pool.map_async(_work.inc, _slow_source(3))
        pool.close()
        await pool.join()
        assert await inside == [1, 2, 3]
    assert await left == [1, 2, 3, 4]


async def _slow_source(n: int) -> Any:
    for i in range(n):
        await anyio.sleep(0.05)
        yield i


async def test_imap_yields_results_while_an_async_source_is_slow() -> None:
    async def source() -> Any:
        yield 1
        yield 2
        await anyio.sleep(30)  # a source that stalls after two items
        yield 3

    async with aiomp.Pool(2) as pool:
        results = pool.imap(_work.inc, source())
        with anyio.fail_after(10):
            assert [await results.__anext__(), await results.__anext__()] == [2, 3]
        await results.aclose()


async def test_imap_feedback_source_does_not_deadlock() -> None:
    """The source yields its next item only after the previous result came back."""
    got: list[int] = []
    arrived = anyio.Event()

    async def source() -> Any:
        nonlocal arrived
        for i in range(4):
            yield i
            await arrived.wait()
            arrived = anyio.Event()

    async with aiomp.Pool(2) as pool:
        with anyio.fail_after(20):
            async for value in pool.imap(_work.inc, source()):
                got.append(value)
                arrived.set()
    assert got == [1, 2, 3, 4]


async def test_cancelling_one_anext_keeps_the_iteration() -> None:
    async def source() -> Any:
        for i in range(6):
            if i == 2:
                await anyio.sleep(1.0)
            yield i

    async with aiomp.Pool(2) as pool:
        results = pool.imap(_work.inc, source())
        got: list[int] = []
        timeouts = 0
        with anyio.fail_after(20):
            while True:
                with anyio.move_on_after(0.3) as scope:
                    try:
                        got.append(await results.__anext__())
                    except StopAsyncIteration:
                        break
                timeouts += scope.cancelled_caught
        assert got == [1, 2, 3, 4, 5, 6]
        assert timeouts >= 1
