"""``python -m benchmarks.primitives``: aiomp's queues, pipes, locks and events against the peers.

Side by side in one run (``--help`` for the options):

* **queue**, **pipe**: round trip parent -> child echo -> parent, per round trip (median, p99),
  and how late a 1 ms ticker on the parent's event loop wakes while round trips run;
* **lock**: hand-off latency, from the child's ``release()`` to the parent's acquire returning;
* **event**: wake-up latency, from the child's ``set()`` to the parent's wait returning;
* **idle**: the parent's CPU time and context switches while it waits about 2 s on a lock,
  a queue, a pipe and an event that a child makes it wait for.

Rows: ``mp (sync)`` is the stdlib's blocking call in a plain loop without an event loop (the
reference); ``mp to_thread`` (lock, event) the same call through ``anyio.to_thread.run_sync``;
``aiomp``; ``aioprocessing`` (asyncio only: skipped on trio). The children run the same plain,
blocking code for every library (``_prim_work.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import inspect
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import platform
import resource
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anyio
import anyio.to_thread

from benchmarks import _prim_work as work
from benchmarks._harness import describe, merge_cells, percentile
from benchmarks._procs import ProcessTracker, Watchdog
from benchmarks._report import fmt_fixed, fmt_text, table, write_json
from benchmarks._types import Cell, Metric

now = time.perf_counter
ns = time.monotonic_ns  # CLOCK_MONOTONIC: the same clock in every process of the machine

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ["aiomp", "anyio", "aioprocessing", "uvloop", "trio", "psutil"]
BENCHES = ["queue", "pipe", "lock", "event", "idle"]
WAIT_KINDS = ["lock", "queue", "pipe", "event"]

SYNC = "mp (sync)"
THREAD = "mp to_thread"
AIOMP = "aiomp"
AIOP = "aioprocessing"

TICK = 0.001
#: How long stopping one child, or one other clean-up step, may take.
STOP_TIMEOUT = 5.0
#: How long the parent waits for a child to reach a state (``held``) before giving up.
STATE_TIMEOUT = 10.0


# --- configuration --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    loop: str
    start_method: str
    quick: bool
    round_trips: int  # timed round trips per trial
    warmup: int  # untimed round trips (or hand-offs) first
    trials: int  # cells per library, interleaved with the other libraries; samples are pooled
    lag_seconds: float  # round trips with the 1 ms ticker running
    handoffs: int  # timed lock hand-offs / event wake-ups per trial
    hold: float  # how long the child holds the lock (or waits) before release (or set)
    idle_seconds: float  # the wait whose CPU cost is measured
    cell_timeout: float  # hard limit for one library in one benchmark

    @classmethod
    def make(cls, loop: str, start_method: str, quick: bool) -> Config:
        if quick:
            return cls(loop, start_method, quick, 300, 50, 1, 0.3, 50, 0.002, 0.5, 40.0)
        return cls(loop, start_method, quick, 2000, 200, 2, 1.0, 300, 0.002, 2.0, 90.0)

    @property
    def context(self) -> Any:  # a DefaultContext subclass: typeshed's BaseContext lacks Process
        return multiprocessing.get_context(self.start_method)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- clean-up -------------------------------------------------------------------------------------


class Cleanup:
    """Clean-up steps run last-in first-out, each at most once, each bounded; errors are noted."""

    def __init__(self, cell: Cell) -> None:
        self._cell = cell
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def push(self, fn: Callable[..., Any], *args: Any) -> None:
        self._steps.append((fn, args))

    def _pop(self) -> tuple[Callable[..., Any], tuple[Any, ...]] | None:
        try:
            return self._steps.pop()
        except IndexError:  # another thread emptied it meanwhile
            return None

    def _failed(self, fn: Callable[..., Any], exc: BaseException) -> None:
        name = getattr(fn, "__qualname__", repr(fn))
        self._cell.notes.append(f"clean-up {name} failed: {describe(exc)}")

    async def arun(self) -> None:
        with anyio.CancelScope(shield=True):
            while (step := self._pop()) is not None:
                fn, args = step
                try:
                    with anyio.fail_after(STOP_TIMEOUT):
                        result = fn(*args)
                        if inspect.isawaitable(result):
                            await result
                except Exception as exc:
                    self._failed(fn, exc)

    def run_sync(self) -> None:
        while (step := self._pop()) is not None:
            fn, args = step
            try:
                result = fn(*args)
                if inspect.isawaitable(result):  # pragma: no cover - a programming error
                    result.close()  # type: ignore[attr-defined]
                    raise TypeError("async clean-up step in a sync cell")
            except Exception as exc:
                self._failed(fn, exc)


def _stop_mp_sync(p: multiprocessing.process.BaseProcess, cell: Cell, grace: float = 2.0) -> None:
    """Let a stdlib child exit by itself (it was sent ``None``), then terminate, then kill it."""
    p.join(grace)
    _note_exit(p.exitcode, cell)
    if p.exitcode is None:
        p.terminate()
        p.join(STOP_TIMEOUT / 2)
    if p.exitcode is None:
        p.kill()
        p.join(STOP_TIMEOUT / 2)
    if p.exitcode is None:
        raise RuntimeError(f"child {p.pid} still alive after SIGKILL")


async def _stop_mp_async(p: multiprocessing.process.BaseProcess, cell: Cell, grace: float = 2.0) -> None:
    """The same without blocking the event loop (a stdlib child, in an async cell)."""

    async def gone(seconds: float) -> bool:
        deadline = now() + seconds
        while p.is_alive() and now() < deadline:
            await anyio.sleep(0.01)
        return not p.is_alive()

    if await gone(grace):
        _note_exit(p.exitcode, cell)
        return
    p.terminate()
    if not await gone(STOP_TIMEOUT / 3):
        p.kill()
        if not await gone(STOP_TIMEOUT / 3):
            raise RuntimeError(f"child {p.pid} still alive after SIGKILL")


def _note_exit(code: int | None, cell: Cell) -> None:
    if code not in (None, 0):
        cell.notes.append(f"a child exited by itself with code {code}")


def _close_mp_queue(q: Any) -> None:
    q.cancel_join_thread()  # never wait at exit for a feeder whose reader is gone
    q.close()


def _release_quietly(lock: Any) -> None:
    """Unblock a thread that may still wait for ``lock`` (a stdlib lock: any process may release it)."""
    with contextlib.suppress(ValueError):  # not held: nobody to unblock
        lock.release()


# --- one adapter per library ----------------------------------------------------------------------


class Kit:
    """How one library makes the primitives, starts the children and awaits (async cells)."""

    label = "?"

    def __init__(self, cfg: Config, cell: Cell) -> None:
        self.cfg = cfg
        self.cell = cell
        self.ctx = cfg.context

    # primitives, and what of them crosses into the child
    def queue(self) -> Any:
        return self.ctx.Queue()

    def pipe(self) -> Any:
        return self.ctx.Pipe()

    def lock(self) -> Any:
        return self.ctx.Lock()

    def event(self) -> Any:
        return self.ctx.Event()

    def raw(self, obj: Any) -> Any:
        """The object passed to the child, and used for blocking calls in the parent."""
        return obj

    # children
    async def start(self, target: Callable[..., None], *args: Any) -> Any:
        p = self.ctx.Process(target=target, args=args, daemon=True)
        p.start()
        return p

    async def stop(self, p: Any) -> None:
        await _stop_mp_async(p, self.cell)

    # the awaited calls
    async def put(self, q: Any, x: Any) -> None:
        raise NotImplementedError

    async def get(self, q: Any) -> Any:
        raise NotImplementedError

    async def send(self, c: Any, x: Any) -> None:
        raise NotImplementedError

    async def recv(self, c: Any) -> Any:
        raise NotImplementedError

    async def acquire(self, lock: Any) -> bool:
        raise NotImplementedError

    def release(self, lock: Any) -> None:
        lock.release()

    async def wait(self, event: Any) -> bool:
        raise NotImplementedError

    # clean-up: stop a child gracefully, close, and unblock threads a cancelled call left waiting
    async def stop_item(self, q: Any) -> None:
        self.raw(q).put(None)

    def close_queue(self, q: Any) -> None:
        _close_mp_queue(self.raw(q))

    def close_conn(self, c: Any) -> None:
        self.raw(c).close()

    def unblock_get(self, q: Any) -> None:
        self.raw(q).put(None)

    def unblock_acquire(self, lock: Any) -> None:
        _release_quietly(self.raw(lock))

    def unblock_wait(self, event: Any) -> None:
        self.raw(event).set()

    def dispose(self, obj: Any) -> None:
        """Release what the library keeps per object (aioprocessing: its thread pool)."""


class ThreadKit(Kit):
    """The stdlib's blocking calls through ``anyio.to_thread.run_sync`` (what a trio user would write)."""

    label = THREAD

    async def put(self, q: Any, x: Any) -> None:
        await anyio.to_thread.run_sync(q.put, x, abandon_on_cancel=True)

    async def get(self, q: Any) -> Any:
        return await anyio.to_thread.run_sync(q.get, abandon_on_cancel=True)

    async def send(self, c: Any, x: Any) -> None:
        await anyio.to_thread.run_sync(c.send, x, abandon_on_cancel=True)

    async def recv(self, c: Any) -> Any:
        return await anyio.to_thread.run_sync(c.recv, abandon_on_cancel=True)

    async def acquire(self, lock: Any) -> bool:
        return bool(await anyio.to_thread.run_sync(lock.acquire, abandon_on_cancel=True))

    async def wait(self, event: Any) -> bool:
        return bool(await anyio.to_thread.run_sync(event.wait, abandon_on_cancel=True))


class AioprocessingKit(Kit):
    """``aioprocessing``: the stdlib object wrapped, every ``coro_*`` call run in a thread pool."""

    label = AIOP

    def __init__(self, cfg: Config, cell: Cell) -> None:
        super().__init__(cfg, cell)
        import aioprocessing  # type: ignore[import-untyped, unused-ignore]

        self.lib = aioprocessing

    def queue(self) -> Any:
        return self.lib.AioQueue(context=self.ctx)

    def pipe(self) -> Any:
        return self.lib.AioPipe()

    def lock(self) -> Any:
        return self.lib.AioLock(context=self.ctx)

    def event(self) -> Any:
        return self.lib.AioEvent(context=self.ctx)

    def raw(self, obj: Any) -> Any:
        return obj._obj

    async def put(self, q: Any, x: Any) -> None:
        await q.coro_put(x)

    async def get(self, q: Any) -> Any:
        return await q.coro_get()

    async def send(self, c: Any, x: Any) -> None:
        await c.coro_send(x)

    async def recv(self, c: Any) -> Any:
        return await c.coro_recv()

    async def acquire(self, lock: Any) -> bool:
        return bool(await lock.coro_acquire())

    def release(self, lock: Any) -> None:
        lock.release()  # in its pool thread when taken by coro_acquire (aioprocessing's rule)

    async def wait(self, event: Any) -> bool:
        return bool(await event.coro_wait())

    def dispose(self, obj: Any) -> None:
        executor = obj.__dict__.get("_executor")
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


class AiompKit(Kit):
    """aiomp: ``aiomp.Process`` children, ``aput``/``aget``, ``asend``/``arecv``, ``aacquire``, ``await_``."""

    label = AIOMP

    def __init__(self, cfg: Config, cell: Cell) -> None:
        super().__init__(cfg, cell)
        import aiomp

        for name in ("Process", "Queue", "Pipe", "Lock", "Event"):
            getattr(aiomp, name)  # fail here, with the missing name, if aiomp lacks it
        self.lib = aiomp

    def queue(self) -> Any:
        return self.lib.Queue()

    def pipe(self) -> Any:
        return self.lib.Pipe()

    def lock(self) -> Any:
        return self.lib.Lock()

    def event(self) -> Any:
        return self.lib.Event()

    async def start(self, target: Callable[..., None], *args: Any) -> Any:
        p = self.lib.Process(target=target, args=args, daemon=True, context=self.cfg.start_method)
        await p.start()
        return p

    async def stop(self, p: Any, grace: float = 2.0) -> None:
        with anyio.move_on_after(grace + 1):
            await p.join(grace)
        if p.exitcode is not None:
            _note_exit(p.exitcode, self.cell)
            return
        p.terminate()
        with anyio.move_on_after(STOP_TIMEOUT / 3):
            await p.join(STOP_TIMEOUT / 3)
        if p.exitcode is None:
            p.kill()
            with anyio.move_on_after(STOP_TIMEOUT / 3):
                await p.join(STOP_TIMEOUT / 3)
        if p.exitcode is None:
            raise RuntimeError(f"aiomp child {p.pid} still alive after kill()")

    async def put(self, q: Any, x: Any) -> None:
        await q.aput(x)

    async def get(self, q: Any) -> Any:
        return await q.aget()

    async def send(self, c: Any, x: Any) -> None:
        await c.asend(x)

    async def recv(self, c: Any) -> Any:
        return await c.arecv()

    async def acquire(self, lock: Any) -> bool:
        return bool(await lock.aacquire())

    async def wait(self, event: Any) -> bool:
        return bool(await event.await_())

    async def stop_item(self, q: Any) -> None:
        await q.aput(None)

    def close_queue(self, q: Any) -> None:
        cancel = getattr(q, "cancel_join_thread", None)
        if cancel is not None:
            cancel()
        q.close()

    # aiomp's awaitables are cancellable: no thread is left waiting, nothing to unblock
    def unblock_get(self, q: Any) -> None:
        pass

    def unblock_acquire(self, lock: Any) -> None:
        pass

    def unblock_wait(self, event: Any) -> None:
        pass


KITS: dict[str, type[Kit]] = {THREAD: ThreadKit, AIOP: AioprocessingKit, AIOMP: AiompKit}


# --- cells: one library, one benchmark, its own event loop (or none), everything bounded ----------

#: Called with a message if the watchdog gives up (main() writes the partial JSON).
on_watchdog: list[Callable[[str], None]] = []


def _fire(message: str) -> None:
    for callback in on_watchdog:
        callback(message)


def _backend(cfg: Config) -> dict[str, Any]:
    if cfg.loop == "trio":
        return {"backend": "trio"}
    return {"backend": "asyncio", "backend_options": {"use_uvloop": cfg.loop == "uvloop"}}


AsyncBody = Callable[[Kit, Cleanup], Awaitable[None]]
SyncBody = Callable[[Config, Cell, Cleanup], None]


def async_cell(cfg: Config, lib: str, body: AsyncBody, tag: str) -> Cell:
    """Run ``body`` for library ``lib`` in its own ``anyio.run``; never raises, never hangs."""
    cell = Cell(lib)
    if lib == AIOP and cfg.loop == "trio":
        cell.notes.append("asyncio only: not run on trio")
        return cell
    tracker, started = ProcessTracker(), now()

    async def guarded() -> None:
        cleanup = Cleanup(cell)
        try:
            with anyio.move_on_after(cfg.cell_timeout) as scope:
                kit = KITS.get(lib, Kit)(cfg, cell)
                await body(kit, cleanup)
            if scope.cancelled_caught:
                cell.error = f"timed out after {cfg.cell_timeout:.0f} s"
        except Exception as exc:
            cell.error = describe(exc)
            print(f"--- {tag} {lib} failed:", file=sys.stderr)
            traceback.print_exc()
        finally:
            await cleanup.arun()

    with Watchdog(cfg.cell_timeout + 60, f"{tag} {lib}", tracker, _fire):
        try:
            anyio.run(guarded, **_backend(cfg))
        except BaseException as exc:  # the loop's own shutdown failed
            cell.error = cell.error or describe(exc)
            traceback.print_exc()
        _check_leftovers(cell, tracker)
    cell.seconds = now() - started
    _progress(tag, cell)
    return cell


def sync_cell(cfg: Config, body: SyncBody, tag: str) -> Cell:
    """Run the blocking reference ``body`` in a daemon thread (no event loop anywhere), bounded:
    past the time limit its clean-up runs from here (stopping the children unblocks the thread)."""
    cell, tracker, started = Cell(SYNC), ProcessTracker(), now()
    cleanup = Cleanup(cell)
    failure: list[BaseException] = []

    def target() -> None:
        try:
            body(cfg, cell, cleanup)
        except BaseException as exc:
            failure.append(exc)
            print(f"--- {tag} {SYNC} failed:", file=sys.stderr)
            traceback.print_exc()
        finally:
            cleanup.run_sync()

    thread = threading.Thread(target=target, name="bench-sync-cell", daemon=True)
    thread.start()
    thread.join(cfg.cell_timeout)
    if thread.is_alive():
        cell.error = f"timed out after {cfg.cell_timeout:.0f} s"
        cleanup.run_sync()
        thread.join(STOP_TIMEOUT)
        if thread.is_alive():
            cell.notes.append("its thread is still blocked (abandoned: a daemon thread)")
    elif failure:
        cell.error = describe(failure[0])
    _check_leftovers(cell, tracker)
    cell.seconds = now() - started
    _progress(tag, cell)
    return cell


def _check_leftovers(cell: Cell, tracker: ProcessTracker) -> None:
    if not tracker.wait_gone(3.0):
        return
    pids = tracker.reap()
    cell.notes.append(f"{len(pids)} process(es) still alive 3 s after the cell; terminated")


def _progress(tag: str, cell: Cell) -> None:
    status = f"ERROR {cell.error}" if cell.error else "ok"
    notes = f" ({'; '.join(cell.notes)})" if cell.notes else ""
    print(f"  [{tag}] {cell.lib:<14} {cell.seconds:6.1f} s  {status}{notes}", file=sys.stderr, flush=True)


# --- small helpers --------------------------------------------------------------------------------


async def _until(pred: Callable[[], bool], what: str) -> None:
    deadline = now() + STATE_TIMEOUT
    while not pred():
        if now() > deadline:
            raise TimeoutError(f"the child did not {what} within {STATE_TIMEOUT:.0f} s")
        await anyio.sleep(0.0002)


def _until_sync(pred: Callable[[], bool], what: str) -> None:
    deadline = now() + STATE_TIMEOUT
    while not pred():
        if now() > deadline:
            raise TimeoutError(f"the child did not {what} within {STATE_TIMEOUT:.0f} s")
        time.sleep(0.0002)


def _check_echo(sent: Any, got: Any) -> None:
    if got != sent:
        raise RuntimeError(f"sent {sent!r}, got back {got!r}")


async def _ticker(lags: list[float], stop: anyio.Event) -> None:
    while not stop.is_set():
        t0 = now()
        await anyio.sleep(TICK)
        lags.append(max(0.0, now() - t0 - TICK))


def _usage() -> tuple[float, int, float]:
    """CPU seconds of the whole process (every thread), its context switches, and the wall clock."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), ru.ru_nvcsw + ru.ru_nivcsw, now()


def _record_wait(cell: Cell, kind: str, before: tuple[float, int, float], after: tuple[float, int, float]) -> None:
    cpu, csw, wall = after[0] - before[0], after[1] - before[1], after[2] - before[2]
    cell.values[f"{kind}_cpu_ms"] = cpu * 1e3
    cell.values[f"{kind}_csw"] = csw
    cell.values[f"{kind}_wall_s"] = wall
    cell.samples.setdefault(f"{kind}_cpu_s", []).append(cpu)
    cell.samples.setdefault(f"{kind}_wall_s", []).append(wall)


# --- round trips: queue and pipe ------------------------------------------------------------------


def rt_sync(kind: str, cfg: Config, cell: Cell, cleanup: Cleanup) -> None:
    """The reference: the stdlib's blocking calls in a plain loop, no event loop."""
    ctx, ppid = cfg.context, os.getpid()
    one: Callable[[int], Any]
    if kind == "queue":
        q1, q2 = ctx.Queue(), ctx.Queue()
        cleanup.push(_close_mp_queue, q1)
        cleanup.push(_close_mp_queue, q2)
        cleanup.push(q2.put, None)  # unblocks our get if the child died
        p = ctx.Process(target=work.echo_queue, args=(q1, q2, ppid), daemon=True)
        p.start()
        cleanup.push(_stop_mp_sync, p, cell)
        cleanup.push(q1.put, None)

        def one(x: int) -> Any:
            q1.put(x)
            return q2.get()

    else:
        a, b = ctx.Pipe()
        cleanup.push(a.close)
        p = ctx.Process(target=work.echo_pipe, args=(b, ppid), daemon=True)
        p.start()
        b.close()  # the child's end: once the child is gone, our recv sees EOF
        cleanup.push(_stop_mp_sync, p, cell)
        cleanup.push(a.send, None)

        def one(x: int) -> Any:
            a.send(x)
            return a.recv()

    for i in range(cfg.warmup):
        _check_echo(i, one(i))
    samples = []
    for i in range(cfg.round_trips):
        t0 = now()
        got = one(i)
        samples.append(now() - t0)
        _check_echo(i, got)
    cell.samples["rt_s"] = samples


async def open_echo(kind: str, kit: Kit, cleanup: Cleanup) -> Callable[[Any], Awaitable[Any]]:
    """Start a child that echoes through a queue pair (``kind == "queue"``) or a pipe; return the
    parent's round trip, ``await one(x) -> x``. ``cleanup`` stops the child and closes everything."""
    ppid = os.getpid()
    if kind == "queue":
        q1, q2 = kit.queue(), kit.queue()
        for q in (q1, q2):
            cleanup.push(kit.dispose, q)
            cleanup.push(kit.close_queue, q)
        cleanup.push(kit.unblock_get, q2)
        p = await kit.start(work.echo_queue, kit.raw(q1), kit.raw(q2), ppid)
        cleanup.push(kit.stop, p)
        cleanup.push(kit.stop_item, q1)

        async def one(x: Any) -> Any:
            await kit.put(q1, x)
            return await kit.get(q2)

    else:
        a, b = kit.pipe()
        cleanup.push(kit.dispose, a)
        cleanup.push(kit.close_conn, a)
        p = await kit.start(work.echo_pipe, kit.raw(b), ppid)
        kit.close_conn(b)  # the child's end: once the child is gone, a pending recv sees EOF
        cleanup.push(kit.stop, p)
        cleanup.push(kit.send, a, None)

        async def one(x: Any) -> Any:
            await kit.send(a, x)
            return await kit.recv(a)

    return one


async def rt_async(kind: str, kit: Kit, cleanup: Cleanup) -> None:
    cfg, cell = kit.cfg, kit.cell
    one = await open_echo(kind, kit, cleanup)
    for i in range(cfg.warmup):
        _check_echo(i, await one(i))
    samples = []
    for i in range(cfg.round_trips):
        t0 = now()
        got = await one(i)
        samples.append(now() - t0)
        _check_echo(i, got)
    cell.samples["rt_s"] = samples

    # the same round trips again, with a 1 ms ticker on the loop: how late does it wake?
    lags: list[float] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_ticker, lags, stop)
        deadline, i = now() + cfg.lag_seconds, 0
        while now() < deadline:
            _check_echo(i, await one(i))
            i += 1
        stop.set()
    cell.samples["lag_s"] = lags


# --- lock hand-off --------------------------------------------------------------------------------


def _handoff_record(cell: Cell, seq: int, cfg: Config, entered: int, acquired: int, stamp: int) -> None:
    """Keep the latency of a timed hand-off; count those where we came too late to wait."""
    if seq <= (cfg.warmup // 10 or 1):
        return
    if entered >= stamp:  # we were not waiting yet when the child released: not a hand-off
        cell.samples.setdefault("missed_s", []).append((entered - stamp) / 1e9)
        return
    cell.samples.setdefault("lat_s", []).append((acquired - stamp) / 1e9)


def _handoff_count(cfg: Config) -> int:
    return (cfg.warmup // 10 or 1) + cfg.handoffs


def lock_sync(cfg: Config, cell: Cell, cleanup: Cleanup) -> None:
    ctx, ppid = cfg.context, os.getpid()
    lock, (ctrl, ctrl_child) = ctx.Lock(), ctx.Pipe()
    stamp, held = ctx.RawValue("q", 0), ctx.RawValue("q", 0)
    cleanup.push(ctrl.close)
    cleanup.push(_release_quietly, lock)
    p = ctx.Process(target=work.lock_holder, args=(lock, ctrl_child, stamp, held, ppid), daemon=True)
    p.start()
    ctrl_child.close()
    cleanup.push(_stop_mp_sync, p, cell)
    cleanup.push(ctrl.send, None)
    for seq in range(1, _handoff_count(cfg) + 1):
        ctrl.send((seq, cfg.hold))
        _until_sync(lambda s=seq: abs(held.value) == s, "take the lock")  # type: ignore[misc]
        if held.value < 0:
            raise RuntimeError("the child could not take the lock")
        entered = ns()
        lock.acquire()
        acquired = ns()
        lock.release()
        _handoff_record(cell, seq, cfg, entered, acquired, stamp.value)


async def lock_async(kit: Kit, cleanup: Cleanup) -> None:
    cfg, cell, ctx, ppid = kit.cfg, kit.cell, kit.ctx, os.getpid()
    lock, (ctrl, ctrl_child) = kit.lock(), ctx.Pipe()
    stamp, held = ctx.RawValue("q", 0), ctx.RawValue("q", 0)
    cleanup.push(kit.dispose, lock)
    cleanup.push(ctrl.close)
    cleanup.push(kit.unblock_acquire, lock)
    p = await kit.start(work.lock_holder, kit.raw(lock), ctrl_child, stamp, held, ppid)
    ctrl_child.close()
    cleanup.push(kit.stop, p)
    cleanup.push(ctrl.send, None)
    for seq in range(1, _handoff_count(cfg) + 1):
        ctrl.send((seq, cfg.hold))
        await _until(lambda s=seq: abs(held.value) == s, "take the lock")  # type: ignore[misc]
        if held.value < 0:
            raise RuntimeError("the child could not take the lock")
        entered = ns()
        if not await kit.acquire(lock):
            raise RuntimeError("acquire returned False")
        acquired = ns()
        kit.release(lock)
        _handoff_record(cell, seq, cfg, entered, acquired, stamp.value)


# --- event wake-up --------------------------------------------------------------------------------


def event_sync(cfg: Config, cell: Cell, cleanup: Cleanup) -> None:
    ctx, ppid = cfg.context, os.getpid()
    event, (ctrl, ctrl_child), stamp = ctx.Event(), ctx.Pipe(), ctx.RawValue("q", 0)
    cleanup.push(ctrl.close)
    cleanup.push(event.set)
    p = ctx.Process(target=work.event_setter, args=(event, ctrl_child, stamp, ppid), daemon=True)
    p.start()
    ctrl_child.close()
    cleanup.push(_stop_mp_sync, p, cell)
    cleanup.push(ctrl.send, None)
    for seq in range(1, _handoff_count(cfg) + 1):
        event.clear()
        ctrl.send((seq, cfg.hold))
        entered = ns()
        if not event.wait():
            raise RuntimeError("wait returned False")
        woke = ns()
        _handoff_record(cell, seq, cfg, entered, woke, stamp.value)


async def event_async(kit: Kit, cleanup: Cleanup) -> None:
    cfg, cell, ctx, ppid = kit.cfg, kit.cell, kit.ctx, os.getpid()
    event, (ctrl, ctrl_child), stamp = kit.event(), ctx.Pipe(), ctx.RawValue("q", 0)
    cleanup.push(kit.dispose, event)
    cleanup.push(ctrl.close)
    cleanup.push(kit.unblock_wait, event)
    p = await kit.start(work.event_setter, kit.raw(event), ctrl_child, stamp, ppid)
    ctrl_child.close()
    cleanup.push(kit.stop, p)
    cleanup.push(ctrl.send, None)
    for seq in range(1, _handoff_count(cfg) + 1):
        event.clear()
        ctrl.send((seq, cfg.hold))
        entered = ns()
        if not await kit.wait(event):
            raise RuntimeError("wait returned False")
        woke = ns()
        _handoff_record(cell, seq, cfg, entered, woke, stamp.value)


# --- idle: CPU spent while waiting ----------------------------------------------------------------
#
# Each wait is prepared the same way: a child that will answer after ``idle_seconds``, one short
# warm-up cycle first (thread pools, helper threads and lazy imports exist before we measure), then
# the process's CPU time and context switches across the one awaited call.


def idle_sync(cfg: Config, cell: Cell, cleanup: Cleanup) -> None:
    ctx, ppid, delay = cfg.context, os.getpid(), cfg.idle_seconds
    for kind in WAIT_KINDS:
        steps = Cleanup(cell)
        try:
            if kind == "lock":
                lock, (ctrl, ctrl_child) = ctx.Lock(), ctx.Pipe()
                stamp, held = ctx.RawValue("q", 0), ctx.RawValue("q", 0)
                steps.push(ctrl.close)
                steps.push(_release_quietly, lock)
                p = ctx.Process(target=work.lock_holder, args=(lock, ctrl_child, stamp, held, ppid), daemon=True)
                p.start()
                ctrl_child.close()
                steps.push(_stop_mp_sync, p, cell)
                steps.push(ctrl.send, None)
                for seq, hold in ((1, 0.01), (2, delay)):
                    ctrl.send((seq, hold))
                    _until_sync(lambda s=seq, h=held: abs(h.value) == s, "take the lock")  # type: ignore[misc]
                    before = _usage()
                    lock.acquire()
                    after = _usage()
                    lock.release()
            elif kind == "queue":
                q1, q2 = ctx.Queue(), ctx.Queue()
                steps.push(_close_mp_queue, q1)
                steps.push(_close_mp_queue, q2)
                steps.push(q2.put, None)
                p = ctx.Process(target=work.delayed_echo_queue, args=(q1, q2, ppid), daemon=True)
                p.start()
                steps.push(_stop_mp_sync, p, cell)
                steps.push(q1.put, None)
                for seq, hold in ((1, 0.01), (2, delay)):
                    q1.put((hold, seq))
                    before = _usage()
                    _check_echo(seq, q2.get())
                    after = _usage()
            elif kind == "pipe":
                a, b = ctx.Pipe()
                steps.push(a.close)
                p = ctx.Process(target=work.delayed_echo_pipe, args=(b, ppid), daemon=True)
                p.start()
                b.close()
                steps.push(_stop_mp_sync, p, cell)
                steps.push(a.send, None)
                for seq, hold in ((1, 0.01), (2, delay)):
                    a.send((hold, seq))
                    before = _usage()
                    _check_echo(seq, a.recv())
                    after = _usage()
            else:
                event, (ctrl, ctrl_child), stamp = ctx.Event(), ctx.Pipe(), ctx.RawValue("q", 0)
                steps.push(ctrl.close)
                steps.push(event.set)
                p = ctx.Process(target=work.event_setter, args=(event, ctrl_child, stamp, ppid), daemon=True)
                p.start()
                ctrl_child.close()
                steps.push(_stop_mp_sync, p, cell)
                steps.push(ctrl.send, None)
                for seq, hold in ((1, 0.01), (2, delay)):
                    event.clear()
                    ctrl.send((seq, hold))
                    before = _usage()
                    event.wait()
                    after = _usage()
            _record_wait(cell, kind, before, after)
        except Exception as exc:
            cell.notes.append(f"{kind}: ERROR {describe(exc)}")
            cell.error = cell.error or f"{kind}: {describe(exc)}"
        finally:
            steps.run_sync()


async def idle_async(kit: Kit, cleanup: Cleanup) -> None:
    cell, ctx, ppid, delay = kit.cell, kit.ctx, os.getpid(), kit.cfg.idle_seconds
    for kind in WAIT_KINDS:
        steps = Cleanup(cell)
        try:
            with anyio.fail_after(delay * 2 + 30):
                await _idle_one(kit, kind, steps, ctx, ppid, delay)
        except Exception as exc:
            cell.notes.append(f"{kind}: ERROR {describe(exc)}")
            cell.error = cell.error or f"{kind}: {describe(exc)}"
            print(f"--- idle {kit.label} {kind} failed:", file=sys.stderr)
            traceback.print_exc()
        finally:
            await steps.arun()


async def _idle_one(kit: Kit, kind: str, steps: Cleanup, ctx: Any, ppid: int, delay: float) -> None:
    cell = kit.cell
    if kind == "lock":
        lock, (ctrl, ctrl_child) = kit.lock(), ctx.Pipe()
        stamp, held = ctx.RawValue("q", 0), ctx.RawValue("q", 0)
        steps.push(kit.dispose, lock)
        steps.push(ctrl.close)
        steps.push(kit.unblock_acquire, lock)
        p = await kit.start(work.lock_holder, kit.raw(lock), ctrl_child, stamp, held, ppid)
        ctrl_child.close()
        steps.push(kit.stop, p)
        steps.push(ctrl.send, None)
        for seq, hold in ((1, 0.01), (2, delay)):
            ctrl.send((seq, hold))
            await _until(lambda s=seq: abs(held.value) == s, "take the lock")  # type: ignore[misc]
            before = _usage()
            await kit.acquire(lock)
            after = _usage()
            kit.release(lock)
    elif kind == "queue":
        q1, q2 = kit.queue(), kit.queue()
        for q in (q1, q2):
            steps.push(kit.dispose, q)
            steps.push(kit.close_queue, q)
        steps.push(kit.unblock_get, q2)
        p = await kit.start(work.delayed_echo_queue, kit.raw(q1), kit.raw(q2), ppid)
        steps.push(kit.stop, p)
        steps.push(kit.stop_item, q1)
        for seq, hold in ((1, 0.01), (2, delay)):
            await kit.put(q1, (hold, seq))
            before = _usage()
            _check_echo(seq, await kit.get(q2))
            after = _usage()
    elif kind == "pipe":
        a, b = kit.pipe()
        steps.push(kit.dispose, a)
        steps.push(kit.close_conn, a)
        p = await kit.start(work.delayed_echo_pipe, kit.raw(b), ppid)
        kit.close_conn(b)
        steps.push(kit.stop, p)
        steps.push(kit.send, a, None)
        for seq, hold in ((1, 0.01), (2, delay)):
            await kit.send(a, (hold, seq))
            before = _usage()
            _check_echo(seq, await kit.recv(a))
            after = _usage()
    else:
        event, (ctrl, ctrl_child), stamp = kit.event(), ctx.Pipe(), ctx.RawValue("q", 0)
        steps.push(kit.dispose, event)
        steps.push(ctrl.close)
        steps.push(kit.unblock_wait, event)
        p = await kit.start(work.event_setter, kit.raw(event), ctrl_child, stamp, ppid)
        ctrl_child.close()
        steps.push(kit.stop, p)
        steps.push(ctrl.send, None)
        for seq, hold in ((1, 0.01), (2, delay)):
            event.clear()
            ctrl.send((seq, hold))
            before = _usage()
            await kit.wait(event)
            after = _usage()
    _record_wait(cell, kind, before, after)


async def floor_async(kit: Kit, cleanup: Cleanup) -> None:
    """The loop alone: the 1 ms ticker with nothing else running, and the CPU of a plain sleep."""
    cfg, cell = kit.cfg, kit.cell
    lags: list[float] = []
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(_ticker, lags, stop)
        await anyio.sleep(cfg.lag_seconds)
        stop.set()
    cell.samples["lag_s"] = lags
    await anyio.sleep(0.05)
    before = _usage()
    await anyio.sleep(cfg.idle_seconds)
    _record_wait(cell, "sleep", before, _usage())


# --- results --------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    title: str
    metrics: list[Metric]
    cells: list[Cell]
    ratios: list[tuple[str, str]]  # (numerator library, denominator library)
    notes: list[str] = field(default_factory=list)

    def cell(self, lib: str) -> Cell | None:
        return next((c for c in self.cells if c.lib == lib), None)

    def ratio(self, num: str, den: str, key: str) -> float | None:
        a, b = self.cell(num), self.cell(den)
        x = a.values.get(key) if a else None
        y = b.values.get(key) if b else None
        if not isinstance(x, (int, float)) or not isinstance(y, (int, float)) or not y:
            return None
        return float(x) / float(y)


def _us(xs: Sequence[float], q: float | None = None) -> float | None:
    if not xs:
        return None
    return (statistics.median(xs) if q is None else percentile(xs, q)) * 1e6


def _summarize_latency(cell: Cell, key: str) -> None:
    xs = cell.samples.get(key, [])
    cell.values.update({"median_us": _us(xs), "p99_us": _us(xs, 99), "n": len(xs) or None})
    if key == "lat_s" and xs:
        cell.values["missed"] = len(cell.samples.get("missed_s", []))


def _summarize_lag(cell: Cell) -> None:
    lags = cell.samples.get("lag_s", [])
    if lags:
        cell.values.update({"lag_p99_ms": percentile(lags, 99) * 1e3, "lag_max_ms": max(lags) * 1e3})


def _interleaved(cfg: Config, libs: list[str], tag: str, sync_body: SyncBody, async_body: AsyncBody) -> list[Cell]:
    """``trials`` cells per library, the libraries taking turns; one merged row per library."""
    runs: dict[str, list[Cell]] = {lib: [] for lib in libs}
    for trial in range(cfg.trials):
        for lib in libs:
            label = f"{tag} {trial + 1}/{cfg.trials}"
            if lib == SYNC:
                runs[lib].append(sync_cell(cfg, sync_body, label))
            else:
                runs[lib].append(async_cell(cfg, lib, async_body, label))
    return [merge_cells(lib, cells) for lib, cells in runs.items()]


LAT_METRICS = [
    Metric("median_us", "median µs", "lower", fmt_fixed(1)),
    Metric("p99_us", "p99 µs", "lower", fmt_fixed(1)),
]


def bench_roundtrip(cfg: Config, kind: str, floor: Cell | None) -> Result:
    cells = _interleaved(cfg, [SYNC, AIOMP, AIOP], kind, partial(rt_sync, kind), partial(rt_async, kind))
    for cell in cells:
        _summarize_latency(cell, "rt_s")
        _summarize_lag(cell)
    metrics = [
        *LAT_METRICS,
        Metric("lag_p99_ms", "loop lag p99 ms", "lower", fmt_fixed(2)),
        Metric("lag_max_ms", "loop lag max ms", "lower", fmt_fixed(2)),
        Metric("n", "round trips", None, fmt_text),
    ]
    if kind == "queue":
        what = "q1.put(x) -> child: q2.put(q1.get()) -> q2.get()"
        calls = "aiomp: await q1.aput(x); await q2.aget(); aioprocessing: coro_put / coro_get"
    else:
        what = "a.send(x) -> child: b.send(b.recv()) -> a.recv()"
        calls = "aiomp: await a.asend(x); await a.arecv(); aioprocessing (AioPipe): coro_send / coro_recv"
    notes = [
        f"{what}; {calls}; per round trip: {cfg.round_trips} timed after {cfg.warmup} warm-up, "
        f"x{cfg.trials} trials (fresh child each, libraries interleaved, samples pooled)",
        f"loop lag: a 1 ms ticker on the parent's loop during {cfg.lag_seconds:g} s of the same round trips "
        "(a separate pass; the timed round trips ran without it)" + _floor_note(floor),
    ]
    return Result(kind, f"{kind} round trip across processes", metrics, cells, [(AIOMP, SYNC), (AIOP, AIOMP)], notes)


def _floor_note(floor: Cell | None) -> str:
    if floor is None or "lag_p99_ms" not in floor.values:
        return ""
    return (
        f"; the idle loop's ticker (floor): p99 {floor.values['lag_p99_ms']:.2f} ms, "
        f"max {floor.values['lag_max_ms']:.2f} ms"
    )


def bench_lock(cfg: Config) -> Result:
    cells = _interleaved(cfg, [SYNC, THREAD, AIOMP, AIOP], "lock", lock_sync, lock_async)
    for cell in cells:
        _summarize_latency(cell, "lat_s")
    metrics = [*LAT_METRICS, Metric("n", "hand-offs", None, fmt_text), Metric("missed", "not waiting", None, fmt_text)]
    notes = [
        f"the child holds the lock {cfg.hold * 1e3:g} ms while the parent waits in acquire, writes "
        "time.monotonic_ns() to a RawValue and releases; latency = the parent's monotonic_ns() right after its "
        f"acquire returns - that stamp; {cfg.handoffs} hand-offs x{cfg.trials} trials. mp (sync): lock.acquire() "
        "in a thread, no event loop; mp to_thread: await anyio.to_thread.run_sync(lock.acquire); aiomp: await "
        "lock.aacquire(); aioprocessing: await lock.coro_acquire(). 'not waiting': hand-offs dropped because the "
        "parent was not yet waiting when the child released",
    ]
    return Result(
        "lock", "lock hand-off latency", metrics, cells, [(AIOMP, SYNC), (AIOP, AIOMP), (THREAD, AIOMP)], notes
    )


def bench_event(cfg: Config) -> Result:
    cells = _interleaved(cfg, [SYNC, THREAD, AIOMP, AIOP], "event", event_sync, event_async)
    for cell in cells:
        _summarize_latency(cell, "lat_s")
    metrics = [*LAT_METRICS, Metric("n", "wake-ups", None, fmt_text), Metric("missed", "not waiting", None, fmt_text)]
    notes = [
        f"the parent clears the event and waits; the child sleeps {cfg.hold * 1e3:g} ms, writes "
        "time.monotonic_ns() to a RawValue and sets it; latency = the parent's monotonic_ns() right after its "
        f"wait returns - that stamp; {cfg.handoffs} wake-ups x{cfg.trials} trials. mp (sync): event.wait(); "
        "mp to_thread: anyio.to_thread.run_sync(event.wait); aiomp: await event.await_(); aioprocessing: "
        "await event.coro_wait(). 'not waiting': wake-ups dropped because the parent only reached its wait "
        "after the set",
    ]
    return Result(
        "event", "event wake-up latency", metrics, cells, [(AIOMP, SYNC), (AIOP, AIOMP), (THREAD, AIOMP)], notes
    )


def bench_idle(cfg: Config, floor: Cell | None) -> Result:
    cells = [sync_cell(cfg, idle_sync, "idle"), *(async_cell(cfg, lib, idle_async, "idle") for lib in (AIOMP, AIOP))]
    metrics: list[Metric] = []
    for kind in WAIT_KINDS:
        metrics += [
            Metric(f"{kind}_cpu_ms", f"{kind} CPU ms", "lower", fmt_fixed(2)),
            Metric(f"{kind}_csw", f"{kind} csw", "lower", fmt_text),
        ]
    for cell in cells:  # a wait that ended early did not measure a wait
        for kind in WAIT_KINDS:
            wall = cell.values.get(f"{kind}_wall_s")
            if isinstance(wall, float) and wall < 0.8 * cfg.idle_seconds:
                cell.notes.append(f"{kind}: the wait lasted only {wall:.2f} s")
    floor_text = ""
    if floor is not None and "sleep_cpu_ms" in floor.values:
        floor_text = (
            f"; floor: the parent's loop asleep (anyio.sleep) {cfg.idle_seconds:g} s used "
            f"{floor.values['sleep_cpu_ms']:.2f} ms CPU, {floor.values['sleep_csw']} csw"
        )
    notes = [
        f"the parent's CPU time (time.process_time: every thread) and context switches (getrusage "
        f"nvcsw + nivcsw) during one wait of about {cfg.idle_seconds:g} s: the child holds the lock, "
        "answers the queue item or the pipe message, or sets the event after that delay; aiomp: "
        "aacquire / aget / arecv / await_; aioprocessing: coro_acquire / coro_get / coro_recv / coro_wait; "
        "mp (sync): the blocking calls, no event loop" + floor_text,
    ]
    return Result("idle", "CPU used while waiting", metrics, cells, [(AIOMP, SYNC), (AIOP, AIOMP)], notes)


# --- printing -------------------------------------------------------------------------------------


def result_table(result: Result) -> str:
    headers = ["library", *(m.label for m in result.metrics), "notes"]
    rows = []
    for c in result.cells:
        shown = [
            ("ERROR" if c.values.get(m.key) is None and c.error else m.fmt(c.values.get(m.key))) for m in result.metrics
        ]
        rows.append([c.lib, *shown, "; ".join(([f"ERROR: {c.error}"] if c.error else []) + c.notes)])
    parts = [f"== {result.name}: {result.title} (loop={CURRENT.loop}, {CURRENT.start_method})", table(headers, rows)]
    for num, den in result.ratios:
        figures = []
        for m in result.metrics:
            if m.better is None:
                continue
            r = result.ratio(num, den, m.key)
            figures.append(f"{m.label} {r:.2f}x" if r is not None else f"{m.label} -")
        parts.append(f"ratio {num} / {den}: " + ", ".join(figures) + " (lower is better)")
    parts += [f"note: {n}" for n in result.notes]
    return "\n".join(parts)


def result_json(result: Result) -> dict[str, Any]:
    ratios = {
        f"{num} / {den}": {m.key: result.ratio(num, den, m.key) for m in result.metrics if m.better is not None}
        for num, den in result.ratios
    }
    cells = {}
    for c in result.cells:
        d = asdict(c)
        d["samples"] = {k: [round(x, 9) for x in xs] for k, xs in c.samples.items()}
        cells[c.lib] = d
    return {
        "title": result.title,
        "metrics": [{"key": m.key, "label": m.label, "better": m.better} for m in result.metrics],
        "notes": result.notes,
        "results": cells,
        "ratios": ratios,
    }


# --- the run --------------------------------------------------------------------------------------

CURRENT: Config  # set by main(), for the table titles


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.primitives",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--start-method", choices=["spawn", "forkserver"], default="forkserver")
    parser.add_argument("--only", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="fewer iterations, for a smoke run")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON (default benchmarks/results/)")
    args = parser.parse_args(argv)
    args.only = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(args.only) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    return args


def prepare(cfg: Config) -> None:
    """One start method for everyone; the shared helper processes started before any cell."""
    multiprocessing.set_start_method(cfg.start_method, force=True)
    multiprocessing.resource_tracker.ensure_running()
    if cfg.start_method == "forkserver":
        multiprocessing.forkserver.ensure_running()
    try:
        import aiomp

        for name in ("Process", "Queue", "Pipe", "Lock", "Event"):
            getattr(aiomp, name)
    except Exception as exc:  # reported; every aiomp cell will show the error
        print(f"warning: aiomp is not usable: {type(exc).__name__}: {exc}", file=sys.stderr)


def metadata(cfg: Config, only: list[str]) -> dict[str, Any]:
    from benchmarks.run import _version, machine_load, source_digest

    return {
        "load_before": machine_load(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "benchmarks": only,
        "config": cfg.as_dict(),
        "versions": {name: _version(name) for name in PACKAGES},
        "aiomp_source_sha256": source_digest("aiomp"),
    }


def main(argv: list[str] | None = None) -> int:
    global CURRENT
    args = parse_args(argv)
    cfg = CURRENT = Config.make(args.loop, args.start_method, args.quick)
    path = args.json or RESULTS / f"primitives-{cfg.loop}-{cfg.start_method}{'-quick' if cfg.quick else ''}.json"
    print(
        f"aiomp primitives benchmark: loop={cfg.loop} start method={cfg.start_method} quick={cfg.quick} "
        f"cpus={os.cpu_count()} python={sys.version.split()[0]} pid={os.getpid()}",
        flush=True,
    )
    meta = metadata(cfg, args.only)
    load = meta["load_before"]
    print(
        f"machine before the run: {load['cpu_busy_percent_1s']:.0f}% CPU busy (1 s sample), load average "
        f"{load['loadavg'][0]:.2f}; aiomp source {meta['aiomp_source_sha256']}; "
        f"versions {', '.join(f'{k} {v}' for k, v in meta['versions'].items())}",
        flush=True,
    )
    prepare(cfg)
    results: list[Result] = []
    floor: Cell | None = None

    def payload() -> dict[str, Any]:
        return {
            "meta": meta,
            "floor": asdict(floor) if floor else None,
            "benchmarks": {r.name: result_json(r) for r in results},
        }

    def dump_partial(message: str) -> None:
        write_json(path, {**payload(), "aborted": message})
        print(f"partial results written to {path}", file=sys.stderr)

    on_watchdog.append(dump_partial)
    print("-- floor (the loop alone)", file=sys.stderr, flush=True)
    floor = async_cell(cfg, "idle loop", floor_async, "floor")
    _summarize_lag(floor)
    for name in args.only:
        print(f"-- {name}", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        if name in ("queue", "pipe"):
            result = bench_roundtrip(cfg, name, floor)
        elif name == "lock":
            result = bench_lock(cfg)
        elif name == "event":
            result = bench_event(cfg)
        else:
            result = bench_idle(cfg, floor)
        result.notes.append(f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
        results.append(result)
        print("\n" + result_table(result) + "\n", flush=True)
        write_json(path, payload())
    print(f"JSON: {path}", flush=True)
    _exit_if_stuck()
    return 0


def _exit_if_stuck() -> None:
    """A thread left in a blocking library call (a peer's cancelled call) would keep the interpreter
    alive at exit: leave without it."""
    stuck = [
        t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()
    ]
    if stuck:
        print(f"note: non-daemon threads still alive at exit: {stuck}; exiting without them", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
