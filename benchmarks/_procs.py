"""Watching the processes a cell starts: pool size, leftovers, and a watchdog against hangs."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import sys
import threading
import time
from collections.abc import Callable

import psutil  # type: ignore[import-untyped, unused-ignore]


def _descendants() -> list[psutil.Process]:
    try:
        children: list[psutil.Process] = psutil.Process().children(recursive=True)
        return children
    except psutil.Error:
        return []


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _helper_pids() -> set[int]:
    """Long-lived helpers shared by every pool (never counted, never reaped): started lazily by libraries."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    pids = {
        getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None),
        getattr(multiprocessing.resource_tracker._resource_tracker, "_pid", None),
    }
    manager = sys.modules.get("aiomultiprocess.core")
    process = getattr(getattr(manager, "_manager", None), "_process", None)
    pids.add(getattr(process, "pid", None))
    return {p for p in pids if p is not None}


class ProcessTracker:
    """Descendant processes started after the baseline (forkserver workers are grandchildren)."""

    def __init__(self) -> None:
        self._baseline = {p.pid for p in _descendants()}

    def live_new(self) -> list[psutil.Process]:
        skip = self._baseline | _helper_pids()
        return [p for p in _descendants() if p.pid not in skip and _alive(p)]

    def wait_gone(self, timeout: float) -> list[psutil.Process]:
        """Wait up to ``timeout`` s for the new processes to exit; return those still alive."""
        deadline = time.monotonic() + timeout
        left = self.live_new()
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = self.live_new()
        return left

    def reap(self, grace: float = 2.0) -> list[int]:
        """Terminate (then kill) the new processes still alive, by pid; return their pids."""
        return _stop(self.live_new(), grace)

    def reap_all(self, rounds: int = 3) -> list[int]:
        """Before a hard exit: stop every process we started, helpers included, a few times over,
        as a pool's own thread may start replacements meanwhile (forkserver children outlive us)."""
        pids: list[int] = []
        for _ in range(rounds):
            helpers = _helper_pids()
            procs = [p for p in _descendants() if _alive(p)]
            procs.sort(key=lambda p: p.pid in helpers)  # workers first, then the forkserver and friends
            if not procs:
                break
            pids += _stop(procs, grace=1.0)
            time.sleep(0.2)
        return pids


def _stop(procs: list[psutil.Process], grace: float) -> list[int]:
    """Terminate, wait up to ``grace`` s, then kill what is left; return the pids."""
    for proc in procs:
        _signal(proc, kill=False)
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        _signal(proc, kill=True)
    psutil.wait_procs(alive, timeout=grace)
    return [p.pid for p in procs]


def _signal(proc: psutil.Process, kill: bool) -> None:
    with contextlib.suppress(psutil.Error):
        proc.kill() if kill else proc.terminate()


def _forbid_new_processes() -> None:
    """We are about to exit: a pool's thread must not replace the workers we are stopping."""
    import multiprocessing.process

    def refuse(self: multiprocessing.process.BaseProcess) -> None:
        raise RuntimeError("benchmark watchdog: no new processes")

    multiprocessing.process.BaseProcess.start = refuse  # type: ignore[method-assign]


class Watchdog:
    """Last resort if a cell blocks its event loop past every timeout: dump stacks, clean up, exit."""

    def __init__(self, seconds: float, what: str, tracker: ProcessTracker, on_fire: Callable[[str], None]) -> None:
        self._seconds = seconds
        self._what = what
        self._tracker = tracker
        self._on_fire = on_fire
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="bench-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()

    def _watch(self) -> None:
        if self._done.wait(self._seconds):
            return
        message = f"watchdog: {self._what} still running after {self._seconds:.0f} s; giving up"
        print(f"\n{message}; thread stacks:", file=sys.stderr, flush=True)
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        _forbid_new_processes()
        pids = self._tracker.reap_all()
        print(f"watchdog: terminated processes {pids}", file=sys.stderr, flush=True)
        try:
            self._on_fire(message)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)
