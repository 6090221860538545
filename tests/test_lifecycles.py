"""A pool or process held the way applications hold them, not only by ``async with`` in one task.

pytest-asyncio sets a fixture up and tears it down in different tasks; a service's
``start()`` and ``stop()`` run in whichever tasks the application calls them from; an
``AsyncExitStack`` is closed by whoever shuts down. aiomp's objects may be left by a
task other than the one that entered them, and no unrelated task is ever cancelled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import pytest_asyncio

import aiomp

from . import _shapes

# -- pytest-asyncio fixtures, on asyncio's own loop and on uvloop ------------------------------

# conftest's pytest_asyncio_loop_factories runs each of these on asyncio's loop and on uvloop.


@pytest_asyncio.fixture
async def pool() -> AsyncIterator[aiomp.Pool]:
    async with aiomp.Pool(2) as p:
        yield p


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared_pool() -> AsyncIterator[aiomp.Pool]:
    async with aiomp.Pool(2) as p:
        yield p


@pytest_asyncio.fixture
async def process() -> AsyncIterator[aiomp.Process]:
    async with aiomp.Process(target=time.sleep, args=(60,)) as p:
        yield p
        p.terminate()
    assert p.exitcode == -signal.SIGTERM
    p.close()  # the test still holds the object while the leak check runs: release its sentinel now


@pytest.mark.asyncio
async def test_a_function_scoped_fixture_pool(pool: aiomp.Pool) -> None:
    assert await pool.map(abs, [-1, -2, -3]) == [1, 2, 3]
    assert await pool.apply(_shapes.loop_name) in ("asyncio", "uvloop")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_module_scoped_fixture_pool(shared_pool: aiomp.Pool) -> None:
    assert await shared_pool.apply(abs, (-4,)) == 4


@pytest.mark.asyncio(loop_scope="module")
async def test_the_module_scoped_pool_again(shared_pool: aiomp.Pool) -> None:
    assert await shared_pool.map(abs, range(-5, 0)) == [5, 4, 3, 2, 1]
    assert shared_pool.statistics().workers_restarted == 0


@pytest.mark.asyncio
async def test_a_fixture_process(process: aiomp.Process) -> None:
    assert process.is_alive()
    assert process in aiomp.active_children()


# -- the same shapes driven by hand, on asyncio, uvloop and trio -------------------------------


class Service:
    """An application service whose start and stop run in different tasks."""

    def __init__(self) -> None:
        self.stack = contextlib.AsyncExitStack()

    async def start(self) -> None:
        self.pool = await self.stack.enter_async_context(aiomp.Pool(2))
        self.event = aiomp.Event()
        self.process = await self.stack.enter_async_context(aiomp.Process(target=_shapes.wait_for, args=(self.event,)))

    async def stop(self) -> None:
        self.event.set()
        await self.stack.aclose()


@pytest.mark.anyio
async def test_start_and_stop_in_different_tasks(anyio_backend: Any) -> None:
    service = Service()
    started, stopped = anyio.Event(), anyio.Event()
    outcome: list[str] = []

    async def starter() -> None:
        # Enters the pool and the process, then goes on living: it must never be cancelled.
        await service.start()
        started.set()
        try:
            await stopped.wait()
        except anyio.get_cancelled_exc_class():
            outcome.append("the entering task was cancelled")
            raise
        outcome.append("the entering task ended normally")

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(starter)
            await started.wait()
            assert await service.pool.map(abs, [-1, -2]) == [1, 2]

            async def stopper() -> None:
                await service.stop()
                stopped.set()

            tg.start_soon(stopper)
    assert outcome == ["the entering task ended normally"]
    assert service.process.exitcode == 0
    assert not aiomp.active_children()


@pytest.mark.anyio
async def test_the_entering_task_may_end_first(anyio_backend: Any) -> None:
    pool = aiomp.Pool(2)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.__aenter__)
        # The task that entered the pool is gone; the pool still works and can be left here.
        assert await pool.apply(abs, (-7,)) == 7
        assert await pool.map(_shapes.loop_name, range(3)) == [await pool.apply(_shapes.loop_name)] * 3
        await pool.__aexit__(None, None, None)
    with pytest.raises(aiomp.PoolClosedError):
        await pool.apply(abs, (1,))


@pytest.mark.anyio
async def test_left_by_an_error_from_another_task_terminates(anyio_backend: Any) -> None:
    pool = aiomp.Pool(1)
    errors: list[BaseException] = []
    with anyio.fail_after(60):
        await pool.__aenter__()

        async def caller() -> None:
            try:
                await pool.apply(time.sleep, (60,))
            except aiomp.PoolClosedError as error:
                errors.append(error)

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            with anyio.fail_after(30):
                while pool.statistics().tasks_running == 0:
                    await anyio.sleep(0.01)

            async def leave() -> None:
                await pool.__aexit__(RuntimeError, RuntimeError("the block failed"), None)

            tg.start_soon(leave)
    assert len(errors) == 1
    assert pool.statistics().workers_alive == 0


@pytest.mark.anyio
async def test_a_pool_cannot_be_left_twice(anyio_backend: Any) -> None:
    with anyio.fail_after(60):
        async with aiomp.Pool(1) as pool:
            pass
        with pytest.raises(RuntimeError, match="already exited"):
            await pool.__aexit__(None, None, None)
    with pytest.raises(RuntimeError, match="without a successful __aenter__"):
        await aiomp.Pool(1).__aexit__(None, None, None)


@pytest.mark.anyio
async def test_a_failure_of_background_work_fails_the_calls_and_is_raised_at_exit(anyio_backend: Any) -> None:
    """A defect in the pool's own background work must not leave callers waiting for ever."""
    pool = aiomp.Pool(1)
    with anyio.fail_after(60):
        await pool.__aenter__()
        running = anyio.Event()
        outcome: list[BaseException] = []

        async def caller() -> None:
            running.set()
            try:
                await pool.apply(time.sleep, (60,))
            except BaseException as error:
                outcome.append(error)

        async def broken() -> None:
            raise ZeroDivisionError("a defect in background work")

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await running.wait()
            assert pool._tg is not None
            pool._tg.start_soon(broken)
        # The call fails (closed, or broken while a replacement worker was starting); it never hangs.
        assert len(outcome) == 1 and isinstance(outcome[0], (aiomp.PoolClosedError, aiomp.BrokenPoolError))
        with pytest.raises(BaseException) as caught:
            await pool.__aexit__(None, None, None)
    assert caught.group_contains(ZeroDivisionError, match="a defect in background work")


@pytest.mark.anyio
async def test_stdlib_helpers_in_the_parent_and_in_children(anyio_backend: Any, tmp_path: Any) -> None:
    expected_cpus = os.process_cpu_count() if hasattr(os, "process_cpu_count") else len(os.sched_getaffinity(0))
    assert aiomp.cpu_count() == expected_cpus
    assert aiomp.Pool().processes == expected_cpus
    assert aiomp.parent_process() is None
    assert aiomp.current_process().name == "MainProcess"
    path = tmp_path / "who"
    with anyio.fail_after(60):
        async with aiomp.Process(target=_shapes.write_whoami, args=(str(path),), name="child-7") as p:
            pass
        async with aiomp.Pool(1) as pool:
            name, parent, cpus = await pool.apply(_shapes.whoami)
    import json

    assert json.loads(path.read_text()) == ["child-7", os.getpid(), expected_cpus]
    assert p.exitcode == 0
    assert name.startswith("aiomp-worker-") and parent == os.getpid() and cpus == expected_cpus


@pytest.mark.anyio
async def test_active_children_lists_running_processes_only(anyio_backend: Any) -> None:
    event = aiomp.Event()
    with anyio.fail_after(60):
        assert aiomp.active_children() == []
        async with aiomp.Pool(1):
            assert aiomp.active_children() == []  # workers belong to their pool
            async with aiomp.Process(target=_shapes.wait_for, args=(event,)) as p:
                assert aiomp.active_children() == [p]
                event.set()
            assert aiomp.active_children() == []
