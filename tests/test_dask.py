"""The Dask backend on a real cluster: ``aiomp.Pool(backend=aiomp.DaskBackend(address))``.

One ``LocalCluster`` of two single-threaded worker processes serves the whole module
(``_dask_cluster``; it runs in a process of its own, and Dask retries a task whose
worker died once before it gives up). ``TestPoolAPI`` runs the Pool API tests that
the fake backend passes (``_pool_api``) on it, under asyncio, uvloop and trio; the
rest are what is particular to a cluster: its size, connecting and failing to, a
client passed in, dead workers, stopping running work, logging, shipping code.

The tests that need Dask are skipped, with the reason, when ``distributed`` is not
installed; the two that check ``import aiomp`` without Dask always run.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiomp

from . import _dask_cluster, _dask_work, _gates, _work
from ._gates import Gate, wait_until
from ._pool_api import MakeBackend, PoolAPITests

pytestmark = pytest.mark.anyio

HAVE_DASK = importlib.util.find_spec("distributed") is not None
needs_dask = pytest.mark.skipif(not HAVE_DASK, reason="the Dask backend needs distributed: pip install 'aiomp[dask]'")


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_dask_cluster.Cluster]:
    """The module's LocalCluster (2 workers, 1 thread each)."""
    pytest.importorskip("distributed", reason="the Dask backend needs distributed: pip install 'aiomp[dask]'")
    with _dask_cluster.local_cluster(tmp_path_factory.mktemp("dask")) as cluster:
        yield cluster


@pytest.fixture
def cluster(local_cluster: _dask_cluster.Cluster) -> Iterator[str]:
    """The scheduler address of the module's LocalCluster, once its workers are all back (``Cluster.settled``)."""
    deadline = time.monotonic() + 40
    while not local_cluster.settled():
        assert time.monotonic() < deadline, f"its workers did not come back in 40 s: {local_cluster.processes()}"
        time.sleep(0.05)
    yield local_cluster.address


@pytest.fixture
def pool_backend(cluster: str) -> MakeBackend:
    return lambda: aiomp.DaskBackend(cluster)


@pytest.fixture
def lose_worker() -> Callable[[], None]:
    return _work.exit_now  # os._exit(1) on the worker, every time Dask retries it


@needs_dask
class TestPoolAPI(PoolAPITests):
    """The Pool API tests of ``_pool_api``, on the Dask cluster."""


# -- import, construction, options --------------------------------------------------------------


def test_import_aiomp_does_not_import_dask() -> None:
    code = "import sys, aiomp; aiomp.Pool; print(sorted(m for m in ('distributed', 'dask') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_without_dask_the_backend_names_the_extra() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["distributed"] = None  # as if it were not installed
        import aiomp
        try:
            aiomp.DaskBackend
        except ImportError as error:
            print(error)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "pip install 'aiomp[dask]'" in out.stdout


@needs_dask
def test_bad_arguments_raise_at_once() -> None:
    import distributed

    with pytest.raises(TypeError, match="scheduler address"):
        aiomp.DaskBackend(8786)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        aiomp.DaskBackend(" ")
    with pytest.raises(ValueError, match="unknown scheme 'nonsense'"):
        aiomp.DaskBackend("nonsense://127.0.0.1:8786")
    with pytest.raises(TypeError, match="security must be a distributed\\.Security"):
        aiomp.DaskBackend("tcp://127.0.0.1:8786", security="tls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        aiomp.DaskBackend("tcp://127.0.0.1:8786", timeout=0)
    with pytest.raises(TypeError, match="timeout must be a number"):
        aiomp.DaskBackend("tcp://127.0.0.1:8786", timeout="10")  # type: ignore[arg-type]
    client = distributed.Client.__new__(distributed.Client)  # an instance is enough: nothing connects
    with pytest.raises(TypeError, match="a Client brings its own security"):
        aiomp.DaskBackend(client, security=distributed.Security())


@needs_dask
def test_local_options_are_refused_but_forward_logs() -> None:
    backend = aiomp.DaskBackend("tcp://127.0.0.1:8786")
    assert aiomp.Pool(None, backend=backend).processes == 0  # the cluster's size is read on entry
    for option, value in (("processes", 2), ("initializer", print), ("maxtasksperchild", 1), ("child_loop", "trio")):
        with pytest.raises(TypeError, match=f"the {option} option configures local worker processes; DaskBackend"):
            aiomp.Pool(backend=aiomp.DaskBackend("tcp://127.0.0.1:8786"), **{option: value})
    aiomp.Pool(backend=aiomp.DaskBackend("tcp://127.0.0.1:8786"), forward_logs=False)
    with pytest.raises(TypeError, match="forward_logs must be a bool"):
        aiomp.Pool(backend=aiomp.DaskBackend("tcp://127.0.0.1:8786"), forward_logs=1)  # type: ignore[arg-type]


# -- connecting ----------------------------------------------------------------------------------


def _closed_port() -> int:
    """A port nothing listens on (the system's choice, released at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@needs_dask
@pytest.mark.parametrize("where", ["refused", "silent"])
async def test_an_unreachable_scheduler_fails_entry_in_time(where: str) -> None:
    """Refused (nothing listens) or silent (TEST-NET-1: no answer at all): OSError within the bound."""
    address = f"tcp://127.0.0.1:{_closed_port()}" if where == "refused" else "tcp://192.0.2.1:8786"
    timeout = 1.0
    started = time.monotonic()
    with pytest.raises(OSError):  # TimeoutError is an OSError
        async with aiomp.Pool(backend=aiomp.DaskBackend(address, timeout=timeout)):
            pytest.fail("entered a pool without a scheduler")
    assert time.monotonic() - started < timeout + 5


@needs_dask
async def test_a_cancelled_entry_leaves_nothing_behind() -> None:
    with anyio.move_on_after(0.2) as scope:
        async with aiomp.Pool(backend=aiomp.DaskBackend("tcp://192.0.2.1:8786", timeout=30)):
            pytest.fail("entered a pool without a scheduler")
    assert scope.cancelled_caught


@needs_dask
async def test_a_pool_sized_by_the_cluster(cluster: str, tmp_path: Path, anyio_backend: Any) -> None:
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        await wait_until(lambda: pool.processes == 2, 30, "the cluster's two threads")
        before = pool.statistics().tasks_completed
        assert await pool.map(_work.inc, range(96)) == list(range(1, 97))
        assert pool.statistics().tasks_completed - before == 4 * 2  # four chunks per thread
        if anyio_backend != ("asyncio", {}):
            return  # growing the cluster once is enough
        # A third worker joins: the pool sees four threads, and a map makes more chunks.
        with _dask_cluster.cli_worker(tmp_path, cluster, nthreads=2):
            await wait_until(lambda: pool.processes == 4, 30, "the new worker's threads")
            before = pool.statistics().tasks_completed
            assert await pool.map(_work.inc, range(96)) == list(range(1, 97))
            assert pool.statistics().tasks_completed - before == 4 * 4
        await wait_until(lambda: pool.processes == 2, 30, "the cluster without it")


@needs_dask
async def test_a_client_passed_in_is_used_and_not_closed(cluster: str, anyio_backend: Any) -> None:
    import distributed

    if anyio_backend[0] == "asyncio":  # an asynchronous client of this loop: the pool uses it
        async with distributed.Client(cluster, asynchronous=True, set_as_default=False) as client:
            async with aiomp.Pool(backend=aiomp.DaskBackend(client)) as pool:
                assert await pool.apply(_work.add, (1, 2)) == 3
            assert client.status == "running"
            assert await client.submit(_work.inc, 1, pure=False) == 2
    # A synchronous client (any loop): the pool connects its own to the same scheduler.
    sync_client = await anyio.to_thread.run_sync(lambda: distributed.Client(cluster, set_as_default=False))
    try:
        async with aiomp.Pool(backend=aiomp.DaskBackend(sync_client)) as pool:
            assert await pool.map(_work.inc, range(3)) == [1, 2, 3]
        assert sync_client.status == "running"
    finally:
        await anyio.to_thread.run_sync(sync_client.close)


@needs_dask
@pytest.mark.parametrize("anyio_backend", [pytest.param(("trio", {}), id="trio")])
async def test_on_trio_the_client_runs_in_a_thread_of_its_own(cluster: str) -> None:
    """Dask's client is asyncio-only: under trio it gets an asyncio loop in a thread, gone with the pool."""

    def bridges() -> list[threading.Thread]:
        return [thread for thread in threading.enumerate() if thread.name == "aiomp-dask"]

    assert bridges() == []
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        assert len(bridges()) == 1
        assert await pool.apply(_work.add, (2, 3)) == 5
    assert bridges() == []


# -- dead workers and stopping running work ----------------------------------------------------


@needs_dask
async def test_a_worker_killed_mid_task_is_worker_died_error(cluster: str, tmp_path: Path) -> None:
    """SIGKILL the worker running a task: Dask runs it again elsewhere once, then gives up."""
    from distributed import KilledWorker

    gate = Gate(tmp_path, "victim")
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        result = pool.apply_async(_gates.hold, (gate.path,))
        killed: set[int] = set()
        with anyio.fail_after(60):
            while not result.ready():
                fresh = [pid for pid in gate.pids() if pid not in killed]
                for pid in fresh:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                await anyio.sleep(_gates.POLL)
        with pytest.raises(aiomp.WorkerDiedError, match="died") as info:
            await result
        assert info.value.exitcode is None
        assert isinstance(info.value.__cause__, KilledWorker)
        assert len(killed) == 2  # the first run and its one retry
        assert not gate.finished()
        with anyio.fail_after(30):
            assert await pool.apply(_work.inc, (1,)) == 2  # the pool goes on


@needs_dask
async def test_cancelling_a_running_function_stops_it(cluster: str, tmp_path: Path) -> None:
    """Plain blocking code: the worker that runs it is ended, so the marker it would write never is."""
    gate = Gate(tmp_path, "busy")
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        result = pool.apply_async(_dask_work.busy, (gate.path, 30))
        await gate.wait_started()
        assert result.cancel()
        await gate.wait_stopped()
        await wait_until(lambda: pool.statistics().workers_restarted == 1, 10, "one worker restarted")
        with anyio.fail_after(30):
            assert await pool.apply(_work.inc, (1,)) == 2


@needs_dask
async def test_a_timeout_stops_a_running_function(cluster: str, tmp_path: Path) -> None:
    gate = Gate(tmp_path, "busy")
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                with pytest.raises(TimeoutError):
                    await pool.apply(_dask_work.busy, (gate.path, 30), timeout=30)

            tg.start_soon(call)
            await gate.wait_started()
            tg.cancel_scope.cancel()
        await gate.wait_stopped()


# -- what travels, and what comes back ---------------------------------------------------------


@needs_dask
async def test_big_arguments_and_results(cluster: str) -> None:
    size = 3 << 20  # above the size at which arguments are scattered and results unpickled in a thread
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        assert await pool.apply(len, (b"x" * size,)) == size
        assert await pool.apply(_dask_work.big, (size,)) == b"y" * size


@needs_dask
async def test_what_cannot_be_pickled_raises_to_the_caller(cluster: str) -> None:
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        with pytest.raises(TypeError, match="lock"):
            await pool.apply(_work.echo, (threading.Lock(),))
        with pytest.raises(TypeError, match="could not be pickled on the Dask worker"):
            await pool.apply(threading.Lock)
        assert await pool.apply(_work.inc, (1,)) == 2


@needs_dask
def test_functions_of_the_main_script_travel_by_value(cluster: str, tmp_path: Path) -> None:
    """Dask workers do not import the user's ``__main__``: its functions and classes go by value."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys

            import anyio

            import aiomp


            class Point:
                def __init__(self, x):
                    self.x = x


            def square(x):
                return x * x


            def mirror(point):
                return Point(-point.x)


            async def main():
                async with aiomp.Pool(backend=aiomp.DaskBackend(sys.argv[1])) as pool:
                    print(await pool.map(square, range(5)))
                    print((await pool.apply(mirror, (Point(3),))).x)


            if __name__ == "__main__":
                anyio.run(main)
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script), cluster],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_dask_cluster.environment(),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[0,", "1,", "4,", "9,", "16]", "-3"]


# -- logging ---------------------------------------------------------------------------------


@needs_dask
async def test_worker_log_records_reach_the_parents_logging(cluster: str, caplog: pytest.LogCaptureFixture) -> None:
    name = "tests.dask.worker"
    caplog.set_level(logging.INFO, logger=name)
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as pool:
        pid = await pool.apply(_dask_work.log_some, (name,))
        await wait_until(lambda: len(_records(caplog, name)) >= 3, 30, "three records")
    info, warning, error = _records(caplog, name)
    assert (info.levelname, info.getMessage()) == ("INFO", "info from a worker")
    assert info.process == pid != os.getpid() and info.request == "r-42"  # type: ignore[attr-defined]
    assert info.dask_worker.startswith("tcp://")  # type: ignore[attr-defined]
    assert warning.getMessage() == "warning 3"
    assert error.getMessage() == "failed" and "KeyError: 'inside'" in (error.exc_text or "")
    # DEBUG is below the parent's level: the worker never made the record.
    assert not [r for r in caplog.records if r.name == name and r.levelno == logging.DEBUG]


@needs_dask
async def test_forward_logs_false_forwards_nothing(cluster: str, caplog: pytest.LogCaptureFixture) -> None:
    name = "tests.dask.silent"
    caplog.set_level(logging.INFO, logger=name)
    async with aiomp.Pool(backend=aiomp.DaskBackend(cluster), forward_logs=False) as pool:
        await pool.apply(_dask_work.log_some, (name,))
        # A pool that forwards: its records arrive, and none of the silent pool's came before them.
        async with aiomp.Pool(backend=aiomp.DaskBackend(cluster)) as loud:
            await loud.apply(_dask_work.log_some, ("tests.dask.loud",))
            await wait_until(lambda: bool(_records(caplog, "tests.dask.loud")), 30, "the loud pool's records")
    assert _records(caplog, name) == []


def _records(caplog: pytest.LogCaptureFixture, name: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == name]
