"""The examples of the multiprocessing documentation's tutorials, in async form.

From https://docs.python.org/3/library/multiprocessing.html: "The Process class",
"Contexts and start methods", "Exchanging objects between processes" (queues and
pipes), "Synchronization between processes" (the lock around print), "Sharing
state between processes" (Value and Array), and the task-queue pattern of the
examples section (an end-of-stream marker, or the queue's shutdown).

Children print through the inherited standard output, which ``capfd`` sees for
spawned children (forkserver children inherit the forkserver's output instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import aiomp

from . import _prims

pytestmark = pytest.mark.anyio


async def test_process_hello(capfd: pytest.CaptureFixture[str]) -> None:
    """p = Process(target=f, args=('bob',)); p.start(); p.join()"""
    with anyio.fail_after(20):
        p = aiomp.Process(target=_prims.hello, args=("bob",), context="spawn")
        await p.start()
        await p.join()
    assert p.exitcode == 0
    assert "hello bob" in capfd.readouterr().out


async def test_process_hello_async_with(capfd: pytest.CaptureFixture[str]) -> None:
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.hello, args=("alice",), context="spawn"):
            pass
    assert "hello alice" in capfd.readouterr().out


async def test_info(tmp_path: Path) -> None:
    """The docs' info(): the child knows its module, its parent and its own pid."""
    import os

    path = tmp_path / "info"
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.write_identity, args=(str(path),)) as p:
            pass
    _name, pid, parent, module = eval(path.read_text())
    assert (pid, parent, module) == (p.pid, os.getpid(), "tests._prims")


async def test_queue_from_a_worker(start_method: str) -> None:
    """q = Queue(); p = Process(target=f, args=(q,)); p.start(); print(q.get()); p.join()"""
    q = aiomp.Queue()
    with anyio.fail_after(20):
        p = aiomp.Process(target=_prims.put_answer, args=(q,), context=start_method)
        await p.start()
        assert await q.aget() == [42, None, "hello"]
        await p.join()
    assert p.exitcode == 0
    q.close()
    q.join_thread()


async def test_pipe_hello() -> None:
    """parent_conn, child_conn = Pipe(); ...; print(parent_conn.recv())"""
    parent_conn, child_conn = aiomp.Pipe()
    with anyio.fail_after(20):
        p = aiomp.Process(target=_prims.send_answer, args=(child_conn,))
        await p.start()
        assert await parent_conn.arecv() == [42, None, "hello"]
        await p.join()
    assert p.exitcode == 0
    parent_conn.close()
    child_conn.close()


async def test_lock_guarded_printing(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """lock = Lock(); for num in range(10): Process(target=f, args=(lock, num)).start()"""
    lock = aiomp.Lock()
    log = tmp_path / "log"
    with anyio.fail_after(40):
        procs = [
            aiomp.Process(target=_prims.locked_print, args=(lock, num, str(log)), context="spawn") for num in range(10)
        ]
        for p in procs:
            await p.start()
        async with lock:
            print("hello world from the parent", flush=True)
        for p in procs:
            await p.join()
    assert [p.exitcode for p in procs] == [0] * 10
    out = capfd.readouterr().out.splitlines()
    assert sorted(line for line in out if line.startswith("hello world ") and "parent" not in line) == sorted(
        f"hello world {i}" for i in range(10)
    )
    assert "hello world from the parent" in out
    lines = log.read_text().splitlines()
    assert len(lines) == 20
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.split()[0] == "enter" and leave == "leave " + enter.split()[1], "two holders overlapped"


async def test_lock_guarded_printing_async_children(tmp_path: Path) -> None:
    """The same, but the children are async and hold the lock with ``async with``."""
    lock = aiomp.Lock()
    log = tmp_path / "log"

    async def f(lock: Any, i: int) -> None:
        async with lock:
            with open(log, "a") as out:
                out.write(f"enter {i}\n")
                out.flush()
                await anyio.sleep(0.01)
                out.write(f"leave {i}\n")

    with anyio.fail_after(40):
        procs = [aiomp.Process(target=f, args=(lock, num)) for num in range(4)]
        for p in procs:
            await p.start()
        for p in procs:
            await p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    lines = log.read_text().splitlines()
    assert len(lines) == 8
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert leave == "leave " + enter.split()[1], "two holders overlapped"


async def test_shared_value_and_array() -> None:
    """num = Value('d', 0.0); arr = Array('i', range(10)); the child negates the array."""
    num = aiomp.Value("d", 0.0)
    arr = aiomp.Array("i", range(10))
    with anyio.fail_after(20):
        p = aiomp.Process(target=_prims.negate, args=(num, arr))
        await p.start()
        await p.join()
    assert num.value == 3.1415927
    assert arr[:] == [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]


async def test_shared_counter() -> None:
    """Several processes add to one Value under its lock; the parent awaits the lock."""
    counter = aiomp.Value("i", 0)
    with anyio.fail_after(30):
        procs = [aiomp.Process(target=_prims.increment, args=(counter, 100)) for _ in range(4)]
        for p in procs:
            await p.start()
        for _ in range(100):
            async with counter.get_lock():
                counter.value += 1
        for p in procs:
            await p.join()
    assert counter.value == 500


async def test_task_queue_with_stop_marker() -> None:
    """The docs' worker: ``for args in iter(input.get, 'STOP')``, results on a done queue."""
    tasks, done = aiomp.Queue(), aiomp.Queue()
    workers = 2
    with anyio.fail_after(30):
        procs = [aiomp.Process(target=_prims.square_worker, args=(tasks, done)) for _ in range(workers)]
        for p in procs:
            await p.start()
        for x in range(20):
            await tasks.aput(x)
        for _ in range(workers):
            await tasks.aput("STOP")
        results = [await done.aget() for _ in range(20)]
        for p in procs:
            await p.join()
    assert sorted(results) == [(x, x * x) for x in range(20)]
    for q in (tasks, done):
        q.close()
        q.join_thread()


async def test_producer_consumer_with_end_marker() -> None:
    """A child produces, then puts None; the parent consumes until it sees None."""
    q = aiomp.Queue(maxsize=5)
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.produce, args=(q, list(range(30)), None)):
            got = []
            while (item := await q.aget()) is not None:
                got.append(item)
    assert got == list(range(30))
    q.close()
    q.join_thread()


async def test_producer_consumer_ending_at_shutdown() -> None:
    """The producer shuts the queue down; ``async for`` ends once it is drained."""
    q = aiomp.Queue(maxsize=5)
    with anyio.fail_after(20):
        async with aiomp.Process(target=_prims.produce_then_shutdown, args=(q, 30)):
            got = [item async for item in q]
    assert got == list(range(30))
    q.close()
    q.join_thread()


async def test_parent_producer_child_consumers_ending_at_shutdown() -> None:
    tasks, done = aiomp.Queue(), aiomp.Queue()
    with anyio.fail_after(30):
        procs = [aiomp.Process(target=_prims.asquare_worker, args=(tasks, done)) for _ in range(2)]
        for p in procs:
            await p.start()
        for x in range(20):
            await tasks.aput(x)
        tasks.shutdown()
        results = [await done.aget() for _ in range(20)]
        for p in procs:
            await p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    assert sorted(results) == [(x, x * x) for x in range(20)]
    for q in (tasks, done):
        q.close()
        q.join_thread()


async def test_joinable_queue_workers() -> None:
    """The queue module's worker example: q.get(); ...; q.task_done(), and q.join() awaited."""
    q = aiomp.JoinableQueue()
    with anyio.fail_after(30):
        for item in range(10):
            await q.aput(item)
        procs = [aiomp.Process(target=_prims.get_n_and_ack, args=(q, 5)) for _ in range(2)]
        for p in procs:
            await p.start()
        await q.ajoin()
        for p in procs:
            await p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    q.close()
    q.join_thread()
