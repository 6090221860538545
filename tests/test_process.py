"""aiomp.Process: an awaitable multiprocessing.Process, under every event loop."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import aiomp

from . import _prims, _work
from .conftest import BACKENDS

pytestmark = pytest.mark.anyio

# asyncio's own Task.cancel() exists only on asyncio's loops (the default one and uvloop).
ASYNCIO_LOOPS = [param for param in BACKENDS if param.values[0][0] == "asyncio"]


async def test_start_join_exitcode(start_method: str) -> None:
    p = aiomp.Process(target=_prims.exit_with, args=(3,), context=start_method)
    assert p.exitcode is None and p.pid is None
    assert not p.is_alive()
    with anyio.fail_after(20):
        await p.start()
        assert isinstance(p.pid, int) and p.pid != os.getpid()
        await p.join()
    assert p.exitcode == 3
    assert not p.is_alive()
    p.close()


async def test_args_kwargs_and_identity(tmp_path: Path, start_method: str) -> None:
    out, ident = tmp_path / "kw", tmp_path / "ident"
    with anyio.fail_after(20):
        p = aiomp.Process(target=_prims.write_kwargs, args=(str(out),), kwargs={"a": 1, "b": 2}, context=start_method)
        await p.start()
        await p.join()
        assert p.exitcode == 0
        assert out.read_text() == "1 2"
        q = aiomp.Process(target=_prims.write_identity, name="worker-7", args=(str(ident),), context=start_method)
        assert q.name == "worker-7"
        await q.start()
        await q.join()
    name, pid, parent, module = eval(ident.read_text())
    assert q.exitcode == 0
    assert name == "worker-7"
    assert pid == q.pid
    assert parent == os.getpid()
    assert module == "tests._prims"


async def test_every_primitive_travels_to_a_child(start_method: str) -> None:
    """Queues, pipes, locks, events, conditions and shared ctypes as Process arguments."""
    parent_end, child_end = aiomp.Pipe()
    things = {
        "queue": aiomp.Queue(),
        "jqueue": aiomp.JoinableQueue(),
        "simple": aiomp.SimpleQueue(),
        "conn": child_end,
        "lock": aiomp.Lock(),
        "rlock": aiomp.RLock(),
        "sem": aiomp.Semaphore(2),
        "bsem": aiomp.BoundedSemaphore(1),
        "event": aiomp.Event(),
        "cond": aiomp.Condition(),
        "value": aiomp.Value("i", 5),
        "array": aiomp.Array("d", [1.0, 2.0]),
    }
    out = aiomp.Queue()
    with anyio.fail_after(30):
        await things["queue"].aput("from parent")
        await things["simple"].aput("simple from parent")
        await parent_end.asend("ping")
        things["event"].set()
        async with aiomp.Process(target=_prims.use_everything, args=(things, out), context=start_method) as p:
            report = await out.aget()
            assert await parent_end.arecv() == "pong"
            assert await things["jqueue"].aget() == "from child"
    assert p.exitcode == 0
    assert report == {
        "queue": "from parent",
        "simple": "simple from parent",
        "conn": "ping",
        "lock": True,
        "rlock": True,
        "sem": True,
        "bsem": True,
        "event": True,
        "cond": True,
        "value": 5,
        "array": [1.0, 2.0],
    }
    assert things["value"].value == 99
    assert things["array"][:] == [-1.0, 2.0]
    for q in (things["queue"], things["jqueue"], out):
        q.close()
        q.join_thread()
    things["simple"].close()
    parent_end.close()
    child_end.close()


async def test_default_name_and_daemon() -> None:
    p = aiomp.Process(target=_prims.noop)
    assert isinstance(p.name, str) and p.name
    assert aiomp.Process(target=_prims.noop, daemon=True).daemon is True
    async with aiomp.Process(target=_prims.noop, daemon=True) as d:
        pass
    assert d.exitcode == 0


async def test_context_object() -> None:
    ctx = multiprocessing.get_context("spawn")
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.exit_with, args=(4,), context=ctx) as p:
            pass
    assert p.exitcode == 4


async def test_exception_in_target_exits_1() -> None:
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.raise_error) as p:
            pass
    assert p.exitcode == 1


async def test_async_target_loop_is_asyncio_unless_child_loop_says(
    tmp_path: Path, anyio_backend: Any, start_method: str
) -> None:
    """asyncio's loop (uvloop's under a uvloop parent) whatever the parent's, or the one chosen."""
    default, trio = tmp_path / "default", tmp_path / "trio"
    with anyio.fail_after(30):
        async with aiomp.Process(target=_work.async_write_loop, args=(str(default),), context=start_method) as p:
            pass
        assert p.exitcode == 0
        async with aiomp.Process(
            target=_work.async_write_loop, args=(str(trio),), context=start_method, child_loop="trio"
        ) as p:
            pass
        assert p.exitcode == 0
    uvloop_parent = "loop_factory" in anyio_backend[1]
    assert default.read_text() == ("asyncio uvloop" if uvloop_parent else "asyncio asyncio")
    assert trio.read_text() == "trio"


async def test_async_target_errors_and_exit_codes() -> None:
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.async_raise) as p:
            pass
        assert p.exitcode == 1
        async with aiomp.Process(target=_prims.async_exit_code, args=(6,)) as p:
            pass
        assert p.exitcode == 6


async def test_lambda_and_closure_targets(tmp_path: Path) -> None:
    path = tmp_path / "closure"

    def closure() -> None:
        path.write_text("closure ran")

    async def async_closure() -> None:
        await anyio.sleep(0)
        (tmp_path / "async").write_text("async closure ran")

    with anyio.fail_after(20):
        async with aiomp.Process(target=lambda: os._exit(5)) as p:
            pass
        assert p.exitcode == 5
        async with aiomp.Process(target=closure) as p:
            pass
        assert p.exitcode == 0
        assert path.read_text() == "closure ran"
        async with aiomp.Process(target=async_closure) as p:
            pass
        assert p.exitcode == 0
        assert (tmp_path / "async").read_text() == "async closure ran"


async def test_join_timeout_terminate_and_kill() -> None:
    p = aiomp.Process(target=_prims.sleep, args=(30,))
    with anyio.fail_after(30):
        await p.start()
        started = time.monotonic()
        await p.join(timeout=0.1)  # the timeout is the feature: not early, not much later
        assert 0.08 < time.monotonic() - started < 10
        assert p.is_alive() and p.exitcode is None
        p.terminate()
        await p.join()
    assert p.exitcode == -signal.SIGTERM
    p.close()

    k = aiomp.Process(target=_prims.sleep, args=(30,))
    with anyio.fail_after(20):
        await k.start()
        k.kill()
        await k.join()
    assert k.exitcode == -signal.SIGKILL


async def test_join_does_not_block_the_loop() -> None:
    go = aiomp.Event()
    # The child exits only once the parent's loop, ticking while join waits, says so
    # (after 10 s it gives up and exits 3: what a blocked loop would make it do).
    async with aiomp.Process(target=_work.exit_when, args=(go, 10)) as p:
        with anyio.fail_after(30):
            _, max_gap, ticks, released = await _prims.while_ticking_then(p.join, go.set)
    assert released, "join returned before the child was told to exit"
    assert p.exitcode == 0, "the child gave up waiting: the loop did not run while join waited"
    assert ticks >= 50
    assert max_gap < 1.0, f"the loop stalled for {max_gap:.3f} s"


async def test_join_uses_no_thread() -> None:
    p = aiomp.Process(target=_prims.sleep, args=(30,))
    with anyio.fail_after(20):
        await p.start()
        before = threading.active_count()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(p.join)
            await anyio.sleep(0.1)
            assert threading.active_count() <= before
            p.terminate()
    assert p.exitcode == -signal.SIGTERM


async def test_many_processes_joined_concurrently() -> None:
    procs = [aiomp.Process(target=_prims.exit_with, args=(i,)) for i in range(6)]
    with anyio.fail_after(30):
        for p in procs:
            await p.start()
        async with anyio.create_task_group() as tg:
            for p in procs:
                tg.start_soon(p.join)
    assert [p.exitcode for p in procs] == list(range(6))


async def test_join_after_exit_returns_at_once() -> None:
    p = aiomp.Process(target=_prims.noop)
    with anyio.fail_after(30):
        await p.start()
        while p.is_alive():
            await anyio.sleep(0.01)
    # Nothing is left to wait for. The bound is the feature ("at once"): it catches a
    # join that waits anyway (a poll interval, a timer) and leaves a busy machine room.
    with anyio.fail_after(1.0):
        await p.join()
        await p.join()  # twice is fine
    assert p.exitcode == 0


# -- async with --------------------------------------------------------------------------------


async def test_async_with_joins_on_normal_exit(tmp_path: Path) -> None:
    path = tmp_path / "out"
    go = aiomp.Event()
    with anyio.fail_after(30):
        async with aiomp.Process(target=_work.await_then_write, args=(str(path), go, 20)) as p:
            # Started on entry, and running: the child waits for go.
            assert p.pid is not None and p.pid != os.getpid()
            assert p.is_alive() and p.exitcode is None
            go.set()  # the child writes its file and exits only after this: the exit must wait
    assert p.exitcode == 0
    assert path.read_text() == "asyncio"  # written after go, by an asyncio loop in the child


async def test_async_with_terminates_on_exception() -> None:
    ready = aiomp.Event()
    with pytest.raises(ZeroDivisionError), anyio.fail_after(30):
        async with aiomp.Process(target=_work.set_then_sleep, args=(ready, 30)) as p:
            assert await ready.await_(timeout=20)
            started = time.monotonic()
            raise ZeroDivisionError
    assert time.monotonic() - started < 10  # terminated: joined, the child would sleep 30 s
    assert p.exitcode is not None and p.exitcode < 0
    assert not psutil.pid_exists(p.pid) or psutil.Process(p.pid).status() == psutil.STATUS_ZOMBIE


async def test_async_with_terminates_on_cancellation() -> None:
    ready = aiomp.Event()
    with anyio.fail_after(30), anyio.CancelScope() as scope:
        async with aiomp.Process(target=_work.aset_then_sleep, args=(ready, 30)) as p:
            assert await ready.await_(timeout=20)  # the child's own loop runs
            started = time.monotonic()
            scope.cancel()
            await anyio.sleep(30)
    assert scope.cancelled_caught
    assert time.monotonic() - started < 10  # terminated: joined, the child would sleep 30 s
    assert p.exitcode is not None and p.exitcode < 0


async def test_async_with_cancelled_while_joining() -> None:
    ready = aiomp.Event()
    with anyio.fail_after(30), anyio.CancelScope() as scope:
        async with aiomp.Process(target=_work.set_then_sleep, args=(ready, 30)) as p:
            assert await ready.await_(timeout=20)
            # Due as the block ends: the exit joins, and the join is cancelled (the
            # child sleeps 30 s).
            scope.deadline = anyio.current_time() + 0.2
    assert scope.cancelled_caught
    assert p.exitcode is not None and p.exitcode < 0


# -- cancellation ------------------------------------------------------------------------------


async def test_cancelled_join_leaves_the_process_running() -> None:
    p = aiomp.Process(target=_prims.sleep, args=(30,))
    with anyio.fail_after(20):
        await p.start()
        with anyio.move_on_after(0.1) as scope:
            await p.join()
        assert scope.cancelled_caught
        assert p.is_alive()
        scope2 = anyio.CancelScope()
        scope2.cancel()
        with scope2:
            await p.join()
        assert p.is_alive()
        p.terminate()
        await p.join()
    assert p.exitcode == -signal.SIGTERM


_CANCELLED_START = """
import sys, time, anyio, psutil, aiomp
from tests import _prims

async def main():
    for delay in (None, 0, 0.001, 0.01, 0.05):
        p = aiomp.Process(target=_prims.sleep, args=(30,))
        with anyio.CancelScope() as scope:
            if delay is None:
                scope.cancel()  # cancelled before start() even begins
            else:
                scope.deadline = anyio.current_time() + delay
            await p.start()
        print("cancelled start returned, delay", delay, flush=True)
        with anyio.fail_after(20):
            if p.pid is not None and p.exitcode is None:
                p.terminate()
                await p.join()
    def left():
        alive = [c for c in psutil.Process().children() if c.status() != psutil.STATUS_ZOMBIE]
        names = [" ".join(c.cmdline()) for c in alive]
        return [n for n in names if "forkserver" not in n and "resource_tracker" not in n]
    # A child that was killed may take a moment to be gone: wait for that, up to 20 s.
    deadline = time.monotonic() + 20
    while left() and time.monotonic() < deadline:
        time.sleep(0.01)
    print("LEFT", left())

if __name__ == "__main__":
    backend, options = sys.argv[1], {}
    if sys.argv[2] == "uvloop":
        import uvloop
        options = {"loop_factory": uvloop.new_event_loop}
    anyio.run(main, backend=backend, backend_options=options)
"""


def test_cancelled_start_leaves_nothing_behind(tmp_path: Path) -> None:
    """Each event loop in a fresh interpreter, all at once: a start() that cannot be
    cancelled would otherwise hang the whole test run."""
    import subprocess
    import sys

    script = tmp_path / "cancelled_start.py"
    script.write_text(_CANCELLED_START)
    root = str(Path(__file__).resolve().parents[1])
    runs = {
        loop: subprocess.Popen(
            [sys.executable, str(script), backend, loop],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": root},
            start_new_session=True,
        )
        for backend, loop in (("asyncio", "asyncio"), ("asyncio", "uvloop"), ("trio", "trio"))
    }
    # Generous: three interpreters start at once, each starting processes, on a machine
    # that may be busy. A start() that cannot be cancelled hangs for good.
    deadline = time.monotonic() + 45
    problems = []
    for loop, proc in runs.items():
        try:
            stdout, stderr = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the script and every child it started
            stdout, stderr = proc.communicate()
            problems.append(f"{loop}: a cancelled start() hung; steps done: {stdout!r}")
            continue
        if proc.returncode != 0:
            problems.append(f"{loop}: exit {proc.returncode}: {stderr[-2000:]}")
        elif "LEFT []" not in stdout:
            problems.append(f"{loop}: children left behind: {stdout!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("anyio_backend", ASYNCIO_LOOPS)
async def test_asyncio_task_cancel_join(anyio_backend: Any) -> None:
    p = aiomp.Process(target=_prims.sleep, args=(30,))
    with anyio.fail_after(30):
        await p.start()
        await _prims.cancel_asyncio_task(p.join())
        assert p.is_alive()
        p.terminate()
        await p.join()


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"target": 3}, TypeError, "target"),
        ({"target": _prims.noop, "context": "bogus"}, ValueError, "context"),
        ({"target": _prims.noop, "context": 3}, TypeError, "context"),
    ],
)
def test_bad_process_arguments(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        aiomp.Process(**kwargs)


async def test_bad_join_timeout() -> None:
    async with aiomp.Process(target=_prims.noop) as p:
        with anyio.fail_after(10):
            await p.join(timeout=-1)  # as in the standard library, a negative timeout counts as 0
        with pytest.raises(ValueError, match="timeout"):
            await p.join(timeout=math.nan)
        with pytest.raises(TypeError, match="timeout"):
            await p.join(timeout="1")  # type: ignore[arg-type]
