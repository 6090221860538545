"""CPython's own multiprocessing tests, run with aiomp's primitives in place of the stdlib's.

CPython's ``Lib/test/_test_multiprocessing.py`` writes its tests against class
attributes (``self.Queue``, ``self.Lock``, ``self.Barrier``...) that a mixin fills
in. Here a mixin fills them with aiomp's factories, and each ``_Test...`` base of
the primitives is subclassed with it, once per start method. The children are the
stdlib's ``Process`` (aiomp's primitives travel by inheritance, like the stdlib's).
The test module is imported from the interpreter at run time, never copied.

Tests about the stdlib's internals, and the few where aiomp differs on purpose, are
skipped with their reason (the deliberate differences are listed in
docs/primitives.md). The whole module is skipped when the interpreter has no
``test`` package (many distributions ship Python without it).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import unittest
import unittest.mock
from collections.abc import Callable
from typing import Any

import pytest

import aiomp

try:
    from test import _test_multiprocessing as cpython
except (ImportError, unittest.SkipTest) as error:  # SkipTest: sem_open is broken here
    pytest.skip(
        f"CPython's test package is not available in this interpreter ({error}): "
        "the conformance run needs test._test_multiprocessing",
        allow_module_level=True,
    )

pytestmark = pytest.mark.timeout(60)

START_METHODS = [m for m in ("forkserver", "spawn") if m in multiprocessing.get_all_start_methods()]

# Each test is run under forkserver (aiomp's default). The classes whose primitives reach
# children run under spawn as well; the rest (locks and semaphores in one process, poll's
# 2 s sleeps, timeouts, SimpleQueue, wait()) would not tell spawn from forkserver apart.
BOTH_START_METHODS = {
    *("_TestQueue", "_TestCondition", "_TestEvent", "_TestBarrier", "_TestConnection", "_TestValue", "_TestArray"),
}

DIFFERENCES = {  # deliberate differences, listed in docs/primitives.md
    "test_queue_feeder_donot_stop_onexc": (
        "aiomp pickles in the caller: put() of an object that cannot be pickled raises there, "
        "where the stdlib's feeder thread prints the error and drops the item"
    ),
    "test_getobj_getlock": (
        "Value(..., lock='navalue') raises TypeError naming the parameter (aiomp's rule for bad "
        "arguments), where the stdlib raises AttributeError"
    ),
    "test_getobj_getlock_obj": (
        "Array(..., lock='notalock') raises TypeError naming the parameter (aiomp's rule for bad "
        "arguments), where the stdlib raises AttributeError"
    ),
    "test_repr": "aiomp's reprs name aiomp (<aiomp.Event(unset)>), not <Event at 0x... unset>",
}
STDLIB_INTERNALS = {
    "test_queue_feeder_on_queue_feeder_error": (
        "subclasses multiprocessing.queues.Queue to test its _on_queue_feeder_error hook: stdlib internals"
    ),
    "test_closed": "checks SimpleQueue's private _reader and _writer: stdlib internals",
}
NOT_AIOMP = {  # in classes that are run for their other tests
    "test_wait_socket": "waits on plain sockets: no aiomp object involved",
    "test_wait_socket_slow": "waits on plain sockets: no aiomp object involved",
    "test_wait_integer": (
        "waits 3 s on a process sentinel, with the stdlib's Semaphore: no aiomp behaviour that test_wait and "
        "test_neg_timeout do not cover"
    ),
    "test_wait_timeout": (
        "sleeps 5 s to time wait()'s own timeout on two idle pipes: too slow for this run; test_neg_timeout "
        "covers an idle aiomp pipe in wait()"
    ),
}


def _skip(reason: str) -> Callable[..., None]:
    @unittest.skip(reason)
    def skipped(self: unittest.TestCase) -> None:  # pragma: no cover - never runs
        pass

    return skipped


def _close_queue(queue: Any) -> None:
    """CPython's ``close_queue``, for aiomp's queues as well (it only knows the stdlib's)."""
    if isinstance(queue, (aiomp.Queue, aiomp.SimpleQueue, multiprocessing.queues.Queue)):
        queue.close()
        queue.join_thread()


class _Patched:
    """Some tests call ``multiprocessing.X`` themselves instead of the mixin's ``self.X``,
    and CPython's ``close_queue`` knows only the stdlib's queues: for the duration of a
    class, those names are aiomp's (in this process; children run what they are given)."""

    Process: Any = None  # the start method's Process, set per class
    _patches: contextlib.ExitStack

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()  # type: ignore[misc]
        cls._patches = stack = contextlib.ExitStack()
        for name, value in {
            "Queue": aiomp.Queue,
            "JoinableQueue": aiomp.JoinableQueue,
            "SimpleQueue": aiomp.SimpleQueue,
            "Pipe": aiomp.Pipe,
            "Event": aiomp.Event,
            "Lock": aiomp.Lock,  # the barrier tests' shared counter (_DummyList) takes one
            "Process": cls.Process,
        }.items():
            stack.enter_context(unittest.mock.patch.object(multiprocessing, name, value))
        stack.enter_context(unittest.mock.patch.object(cpython, "close_queue", _close_queue))

    @classmethod
    def tearDownClass(cls) -> None:
        cls._patches.close()
        super().tearDownClass()  # type: ignore[misc]


class _AiompMixin(_Patched, cpython.BaseMixin):
    """CPython's ProcessesMixin, with aiomp's primitives."""

    TYPE = "processes"
    connection = multiprocessing.connection
    current_process = staticmethod(multiprocessing.current_process)
    parent_process = staticmethod(multiprocessing.parent_process)
    active_children = staticmethod(multiprocessing.active_children)
    Pipe = staticmethod(aiomp.Pipe)
    Queue = staticmethod(aiomp.Queue)
    JoinableQueue = staticmethod(aiomp.JoinableQueue)
    Lock = staticmethod(aiomp.Lock)
    RLock = staticmethod(aiomp.RLock)
    Semaphore = staticmethod(aiomp.Semaphore)
    BoundedSemaphore = staticmethod(aiomp.BoundedSemaphore)
    Condition = staticmethod(aiomp.Condition)
    Event = staticmethod(aiomp.Event)
    Barrier = staticmethod(aiomp.Barrier)
    Value = staticmethod(aiomp.Value)
    Array = staticmethod(aiomp.Array)
    RawValue = staticmethod(multiprocessing.RawValue)  # aiomp has no raw kinds: these are shared memory alone
    RawArray = staticmethod(multiprocessing.RawArray)


def _check_invariant(self: Any, cond: Any) -> None:
    """CPython's check reads the stdlib condition's private semaphores; this is aiomp's
    equivalent: with nobody waiting, no waiter is counted and no wake-up is pending."""
    self.assertEqual(cond._sleeping(), 0)
    self.assertEqual(cond._wake.get_value(), 0)


CLASSES = [
    "_TestQueue",
    "_TestLock",
    "_TestSemaphore",
    "_TestCondition",
    "_TestEvent",
    "_TestBarrier",
    "_TestValue",
    "_TestArray",
    "_TestConnection",
    "_TestPoll",
]
# Plain unittest.TestCase classes: they call multiprocessing.X themselves (patched, see _Patched).
PLAIN_CLASSES = ["TestTimeouts", "TestSimpleQueue", "TestWait"]


def _install(namespace: dict[str, Any]) -> None:
    skips = {**DIFFERENCES, **STDLIB_INTERNALS, **NOT_AIOMP}
    for name in [*CLASSES, *PLAIN_CLASSES]:
        base = getattr(cpython, name)
        methods = ["forkserver", "spawn"] if name in BOTH_START_METHODS else ["forkserver"]
        for method in methods:
            if method not in START_METHODS:
                continue
            ctx = multiprocessing.get_context(method)
            attrs: dict[str, Any] = {"Process": ctx.Process, "start_method": method, "__module__": __name__}
            for test in dir(base):
                if test.startswith("test_") and test in skips:
                    attrs[test] = _skip(skips[test])
            if hasattr(base, "check_invariant"):
                attrs["check_invariant"] = _check_invariant
            clsname = f"Test{name.lstrip('_').removeprefix('Test')}_{method}"
            if name in PLAIN_CLASSES:
                cls = type(clsname, (_Patched, base), attrs)
            else:
                cls = type(clsname, (base, _AiompMixin, unittest.TestCase), attrs)
            cls.__qualname__ = clsname
            namespace[clsname] = cls


_install(globals())
