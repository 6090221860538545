"""The examples run as a user would run them, and print what they promise.

They run in the environment a user has: without ``PYTHONUNBUFFERED`` (which some shells
and CI runners set), so that a line the parent forgot to flush comes out where a user
piping the output would see it, not where a terminal would.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LOOPS = ["asyncio", "uvloop", "trio"]
CONTEXTS = ["spawn", "forkserver"]


def _user_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    return env


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a program to its end; on timeout it is killed (its workers die with it)."""
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=_user_env(), cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return done


def test_every_example_is_tested() -> None:
    """A new example needs a test here."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == ["pool_basics.py", "primitives.py", "worker_logging.py"]


@pytest.mark.parametrize("loop", LOOPS)
def test_pool_basics_example(loop: str) -> None:
    done = _run([str(EXAMPLES / "pool_basics.py"), loop])
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[:7] == [
        "a pool of 2 worker processes",
        "apply: 1024",
        "apply with kwds: 81",
        "map: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "starmap: [8, 9, 1000]",
        "map over an async source: [0, 1, 4, 9, 16]",
        "imap: stopped at 64 without squaring a million numbers",
    ]
    unordered = re.fullmatch(r"imap_unordered \(completion order\): \[([\d, ]+)\]", lines[7])
    assert unordered is not None, lines[7]
    assert sorted(int(x) for x in unordered.group(1).split(", ")) == [x * x for x in range(8)]
    # The callback runs on the loop before the awaited result is handed back.
    assert lines[8:11] == [
        "callback got 144",
        "apply_async: 144 ready: True successful: True",
        "lambda and closure: [101, 102, 103]",
    ]
    names = str([f"FILE{i}" for i in range(8)])
    assert re.fullmatch(rf"async def: {re.escape(names)} in \d+\.\d\d s \(each one sleeps 0\.2 s\)", lines[11])
    assert lines[12:16] == [
        "ValueError: -1 is negative (worker traceback attached: RemoteTraceback)",
        "timeout: TimeoutError after 0.5 s, the sleeping worker was stopped",
        "WorkerDiedError: the worker process running this task exited with code 3 (exitcode 3)",
        "the pool goes on: 49",
    ]
    # Workers replaced: the one stopped by the timeout and the one that crashed, and one
    # more for each worker that was in the middle of an imap chunk when the tour left that
    # imap early (a running chunk is stopped by replacing its worker; on a loaded machine
    # that happens).
    assert re.fullmatch(
        r"PoolStatistics\(processes=2, workers_alive=2, tasks_queued=0, tasks_running=0, "
        r"tasks_completed=\d+, workers_restarted=[234]\)",
        lines[16],
    ), lines[16]
    assert len(lines) == 17


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("loop", LOOPS)
def test_primitives_example(loop: str, context: str) -> None:
    done = _run([str(EXAMPLES / "primitives.py"), "--loop", loop, "--context", context], timeout=60)
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    hello = re.fullmatch(r"hello bob from process (\d+)", lines[0])
    assert hello is not None and int(hello.group(1)) != os.getpid(), lines[0]
    assert lines[1:5] == [
        "exit code 0",
        "squares [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]",
        "echo: hello",
        "parent holds the lock while the workers start",  # before any worker gets the lock
    ]
    assert sorted(lines[5:8]) == [f"worker {i} has the lock" for i in range(3)]
    assert lines[8] == "total 800 hits per slot 600"
    assert re.fullmatch(r"event set after \d+\.\d\d s", lines[9]), lines[9]
    assert len(lines) == 10


def _usable_cpus() -> int:
    count = getattr(os, "process_cpu_count", None)
    return int(count() or 1) if count is not None else len(os.sched_getaffinity(0))


def _imported(importtime: str) -> set[str]:
    """The modules a ``python -X importtime`` run imported (its stderr)."""
    return {line.split("|")[-1].strip() for line in importtime.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    ("loop", "context"),
    [
        ("asyncio", "spawn"),
        ("asyncio", "forkserver"),
        ("asyncio", "fork"),  # offered by --context: forks from the running loop
        ("uvloop", "forkserver"),
        ("trio", "spawn"),
    ],
)
def test_demo_runs(loop: str, context: str) -> None:
    """``python -m aiomp``, the Quickstart's first command, with its ``--loop`` and ``--context``.

    Its functions live in a package's ``__main__``, which workers cannot import, so they
    travel by value. One run leaves ``--processes`` out: one worker per usable CPU.
    """
    processes = None if (loop, context) == ("asyncio", "forkserver") else 2
    if context not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {context} start method here")
    args = ["-X", "importtime", "-m", "aiomp", "--loop", loop, "--context", context]
    if processes is not None:
        args += ["--processes", str(processes)]
    done = _run(args)
    # The loop asked for is the loop that ran: its library was imported, the others' were not.
    imported = _imported(done.stderr)
    assert ("uvloop" in imported) == (loop == "uvloop"), sorted(m for m in imported if "loop" in m)
    assert ("trio" in imported) == (loop == "trio")
    assert [line for line in done.stderr.splitlines() if not line.startswith("import time:")] == []

    workers = processes or _usable_cpus()
    tasks = 8 * workers
    per_task_ms = round(max(0.005, 2.0 / tasks) * 1000)
    lines = done.stdout.splitlines()
    assert lines[:2] == [
        f"aiomp demo: {tasks} CPU-bound tasks of about {per_task_ms} ms each, on the {loop} event loop",
        "",
    ]
    rows = [re.split(r"\s{2,}", line.strip()) for line in lines[2:6]]
    assert rows[0][0] == "serial, in the event loop's thread" and re.fullmatch(r"\d+\.\d\d s", rows[0][1])
    assert rows[0][2] == "the loop is blocked all along"
    assert rows[1][0] == "await pool.map(crunch, work)" and re.fullmatch(r"\d+\.\d\d s", rows[1][1])
    assert re.fullmatch(r"after \d+\.\d\d s to start the workers", rows[1][2])
    plural = "es" if workers > 1 else ""
    assert rows[2][0] == "speedup over serial" and re.fullmatch(r"\d+\.\d\dx", rows[2][1])
    assert rows[2][2] == f"with {workers} worker process{plural}"
    assert rows[3][0] == "event-loop lag during pool.map"
    assert re.fullmatch(r"p99 \d+\.\d ms, worst \d+\.\d ms", rows[3][1]) and re.fullmatch(
        r"\d+ ticks of 1 ms", rows[3][2]
    )
    if processes is None and workers > 1:
        assert lines[6:] == [
            "",
            f"The {workers} workers keep every CPU busy, so the loop shares its CPU with one of them;"
            f" `python -m aiomp -p {workers - 1}` leaves it a core of its own.",
        ]
    else:
        assert lines[6:] == []


@pytest.mark.parametrize(
    ("loop", "context"), [("asyncio", "forkserver"), ("uvloop", "spawn"), ("trio", "forkserver"), ("trio", "spawn")]
)
def test_worker_logging_example(loop: str, context: str) -> None:
    """Worker records come out in the parent's format, filtered by its levels, none lost."""
    done = _run([str(EXAMPLES / "worker_logging.py"), "--loop", loop, "--context", context])
    out = done.stdout
    lines = out.splitlines()
    crunch = sorted((line.split(": ", 1)[1], line.split()[1]) for line in lines if "crunch(" in line)
    assert [message for message, _ in crunch] == [
        "crunch(1) = 332833500",
        "crunch(2) = 2664667000",
        "crunch(3) = 8995500500",
    ]
    assert all(name.startswith("aiomp-worker-") for _, name in crunch), crunch  # the worker's processName
    assert "starts" not in out  # DEBUG: below the parent's level, never sent
    assert "totals [332833500, 2664667000, 8995500500]" in out
    # The records of a call are handled before its result is delivered.
    assert out.index("crunch(3) =") < out.index("totals")
    assert out.index("fragile(0) failed") < out.index("fragile [0, 20]")
    assert "ZeroDivisionError: integer division or modulo by zero" in out
    assert "in fragile\n    return 100 // n" in out  # the worker's traceback, as text
    # os._exit right after logging: the record still arrives, before join() returns.
    assert "WARNING last-words       example: about to exit with os._exit(3)" in out
    assert out.index("about to exit") < out.index("last-words exit code 3")
    assert done.stderr == "[INFO/aiomp-worker-0] hello from a worker via aiomp.get_logger()\n"
