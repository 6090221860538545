"""Faults, under every event loop and start method: whatever happens to a worker,
nothing hangs, the caller sees one clear error, only the failed task is lost, and
the pool recovers.

Faults are injected from inside the worker where that can be made deterministic
(one-shot token files, see ``tests/_faults.py``); runs are counted through files
under ``tmp_path``. tests/test_pool.py covers a task that kills its own worker
(exit, SIGKILL, segfault) and handed tasks that run once after such a death; this
file covers the other stages of a worker's life, broken start-up, maxtasksperchild
with work queued, memory limits, failing sources, backpressure and a long soak.
"""

from __future__ import annotations

import functools
import math
import os
import resource
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import aiomp

from . import _faults, _work

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("error")]

MiB = 1 << 20
KILLED = -signal.SIGKILL


# -- helpers (parent side) --------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Poll ``condition`` (cheap state: files, statistics) for at most ``timeout`` seconds."""
    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.005)
    assert condition(), f"timed out after {timeout} s waiting for {what}"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def pids_in(path: Path) -> list[int]:
    return [int(line.split()[0]) for line in lines(path)]


def runs(directory: Path, items: range) -> dict[int, list[int]]:
    """The pids that ran each item (``_faults.record`` writes one line per run)."""
    return {i: pids_in(directory / str(i)) for i in items}


def fresh_dir(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / f"{name}-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    return directory


async def read_pid(path: Path) -> int:
    await wait_until(path.exists, f"{path.name} to be written")
    return int(path.read_text())


async def serving_workers(pool: aiomp.Pool, tmp_path: Path, parties: int) -> list[tuple[int, Any, Any]]:
    """One task per worker, all running at once: (pid, RLIMIT_AS, initializer state) of each."""
    directory = fresh_dir(tmp_path, "rendezvous")
    met = await pool.map(functools.partial(_faults.rendezvous, str(directory), parties), range(parties), chunksize=1)
    assert len({pid for pid, _, _ in met}) == parties
    return met


async def assert_recovered(
    pool: aiomp.Pool,
    tmp_path: Path,
    processes: int,
    restarted: int,
    gone: Collection[int] = (),
    init_state: str | None = None,
) -> set[int]:
    """Every worker is back and serving, none of ``gone`` among them, counters as expected.

    Returns the pids of the workers serving now.
    """
    # Settled first: a worker that is about to exit still counts as alive, and the
    # rendezvous below would wait for a task handed to it (and requeued after it).
    await wait_until(
        lambda: (pool.statistics().workers_restarted, pool.statistics().workers_alive) == (restarted, processes),
        f"{restarted} restarts and {processes} workers alive",
    )
    met = await serving_workers(pool, tmp_path, processes)
    pids = {pid for pid, _, _ in met}
    assert pids.isdisjoint(gone), "a dead worker still takes tasks"
    assert all(limit == resource.getrlimit(resource.RLIMIT_AS) for _, limit, _ in met), "a worker kept a limit"
    assert all(state == init_state for _, _, state in met), "a worker missed its initializer"
    assert await pool.map(_work.inc, range(300), chunksize=7) == list(range(1, 301))
    stats = pool.statistics()
    assert stats.workers_alive == processes
    assert stats.workers_restarted == restarted
    assert stats.tasks_queued == 0 and stats.tasks_running == 0
    return pids


# -- 1. a worker killed at every stage of its life ------------------------------------------------------------


@pytest.mark.parametrize("stage", ["unpickling initargs", "initializer"])
async def test_worker_killed_while_starting(anyio_backend: Any, start_method: str, tmp_path: Path, stage: str) -> None:
    """One worker dies before it is ready: the tasks it was handed run elsewhere, once; a new one starts."""
    token, loads, inits = tmp_path / "token", tmp_path / "loads", tmp_path / "inits"
    if stage == "initializer":
        init: Any = _faults.init_die_once
        initargs: tuple[Any, ...] = (str(token), str(inits))
    else:  # dies before the initializer runs: while its initargs are rebuilt
        init, initargs = _faults.init_note, (_faults.KillOnLoad(str(token), str(loads)), str(inits))
    directory = tmp_path / "runs"
    directory.mkdir()
    with anyio.fail_after(30):
        async with aiomp.Pool(2, initializer=init, initargs=initargs, context=start_method) as pool:
            # Submitted at once, before any worker is ready: the one that dies may hold some.
            results = await pool.map(functools.partial(_faults.record, str(directory)), range(30), chunksize=1)
            assert results == [2 * i for i in range(30)]
            assert all(len(pids) == 1 for pids in runs(directory, range(30)).values())
            # The third process has begun: the one that died was settled before it started.
            await wait_until(lambda: len(lines(loads if stage != "initializer" else inits)) == 3, "a replacement")
            # A worker that never became ready was replaced too: it counts as a restart.
            state = "survived" if stage == "initializer" else "loaded"
            pids = await assert_recovered(pool, tmp_path, 2, restarted=1, init_state=state)
    assert token.exists()
    if stage == "initializer":
        # Three initializer runs: the one that died and the two workers serving now.
        ran = pids_in(inits)
        assert len(ran) == 3 and set(ran) > pids
    else:
        # Three loads: the one that died, and the two workers, which alone ran the initializer.
        loaded = pids_in(loads)
        assert len(loaded) == 3 and set(loaded) > pids
        assert sorted(pids_in(inits)) == sorted(pids)


async def test_worker_killed_while_idle(anyio_backend: Any, start_method: str, tmp_path: Path) -> None:
    """SIGKILL an idle worker, then submit at once: tasks handed to the corpse run elsewhere, once."""
    directory = tmp_path / "runs"
    directory.mkdir()
    with anyio.fail_after(30):
        async with aiomp.Pool(2, context=start_method) as pool:
            before = {pid for pid, _, _ in await serving_workers(pool, tmp_path, 2)}
            victim = min(before)
            os.kill(victim, signal.SIGKILL)
            results = await pool.map(functools.partial(_faults.record, str(directory)), range(40), chunksize=1)
            assert results == [2 * i for i in range(40)]
            ran = runs(directory, range(40))
            assert all(len(pids) == 1 and victim not in pids for pids in ran.values()), ran
            after = await assert_recovered(pool, tmp_path, 2, restarted=1, gone={victim})
            assert before - {victim} < after


async def test_worker_killed_with_tasks_received_but_not_started(
    anyio_backend: Any, start_method: str, tmp_path: Path
) -> None:
    """A 1-worker pool busy on a long task holds more tasks when it is killed: the long one
    fails with WorkerDiedError, each received one runs exactly once on the replacement."""
    started, directory = tmp_path / "started", tmp_path / "runs"
    directory.mkdir()
    with anyio.fail_after(30):
        async with aiomp.Pool(1, context=start_method) as pool:
            # Teach the pool that tasks are tiny, so it hands the worker many at once.
            await pool.map(_work.inc, range(200), chunksize=1)
            long = pool.apply_async(_faults.block, (str(started), 30))
            # Coroutines first: they are handed to the busy worker whatever the pool has
            # learnt about task times (up to child_concurrency of them). The plain tasks
            # and chunks behind them are handed too if the warm-up taught the pool that
            # tasks are tiny (normally; a loaded machine may make them look slow and
            # leave some in the pool's queue).
            coroutines = [pool.apply_async(_faults.arecord, (str(directory), i)) for i in range(10, 15)]
            plain = [pool.apply_async(_faults.record, (str(directory), i)) for i in range(10)]
            chunked = pool.map_async(functools.partial(_faults.record, str(directory)), range(15, 30), chunksize=3)
            victim = await read_pid(started)
            stats = pool.statistics()
            assert stats.tasks_queued + stats.tasks_running == 1 + 5 + 10 + 5
            assert stats.tasks_running >= 1 + 5, f"only {stats.tasks_running - 1} tasks handed to the busy worker"
            os.kill(victim, signal.SIGKILL)
            with pytest.raises(aiomp.WorkerDiedError) as info:
                await long
            assert info.value.exitcode == KILLED
            assert "killed by signal 9" in str(info.value)
            assert [await r for r in plain + coroutines] == [2 * i for i in range(15)]
            assert await chunked == [2 * i for i in range(15, 30)]
            ran = runs(directory, range(30))
            assert all(len(pids) == 1 and victim not in pids for pids in ran.values()), ran
            await assert_recovered(pool, tmp_path, 1, restarted=1, gone={victim})


async def test_worker_killed_mid_chunk(anyio_backend: Any, start_method: str, tmp_path: Path) -> None:
    """An item in the middle of a chunk kills its worker: that map fails with WorkerDiedError,
    nothing of it runs twice, and the calls running beside it and after it succeed."""
    token, doomed, beside = tmp_path / "token", tmp_path / "doomed", tmp_path / "beside"
    doomed.mkdir()
    beside.mkdir()
    bad = 13  # in the chunk [12, 13, 14, 15]
    with anyio.fail_after(30):
        async with aiomp.Pool(2, context=start_method) as pool:
            other = pool.starmap_async(_faults.record, [(str(beside), i, 0.002) for i in range(60)], chunksize=1)
            single = pool.apply_async(_work.sleep, (0.05,))
            with pytest.raises(aiomp.WorkerDiedError) as info:
                await pool.map(
                    functools.partial(_faults.die_once_on, str(doomed), bad=bad, token=str(token)),
                    range(40),
                    chunksize=4,
                )
            assert info.value.exitcode == KILLED
            assert await other == [2 * i for i in range(60)]
            assert await single == 0.05
            assert all(len(pids) == 1 for pids in runs(beside, range(60)).values())
            await wait_until(lambda: pool.statistics().tasks_running == 0, "the failed map's last chunks")
            ran = runs(doomed, range(40))
            assert len(ran[12]) == 1 and ran[13] == ran[14] == ran[15] == []
            assert all(len(pids) <= 1 for pids in ran.values()), ran
            await assert_recovered(pool, tmp_path, 2, restarted=1)
            assert runs(doomed, range(40)) == ran, "the failed map went on after it failed"


async def test_worker_killed_while_sending_a_result(anyio_backend: Any, start_method: str, tmp_path: Path) -> None:
    """The worker dies half-way through writing a 200 MB result: the task fails with
    WorkerDiedError, the parent drops the partial frame, and big results still work after."""
    note = tmp_path / "written"
    size = 200 * MiB
    with anyio.fail_after(60):
        async with aiomp.Pool(2, context=start_method) as pool:
            others = pool.map_async(_work.sleep, [0.01] * 20, chunksize=1)
            with pytest.raises(aiomp.WorkerDiedError) as info:
                await pool.apply(_faults.die_while_sending, (str(note), size, 16 * MiB))
            assert info.value.exitcode == KILLED
            written = int(note.read_text())
            assert 16 * MiB <= written < size, f"the kill landed after {written} bytes, not mid-frame"
            assert await others == [0.01] * 20
            await assert_recovered(pool, tmp_path, 2, restarted=1)
            blob = await pool.apply(_work.echo, (b"x" * (32 * MiB),))
            assert len(blob) == 32 * MiB and blob.count(b"x") == 32 * MiB


# -- 2. start-up that never succeeds ------------------------------------------------------------------------------


async def _call_every_way(pool: aiomp.Pool) -> list[BaseException | None]:
    """apply, map, apply_async and imap, all waiting at once; what each raised."""
    outcomes: list[BaseException | None] = [None] * 4

    async def catch(i: int, call: Callable[[], Any]) -> None:
        try:
            await call()
        except Exception as error:
            outcomes[i] = error

    async def imap() -> None:
        async for _ in pool.imap(_work.inc, range(10)):
            pass

    async with anyio.create_task_group() as tg:
        tg.start_soon(catch, 0, lambda: pool.apply(_work.inc, (1,)))
        tg.start_soon(catch, 1, lambda: pool.map(_work.inc, range(100)))
        tg.start_soon(catch, 2, lambda: pool.apply_async(_work.inc, (1,)).get())
        tg.start_soon(catch, 3, imap)
    return outcomes


async def _assert_stays_broken(pool: aiomp.Pool, attempts: Path, processes: int) -> None:
    """Later calls fail at once, and the attempts to start workers stop, few.

    The final count is checked by ``_assert_attempts`` once the pool's block has ended,
    which waits for every worker and for every start scheduled before the pool broke.
    """
    with pytest.raises(aiomp.BrokenPoolError):
        await pool.apply(_work.inc, (1,))
    await wait_until(lambda: pool.statistics().workers_alive == 0, "the last workers to exit")
    # A pool that respawns forever keeps adding attempts while it is open: look for that
    # until the attempts go quiet for a second. This only gives it the chance to show; a
    # start still on its way later (a busy machine) is allowed for, and bounded, after.
    count = len(lines(attempts))
    while True:
        assert 3 <= count <= 3 + processes, f"{count} attempts to start a worker"
        await anyio.sleep(1.0)
        if len(lines(attempts)) == count:
            break
        count = len(lines(attempts))


def _assert_attempts(attempts: Path, processes: int) -> None:
    """After the pool's block: three failed starts broke it; at most one more per slot was on its way."""
    count = len(lines(attempts))
    assert 3 <= count <= 3 + processes, f"{count} attempts to start a worker"


async def test_initializer_that_always_raises(anyio_backend: Any, start_method: str, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    with anyio.fail_after(30):
        async with aiomp.Pool(
            2, initializer=_faults.init_always_raise, initargs=(str(attempts),), context=start_method
        ) as pool:
            for error in await _call_every_way(pool):
                assert isinstance(error, aiomp.BrokenPoolError), repr(error)
                assert "initializer raised InitFailedError: no database today" in str(error)
                assert isinstance(error.__cause__, _faults.InitFailedError)
            await _assert_stays_broken(pool, attempts, 2)
    _assert_attempts(attempts, 2)


async def test_startup_that_always_crashes(anyio_backend: Any, start_method: str, tmp_path: Path) -> None:
    attempts = tmp_path / "attempts"
    with anyio.fail_after(30):
        async with aiomp.Pool(
            2, initializer=_faults.init_always_die, initargs=(str(attempts),), context=start_method
        ) as pool:
            for error in await _call_every_way(pool):
                assert isinstance(error, aiomp.BrokenPoolError), repr(error)
                assert "worker processes in a row exited (code -9) while starting" in str(error)
                assert '`if __name__ == "__main__":`' in str(error)
            await _assert_stays_broken(pool, attempts, 2)
    _assert_attempts(attempts, 2)


# -- 3. maxtasksperchild with work queued ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_maxtasksperchild_with_work_queued(anyio_backend: Any, start_method: str, limit: int) -> None:
    processes = 2
    n = processes * limit + 1  # more items than the first workers may take: one retires with work queued
    expected = list(range(1, n + 1))
    seen: list[int] = []

    def check(results: list[tuple[int, int]]) -> None:
        assert sorted(value for value, _ in results) == expected
        seen.extend(pid for _, pid in results)

    with anyio.fail_after(30):
        async with aiomp.Pool(processes, maxtasksperchild=limit, context=start_method) as pool:
            check(await pool.map(_faults.pid_and, range(n), chunksize=1))
            check([r async for r in pool.imap_unordered(_faults.pid_and, range(n))])
            applied: list[tuple[int, int]] = []

            async def apply(i: int) -> None:
                applied.append(await pool.apply(_faults.pid_and, (i,)))

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(apply, i)
            check(applied)
            await wait_until(lambda: pool.statistics().workers_alive == processes, "the last replacements")
            restarted = pool.statistics().workers_restarted
    per_worker = Counter(seen)
    assert max(per_worker.values()) <= limit, per_worker
    assert len(per_worker) >= math.ceil(3 * n / limit)
    assert len(per_worker) - processes <= restarted <= len(per_worker)


# -- 4. memory limit -------------------------------------------------------------------------------------------


async def test_memory_limit_fails_only_that_task(anyio_backend: Any, start_method: str, tmp_path: Path) -> None:
    """A task that runs out of its address space fails with WorkerDiedError (caused by the
    MemoryError, if it got that far), its worker is replaced, and other tasks are unaffected."""
    mine = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with anyio.fail_after(30):
            async with aiomp.Pool(2, context=start_method) as pool:
                others = pool.map_async(_work.sleep, [0.01] * 20, chunksize=1)
                with pytest.raises(aiomp.WorkerDiedError) as info:
                    await pool.apply(_faults.exhaust_memory, (os.getpid(), 64 * MiB))
                cause = info.value.__cause__
                assert cause is None or isinstance(cause, MemoryError), repr(cause)
                assert await others == [0.01] * 20
                # Replaced: every worker serving now has the normal limit.
                await assert_recovered(pool, tmp_path, 2, restarted=1)
    finally:
        assert resource.getrlimit(resource.RLIMIT_AS) == mine, "the limit leaked into the test process"


# -- 5. a source that raises midway -------------------------------------------------------------------------------


class SourceBrokeError(Exception):
    pass


class _Source:
    """Items ``make(0) .. make(k - 1)``, then ``error`` once; read again, it would go on with more."""

    def __init__(self, k: int, make: Callable[[int], Any]) -> None:
        self.k = k
        self.make = make
        self.calls = 0
        self.error = SourceBrokeError(f"the source broke after {k} items")

    def _next(self) -> Any:
        i = self.calls
        self.calls += 1
        if i == self.k:
            raise self.error
        return self.make(i if i < self.k else 1000 + i)


class SyncSource(_Source):
    def __iter__(self) -> SyncSource:
        return self

    def __next__(self) -> Any:
        return self._next()


class AsyncSource(_Source):
    def __aiter__(self) -> AsyncSource:
        return self

    async def __anext__(self) -> Any:
        await anyio.sleep(0)
        return self._next()


SOURCES = {"sync": SyncSource, "async": AsyncSource}


@pytest.mark.parametrize("kind", list(SOURCES))
async def test_source_that_raises_midway(anyio_backend: Any, start_method: str, tmp_path: Path, kind: str) -> None:
    """map, map_async, starmap, imap, imap_unordered: the source's own exception reaches the
    caller; for imap the results of the items before it come out first; the source is not
    read again and no task runs after it."""
    k, chunksize = 8, 2  # whole chunks before the error (see the partial-chunk test below)
    with anyio.fail_after(30):
        async with aiomp.Pool(2, context=start_method) as pool:
            for method in ("map", "map_async", "starmap", "imap", "imap_unordered"):
                directory = fresh_dir(tmp_path, method)
                record = functools.partial(_faults.record, str(directory))
                if method == "starmap":
                    source = SOURCES[kind](k, lambda i, d=str(directory): (d, i))
                else:
                    source = SOURCES[kind](k, lambda i: i)
                got: list[int] = []
                with pytest.raises(SourceBrokeError) as info:
                    if method == "map":
                        await pool.map(record, source, chunksize=chunksize)
                    elif method == "map_async":
                        await pool.map_async(record, source, chunksize=chunksize)  # may raise at the call
                    elif method == "starmap":
                        await pool.starmap(_faults.record, source, chunksize=chunksize)
                    else:
                        async for value in getattr(pool, method)(record, source, chunksize=chunksize):
                            got.append(value)
                assert info.value is source.error, method
                assert source.calls == k + 1, f"{method}: the source was read {source.calls - k - 1} more times"
                await wait_until(
                    lambda: pool.statistics().tasks_running == pool.statistics().tasks_queued == 0, "idle pool"
                )
                ran = runs(directory, range(k))
                if method == "imap":
                    assert got == [2 * i for i in range(k)], method
                elif method == "imap_unordered":
                    assert sorted(got) == [2 * i for i in range(k)], method
                if method.startswith("imap"):
                    assert all(len(pids) == 1 for pids in ran.values()), (method, ran)
                else:
                    assert all(len(pids) <= 1 for pids in ran.values()), (method, ran)
                assert sorted(os.listdir(directory)) == sorted(str(i) for i in range(k) if ran[i])
                # Nothing of the failed call is still on its way.
                assert await pool.map(_work.inc, range(20), chunksize=1) == list(range(1, 21))
                assert runs(directory, range(k)) == ran, method
            assert pool.statistics().workers_restarted == 0


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_imap_source_error_keeps_the_items_of_a_partial_chunk(
    anyio_backend: Any, start_method: str, kind: str
) -> None:
    k, chunksize = 7, 2  # items 0..5 fill three chunks; item 6 is alone in the fourth when the error comes
    with anyio.fail_after(30):
        async with aiomp.Pool(2, context=start_method) as pool:
            for method in ("imap", "imap_unordered"):
                source = SOURCES[kind](k, lambda i: i)
                got: list[int] = []
                with pytest.raises(SourceBrokeError):
                    async for value in getattr(pool, method)(_work.inc, source, chunksize=chunksize):
                        got.append(value)
                assert sorted(got) == list(range(1, k + 1)), f"{method}: got {got}"


# -- 6. a slow consumer of an endless source --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_slow_consumer_keeps_an_endless_source_bounded(anyio_backend: Any, start_method: str, kind: str) -> None:
    """imap and imap_unordered read a fast, endless source only as far as their window
    allows (``window * chunksize`` items, plus a chunk), however slow the consumer."""
    chunksize, wanted = 3, 80
    with anyio.fail_after(30):
        async with aiomp.Pool(2, context=start_method) as pool:
            for method in ("imap", "imap_unordered"):
                source = SOURCES[kind](10**12, lambda i: i)  # endless for all practical purposes
                results = getattr(pool, method)(_work.inc, source, chunksize=chunksize)
                bound = (results.window + 1) * chunksize
                got: list[int] = []
                ahead: list[int] = []
                async for value in results:
                    got.append(value)
                    if len(got) % 40 == 20 and kind == "async":
                        # The slow consumer: an async source is read by a task of the pool's
                        # own, which runs ahead while the consumer pauses, until the window is
                        # full (a result taken but not consumed still fills its chunk's place).
                        # A sync source is read only inside __anext__, which fills the window.
                        await wait_until(
                            lambda source=source, got=got, results=results: (
                                source.calls - len(got) >= (results.window - 1) * chunksize
                            ),
                            "the source to run ahead as far as the window allows",
                        )
                    ahead.append(source.calls - len(got))
                    if len(got) == wanted:
                        break
                await results.aclose()
                assert max(ahead) <= bound, f"{method}: the source ran {max(ahead)} items ahead, bound {bound}"
                assert max(ahead) >= results.window * chunksize // 2, "the test never let the source run ahead"
                if method == "imap":
                    assert got == list(range(1, wanted + 1))
                else:
                    assert len(set(got)) == wanted and max(got) <= wanted + bound
                await wait_until(
                    lambda: pool.statistics().tasks_running == pool.statistics().tasks_queued == 0,
                    "the closed iterator's work to stop",
                )
            assert await pool.map(_work.inc, range(50)) == list(range(1, 51))


# -- 7. soak ------------------------------------------------------------------------------------------------------


@pytest.mark.timeout(180)
@pytest.mark.parametrize("start_method", ["forkserver"])
@pytest.mark.parametrize("anyio_backend", [("asyncio", {}), ("trio", {})], ids=["asyncio", "trio"])
async def test_soak_a_million_items_in_constant_memory(anyio_backend: Any, start_method: str) -> None:
    """1,000,000 items through imap_unordered: every result once, and the parent's memory flat.

    chunksize=1 runs at about 13,000 items/s here (over a minute for the lot); 20 gives
    50,000 chunks, a real test of the message path, in a few seconds.
    """
    n, chunksize, warm_up = 1_000_000, 20, 50_000
    me = psutil.Process()
    count = total = 0
    baseline = peak = 0
    with anyio.fail_after(150):
        async with aiomp.Pool(2, context=start_method) as pool:
            start = time.perf_counter()
            async for value in pool.imap_unordered(_work.inc, range(n), chunksize=chunksize):
                count += 1
                total += value
                if count % 10_000 == 0:
                    rss = me.memory_info().rss
                    if count == warm_up:
                        baseline = peak = rss
                    elif count > warm_up:
                        peak = max(peak, rss)
            seconds = time.perf_counter() - start
    growth = (peak - baseline) / MiB
    print(f"soak: {n / seconds:,.0f} items/s, RSS growth after warm-up {growth:.1f} MiB")
    assert count == n
    assert total == n * (n + 1) // 2
    assert growth < 50, f"the parent grew by {growth:.1f} MiB"
