"""Child-side code for ``python -m benchmarks.primitives``: plain, blocking ``multiprocessing`` code.

The same functions serve every library (the stdlib, aiomp, aioprocessing): each receives the
objects that cross into the child (a queue, a connection, a lock, an event) and uses only their
blocking stdlib methods. They live in an importable module (not ``__main__``) so that spawn and
forkserver children unpickle them by reference, and they import nothing heavy.

Every child first starts a daemon thread that ends it when the benchmark process is gone, or
after :data:`MAX_LIFETIME` seconds, so that a benchmark killed hard leaves no orphan behind (the
benchmark itself stops every child it started, by its handle, at the end of each cell).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

#: No child lives longer than this, whatever happens to the benchmark process.
MAX_LIFETIME = 900.0
#: How long a command-driven child waits for its next command before it gives up.
COMMAND_TIMEOUT = 120.0
#: How long a child waits for a lock that the parent should have released.
ACQUIRE_TIMEOUT = 30.0


def _guard(ppid: int) -> None:
    """Exit when process ``ppid`` (the benchmark) is gone or :data:`MAX_LIFETIME` has passed."""

    def watch() -> None:
        deadline = time.monotonic() + MAX_LIFETIME
        while time.monotonic() < deadline:
            time.sleep(1.0)
            try:
                os.kill(ppid, 0)
            except ProcessLookupError:
                break
            except PermissionError:  # exists, owned by someone else (cannot happen for our parent)
                pass
        os._exit(0)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


# --- round trips ----------------------------------------------------------------------------------


def _serve(get: Any, put: Any, ppid: int, delayed: bool) -> None:
    """``put(get())`` until ``None`` (or the parent closing its end of a pipe); ``delayed``: each item is
    ``(delay, payload)``, answered with ``payload`` after ``delay`` s."""
    _guard(ppid)
    try:
        while (item := get()) is not None:
            if delayed:
                delay, item = item
                time.sleep(delay)
            put(item)
    except EOFError:
        return


def echo_queue(q_in: Any, q_out: Any, ppid: int) -> None:
    """``while True: q_out.put(q_in.get())``; ``None`` ends it."""
    _serve(q_in.get, q_out.put, ppid, delayed=False)


def echo_pipe(conn: Any, ppid: int) -> None:
    """``while True: conn.send(conn.recv())``; ``None`` or the parent closing its end ends it."""
    _serve(conn.recv, conn.send, ppid, delayed=False)


def delayed_echo_queue(q_in: Any, q_out: Any, ppid: int) -> None:
    """Each item is ``(delay, payload)``: sleep ``delay`` s, then put ``payload`` on ``q_out`` (idle CPU)."""
    _serve(q_in.get, q_out.put, ppid, delayed=True)


def delayed_echo_pipe(conn: Any, ppid: int) -> None:
    """Each message is ``(delay, payload)``: sleep ``delay`` s, then send ``payload`` back (idle CPU)."""
    _serve(conn.recv, conn.send, ppid, delayed=True)


# --- lock hand-off and event wake-up --------------------------------------------------------------


def _commands(ctrl: Any) -> Any:
    """Yield the commands read from the stdlib connection ``ctrl`` until ``None`` or a silence."""
    while ctrl.poll(COMMAND_TIMEOUT):
        try:
            cmd = ctrl.recv()
        except EOFError:
            return
        if cmd is None:
            return
        yield cmd


def lock_holder(lock: Any, ctrl: Any, stamp: Any, held: Any, ppid: int) -> None:
    """For each command ``(seq, hold)``: acquire ``lock``, publish ``held = seq``, keep the lock
    ``hold`` seconds, write ``stamp = time.monotonic_ns()`` and release at once.

    ``held`` becomes ``-seq`` if the lock could not be taken within :data:`ACQUIRE_TIMEOUT`.
    """
    _guard(ppid)
    for seq, hold in _commands(ctrl):
        if not lock.acquire(timeout=ACQUIRE_TIMEOUT):
            held.value = -seq
            continue
        held.value = seq
        time.sleep(hold)
        stamp.value = time.monotonic_ns()
        lock.release()


def event_setter(event: Any, ctrl: Any, stamp: Any, ppid: int) -> None:
    """For each command ``(seq, delay)``: sleep ``delay`` s, write ``stamp = time.monotonic_ns()``
    and set ``event`` at once (the parent clears it before it sends the command)."""
    _guard(ppid)
    for _seq, delay in _commands(ctrl):
        time.sleep(delay)
        stamp.value = time.monotonic_ns()
        event.set()
