"""``python -m benchmarks.faults``: inject faults into a real pool; time the recovery, check the outcome.

Each row injects one fault, ``--repeat`` times on every event loop x start method,
each time in a fresh pool on a fresh event loop, and reports:

* **time to recover**, median / max in ms: from the moment the fault is injected (the
  kill is sent, the failing call is made) until the pool has run a new task on a
  **replacement** worker. The pool has one worker wherever it can, so a task that
  completes after the fault can only have run on the replacement (its pid is checked).
  Rows 8 to 11 time something else, named in the ``timed`` column.
* **what the user saw**: the exception type (and exit code) of the affected call.
* **what was lost**: each task records every run of itself in a file of a temporary
  folder; a task that neither returned nor raised, or that ran twice, is a problem.

A row's verdict is ``OK`` when the outcome was the expected one on every repeat,
else it says what differed, and where. Rows 10 and 11 run a victim program
(``python -m benchmarks.faults --victim LOOP CONTEXT``) in its own session, with both
workers busy (one inside a long C call that holds the GIL), and end it from outside.
``--peers`` runs only rows 10 and 11, on asyncio, for aiomp and its peers side by side.

Usage: ``python -m benchmarks.faults [--loop asyncio|uvloop|trio|all]
[--context spawn|forkserver|all] [--repeat 5] [--peers]``. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import math
import multiprocessing
import os
import re
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import psutil

import aiomp

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

ROOT = Path(__file__).resolve().parent.parent
LOOPS = ["asyncio", "uvloop", "trio"]
CONTEXTS = ["spawn", "forkserver"]
PEERS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess"]  # --peers: the victims of rows 10 and 11
TRIAL_LIMIT = 60.0  # seconds for one in-process trial (row 9: three times that)
EXIT_LIMIT = 5.0  # the workers of a dead or interrupted parent must be gone by then
now = time.monotonic  # CLOCK_MONOTONIC: one clock for every process (row 7 stamps in the worker)


# -- in the workers (module level: spawn and forkserver import them) --------------------


def note(path: str, text: str = "") -> None:
    """Append one line (this pid, then ``text``) to ``path`` in a single write."""
    fd = os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {text}\n".encode())
    finally:
        os.close(fd)


def record(directory: str, item: int, seconds: float = 0.0) -> tuple[int, int]:
    """Record a run of ``item`` (before working), sleep ``seconds``; return (pid, 2 * item)."""
    note(os.path.join(directory, str(item)))
    if seconds:
        time.sleep(seconds)
    return os.getpid(), 2 * item


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    os._exit(99)  # never reached; if it were, the exit code would give it away


def segfault() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))  # no core file
    ctypes.string_at(0)


def exit_3() -> None:
    os._exit(3)


def exhaust_memory(parent_pid: int, headroom: int) -> int:
    """Cap this worker's address space a little above its size, then allocate far more."""
    if os.getpid() == parent_pid or multiprocessing.parent_process() is None:
        raise RuntimeError("refusing to limit the address space of the benchmark process")
    with open("/proc/self/status") as f:
        vm_size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (vm_size + headroom, hard))
    hog = bytearray(16 * headroom)  # raises MemoryError
    return len(hog)


def address_space_limit() -> tuple[int, int]:
    return resource.getrlimit(resource.RLIMIT_AS)


def init_die_once(token: str, log: str) -> None:
    """The first worker to start SIGKILLs itself (after noting the time); the others go on."""
    try:
        os.close(os.open(token, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        note(log, "started")
        return
    note(log, f"killed {now()!r}")
    die()


class InitError(Exception):
    """What ``init_raise`` raises."""


def init_raise(log: str) -> None:
    note(log)
    raise InitError("no database today")


def stall(kind: int) -> None:
    """The victim's tasks: say which pid (and process name) runs them, then never end."""
    name = multiprocessing.current_process().name
    os.write(1, f"worker {os.getpid()} {name}\n".encode())  # one write: the two workers share the pipe
    if kind == 0:
        sum(range(10**13))  # one C call that holds the GIL
    else:
        time.sleep(3600)


async def astall(kind: int) -> None:
    """``stall`` as a coroutine function: aiomultiprocess runs nothing else."""
    stall(kind)


# -- outcomes ------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float  # the timed figure (math.nan if there is none)
    saw: str  # what the user saw
    problems: list[str] = field(default_factory=list)  # how it differed from the expected outcome
    count: float | None = None  # a figure the row's note reports (attempts, ms per task...)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def seen(exc: BaseException | None) -> str:
    """An exception as the user sees it: type, exit code, cause."""
    if exc is None:
        return "nothing"
    text = type(exc).__name__
    if isinstance(exc, aiomp.WorkerDiedError):
        text += f"({exc.exitcode})"
    if exc.__cause__ is not None and not isinstance(exc.__cause__, aiomp.RemoteTraceback):
        text += f" from {type(exc.__cause__).__name__}"
    return text


async def attempt(call: Awaitable[Any]) -> tuple[Any, BaseException | None]:
    """``(result, None)``, or ``(None, the exception)`` if ``call`` raised."""
    try:
        return await call, None
    except Exception as exc:
        return None, exc


def alive(pid: int) -> bool:
    """Running (a zombie counts as exited)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def runs(directory: Path) -> dict[str, int]:
    """How many times each recorded item ran."""
    return {path.name: len(path.read_text().splitlines()) for path in directory.iterdir()}


async def replaced(pool: aiomp.Pool, old: int, out: Outcome, t0: float) -> None:
    """Run a task on the replacement of worker ``old``; the time since ``t0`` is the recovery."""
    pid = await pool.apply(os.getpid)
    out.seconds = now() - t0
    out.expect(pid != old, "the new task ran on the old worker")
    out.expect(not alive(old), f"the old worker {old} is still alive")


# -- the faults run in this process: (context, temp dir) -> Outcome -------------------------


async def idle_kill(context: str, tmp: Path) -> Outcome:
    async with aiomp.Pool(1, context=context) as pool:
        old = await pool.apply(os.getpid)
        t0 = now()
        os.kill(old, signal.SIGKILL)
        out = Outcome(math.nan, "nothing")
        await replaced(pool, old, out, t0)
        return out


async def busy_kill(context: str, tmp: Path) -> Outcome:
    """Task 0 runs (10 s) when its worker is killed; tasks 1-4 were handed to it, not started."""
    stamps: list[float] = []
    async with aiomp.Pool(1, context=context) as pool:
        old = await pool.apply(os.getpid)  # also teaches the pool that tasks are short: it hands out more
        running = pool.apply_async(record, (str(tmp), 0, 10.0))
        queued = [
            pool.apply_async(record, (str(tmp), i), callback=lambda _: stamps.append(now())) for i in (1, 2, 3, 4)
        ]
        while not (tmp / "0").exists() or not (tmp / "0").stat().st_size:  # created, then written
            await anyio.sleep(0.002)
        handed = pool.statistics().tasks_running
        t0 = now()
        os.kill(old, signal.SIGKILL)
        _, exc = await attempt(running)
        results = [await result for result in queued]
    out = Outcome(min(stamps) - t0, seen(exc), count=handed - 1)
    out.expect(out.saw == "WorkerDiedError(-9)", f"the running task raised {out.saw}")
    out.expect(all(pid != old for pid, _ in results), "a queued task ran on the killed worker")
    out.expect([value for _, value in results] == [2, 4, 6, 8], f"wrong results {results}")
    counts = runs(tmp)
    out.expect(counts == dict.fromkeys("01234", 1), f"runs per task {counts} (each should run once)")
    return out


async def task_dies(context: str, func: Callable[..., Any], args: tuple[Any, ...], expected: str) -> Outcome:
    """A task that kills its own worker: the call fails (``expected``: a regex), the next task runs on a replacement."""
    async with aiomp.Pool(1, context=context) as pool:
        old = await pool.apply(os.getpid)
        t0 = now()
        _, exc = await attempt(pool.apply(func, args))
        out = Outcome(math.nan, seen(exc))
        out.expect(re.fullmatch(expected, out.saw) is not None, f"the call raised {out.saw}")
        await replaced(pool, old, out, t0)
        if func is exhaust_memory:
            limit = await pool.apply(address_space_limit)
            out.expect(limit == resource.getrlimit(resource.RLIMIT_AS), f"the replacement's RLIMIT_AS is {limit}")
        return out


async def segfaults(context: str, tmp: Path) -> Outcome:
    return await task_dies(context, segfault, (), r"WorkerDiedError\(-11\)")


async def exits(context: str, tmp: Path) -> Outcome:
    return await task_dies(context, exit_3, (), r"WorkerDiedError\(3\)")


async def out_of_memory(context: str, tmp: Path) -> Outcome:
    # 64 MiB above its size, then 1 GiB; the exit code is aiomp's choice, the cause is what matters.
    return await task_dies(
        context, exhaust_memory, (os.getpid(), 64 << 20), r"WorkerDiedError\(-?\d+\) from MemoryError"
    )


async def times_out(context: str, tmp: Path) -> Outcome:
    async with aiomp.Pool(1, context=context) as pool:
        old = await pool.apply(os.getpid)
        t0 = now()
        _, exc = await attempt(pool.apply(time.sleep, (10,), timeout=0.05))
        out = Outcome(math.nan, seen(exc))
        out.expect(type(exc) is TimeoutError, f"the call raised {out.saw}")
        await replaced(pool, old, out, t0)
        return out


async def dies_starting(context: str, tmp: Path) -> Outcome:
    """The first worker SIGKILLs itself in the initializer; t0 is its own timestamp."""
    log = tmp / "init"
    async with aiomp.Pool(
        1, context=context, initializer=init_die_once, initargs=(str(tmp / "token"), str(log))
    ) as pool:
        pid, exc = await attempt(pool.apply(os.getpid))
        recovered = now()
    lines = [line.split() for line in log.read_text().splitlines()]
    killed = [float(line[2]) for line in lines if line[1] == "killed"]
    out = Outcome(recovered - killed[0] if killed else math.nan, seen(exc), count=len(lines))
    out.expect(exc is None, f"the first call raised {out.saw}")
    out.expect(len(lines) == 2 and len(killed) == 1, f"initializer ran {[line[1] for line in lines]}")
    out.expect(pid == int(lines[-1][0]), "the task did not run on the replacement")
    return out


async def init_fails(context: str, tmp: Path) -> Outcome:
    """Timed: from creating the pool until the caller gets BrokenPoolError."""
    log = tmp / "init"
    t0 = now()
    exc: BaseException | None = None
    try:
        async with aiomp.Pool(1, context=context, initializer=init_raise, initargs=(str(log),)) as pool:
            await pool.apply(os.getpid)
    except Exception as error:
        exc = error
    took = now() - t0
    attempts = len(log.read_text().splitlines()) if log.exists() else 0
    out = Outcome(took, seen(exc), count=attempts)
    out.expect(isinstance(exc, aiomp.BrokenPoolError), f"the call raised {out.saw}")
    out.expect(isinstance(getattr(exc, "__cause__", None), InitError), "BrokenPoolError.__cause__ is not InitError")
    out.expect(1 <= attempts <= 5, f"{attempts} initializer attempts")
    return out


async def one_task_per_child(context: str, tmp: Path) -> Outcome:
    """Timed: 40 tasks, 2 workers, maxtasksperchild=1 (every task is a new worker)."""
    tasks = 40
    async with aiomp.Pool(2, context=context, maxtasksperchild=1) as pool:
        t0 = now()
        results = await pool.map(functools.partial(record, str(tmp)), range(tasks), chunksize=1)
        took = now() - t0
    out = Outcome(took, "nothing", count=took * 1000 * pool.processes / tasks)
    out.expect([value for _, value in results] == [2 * i for i in range(tasks)], "wrong results")
    out.expect(runs(tmp) == {str(i): 1 for i in range(tasks)}, "some task did not run exactly once")
    pids = len({pid for pid, _ in results})
    out.expect(pids == tasks, f"{tasks} tasks ran on {pids} workers")
    return out


# -- the faults run in a victim process: (loop, context) -> Outcome -------------------------


async def victim_main(context: str) -> None:
    lock = aiomp.Lock()  # a named semaphore: the resource tracker would complain if it leaked
    async with lock, aiomp.Pool(2, context=context) as pool:
        await pool.map(stall, [0, 1], chunksize=1)


async def peer_victim_main(peer: str, context: str) -> None:
    """The same two tasks on a peer's 2-worker pool, driven from asyncio the usual way."""
    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context(context)
    if peer == "aiomultiprocess":
        import aiomultiprocess  # type: ignore[import-untyped, unused-ignore]

        aiomultiprocess.set_start_method(context)
        ctx = aiomultiprocess.core.get_context()
    with ctx.Lock():  # a named semaphore of the same context, as in aiomp's victim
        if peer == "mp.Pool":
            with ctx.Pool(2) as pool:
                results = [pool.apply_async(stall, (kind,)) for kind in (0, 1)]
                await asyncio.gather(*(loop.run_in_executor(None, result.get) for result in results))
        elif peer == "PPE":
            with ProcessPoolExecutor(2, mp_context=ctx) as executor:
                await asyncio.gather(*(loop.run_in_executor(executor, stall, kind) for kind in (0, 1)))
        else:  # one task per worker: with its default of 16, one worker would take both
            async with aiomultiprocess.Pool(processes=2, childconcurrency=1) as pool:
                await pool.map(astall, [0, 1])


def run_victim(loop: str, context: str, peer: str = "aiomp") -> None:
    signal.signal(signal.SIGUSR1, lambda *_: os._exit(3))  # how the "os._exit" row ends it
    if peer == "aiomp":
        anyio.run(functools.partial(victim_main, context), **backend(loop))
    else:
        asyncio.run(peer_victim_main(peer, context))


class Victim:
    """``--victim`` in its own session (as a shell runs a program), once both workers are busy."""

    def __init__(self, loop: str, context: str, peer: str = "aiomp") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.faults", "--victim", loop, context, "--victim-peer", peer],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.workers: list[int] = []
        self.names: list[str] = []  # the workers' process names: they tell the start method
        assert self.proc.stdout is not None
        fd, text, deadline = self.proc.stdout.fileno(), b"", now() + 30
        while text.count(b"\n") < 2 and now() < deadline:
            if select.select([fd], [], [], max(0.0, deadline - now()))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                text += chunk
        lines = [line.split() for line in text.decode().splitlines()]
        self.workers, self.names = [int(line[1]) for line in lines], [line[2] for line in lines]
        if len(self.workers) != 2:
            err = self.cleanup()
            raise RuntimeError(f"the victim did not start 2 workers: {text!r}, stderr {err[-500:]!r}")
        time.sleep(0.2)  # both are inside their task now

    def wait_gone(self, limit: float) -> float | None:
        """Seconds until every worker has exited, None if some still run after ``limit``."""
        start = now()
        while any(alive(pid) for pid in self.workers):
            if now() - start > limit:
                return None
            time.sleep(0.002)
        return now() - start

    def finish(self, limit: float = 15.0) -> tuple[int | None, str]:
        try:
            _, err = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            return None, f"(still running after {limit:.0f} s)"
        return self.proc.returncode, err

    def cleanup(self) -> str:
        """Kill what is left of the victim; its stderr, if still unread."""
        for pid in self.workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # the victim, its forkserver, resource tracker, workers
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
            return self.proc.communicate(timeout=5)[1] or ""
        return ""


EXIT_CODES = {"SIGKILL": -signal.SIGKILL, "SIGTERM": -signal.SIGTERM, "os._exit": 3, "SIGINT": -signal.SIGINT}


def end(victim: Victim, how: str) -> None:
    if how == "SIGINT":
        os.killpg(victim.proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    else:
        os.kill(victim.proc.pid, signal.SIGUSR1 if how == "os._exit" else getattr(signal, how))


def parent_dies(loop: str, context: str, how: str) -> Outcome:
    """Timed: from the kill (or Ctrl-C) until every worker pid has exited."""
    victim = Victim(loop, context)
    try:
        end(victim, how)
        took = victim.wait_gone(2 * EXIT_LIMIT)
        code, err = victim.finish()
    finally:
        victim.cleanup()
    out = Outcome(math.nan if took is None else took, f"exit {code}")
    out.expect(took is not None and took < EXIT_LIMIT, f"workers outlived the parent by {took or '> 10'} s")
    out.expect(code == EXIT_CODES[how], f"the parent's exit code was {code}")
    if how == "SIGINT":
        interrupts = len(re.findall(r"^KeyboardInterrupt\b", err, re.M))
        out.saw += f", {interrupts} KeyboardInterrupt"
        last = err.strip().splitlines()[-1:] or [""]
        out.expect(interrupts == 1, f"{interrupts} KeyboardInterrupt in stderr (last line {last[0]!r})")
        out.expect("aiomp-worker" not in err and "Process " not in err, "a worker wrote to stderr")
        out.expect("resource_tracker" not in err and "leaked" not in err, "the resource tracker complained")
    return out


@dataclass
class PeerOutcome:
    """``--peers``: what is left of one victim, and what its stderr showed (Ctrl-C)."""

    seconds: float = math.nan  # until every worker had exited; nan if one still ran after EXIT_LIMIT
    alive: int = 0  # workers still running EXIT_LIMIT after the kill
    tracebacks: int = 0  # "Traceback (most recent call last):" lines in the victim's stderr
    reports: int = 0  # how many reports they make (a chained exception is one report of several tracebacks)
    from_worker: bool = False  # one came from a worker ("Process SpawnPoolWorker-1:", a frame of stall)
    tracker: bool = False  # the resource tracker complained
    hung: bool = False  # the victim itself still ran once its workers were gone (or EXIT_LIMIT later)
    names: list[str] = field(default_factory=list)  # the workers' process names
    error: str = ""


def peer_dies(peer: str, context: str, how: str) -> PeerOutcome:
    """``parent_dies`` for any library, on asyncio; bounded by EXIT_LIMIT, never raises."""
    out = PeerOutcome()
    try:
        victim = Victim("asyncio", context, peer)
        out.names = victim.names
        code, err = None, ""
        try:
            end(victim, how)
            took = victim.wait_gone(EXIT_LIMIT)
            out.seconds, out.alive = math.nan if took is None else took, sum(map(alive, victim.workers))
            if how == "SIGINT" and took is not None:
                code, err = victim.finish(EXIT_LIMIT)  # the victim and its resource tracker have their say
            out.hung = how == "SIGINT" and victim.proc.poll() is None
        finally:
            rest = victim.cleanup()  # the workers by pid, then the victim's process group
        err = err if code is not None else rest
        out.tracebacks = len(re.findall(r"^Traceback \(most recent call last\):", err, re.M))
        out.reports = out.tracebacks - len(re.findall(r"^(During handling of|The above exception was)", err, re.M))
        out.from_worker = re.search(r"^Process \S+:$|aiomp-worker|, in a?stall$", err, re.M) is not None
        out.tracker = "resource_tracker" in err or "leaked" in err
    except Exception as exc:
        out.error = describe(exc)
    for pid in leftovers(3.0):
        out.error = out.error or "a process outlived the victim's cleanup (killed)"
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return out


# -- the harness ---------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    timed: str
    run: Callable[..., Any]  # async (context, tmp) in this process, or sync (loop, context) for a victim
    in_victim: bool = False
    limit: float = TRIAL_LIMIT
    note: str = ""  # how the verdict reports Outcome.count: "{} attempts"


FAULTS = [
    Fault("1 worker SIGKILLed while idle", "kill -> task on replacement", idle_kill),
    Fault("2 worker SIGKILLed in a task", "kill -> task on replacement", busy_kill, note="{} handed, not started"),
    Fault("3 task segfaults", "call -> task on replacement", segfaults),
    Fault("4 task calls os._exit(3)", "call -> task on replacement", exits),
    Fault("5 task exceeds RLIMIT_AS", "call -> task on replacement", out_of_memory),
    Fault("6 apply(timeout=0.05)", "call -> task on replacement", times_out),
    Fault("7 worker dies starting, once", "kill -> task on replacement", dies_starting, note="{} starts"),
    Fault("8 initializer always raises", "Pool() -> BrokenPoolError", init_fails, note="{} attempts"),
    Fault(
        "9 maxtasksperchild=1, 40 tasks",
        "map of 40 tasks",
        one_task_per_child,
        limit=3 * TRIAL_LIMIT,
        note="{} ms per task and worker",
    ),
    *(
        Fault(f"10 parent {how}", "kill -> all workers gone", functools.partial(parent_dies, how=how), in_victim=True)
        for how in ("SIGKILL", "SIGTERM", "os._exit")
    ),
    Fault(
        "11 Ctrl-C (SIGINT to group)",
        "SIGINT -> all workers gone",
        functools.partial(parent_dies, how="SIGINT"),
        in_victim=True,
    ),
]


def backend(loop: str) -> dict[str, Any]:
    if loop == "trio":
        return {"backend": "trio"}
    if loop == "uvloop":
        import uvloop

        return {"backend": "asyncio", "backend_options": {"loop_factory": uvloop.new_event_loop}}
    return {"backend": "asyncio"}


def describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def bounded(fault: Fault, context: str, tmp: Path) -> Outcome:
    with anyio.move_on_after(fault.limit) as scope:
        return await fault.run(context, tmp)
    assert scope.cancelled_caught
    return Outcome(math.nan, "hung", [f"no outcome within {fault.limit:.0f} s"])


def trial(fault: Fault, loop: str, context: str) -> Outcome:
    """One fault, once, on a fresh event loop (and a fresh pool or victim); never raises."""
    try:
        if fault.in_victim:
            out = fault.run(loop, context)
        else:
            with tempfile.TemporaryDirectory(prefix="aiomp-faults-") as tmp:
                out = anyio.run(functools.partial(bounded, fault, context, Path(tmp)), **backend(loop))
    except Exception as exc:
        out = Outcome(math.nan, "error", [describe(exc)])
    left = leftovers(3.0)
    if left:
        out.problems.append(f"{len(left)} worker(s) alive 3 s after the pool exited (killed)")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return out


def leftovers(limit: float) -> list[int]:
    """Our descendants still running after ``limit`` s, except the forkserver and resource tracker."""
    from multiprocessing import forkserver, resource_tracker

    keep = {
        getattr(forkserver._forkserver, "_forkserver_pid", None),  # type: ignore[attr-defined]
        getattr(resource_tracker._resource_tracker, "_pid", None),  # type: ignore[attr-defined]
    }
    deadline = now() + limit
    while True:
        left = [p.pid for p in psutil.Process().children(recursive=True) if p.pid not in keep and alive(p.pid)]
        if not left or now() > deadline:
            return left
        time.sleep(0.02)


def cell(outcomes: list[Outcome] | list[PeerOutcome]) -> str:
    times = [o.seconds * 1000 for o in outcomes if not math.isnan(o.seconds)]
    if not times:
        return "-"
    digits = 1 if max(times) < 10 else 0
    return f"{statistics.median(times):.{digits}f} / {max(times):.{digits}f}"


def share(flags: list[bool], text: str) -> list[str]:
    """``[text]`` if every trial had it, ``[text (k of n)]`` if some did, else ``[]``."""
    k = sum(flags)
    return [] if not k else [text if k == len(flags) else f"{text} ({k} of {len(flags)})"]


def span(values: list[int]) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}-{max(values)}"


def peer_cell(outcomes: list[PeerOutcome], ctrl_c: bool) -> str:
    ran = [o for o in outcomes if not o.error]
    parts = [f"{cell(ran)} ms"] if any(not math.isnan(o.seconds) for o in ran) else []
    stuck = [o.alive for o in ran if math.isnan(o.seconds)]
    if stuck:
        parts += share([math.isnan(o.seconds) for o in ran], f"alive after {EXIT_LIMIT:.0f} s: {span(stuck)} of 2")
    if ctrl_c and ran:
        tracebacks, reports = [o.tracebacks for o in ran], [o.reports for o in ran]
        chains = f" ({span(reports)} chain)" if tracebacks != reports else ""
        parts.append(f"{span(tracebacks)} Traceback{chains}")
        parts += share([o.from_worker for o in ran], "from a worker")
        parts += share([o.tracker for o in ran], "tracker complained")
        parts += share([o.hung for o in ran], "parent hung")
    return "; ".join(parts + share([bool(o.error) for o in outcomes], "error"))


def compare_peers(faults: list[Fault], contexts: list[str], repeat: int) -> int:
    """``--peers``: rows 10 and 11 on asyncio, aiomp and its peers taking turns; one table per row."""
    rows = [f for f in faults if f.in_victim]
    hows = {f.name: getattr(f.run, "keywords", {})["how"] for f in rows}  # parent_dies(how=...)
    results: dict[tuple[str, str, str], list[PeerOutcome]] = {
        (f.name, peer, context): [] for f in rows for peer in PEERS for context in contexts
    }
    started = now()
    for context in contexts:
        for fault in rows:
            for _ in range(repeat):
                for peer in PEERS:
                    results[fault.name, peer, context].append(peer_dies(peer, context, hows[fault.name]))
            for peer in PEERS:
                text = peer_cell(results[fault.name, peer, context], hows[fault.name] == "SIGINT")
                print(f"  [asyncio/{context}] {fault.name:<28} {peer:<15} {text}", file=sys.stderr, flush=True)
    outcomes = [o for row in results.values() for o in row]
    print(
        f"\n## Faults with peers: asyncio, median / max ms of {repeat} "
        f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, {now() - started:.0f} s)\n"
    )
    names = {
        peer: " / ".join(
            "|".join(sorted({re.sub(r"-\d+$", "", n) for f in rows for o in results[f.name, peer, c] for n in o.names}))
            for c in contexts
        )
        for peer in PEERS
    }
    print("Workers' process names (" + " / ".join(contexts) + "): " + "; ".join(f"{p} {n}" for p, n in names.items()))
    for fault in rows:
        print(f"\n### {fault.name}: {fault.timed}\n")
        print("| library | " + " | ".join(f"asyncio/{c}" for c in contexts) + " |")
        print("|---|" + "---|" * len(contexts))
        for peer in PEERS:
            cells = [peer_cell(results[fault.name, peer, c], hows[fault.name] == "SIGINT") for c in contexts]
            print(f"| {peer} | " + " | ".join(cells) + " |")
    errors = dict.fromkeys(o.error for o in outcomes if o.error)
    for error in errors:
        print(f"error: {error}")
    return 1 if errors else 0


def verdict(fault: Fault, results: dict[str, list[Outcome]]) -> str:
    outcomes = [o for row in results.values() for o in row]
    saw = ", ".join(dict.fromkeys(o.saw for o in outcomes))
    counts = [o.count for o in outcomes if o.count is not None]
    notes = ""
    if fault.note and counts:
        low, high = f"{min(counts):.0f}", f"{max(counts):.0f}"
        notes = fault.note.format(low if low == high else f"{low}-{high}")
    differed: dict[str, list[str]] = {}
    for combo, row in results.items():
        for i, o in enumerate(row):
            for problem in o.problems:
                differed.setdefault(problem, []).append(f"{combo}#{i + 1}")
    extra = f"; {notes}" if notes else ""
    if not differed:
        return f"{fault.name}: OK (saw {saw}{extra})"
    details = "; ".join(f"{p} [{', '.join(where)}]" for p, where in differed.items())
    return f"{fault.name}: DIFFERS: {details} (saw {saw}{extra})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="inject faults into an aiomp pool: recovery time and outcome")
    parser.add_argument("--loop", choices=[*LOOPS, "all"], default="all")
    parser.add_argument("--context", choices=[*CONTEXTS, "all"], default="all")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", help="comma-separated row numbers, e.g. 1,2,10")
    parser.add_argument("--peers", action="store_true", help="rows 10 and 11 on asyncio, aiomp and its peers")
    parser.add_argument("--victim", nargs=2, metavar=("LOOP", "CONTEXT"), help=argparse.SUPPRESS)
    parser.add_argument("--victim-peer", choices=PEERS, default="aiomp", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.victim:
        loop, context = options.victim
        run_victim(loop, context, options.victim_peer)
        return 0
    loops = LOOPS if options.loop == "all" else [options.loop]
    contexts = CONTEXTS if options.context == "all" else [options.context]
    faults = FAULTS
    if options.only:
        wanted = set(options.only.split(","))
        faults = [f for f in FAULTS if f.name.split()[0] in wanted]
    if options.peers:
        return compare_peers(faults, contexts, options.repeat)
    combos = [(loop, context) for loop in loops for context in contexts]
    results: dict[str, dict[str, list[Outcome]]] = {f.name: {} for f in faults}
    started = now()
    for loop, context in combos:
        combo = f"{loop}/{context}"
        for fault in faults:
            row = results[fault.name].setdefault(combo, [])
            for _ in range(options.repeat):
                row.append(trial(fault, loop, context))
            status = "ok" if not any(o.problems for o in row) else "; ".join(row[-1].problems or ["differs"])
            print(f"  [{combo}] {fault.name:<34} {cell(row):>16} ms  {status}", file=sys.stderr, flush=True)
    names = [f"{loop}/{context}" for loop, context in combos]
    print(
        f"\n## Faults: time to recover, median / max ms of {options.repeat} "
        f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, {now() - started:.0f} s)\n"
    )
    print("| fault | timed | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for fault in faults:
        print(f"| {fault.name} | {fault.timed} | " + " | ".join(cell(results[fault.name][n]) for n in names) + " |")
    print()
    for fault in faults:
        print(verdict(fault, results[fault.name]))
    return 0 if all(not o.problems for r in results.values() for row in r.values() for o in row) else 1


if __name__ == "__main__":
    # Run as benchmarks.faults, not __main__, so that the functions the workers run pickle by that name.
    from benchmarks.faults import main as _main

    raise SystemExit(_main())
