"""The Pool API tests that every backend passes: subclass ``PoolAPITests`` in a test module.

The module provides two fixtures: ``pool_backend``, a function that makes a fresh
backend for one pool (of at least one worker), and ``lose_worker``, a task function
that makes that backend lose the worker running it. ``test_backend_seam.py`` runs
these tests on the in-process fake backend, ``test_dask.py`` on a Dask cluster.

They say nothing about where tasks run: work is observed through return values,
files (``_gates``) and ``statistics()``, every wait is bounded, and a count that
depends on the size of the pool is derived from ``pool.processes``.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest

import aiomp
from aiomp.backends import Backend

from . import _gates, _work
from ._gates import Gate, wait_until

MakeBackend = Callable[[], Backend]


async def _idle(pool: aiomp.Pool, seconds: float = 30) -> None:
    """Wait until the pool has no task running (a stopped task's slot is freed asynchronously)."""
    await wait_until(lambda: pool.statistics().tasks_running == 0, seconds, "tasks still running")


@pytest.mark.anyio
class PoolAPITests:
    async def test_apply_map_and_starmap(self, pool_backend: MakeBackend) -> None:
        async with aiomp.Pool(backend=pool_backend()) as pool:
            assert await pool.apply(_work.add, (1, 2)) == 3
            assert await pool.apply(_work.kw, (1,), {"b": 2}) == (1, 2)
            assert await pool.map(_work.inc, range(100)) == list(range(1, 101))
            assert await pool.map(_work.inc, range(10), chunksize=3) == list(range(1, 11))
            assert await pool.map(_work.inc, []) == []
            assert await pool.starmap(_work.add, [(1, 2), (3, 4)]) == [3, 7]
            assert await pool.starmap_async(_work.add, [(5, 6)]) == [11]

    async def test_lambdas_and_closures(self, pool_backend: MakeBackend) -> None:
        factor = 3

        def scale(x: int) -> int:
            return x * factor

        async with aiomp.Pool(backend=pool_backend()) as pool:
            assert await pool.apply(lambda: 5) == 5
            assert await pool.map(lambda x: x * 2, range(4)) == [0, 2, 4, 6]
            assert await pool.map(scale, range(3)) == [0, 3, 6]
            assert await pool.starmap(lambda a, b: a - b, [(5, 2)]) == [3]

    async def test_async_def_functions_and_async_sources(self, pool_backend: MakeBackend) -> None:
        async def source(n: int) -> AsyncIterator[int]:
            for i in range(n):
                yield i

        async def double(x: int) -> int:
            await anyio.lowlevel.checkpoint()
            return 2 * x

        async with aiomp.Pool(backend=pool_backend()) as pool:
            assert await pool.apply(double, (1,)) == 2
            assert await pool.map(double, [1, 2, 3], chunksize=2) == [2, 4, 6]
            assert await pool.map(_work.inc, source(20)) == list(range(1, 21))
            assert await pool.map_async(_work.inc, source(5)) == [1, 2, 3, 4, 5]

    async def test_map_results_keep_input_order_when_chunks_finish_out_of_order(
        self, pool_backend: MakeBackend, tmp_path: Path
    ) -> None:
        async with aiomp.Pool(backend=pool_backend()) as pool:
            result = pool.starmap_async(_gates.hold_item, [(str(tmp_path), i) for i in range(4)], chunksize=1)
            for i in reversed(range(4)):
                Gate(tmp_path, str(i)).release()
                await anyio.lowlevel.checkpoint()
            with anyio.fail_after(30):
                assert await result == [0, 1, 2, 3]

    async def test_imap_and_imap_unordered(self, pool_backend: MakeBackend) -> None:
        async with aiomp.Pool(backend=pool_backend()) as pool:
            assert [x async for x in pool.imap(_work.inc, range(10), chunksize=3)] == list(range(1, 11))
            assert sorted([x async for x in pool.imap_unordered(_work.inc, range(10))]) == list(range(1, 11))

    async def test_async_forms_and_callbacks(self, pool_backend: MakeBackend) -> None:
        got: list[object] = []
        async with aiomp.Pool(backend=pool_backend()) as pool:
            one = pool.apply_async(_work.add, (1, 2), callback=got.append)
            many = pool.map_async(_work.inc, range(3), callback=got.append)
            bad = pool.apply_async(_work.boom, (1,), error_callback=got.append)
            assert await one == 3
            assert await many == [1, 2, 3]
            with pytest.raises(ValueError, match="boom 1"):
                await bad
            assert one.successful() and not bad.successful()
        # Each callback once, in the order the calls finished.
        assert len(got) == 3 and 3 in got and [1, 2, 3] in got
        assert any(isinstance(x, ValueError) for x in got)

    async def test_errors_keep_their_type_and_remote_traceback(self, pool_backend: MakeBackend) -> None:
        async with aiomp.Pool(backend=pool_backend()) as pool:
            with pytest.raises(ValueError, match="boom 7") as info:
                await pool.apply(_work.boom, (7,))
            assert isinstance(info.value.__cause__, aiomp.RemoteTraceback)
            assert "boom 7" in str(info.value.__cause__)
            with pytest.raises(ValueError, match="item 5 is bad"):
                await pool.starmap(_work.fail_on, [(i, 5) for i in range(10)], chunksize=2)
            assert await pool.apply(_work.inc, (1,)) == 2  # the pool goes on

    async def test_a_lost_worker_is_worker_died_error(
        self, pool_backend: MakeBackend, lose_worker: Callable[[], None]
    ) -> None:
        async with aiomp.Pool(backend=pool_backend()) as pool:
            with anyio.fail_after(30), pytest.raises(aiomp.WorkerDiedError):
                await pool.apply(lose_worker)
            assert pool.statistics().workers_restarted >= 1
            with anyio.fail_after(30):
                assert await pool.apply(_work.inc, (1,)) == 2  # the pool goes on

    async def test_timeout_stops_a_running_task(self, pool_backend: MakeBackend, tmp_path: Path) -> None:
        gate = Gate(tmp_path, "held")
        async with aiomp.Pool(backend=pool_backend()) as pool:
            with pytest.raises(TimeoutError):
                await pool.apply(_gates.hold, (gate.path,), timeout=0.5)
            if gate.started():  # else it had not started yet (a busy machine): it was dropped
                await gate.wait_stopped()
            await _idle(pool)
            with anyio.fail_after(30):
                assert await pool.map(_work.inc, range(3), timeout=30) == [1, 2, 3]

    async def test_cancel_stops_a_running_task(self, pool_backend: MakeBackend, tmp_path: Path) -> None:
        gate = Gate(tmp_path, "held")
        async with aiomp.Pool(backend=pool_backend()) as pool:
            result = pool.apply_async(_gates.hold, (gate.path,))
            await gate.wait_started()
            assert result.cancel()
            await gate.wait_stopped()
            await _idle(pool)
            with pytest.raises(concurrent.futures.CancelledError):
                await result

    async def test_cancelling_queued_work_drops_it(self, pool_backend: MakeBackend, tmp_path: Path) -> None:
        async with aiomp.Pool(backend=pool_backend()) as pool:
            # More blockers than the backend runs or takes at once: some wait in its queue.
            gates = [Gate(tmp_path, f"blocker{i}") for i in range(4 * pool.processes + 2)]
            blockers = [pool.apply_async(_gates.hold, (gate.path, "blocker")) for gate in gates]
            await gates[0].wait_started()
            queued_file = tmp_path / "queued"
            queued = pool.apply_async(_gates.touch, (str(queued_file),))
            before = pool.statistics().tasks_queued
            assert before >= 1
            assert queued.cancel()
            assert pool.statistics().tasks_queued == before - 1
            with pytest.raises(concurrent.futures.CancelledError):
                await queued
            # A waiting map that is cancelled drops its chunks too.
            mapped_file = tmp_path / "mapped"
            with anyio.move_on_after(30) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pool.map, _gates.touch, [str(mapped_file)] * 4, 1)
                    await wait_until(lambda: pool.statistics().tasks_queued >= before + 3, 10, "the map queued")
                    tg.cancel_scope.cancel()
            assert not scope.cancelled_caught
            assert pool.statistics().tasks_queued == before - 1
            for gate in gates:
                gate.release()
            with anyio.fail_after(30):
                assert [await blocker for blocker in blockers] == ["blocker"] * len(gates)
                await pool.apply(_gates.touch, (str(tmp_path / "after"),))
        assert (tmp_path / "after").exists()
        assert not queued_file.exists() and not mapped_file.exists()

    async def test_close_join_and_terminate(self, pool_backend: MakeBackend, tmp_path: Path) -> None:
        async with aiomp.Pool(backend=pool_backend()) as pool:
            pending = pool.map_async(_work.inc, range(5))
            pool.close()
            with pytest.raises(aiomp.PoolClosedError):
                await pool.apply(_work.inc, (1,))
            with anyio.fail_after(30):
                await pool.join()
            assert await pending == [1, 2, 3, 4, 5]

        gates = [Gate(tmp_path, "running"), Gate(tmp_path, "other")]
        async with aiomp.Pool(backend=pool_backend()) as pool:
            results = [pool.apply_async(_gates.hold, (gate.path,)) for gate in gates]
            await gates[0].wait_started()
            with anyio.fail_after(30):
                await pool.terminate()
            for result in results:
                with pytest.raises(aiomp.PoolClosedError):
                    await result
            for gate in gates:
                if gate.started():
                    await gate.wait_stopped()

    async def test_statistics(self, pool_backend: MakeBackend, tmp_path: Path) -> None:
        gate = Gate(tmp_path, "held")
        async with aiomp.Pool(backend=pool_backend()) as pool:
            assert pool.processes >= 1
            await pool.map(_work.inc, range(10), chunksize=5)
            held = pool.apply_async(_gates.hold, (gate.path,))
            await gate.wait_started()
            stats = pool.statistics()
            assert isinstance(stats, aiomp.PoolStatistics)
            assert stats.processes == pool.processes
            assert (stats.tasks_queued, stats.tasks_running, stats.tasks_completed) == (0, 1, 2)
            # A remote engine may learn of its workers a moment later than they run the task.
            await wait_until(lambda: pool.statistics().workers_alive >= 1, 10, "a worker alive")
            gate.release()
            with anyio.fail_after(30):
                await held
            assert pool.statistics().tasks_completed == 3
