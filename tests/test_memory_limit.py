"""``Pool(max_memory_per_child=...)``: a worker over the limit after a task is replaced."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import aiomp

from . import _work

pytestmark = pytest.mark.anyio

MiB = 1 << 20
LIMIT = 300 * MiB  # a worker starts at a few tens of MiB
HOARD = 400 * MiB


@pytest.mark.parametrize(
    ("value", "error"),
    [(0, ValueError), (-1, ValueError), ("1", TypeError), (True, TypeError), (1.5, TypeError)],
)
def test_bad_values_are_refused(value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_memory_per_child"):
        aiomp.Pool(1, max_memory_per_child=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("func", [_work.hoard, _work.ahoard], ids=["plain", "async"])
async def test_a_worker_over_the_limit_is_replaced_and_its_result_kept(
    anyio_backend: Any, start_method: str, func: Any
) -> None:
    with anyio.fail_after(60):
        async with aiomp.Pool(1, context=start_method, max_memory_per_child=LIMIT) as pool:
            first = await pool.apply(_work.pid)
            assert await pool.apply(_work.pid) == first  # under the limit: kept
            # The task that crosses the limit keeps its result; a call queued behind it
            # on the same worker runs on its replacement. (A plain call queued behind a
            # coroutine may run while the coroutine is still running: it is awaited first.)
            if func is _work.hoard:
                hoarder, after = await _both(pool.apply(func, (HOARD,)), pool.apply(_work.pid))
            else:
                hoarder = await pool.apply(func, (HOARD,))
                after = await pool.apply(_work.pid)
            assert hoarder == first
            assert after != first
            assert pool.statistics().workers_restarted == 1
            assert await pool.apply(_work.pid) == after  # the new worker is under the limit
            assert pool.statistics().workers_alive == 1


async def test_map_chunks_go_on_after_a_replacement(anyio_backend: Any) -> None:
    with anyio.fail_after(60):
        async with aiomp.Pool(2, max_memory_per_child=LIMIT) as pool:
            pids = await pool.map(_work.hoard, [HOARD] * 4, chunksize=1)
            assert len(set(pids)) == 4  # every worker retired after its one task
            assert pool.statistics().workers_restarted == 4


async def test_other_backends_refuse_it() -> None:
    from ._fake_backend import FakeBackend

    with pytest.raises(TypeError, match="max_memory_per_child"):
        aiomp.Pool(backend=FakeBackend(), max_memory_per_child=LIMIT)


async def _both(first: Any, second: Any) -> tuple[Any, Any]:
    results: list[Any] = [None, None]

    async def run(i: int, call: Any) -> None:
        results[i] = await call

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, 0, first)
        await anyio.sleep(0)  # the hoarder is submitted first
        tg.start_soon(run, 1, second)
    return results[0], results[1]
