"""Worker functions for the benchmarks.

They live in an importable module (not ``__main__``) so that spawn and forkserver workers can
unpickle them by reference. ``aiomultiprocess`` only runs coroutine functions, so every function
has an ``async def`` twin named with an ``a`` prefix (see :func:`async_twin`).
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any


def inc(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    return x + y


def nap(seconds: float) -> float:
    """Sleep, so that a warm-up batch spreads over every worker."""
    time.sleep(seconds)
    return seconds


def busy(n: int) -> int:
    """Pure-Python CPU work: about ``n`` loop iterations."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def crash_at(i: int, target: int, seconds: float) -> int:
    """Sleep ``seconds``, then return ``i``; the call with ``i == target`` kills its worker."""
    time.sleep(seconds)
    if i == target:
        os._exit(1)
    return i


def arr_sum(a: Any) -> float:
    """payload: a NumPy array in, a float out (this module imports no NumPy: the array brings it)."""
    return float(a.sum())


def echo(a: Any) -> Any:
    """payload: the array goes back the way it came."""
    return a


def check_echo(sent: Any, got: Any) -> None:
    """In the parent: ``got`` is the array ``sent`` came back as (its shape and first and last items)."""
    if got.shape != sent.shape or got[0] != sent[0] or got[-1] != sent[-1]:
        raise RuntimeError("the array came back different")


# --- logs: the workers' side ----------------------------------------------------------------------

log = logging.getLogger("bench.worker")


def burst(count: int) -> float:
    """Log ``count`` INFO records as fast as possible; the seconds it took."""
    start = time.perf_counter()
    for i in range(count):
        log.info("record %d of burst %d", i, os.getpid())
    return time.perf_counter() - start


def spin(seconds: float) -> float:
    """As busy as a burst, without logging: the scheduler's share of the loop's lag."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return seconds


def flood(count: int) -> float:
    """``count`` debug calls that no handler wants; the seconds it took."""
    start = time.perf_counter()
    for i in range(count):
        log.debug("debug record %d", i)
    return time.perf_counter() - start


def install_queue_handler(queue: Any) -> None:
    """The logging cookbook's worker initializer."""
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(queue)]
    root.setLevel(logging.DEBUG)  # the worker does not know the parent's levels


# --- faults: what the workers do -----------------------------------------------------------------


def note(path: str, text: str = "") -> None:
    """Append one line (this pid, then ``text``) to ``path`` in a single write."""
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {text}\n".encode())
    finally:
        os.close(fd)


def record(directory: str, item: int, seconds: float = 0.0) -> tuple[int, int]:
    """Record a run of ``item`` (before working), sleep ``seconds``; return (pid, 2 * item)."""
    note(os.path.join(directory, str(item)))
    if seconds:
        time.sleep(seconds)
    return os.getpid(), 2 * item


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(99)  # never reached; if it were, the exit code would give it away


def segfault() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # no core file
    ctypes.string_at(0)


def exit_3() -> None:
    os._exit(3)


def exhaust_memory(parent_pid: int, headroom: int) -> int:
    """Cap this worker's address space a little above its size, then allocate far more."""
    if os.getpid() == parent_pid or multiprocessing.parent_process() is None:
        raise RuntimeError("refusing to limit the address space of the benchmark process")
    with open("/proc/self/status") as f:
        vm_size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + headroom, hard))
    hog = bytearray(16 * headroom)  # raises MemoryError
    return len(hog)


def address_space_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_AS)


def init_die_once(token: str, log: str) -> None:
    """The first worker to start SIGKILLs itself (after noting the time); the others go on."""
    try:
        os.close(os.open(token, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        note(log, "started")
        return
    note(log, f"killed {time.monotonic()!r}")
    die()


class InitError(Exception):
    """What ``init_raise`` raises."""


def init_raise(log: str) -> None:
    note(log)
    raise InitError("no database today")


def stall(kind: int) -> None:
    """A victim's tasks: say which pid (and process name) runs them, then never end."""
    name = multiprocessing.current_process().name
    os.write(1, f"worker {os.getpid()} {name}\n".encode())  # one write: the two workers share the pipe
    if kind == 0:
        sum(range(10**13))  # one C call that holds the GIL
    else:
        time.sleep(3600)


async def ainc(x: int) -> int:
    return inc(x)


async def aadd(x: int, y: int) -> int:
    return add(x, y)


async def anap(seconds: float) -> float:
    return nap(seconds)


async def abusy(n: int) -> int:
    return busy(n)


async def astall(kind: int) -> None:
    stall(kind)


async def acrash_at(i: int, target: int, seconds: float) -> int:
    return crash_at(i, target, seconds)


async def aarr_sum(a: Any) -> float:
    return arr_sum(a)


async def aecho(a: Any) -> Any:
    return echo(a)


def async_twin(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """The ``async def`` version of one of the functions above (for aiomultiprocess)."""
    twin = globals().get("a" + func.__name__)
    if twin is None:
        raise LookupError(f"no async twin for {func.__name__}")
    return twin  # type: ignore[no-any-return]
