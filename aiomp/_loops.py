"""Which event loop a child process runs ``async def`` functions on: the ``child_loop`` option.

One rule for ``Pool`` workers and ``Process`` children alike: asyncio's loop, uvloop's when
the parent runs on uvloop, whatever the parent's loop; ``child_loop="asyncio" | "uvloop" |
"trio"`` chooses. The choice is checked in the parent when the object is made, resolved
against the parent's running loop when the children start, and carried to them as a
``Loop`` (an anyio backend name and its options).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    import asyncio
    from typing import Any, TypeAlias, TypeVar

    T = TypeVar("T")

__all__ = ["CHILD_LOOPS", "Loop", "check_child_loop", "new_asyncio_loop", "resolve", "run"]

CHILD_LOOPS = ("asyncio", "uvloop", "trio")

# An anyio backend name and its options: ("asyncio", {}), ("asyncio", {"use_uvloop": True}), ("trio", {}).
Loop: TypeAlias = "tuple[str, dict[str, Any]]"


def check_child_loop(value: object) -> str | None:
    """``child_loop`` as given: None, or one of CHILD_LOOPS whose library is installed."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"child_loop must be one of {', '.join(map(repr, CHILD_LOOPS))} or None, not {value!r}")
    if value not in CHILD_LOOPS:
        raise ValueError(f"child_loop must be one of {', '.join(map(repr, CHILD_LOOPS))} or None, not {value!r}")
    import importlib.util

    if value != "asyncio" and importlib.util.find_spec(value) is None:
        raise ValueError(f"child_loop={value!r} needs {value} installed in this environment")
    return value


def resolve(choice: str | None) -> Loop:
    """The loop the children run, from ``choice`` and, when it is None, the parent's running loop."""
    if choice is None:
        choice = "uvloop" if _parent_on_uvloop() else "asyncio"
    if choice == "trio":
        return "trio", {}
    if choice == "uvloop":
        return "asyncio", {"use_uvloop": True}
    return "asyncio", {}


def _parent_on_uvloop() -> bool:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # trio, or no loop at all
        return False
    return type(loop).__module__.startswith("uvloop")


def new_asyncio_loop(loop: Loop) -> asyncio.AbstractEventLoop:
    """A fresh asyncio event loop of the kind ``loop`` names (for a worker that keeps one)."""
    if loop[1].get("use_uvloop"):
        import uvloop

        return uvloop.new_event_loop()
    import asyncio

    return asyncio.new_event_loop()


def run(loop: Loop, func: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run ``func()`` to completion on a fresh loop of the kind ``loop`` names."""
    import anyio

    backend, options = loop
    return anyio.run(func, backend=backend, backend_options=options)
