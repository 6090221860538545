"""Functions that tests/test_faults.py runs in worker processes, and the faults they inject.

A fault is injected from inside the worker, at a known point, and only once: the
first process to create a *token* file (``O_CREAT | O_EXCL`` succeeds for exactly
one process) SIGKILLs itself; every other process, the replacement included, finds
the token taken and goes on. Runs and attempts are recorded by appending a line
(the worker's pid) to a file, so the test can count them afterwards.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import resource
import signal
import threading
import time
from typing import Any

STATE: dict[str, Any] = {}


# -- tokens and records ---------------------------------------------------------------


def claim(token: str) -> bool:
    """True for the first process that asks, False for every later one."""
    try:
        fd = os.open(token, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def die() -> None:
    """SIGKILL this process (a signal sent to oneself is delivered before kill() returns)."""
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(99)  # never reached; if it were, the exit code would give it away


def die_once(token: str) -> None:
    if claim(token):
        die()


def note(path: str, text: str = "") -> None:
    """Append one line (this pid, then ``text``) to ``path``, in one write."""
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {text}".rstrip().encode() + b"\n")
    finally:
        os.close(fd)


def record(directory: str, item: int, seconds: float = 0.0) -> int:
    """Record that ``item`` ran here (a line in ``directory/item``); return ``2 * item``."""
    if seconds:
        time.sleep(seconds)
    note(os.path.join(directory, str(item)))
    return 2 * item


async def arecord(directory: str, item: int) -> int:
    await asyncio.sleep(0)
    return record(directory, item)


# -- deaths at each stage -------------------------------------------------------------


class KillOnLoad:
    """An initializer argument whose unpickling (in the worker, before the initializer) kills it once."""

    def __init__(self, token: str, log: str) -> None:
        self.token = token
        self.log = log

    def __reduce__(self) -> tuple[Any, ...]:
        return load_or_die, (self.token, self.log)


def load_or_die(token: str, log: str) -> str:
    note(log)
    die_once(token)
    return "loaded"


def init_note(value: str, log: str) -> None:
    note(log)
    STATE["init"] = value


def init_die_once(token: str, log: str) -> None:
    note(log)
    die_once(token)
    STATE["init"] = "survived"


class InitFailedError(Exception):
    """What ``init_always_raise`` raises."""


def init_always_raise(log: str) -> None:
    note(log)
    raise InitFailedError("no database today")


def init_always_die(log: str) -> None:
    note(log)
    die()


def block(started: str, seconds: float) -> str:
    """Write this pid to ``started`` (atomically), then run for ``seconds``."""
    with open(started + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(started + ".tmp", started)
    time.sleep(seconds)
    return "finished"


def die_once_on(directory: str, item: int, *, bad: int, token: str) -> int:
    """``record``, except that the first run of item ``bad`` kills its worker."""
    if item == bad:
        die_once(token)
    return record(directory, item)


def _bytes_written() -> int:
    """Bytes this process has passed to write(2)/writev(2), sockets included."""
    with open("/proc/self/io", "rb") as f:
        for line in f:
            if line.startswith(b"wchar:"):
                return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def die_while_sending(note_path: str, size: int, after: int) -> str:
    """Return ``size`` characters, and SIGKILL this worker once ``after`` bytes of them are on the socket.

    A ``str``: it is pickled in band, so it goes through the socket (big buffers such
    as ``bytes`` would go through shared memory, written before the frame is sent).

    A thread watches the process's write counter: the kill lands in the middle of
    writing the result frame, not while it is being built. The number of bytes
    written when it struck goes to ``note_path``.
    """
    start = _bytes_written()

    def watch() -> None:
        deadline = time.monotonic() + 30
        while (written := _bytes_written() - start) < after and time.monotonic() < deadline:
            time.sleep(0.0002)
        with open(note_path, "w") as f:
            f.write(str(written))
        die()

    threading.Thread(target=watch, daemon=True).start()
    return "\0" * size


def exhaust_memory(parent_pid: int, headroom: int) -> int:
    """Cap this worker's address space a little above its size, then allocate far more."""
    if os.getpid() == parent_pid or multiprocessing.parent_process() is None:
        raise RuntimeError("refusing to limit the address space of the test process")
    with open("/proc/self/status") as f:
        vm_size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + headroom, hard))
    hog = bytearray(16 * headroom)  # raises MemoryError
    return len(hog)


# -- probes ---------------------------------------------------------------------------


def rendezvous(directory: str, parties: int, item: object = None) -> tuple[int, tuple[int, int], Any]:
    """Wait until ``parties`` workers are here at once; return this pid, its address-space limit and init state.

    ``parties`` tasks that all return prove that ``parties`` workers are serving.
    """
    note(os.path.join(directory, str(os.getpid())))
    deadline = time.monotonic() + 20
    while len(os.listdir(directory)) < parties:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(os.listdir(directory))} of {parties} workers took a task")
        time.sleep(0.002)
    return os.getpid(), resource.getrlimit(resource.RLIMIT_AS), STATE.get("init")


def pid_and(x: int) -> tuple[int, int]:
    return x + 1, os.getpid()
