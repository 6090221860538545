"""Child-side functions for the tests of child_loop, the stdlib helpers and pool lifecycles.

Module level, so that spawn and forkserver children can import them.
"""

from __future__ import annotations

import json
from pathlib import Path


def _loop_name() -> str:
    import asyncio

    import sniffio

    library = sniffio.current_async_library()
    if library == "asyncio" and type(asyncio.get_running_loop()).__module__.startswith("uvloop"):
        return "uvloop"
    return library


async def loop_name(_: object = None) -> str:
    """Which event loop runs this coroutine: asyncio, uvloop or trio."""
    import anyio

    await anyio.sleep(0)
    return _loop_name()


async def write_loop_name(path: str) -> None:
    import anyio

    await anyio.sleep(0)
    Path(path).write_text(_loop_name())


async def note_cancellation(directory: str) -> None:
    """Write ``started``, then wait for ever; write ``cancelled`` when cancelled."""
    import anyio

    folder = Path(directory)
    (folder / "started").write_text("")
    try:
        await anyio.sleep_forever()
    except anyio.get_cancelled_exc_class():
        # Written whole, then renamed: the parent waits for the name and reads at once.
        (folder / "cancelled.part").write_text(_loop_name())
        (folder / "cancelled.part").replace(folder / "cancelled")
        raise


async def fail_on(value: int, bad: int) -> int:
    import anyio

    await anyio.sleep(0)
    if value == bad:
        raise KeyError(value)
    return value


def whoami(_: object = None) -> tuple[str, int | None, int]:
    """This process's name, its parent's pid (None in the main process) and its cpu_count."""
    import aiomp

    parent = aiomp.parent_process()
    return aiomp.current_process().name, None if parent is None else parent.pid, aiomp.cpu_count()


def write_whoami(path: str) -> None:
    Path(path).write_text(json.dumps(whoami()))


def wait_for(event: object, timeout: float = 30.0) -> None:
    """Block until the parent sets ``event`` (an ``aiomp.Event``), at most ``timeout`` seconds."""
    if not event.wait(timeout):  # type: ignore[attr-defined]
        raise TimeoutError("the parent never set the event")
