"""Workers die with their parent, however the parent ends.

The parent makes a pipe, keeps its write end and never writes to it. Every
worker gets the read end. When the parent exits in any way (return, SIGTERM,
SIGKILL, ``os._exit``, the OOM killer) the kernel closes the write end, and the
read end reports end-of-file. Closing a pool closes its pipe too, which ends any
worker still left.

The worker arms the read end so that the kernel itself acts on that
end-of-file, with no help from Python code (a worker busy in a long C call holds
the GIL, so a watching thread could not run). On Linux it reopens the pipe
(through ``/proc/self/fd``: the owner and signal are set per open file, and the
workers' inherited copies are one shared open file) and sets ``O_ASYNC`` with
``F_SETSIG`` to SIGKILL: the kernel sends SIGKILL to the worker the moment the
last write end closes. Elsewhere a daemon thread blocks reading the pipe and
kills the process at end-of-file. Then the worker checks once that the pipe is
not already at end-of-file, in case the parent died before the watch was armed.

``PR_SET_PDEATHSIG`` is not used: it fires when the *thread* that forked the
worker ends (under spawn, a thread of anyio's pool that ends after 10 idle
seconds, which would kill healthy workers), and under forkserver the worker's
parent is the forkserver, which outlives the pool's process for as long as any
of its children runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading

from . import _fd

TYPE_CHECKING = False  # a worker does not import typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Lifeline", "arm", "forking"]

# Write ends this process holds. A child forked without exec (the fork start
# method, os.fork, a stdlib Pool) inherits them and would keep every pipe open
# after the parent died: it closes them as it starts (the at-fork hook below).
# Descriptors are CLOEXEC, so children that exec (spawn, forkserver) never hold them.
_WRITE_ENDS: set[int] = set()
_WRITE_ENDS_LOCK = threading.Lock()  # no fork between making a pipe and noting it
# The read end this worker was given, and the one it armed: open for its lifetime.
_ARMED: list[Any] = []


class Lifeline:
    """The parent's side: a pipe whose read end goes to every worker it starts
    (a pool's workers, or one daemon ``Process`` child)."""

    def __init__(self, context: Any) -> None:
        with _WRITE_ENDS_LOCK:
            self.child_end, self._parent_end = context.Pipe(duplex=False)
            _WRITE_ENDS.add(self._parent_end.fileno())

    def cut(self) -> None:
        """Close the write end: every worker holding the read end dies now."""
        with _WRITE_ENDS_LOCK:
            if not self._parent_end.closed:
                _WRITE_ENDS.discard(self._parent_end.fileno())
                self._parent_end.close()
                self.child_end.close()

    def started(self) -> None:
        """The only worker this lifeline is for has started: drop this process's read end."""
        self.child_end.close()


def _forked_child() -> None:
    """In a child forked without exec: let go of the parent's write ends."""
    for fd in _WRITE_ENDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _WRITE_ENDS.clear()
    _WRITE_ENDS_LOCK.release()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(
        before=_WRITE_ENDS_LOCK.acquire, after_in_parent=_WRITE_ENDS_LOCK.release, after_in_child=_forked_child
    )


# Starts by fork are serialized. Two threads forking at once copy each other's half-made
# children: a worker forked while another's start is under way inherits that one's
# sentinel write end (and its socket), so the other's death would never be seen.
_FORK_LOCK = threading.Lock()


def forking(process: Any) -> contextlib.AbstractContextManager[Any]:
    """Hold the fork lock around starting ``process`` if its start method forks this process."""
    return _FORK_LOCK if getattr(process, "_start_method", None) == "fork" else contextlib.nullcontext()


def arm(conn: Any) -> None:
    """In the worker: die with the parent. ``conn`` is the read end of its lifeline."""
    armed = _kernel_watch(conn.fileno())
    fd = conn.fileno() if armed is None else armed
    if armed is None:
        threading.Thread(target=_watch, args=(fd,), name="aiomp-lifeline", daemon=True).start()
    _ARMED.append(conn)
    if _at_eof(fd):  # the parent is already gone
        os.kill(os.getpid(), signal.SIGKILL)


def _at_eof(fd: int) -> bool:
    """Whether the pipe (which nobody writes to) has lost its writers."""
    return _fd.block_until(fd, False, _fd.deadline_after(0))


def _kernel_watch(inherited: int) -> int | None:
    """Have the kernel SIGKILL this process when the pipe's writers are gone.

    Returns the descriptor it armed, or None where this cannot be done.
    """
    import fcntl

    setsig = getattr(fcntl, "F_SETSIG", None)
    if setsig is None:
        return None
    try:
        # An open file of this worker's own: a pipe reopened by path is a new one.
        fd = os.open(f"/proc/self/fd/{inherited}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.fcntl(fd, fcntl.F_SETOWN, os.getpid())
        fcntl.fcntl(fd, setsig, signal.SIGKILL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_ASYNC)
    except OSError:
        os.close(fd)
        return None
    _ARMED.append(fd)
    return fd


def _watch(fd: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(fd, 1):
            pass
    os.kill(os.getpid(), signal.SIGKILL)
