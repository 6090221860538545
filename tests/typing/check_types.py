"""What a type checker infers from aiomp's calls, and the mistakes it reports.

Checked, not run: CI runs ``mypy --strict tests/typing`` and ``pyright`` (strict for
this folder, ``[tool.pyright]`` in pyproject.toml); pytest does not collect this file.

* ``assert_type`` pins the type each call gives.
* A line that must be reported carries ``# type: ignore[CODE]`` for mypy and
  ``# pyright: ignore[RULE]`` for pyright. Both checkers are set to report an ignore that
  suppresses nothing (mypy's ``warn_unused_ignores``, part of ``--strict``; pyright's
  ``reportUnnecessaryTypeIgnoreComment``), so a call that stops being reported fails the
  check. Pyright is told not to read ``# type: ignore`` (``enableTypeIgnoreComments``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from typing_extensions import assert_type

import aiomp


def add(a: int, b: int) -> int:
    return a + b


def power(base: int, exponent: int = 2) -> int:
    return int(base**exponent)


def square(x: int) -> int:
    return x * x


def now() -> float:
    return time.time()


async def describe(x: int) -> str:
    return str(x)


async def pair(x: int, label: str) -> tuple[str, int]:
    return label, x


def greet(name: str) -> None:
    print("hello", name)


async def numbers() -> AsyncIterator[int]:
    yield 1


async def apply_calls(pool: aiomp.Pool) -> None:
    # args as a tuple: checked against func, the result typed by func.
    assert_type(await pool.apply(add, (1, 2)), int)
    assert_type(await pool.apply(add, args=(1, 2), timeout=1.0), int)
    assert_type(await pool.apply(power, (2,)), int)  # a parameter with a default may be left out
    assert_type(await pool.apply(now), float)
    assert_type(await pool.apply(now, ()), float)
    assert_type(await pool.apply(time.sleep, (0.1,)), None)
    # async def: the coroutine is unwrapped.
    assert_type(await pool.apply(describe, (1,)), str)
    assert_type(await pool.apply(pair, (1, "a")), tuple[str, int])
    # The standard library's other shapes are taken unchecked: kwds, or args as a list.
    assert_type(await pool.apply(power, (), {"base": 3, "exponent": 4}), int)
    assert_type(await pool.apply(power, kwds={"base": 3}), int)
    assert_type(await pool.apply(power, (3,), kwds={"exponent": 3}), int)
    assert_type(await pool.apply(describe, kwds={"x": 1}), str)
    assert_type(await pool.apply(add, [1, 2]), int)
    assert_type(await pool.apply(describe, [1]), str)
    # A tuple whose items are not known one by one.
    some: tuple[Any, ...] = (1, 2)
    assert_type(await pool.apply(add, some), int)

    # Mistakes that are reported.
    await pool.apply(add, (1, "2"))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.apply(add, (1,))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.apply(add, (1, 2, 3))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.apply(add)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.apply(describe, ("1",))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.apply(square, 3)  # type: ignore[call-overload]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def apply_async_calls(pool: aiomp.Pool) -> None:
    def on_int(value: int) -> None:
        print(value)

    assert_type(pool.apply_async(add, (1, 2)), aiomp.AsyncResult[int])
    assert_type(pool.apply_async(describe, (1,)), aiomp.AsyncResult[str])
    assert_type(pool.apply_async(square, (3,), callback=on_int), aiomp.AsyncResult[int])
    assert_type(pool.apply_async(now, error_callback=print), aiomp.AsyncResult[float])
    assert_type(pool.apply_async(power, (), {"base": 2}, on_int, print), aiomp.AsyncResult[int])
    assert_type(pool.apply_async(power, [2]), aiomp.AsyncResult[int])
    result = pool.apply_async(add, (1, 2))
    assert_type(await result, int)
    assert_type(await result.get(timeout=1), int)

    pool.apply_async(add, ("1", 2))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pool.apply_async(describe, (1, 2))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pool.apply_async(describe, (1,), callback=on_int)  # type: ignore[misc, arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def map_calls(pool: aiomp.Pool) -> None:
    assert_type(await pool.map(square, range(10)), list[int])
    assert_type(await pool.map(square, [1, 2], 1, timeout=5), list[int])
    assert_type(await pool.map(describe, [1, 2]), list[str])
    assert_type(await pool.map(square, numbers()), list[int])
    assert_type(pool.map_async(square, [1, 2]), aiomp.AsyncResult[list[int]])
    assert_type(pool.map_async(describe, [1, 2]), aiomp.AsyncResult[list[str]])
    assert_type(await pool.map_async(square, [1, 2]), list[int])

    await pool.map(square, ["1", "2"])  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.map(describe, ["1"])  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.map(add, [1, 2])  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pool.map_async(square, ["1"])  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def starmap_calls(pool: aiomp.Pool) -> None:
    assert_type(await pool.starmap(add, [(1, 2), (3, 4)]), list[int])
    assert_type(await pool.starmap(add, zip(range(3), range(3), strict=True)), list[int])
    assert_type(await pool.starmap(pair, [(1, "a")]), list[tuple[str, int]])
    assert_type(await pool.starmap(add, [[1, 2], [3, 4]]), list[int])  # lists: unchecked
    assert_type(pool.starmap_async(add, [(1, 2)]), aiomp.AsyncResult[list[int]])
    assert_type(pool.starmap_async(pair, [(1, "a")]), aiomp.AsyncResult[list[tuple[str, int]]])

    await pool.starmap(add, [(1, "2")])  # type: ignore[arg-type, list-item]  # pyright: ignore[reportCallIssue, reportArgumentType]
    await pool.starmap(pair, [("a", 1)])  # type: ignore[list-item]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pool.starmap_async(add, [(1,)])  # type: ignore[arg-type, list-item]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def imap_calls(pool: aiomp.Pool) -> None:
    assert_type(pool.imap(square, range(3)), aiomp.IMapIterator[int])
    assert_type(pool.imap_unordered(describe, range(3)), aiomp.IMapIterator[str])
    async for value in pool.imap(square, range(3)):
        assert_type(value, int)
    async for text in pool.imap_unordered(describe, numbers(), chunksize=2):
        assert_type(text, str)
    iterator: AsyncIterator[int] = pool.imap(square, range(3))  # an IMapIterator is an AsyncIterator
    print(iterator)

    pool.imap(square, ["1"])  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    pool.imap_unordered(describe, ["1"])  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def pool_itself() -> None:
    async with aiomp.Pool(2) as pool:
        assert_type(pool, aiomp.Pool)
        assert_type(pool.processes, int)


async def process_calls() -> None:
    assert_type(aiomp.Process(target=greet, args=("bob",)), aiomp.Process)
    assert_type(aiomp.Process(target=describe, args=(1,)), aiomp.Process)
    assert_type(aiomp.Process(target=now), aiomp.Process)
    assert_type(aiomp.Process(greet, "greeter", ("bob",)), aiomp.Process)
    assert_type(aiomp.Process(target=power, kwargs={"base": 2}), aiomp.Process)
    assert_type(aiomp.Process(target=greet, args=["bob"]), aiomp.Process)
    assert_type(aiomp.Process(), aiomp.Process)
    async with aiomp.Process(target=greet, args=("bob",), daemon=True, context="spawn") as process:
        assert_type(process, aiomp.Process)
        assert_type(process.exitcode, int | None)
        assert_type(process.pid, int | None)

    aiomp.Process(target=greet, args=(1,))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    aiomp.Process(target=greet)  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]
    aiomp.Process(target=add, args=(1, 2, 3))  # type: ignore[arg-type]  # pyright: ignore[reportCallIssue, reportArgumentType]


async def queues_and_pipes() -> None:
    # Queues and connections carry any picklable object: what comes out is Any.
    queue = aiomp.Queue()
    queue.put(1)
    assert_type(queue.get(), Any)
    assert_type(await queue.aget(), Any)
    here, there = aiomp.Pipe()
    assert_type(here, aiomp.Connection)
    there.send("ping")
    assert_type(here.recv(), Any)
    assert_type(await here.arecv(), Any)
    assert_type(await here.arecv_bytes(), bytes)
