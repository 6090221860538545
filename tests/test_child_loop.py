"""``child_loop``: which event loop runs ``async def`` functions in pool workers and Process children.

One rule for both (API.md): asyncio's loop, uvloop's when the parent runs on uvloop,
whatever the parent's loop; ``child_loop="asyncio" | "uvloop" | "trio"`` chooses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

import aiomp

from . import _shapes

pytestmark = pytest.mark.anyio

CHOICES = [None, "asyncio", "uvloop", "trio"]


def _expected(choice: str | None, anyio_backend: Any) -> str:
    if choice is not None:
        return choice
    return "uvloop" if anyio_backend[1].get("loop_factory") is not None else "asyncio"


async def _wait_for_file(path: Path) -> None:
    with anyio.fail_after(30):
        while not path.exists():
            await anyio.sleep(0.01)


@pytest.mark.parametrize("choice", CHOICES)
async def test_pool_runs_coroutines_on_the_chosen_loop(anyio_backend: Any, choice: str | None) -> None:
    expected = _expected(choice, anyio_backend)
    with anyio.fail_after(60):
        async with aiomp.Pool(1, child_loop=choice) as pool:
            assert await pool.apply(_shapes.loop_name) == expected
            assert await pool.map(_shapes.loop_name, range(5)) == [expected] * 5
            # A plain task between coroutines, then a coroutine again on the same worker.
            assert await pool.apply(abs, (-3,)) == 3
            assert await pool.apply(_shapes.loop_name) == expected


@pytest.mark.parametrize("choice", CHOICES)
async def test_process_runs_an_async_target_on_the_chosen_loop(
    tmp_path: Path, anyio_backend: Any, choice: str | None
) -> None:
    path = tmp_path / "loop"
    with anyio.fail_after(30):
        async with aiomp.Process(target=_shapes.write_loop_name, args=(str(path),), child_loop=choice) as p:
            pass
    assert p.exitcode == 0
    assert path.read_text() == _expected(choice, anyio_backend)


@pytest.mark.parametrize("choice", ["asyncio", "trio"])
async def test_every_start_method(tmp_path: Path, start_method: str, choice: str) -> None:
    with anyio.fail_after(60):
        async with aiomp.Pool(1, context=start_method, child_loop=choice) as pool:
            assert await pool.apply(_shapes.loop_name) == choice
        path = tmp_path / "loop"
        async with aiomp.Process(
            target=_shapes.write_loop_name, args=(str(path),), context=start_method, child_loop=choice
        ) as p:
            pass
    assert p.exitcode == 0 and path.read_text() == choice


@pytest.mark.parametrize("choice", ["asyncio", "trio"])
async def test_an_async_map_raises_the_first_error_with_its_own_type(choice: str) -> None:
    with anyio.fail_after(60):
        async with aiomp.Pool(1, child_loop=choice) as pool:
            with pytest.raises(KeyError) as caught:
                await pool.starmap(_shapes.fail_on, [(i, 3) for i in range(8)], chunksize=8)
            assert caught.value.args == (3,)
            assert isinstance(caught.value.__cause__, aiomp.RemoteTraceback)
            assert await pool.starmap(_shapes.fail_on, [(i, -1) for i in range(8)]) == list(range(8))


@pytest.mark.parametrize("choice", ["asyncio", "uvloop", "trio"])
async def test_cancelling_a_call_cancels_the_coroutine_in_the_worker(tmp_path: Path, choice: str) -> None:
    with anyio.fail_after(60):
        async with aiomp.Pool(1, child_loop=choice) as pool:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.apply, _shapes.note_cancellation, (str(tmp_path),))
                await _wait_for_file(tmp_path / "started")
                tg.cancel_scope.cancel()
            # The coroutine saw the cancellation on the worker's own loop: the worker lives on.
            await _wait_for_file(tmp_path / "cancelled")
            assert (tmp_path / "cancelled").read_text() == choice
            assert await pool.apply(_shapes.loop_name) == choice
            assert pool.statistics().workers_restarted == 0


@pytest.mark.parametrize("value", ["curio", "Trio", ""])
def test_an_unknown_loop_is_a_value_error(value: str) -> None:
    with pytest.raises(ValueError, match="child_loop must be one of 'asyncio', 'uvloop', 'trio' or None"):
        aiomp.Pool(1, child_loop=value)
    with pytest.raises(ValueError, match="child_loop must be one of"):
        aiomp.Process(target=print, child_loop=value)


@pytest.mark.parametrize("value", [1, b"trio", ["trio"]])
def test_a_loop_that_is_not_a_string_is_a_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="child_loop must be one of"):
        aiomp.Pool(1, child_loop=value)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="child_loop must be one of"):
        aiomp.Process(target=print, child_loop=value)  # type: ignore[arg-type]
