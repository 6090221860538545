"""The Pool's calls, under every event loop and start method."""

from __future__ import annotations

import functools
import gc
import math
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import aiomp

from . import _faults, _work
from ._work import wait_until
from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

# asyncio's own Task.cancel() exists only on asyncio's loops (the default one and uvloop).
ASYNCIO_LOOPS = [param for param in BACKENDS if param.values[0][0] == "asyncio"]


def _gone(pid: int) -> bool:
    """The process ``pid`` has exited (a zombie not reaped yet counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


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


async def test_imap_order_and_unordered(start_method: str, tmp_path: Path) -> None:
    def items(run: str) -> list[tuple[str | None, str, str]]:
        """Four items; the first finishes only after the second has (each worker takes one)."""
        marks = [str(tmp_path / f"{run}{i}") for i in range(4)]
        return [(marks[1], marks[0], "a"), (None, marks[1], "b"), (None, marks[2], "c"), (None, marks[3], "d")]

    async with aiomp.Pool(2, context=start_method) as pool:
        with anyio.fail_after(60):
            ordered = [x async for x in pool.imap(_work.after_star, items("ordered"))]
            assert ordered == ["a", "b", "c", "d"]  # input order, though "b" finished before "a"
            # "a" waits for a file made only once "b" has come out: completion order.
            release = str(tmp_path / "release")
            unordered_items = [(release, str(tmp_path / "u0"), "a"), *items("unordered")[1:]]
            unordered = []
            async for x in pool.imap_unordered(_work.after_star, unordered_items):
                unordered.append(x)
                if x == "b":
                    Path(release).write_text("x")
            assert sorted(unordered) == ["a", "b", "c", "d"]
            assert unordered.index("b") < unordered.index("a")
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
        # Each call returns only once all 8 are inside at once, in the one worker.
        meet = functools.partial(_work.meet, uuid.uuid4().hex, 8)
        with anyio.fail_after(60):
            assert max(await pool.map(meet, range(8), chunksize=1)) == 8
        assert await pool.map(_work.asleep, [0.01] * 8, chunksize=1) == [0.01] * 8
        assert await pool.apply(_work.asleep, (0,)) == 0
        with pytest.raises(KeyError, match="nope"):
            await pool.apply(_work.araise, ("nope",))


async def test_child_concurrency_limits_coroutines() -> None:
    async with aiomp.Pool(1, child_concurrency=2) as pool:
        # Each waits until two are inside: two at once must run. The worker holds three of
        # them at once (two plus one ahead), so a third let in beside them would count.
        meet = functools.partial(_work.meet, uuid.uuid4().hex, 2)
        with anyio.fail_after(60):
            assert max(await pool.map(meet, range(4), chunksize=1)) == 2


async def test_cancelling_a_running_coroutine_keeps_the_worker(tmp_path: Path) -> None:
    started, never = tmp_path / "started", tmp_path / "never"
    async with aiomp.Pool(1) as pool:
        before = await pool.apply(_work.pid)
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.apply, _work.agated, (str(started), str(never)))
                await wait_until(lambda: _work.pids(started), "the coroutine to start")
                tg.cancel_scope.cancel()
            # The coroutine itself was cancelled in the worker, not left running there.
            await wait_until(lambda: _work.pids(f"{started}.cancelled"), "the coroutine to see its cancellation")
        assert _work.pids(started) == _work.pids(f"{started}.cancelled") == [before]
        assert await pool.apply(_work.pid) == before
        assert pool.statistics().workers_restarted == 0


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
        await wait_until(lambda: pool.statistics().workers_alive == 2, "the replacement to start")
        assert pool.statistics().workers_restarted == 1


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
        await wait_until(lambda: pool.statistics().workers_alive == 2, "the replacement to start")
        assert pool.statistics().workers_restarted == 1


async def test_tasks_handed_to_a_dying_worker_run_exactly_once(tmp_path: Path) -> None:
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    async with aiomp.Pool(1) as pool:
        # Teach the pool that tasks are tiny, so it hands the worker many at once.
        await pool.map(_work.inc, range(200), chunksize=1)
        coroutines = [str(tmp_path / f"c{i}") for i in range(10)]
        files = [str(tmp_path / f"t{i}") for i in range(20)]
        with anyio.fail_after(60):
            first = pool.apply_async(_work.gated, (started, go, "first"))
            doomed = pool.apply_async(_work.exit_now, (3,))
            # Coroutines are handed to a busy worker whatever the pool has learnt about
            # task times (up to child_concurrency of them); the plain tasks behind them
            # are handed too if the warm-up taught the pool they are tiny.
            handed = [pool.apply_async(_work.atouch, (f,)) for f in coroutines]
            rest = [pool.apply_async(_work.touch, (f,)) for f in files]
            await wait_until(lambda: _work.pids(started), "the first task to start")
            assert pool.statistics().tasks_running >= 2 + len(coroutines)
            Path(go).write_text("go")  # the worker finishes the first task, then dies on the next
            assert await first == "first"
            with pytest.raises(aiomp.WorkerDiedError) as info:
                await doomed
            assert info.value.exitcode == 3
            assert [await r for r in handed] == coroutines
            assert [await r for r in rest] == files
        for f in coroutines + files:
            assert len(Path(f).read_text().splitlines()) == 1, f
        assert pool.statistics().workers_restarted == 1


# -- cancellation and timeouts ------------------------------------------------------


async def test_timeout_stops_a_running_task(tmp_path: Path, start_method: str) -> None:
    started, never = str(tmp_path / "started"), str(tmp_path / "never")
    async with aiomp.Pool(1, context=start_method) as pool:
        before = await pool.apply(_work.pid)  # the worker is ready
        # The task runs until it is stopped (its gate never opens). The timeout is the
        # feature: it leaves an idle, ready worker ample time to start the task.
        with pytest.raises(TimeoutError):
            await pool.apply(_work.gated, (started, never), timeout=2)
        assert _work.pids(started) == [before], "the task had not started when the timeout fired"
        with anyio.fail_after(30):
            await wait_until(lambda: _gone(before), "the worker that ran the task to end")  # the work really stopped
            after = await pool.apply(_work.pid)
        assert after != before  # the worker was replaced
        assert pool.statistics().workers_restarted == 1


async def test_cancelled_queued_task_never_starts(tmp_path: Path) -> None:
    started, go = str(tmp_path / "started"), str(tmp_path / "go")
    queued = str(tmp_path / "queued")
    async with aiomp.Pool(1) as pool:
        with anyio.fail_after(60):
            running = pool.apply_async(_work.gated, (started, go, "blocker"))
            await wait_until(lambda: _work.pids(started), "the blocker to start")
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.apply, _work.touch, (queued,))
                # Queued in the pool, or handed to the busy worker behind the blocker.
                await wait_until(lambda: _submitted(pool) == 2, "the second call to be submitted")
                tg.cancel_scope.cancel()
            assert tg.cancel_scope.cancelled_caught
            Path(go).write_text("go")
            assert await running == "blocker"
            # The worker takes tasks in order: had the cancelled one been kept, it ran by now.
            assert await pool.apply(_work.inc, (1,)) == 2
        assert not Path(queued).exists()
        assert pool.statistics().workers_restarted == 0


def _submitted(pool: aiomp.Pool) -> int:
    stats = pool.statistics()
    return stats.tasks_queued + stats.tasks_running


async def test_map_timeout_drops_the_rest(tmp_path: Path) -> None:
    starts = [str(tmp_path / f"m{i}") for i in range(20)]
    never = str(tmp_path / "never")
    async with aiomp.Pool(2) as pool:
        await _faults_rendezvous(pool, tmp_path)  # both workers are ready
        # No item can finish (the gate never opens): each worker runs one until it is stopped.
        with pytest.raises(TimeoutError):
            await pool.starmap(_work.gated, [(f, never) for f in starts], chunksize=1, timeout=1)
        with anyio.fail_after(30):
            # Nothing of the map is left: a dropped item that ran anyway would block here.
            await wait_until(
                lambda: _submitted(pool) == 0 and pool.statistics().workers_alive == 2, "the map's work to stop"
            )
            assert await pool.map(_work.inc, range(20), chunksize=1) == list(range(1, 21))
        ran = [pid for f in starts for pid in _work.pids(f)]
        assert len(ran) <= 2, f"{len(ran)} items started: at most one per worker may have"
        assert pool.statistics().workers_restarted == len(ran)  # each running one was stopped
        assert all(_gone(pid) for pid in ran)
        assert await pool.apply(_work.inc, (1,)) == 2


async def _faults_rendezvous(pool: aiomp.Pool, tmp_path: Path) -> None:
    """Return once every worker of ``pool`` serves (each holds one of these tasks at once)."""
    directory = tmp_path / f"rendezvous-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    meet = functools.partial(_faults.rendezvous, str(directory), pool.processes)
    with anyio.fail_after(60):
        met = await pool.map(meet, range(pool.processes), chunksize=1)
    assert len({pid for pid, _, _ in met}) == pool.processes


async def test_async_result_cancel(tmp_path: Path) -> None:
    started, never = str(tmp_path / "started"), str(tmp_path / "never")
    async with aiomp.Pool(1) as pool:
        slow = pool.apply_async(_work.gated, (started, never))
        await wait_until(lambda: _work.pids(started), "the task to start")
        assert slow.cancel() is True
        assert slow.cancel() is False
        assert slow.ready() and not slow.successful()
        import concurrent.futures

        with pytest.raises(concurrent.futures.CancelledError):
            await slow
        with anyio.fail_after(30):  # a task left running would hold the only worker until its gate gave up
            assert await pool.apply(_work.inc, (1,)) == 2
        assert pool.statistics().workers_restarted == 1  # the running task was stopped with its worker


async def test_cancelling_a_finished_task_spares_the_next_one(tmp_path: Path) -> None:
    first_started, first_go = str(tmp_path / "first"), str(tmp_path / "first-go")
    second_started, second_go = str(tmp_path / "second"), str(tmp_path / "second-go")
    async with aiomp.Pool(1) as pool:
        first = pool.apply_async(_work.gated, (first_started, first_go, 1))
        second = pool.apply_async(_work.gated, (second_started, second_go, 2))
        with anyio.fail_after(30):
            await wait_until(
                lambda: bool(_work.pids(first_started)) and pool.statistics().tasks_running == 2,
                "the first task to start, the second handed to the worker",
            )
        for _ in range(3):
            await anyio.sleep(0)  # the writer, woken when second was handed over, sends it
        # Block the loop, so that first's result waits unread, until second runs.
        Path(first_go).write_text("go")
        _work.wait_for_file(second_started, timeout=30)
        assert not first.ready()
        assert first.cancel() is True  # first has finished in the worker: nothing to stop
        Path(second_go).write_text("go")
        with anyio.fail_after(30):
            assert await second == 2
        assert pool.statistics().workers_restarted == 0
        assert _work.pids(second_started) == _work.pids(first_started)


@pytest.mark.parametrize("anyio_backend", ASYNCIO_LOOPS)
async def test_asyncio_task_cancel(anyio_backend: Any, tmp_path: Path) -> None:
    import asyncio

    started, never = str(tmp_path / "started"), str(tmp_path / "never")
    async with aiomp.Pool(1) as pool:
        before = await pool.apply(_work.pid)
        task = asyncio.ensure_future(pool.apply(_work.gated, (started, never)))
        with anyio.fail_after(30):
            await wait_until(lambda: _work.pids(started), "the task to start")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with anyio.fail_after(30):
            assert await pool.apply(_work.pid) != before  # the running task was stopped with its worker
        assert _work.pids(started) == [before]
        assert pool.statistics().workers_restarted == 1


# -- AsyncResult -------------------------------------------------------------------------


async def test_async_results_and_callbacks(tmp_path: Path) -> None:
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
        go = tmp_path / "go"
        slow = pool.apply_async(_work.gated, (str(tmp_path / "started"), str(go), "slow"))
        with pytest.raises(ValueError, match="not ready"):
            slow.successful()
        with pytest.raises(TimeoutError):
            await slow.get(timeout=0.05)
        assert await slow.wait(0.01) is False
        go.write_text("go")
        with anyio.fail_after(30):
            assert await slow.wait(30) is True
            assert await slow == "slow"


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


async def test_exception_exit_terminates(tmp_path: Path) -> None:
    started, never = str(tmp_path / "started"), str(tmp_path / "never")
    with pytest.raises(ZeroDivisionError), anyio.fail_after(30):
        async with aiomp.Pool(2) as pool:
            slow = pool.apply_async(_work.gated, (started, never))
            await wait_until(lambda: _work.pids(started), "the task to start")
            raise ZeroDivisionError
    with pytest.raises(aiomp.PoolClosedError):
        await slow
    assert all(_gone(pid) for pid in _work.pids(started))  # terminated, not joined


async def test_cancelled_block_terminates(tmp_path: Path) -> None:
    started, never = str(tmp_path / "started"), str(tmp_path / "never")
    with anyio.fail_after(60), anyio.CancelScope() as scope:
        async with aiomp.Pool(2) as pool:
            # Awaiting an AsyncResult does not stop its task when cancelled: only the
            # block's exit can (its gate never opens: joined, it would run 30 s).
            call = pool.apply_async(_work.gated, (started, never))
            await wait_until(lambda: _work.pids(started), "the task to start")
            cancelled = time.monotonic()
            scope.cancel()
            await call
    assert scope.cancelled_caught
    assert time.monotonic() - cancelled < 15, "the block waited for the task instead of terminating it"
    assert all(_gone(pid) for pid in _work.pids(started))


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


async def test_terminate_fails_pending_calls(tmp_path: Path) -> None:
    started, never = str(tmp_path / "started"), str(tmp_path / "never")
    async with aiomp.Pool(1) as pool:
        pending = [pool.apply_async(_work.gated, (started, never)) for _ in range(3)]
        await wait_until(lambda: _work.pids(started), "the first task to start")
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


async def test_cancel_just_after_the_worker_takes_the_task_stops_it(tmp_path: Path) -> None:
    """The parent and the worker agree through shared memory whether a task started."""
    never = str(tmp_path / "never")
    async with aiomp.Pool(1) as pool:
        for i in range(15):
            started = str(tmp_path / f"started{i}")
            first = pool.apply_async(_work.inc, (i,))
            second = pool.apply_async(_work.gated, (started, never), {"timeout": 60})
            assert await first == i + 1
            second.cancel()
            # Never started, or stopped with its worker: else it holds the only worker
            # until its gate gives up, a minute from now.
            try:
                with anyio.fail_after(30):
                    assert await pool.apply(_work.inc, (1,)) == 2
            except TimeoutError:
                pytest.fail(f"try {i}: the cancelled task kept its worker busy")
            assert all(_gone(pid) for pid in _work.pids(started)), f"try {i}: the cancelled task still runs"


async def test_stopping_a_plain_task_spares_a_coroutine_beside_it(tmp_path: Path) -> None:
    coroutine_started, go = str(tmp_path / "coroutine"), str(tmp_path / "go")
    plain_started, never = str(tmp_path / "plain"), str(tmp_path / "never")
    async with aiomp.Pool(1) as pool:
        with anyio.fail_after(60):
            coroutine = pool.apply_async(_work.agated, (coroutine_started, go, "coroutine"))
            await wait_until(lambda: _work.pids(coroutine_started), "the coroutine to start")
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.apply, _work.gated, (plain_started, never))
                await wait_until(lambda: _work.pids(plain_started), "the plain task to start beside it")
                tg.cancel_scope.cancel()  # stops the plain task: its worker is killed
            await wait_until(lambda: pool.statistics().workers_restarted == 1, "the worker to be replaced")
            Path(go).write_text("go")
            assert await coroutine == "coroutine"  # rerun elsewhere, not failed
        killed = _work.pids(plain_started)
        assert _work.pids(coroutine_started) == [*killed, await pool.apply(_work.pid)]


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
        await anyio.sleep_forever()  # a source that stalls after two items
        yield 3

    async with aiomp.Pool(2) as pool:
        results = pool.imap(_work.inc, source())
        with anyio.fail_after(30):
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
    stalled = anyio.Event()

    async def source() -> Any:
        for i in range(6):
            if i == 2:
                await stalled.wait()  # until an __anext__ has been cancelled
            yield i

    async with aiomp.Pool(2) as pool:
        results = pool.imap(_work.inc, source())
        got: list[int] = []
        timeouts = 0
        with anyio.fail_after(30):
            while True:
                with anyio.move_on_after(0.3) as scope:
                    try:
                        got.append(await results.__anext__())
                    except StopAsyncIteration:
                        break
                if scope.cancelled_caught:
                    timeouts += 1
                    stalled.set()
        assert got == [1, 2, 3, 4, 5, 6]
        assert timeouts >= 1


async def test_len_of_imap_is_the_number_of_results_to_come(anyio_backend: Any) -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(3):
            yield i

    with anyio.fail_after(60):
        async with aiomp.Pool(2) as pool:
            results = pool.imap(_work.inc, range(10), chunksize=3)
            assert len(results) == 10  # what tqdm reads for its total
            assert await results.__anext__() == 1
            assert len(results) == 9
            assert [x async for x in results] == list(range(2, 11))
            assert len(results) == 0
            unordered = pool.imap_unordered(_work.inc, [1, 2, 3])
            assert len(unordered) == 3
            assert sorted([x async for x in unordered]) == [2, 3, 4]
            for source in (iter(range(3)), numbers()):
                unsized = pool.imap(_work.inc, source)
                with pytest.raises(TypeError, match="needs a source with a length"):
                    len(unsized)
                await unsized.aclose()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_plain_asyncio_run_handles_bursts_and_big_results(loop: str) -> None:
    """Under ``asyncio.run`` (no anyio around it), results are read in a selector callback,
    outside any task: a burst that fills the backlog and a big result unpickled in a thread
    both start tasks from there."""
    import asyncio

    async def main() -> None:
        async with aiomp.Pool(2) as pool:
            calls = [pool.apply(_work.add, (i, 1)) for i in range(3000)]
            assert await asyncio.wait_for(asyncio.gather(*calls), 60) == [i + 1 for i in range(3000)]
            blob = await asyncio.wait_for(pool.apply(_work.echo, (b"x" * (4 << 20),)), 60)
            assert len(blob) == 4 << 20

    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        uvloop.run(main())
    else:
        asyncio.run(main())
