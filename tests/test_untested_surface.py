"""Parts of the public API that no other test exercised.

``Pool()`` at its default size, ``context="fork"``, ``Barrier.abort`` across processes,
``Process.sentinel`` and ``Connection.readable``/``writable``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiomp

from . import _surface, _work

pytestmark = pytest.mark.anyio


def _usable_cpus() -> int:
    """What the docs promise the default pool size is."""
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return int(count() or 1)
    return len(os.sched_getaffinity(0))


# -- Pool() with the default size ------------------------------------------------------------------


async def test_default_pool_runs_one_task_on_each_usable_cpu() -> None:
    """``Pool()`` has one worker per usable CPU, and all of them run tasks at once.

    Each task waits at a barrier of ``n`` parties: it only passes if ``n`` tasks run in
    ``n`` different workers at the same time (a worker given two would break it).
    """
    n = _usable_cpus()
    barrier = aiomp.Barrier(n)
    with anyio.fail_after(40):
        async with aiomp.Pool(initializer=_surface.keep_barrier, initargs=(barrier,)) as pool:
            assert pool.processes == n
            met = await pool.map(_surface.meet, range(n), chunksize=1)
    pids = [pid for pid, _ in met]
    assert len(set(pids)) == n and os.getpid() not in pids
    assert sorted(index for _, index in met) == list(range(n))


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """This process restricted to one CPU (as ``taskset`` or a container would), then restored."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity here")
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("needs two usable CPUs to tell the usable count from the machine's")
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def test_default_pool_size_follows_the_cpu_affinity(one_cpu: int) -> None:
    """The usable CPUs, not the machine's: a process pinned to one CPU gets one worker."""
    assert os.cpu_count() != 1
    assert _usable_cpus() == 1
    pool = aiomp.Pool()  # not started: nothing to close
    assert pool.processes == 1


# -- context="fork" ----------------------------------------------------------------------------------
#
# aiomp's default never forks a process that runs an event loop, but "fork" is accepted
# (and offered by ``python -m aiomp --context fork``). The library forks from the running
# loop as it is: the child does not touch the parent's loop; a coroutine function runs on
# a fresh loop of the worker's own.

fork_only = pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork here")


@fork_only
# Python 3.12+ warns when a multi-threaded process forks: the test process may have
# threads of its own (anyio's worker threads), which are not what this test is about.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
async def test_fork_context_map_apply_and_a_crash(anyio_backend: Any, tmp_path: Path) -> None:
    with anyio.fail_after(40):
        async with aiomp.Pool(2, context="fork") as pool:
            assert await pool.map(abs, range(-5, 5)) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
            assert await pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
            first = set(await pool.map(_surface.pid, range(2), chunksize=1))
            assert len(first) == 2 and os.getpid() not in first
            assert await pool.apply(divmod, (17, 5)) == (3, 2)
            # A coroutine function runs on an asyncio loop of the forked worker's own, even
            # when the parent that forked it runs trio (whose state the fork copied).
            where, library = await pool.apply(_surface.loop_library)
            assert where in first and library == "asyncio"
            with pytest.raises(aiomp.WorkerDiedError) as died:
                await pool.apply(_surface.exit_now, (9,))
            assert died.value.exitcode == 9
            # Only that task failed: the pool goes on, on a replacement worker.
            assert await pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
            # Two calls that wait for each other: they run at once, so on both workers,
            # the survivor and its replacement.
            a, b = str(tmp_path / "a"), str(tmp_path / "b")
            after = set(await pool.starmap(_work.pid_together, [(a, b), (b, a)], chunksize=1))
            assert len(after) == 2 and after != first
            stats = pool.statistics()
    assert stats.workers_restarted == 1 and stats.workers_alive == 2, stats


# -- Barrier.abort -----------------------------------------------------------------------------------


async def _until_waiting(barrier: aiomp.Barrier, parties: int) -> None:
    while barrier.n_waiting < parties:
        await anyio.sleep(0.005)


async def test_barrier_abort_breaks_a_waiter_in_another_process(start_method: str) -> None:
    barrier = aiomp.Barrier(2)
    with anyio.fail_after(30):
        async with aiomp.Process(target=_surface.wait_at_barrier, args=(barrier,), context=start_method) as p:
            await _until_waiting(barrier, 1)  # the child is inside wait()
            assert not barrier.broken
            barrier.abort()
    assert p.exitcode == _surface.BROKEN_EXIT
    assert barrier.broken and barrier.n_waiting == 0
    with pytest.raises(threading.BrokenBarrierError):
        await barrier.await_(timeout=10)  # broken until reset


async def test_barrier_abort_from_another_process_breaks_await(start_method: str) -> None:
    barrier = aiomp.Barrier(2)
    with anyio.fail_after(30):
        async with aiomp.Process(target=_surface.abort_when_waited_on, args=(barrier, 1), context=start_method) as p:
            with pytest.raises(threading.BrokenBarrierError):
                await barrier.await_(timeout=25)
    assert p.exitcode == 0
    assert barrier.broken and barrier.n_waiting == 0
    barrier.reset()  # usable again: a child and the parent meet at it
    with anyio.fail_after(30):
        async with aiomp.Process(target=_surface.wait_at_barrier, args=(barrier,), context=start_method) as p:
            assert await barrier.await_(timeout=25) in (0, 1)
    assert p.exitcode == 0


async def test_barrier_abort_breaks_await_in_this_process() -> None:
    """``abort`` from the loop's own thread wakes a task awaiting the barrier."""
    barrier = aiomp.Barrier(3)
    outcome: list[str] = []

    async def party() -> None:
        try:
            await barrier.await_(timeout=25)
            outcome.append("passed")
        except threading.BrokenBarrierError:
            outcome.append("broken")

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(party)
            tg.start_soon(party)
            await _until_waiting(barrier, 2)
            barrier.abort()
    assert outcome == ["broken", "broken"]
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait(timeout=10)


# -- Process.sentinel --------------------------------------------------------------------------------


async def test_sentinel_becomes_readable_when_the_child_exits(start_method: str) -> None:
    event = aiomp.Event()
    p = aiomp.Process(target=_surface.wait_for_event, args=(event,), context=start_method)
    with pytest.raises(ValueError):
        p.sentinel  # noqa: B018 - not started: no sentinel yet, as in the stdlib
    with anyio.fail_after(30):
        await p.start()
        sentinel = p.sentinel
        assert isinstance(sentinel, int) and sentinel == p.sentinel
        # The child is blocked in event.wait(): not readable yet.
        assert multiprocessing.connection.wait([sentinel], timeout=0) == []
        assert p.is_alive()
        event.set()
        await anyio.wait_readable(sentinel)  # no thread, no polling: the loop wakes on the exit
        assert multiprocessing.connection.wait([sentinel], timeout=20) == [sentinel]
        await p.join()
    assert p.exitcode == 0
    p.close()
    with pytest.raises(ValueError):
        p.sentinel  # noqa: B018 - closed


async def test_sentinel_of_a_killed_child(start_method: str) -> None:
    event = aiomp.Event()
    with anyio.fail_after(30):
        async with aiomp.Process(target=_surface.wait_for_event, args=(event,), context=start_method) as p:
            assert multiprocessing.connection.wait([p.sentinel], timeout=0) == []
            p.kill()
            assert multiprocessing.connection.wait([p.sentinel], timeout=20) == [p.sentinel]
    assert p.exitcode == -9


# -- Connection.readable / writable ------------------------------------------------------------------


@pytest.mark.parametrize("duplex", [True, False])
def test_readable_writable_as_in_the_stdlib(duplex: bool) -> None:
    ours = aiomp.Pipe(duplex=duplex)
    theirs = multiprocessing.Pipe(duplex=duplex)
    try:
        flags = [(c.readable, c.writable) for c in ours]
        assert flags == [(c.readable, c.writable) for c in theirs]
        assert flags == ([(True, True), (True, True)] if duplex else [(True, False), (False, True)])
        if not duplex:
            reader, writer = ours
            with pytest.raises(OSError, match="read-only"):
                reader.send(1)
            with pytest.raises(OSError, match="write-only"):
                writer.recv()
            writer.send("one way")
            assert reader.poll(10) and reader.recv() == "one way"
    finally:
        for c in (*ours, *theirs):
            c.close()
    assert [(c.readable, c.writable) for c in ours] == flags  # still known after close, as in the stdlib


async def test_directions_survive_the_trip_to_a_child(start_method: str) -> None:
    here, there = aiomp.Pipe()
    reader, writer = aiomp.Pipe(duplex=False)
    try:
        with anyio.fail_after(30):
            async with aiomp.Process(target=_surface.report_ends, args=(there,), context=start_method):
                assert await here.arecv() == [(True, True)]
            async with aiomp.Process(target=_surface.report_ends, args=(writer, reader), context=start_method):
                assert await reader.arecv() == [(False, True), (True, False)]
    finally:
        for c in (here, there, reader, writer):
            c.close()


@fork_only
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded, use of fork:DeprecationWarning")
async def test_fork_context_process_with_an_async_target(anyio_backend: Any, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with anyio.fail_after(30):
        async with aiomp.Process(target=_surface.touch, args=(str(marker),), context="fork") as p:
            pass
    assert p.exitcode == 0
    assert marker.read_text() == str(p.pid)


FORKED_TRIO_TARGET = textwrap.dedent(
    """
    import os, sys
    import anyio, aiomp

    async def touch(path):
        await anyio.sleep(0)
        with open(path, "w") as out:
            out.write(str(os.getpid()))

    async def main(path):
        # forward_logs=False: this is about the fork, not about the log listener.
        async with aiomp.Process(
            target=touch, args=(path,), context="fork", child_loop="trio", forward_logs=False
        ) as p:
            pass
        print("exit", p.exitcode, "pid", p.pid, flush=True)

    if __name__ == "__main__":
        loop = sys.argv[1]
        options = {"use_uvloop": True} if loop == "uvloop" else {}
        anyio.run(main, sys.argv[2], backend="trio" if loop == "trio" else "asyncio", backend_options=options)
    """
)


@fork_only
@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_fork_context_process_on_a_trio_child_loop(tmp_path: Path, loop: str) -> None:
    """A program as a user runs it: the forked child's own trio loop starts without a word.

    The fork copies the parent's signal wakeup fd (trio and uvloop set one); trio in the child
    warned that its signal handling collided with another library, and died of
    TrioInternalError under -W error, until 11fa0d3.
    """
    script = tmp_path / "forked_trio_target.py"
    script.write_text(FORKED_TRIO_TARGET)
    marker = tmp_path / "ran"
    done = subprocess.run(
        [sys.executable, str(script), loop, str(marker)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"exit 0 pid {marker.read_text()}\n"
    assert done.stderr == ""
