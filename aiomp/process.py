"""``Process``: a ``multiprocessing.Process`` the event loop can start and join.

Starting runs the standard library's start in a worker thread (a spawn or
forkserver start blocks for milliseconds); joining waits on the process
sentinel, a descriptor that becomes readable when the child exits. An ``async
def`` target runs in the child on a fresh event loop: asyncio's (uvloop's when
the parent runs on uvloop) unless ``child_loop`` says otherwise, as for a Pool.
The target travels by reference when the child can import it and by value
(cloudpickle) otherwise, so lambdas, closures and functions of ``__main__`` work.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.process
import os
import socket
import sys
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from multiprocessing import reduction
from types import TracebackType
from typing import Any, overload

import anyio
import anyio.lowlevel
from typing_extensions import Self, TypeVarTuple, Unpack

from . import _checks, _fd, _lifeline, _logs, _loops
from ._doorbell import uncancellable
from ._loops import check_child_loop
from ._loops import resolve as resolve_loop
from ._tasks import in_background
from ._worker import forget_wakeup_fd

__all__ = ["Process", "active_children", "cpu_count", "current_process", "parent_process"]

Ts = TypeVarTuple("Ts")  # a target's positional arguments, checked against it

_GRACE = 1.0  # seconds between SIGTERM and SIGKILL when a Process is torn down


class Process:
    """A child process run from an event loop (``multiprocessing.Process``, awaitable).

    ``await start()``, ``await join(timeout=None)``, ``exitcode``, ``pid``,
    ``name``, ``is_alive()``, ``terminate()``, ``kill()``, ``close()``.
    ``async with Process(target=f) as p:`` starts on entry and joins on exit; an
    exception or cancellation in the block, or of that join, terminates the child
    instead (SIGTERM, then SIGKILL after a second).
    ``context`` is a start-method name or a ``multiprocessing`` context (default:
    forkserver where available, else spawn). ``forward_logs`` (default True)
    sends the child's log records to this process's own logging setup; every
    record the child logged has been handled when ``join()`` returns.
    ``child_loop`` (``"asyncio"``, ``"uvloop"``, ``"trio"`` or None) is the loop an
    ``async def`` target runs on, by the same rule as ``Pool``'s.
    """

    # The overloads: ``args`` as a tuple without ``kwargs`` is checked against ``target``;
    # ``args`` as a list, or ``kwargs`` given, is taken unchecked, as the standard library
    # takes it. The checked shapes come last, so that a checker reports a mismatch against them.
    @overload
    def __init__(
        self,
        target: None = None,
        name: str | None = None,
        args: Iterable[Any] = ...,
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: Callable[..., object],
        name: str | None = None,
        *,
        args: list[Any],
        kwargs: Mapping[str, Any] | None = None,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: Callable[..., object],
        name: str | None,
        args: list[Any],
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: Callable[..., object],
        name: str | None = None,
        args: Iterable[Any] = ...,
        *,
        kwargs: Mapping[str, Any],
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: Callable[..., object],
        name: str | None,
        args: Iterable[Any],
        kwargs: Mapping[str, Any],
        *,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: Callable[[], object],
        name: str | None = None,
        args: tuple[()] = ...,
        kwargs: None = None,
        *,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: Callable[[Unpack[Ts]], object],
        name: str | None = None,
        *,
        args: tuple[Unpack[Ts]],
        kwargs: None = None,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self,
        target: Callable[[Unpack[Ts]], object],
        name: str | None,
        args: tuple[Unpack[Ts]],
        kwargs: None = None,
        *,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None: ...

    def __init__(
        self,
        target: Callable[..., Any] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
        context: Any = None,
        forward_logs: bool = True,
        child_loop: str | None = None,
    ) -> None:
        if target is not None and not callable(target):
            raise TypeError(f"target must be callable or None, not {type(target).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, not {type(name).__name__}")
        if daemon is not None and not isinstance(daemon, bool):
            raise TypeError(f"daemon must be a bool or None, not {type(daemon).__name__}")
        if not isinstance(forward_logs, bool):
            raise TypeError(f"forward_logs must be a bool, not {type(forward_logs).__name__}")
        self._forward_logs = forward_logs
        self._child_loop = check_child_loop(child_loop)
        self._logs: _logs.Receiver | None = None
        self._target = target
        self._args = _checks.check_args(args)
        self._kwargs = _checks.check_kwds({} if kwargs is None else kwargs, "kwargs")
        self._ctx = _checks.context(context)
        self._process: multiprocessing.process.BaseProcess = self._ctx.Process(  # type: ignore[attr-defined]
            name=name, daemon=daemon
        )
        self._started = False
        self._exited: _fd.SharedWait | None = None
        self._lifeline: _lifeline.Lifeline | None = None
        self._released = False  # a join() saw the child's exit, or close() released it

    # -- the standard attributes ---------------------------------------------------

    @property
    def name(self) -> str:
        """The process name (``Process-N`` unless given)."""
        return self._process.name

    @name.setter
    def name(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"name must be a str, not {type(value).__name__}")
        self._process.name = value

    @property
    def daemon(self) -> bool:
        """Whether the child is terminated when the parent exits (set before ``start``)."""
        return self._process.daemon

    @daemon.setter
    def daemon(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"daemon must be a bool, not {type(value).__name__}")
        self._process.daemon = value

    @property
    def pid(self) -> int | None:
        """The child's process id, None before ``start``."""
        return self._process.pid

    ident = pid

    @property
    def exitcode(self) -> int | None:
        """None while running; the exit status after; ``-N`` if killed by signal ``N``."""
        return self._process.exitcode

    @property
    def sentinel(self) -> int:
        """A descriptor that becomes readable when the child exits."""
        return self._process.sentinel

    def is_alive(self) -> bool:
        """True from ``start`` until the child exits."""
        return self._process.is_alive()

    def terminate(self) -> None:
        """Send SIGTERM."""
        self._process.terminate()

    def kill(self) -> None:
        """Send SIGKILL."""
        self._process.kill()

    def close(self) -> None:
        """Release the process's resources; ``ValueError`` while it still runs."""
        self._process.close()
        self._released = True
        self._cut_lifeline()
        if self._logs is not None:
            self._logs.close()

    def _cut_lifeline(self) -> None:
        if self._lifeline is not None:
            self._lifeline.cut()
            _LIFELINES.discard(self._lifeline)

    def __repr__(self) -> str:
        return f"<aiomp.Process {self._process!r}>"

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        # Started, and neither joined nor closed: the child may still run (or wait to be
        # reaped), and its log channel is still open.
        if getattr(self, "_exited", None) is not None and not self._released:
            _warn(f"{self!r} was started and never joined or closed", ResourceWarning, source=self)

    # -- starting and joining ------------------------------------------------------

    async def start(self) -> None:
        """Start the child without blocking the event loop.

        A start cancelled before it begins starts nothing; one cancelled while
        the child is being started waits for the start to finish and then stops
        the child, so no child is left behind either way.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self._started:
            raise RuntimeError("cannot start a process twice")
        self._started = True
        logs = self._logs = _logs.Receiver() if self._forward_logs else None
        if self._process.daemon and sys.platform != "win32":
            # A daemon child dies with this process, however it ends (see _lifeline).
            self._lifeline = _lifeline.Lifeline(self._ctx)
            _LIFELINES.add(self._lifeline)
        self._process._target = _child_main  # type: ignore[attr-defined]
        self._process._args = (  # type: ignore[attr-defined]
            _Target(self._target),
            self._args,
            self._kwargs,
            resolve_loop(self._child_loop),
            None if logs is None else logs.child_config(),
            None if self._lifeline is None else self._lifeline.child_end,
        )
        self._process._kwargs = {}  # type: ignore[attr-defined]
        failure: list[BaseException] = []
        signal_r, signal_w = socket.socketpair()
        process = self._process  # the thread holds this, not self: it may outlive the signal a moment

        def start() -> None:
            try:
                with _lifeline.forking(process):
                    process.start()
            except BaseException as error:
                failure.append(error)
            finally:
                signal_w.close()  # EOF on signal_r: the start is over

        # A thread of our own, started here, so that it certainly runs and signals.
        threading.Thread(target=start, name="aiomp-process-start", daemon=True).start()
        try:
            try:
                await _fd.wait_readable(signal_r.fileno())
            except anyio.get_cancelled_exc_class():
                await uncancellable(functools.partial(_fd.wait_readable, signal_r.fileno()))
                if not failure:
                    self._exited = _fd.SharedWait(self._process.sentinel)
                    await uncancellable(self._stop)
                raise
        finally:
            _fd.close_socket(signal_r)
            if logs is not None:
                logs.started()
            if self._lifeline is not None:
                self._lifeline.started()
        if failure:
            if logs is not None:
                logs.close()
            self._cut_lifeline()
            raise failure[0]
        self._exited = _fd.SharedWait(self._process.sentinel)
        _STARTED.add(self)
        if logs is not None:
            in_background(functools.partial(_logs.listen_alone, logs))

    async def join(self, timeout: float | None = None) -> None:
        """Await the child's exit, for up to ``timeout`` seconds (it may still run after).

        As in the standard library, a negative ``timeout`` counts as 0.
        """
        timeout = _checks.clamp_timeout(timeout)
        if self._exited is None:
            raise RuntimeError("can only join a started process")
        with anyio.move_on_after(timeout):
            while self._process.exitcode is None:
                await self._exited.wait()
        if self._process.exitcode is not None:
            self._process.join(0)  # drop it from multiprocessing's list of children
            self._released = True
            self._cut_lifeline()
            if self._logs is not None:
                # Everything the child logged is in the channel now.
                await uncancellable(self._logs.drain)
                self._logs.close()

    async def _stop(self) -> None:
        """Terminate, then kill after a grace period, and reap."""
        if self._exited is None:
            self._exited = _fd.SharedWait(self._process.sentinel)
        if self._process.exitcode is None:
            self._process.terminate()
            await self.join(_GRACE)
        if self._process.exitcode is None:
            self._process.kill()
            await self.join(_GRACE)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            try:
                await self.join()
                return
            except BaseException:  # the join was cancelled: the child must not outlive the block
                await uncancellable(self._stop)
                raise
        await uncancellable(self._stop)


class _Target:
    """Carries the target to the child: by reference if it pickles so, else by value."""

    def __init__(self, func: Callable[..., Any] | None) -> None:
        self.func = func

    def __reduce__(self) -> tuple[Any, ...]:
        func = self.func
        if getattr(func, "__module__", None) != "__main__":
            try:
                reduction.ForkingPickler.dumps(func)
            except Exception:
                pass
            else:
                return _Target, (func,)
        import cloudpickle

        return _loads, (cloudpickle.dumps(func),)


def _loads(data: bytes) -> _Target:
    import pickle

    return _Target(pickle.loads(data))


# The children started here, for active_children(); a child is forgotten with its object.
_STARTED: weakref.WeakSet[Process] = weakref.WeakSet()
# Daemon children's lifelines, kept until the child is joined or closed (dropping the
# Process object must not kill its child): at the latest, this process's exit cuts them.
_LIFELINES: set[_lifeline.Lifeline] = set()


def cpu_count() -> int:
    """The number of CPUs this process may run on: the default size of a ``Pool``.

    Unlike ``multiprocessing.cpu_count()`` (every CPU of the machine), this honours the
    CPU affinity a container or ``taskset`` gives the process (``os.process_cpu_count()``
    where it exists, the scheduler affinity otherwise).
    """
    count = getattr(os, "process_cpu_count", None)
    if count is not None:
        return int(count() or 1)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def active_children() -> list[Process]:
    """The ``aiomp.Process`` children started by this process that are still running.

    As ``multiprocessing.active_children()``, finished children are reaped on the way.
    A ``Pool``'s workers are not listed: they belong to their pool.
    """
    return [p for p in list(_STARTED) if not p._released and p.is_alive()]


def current_process() -> multiprocessing.process.BaseProcess:
    """The process object for the process that calls it (``multiprocessing.current_process()``).

    In a child started by ``aiomp.Process``, its ``name`` and ``pid`` are the child's;
    in a pool worker, the name is ``aiomp-worker-N``.
    """
    return multiprocessing.current_process()


def parent_process() -> multiprocessing.process.BaseProcess | None:
    """The parent's process object in a child, None in the main process (``multiprocessing.parent_process()``)."""
    return multiprocessing.parent_process()


def _child_main(
    target: _Target,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    loop: _loops.Loop,
    logs: tuple[Any, Any] | None,
    lifeline: Any = None,
) -> None:
    forget_wakeup_fd()  # one a fork copied from the parent's loop
    if lifeline is not None:
        _lifeline.arm(lifeline)  # a daemon child: die with the parent
    if logs is not None:
        _logs.install(logs)
    func = target.func
    if func is None:
        return
    if not _checks.is_async(func):
        func(*args, **kwargs)
        return
    _loops.run(loop, functools.partial(func, *args, **kwargs))


for _public in (Process, cpu_count, active_children, current_process, parent_process):
    _public.__module__ = "aiomp"
