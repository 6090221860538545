"""The Pool API through the ``Backend`` seam, with a backend that runs tasks in this process.

``FakeBackend`` (``_fake_backend``) pickles nothing and starts no process, so these
tests show what the Pool itself does and what it asks of a backend: tasks that
carry the call (function, kind, payload), ``prepare`` before ``submit``, outcomes
and errors passed through, cancellation, the lifecycle, and the local-process
options refused with a backend that cannot honour them.

The Pool API tests every backend passes are in ``_pool_api.py`` (``TestPoolAPI``
runs them here); ``test_dask.py`` runs the same ones on a Dask cluster.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import aiomp
import aiomp.pool
from aiomp import backends
from aiomp.backends import CallKind
from aiomp.backends.local import LOCAL_OPTIONS, LocalBackend

from . import _work
from ._fake_backend import FakeBackend, LoseWorker, SizedBackend, Unpreparable
from ._pool_api import MakeBackend, PoolAPITests

pytestmark = pytest.mark.anyio

# Each local-process option with a value other than its default.
SET_OPTIONS: dict[str, Any] = {
    "processes": 2,
    "initializer": print,
    "initargs": (1,),
    "maxtasksperchild": 5,
    "context": "spawn",
    "child_concurrency": 4,
    "worker_niceness": 0,
    "forward_logs": False,
    "child_loop": "asyncio",
}


@pytest.fixture
def pool_backend() -> MakeBackend:
    return FakeBackend


def _lose() -> None:
    raise LoseWorker


@pytest.fixture
def lose_worker() -> Callable[[], None]:
    return _lose


class TestPoolAPI(PoolAPITests):
    """The Pool API tests of ``_pool_api``, on the fake backend."""


# -- the seam's own names ----------------------------------------------------------------------


def test_the_seam_exports_what_a_backend_author_needs() -> None:
    for name in ("Backend", "Task", "PoolStatistics", "CallKind", "APPLY", "MAP", "STARMAP"):
        assert name in backends.__all__
        assert hasattr(backends, name)
    assert (backends.APPLY, backends.MAP, backends.STARMAP) == (CallKind.APPLY, CallKind.MAP, CallKind.STARMAP)


def test_call_kinds_are_the_wire_modes() -> None:
    """The worker compares plain ints from ``_wire``; they must be the seam's values."""
    from aiomp import _wire

    assert (_wire.APPLY, _wire.MAP, _wire.STARMAP) == (CallKind.APPLY, CallKind.MAP, CallKind.STARMAP)


def test_local_option_defaults_match_the_signatures() -> None:
    """``LOCAL_OPTIONS`` says what "not set" means: the defaults of Pool and LocalBackend."""
    for cls in (aiomp.Pool, LocalBackend):
        parameters = inspect.signature(cls).parameters
        assert {name: parameters[name].default for name in LOCAL_OPTIONS} == dict(LOCAL_OPTIONS)


# -- the calls ---------------------------------------------------------------------------------


async def test_tasks_carry_the_call() -> None:
    backend = FakeBackend()
    async with aiomp.Pool(backend=backend) as pool:
        await pool.apply(_work.kw, (1,), {"b": 2})
        await pool.starmap(_work.add, [(1, 2), (3, 4)], chunksize=1)
    apply, first, second = backend.submitted
    assert (apply.func, apply.kind, apply.is_async) == (_work.kw, CallKind.APPLY, False)
    assert (first.func, first.kind, second.kind) == (_work.add, CallKind.STARMAP, CallKind.STARMAP)
    # A task's arguments are let go once its outcome is in.
    assert apply.payload is None and first.payload is None


async def test_lambdas_and_closures_need_no_pickling() -> None:
    seen: list[int] = []
    async with aiomp.Pool(backend=FakeBackend()) as pool:
        assert await pool.apply(lambda: 5) == 5
        assert await pool.map(seen.append, range(3)) == [None] * 3
        assert await pool.map(lambda x: x * 2, range(4)) == [0, 2, 4, 6]
    assert seen == [0, 1, 2]  # ran here, on the same list


async def test_a_failing_chunk_drops_the_rest_of_its_call() -> None:
    ran: list[int] = []

    def record_or_fail(x: int) -> int:
        if x == 0:
            raise KeyError(x)
        ran.append(x)
        return x

    async with aiomp.Pool(backend=FakeBackend(1)) as pool:
        with pytest.raises(KeyError):
            await pool.map(record_or_fail, range(5), chunksize=1)
        assert pool.statistics().tasks_queued == 0
    assert ran == []


# -- prepare -----------------------------------------------------------------------------------


async def test_every_task_is_prepared_and_large_payloads_off_the_loop() -> None:
    backend = FakeBackend()
    loop_thread = threading.get_ident()
    async with aiomp.Pool(backend=backend) as pool:
        await pool.map(_work.inc, range(100), chunksize=10)
        assert backend.prepared_on == [loop_thread] * 10
        big = "x" * (2 << 20)
        assert await pool.apply(len, (big,)) == len(big)
        assert backend.prepared_on[-1] != loop_thread
        assert [x async for x in pool.imap(_work.inc, range(3))] == [1, 2, 3]
    assert len(backend.prepared_on) == len(backend.submitted) == 14


async def test_a_prepare_error_reaches_the_caller_and_submits_nothing() -> None:
    backend = FakeBackend()
    items: list[Any] = [1, 2, Unpreparable()]
    async with aiomp.Pool(backend=backend) as pool:
        with pytest.raises(TypeError, match="refuses to be prepared"):
            await pool.map(_work.inc, items, chunksize=1)
        with pytest.raises(TypeError, match="refuses to be prepared"):
            pool.apply_async(_work.echo, (Unpreparable(),))
        with pytest.raises(TypeError, match="refuses to be prepared"):
            await pool.apply(_work.echo, (Unpreparable(),))
        assert backend.submitted == []
        # imap: the items before the bad one still come out, then its error.
        got: list[int] = []
        with pytest.raises(TypeError, match="refuses to be prepared"):
            async for x in pool.imap(_work.inc, items):
                got.append(x)
        assert got == [2, 3]


async def test_a_backend_without_prepare_is_never_called_in_a_thread() -> None:
    class Plain(FakeBackend):
        prepare = aiomp.backends.Backend.prepare

        def submit(self, task: backends.Task) -> None:
            task.encoded = "prepared"  # nothing to prepare here
            super().submit(task)

    backend = Plain()
    assert not backend.prepare_in_thread(backends.Task(len, CallKind.APPLY, (("x" * (2 << 20),), {}), False, print))
    async with aiomp.Pool(backend=backend) as pool:
        assert await pool.apply(len, ("x" * (2 << 20),)) == 2 << 20


# -- a big map keeps the loop running ----------------------------------------------------------


async def test_automatic_chunks_are_capped() -> None:
    backend = FakeBackend(1)
    async with aiomp.Pool(backend=backend) as pool:
        n = 100_000
        assert await pool.map(_work.inc, range(n)) == list(range(1, n + 1))
    cap = aiomp.pool._MAX_AUTO_CHUNK
    assert len(backend.submitted) == math.ceil(n / cap)


async def test_a_big_map_yields_to_the_loop_between_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading, preparing and submitting yield whenever a step has run its time (here: always)."""
    monkeypatch.setattr(aiomp.pool, "_STEP_SECONDS", 0.0)
    backend = FakeBackend(1)
    turns = 0
    n = 100_000

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with aiomp.Pool(backend=backend) as pool, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await anyio.lowlevel.checkpoint()
        before = turns
        with anyio.fail_after(30):
            # A task waits on the source; prepare and submit see the backend's thread-free path.
            assert await pool.map(_work.inc, iter(range(n))) == list(range(1, n + 1))
        chunks = len(backend.submitted)
        tg.cancel_scope.cancel()
    reads = n // aiomp.pool._READ_SLICE
    assert turns - before >= reads + 2 * chunks  # a turn after each slice read, each prepare, each submit


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize("option", sorted(SET_OPTIONS))
def test_local_options_are_refused_with_a_backend(option: str) -> None:
    with pytest.raises(TypeError, match=f"the {option} option configures local worker processes; FakeBackend cannot"):
        aiomp.Pool(backend=FakeBackend(), **{option: SET_OPTIONS[option]})


def test_local_options_left_at_their_defaults_are_fine_with_a_backend() -> None:
    backend = FakeBackend(3)
    pool = aiomp.Pool(backend=backend, **dict(LOCAL_OPTIONS))  # type: ignore[arg-type]
    assert pool.processes == 3
    aiomp.Pool(None, backend=FakeBackend(), initargs=[], child_concurrency=16, worker_niceness=5, forward_logs=True)


async def test_options_a_backend_supports_reach_configure() -> None:
    backend = SizedBackend()
    pool = aiomp.Pool(3, backend=backend, initializer=print)
    assert backend.configured == {"processes": 3, "initializer": print}
    assert pool.processes == 3
    with pytest.raises(TypeError, match="child_concurrency"):
        aiomp.Pool(3, backend=SizedBackend(), child_concurrency=4)
    async with pool:
        assert await pool.map(_work.inc, range(6)) == [1, 2, 3, 4, 5, 6]
        assert pool.statistics().workers_alive == 3


def test_a_backend_that_lists_options_must_configure_them() -> None:
    class Forgetful(FakeBackend):
        supported_options = frozenset({"processes"})

    with pytest.raises(NotImplementedError, match="Forgetful"):
        aiomp.Pool(2, backend=Forgetful())


def test_backend_must_be_a_backend() -> None:
    with pytest.raises(TypeError, match="backend must be an aiomp backend or None, not object"):
        aiomp.Pool(backend=object())  # type: ignore[arg-type]
