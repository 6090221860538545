"""Functions that tests run in worker processes (importable under spawn and forkserver)."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

STATE: dict[str, Any] = {}


def inc(x: int) -> int:
    return x + 1


def add(a: int, b: int) -> int:
    return a + b


def kw(a: int, *, b: int = 0) -> tuple[int, int]:
    return a, b


def pid(_: object = None) -> int:
    return os.getpid()


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


async def asleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def araise(message: str) -> None:
    await asyncio.sleep(0)
    raise KeyError(message)


def boom(x: object) -> None:
    raise ValueError(f"boom {x}")


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"item {x} is bad")
    return x


def exit_now(code: int = 1) -> None:
    os._exit(code)


def kill_self(_: object = None) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def segfault(_: object = None) -> None:
    ctypes.string_at(0)


def exit_on(x: int, bad: int) -> int:
    if x == bad:
        os._exit(7)
    return x


def touch(path: str, seconds: float = 0.0) -> str:
    """Record a run by appending to ``path``, after sleeping ``seconds``."""
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return path


def touch_first(path: str, seconds: float) -> str:
    """Record that the task started, then sleep, then record that it finished."""
    Path(path + ".start").write_text("x")
    time.sleep(seconds)
    Path(path + ".end").write_text("x")
    return path


def init_state(value: str) -> None:
    STATE["value"] = value


def get_state(_: object = None) -> Any:
    return STATE.get("value")


def init_fail() -> None:
    raise RuntimeError("initializer failed on purpose")


class Unpicklable:
    def __reduce__(self) -> Any:
        raise TypeError("this object refuses to be pickled")


def make_unpicklable(_: object = None) -> Unpicklable:
    return Unpicklable()


class BadInitError(Exception):
    """An exception that pickles but cannot be rebuilt (its __init__ needs two args)."""

    def __init__(self, a: str, b: str) -> None:
        super().__init__(a)
        self.b = b


def raise_bad_init(_: object = None) -> None:
    raise BadInitError("first", "second")


def raise_unpicklable(_: object = None) -> None:
    error = RuntimeError("carries an unpicklable payload")
    error.payload = Unpicklable()  # type: ignore[attr-defined]
    raise error


def array_sum(arr: Any) -> float:
    return float(arr.sum())


def echo(x: Any) -> Any:
    return x


# -- gates: tasks and children that wait on state the test controls ----------------------------
#
# A test that must know a task is running, or must hold a task until it has looked at
# something, uses these instead of sleeping. Every wait has a way out (``timeout``), so a
# broken library makes a test fail instead of hang.


def note(path: str) -> None:
    """Append this pid to ``path`` as one line, in one write."""
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def pids(path: str | Path) -> list[int]:
    """The pids ``note`` wrote to ``path``, one per complete line."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [int(line) for line in text.split("\n")[:-1]]


def wait_for_file(path: str, timeout: float = 30.0) -> None:
    """Block until ``path`` exists; ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.002)


def pid_together(mine: str, other: str) -> int:
    """Create ``mine``, wait for ``other``: two calls return only if they run at once
    (in two workers). Returns this process's pid."""
    Path(mine).write_text("x")
    wait_for_file(other)
    return os.getpid()


def gated(started: str, go: str, value: Any = None, timeout: float = 30.0) -> Any:
    """Note this pid in ``started``, wait until the file ``go`` exists, return ``value``."""
    note(started)
    wait_for_file(go, timeout)
    return value


async def agated(started: str, go: str, value: Any = None, timeout: float = 30.0) -> Any:
    """``gated`` as a coroutine; if it is cancelled it notes that in ``started + ".cancelled"``."""
    note(started)
    deadline = time.monotonic() + timeout
    try:
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{go} did not appear within {timeout} s")
            await asyncio.sleep(0.002)
    except asyncio.CancelledError:
        note(started + ".cancelled")
        raise
    return value


def after(wait_for: str | None, mark: str, value: Any) -> Any:
    """Wait until the file ``wait_for`` exists (if given), create ``mark``, return ``value``."""
    if wait_for is not None:
        wait_for_file(wait_for)
    Path(mark).write_text("x")
    return value


def after_star(args: tuple[str | None, str, Any]) -> Any:
    """``after(*args)``, for ``imap``."""
    return after(*args)


_MEETINGS: dict[str, dict[str, int]] = {}


async def meet(key: str, parties: int, _: object = None) -> int:
    """A coroutine that waits until ``parties`` coroutines of this worker are inside ``meet(key)``.

    Returns the most that were inside at once, as far as this one saw. ``parties``
    calls that all return prove that ``parties`` ran at the same time; the largest
    return value is how many ran at once at most.
    """
    meeting = _MEETINGS.setdefault(key, {"arrived": 0, "inside": 0, "peak": 0})
    meeting["arrived"] += 1
    meeting["inside"] += 1
    meeting["peak"] = max(meeting["peak"], meeting["inside"])
    deadline = time.monotonic() + 20
    try:
        while meeting["arrived"] < parties:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {meeting['arrived']} of {parties} coroutines ran at once")
            await asyncio.sleep(0.001)
        # Stay inside over one more turn of the loop: a coroutine started beside this one
        # (handed to the worker in the same message) is inside too before this one leaves.
        await asyncio.sleep(0)
    finally:
        meeting["inside"] -= 1
    return meeting["peak"]


# -- children (Process targets) that act when the parent says so ------------------------------------


def put_when(q: Any, item: Any, go: Any, timeout: float) -> None:
    """Put ``(item, released)`` once the event ``go`` is set, or anyway after ``timeout``."""
    released = go.wait(timeout)
    q.put((item, released))


def ack_when(q: Any, n: int, go: Any, timeout: float) -> None:
    """Get ``n`` items, wait for ``go``, then mark them done; exit 3 if ``go`` never came."""
    for _ in range(n):
        q.get(timeout=30)
    released = go.wait(timeout)
    for _ in range(n):
        q.task_done()
    sys.exit(0 if released else 3)


def exit_when(go: Any, timeout: float) -> None:
    """Exit 0 once ``go`` is set, 3 if it was not within ``timeout``."""
    sys.exit(0 if go.wait(timeout) else 3)


def set_then_sleep(ready: Any, seconds: float) -> None:
    ready.set()
    time.sleep(seconds)


async def aset_then_sleep(ready: Any, seconds: float) -> None:
    ready.set()
    await asyncio.sleep(seconds)


async def await_then_write(path: str, go: Any, timeout: float) -> None:
    """An async target: once ``go`` is set, write the name of the loop library running it."""
    import sniffio

    released = await go.await_(timeout)
    Path(path).write_text(sniffio.current_async_library() if released else "timed out")


def get_one_after(ready: Any, q: Any, out: Any) -> None:
    """Say ``ready``, then block in ``q.get()`` and report what it gave or raised."""
    kwargs = {} if type(q).__name__ == "SimpleQueue" else {"timeout": 30}
    ready.set()
    try:
        out.put(("item", q.get(**kwargs)))
    except Exception as error:
        out.put(("error", type(error).__name__))


# -- parent side -----------------------------------------------------------------------------------


async def wait_until(condition: Any, what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` (cheap state: files, statistics, counters) for at most ``timeout`` seconds."""
    import anyio

    with anyio.move_on_after(timeout):
        while not condition():
            await anyio.sleep(0.005)
    assert condition(), f"timed out after {timeout} s waiting for {what}"


async def atouch(path: str) -> str:
    """``touch`` as a coroutine."""
    await asyncio.sleep(0)
    return touch(path)


def fill_then_leave(q: Any, n: int, size: int, cancel_join: bool) -> None:
    """Put more than the queue's pipe holds (nobody reads), then return: the feeder still
    holds items, so the process exits only if ``cancel_join_thread()`` let it."""
    for _ in range(n):
        q.put(b"x" * size)
    if cancel_join:
        q.cancel_join_thread()


async def async_write_loop(path: str) -> None:
    """An async target: write the loop library running it and, for asyncio, whose loop it is."""
    import sniffio

    library = sniffio.current_async_library()
    if library == "asyncio":
        library += " " + type(asyncio.get_running_loop()).__module__.split(".")[0]
    Path(path).write_text(library)


_HOARD: list[bytes] = []


def hoard(nbytes: int) -> int:
    """Keep ``nbytes`` of resident memory in this worker for good; return its pid."""
    _HOARD.append(b"\1" * nbytes)  # written, so resident
    return os.getpid()


async def ahoard(nbytes: int) -> int:
    """``hoard``, as a coroutine function."""
    return hoard(nbytes)
