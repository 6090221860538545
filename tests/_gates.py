"""Gates: tasks that hold until the test releases them, on any backend, through files.

A task function can neither share an ``anyio.Event`` with a test nor be watched by it
once it runs in another process (a Dask worker). ``hold`` marks its gate's files
instead: ``<gate>.started`` (with its process id) as it starts, ``<gate>.finished``
once released, ``<gate>.stopped`` if it is cancelled. It is an ``async def``, so the
in-process fake backend runs it as a coroutine it can stop, and a Dask worker runs it
on an event loop of its own.

On the test's side ``Gate`` waits for those states, each wait bounded: "stopped"
means the task's ``finally`` ran, or the process that ran it is gone (a Dask worker
is ended to stop it); either way it can never finish.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import anyio
import psutil

# How long a held task waits for its release before it gives up (it must never hang a run).
HOLD_LIMIT = 60.0
# How often a held task, and a test waiting on a gate, look at the files.
POLL = 0.005


def _mark(path: Path, text: str = "") -> None:
    with open(path, "a") as f:
        f.write(text)


async def hold(gate: str, value: object = None) -> object:
    """Wait until ``<gate>.release`` exists, then return ``value``; mark each step."""
    base = Path(gate)
    _mark(base.with_suffix(".started"), f"{os.getpid()}\n")
    finished = False
    try:
        with anyio.fail_after(HOLD_LIMIT):
            while not base.with_suffix(".release").exists():
                await anyio.sleep(POLL)
        _mark(base.with_suffix(".finished"))
        finished = True
        return value
    finally:
        if not finished:
            _mark(base.with_suffix(".stopped"))


async def hold_item(folder: str, item: int) -> int:
    """``hold`` for one item of a map: returns the item once ``<folder>/<item>.release`` exists."""
    await hold(str(Path(folder) / str(item)))
    return item


def touch(path: str) -> str:
    """Record a run: append this process's id to ``path``."""
    _mark(Path(path), f"{os.getpid()}\n")
    return path


class Gate:
    """The test's side of one ``hold``."""

    def __init__(self, folder: Path, name: str) -> None:
        self.base = folder / name
        self.path = str(self.base)

    def _file(self, suffix: str) -> Path:
        return self.base.with_suffix(suffix)

    def started(self) -> bool:
        # Its pid written, not just the file made: a worker killed between the two
        # (terminate() right then) leaves an empty file, and no pid to watch.
        return bool(self.pids())

    def finished(self) -> bool:
        return self._file(".finished").exists()

    def release(self) -> None:
        _mark(self._file(".release"))

    def pids(self) -> list[int]:
        """The processes that have started the task (more than one if it was run again)."""
        try:
            return [int(line) for line in self._file(".started").read_text().split()]
        except FileNotFoundError:
            return []

    async def wait_started(self, seconds: float = 30) -> None:
        await wait_until(self.started, seconds, f"{self.base.name} never started")

    async def wait_stopped(self, seconds: float = 30) -> None:
        """Wait until the task can no longer finish; then check it did not."""
        await wait_until(self._stopped, seconds, f"{self.base.name} was not stopped")
        assert not self.finished(), f"{self.base.name} finished after it was stopped"

    def _stopped(self) -> bool:
        if self._file(".stopped").exists():
            return True
        pids = self.pids()
        return bool(pids) and all(pid != os.getpid() and not _alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def wait_until(predicate: Callable[[], bool], seconds: float, message: str) -> None:
    """Wait for ``predicate()`` to hold, looking every few milliseconds; fail after ``seconds``."""
    with anyio.move_on_after(seconds):
        while not predicate():
            await anyio.sleep(POLL)
        return
    raise AssertionError(f"{message} within {seconds} s")
