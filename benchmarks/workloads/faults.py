"""faults: inject faults into a real pool; time the recovery and check the outcome.

**recovery** (aiomp only: the peers have no such guarantees to check): each fault, in a fresh
pool on a fresh event loop, ``fault_trials`` times, the faults taking turns. *Time to recover*
runs from the moment the fault is injected (the kill is sent, the failing call is made) until the
pool has run a new task on a **replacement** worker; the pool has one worker wherever it can, so
that task can only run on the replacement (its pid is checked). *What was lost*: each task records
every run of itself in a file; a task that neither returned nor raised, or ran twice, is a problem.

**exit**: the parent dies (SIGKILL, SIGTERM, ``os._exit``) or gets Ctrl-C (SIGINT to its process
group) while both workers are busy, one inside a C call that holds the GIL: how long until every
worker is gone, for aiomp and its peers (``_victim.py``). A worker counts as exited once it is gone
or a zombie.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psutil

from benchmarks import _work
from benchmarks._config import Config
from benchmarks._harness import Ctx, describe, median, rows
from benchmarks._report import fmt_fixed, fmt_text
from benchmarks._types import Cell, Metric, SummaryRow, WorkloadResult

ROOT = Path(__file__).resolve().parent.parent.parent
EXIT_LIMIT = 5.0  # the workers of a dead or interrupted parent must be gone by then
now = time.monotonic  # CLOCK_MONOTONIC: one clock for every process (row 7 stamps in the worker)


# --- recovery: outcomes --------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float = math.nan  # the timed figure
    saw: str = "nothing"  # what the user saw
    problems: list[str] = field(default_factory=list)  # how it differed from the expected outcome
    count: float | None = None  # a figure the row's note reports (attempts, ms per task...)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def seen(exc: BaseException | None) -> str:
    """An exception as the user sees it: type, exit code, cause."""
    import aiomp

    if exc is None:
        return "nothing"
    text = type(exc).__name__
    if isinstance(exc, aiomp.WorkerDiedError):
        text += f"({exc.exitcode})"
    if exc.__cause__ is not None and not isinstance(exc.__cause__, aiomp.RemoteTraceback):
        text += f" from {type(exc.__cause__).__name__}"
    return text


async def attempt(call: Awaitable[Any]) -> tuple[Any, BaseException | None]:
    try:
        return await call, None
    except Exception as exc:
        return None, exc


def alive(pid: int) -> bool:
    """Running (a zombie counts as exited)."""
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def runs(directory: Path) -> dict[str, int]:
    """How many times each recorded item ran."""
    return {path.name: len(path.read_text().splitlines()) for path in directory.iterdir()}


async def replaced(pool: Any, old: int, out: Outcome, t0: float) -> None:
    """Run a task on the replacement of worker ``old``; the time since ``t0`` is the recovery."""
    pid = await pool.apply(os.getpid)
    out.seconds = now() - t0
    out.expect(pid != old, "the new task ran on the old worker")
    out.expect(not alive(old), f"the old worker {old} is still alive")


# --- recovery: the faults, (pool factory, temp dir) -> Outcome ------------------------------------

Pool = Callable[..., Any]  # aiomp.Pool with the start method filled in


async def idle_kill(pool_of: Pool, tmp: Path) -> Outcome:
    async with pool_of(1) as pool:
        old = await pool.apply(os.getpid)
        t0 = now()
        os.kill(old, signal.SIGKILL)
        out = Outcome()
        await replaced(pool, old, out, t0)
        return out


async def busy_kill(pool_of: Pool, tmp: Path) -> Outcome:
    """Task 0 runs (10 s) when its worker is killed; tasks 1-4 were handed to it, not started."""
    stamps: list[float] = []
    async with pool_of(1) as pool:
        old = await pool.apply(os.getpid)  # also teaches the pool that tasks are short: it hands out more
        running = pool.apply_async(_work.record, (str(tmp), 0, 10.0))
        queued = [
            pool.apply_async(_work.record, (str(tmp), i), callback=lambda _: stamps.append(now())) for i in (1, 2, 3, 4)
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


async def task_dies(
    func: Callable[..., Any], args: tuple[Any, ...], expected: str, pool_of: Pool, tmp: Path
) -> Outcome:
    """A task that kills its own worker: the call fails (``expected``: a regex), the next task runs on a replacement."""
    async with pool_of(1) as pool:
        old = await pool.apply(os.getpid)
        t0 = now()
        _, exc = await attempt(pool.apply(func, args, timeout=0.05) if func is time.sleep else pool.apply(func, args))
        out = Outcome(saw=seen(exc))
        out.expect(re.fullmatch(expected, out.saw) is not None, f"the call raised {out.saw}")
        await replaced(pool, old, out, t0)
        if func is _work.exhaust_memory:
            limit = await pool.apply(_work.address_space_limit)
            out.expect(limit == resource.getrlimit(resource.RLIMIT_AS), f"the replacement's RLIMIT_AS is {limit}")
        return out


async def dies_starting(pool_of: Pool, tmp: Path) -> Outcome:
    """The first worker SIGKILLs itself in the initializer; t0 is its own timestamp."""
    log = tmp / "init"
    async with pool_of(1, initializer=_work.init_die_once, initargs=(str(tmp / "token"), str(log))) as pool:
        pid, exc = await attempt(pool.apply(os.getpid))
        recovered = now()
    lines = [line.split() for line in log.read_text().splitlines()]
    killed = [float(line[2]) for line in lines if line[1] == "killed"]
    out = Outcome(recovered - killed[0] if killed else math.nan, seen(exc), count=len(lines))
    out.expect(exc is None, f"the first call raised {out.saw}")
    out.expect(len(lines) == 2 and len(killed) == 1, f"initializer ran {[line[1] for line in lines]}")
    out.expect(pid == int(lines[-1][0]), "the task did not run on the replacement")
    return out


async def init_fails(pool_of: Pool, tmp: Path) -> Outcome:
    """Timed: from creating the pool until the caller gets BrokenPoolError."""
    import aiomp

    log = tmp / "init"
    t0 = now()
    exc: BaseException | None = None
    try:
        async with pool_of(1, initializer=_work.init_raise, initargs=(str(log),)) as pool:
            await pool.apply(os.getpid)
    except Exception as error:
        exc = error
    attempts = len(log.read_text().splitlines()) if log.exists() else 0
    out = Outcome(now() - t0, seen(exc), count=attempts)
    out.expect(isinstance(exc, aiomp.BrokenPoolError), f"the call raised {out.saw}")
    out.expect(isinstance(getattr(exc, "__cause__", None), _work.InitError), "__cause__ is not the InitError")
    out.expect(1 <= attempts <= 5, f"{attempts} initializer attempts")
    return out


async def one_task_per_child(pool_of: Pool, tmp: Path) -> Outcome:
    """Timed: 40 tasks, 2 workers, maxtasksperchild=1 (every task is a new worker)."""
    tasks = 40
    async with pool_of(2, maxtasksperchild=1) as pool:
        t0 = now()
        results = await pool.map(functools.partial(_work.record, str(tmp)), range(tasks), chunksize=1)
        took = now() - t0
    out = Outcome(took, count=took * 1000 * 2 / tasks)
    out.expect([value for _, value in results] == [2 * i for i in range(tasks)], "wrong results")
    out.expect(runs(tmp) == {str(i): 1 for i in range(tasks)}, "some task did not run exactly once")
    pids = len({pid for pid, _ in results})
    out.expect(pids == tasks, f"{tasks} tasks ran on {pids} workers")
    return out


@dataclass
class Fault:
    timed: str
    expected: str
    run: Callable[[Pool, Path], Awaitable[Outcome]]
    note: str = ""  # how Outcome.count is reported: "{} attempts"
    limit: float = 60.0


FAULTS = {
    "1 worker SIGKILLed while idle": Fault("kill -> task on replacement", "nothing seen", idle_kill),
    "2 worker SIGKILLed in a task": Fault(
        "kill -> first queued task done", "WorkerDiedError(-9); the 4 queued run once", busy_kill, "{} handed"
    ),
    "3 task segfaults": Fault(
        "call -> task on replacement",
        "WorkerDiedError(-11)",
        functools.partial(task_dies, _work.segfault, (), r"WorkerDiedError\(-11\)"),
    ),
    "4 task calls os._exit(3)": Fault(
        "call -> task on replacement",
        "WorkerDiedError(3)",
        functools.partial(task_dies, _work.exit_3, (), r"WorkerDiedError\(3\)"),
    ),
    "5 task exceeds RLIMIT_AS": Fault(
        "call -> task on replacement",
        "WorkerDiedError from MemoryError",
        functools.partial(
            task_dies, _work.exhaust_memory, (os.getpid(), 64 << 20), r"WorkerDiedError\(-?\d+\) from MemoryError"
        ),
    ),
    "6 apply(timeout=0.05)": Fault(
        "call -> task on replacement", "TimeoutError", functools.partial(task_dies, time.sleep, (10,), "TimeoutError")
    ),
    "7 worker dies starting, once": Fault(
        "kill -> task on replacement", "nothing seen; 2 starts", dies_starting, "{} starts"
    ),
    "8 initializer always raises": Fault(
        "Pool() -> BrokenPoolError", "BrokenPoolError from the InitError", init_fails, "{} attempts"
    ),
    "9 maxtasksperchild=1, 40 tasks": Fault(
        "map of 40 tasks", "each task once, on its own worker", one_task_per_child, "{} ms per task", 180.0
    ),
}
RECOVERY_METRICS = [
    Metric("median_ms", "median ms", None, fmt_fixed(1)),
    Metric("max_ms", "max ms", None, fmt_fixed(1)),
    Metric("timed", "timed", None, fmt_text),
    Metric("saw", "saw", None, fmt_text),
    Metric("verdict", "verdict", None, fmt_text),
]


async def _recover(ctx: Ctx) -> None:
    import aiomp

    fault, cell = FAULTS[ctx.cell.lib], ctx.cell
    pool_of = functools.partial(aiomp.Pool, context=ctx.cfg.start_method)
    with tempfile.TemporaryDirectory(prefix="aiomp-faults-") as tmp:
        with anyio.move_on_after(fault.limit) as scope:
            out = await fault.run(pool_of, Path(tmp))
        if scope.cancelled_caught:
            out = Outcome(saw="hung", problems=[f"no outcome within {fault.limit:.0f} s"])
    cell.samples.setdefault("seconds", []).append(out.seconds)
    cell.samples.setdefault("count", []).append(out.count if out.count is not None else math.nan)
    cell.notes += [f"saw {out.saw}", *(f"differs: {p}" for p in out.problems)]


def _recovered(row: Cell) -> None:
    fault = FAULTS[row.lib]
    times = [s * 1e3 for s in row.samples.get("seconds", []) if not math.isnan(s)]
    counts = [c for c in row.samples.get("count", []) if not math.isnan(c)]
    if times:
        row.values.update(median_ms=median(times), max_ms=max(times))
    row.values["timed"] = fault.timed
    row.values["saw"] = ", ".join(n[4:] for n in row.notes if n.startswith("saw "))
    row.notes = [n for n in row.notes if not n.startswith("saw ")]
    ok = not row.error and not any(n.startswith("differs") for n in row.notes)
    row.values["verdict"] = "OK" if ok else "DIFFERS"
    if fault.note and counts:
        low, high = f"{min(counts):.0f}", f"{max(counts):.0f}"
        row.notes.append(fault.note.format(low if low == high else f"{low}-{high}"))


def _recovery_summary(result: WorkloadResult) -> list[SummaryRow]:
    return [
        SummaryRow(
            "recovery",
            cell.lib,
            f"{fmt_fixed(1)(cell.values.get('median_ms'))} ms; {cell.values.get('saw')}",
            "-",
            "-",
            FAULTS[cell.lib].expected,
            cell.values.get("verdict") == "OK",
        )
        for cell in result.cells
    ]


def run_recovery(cfg: Config) -> WorkloadResult:
    cells = rows(cfg, list(FAULTS), _recover, "recovery", rounds=cfg.fault_trials, finish=_recovered, timeout=200)
    notes = [
        f"aiomp only; {cfg.fault_trials} trial(s) per fault, each a fresh pool on a fresh event loop "
        f"({cfg.loop}, {cfg.start_method}), the faults taking turns; a row differs when any trial did"
    ]
    title = "faults: time to recover and what the user saw"
    return WorkloadResult("recovery", title, RECOVERY_METRICS, cells, notes, summarize=_recovery_summary)


# --- exit: the parent goes, its workers must follow ------------------------------------------------

EXIT_LIBS = ["aiomp", "mp.Pool", "PPE", "aiomultiprocess", "trio-parallel"]
HOWS = ["SIGKILL", "SIGTERM", "os._exit", "SIGINT"]
EXIT_CODES = {"SIGKILL": -signal.SIGKILL, "SIGTERM": -signal.SIGTERM, "os._exit": 3, "SIGINT": -signal.SIGINT}


class Victim:
    """``python -m benchmarks._victim`` in its own session (as a shell runs a program), once both workers are busy."""

    def __init__(self, loop: str, context: str, library: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._victim", loop, context, library],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        fd, text, deadline = self.proc.stdout.fileno(), b"", now() + 30
        while text.count(b"\n") < 2 and now() < deadline:
            if select.select([fd], [], [], max(0.0, deadline - now()))[0]:
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                text += chunk
        self.workers = [int(line.split()[1]) for line in text.decode().splitlines()]
        if len(self.workers) != 2:
            err = self.cleanup()
            raise RuntimeError(f"the victim did not start 2 workers: {text!r}, stderr {err[-500:]!r}")
        time.sleep(0.2)  # both are inside their task now

    def end(self, how: str) -> None:
        if how == "SIGINT":
            os.killpg(self.proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
        else:
            os.kill(self.proc.pid, signal.SIGUSR1 if how == "os._exit" else getattr(signal, how))

    def wait_gone(self, limit: float) -> float | None:
        """Seconds until every worker has exited, None if some still run after ``limit``."""
        start = now()
        while any(alive(pid) for pid in self.workers):
            if now() - start > limit:
                return None
            time.sleep(0.002)
        return now() - start

    def finish(self, limit: float) -> tuple[int | None, str]:
        try:
            _, err = self.proc.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            return None, ""
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


def parent_ends(cfg: Config, library: str, how: str, cell: Cell) -> None:
    """One victim, ended by ``how``: seconds until its workers are gone (blocking; bounded)."""
    code, err, hung = None, "", False
    victim = Victim(cfg.loop, cfg.start_method, library)
    try:
        victim.end(how)
        took = victim.wait_gone(EXIT_LIMIT)
        code, err = victim.finish(EXIT_LIMIT) if took is not None else (None, "")
        hung = victim.proc.poll() is None
    finally:
        err = victim.cleanup() or err
    if took is None:
        cell.notes.append(f"{how}: workers alive {EXIT_LIMIT:.0f} s later")
    else:
        cell.samples.setdefault(f"{how}_s", []).append(took)
    if hung:
        cell.notes.append(f"{how}: the parent still ran once its workers were gone")
    elif code is not None and code != EXIT_CODES[how]:
        cell.notes.append(f"{how}: exit code {code}")
    if how == "SIGINT":
        tracebacks = len(re.findall(r"^Traceback \(most recent call last\):", err, re.M))
        reports = tracebacks - len(re.findall(r"^(During handling of|The above exception was)", err, re.M))
        worker = re.search(r"^Process \S+:$|aiomp-worker|, in a?stall$", err, re.M) is not None
        tracker = "resource_tracker" in err or "leaked" in err
        text = f"{reports} report(s)" + ", from a worker" * worker + ", tracker complained" * tracker
        cell.values["ctrl_c"] = text
        cell.values["ctrl_c_ok"] = text == "1 report(s)"


async def _exits(ctx: Ctx) -> None:
    for how in HOWS:
        try:
            await anyio.to_thread.run_sync(parent_ends, ctx.cfg, ctx.cell.lib, how, ctx.cell)
        except Exception as exc:
            ctx.cell.notes.append(f"{how}: {describe(exc)}")


def _exited(row: Cell) -> None:
    for how in HOWS:
        if row.samples.get(f"{how}_s"):
            row.values[f"{how}_ms"] = median(row.samples[f"{how}_s"]) * 1e3


def _exit_summary(result: WorkloadResult) -> list[SummaryRow]:
    cell = result.cell("aiomp")
    if cell is None:
        return []
    gone = [cell.values.get(f"{how}_ms") for how in HOWS]
    met = all(isinstance(v, float) and v < EXIT_LIMIT * 1e3 for v in gone) and bool(cell.values.get("ctrl_c_ok"))
    shown = " / ".join(fmt_fixed(0)(v) for v in gone) + f" ms; Ctrl-C: {cell.values.get('ctrl_c')}"
    target = "all < 5 s; Ctrl-C: one report, none from a worker"
    return [SummaryRow("exit", "workers gone after " + " / ".join(HOWS), shown, "-", "-", target, met)]


def run_exit(cfg: Config) -> WorkloadResult:
    metrics = [Metric(f"{how}_ms", f"{how} ms", "lower", fmt_fixed(0)) for how in HOWS]
    metrics.append(Metric("ctrl_c", "Ctrl-C stderr", None, fmt_text))
    cells = rows(cfg, EXIT_LIBS, _exits, "exit", rounds=cfg.fault_trials, finish=_exited, timeout=400)
    notes = [
        f"ms from the parent's end until both workers are gone (median of {cfg.fault_trials}); the parent holds a "
        "lock of its library; Ctrl-C = SIGINT to the victim's process group, its stderr read: tracebacks, one "
        "from a worker, the resource tracker complaining",
    ]
    title = "the parent dies or gets Ctrl-C: time until its workers are gone"
    return WorkloadResult("exit", title, metrics, cells, notes, summarize=_exit_summary)


WORKLOADS = {"recovery": run_recovery, "exit": run_exit}
