"""What runs on a Dask worker for ``DaskBackend``: one task (an apply, or a chunk of a map).

This module travels to the workers **by value** (cloudpickle), inside each task, so
a worker needs Dask and nothing of aiomp: it imports only the standard library at
the top, and ``distributed`` inside the functions that need it. Keep it that way:
every global it uses must be a module the workers have.

``run`` takes what ``DaskBackend.prepare`` made (the pickled function and payload)
and returns one ``bytes``: the pickle of the outcome, so that the parent unpickles
it itself (off its event loop when it is big) and a result that cannot be loaded
there fails only its own call. The outcome is one of::

    (OK, value)
    (ERROR, exception, traceback_text)            the task raised; it pickles
    (FOREIGN, "module.Type: message", traceback_text, why_not)   it does not

While the task runs, the records its thread logs go to the parent: a handler at the
root logger (one per worker process) sends them as Dask events on the pool's topic,
and the parent hands each to ``logging.getLogger(record.name).handle``. The task
first takes on the parent's logging levels, so a record the parent would not handle
is never made.
"""

from __future__ import annotations

import logging
import os
import pickle
import threading
import traceback
from collections.abc import Callable
from typing import Any

OK, ERROR, FOREIGN = 0, 1, 2
APPLY, MAP, STARMAP = 0, 1, 2  # the values of aiomp.backends.CallKind

# (logging.disable level, root level, {logger: level}, [disabled loggers]), as aiomp._logs.levels
Levels = tuple[int, int, dict[str, int], list[str]]

_PROTOCOL = 5
# A coroutine function's calls of one chunk run this many at a time (Pool's child_concurrency default).
_CONCURRENCY = 16
# The worker-process state kept across tasks: on the root logger, the one object
# every copy of this module (one per unpickled task) finds.
_STATE = "_aiomp_dask_state"


def run(func_data: bytes, kind: int, payload_data: bytes, is_async: bool, topic: str | None, levels: Levels) -> bytes:
    """Run one task on this worker: ``func`` applied to the payload as ``kind`` says."""
    forwarding = _forward(topic, levels) if topic is not None else None
    try:
        func = pickle.loads(func_data)
        payload = pickle.loads(payload_data)
        value = _call(func, kind, payload, is_async)
    except BaseException as error:  # SystemExit too: it fails this task, not the worker
        return dump_error(error)
    finally:
        if forwarding is not None:
            forwarding.target = None
    try:
        return _dumps((OK, value))
    except Exception as error:
        if hasattr(error, "add_note"):
            error.add_note("aiomp: the task's result could not be pickled on the Dask worker")
        return dump_error(error)


def _call(func: Callable[..., Any], kind: int, payload: Any, is_async: bool) -> Any:
    if kind == APPLY:
        args, kwds = payload
        calls = [(args, kwds)]
    elif kind == MAP:
        calls = [((item,), {}) for item in payload]
    else:
        calls = [(tuple(item), {}) for item in payload]
    if is_async:
        import asyncio

        values = asyncio.run(_gather(func, calls))
    else:
        values = [func(*args, **kwds) for args, kwds in calls]
    return values[0] if kind == APPLY else values


async def _gather(func: Callable[..., Any], calls: list[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any]:
    """Await every call, ``_CONCURRENCY`` at a time, in order; the first error cancels the rest."""
    import asyncio

    limit = asyncio.Semaphore(_CONCURRENCY)

    async def one(args: tuple[Any, ...], kwds: dict[str, Any]) -> Any:
        async with limit:
            return await func(*args, **kwds)

    tasks = [asyncio.ensure_future(one(args, kwds)) for args, kwds in calls]
    try:
        return [await task for task in tasks]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _dumps(obj: object) -> bytes:
    try:
        return pickle.dumps(obj, _PROTOCOL)
    except Exception as first:
        import cloudpickle

        try:
            return bytes(cloudpickle.dumps(obj, _PROTOCOL))
        except Exception:
            raise first from None


def dump_error(error: BaseException) -> bytes:
    """The outcome of a task that raised ``error``, with the worker's traceback as text."""
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    text = f'\n"""\n{text}"""'
    try:
        data = _dumps((ERROR, error, text))
        pickle.loads(data)  # an exception whose __init__ unpickling cannot call fails here
        return data
    except Exception as problem:
        what = f"{type(error).__module__}.{type(error).__qualname__}: {error}"
        return pickle.dumps((FOREIGN, what, text, repr(problem)), _PROTOCOL)


# -- log records -------------------------------------------------------------------------------


class _Forwarder(logging.Handler):
    """Sends the records of threads that run an aiomp task to that task's pool."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()
        self.levels: Levels | None = None
        self.applied: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        target = getattr(self.local, "target", None)
        if target is None:
            return
        worker, topic = target
        try:
            attributes = record_attributes(self, record)
            attributes["dask_worker"] = worker.address
            worker.log_event(topic, attributes)
        except Exception:
            self.handleError(record)


class _Target:
    """Where the current thread's records go while its task runs (``None``: nowhere)."""

    __slots__ = ("local",)

    def __init__(self, local: threading.local) -> None:
        self.local = local

    @property
    def target(self) -> Any:
        return getattr(self.local, "target", None)

    @target.setter
    def target(self, value: Any) -> None:
        self.local.target = value


def _forward(topic: str, levels: Levels) -> _Target:
    """Forward this thread's records to ``topic`` until the returned target is set to None."""
    from distributed import get_worker

    root = logging.getLogger()
    state = root.__dict__.setdefault(_STATE, {"lock": threading.Lock()})
    with state["lock"]:
        handler = state.get("handler")
        if handler is None:
            handler = state["handler"] = _Forwarder()
            root.addHandler(handler)
        if handler.levels != levels:
            _apply_levels(handler, levels)
    target = _Target(handler.local)
    target.target = (get_worker(), topic)
    return target


def _apply_levels(handler: Any, levels: Levels) -> None:
    """Take on the parent's logging levels (the last pool to send a task sets them)."""
    disabled_below, root_level, named, disabled = levels
    logging.disable(disabled_below)
    logging.getLogger().setLevel(root_level)
    for name in handler.applied - named.keys():
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in named.items():
        logging.getLogger(name).setLevel(level)
    for name in disabled:
        logging.getLogger(name).disabled = True
    handler.applied = set(named)
    handler.levels = levels


_PLAIN = (str, int, float, bool, type(None))


def record_attributes(handler: logging.Handler, record: logging.LogRecord) -> dict[str, Any]:
    """A record as plain data: the message formatted here, the exception as text."""
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    attributes: dict[str, Any] = {}
    for name, value in record.__dict__.items():
        if name in ("args", "exc_info", "message", "msg"):
            continue
        attributes[name] = value if isinstance(value, _PLAIN) else _safe_repr(value)
    attributes["msg"] = _message(record)
    attributes["args"] = None
    attributes["worker_pid"] = os.getpid()
    return attributes


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception as error:
        return f"{record.msg!r} % {record.args!r} (could not be formatted: {error!r})"


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__} object>"


# The states of a task that a worker has been given but has not started (distributed's WorkerState).
_WAITING_HERE = frozenset({"waiting", "ready", "constrained", "fetch", "flight", "missing"})
# How long a worker waits for its copy of a cancelled task to be dropped or to start.
_SETTLE_SECONDS = 2.0
# How long the worker lives on after it has answered, so that its answer is sent.
_EXIT_DELAY = 0.1


async def stop_tasks(keys: list[str], dask_worker: Any = None) -> bool:
    """Run by ``Client.run`` on a worker's event loop, after ``keys`` were cancelled.

    If one of them is running here, end this worker process (shortly after answering
    True): the only way to stop Python code that runs in one of its threads. Its nanny,
    if it has one, starts a new worker. A key that is still waiting to run here has
    not yet heard of its cancellation: wait until it is dropped or starts.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    wanted = set(keys)
    tasks = getattr(getattr(dask_worker, "state", None), "tasks", {})
    deadline = loop.time() + _SETTLE_SECONDS
    while loop.time() < deadline and any(getattr(tasks.get(key), "state", None) in _WAITING_HERE for key in wanted):
        await asyncio.sleep(0.005)
    if wanted.isdisjoint(getattr(dask_worker, "active_threads", {}).values()):
        return False
    loop.call_later(_EXIT_DELAY, os._exit, 1)
    return True
