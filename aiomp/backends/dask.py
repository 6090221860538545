"""The Dask distributed backend: the same ``Pool`` on a Dask cluster.

``aiomp.Pool(backend=aiomp.DaskBackend("tls://scheduler:8786", security=...))`` runs
every Pool call on a Dask cluster's workers. This module imports ``distributed``;
``aiomp`` imports it only when ``aiomp.DaskBackend`` is first used.

Data flow::

    Pool ──submit──▶ pending ──_dispatch──▶ handed ──client.submit──▶ scheduler ──▶ worker: _dask_task.run
                        (at most _limit() tasks handed at once)                          │
    caller ◀── task.done ◀── _deliver ◀── _watch: await future (bytes) ◀────── result ◀───┘
    parent's logging ◀── _on_record ◀── Dask event on the pool's topic ◀── worker's records

Where code runs: the Pool calls this backend on its event loop ("the pool side").
Everything that talks to Dask runs on the Dask client's asyncio loop ("the Dask
side"): on asyncio and uvloop that is the pool's own loop, and the two sides are one
(``_Direct``); on trio, whose loop Dask cannot use, it is an asyncio loop in a thread
of this backend's own (``_Thread``), and the sides hand work to each other without
blocking (``to_dask``, ``to_pool``, ``run``).

Invariants:

* A task is in ``pending`` (not sent to Dask) or in ``handed`` (its watcher owns it
  until its future is done). ``pending`` is appended to on the pool side and taken
  from on the Dask side; ``handed`` is only touched on the Dask side.
* At most ``_limit()`` tasks are handed at once, so tasks waiting for a thread of the
  cluster wait here, where cancelling them costs nothing and ``statistics()`` sees them.
* ``task.cancelled`` is set on the pool side only, and outcomes are delivered there
  (``_deliver``), so the Pool's view of a task never races with an outcome.
* Futures are awaited one by one, never gathered together: a cancelled future in a
  gather leaves Dask's internal exceptions unretrieved. To stop a running task, the
  backend finds the workers that have it (``Client.processing``), cancels the future,
  then has those workers end themselves if it is still running there
  (``_dask_task.stop_tasks``); in the other order, Dask would run the task again on
  another worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import enum
import functools
import logging
import math
import pickle
import sys
import threading
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, TypeVar

import anyio
import anyio.to_thread
import cloudpickle
import sniffio
from anyio.abc import TaskGroup

try:
    import distributed
    from distributed import KilledWorker
    from distributed.comm.addressing import parse_address
    from distributed.comm.registry import get_backend
except ImportError as error:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "aiomp.DaskBackend needs Dask distributed, which is not installed: pip install 'aiomp[dask]'"
    ) from error

from .. import _logs
from .._exceptions import PoolClosedError, ProcessError, RemoteTraceback, WorkerDiedError
from .._serialize import LARGE
from . import Backend, PoolStatistics, Task, _dask_task

__all__ = ["DaskBackend"]

T = TypeVar("T")

_logger = logging.getLogger("aiomp")

# Loggers of Dask's own whose levels are never copied onto the workers.
_DASK_LOGGERS = ("distributed", "dask", "tornado", "bokeh")
# How many tasks per thread of the cluster may be handed to Dask at once: one
# running and one waiting on the worker, so that a thread never idles for a round trip.
_HANDED_PER_THREAD = 2
# How often the cluster's size (threads, workers) is asked of the scheduler.
_REFRESH_SECONDS = 0.5
# How long terminate waits for the cluster to confirm cancellations before it lets go.
_STOP_SECONDS = 10.0
_DEFAULT_TIMEOUT = 10.0


class _ByValue:
    """A function of ``_dask_task`` that pickles by value, so a worker needs no aiomp.

    Plain pickle (which Dask tries first) sees only ``pickle.loads`` and bytes; the
    bytes are cloudpickle's copy of the function and of what it uses.
    """

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        module = sys.modules[func.__module__]
        registered = func.__module__ in cloudpickle.list_registry_pickle_by_value()
        cloudpickle.register_pickle_by_value(module)
        try:
            self.data = cloudpickle.dumps(func, protocol=5)
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)

    def __reduce__(self) -> tuple[Any, ...]:
        return pickle.loads, (self.data,)

    def __call__(self, *args: Any) -> Any:
        return self.func(*args)


_RUN = _ByValue(_dask_task.run)
_STOP = _ByValue(_dask_task.stop_tasks)


class _State(enum.Enum):
    INIT = "init"
    RUN = "run"
    CLOSE = "close"
    TERMINATE = "terminate"


class DaskBackend(Backend):
    """Runs a Pool's tasks on a Dask distributed cluster.

    ``address_or_client`` is the scheduler's address (``"tcp://host:8786"``,
    ``"tls://host:8786"``) or a ``distributed.Client``. With an address the pool
    connects a client of its own when it is entered, with ``security`` (a
    ``distributed.Security``; TLS), and closes it when it is left. A ``Client`` passed
    in belongs to the caller and is never closed: the pool uses it if it is an
    asynchronous client of the running event loop, and otherwise connects a client
    of its own to the same scheduler with the same security.

    ``timeout`` (seconds, default 10) bounds the connection: entering the pool
    raises ``OSError`` (``TimeoutError`` among them) if the scheduler cannot be
    reached within it. It also bounds how long leaving the pool waits for Dask.

    ``Pool.processes`` is the cluster's total number of worker threads, read again as
    workers come and go; ``map`` sizes its chunks from it. Of the Pool's local-process
    options only ``forward_logs`` applies. It works on asyncio, uvloop and trio (on
    trio through an asyncio loop in a thread). See ``docs/scaling.md``.
    """

    supported_options: ClassVar[frozenset[str]] = frozenset({"forward_logs"})

    def __init__(
        self,
        address_or_client: str | distributed.Client,
        *,
        security: distributed.Security | None = None,
        timeout: float = _DEFAULT_TIMEOUT,
    ) -> None:
        self._given: distributed.Client | None = None
        self._address: str | None = None
        if isinstance(address_or_client, distributed.Client):
            if security is not None:
                raise TypeError("security= goes with a scheduler address; a Client brings its own security")
            self._given = address_or_client
        elif isinstance(address_or_client, str):
            self._address = _check_address(address_or_client)
        else:
            raise TypeError(
                "address_or_client must be a scheduler address such as 'tcp://host:8786' or a distributed.Client,"
                f" not {type(address_or_client).__name__}"
                + (" (pass cluster.scheduler_address)" if hasattr(address_or_client, "scheduler_address") else "")
            )
        if security is not None and not isinstance(security, distributed.Security):
            raise TypeError(f"security must be a distributed.Security or None, not {type(security).__name__}")
        if self._address is not None and security is None and _needs_tls(self._address):
            raise ValueError(
                f"{self._address!r} is a TLS address: pass security=distributed.Security(...) with the client's"
                " certificate and key and the cluster's CA (or set Dask's distributed.comm.tls configuration)"
            )
        self._security = security
        self._timeout = _check_timeout(timeout)
        self._forward_logs = True
        self._topic = f"aiomp-logs-{uuid.uuid4().hex}"
        self._state = _State.INIT
        self._bridge: _Direct | _Thread | None = None
        self._client: distributed.Client | None = None
        self._own_client = False
        self._subscribed = False
        self._disconnected = False
        self._idle: anyio.Event | None = None
        self._pending: deque[Task] = deque()
        self._handed: set[Task] = set()
        # Watchers still running (a cancelled task's until its future says so), and
        # what terminate waits on for them to end (Dask side).
        self._watching = 0
        self._quiet: asyncio.Event | None = None
        self._threads = 0
        self._workers = 0
        self._completed = 0
        self._restarted = 0
        self._levels: _logs.LevelWatch | None = None
        self._level_snapshot: _logs.Levels = (0, logging.WARNING, {}, [])
        # The last function pickled: a map's chunks share it. Read and written whole, from any thread.
        self._last_function: tuple[Callable[..., Any], bytes] | None = None

    def __repr__(self) -> str:
        where = self._address if self._given is None else repr(self._given)
        return f"<aiomp.DaskBackend {where} {self._state.value}>"

    @property
    def processes(self) -> int:
        """The cluster's worker threads (0 until the pool is entered)."""
        return self._threads

    @processes.setter
    def processes(self, value: int) -> None:
        raise AttributeError("DaskBackend.processes is the cluster's thread count; it cannot be set")

    def configure(self, **options: Any) -> None:
        """Take ``forward_logs`` (the only local option that applies to a cluster)."""
        forward_logs = options.pop("forward_logs", True)
        if not isinstance(forward_logs, bool):
            raise TypeError(f"forward_logs must be a bool, not {type(forward_logs).__name__}")
        if options:  # pragma: no cover - the Pool passes only supported options
            raise TypeError(f"DaskBackend cannot honour {', '.join(sorted(options))}")
        self._forward_logs = forward_logs

    # -- lifecycle (pool side) ------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> None:
        """Connect to the cluster (bounded by ``timeout``); raise ``OSError`` if it cannot be reached."""
        if self._state is not _State.INIT:
            raise RuntimeError("a DaskBackend can be started only once (make one per Pool)")
        self._idle = anyio.Event()
        if self._forward_logs:
            self._levels = _logs.LevelWatch()
            self._level_snapshot = _worker_levels(self._levels.levels)
        if sniffio.current_async_library() == "asyncio":
            self._bridge = _Direct(task_group)
        else:  # trio: Dask's client needs an asyncio loop, so it gets one in a thread
            self._bridge = _Thread()
        # A hung connection attempt is stopped here even if Dask's own timeout is not honoured.
        with anyio.fail_after(self._timeout + 5):
            await self._bridge.run(self._connect)
        self._state = _State.RUN

    def close(self) -> None:
        """Take no more tasks; the ones submitted still run."""
        if self._state is _State.RUN:
            self._state = _State.CLOSE
            assert self._bridge is not None
            self._bridge.to_dask(self._check_idle)

    async def join(self) -> None:
        """Wait for every submitted task, then leave the cluster (our own client is closed)."""
        if self._state in (_State.INIT, _State.RUN):
            raise ValueError("join() needs a closed or terminated pool: call close() or terminate() first")
        assert self._idle is not None
        await self._idle.wait()
        await self._disconnect()

    async def terminate(self) -> None:
        """Fail unfinished tasks with ``PoolClosedError``, stop the running ones, leave the cluster."""
        previous, self._state = self._state, _State.TERMINATE
        if previous is _State.INIT and self._bridge is None:
            return
        bridge = self._bridge
        assert bridge is not None
        if self._client is not None and not self._disconnected:
            unfinished = await bridge.run(self._halt)
            error = PoolClosedError("the pool was terminated before this task finished")
            for task in unfinished:
                if not task.cancelled:
                    task.cancelled = True
                    task.done(False, error)
            with anyio.move_on_after(self._timeout + _STOP_SECONDS):
                await bridge.run(self._stop_handed)
        if self._idle is not None:
            self._idle.set()
        await self._disconnect()

    def abandon(self) -> None:
        """The pool was collected while running: let go of its futures (Dask drops their work)."""
        self._state = _State.TERMINATE
        for task in list(self._handed):
            future = task.worker
            if future is not None:
                with contextlib.suppress(Exception):
                    future.release()

    def statistics(self) -> PoolStatistics:
        """The cluster's size as last read, and this pool's tasks (see ``docs/scaling.md``)."""
        return PoolStatistics(
            processes=self._threads,
            workers_alive=self._workers,
            tasks_queued=sum(1 for task in list(self._pending) if not task.cancelled),
            tasks_running=len(self._handed),
            tasks_completed=self._completed,
            workers_restarted=self._restarted,
        )

    async def _disconnect(self) -> None:
        """Leave the cluster once: stop listening, close our own client, stop the thread."""
        if self._disconnected:
            return
        self._disconnected = True
        bridge = self._bridge
        if bridge is None:
            return
        try:
            with anyio.move_on_after(self._timeout + _STOP_SECONDS, shield=True):
                await bridge.run(self._close_client)
        finally:
            await bridge.stop()

    # -- tasks (pool side) -----------------------------------------------------------

    def prepare(self, task: Task) -> None:
        """Pickle the function (by value when workers could not import it) and the payload."""
        last = self._last_function
        if last is not None and last[0] is task.func:
            func_data = last[1]
        else:
            func_data = _dump(task.func)
            self._last_function = (task.func, func_data)
        task.encoded = (func_data, _dump(task.payload))

    def submit(self, task: Task) -> None:
        """Queue a task; it goes to Dask when fewer than two per cluster thread are there."""
        if self._state is not _State.RUN:
            raise PoolClosedError("the pool is not running: it was closed or terminated")
        if task.encoded is None:  # not prepared: its pickling error is the caller's
            self.prepare(task)
        self._pending.append(task)
        assert self._bridge is not None
        self._bridge.to_dask(self._dispatch)

    def cancel(self, tasks: list[Task], stop_running: bool = True) -> None:
        """Drop queued tasks, cancel handed ones, and end the workers running them if ``stop_running``."""
        settled = []
        for task in tasks:
            if not task.cancelled:
                task.cancelled = True
                settled.append(task)
        if settled and self._bridge is not None:
            self._bridge.to_dask(self._cancel_handed, settled, stop_running)

    # -- the Dask side -----------------------------------------------------------------

    async def _connect(self) -> None:
        given = self._given
        if given is not None and given.asynchronous:  # a client of this very loop: use it
            if given.status != "running":
                raise ValueError(
                    f"the Client passed to DaskBackend is not running (its status is {given.status!r}):"
                    " await it first, or pass the scheduler's address"
                )
            self._client = given
        else:
            address, security = self._address, self._security
            if given is not None:
                address, security = _scheduler_of(given)
            client = distributed.Client(  # type: ignore[no-untyped-call]
                address, security=security, asynchronous=True, timeout=self._timeout, set_as_default=False
            )
            try:
                await client
            except BaseException:
                # Cancelled (or failed) half way: close what it opened, or it is closed in __del__
                # with a coroutine nobody awaits.
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._timeout):
                    await client.close()  # type: ignore[no-untyped-call]
                raise
            self._client = client
            self._own_client = True
        if self._forward_logs:
            self._client.subscribe_topic(self._topic, self._on_record)  # type: ignore[no-untyped-call]
            self._subscribed = True
        self._refresh()
        assert self._bridge is not None
        self._bridge.spawn(self._refresher)

    async def _close_client(self) -> None:
        client = self._client
        if client is None:
            return
        if self._subscribed:
            self._subscribed = False
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(self._topic)  # type: ignore[no-untyped-call]
                # unsubscribe_topic keeps the handler (and so this backend) in the client.
                getattr(client, "_event_handlers", {}).pop(self._topic, None)
        if self._own_client:
            await client.close(timeout=self._timeout)  # type: ignore[no-untyped-call]

    async def _refresher(self) -> None:
        while True:
            await asyncio.sleep(_REFRESH_SECONDS)
            try:
                # Totals only (no per-worker details): cheap however big the cluster.
                info = await self._client.scheduler.identity(n_workers=0)  # type: ignore[union-attr]
            except Exception:  # an older scheduler, or a lost connection: the client's cache
                self._refresh()
            else:
                self._refresh(info)

    def _refresh(self, info: Any = None) -> None:
        """Take the cluster's size (threads, workers) from ``info``, or from the client's cache."""
        if info is None:
            assert self._client is not None
            info = self._client.scheduler_info()
        workers = info.get("workers") or {}
        threads = info.get("total_threads")
        if threads is None:  # older versions list every worker instead
            threads = sum(worker.get("nthreads", 0) for worker in workers.values())
        self._threads = max(1, int(threads))
        self._workers = int(info.get("n_workers", len(workers)))

    def _limit(self) -> int:
        return _HANDED_PER_THREAD * self._threads

    def _dispatch(self) -> None:
        if self._state is _State.TERMINATE or self._client is None:
            return
        if self._levels is not None and self._levels.changed():
            self._level_snapshot = _worker_levels(self._levels.levels)
        assert self._bridge is not None
        while self._pending and len(self._handed) < self._limit():
            task = self._pending.popleft()
            if task.cancelled:
                continue
            self._handed.add(task)
            self._watching += 1
            self._bridge.spawn(self._watch, task, self._level_snapshot)
        self._check_idle()

    async def _watch(self, task: Task, levels: _logs.Levels) -> None:
        """Send one task to Dask, await its future, deliver its outcome."""
        client = self._client
        assert client is not None
        func_data, payload = task.encoded
        scattered = future = None
        outcome: tuple[bool, Any] | None = None
        try:
            if len(payload) >= LARGE:
                # Big arguments go to a worker directly, not inside the task graph.
                scattered = payload = await client.scatter(payload, hash=False)  # type: ignore[no-untyped-call]
            if task.cancelled or self._state is _State.TERMINATE:
                return
            future = task.worker = client.submit(
                _RUN,
                func_data,
                int(task.kind),
                payload,
                task.is_async,
                self._topic if self._forward_logs else None,
                levels,
                key=f"{_name(task.func)}-{uuid.uuid4().hex}",
                pure=False,
            )
            try:
                data = await future
            except Exception as error:
                outcome = self._failure(task, error)
            else:
                self._completed += 1
                if task.cancelled:
                    return
                if len(data) >= LARGE:
                    outcome = await anyio.to_thread.run_sync(_load, data)
                else:
                    outcome = _load(data)
        except Exception as error:  # Dask refused the task or lost its connection
            outcome = (False, error)
        finally:
            self._handed.discard(task)
            task.worker = None
            for held in (future, scattered):
                if held is not None:
                    held.release()
            self._watching -= 1
            if not self._watching and self._quiet is not None:
                self._quiet.set()
            self._dispatch()
        if outcome is not None and self._bridge is not None:
            self._bridge.to_pool(self._deliver, task, outcome)

    def _failure(self, task: Task, error: BaseException) -> tuple[bool, Any] | None:
        """What the caller gets for a future that failed in Dask (None: nothing, it was cancelled)."""
        if isinstance(error, KilledWorker):
            self._completed += 1
            self._restarted += 1
            died = WorkerDiedError(None, f"Dask gave up on the task after its workers died: {error}")
            died.__cause__ = error
            return False, died
        if isinstance(error, concurrent.futures.CancelledError):
            if task.cancelled or self._state is _State.TERMINATE:
                return None
            lost = WorkerDiedError(None, f"Dask dropped the task: {error}")
            lost.__cause__ = error
            return False, lost
        self._completed += 1
        if error.__cause__ is None:
            text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            error.__cause__ = RemoteTraceback(text)
        return False, error

    def _deliver(self, task: Task, outcome: tuple[bool, Any]) -> None:
        """Hand an outcome to the Pool (pool side)."""
        if task.cancelled:
            return
        task.cancelled = True
        task.done(*outcome)

    def _cancel_handed(self, tasks: list[Task], stop_running: bool) -> None:
        futures = []
        for task in tasks:
            if task in self._handed:
                self._handed.discard(task)
                if task.worker is not None:
                    futures.append(task.worker)
        if futures and self._bridge is not None:
            self._bridge.spawn(self._stop, futures, stop_running)
        self._dispatch()

    async def _stop(self, futures: list[distributed.Future[Any]], stop_running: bool) -> None:
        """Cancel futures; end the workers that are running them, if ``stop_running``.

        Where they run is asked before they are cancelled (the scheduler forgets a
        cancelled task); the workers that have them are asked after, and each ends
        itself if one of them is still running there. In the other order, Dask would
        run the task again on another worker.
        """
        client = self._client
        assert client is not None
        keys = [future.key for future in futures]
        candidates: list[str] = []
        if stop_running:
            try:
                processing = await client.processing()  # type: ignore[no-untyped-call]
            except Exception:  # the cluster is going away: nothing left to stop
                _logger.debug("aiomp: asking the Dask scheduler where tasks run failed", exc_info=True)
            else:
                candidates = [address for address, there in processing.items() if not set(there).isdisjoint(keys)]
        try:
            await client.cancel(futures)  # type: ignore[no-untyped-call]
            if candidates:
                ended = await client.run(_STOP, keys, workers=candidates, on_error="return")
                self._restarted += sum(1 for outcome in ended.values() if outcome is True)
        except Exception:
            _logger.debug("aiomp: stopping tasks on the Dask cluster failed", exc_info=True)

    async def _halt(self) -> list[Task]:
        """Terminate, first step: take no more tasks; return those not finished."""
        unfinished = [task for task in self._pending if not task.cancelled]
        self._pending.clear()
        unfinished += self._handed
        return unfinished

    async def _stop_handed(self) -> None:
        """Terminate, second step: cancel every handed task, stop the running ones, wait for the watchers."""
        tasks = list(self._handed)
        futures = [task.worker for task in tasks if task.worker is not None]
        if futures:
            await self._stop(futures, stop_running=True)
        if self._watching:  # each watcher ends as its future is cancelled
            self._quiet = asyncio.Event()
            await self._quiet.wait()

    def _check_idle(self) -> None:
        if self._state in (_State.INIT, _State.RUN) or self._idle is None:
            return
        if any(not task.cancelled for task in self._pending) or self._handed:
            return
        assert self._bridge is not None
        self._bridge.to_pool(self._idle.set)

    def _on_record(self, event: tuple[float, dict[str, Any]]) -> None:
        """A worker's log record arrived (Dask side): handle it on the pool side."""
        if self._bridge is not None:
            self._bridge.to_pool(_handle_record, event[1])


# -- the two sides ---------------------------------------------------------------------------


class _Direct:
    """The Dask client runs on the pool's own asyncio loop: both sides are one."""

    def __init__(self, task_group: TaskGroup) -> None:
        self._tg = task_group

    def to_dask(self, func: Callable[..., object], *args: Any) -> None:
        func(*args)

    def to_pool(self, func: Callable[..., object], *args: Any) -> None:
        func(*args)

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        self._tg.start_soon(func, *args)

    async def run(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        return await func(*args)

    async def stop(self) -> None:
        return None


class _Thread:
    """The Dask client runs on an asyncio loop in a thread of its own (the pool runs on trio).

    Neither side ever blocks on the other: work goes to the Dask loop with
    ``call_soon_threadsafe``, outcomes come back with trio's ``run_sync_soon``, and
    ``run`` awaits a coroutine of the Dask side through a trio event.
    """

    def __init__(self) -> None:
        import trio

        self._token = trio.lowlevel.current_trio_token()
        self._run_finished = trio.RunFinishedError
        self.loop = asyncio.new_event_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: dict[concurrent.futures.Future[Any], asyncio.Task[Any]] = {}
        self._thread = threading.Thread(target=self._main, name="aiomp-dask", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def to_dask(self, func: Callable[..., object], *args: Any) -> None:
        # In a context of its own: the caller's says "trio" to sniffio, and so to anyio.
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing is left to do there
            self.loop.call_soon_threadsafe(func, *args, context=contextvars.Context())

    def to_pool(self, func: Callable[..., object], *args: Any) -> None:
        with contextlib.suppress(self._run_finished):
            self._token.run_sync_soon(func, *args)

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        task = self.loop.create_task(func(*args))
        self._tasks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            error = task.exception()
            _logger.error("aiomp: background work of a DaskBackend failed", exc_info=error)

    async def run(self, func: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        done = anyio.Event()
        future.add_done_callback(lambda _: self.to_pool(done.set))
        self.to_dask(self._run_here, future, func, args)
        try:
            await done.wait()
        except BaseException:
            self.to_dask(self._cancel_run, future)
            raise
        return future.result()

    def _run_here(self, future: concurrent.futures.Future[Any], func: Callable[..., Any], args: Any) -> None:
        """Start ``func(*args)`` on the Dask loop, its outcome going to ``future``."""
        if not future.set_running_or_notify_cancel():
            return
        task = self.loop.create_task(func(*args))
        self._runs[future] = task
        task.add_done_callback(functools.partial(self._ran, future))

    def _ran(self, future: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
        self._runs.pop(future, None)
        if task.cancelled():
            future.set_exception(concurrent.futures.CancelledError())
        elif task.exception() is not None:
            future.set_exception(task.exception())
        else:
            future.set_result(task.result())

    def _cancel_run(self, future: concurrent.futures.Future[Any]) -> None:
        task = self._runs.get(future)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        """Cancel what still runs on the Dask loop, stop it, and close it."""
        if self.loop.is_closed():
            return
        with anyio.CancelScope(shield=True):
            if self._thread.is_alive():
                with anyio.move_on_after(_STOP_SECONDS):
                    await self.run(self._cancel_all)
                self.loop.call_soon_threadsafe(self.loop.stop)
                await anyio.to_thread.run_sync(self._thread.join, _STOP_SECONDS)
            if not self._thread.is_alive():
                self.loop.close()

    async def _cancel_all(self) -> None:
        """Cancel the background tasks; let the runs still going (a connection closing) end."""
        for task in self._tasks:
            task.cancel()
        runs = [task for task in self._runs.values() if task is not asyncio.current_task()]
        await asyncio.gather(*self._tasks, *runs, return_exceptions=True)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()


# -- helpers -------------------------------------------------------------------------------


def _check_address(address: str) -> str:
    if not address.strip():
        raise ValueError("the scheduler address is empty")
    scheme, _ = parse_address(address, strict=False)
    try:
        get_backend(scheme)
    except ValueError:
        raise ValueError(
            f"{address!r} is not a Dask scheduler address: unknown scheme {scheme!r} (use tcp:// or tls://)"
        ) from None
    return address


def _needs_tls(address: str) -> bool:
    """Whether ``address`` speaks TLS and Dask's configuration gives a client no certificate for it."""
    scheme, _ = parse_address(address, strict=False)
    if scheme != "tls":
        return False
    arguments = distributed.Security().get_connection_args("client")  # type: ignore[no-untyped-call]
    return arguments.get("ssl_context") is None


def _check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout}")
    return float(timeout)


def _scheduler_of(client: distributed.Client) -> tuple[str, distributed.Security | None]:
    """The address and security of the scheduler a client is connected to."""
    scheduler = getattr(client, "scheduler", None)
    address = getattr(scheduler, "address", None)
    if client.status not in ("running", "connecting") or not address:
        raise ValueError(
            f"the Client passed to DaskBackend is not connected (its status is {client.status!r}):"
            " pass a connected Client or the scheduler's address"
        )
    return address, client.security


def _dump(obj: object) -> bytes:
    """Pickle for a Dask worker: by reference where it can import the object, else by value.

    Workers do not import the user's ``__main__``: whatever refers to it travels by
    value (cloudpickle), as do lambdas, closures and the modules registered with
    ``cloudpickle.register_pickle_by_value``.
    """
    try:
        data = pickle.dumps(obj, protocol=5)
    except Exception as error:
        try:
            return bytes(cloudpickle.dumps(obj, protocol=5))
        except Exception:
            raise error from None
    if b"__main__" in data or _registered_by_value(obj):
        return bytes(cloudpickle.dumps(obj, protocol=5))
    return data


def _registered_by_value(obj: object) -> bool:
    registry = cloudpickle.list_registry_pickle_by_value()
    return bool(registry) and getattr(obj, "__module__", None) in registry


def _load(data: bytes) -> tuple[bool, Any]:
    """The outcome ``_dask_task.run`` pickled: ``(True, value)`` or ``(False, exception)``."""
    try:
        status, *rest = pickle.loads(data)
        if status == _dask_task.OK:
            return True, rest[0]
        if status == _dask_task.ERROR:
            error, text = rest
            error.__cause__ = RemoteTraceback(text)
            return False, error
        what, text, problem = rest
        substitute = ProcessError(f"the task raised {what} (the exception could not be sent to the parent: {problem})")
        substitute.__cause__ = RemoteTraceback(text)
        return False, substitute
    except Exception as error:
        if hasattr(error, "add_note"):
            error.add_note("aiomp: the task's result could not be unpickled in the parent")
        return False, error


def _name(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None) or type(func).__name__
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name) or "task"


def _worker_levels(levels: _logs.Levels) -> _logs.Levels:
    """The parent's logging levels without those of Dask's own loggers (the workers keep theirs)."""
    disabled_below, root_level, named, disabled = levels

    def ours(name: str) -> bool:
        return not any(name == prefix or name.startswith(prefix + ".") for prefix in _DASK_LOGGERS)

    return (
        disabled_below,
        root_level,
        {name: level for name, level in named.items() if ours(name)},
        [name for name in disabled if ours(name)],
    )


def _handle_record(attributes: dict[str, Any]) -> None:
    """Hand a worker's record to the parent's logger of the same name, as the local backend does."""
    try:
        record = logging.makeLogRecord(attributes)
        logging.getLogger(record.name).handle(record)
    except Exception:  # a broken handler or filter: say so, keep going
        with contextlib.suppress(Exception):
            sys.stderr.write("--- Logging error in a handler, for a record forwarded from a Dask worker by aiomp ---\n")
            traceback.print_exc(file=sys.stderr)


DaskBackend.__module__ = "aiomp"
