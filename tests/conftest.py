"""Every test runs on asyncio, uvloop and trio; pool tests also on spawn and forkserver.

Around each test we check that nothing leaked: no child process is left (besides
multiprocessing's own long-lived helpers), no file descriptor stayed open, no
named semaphore or shared-memory segment was left in ``/dev/shm``, and nothing
this process registered with multiprocessing's resource tracker is still
registered (the tracker would report it as leaked at exit).
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

BACKENDS: list[Any] = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
]
if sys.platform != "win32":
    import uvloop

    BACKENDS.insert(1, pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="uvloop"))

START_METHODS = [m for m in ("spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_report_header() -> str:
    import aiomp

    return f"aiomp {aiomp.__version__} from {os.path.dirname(aiomp.__file__)}"


def pytest_configure(config: pytest.Config) -> None:
    """With AIOMP_TEST_INSTALLED set (CI does), the tests must import the installed package.

    The source tree beside the tests is not what users get: package data such as
    ``py.typed`` and anything the build leaves out are only in the installed copy.
    """
    if not os.environ.get("AIOMP_TEST_INSTALLED"):
        return
    import aiomp

    where = os.path.dirname(os.path.abspath(aiomp.__file__))
    if where == os.path.join(_ROOT, "aiomp"):
        raise pytest.UsageError(f"AIOMP_TEST_INSTALLED is set but aiomp was imported from the source tree: {where}")
    if not os.path.exists(os.path.join(where, "py.typed")):
        raise pytest.UsageError(f"the installed aiomp at {where} has no py.typed")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """pytest-asyncio's tests (the fixture shapes users write) run on asyncio's loop and on uvloop."""
    import asyncio

    factories: dict[str, Any] = {"asyncio": asyncio.new_event_loop}
    if sys.platform != "win32":
        factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


@pytest.fixture(params=START_METHODS)
def start_method(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _helpers() -> set[int]:
    """multiprocessing's long-lived helpers: the forkserver and the resource tracker."""
    pids: set[int] = set()
    from multiprocessing import forkserver, resource_tracker

    for holder in (forkserver._forkserver, resource_tracker._resource_tracker):  # type: ignore[attr-defined]
        pid = getattr(holder, "_forkserver_pid", None) or getattr(holder, "_pid", None)
        if pid:
            pids.add(pid)
    return pids


def _children() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=False) if p.status() != psutil.STATUS_ZOMBIE} - _helpers()


def _fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
    return out


_SHM = "/dev/shm"
_SHM_PREFIXES = ("sem.mp-", "psm_", "mp-", "aiomp")  # what multiprocessing and aiomp create there


def _shm() -> set[str]:
    try:
        return {name for name in os.listdir(_SHM) if name.startswith(_SHM_PREFIXES)}
    except OSError:  # no /dev/shm here
        return set()


def _ours(names: set[str]) -> set[str]:
    """The entries this test run made for sure: mapped by one of its processes, or
    registered by this process with the resource tracker.

    ``/dev/shm`` is shared by the whole machine: a parallel run's semaphores, or those
    left by a run that was killed with its resource tracker, are not this test's leaks.
    """
    if not names:
        return set()
    me = psutil.Process()
    tree = [me.pid, *(p.pid for p in me.children(recursive=True))]
    registered = {name.lstrip("/") for name, _ in _registered()}
    ours = {name for name in names if name in registered or name.removeprefix("sem.") in registered}
    for pid in tree:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/maps") as maps:
                text = maps.read()
            ours |= {name for name in names if f"{_SHM}/{name}" in text}
    return ours


_tracked: Counter[tuple[str, str]] = Counter()


def _track_resources() -> None:
    """Count what this process registers with the resource tracker, and unregisters."""
    from multiprocessing import resource_tracker

    register, unregister = resource_tracker.register, resource_tracker.unregister

    def counting_register(name: str, rtype: str) -> None:
        _tracked[(name, rtype)] += 1
        register(name, rtype)

    def counting_unregister(name: str, rtype: str) -> None:
        _tracked[(name, rtype)] -= 1
        if not _tracked[(name, rtype)]:
            del _tracked[(name, rtype)]
        unregister(name, rtype)

    resource_tracker.register = counting_register
    resource_tracker.unregister = counting_unregister


def _registered() -> set[tuple[str, str]]:
    return {key for key, count in _tracked.items() if count > 0}


@pytest.fixture(scope="session", autouse=True)
def _warm_helpers() -> None:
    """Start multiprocessing's shared helpers once, so they do not count as leaks."""
    _track_resources()
    for method in START_METHODS:
        ctx = multiprocessing.get_context(method)
        ctx.RawArray("q", 1)  # the shared heap's arena stays open for the session
        p = ctx.Process(target=os.getpid)
        p.start()
        p.join()
        p.close()
    if sys.platform != "win32":
        import anyio

        # libuv opens a process-wide signal pipe with the first uvloop loop.
        anyio.run(anyio.sleep, 0, backend="asyncio", backend_options={"loop_factory": uvloop.new_event_loop})


def _release_buffers() -> None:
    """Let go of this process's cache of free shared-memory segments, and wait until the
    releases already queued are done: what is left is held by a live object or leaked."""
    from aiomp import _shm

    _shm.forget_cache()
    assert _shm.settle(10), "the shared-memory reaper did not finish its releases"


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    before_fds = _fds()
    before_children = _children()
    before_shm = _shm()
    before_registered = _registered()
    yield
    # Give exiting children a moment to be reaped by the kernel.
    import time

    deadline = time.monotonic() + 5
    while (_children() - before_children) and time.monotonic() < deadline:
        time.sleep(0.02)
    leaked_children = _children() - before_children
    for pid in leaked_children:
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
    assert not leaked_children, f"child processes left running: {leaked_children}"
    _release_buffers()
    after = _fds()
    if (
        any(before_fds.get(fd) != target for fd, target in after.items())
        or _ours(_shm() - before_shm)
        or _registered() - before_registered
    ):
        # A cancelled wait leaves a cycle (exception, traceback, frames) that keeps the
        # primitive it waited on, and so its descriptors and semaphores, alive until the
        # collector runs. A full collection costs ~30 ms: only when it may help.
        gc.collect()
        _release_buffers()
        after = _fds()
    leaked = {fd: target for fd, target in after.items() if before_fds.get(fd) != target}
    # The shared heap may grow a new arena (a memory file) for start markers.
    leaked = {fd: t for fd, t in leaked.items() if "pym-" not in t}
    assert not leaked, f"file descriptors left open: {leaked}"
    new_in_shm = _shm() - before_shm
    left_in_shm = _ours(new_in_shm) if new_in_shm else set()
    assert not left_in_shm, f"left in {_SHM}: {sorted(left_in_shm)}"
    still_registered = _registered() - before_registered
    assert not still_registered, f"the resource tracker would report these as leaked: {sorted(still_registered)}"
