"""primitives: aiomp's queues, pipes, locks and events against aioprocessing and the stdlib.

* **queue**, **pipe**: round trip parent -> child echo -> parent (median, p99), then the same round
  trips for a while with the 1 ms ticker on the parent's loop (its lateness);
* **lock**: hand-off latency, from the child's ``release()`` to the parent's acquire returning;
* **event**: wake-up latency, from the child's ``set()`` to the parent's wait returning;
* **idle**: the parent's CPU time and context switches while it waits about 2 s on a lock, a
  queue, a pipe and an event that a child makes it wait for (a wait that polls shows here).

Rows: ``mp (sync)`` is the stdlib's blocking call made straight from the event loop's thread, with
nothing else running (the reference, not a peer); ``mp to_thread`` the same call through
``anyio.to_thread.run_sync``; ``aiomp``; ``aioprocessing`` (asyncio only); ``idle`` the event loop
alone (the floor of the lag and CPU figures). The children run the same plain blocking code for
every row (``_prim_work.py``).
"""

from __future__ import annotations

import contextlib
import inspect
import os
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.to_thread

from benchmarks import _prim_work as work
from benchmarks._config import Config
from benchmarks._harness import Ctx, describe, lag_figures, median, now, percentile, rows, ticking
from benchmarks._report import fmt_fixed, fmt_text
from benchmarks._types import Cell, Metric, WorkloadResult

ns = time.monotonic_ns  # CLOCK_MONOTONIC: the same clock in every process of the machine

SYNC, AIOMP, THREAD, AIOP, IDLE = "mp (sync)", "aiomp", "mp to_thread", "aioprocessing", "idle"
LIBS = [SYNC, AIOMP, THREAD, AIOP, IDLE]
WAIT_KINDS = ["lock", "queue", "pipe", "event"]
#: How long stopping one child, or one other clean-up step, may take.
STOP_TIMEOUT = 5.0
#: How long the parent waits for a child to reach a state, or for an answer, before giving up.
STATE_TIMEOUT = 10.0


# --- clean-up -------------------------------------------------------------------------------------


class Cleanup:
    """Clean-up steps run last-in first-out, each at most once, each bounded; errors are noted."""

    def __init__(self, cell: Cell) -> None:
        self._cell = cell
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def push(self, fn: Callable[..., Any], *args: Any) -> None:
        self._steps.append((fn, args))

    async def arun(self) -> None:
        with anyio.CancelScope(shield=True):
            while self._steps:
                fn, args = self._steps.pop()
                try:
                    with anyio.fail_after(STOP_TIMEOUT):
                        result = fn(*args)
                        if inspect.isawaitable(result):
                            await result
                except Exception as exc:
                    name = getattr(fn, "__qualname__", repr(fn))
                    self._cell.notes.append(f"clean-up {name} failed: {describe(exc)}")


def _close_mp_queue(q: Any) -> None:
    q.cancel_join_thread()  # never wait at exit for a feeder whose reader is gone
    q.close()


def _release_quietly(lock: Any) -> None:
    """Unblock a thread that may still wait for ``lock`` (a stdlib lock: any process may release it)."""
    with contextlib.suppress(ValueError):  # not held: nobody to unblock
        lock.release()


# --- one adapter per library ----------------------------------------------------------------------


class Kit:
    """How one library makes the primitives, starts the children and awaits: the stdlib's objects."""

    def __init__(self, cfg: Config, cell: Cell) -> None:
        self.cfg, self.cell, self.ctx = cfg, cell, cfg.context
        self.lib: Any = self.ctx  # what makes the primitives: the stdlib's context, or aiomp

    def queue(self) -> Any:
        return self.lib.Queue()

    def pipe(self) -> Any:
        return self.lib.Pipe()

    def lock(self) -> Any:
        return self.lib.Lock()

    def event(self) -> Any:
        return self.lib.Event()

    def raw(self, obj: Any) -> Any:
        """The object passed to the child, and used for blocking calls in the parent."""
        return obj

    async def start(self, target: Callable[..., None], *args: Any) -> Any:
        p = self.ctx.Process(target=target, args=args, daemon=True)
        p.start()
        return p

    async def stop(self, p: Any) -> None:
        """Let a child exit by itself (it was sent ``None``), then terminate, then kill it."""
        for step in (None, p.terminate, p.kill):
            if step is not None:
                step()
            deadline = now() + STOP_TIMEOUT / 3
            while p.is_alive() and now() < deadline:
                await anyio.sleep(0.01)
            if not p.is_alive():
                if step is None and p.exitcode not in (None, 0):
                    self.cell.notes.append(f"a child exited by itself with code {p.exitcode}")
                return
        raise RuntimeError(f"child {p.pid} still alive after SIGKILL")

    async def call(self, obj: Any, verb: str, *args: Any) -> Any:
        """``obj``'s ``put``, ``get``, ``send``, ``recv``, ``acquire`` or ``wait``, awaited the library's way:
        here the stdlib's blocking method, straight from the event loop's thread, bounded."""
        if verb == "recv" and not obj.poll(STATE_TIMEOUT):
            raise TimeoutError(f"no message within {STATE_TIMEOUT:.0f} s")
        bounded = {"timeout": STATE_TIMEOUT} if verb in ("get", "acquire", "wait") else {}
        return getattr(obj, verb)(*args, **bounded)

    # clean-up: stop a child gracefully, close, and unblock threads a cancelled call left waiting
    async def stop_item(self, q: Any) -> None:
        await self.call(q, "put", None)

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

    async def call(self, obj: Any, verb: str, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(getattr(obj, verb), *args, abandon_on_cancel=True)


class AioprocessingKit(Kit):
    """``aioprocessing``: the stdlib object wrapped, every ``coro_*`` call run in a thread pool."""

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

    async def call(self, obj: Any, verb: str, *args: Any) -> Any:
        return await getattr(obj, f"coro_{verb}")(*args)

    def dispose(self, obj: Any) -> None:
        executor = obj.__dict__.get("_executor")
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)


AIOMP_CALLS = {"put": "aput", "get": "aget", "send": "asend", "recv": "arecv", "acquire": "aacquire", "wait": "await_"}


class AiompKit(Kit):
    """aiomp: ``aiomp.Process`` children, ``aput``/``aget``, ``asend``/``arecv``, ``aacquire``, ``await_``."""

    def __init__(self, cfg: Config, cell: Cell) -> None:
        super().__init__(cfg, cell)
        import aiomp

        self.lib = aiomp

    async def start(self, target: Callable[..., None], *args: Any) -> Any:
        p = self.lib.Process(target=target, args=args, daemon=True, context=self.cfg.start_method)
        await p.start()
        return p

    async def stop(self, p: Any) -> None:
        for step in (None, p.terminate, p.kill):
            if step is not None:
                step()
            with anyio.move_on_after(STOP_TIMEOUT / 3 + 1):
                await p.join(STOP_TIMEOUT / 3)
            if p.exitcode is not None:
                return
        raise RuntimeError(f"aiomp child {p.pid} still alive after kill()")

    async def call(self, obj: Any, verb: str, *args: Any) -> Any:
        return await getattr(obj, AIOMP_CALLS[verb])(*args)

    def close_queue(self, q: Any) -> None:
        getattr(q, "cancel_join_thread", lambda: None)()
        q.close()

    # aiomp's awaitables are cancellable: no thread is left waiting, nothing to unblock
    def unblock_get(self, q: Any) -> None:
        pass

    def unblock_acquire(self, lock: Any) -> None:
        pass

    def unblock_wait(self, event: Any) -> None:
        pass


KITS: dict[str, type[Kit]] = {SYNC: Kit, THREAD: ThreadKit, AIOP: AioprocessingKit, AIOMP: AiompKit}


# --- the children and what the parent does with them ---------------------------------------------


async def open_echo(kind: str, kit: Kit, cleanup: Cleanup, delayed: bool = False) -> Callable[[Any], Awaitable[Any]]:
    """Start a child that echoes through a queue pair (``kind == "queue"``) or a pipe; return the
    parent's round trip, ``await one(x) -> x`` (``delayed``: ``one((seconds, x))`` answers ``x`` after
    ``seconds``). ``cleanup`` stops the child and closes everything."""
    ppid = os.getpid()
    if kind == "queue":
        q1, q2 = kit.queue(), kit.queue()
        for q in (q1, q2):
            cleanup.push(kit.dispose, q)
            cleanup.push(kit.close_queue, q)
        cleanup.push(kit.unblock_get, q2)
        p = await kit.start(work.delayed_echo_queue if delayed else work.echo_queue, kit.raw(q1), kit.raw(q2), ppid)
        cleanup.push(kit.stop, p)
        cleanup.push(kit.stop_item, q1)

        async def one(x: Any) -> Any:
            await kit.call(q1, "put", x)
            return await kit.call(q2, "get")

        return one
    a, b = kit.pipe()
    cleanup.push(kit.dispose, a)
    cleanup.push(kit.close_conn, a)
    p = await kit.start(work.delayed_echo_pipe if delayed else work.echo_pipe, kit.raw(b), ppid)
    kit.close_conn(b)  # the child's end: once the child is gone, a pending recv sees EOF
    cleanup.push(kit.stop, p)
    cleanup.push(kit.call, a, "send", None)

    async def trip(x: Any) -> Any:
        await kit.call(a, "send", x)
        return await kit.call(a, "recv")

    return trip


Usage = tuple[float, int, float]


@dataclass
class Wait:
    """One timed wait of the parent: when it entered, when it returned, the child's stamp, CPU usage."""

    entered: int
    returned: int
    stamp: int
    before: Usage
    after: Usage


def _usage() -> Usage:
    """CPU seconds of the whole process (every thread), its context switches, and the wall clock."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), ru.ru_nvcsw + ru.ru_nivcsw, now()


async def _until(pred: Callable[[], bool], what: str) -> None:
    deadline = now() + STATE_TIMEOUT
    while not pred():
        if now() > deadline:
            raise TimeoutError(f"the child did not {what} within {STATE_TIMEOUT:.0f} s")
        await anyio.sleep(0.0002)


async def open_lock(kit: Kit, cleanup: Cleanup) -> Callable[[int, float], Awaitable[Wait]]:
    """A child that takes the lock on command; ``await handoff(seq, hold)`` waits for it in acquire."""
    ctx, ppid = kit.ctx, os.getpid()
    lock, (ctrl, ctrl_child) = kit.lock(), ctx.Pipe()
    stamp, held = ctx.RawValue("q", 0), ctx.RawValue("q", 0)
    cleanup.push(kit.dispose, lock)
    cleanup.push(ctrl.close)
    cleanup.push(kit.unblock_acquire, lock)
    p = await kit.start(work.lock_holder, kit.raw(lock), ctrl_child, stamp, held, ppid)
    ctrl_child.close()
    cleanup.push(kit.stop, p)
    cleanup.push(ctrl.send, None)

    async def handoff(seq: int, hold: float) -> Wait:
        ctrl.send((seq, hold))
        await _until(lambda: abs(held.value) == seq, "take the lock")
        if held.value < 0:
            raise RuntimeError("the child could not take the lock")
        before, entered = _usage(), ns()
        if not await kit.call(lock, "acquire"):
            raise RuntimeError("acquire returned False")
        returned, after = ns(), _usage()
        lock.release()
        return Wait(entered, returned, stamp.value, before, after)

    return handoff


async def open_event(kit: Kit, cleanup: Cleanup) -> Callable[[int, float], Awaitable[Wait]]:
    """A child that sets the event on command, ``delay`` s later; ``await wakeup(seq, delay)`` waits for it."""
    ctx, ppid = kit.ctx, os.getpid()
    event, (ctrl, ctrl_child), stamp = kit.event(), ctx.Pipe(), ctx.RawValue("q", 0)
    cleanup.push(kit.dispose, event)
    cleanup.push(ctrl.close)
    cleanup.push(kit.unblock_wait, event)
    p = await kit.start(work.event_setter, kit.raw(event), ctrl_child, stamp, ppid)
    ctrl_child.close()
    cleanup.push(kit.stop, p)
    cleanup.push(ctrl.send, None)

    async def wakeup(seq: int, delay: float) -> Wait:
        event.clear()
        ctrl.send((seq, delay))
        before, entered = _usage(), ns()
        if not await kit.call(event, "wait"):
            raise RuntimeError("wait returned False")
        returned, after = ns(), _usage()
        return Wait(entered, returned, stamp.value, before, after)

    return wakeup


# --- the measurements: one body per benchmark, every library through its kit ----------------------

Body = Callable[[Kit, Cleanup], Awaitable[None]]


def _cell_of(body: Body, floor: Callable[[Ctx], Awaitable[None]]) -> Callable[[Ctx], Awaitable[None]]:
    """The harness's measure for a benchmark: the floor row runs ``floor``, the others ``body`` with their kit."""

    async def measure(ctx: Ctx) -> None:
        if ctx.cell.lib == IDLE:
            await floor(ctx)
            return
        cleanup = Cleanup(ctx.cell)
        try:
            await body(KITS[ctx.cell.lib](ctx.cfg, ctx.cell), cleanup)
        finally:
            await cleanup.arun()

    return measure


async def _ticker_alone(ctx: Ctx) -> None:
    lags = ctx.cell.samples.setdefault("lag_s", [])
    async with ticking(lags):
        await anyio.sleep(ctx.cfg.prim_lag_seconds)


async def round_trips(kind: str, kit: Kit, cleanup: Cleanup) -> None:
    cfg, cell = kit.cfg, kit.cell
    one = await open_echo(kind, kit, cleanup)
    for i in range(cfg.warmup):
        _check(i, await one(i))
    samples = cell.samples.setdefault("lat_s", [])
    for i in range(cfg.round_trips):
        t0 = now()
        got = await one(i)
        samples.append(now() - t0)
        _check(i, got)
    if cell.lib == SYNC:
        return  # blocking calls: the ticker could not run between them
    lags = cell.samples.setdefault("lag_s", [])
    async with ticking(lags):  # the same round trips again, with the ticker on the loop
        deadline, i = now() + cfg.prim_lag_seconds, 0
        while now() < deadline:
            _check(i, await one(i))
            i += 1


def _check(sent: Any, got: Any) -> None:
    if got != sent:
        raise RuntimeError(f"sent {sent!r}, got back {got!r}")


async def handoffs(kind: str, kit: Kit, cleanup: Cleanup) -> None:
    """Lock hand-offs or event wake-ups; the first tenth of ``warmup`` are not counted."""
    cfg, cell = kit.cfg, kit.cell
    wait = await (open_lock(kit, cleanup) if kind == "lock" else open_event(kit, cleanup))
    skip = cfg.warmup // 10 or 1
    for seq in range(1, skip + cfg.handoffs + 1):
        w = await wait(seq, cfg.hold)
        if seq <= skip:
            continue
        if w.entered >= w.stamp:  # we were not waiting yet when the child released: not a hand-off
            cell.samples.setdefault("missed_s", []).append((w.entered - w.stamp) / 1e9)
        else:
            cell.samples.setdefault("lat_s", []).append((w.returned - w.stamp) / 1e9)


async def idle_waits(kit: Kit, cleanup: Cleanup) -> None:
    """One wait of ``idle_seconds`` on each primitive (after one short warm-up wait)."""
    delay = kit.cfg.idle_seconds
    for kind in WAIT_KINDS:
        steps = Cleanup(kit.cell)
        try:
            with anyio.fail_after(delay * 2 + 30):
                if kind in ("lock", "event"):
                    wait = await (open_lock(kit, steps) if kind == "lock" else open_event(kit, steps))
                    await wait(1, 0.01)
                    w = await wait(2, delay)
                    _record_wait(kit.cell, kind, w.before, w.after, delay)
                else:
                    one = await open_echo(kind, kit, steps, delayed=True)
                    _check(1, await one((0.01, 1)))
                    before = _usage()
                    _check(2, await one((delay, 2)))
                    _record_wait(kit.cell, kind, before, _usage(), delay)
        except Exception as exc:
            kit.cell.error = kit.cell.error or f"{kind}: {describe(exc)}"
        finally:
            await steps.arun()


async def _sleep_alone(ctx: Ctx) -> None:
    """The floor: the parent's loop asleep as long, every kind's column."""
    await anyio.sleep(0.05)
    before = _usage()
    await anyio.sleep(ctx.cfg.idle_seconds)
    after = _usage()
    for kind in WAIT_KINDS:
        _record_wait(ctx.cell, kind, before, after, ctx.cfg.idle_seconds)


def _record_wait(cell: Cell, kind: str, before: Usage, after: Usage, expected: float) -> None:
    cpu, csw, wall = after[0] - before[0], after[1] - before[1], after[2] - before[2]
    cell.values.update({f"{kind}_cpu_ms": cpu * 1e3, f"{kind}_csw": csw})
    if wall < 0.8 * expected:  # a wait that ended early did not measure a wait
        cell.notes.append(f"{kind}: the wait lasted only {wall:.2f} s")


# --- the workloads --------------------------------------------------------------------------------

LATENCY = [
    Metric("median_us", "median µs", "lower", fmt_fixed(1)),
    Metric("p99_us", "p99 µs", "lower", fmt_fixed(1)),
]
LAG = [
    Metric("lag_p99_ms", "loop lag p99 ms", "lower", fmt_fixed(2)),
    Metric("lag_max_ms", "loop lag max ms", "lower", fmt_fixed(2)),
]


def _finish(row: Cell) -> None:
    xs = row.samples.get("lat_s", [])
    if xs:
        row.values.update(median_us=median(xs) * 1e6, p99_us=percentile(xs, 99) * 1e6, n=len(xs))
        row.values["missed"] = len(row.samples.get("missed_s", []))
    if row.samples.get("lag_s"):
        row.values.update(lag_figures(row.samples["lag_s"]))


def _result(cfg: Config, name: str, title: str, metrics: list[Metric], cells: list[Cell], note: str) -> WorkloadResult:
    notes = [note, f"{cfg.rounds} round(s), the libraries taking turns, a fresh child each; samples pooled"]
    return WorkloadResult(name, title, metrics, cells, notes, reference=SYNC)


def run_round_trip(cfg: Config, kind: str) -> WorkloadResult:
    measure = _cell_of(partial(round_trips, kind), _ticker_alone)
    cells = rows(cfg, LIBS, measure, kind, finish=_finish)
    what = {
        "queue": "q1.put(x) -> child: q2.put(q1.get()) -> q2.get(); aiomp: aput / aget; aioprocessing: coro_put / "
        "coro_get",
        "pipe": "a.send(x) -> child: b.send(b.recv()) -> a.recv(); aiomp: asend / arecv; aioprocessing (AioPipe): "
        "coro_send / coro_recv",
    }[kind]
    note = (
        f"{what}; {cfg.round_trips} timed round trips after {cfg.warmup} warm-up per round; loop lag: the 1 ms "
        f"ticker during {cfg.prim_lag_seconds:g} s more of the same round trips (idle: the ticker alone)"
    )
    metrics = [*LATENCY, *LAG, Metric("n", "round trips", None, fmt_text)]
    return _result(cfg, kind, f"{kind} round trip across processes", metrics, cells, note)


def run_handoff(cfg: Config, kind: str) -> WorkloadResult:
    cells = rows(cfg, LIBS[:-1], _cell_of(partial(handoffs, kind), _ticker_alone), kind, finish=_finish)
    how = {
        "lock": "the child holds the lock while the parent waits in acquire, then writes time.monotonic_ns() to a "
        "RawValue and releases; aiomp: aacquire(); aioprocessing: coro_acquire()",
        "event": "the parent clears the event and waits; the child sleeps, writes time.monotonic_ns() to a "
        "RawValue and sets it; aiomp: await_(); aioprocessing: coro_wait()",
    }[kind]
    note = (
        f"{how}; {cfg.hold * 1e3:g} ms later; latency = the parent's monotonic_ns() when its wait returns - that "
        f"stamp; {cfg.handoffs} per round; 'not waiting': dropped because the parent was not yet waiting"
    )
    metrics = [*LATENCY, Metric("n", "hand-offs", None, fmt_text), Metric("missed", "not waiting", None, fmt_text)]
    title = "lock hand-off latency" if kind == "lock" else "event wake-up latency"
    return _result(cfg, kind, title, metrics, cells, note)


def run_idle(cfg: Config) -> WorkloadResult:
    cells = rows(cfg, LIBS, _cell_of(idle_waits, _sleep_alone), "idle", rounds=1)
    metrics = [
        metric
        for kind in WAIT_KINDS
        for metric in (
            Metric(f"{kind}_cpu_ms", f"{kind} CPU ms", "lower", fmt_fixed(2)),
            Metric(f"{kind}_csw", f"{kind} csw", "lower", fmt_text),
        )
    ]
    note = (
        f"the parent's CPU time (time.process_time: every thread) and context switches (getrusage nvcsw + nivcsw) "
        f"during one wait of {cfg.idle_seconds:g} s: the child holds the lock, answers the queue item or the pipe "
        "message, or sets the event after that delay; idle: the loop asleep as long"
    )
    return WorkloadResult("idle", "CPU used while waiting", metrics, cells, [note], reference=SYNC)


WORKLOADS = {
    "queue": partial(run_round_trip, kind="queue"),
    "pipe": partial(run_round_trip, kind="pipe"),
    "lock": partial(run_handoff, kind="lock"),
    "event": partial(run_handoff, kind="event"),
    "idle": run_idle,
}
