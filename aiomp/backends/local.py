"""The local backend: worker processes on this machine, one socket each.

Data flow::

    Pool call ──submit──▶ pending ──_dispatch──▶ worker.outbox ──writer──▶ socket ──▶ worker
                              ▲                                                        │
                              └── requeue (handed, not started) ◀── death ◀─ sentinel   │
    caller ◀── task.done ◀── reader ◀─────────────────── socket ◀── result ◀────────────┘

Invariants:

* The parent knows where every task is: in ``pending`` (not sent anywhere) or in
  exactly one worker's ``outstanding`` (sent, result not yet read), in the order
  it was handed to that worker.
* A worker starts tasks in the order it received them and records the index of the
  one it starts in the shared start-marker array before it starts it. When a worker
  dies, the outstanding tasks with an index up to its marker had started: they fail
  with ``WorkerDiedError``. The rest never started and go back to the front of
  ``pending``. Results it wrote before dying are read first, so they are kept.
* A worker is never handed more than ``_limit()`` tasks at once: a couple for long
  tasks (so work is balanced and little is stuck behind a slow task), up to a few
  milliseconds' worth for tiny tasks (so per-message costs are amortised).
* Everything here runs on the event loop thread; no lock is needed. Only
  ``Process.start`` runs in a worker thread, because starting a process blocks.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import functools
import multiprocessing
import multiprocessing.context
import signal
import socket
import sys
import time
import types
from collections import deque
from collections.abc import Callable, Iterable, Mapping, MutableSequence
from typing import Any

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from .. import _fd, _frames, _lifeline, _logs, _loops, _serialize, _waiter, _wire
from .._checks import context as _context
from .._checks import positive_int as _positive_int
from .._exceptions import BrokenPoolError, PoolClosedError, WorkerDiedError
from .._lifeline import forking
from .._worker import worker_main
from . import Backend, CallKind, PoolStatistics, Task

__all__ = ["LOCAL_OPTIONS", "LocalBackend", "encode_task", "preload_worker", "usable_cpus"]

#: The options of ``Pool`` that configure local worker processes, with their
#: defaults: ``LocalBackend`` takes them (``Pool`` passes them on when it makes
#: one); another backend takes those it lists in ``supported_options``.
LOCAL_OPTIONS: Mapping[str, object] = types.MappingProxyType(
    {
        "processes": None,
        "initializer": None,
        "initargs": (),
        "maxtasksperchild": None,
        "context": None,
        "child_concurrency": 16,
        "worker_niceness": 5,
        "forward_logs": True,
        "max_memory_per_child": None,
        "child_loop": None,
    }
)

# Consecutive workers that die before they are ready before the pool gives up.
_STARTUP_FAILURES = 3
# How much work (seconds) a worker may be handed ahead of what it is running.
_AHEAD_SECONDS = 0.002
_MAX_AHEAD = 256
# The longest a loop step spends handling a worker's messages before it lets others run.
_STEP = 0.00025
# How long terminate waits after SIGTERM before it sends SIGKILL.
_TERMINATE_GRACE = 1.0


class _State(enum.Enum):
    INIT = "init"
    RUN = "run"
    CLOSE = "close"
    TERMINATE = "terminate"


class _Worker:
    """The parent's view of one worker process."""

    def __init__(
        self,
        slot: int,
        process: multiprocessing.process.BaseProcess,
        sock: socket.socket,
        markers: _wire.Markers,
        logs: _logs.Receiver | None,
        new_event: Callable[[], _waiter.Event],
    ) -> None:
        self.slot = slot
        self.new_event = new_event
        self.logs = logs
        self.markers = markers
        self.process = process
        self.sock = sock
        self.fd: int = sock.fileno()
        sock.setblocking(False)  # this side only ever reads and writes when ready
        self.reader = _frames.Reader(sock, exact=False)
        self.writer = _frames.Writer(sock)
        # Sent (or about to be sent) and not finished, in the order handed over.
        self.outstanding: dict[int, Task] = {}
        self.next_index = 1
        self.outbox: list[Task] = []
        self.cancels: list[int] = []
        self.stop = False
        self.stop_sent = False
        self.levels_due = False
        self.wake = new_event()
        # Messages read and not handled yet (see LocalBackend._handle).
        self.backlog: deque[_frames.Frame] = deque()
        self.draining = False
        self.ready = False
        self.started = False
        # Its socket broke: the process is ending and takes nothing more.
        self.dead = False
        # It said it retires (max_memory_per_child): it takes nothing more, and is replaced.
        self.retiring = False
        # Killed to stop this task: tasks it started after it are requeued.
        self.killed_after: int | None = None
        self.init_error: BaseException | None = None
        self.quota: int | None = None
        self.done = new_event()

    def context_of(self, index: int) -> contextvars.Context | None:
        """The context of the call that submitted task ``index`` (for its log records)."""
        task = self.outstanding.get(index)
        return None if task is None else task.context

    def signal(self, kill: bool) -> None:
        """SIGTERM (or SIGKILL) the process if it is running."""
        if self.started and not self.done.is_set():
            if kill:
                self.process.kill()
            else:
                self.process.terminate()

    def has_output(self) -> bool:
        if self.dead:
            return False
        return bool(
            self.writer.pending()
            or self.outbox
            or self.cancels
            or self.levels_due
            or (self.stop and not self.stop_sent)
        )


class LocalBackend(Backend):
    """Runs tasks on ``processes`` worker processes started with ``context``.

    Takes the options of ``Pool`` that describe local workers (``LOCAL_OPTIONS``),
    checks them (``TypeError``, ``ValueError``), pickles the initializer once, and,
    under forkserver, has the forkserver preload the worker module.
    """

    def __init__(
        self,
        processes: int | None = None,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: str | multiprocessing.context.BaseContext | None = None,
        child_concurrency: int = 16,
        worker_niceness: int = 5,
        forward_logs: bool = True,
        max_memory_per_child: int | None = None,
        child_loop: str | None = None,
    ) -> None:
        child_loop = _loops.check_child_loop(child_loop)
        if max_memory_per_child is not None:
            max_memory_per_child = _positive_int("max_memory_per_child (bytes)", max_memory_per_child)
        processes = usable_cpus() if processes is None else _positive_int("processes", processes)
        if isinstance(worker_niceness, bool) or not isinstance(worker_niceness, int):
            raise TypeError(f"worker_niceness must be an int from 0 to 19, not {type(worker_niceness).__name__}")
        if not 0 <= worker_niceness <= 19:
            raise ValueError(f"worker_niceness must be from 0 to 19, not {worker_niceness}")
        if maxtasksperchild is not None:
            maxtasksperchild = _positive_int("maxtasksperchild", maxtasksperchild)
        child_concurrency = _positive_int("child_concurrency", child_concurrency)
        if not isinstance(forward_logs, bool):
            raise TypeError(f"forward_logs must be a bool, not {type(forward_logs).__name__}")
        if initializer is not None and not callable(initializer):
            raise TypeError(f"initializer must be callable or None, not {type(initializer).__name__}")
        if isinstance(initargs, (str, bytes)) or not isinstance(initargs, Iterable):
            raise TypeError(f"initargs must be a tuple of arguments, not {type(initargs).__name__}")
        self._init = _dump_initializer(initializer, tuple(initargs))
        self._ctx = _context(context)
        preload_worker(self._ctx)
        self.processes = processes
        self._listener = _logs.Listener()  # handles every worker's log records
        # Log forwarding is on when there are levels to watch: workers take on
        # the parent's logging levels, and hear when they change.
        self._levels = _logs.LevelWatch() if forward_logs else None
        self._niceness = worker_niceness
        self._maxtasks = maxtasksperchild
        self._max_memory = max_memory_per_child
        self._concurrency = child_concurrency
        self._child_loop_choice = child_loop
        self._child_loop: _loops.Loop = _loops.resolve(child_loop)  # resolved again at start
        # The last function pickled: a map's chunks share it (unhashable
        # callables miss _serialize's cache). Read and written whole, from any thread.
        self._last_function: tuple[Callable[..., Any], bytes] | None = None
        self._state = _State.INIT
        self._tg: TaskGroup | None = None
        self._pending: deque[Task] = deque()
        self._workers: dict[int, _Worker] = {}
        # Each worker's start and finish markers and cancel requests (_wire.Markers).
        self._marker: MutableSequence[int] = _wire.Markers.allocate(self._ctx, processes)
        self._seconds_per_task: float | None = None
        self._startup_failures = 0
        self._broken: BrokenPoolError | None = None
        self._completed = 0
        self._loading = 0  # large results being unpickled in a thread
        self._restarted = 0
        self._idle = anyio.Event()
        self._lifeline: _lifeline.Lifeline | None = None

    # -- lifecycle ---------------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> None:
        self._tg = task_group
        self._child_loop = _loops.resolve(self._child_loop_choice)  # the parent's loop is known now
        self._state = _State.RUN
        if sys.platform != "win32":  # pragma: no branch - POSIX pipes and signals
            self._lifeline = _lifeline.Lifeline(self._ctx)
        if self._levels is not None:
            task_group.start_soon(self._listener.run)
        async with anyio.create_task_group() as starting:
            for slot in range(self.processes):
                starting.start_soon(self._start_worker, slot)

    def close(self) -> None:
        if self._state is _State.RUN:
            self._state = _State.CLOSE
            self._check_idle()

    async def join(self) -> None:
        if self._state in (_State.INIT, _State.RUN):
            raise ValueError("join() needs a closed or terminated pool: call close() or terminate() first")
        await self._idle.wait()

    async def terminate(self) -> None:
        if self._state is _State.INIT:
            self._state = _State.TERMINATE
            self._idle.set()
            return
        self._state = _State.TERMINATE
        error = PoolClosedError("the pool was terminated before this task finished")
        self._fail_all(error)
        workers = list(self._workers.values())
        for worker in workers:
            worker.signal(kill=False)
        with anyio.move_on_after(_TERMINATE_GRACE):
            for worker in workers:
                await worker.done.wait()
        for worker in workers:
            worker.signal(kill=True)
        with anyio.move_on_after(_TERMINATE_GRACE * 10):  # SIGKILL cannot be refused
            for worker in workers:
                await worker.done.wait()
        # Every bound is spent: a process stuck in the kernel even after SIGKILL
        # does not hold up the caller (the pool's exit reaps what it can).
        if self._lifeline is not None:
            self._lifeline.cut()  # any worker still starting dies as it arms
        self._check_idle()

    def abandon(self) -> None:
        self._state = _State.TERMINATE
        for worker in self._workers.values():
            worker.signal(kill=True)
        if self._lifeline is not None:
            self._lifeline.cut()  # also ends a worker that is starting right now

    def statistics(self) -> PoolStatistics:
        running = sum(len(w.outstanding) for w in self._workers.values())
        alive = sum(1 for w in self._workers.values() if w.started and w.process.exitcode is None)
        return PoolStatistics(
            processes=self.processes,
            workers_alive=alive,
            tasks_queued=len(self._pending),
            tasks_running=running,
            tasks_completed=self._completed,
            workers_restarted=self._restarted,
        )

    # -- tasks ------------------------------------------------------------------

    def prepare(self, task: Task) -> None:
        """Pickle the task for the wire (``encode_task``); a pickling error raises here."""
        last = self._last_function
        if last is not None and last[0] is task.func:
            task.encoded = encode_task(task, last[1])
        else:
            task.encoded = encode_task(task)
            self._last_function = (task.func, task.encoded[0])

    def submit(self, task: Task) -> None:
        if self._broken is not None:
            raise self._broken
        if self._state is not _State.RUN:
            raise PoolClosedError("the pool is not running: it was closed or terminated")
        if task.encoded is None:  # not prepared: its pickling error is the caller's
            self.prepare(task)
        self._pending.append(task)
        if len(self._pending) == 1:
            # Tasks already waiting mean the workers are full; they dispatch
            # again when room frees up (a result, a new worker, a cancel).
            self._dispatch()

    def cancel(self, tasks: list[Task], stop_running: bool = True) -> None:
        for task in tasks:
            if task.cancelled:
                continue
            task.cancelled = True
            worker: _Worker | None = task.worker
            if worker is None:
                continue  # still pending: _dispatch skips it
            if task in worker.outbox:
                worker.outbox.remove(task)
                del worker.outstanding[task.index]
                if worker.quota is not None:
                    worker.quota += 1
                continue
            worker.markers.request_cancel(task.index)
            if task.is_async or task.index > worker.markers.started:
                # Not started: the worker will see the request and skip it
                # (acknowledging with CANCELLED); the message makes it say so
                # sooner, and cancels the task if it is a running coroutine.
                worker.cancels.append(task.index)
                worker.wake.set()
            elif stop_running and task.index > worker.markers.finished:
                # Running now: the only way to stop Python code is to end its
                # process. A task it may start meanwhile did nothing wrong:
                # _buried sends it elsewhere instead of failing it. (A finished
                # task is left alone: its unread result is simply dropped.)
                worker.killed_after = task.index
                worker.signal(kill=True)
        self._dispatch()
        self._check_idle()

    def _fail_all(self, error: BaseException) -> None:
        tasks = list(self._pending)
        self._pending.clear()
        for worker in self._workers.values():
            tasks += worker.outstanding.values()
            worker.outstanding.clear()
            worker.outbox.clear()
        for task in tasks:
            if not task.cancelled:
                task.cancelled = True
                task.done(False, error)

    def _limits(self) -> tuple[int, int]:
        """How many tasks a worker may hold at once: (plain tasks, coroutines)."""
        per_task = self._seconds_per_task
        ahead = 1 if per_task is None else max(1, min(_MAX_AHEAD, int(_AHEAD_SECONDS / max(per_task, 1e-7))))
        return 1 + ahead, self._concurrency + ahead

    def _dispatch(self) -> None:
        """Hand pending tasks to workers that have room, least loaded first."""
        self._check_levels()
        pending = self._pending
        touched: list[tuple[_Worker, bool]] = []
        workers = [w for w in self._workers.values() if not (w.stop or w.dead or w.retiring) and w.quota != 0]
        plain_limit, async_limit = self._limits()
        while pending and workers:
            task = pending[0]
            if task.cancelled:
                pending.popleft()
                continue
            limit = async_limit if task.is_async else plain_limit
            best: _Worker | None = None
            for worker in workers:
                load = len(worker.outstanding)
                if load < limit and (best is None or load < len(best.outstanding)):
                    best = worker
            if best is None:
                break
            pending.popleft()
            if not best.outbox:
                touched.append((best, not best.outstanding))
            best.outbox.append(task)
            task.worker = best
            task.index = best.next_index
            best.next_index += 1
            best.outstanding[task.index] = task
            if best.quota is not None:
                best.quota -= 1
                if best.quota == 0:
                    workers.remove(best)
        for worker, was_idle in touched:
            if was_idle and worker.started and not worker.writer.pending():
                # Nothing for this worker to batch with: send now, saving the
                # writer's wake-up on the round trip of a lone call.
                self._write(worker)
            if worker.has_output():
                worker.wake.set()

    def _check_levels(self) -> None:
        """Send the parent's logging levels to every worker if they changed."""
        if self._levels is not None and self._levels.changed():
            for worker in self._workers.values():
                worker.levels_due = True
                worker.wake.set()

    # -- workers -----------------------------------------------------------------

    async def _start_worker(self, slot: int) -> None:
        if self._state is _State.TERMINATE:
            return  # a replacement scheduled just before terminate()
        parent_end, child_end = socket.socketpair()
        self._check_levels()
        levels = self._levels.levels if self._levels is not None else None
        logs = _logs.Receiver() if levels is not None else None
        process: multiprocessing.process.BaseProcess = self._ctx.Process(  # type: ignore[attr-defined]
            target=worker_main,
            args=(
                child_end,
                self._marker,
                slot,
                self._init,
                self._maxtasks,
                self._concurrency,
                self._niceness,
                None if logs is None else logs.child_config(levels),
                None if self._lifeline is None else self._lifeline.child_end,
                self._child_loop,
                self._max_memory,
            ),
            name=f"aiomp-worker-{slot}",
            daemon=True,
        )
        worker = _Worker(slot, process, parent_end, _wire.Markers(self._marker, slot), logs, _waiter.event_class())
        if logs is not None:
            logs.context_of = worker.context_of
            logs.logged = lambda: worker.markers.logged
        worker.markers.reset()
        worker.quota = self._maxtasks
        self._workers[slot] = worker
        self._dispatch()
        try:
            await anyio.to_thread.run_sync(_start, process, child_end.close, abandon_on_cancel=False)
        except BaseException as error:
            child_end.close()
            if logs is not None:
                logs.close()
            self._buried(worker, None, start_error=error)
            parent_end.close()
            worker.done.set()
            if not isinstance(error, Exception):
                raise
            return
        child_end.close()
        if logs is not None:
            logs.started()
        worker.started = True
        if self._tg is None:  # pragma: no cover - start() sets it first
            raise RuntimeError("backend not started")
        self._tg.start_soon(self._serve, worker)

    async def _serve(self, worker: _Worker) -> None:
        """Run one worker's reader and writer until its process ends."""
        exitcode: int | None = None
        try:
            async with anyio.create_task_group() as tg:
                if worker.logs is not None:
                    tg.start_soon(worker.logs.run, self._listener)
                tg.start_soon(self._read, worker)
                tg.start_soon(self._writer, worker)
                await _fd.wait_readable(worker.process.sentinel)
                tg.cancel_scope.cancel()
            # The process is gone, so everything it wrote is in the sockets now:
            # its log records first, then the results that came after them.
            if worker.logs is not None:
                await worker.logs.drain()
            with contextlib.suppress(EOFError, OSError):
                self._handle(worker, _read_all(worker.reader, everything=True), at_once=True)
            exitcode = await _reap(worker.process)
        finally:
            if worker.logs is not None:
                worker.logs.close()  # on cancellation: what is here still counts
            self._buried(worker, exitcode)
            _fd.forget(worker.fd)
            worker.reader.close()
            worker.sock.close()
            if worker.process.exitcode is None:  # only if this task was cancelled early
                worker.process.kill()
                worker.process.join(1)
            with contextlib.suppress(ValueError):  # still alive: it is reaped at exit
                worker.process.close()
            worker.done.set()

    async def _read(self, worker: _Worker) -> None:
        await _fd.watch_readable(worker.fd, lambda: self._readable(worker))

    def _readable(self, worker: _Worker) -> bool:
        """Handle what the worker sent; False once its socket is closed."""
        try:
            frames = _read_all(worker.reader)
        except (EOFError, OSError):
            worker.dead = True
            return False  # the sentinel will say how the process ended
        if frames and worker.logs is not None and worker.logs.behind():
            # Results wait for the records their tasks logged before them.
            worker.logs.after(functools.partial(self._handle, worker, frames))
        else:
            self._handle(worker, frames)
        return True

    def _handle(self, worker: _Worker, frames: list[_frames.Frame], at_once: bool = False) -> None:
        """Handle the worker's messages in order, about ``_STEP`` seconds' worth per loop step.

        What does not fit waits in ``worker.backlog`` for the next steps (``_drain``), so a
        burst of big results never holds the loop for their sum. ``at_once`` (the worker
        has exited) handles everything now.
        """
        backlog = worker.backlog
        backlog.extend(frames)
        if worker.draining and not at_once:
            return  # _drain is on it, in order
        deadline = time.perf_counter() + _STEP
        while backlog:
            self._message(worker, backlog.popleft())
            if backlog and not at_once and time.perf_counter() > deadline:
                if not worker.draining:
                    worker.draining = True
                    assert self._tg is not None
                    self._tg.start_soon(self._drain, worker)
                break
        self._dispatch()
        self._check_idle()

    async def _drain(self, worker: _Worker) -> None:
        """Work through the worker's backlog, one step's worth per turn of the loop."""
        try:
            while worker.backlog:
                await anyio.lowlevel.checkpoint()
                worker.draining = False
                self._handle(worker, [])
                if not worker.backlog:
                    return
                worker.draining = True
        finally:
            worker.draining = False

    def _message(self, worker: _Worker, frame: _frames.Frame) -> None:
        if len(frame.parts) == 1 and not frame.fds:  # the usual case: one object (a small result)
            control = _serialize.loads(frame.parts[0])
            if control[0] == _wire.RESULT:
                self._result(worker, control, None)
                return
            objects = _serialize.unpack(frame)
        else:
            objects = _serialize.unpack(frame)
            control = objects[0].load()
        kind = control[0]
        if kind == _wire.RESULT:
            self._result(worker, control, objects[1] if len(objects) > 1 else None)
        elif kind == _wire.READY:
            worker.ready = True
            self._startup_failures = 0
        elif kind == _wire.RETIRING:
            worker.retiring = True
            self._restarted += 1  # counted now: its last result comes next
        elif kind == _wire.INIT_FAILED:
            worker.init_error = _serialize.load_error(objects[1].load())

    def _result(self, worker: _Worker, control: tuple[Any, ...], value: _serialize.Packed | None) -> None:
        index, status, seconds = control[1:4]
        if status == _wire.OUT_OF_MEMORY:
            worker.dead = True  # it exits next: hand it nothing more
        task = worker.outstanding.pop(index, None)
        if task is None:
            return
        if status == _wire.CANCELLED:
            if worker.quota is not None:
                worker.quota += 1
            return
        self._completed += 1
        if seconds > 0:
            old = self._seconds_per_task
            self._seconds_per_task = seconds if old is None else 0.8 * old + 0.2 * seconds
        if task.cancelled:
            return
        task.cancelled = True  # delivered: nothing may touch it again
        if len(control) > 4:  # a small value, sent inside the message itself
            task.done(True, control[4])
            return
        assert value is not None  # only a cancelled task's result has none
        if status == _wire.OK and (value.nbytes() >= _serialize.LARGE or value.segment is not None):
            # Unpickling this much, or mapping a shared segment, on the loop would stall it.
            self._loading += 1
            assert self._tg is not None
            self._tg.start_soon(self._load_in_thread, task, status, value)
        else:
            task.done(*_load_result(status, value))

    async def _load_in_thread(self, task: Task, status: int, value: _serialize.Packed) -> None:
        try:
            task.done(*await anyio.to_thread.run_sync(_load_result, status, value))
        finally:
            self._loading -= 1
            self._check_idle()

    async def _writer(self, worker: _Worker) -> None:
        while True:
            if not worker.has_output():
                await worker.wake.wait()
                worker.wake = worker.new_event()
                continue
            if not self._write(worker):
                await _fd.wait_writable(worker.fd)

    def _write(self, worker: _Worker) -> bool:
        """Write what the socket takes now; False when it is full (or a slice went out)."""
        writer = worker.writer
        try:
            while writer.pending() or self._encode(worker):
                if not writer.flush(False):
                    return False
        except OSError:
            # The process is ending: its sentinel settles its tasks.
            worker.dead = True
        return True

    def _encode(self, worker: _Worker) -> bool:
        """Queue the worker's due messages on its writer; False if none was due."""
        writer = worker.writer
        queued = False
        if worker.levels_due and self._levels is not None:
            worker.levels_due = False
            writer.queue(_wire.message((_wire.LEVELS, self._levels.levels)))
            queued = True
        if worker.cancels:
            writer.queue(_wire.message((_wire.CANCEL, worker.cancels)))
            worker.cancels = []
            queued = True
        outbox, worker.outbox = worker.outbox, []
        start = 0
        while start < len(outbox):
            # A frame carries a bounded number of descriptors (shared-memory segments).
            end, segments = start, 0
            while end < len(outbox):
                segments += outbox[end].encoded[1].has_segment()
                if segments > _frames.MAX_FDS and end > start:
                    break
                end += 1
            batch, start = outbox[start:end], end
            records = [(t.index, t.encoded[0], _WIRE_MODES[t.kind], t.is_async) for t in batch]
            writer.queue(_wire.message((_wire.TASKS, records), *(t.encoded[1] for t in batch)))
            queued = True
        if worker.stop and not worker.stop_sent:
            worker.stop_sent = True
            writer.queue(_wire.message((_wire.STOP,)))
            queued = True
        return queued

    def _buried(self, worker: _Worker, exitcode: int | None, start_error: BaseException | None = None) -> None:
        """Settle a worker that has exited: fail, requeue, replace."""
        if self._workers.get(worker.slot) is not worker:
            return
        del self._workers[worker.slot]
        started = worker.markers.started
        requeue: list[Task] = []
        died: list[Task] = []
        for index, task in worker.outstanding.items():
            if task.cancelled:
                continue
            # Killed to stop one task: what else it had started (a later task, a
            # coroutine running alongside) did nothing wrong and runs elsewhere.
            collateral = worker.killed_after is not None and (index > worker.killed_after or task.is_async)
            (died if worker.started and index <= started and not collateral else requeue).append(task)
            task.worker = None
        worker.outstanding.clear()
        worker.outbox.clear()
        self._pending.extendleft(reversed(requeue))
        for task in died:
            task.cancelled = True
            task.done(False, WorkerDiedError(exitcode))
        if self._state is _State.TERMINATE or (worker.stop and exitcode == 0):
            self._check_idle()  # stopped on purpose
            return
        if not worker.ready:
            self._startup_failures += 1
            if self._startup_failures >= _STARTUP_FAILURES:
                self._break(worker, exitcode, start_error)
                return
        if self._state is _State.RUN or (self._pending and self._state is _State.CLOSE):
            assert self._tg is not None
            if not worker.retiring:
                self._restarted += 1
            self._tg.start_soon(self._start_worker, worker.slot)
        self._dispatch()
        self._check_idle()

    def _break(self, worker: _Worker, exitcode: int | None, start_error: BaseException | None) -> None:
        if worker.init_error is not None:
            error = BrokenPoolError(
                f"the pool's initializer raised {type(worker.init_error).__name__}: {worker.init_error}"
                f" ({self._startup_failures} workers in a row failed to start)"
            )
            error.__cause__ = worker.init_error
        elif start_error is not None:
            error = BrokenPoolError(f"worker processes could not be started: {start_error!r}")
            error.__cause__ = start_error
        else:
            error = BrokenPoolError(
                f"{self._startup_failures} worker processes in a row exited (code {exitcode}) while "
                'starting. If the script that created the pool has no `if __name__ == "__main__":` '
                "guard around its top-level code, add one: with the spawn and forkserver start methods "
                "every worker imports the main module. Otherwise the workers may fail to import a "
                "module, or run out of memory."
            )
        self._broken = error
        self._fail_all(error)
        self._check_idle()

    def _check_idle(self) -> None:
        """Stop idle workers of a closing pool; wake join() once all are gone."""
        if self._state is _State.RUN:
            return
        busy = self._pending or self._loading or any(w.outstanding for w in self._workers.values())
        if busy and self._broken is None and self._state is _State.CLOSE:
            return
        if self._broken is not None:
            for worker in self._workers.values():
                worker.signal(kill=False)
        for worker in self._workers.values():
            if not worker.stop:
                worker.stop = True
                worker.wake.set()
        if not self._workers:
            self._idle.set()


# -- what travels to a worker -----------------------------------------------------

_WIRE_MODES = {CallKind.APPLY: _wire.APPLY, CallKind.MAP: _wire.MAP, CallKind.STARMAP: _wire.STARMAP}


def encode_task(task: Task, func: bytes | None = None) -> tuple[bytes, _serialize.Encoded]:
    """A task as the worker receives it: the pickled function and the encoded payload.

    The function goes by reference where a worker can import it, by value (cloudpickle)
    otherwise (``_serialize.dump_function``); ``func`` is its pickle if known already.
    The payload's big buffers are copied into shared memory here, so this runs in a
    thread when they are big (``Backend.prepare_in_thread``). This and
    ``LocalBackend._encode`` (the messages) are the whole encoding of a task.
    """
    if func is None:
        func = _serialize.dump_function(task.func)
    payload = _serialize.encode(task.payload)
    payload.place()
    return func, payload


def _dump_initializer(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> object:
    """The pool initializer as each worker receives it: bytes, or an ``_InitAtStart``."""
    if initializer is None:
        return None
    payload = (_serialize.dump_function(initializer), initargs)
    try:
        return _serialize.dump_inband(payload)
    except RuntimeError:  # initargs hold queues, locks or shared values
        return _InitAtStart(payload)


class _InitAtStart:
    """A pool initializer whose arguments may only be pickled while a worker starts.

    Queues, locks and shared values follow the standard library's inheritance
    rule; this defers their pickling to each worker's start, where it is allowed.
    The worker receives the (function, arguments) pair itself instead of bytes.
    """

    def __init__(self, payload: tuple[bytes, tuple[Any, ...]]) -> None:
        self.payload = payload

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled by the start's own pickler, which passes each descriptor once
        # (the pool's markers and a Value may share one shared-memory arena).
        return tuple, (list(self.payload),)


def _start(process: multiprocessing.process.BaseProcess, started: Callable[[], None]) -> None:
    """Start a worker with SIGINT blocked, so Ctrl-C cannot reach it before it ignores the signal.

    The mask is this thread's and the child inherits it (through exec too); the
    worker unblocks SIGINT once it ignores it. The forkserver and the resource
    tracker, though, are started first with the mask as it was. ``started()`` (which
    closes the parent's copy of the child's end of the socket) runs inside the fork
    lock, so that no later forked worker inherits that copy.
    """
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - not POSIX
        with forking(process):
            process.start()
            started()
        return
    # Helpers started on first use must not inherit the mask, and the resource
    # tracker unblocks SIGINT in the calling thread as it starts: both go first.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    if process._start_method == "forkserver":  # type: ignore[attr-defined]
        from multiprocessing import forkserver

        forkserver.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        with forking(process):
            process.start()
            started()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _load_result(status: int, value: _serialize.Packed) -> tuple[bool, Any]:
    """Unpickle a result: ``(True, value)`` or ``(False, exception)``."""
    try:
        if status == _wire.ERROR:
            return False, _serialize.load_error(value.load())
        if status == _wire.OUT_OF_MEMORY:
            cause = _serialize.load_error(value.load())
            what = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
            error = WorkerDiedError(
                _wire.EXIT_OUT_OF_MEMORY, f"the task ran out of memory ({what}); a new worker replaces it"
            )
            error.__cause__ = cause
            return False, error
        return True, value.load()
    except Exception as error:
        if hasattr(error, "add_note"):
            error.add_note("aiomp: the task's result could not be unpickled in the parent")
        return False, error


def _read_all(reader: _frames.Reader, everything: bool = False) -> list[_frames.Frame]:
    """The frames that are whole now: one read's worth, or (``everything``: the worker
    has exited) all that is in the socket. ``EOFError`` at the end, if there is none."""
    frames = reader.read_all()
    while everything:
        try:
            more = reader.read_all()
        except EOFError:
            break
        if not more:
            break
        frames += more
    return frames


async def _reap(process: multiprocessing.process.BaseProcess) -> int | None:
    """The exit code of a process whose sentinel has fired."""
    # The sentinel fires as the process exits; the kernel may take a moment more
    # before waitpid() reports it. This short, bounded retry covers only that gap.
    delay = 0.0005
    for _ in range(20):
        process.join(0)
        if process.exitcode is not None:
            return process.exitcode
        await anyio.sleep(delay)
        delay = min(delay * 2, 0.1)
    return await anyio.to_thread.run_sync(_join, process)


def _join(process: multiprocessing.process.BaseProcess) -> int | None:
    process.join(5)
    return process.exitcode


def preload_worker(context: multiprocessing.context.BaseContext) -> None:
    """Have the forkserver import the worker module once, so each worker skips it.

    Adds to the modules the forkserver preloads (``__main__`` by default, or the
    user's own list); it takes effect if the forkserver has not started yet.
    Saves each worker about 20 ms of start-up here.
    """
    if context.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    modules = getattr(getattr(forkserver, "_forkserver", None), "_preload_modules", None)
    if isinstance(modules, list) and "aiomp._worker" not in modules:
        context.set_forkserver_preload([*modules, "aiomp._worker"])


def usable_cpus() -> int:
    """The CPUs this process may run on (``aiomp.cpu_count()``)."""
    from ..process import cpu_count

    return cpu_count()
