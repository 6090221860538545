"""The examples run as a user would run them, and print what they promise.

They run in the environment a user has: without ``PYTHONUNBUFFERED`` (which some shells
and CI runners set), so that a line the parent forgot to flush comes out where a user
piping the output would see it, not where a terminal would.

Every run must leave no process behind: each one carries a marker in its environment,
which every process it starts inherits (the fork server and the resource tracker
included), and once it has exited no process with that marker may be left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
LOOPS = ["asyncio", "uvloop", "trio"]
CONTEXTS = ["spawn", "forkserver"]
_MARKER = "AIOMP_EXAMPLE_RUN"


def _user_env(marker: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    env[_MARKER] = marker
    return env


def _marked(marker: str) -> list[psutil.Process]:
    """The live processes that inherited this run's marker."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.environ().get(_MARKER) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def _left_behind(marker: str, grace: float = 5) -> list[str]:
    """The processes of a run still alive after ``grace`` seconds: killed, and described."""
    deadline = time.monotonic() + grace  # the fork server and the resource tracker exit on their own
    while (left := _marked(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    described = []
    for proc in left:
        with contextlib.suppress(psutil.Error):
            described.append(f"{proc.pid}: {' '.join(proc.cmdline())[:200]}")
            proc.kill()
    return described


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a program to its end (killed on timeout, with every process it started), and check
    that it exited with 0 and left no process behind."""
    marker = uuid.uuid4().hex
    with subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_user_env(marker),
        cwd=ROOT,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:  # or a process it left behind holds its output open
            proc.kill()
            left = _left_behind(marker, grace=0)
            stdout, stderr = proc.communicate()
            pytest.fail(f"{args} timed out after {timeout} s; killed: {left}\n{stdout}\n{stderr}")
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    left = _left_behind(marker)
    assert not left, f"{args} left processes behind: {left}"
    assert done.returncode == 0, done.stderr
    return done


def _tested_elsewhere(name: str) -> bool:
    """Whether another test module runs this example (examples/web_server.py, say)."""
    return any(
        f"examples/{name}" in path.read_text()
        for path in (ROOT / "tests").glob("test_*.py")
        if path.name != "test_examples.py"
    )


def test_every_example_is_tested() -> None:
    """A new example needs a test here (or in a test module of its own that names it)."""
    here = {"pool_basics.py", "primitives.py", "worker_logging.py", "progress.py", *TUTORIALS}
    untested = [p.name for p in EXAMPLES.glob("*.py") if p.name not in here and not _tested_elsewhere(p.name)]
    assert untested == []
    assert sorted(p.name for p in EXAMPLES.glob("tutorial_*.py")) == sorted(TUTORIALS)
    assert sorted(TUTORIALS) == sorted({name for name, _, _ in TUTORIAL_RUNS})


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


# -- the multiprocessing tutorials' examples, awaited (examples/tutorial_*.py) ----------------

# Each tutorial runs under a few (loop, start method) pairs: together they cover every loop
# and both start methods, and the ones whose waiting differs most per loop (pool calls,
# callbacks, queues) run under all three loops. The ones that start nine or ten processes
# (the lock, the pool tour) run under forkserver only, where a child starts cheaply: under
# spawn each is a fresh interpreter. None is aiomp's default start method.
TUTORIAL_RUNS = [
    ("tutorial_hello.py", "asyncio", "spawn"),
    ("tutorial_hello.py", "trio", "forkserver"),
    ("tutorial_queue.py", "asyncio", "forkserver"),
    ("tutorial_queue.py", "uvloop", "spawn"),
    ("tutorial_pipe.py", "asyncio", "spawn"),
    ("tutorial_pipe.py", "trio", "forkserver"),
    ("tutorial_lock.py", "asyncio", "forkserver"),
    ("tutorial_lock.py", "uvloop", "forkserver"),
    ("tutorial_shared_state.py", "uvloop", "forkserver"),
    ("tutorial_shared_state.py", "trio", "spawn"),
    ("tutorial_pool_map.py", "asyncio", "forkserver"),
    ("tutorial_pool_map.py", "uvloop", "forkserver"),
    ("tutorial_pool_map.py", "trio", "forkserver"),
    ("tutorial_apply_async.py", "asyncio", "forkserver"),
    ("tutorial_apply_async.py", "uvloop", "forkserver"),
    ("tutorial_apply_async.py", "trio", "spawn"),
    ("tutorial_starmap.py", "asyncio", "spawn"),
    ("tutorial_starmap.py", "trio", "forkserver"),
    ("tutorial_producer_consumer.py", "asyncio", "forkserver"),
    ("tutorial_producer_consumer.py", "uvloop", "spawn"),
    ("tutorial_producer_consumer.py", "trio", "forkserver"),
    ("tutorial_logging.py", "asyncio", "spawn"),
    ("tutorial_logging.py", "uvloop", "forkserver"),
    ("tutorial_logging.py", "trio", "forkserver"),
    ("tutorial_cpu_count.py", "asyncio", None),
    ("tutorial_cpu_count.py", "trio", "spawn"),
]
TUTORIALS = sorted({name for name, _, _ in TUTORIAL_RUNS})
Run = tuple[str, str, "str | None"]


def _run_tutorial(run: Run) -> subprocess.CompletedProcess[str] | BaseException:
    name, loop, context = run
    args = [str(EXAMPLES / name), "--loop", loop]
    if context is not None:
        args += ["--context", context]
    try:
        return _run(args, timeout=60)
    except BaseException as error:  # handed to the test of this run
        return error


@pytest.fixture(scope="module")
def tutorial_outputs() -> dict[Run, subprocess.CompletedProcess[str] | BaseException]:
    """Every tutorial run, three at a time: they mostly wait (on children starting, on a
    timeout), so this takes a third of the time of one after the other. Each run has
    finished, and left nothing behind, before any test looks at its output."""
    runs = [(n, loop, c) for n, loop, c in TUTORIAL_RUNS if c is None or c in multiprocessing.get_all_start_methods()]
    with ThreadPoolExecutor(3) as pool:
        return dict(zip(runs, pool.map(_run_tutorial, runs), strict=True))


def _output(outputs: dict[Run, subprocess.CompletedProcess[str] | BaseException], run: Run) -> list[str]:
    """The lines the run printed on stdout; it printed nothing on stderr."""
    if run not in outputs:
        pytest.skip(f"no {run[2]} start method here")
    done = outputs[run]
    if isinstance(done, BaseException):
        raise done
    assert done.stderr == ""
    return done.stdout.splitlines()


def _runs(name: str) -> list[Run]:
    return [run for run in TUTORIAL_RUNS if run[0] == name]


def _ids(runs: list[Run]) -> list[str]:
    return [f"{loop}-{context or 'default'}" for _, loop, context in runs]


@pytest.mark.parametrize("run", _runs("tutorial_hello.py"), ids=_ids(_runs("tutorial_hello.py")))
def test_tutorial_hello(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    lines = _output(tutorial_outputs, run)
    assert len(lines) == 10, lines
    parent = re.fullmatch(r"process id: (\d+)", lines[3])
    child = re.fullmatch(r"process id: (\d+)", lines[7])
    assert parent and child and parent.group(1) != child.group(1), lines
    assert lines[:3] == ["main line", "module name: __main__", lines[2]]
    assert re.fullmatch(r"parent process: \d+", lines[2])
    assert lines[4:7] == ["function f", "module name: __main__", f"parent process: {parent.group(1)}"]
    assert lines[8:] == ["hello bob", "exit code 0"]


@pytest.mark.parametrize("run", _runs("tutorial_queue.py"), ids=_ids(_runs("tutorial_queue.py")))
def test_tutorial_queue(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    assert _output(tutorial_outputs, run) == ["[42, None, 'hello']", "hello"]


@pytest.mark.parametrize("run", _runs("tutorial_pipe.py"), ids=_ids(_runs("tutorial_pipe.py")))
def test_tutorial_pipe(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    assert _output(tutorial_outputs, run) == ["[42, None, 'hello']", "more", "to", "come", "exit code 0"]


@pytest.mark.parametrize("run", _runs("tutorial_lock.py"), ids=_ids(_runs("tutorial_lock.py")))
def test_tutorial_lock(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    lines = _output(tutorial_outputs, run)
    # The parent held the lock while it started the children: every child printed after it.
    assert lines[0] == "the parent holds the lock: no child prints yet"
    assert sorted(lines[1:11], key=lambda line: int(line.split()[-1])) == [f"hello world {i}" for i in range(10)]
    assert lines[11:] == ["exit codes [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]"]


@pytest.mark.parametrize("run", _runs("tutorial_shared_state.py"), ids=_ids(_runs("tutorial_shared_state.py")))
def test_tutorial_shared_state(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    assert _output(tutorial_outputs, run) == [
        "3.1415927",
        str([-i for i in range(10)]),
        "counter 4100",  # no update lost: 4 children * 1000 + 100 from the parent
    ]


@pytest.mark.parametrize("run", _runs("tutorial_pool_map.py"), ids=_ids(_runs("tutorial_pool_map.py")))
def test_tutorial_pool_map(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    lines = _output(tutorial_outputs, run)
    squares = [i * i for i in range(10)]
    assert lines[:2] == ["[1, 4, 9]", str(squares)]
    assert sorted(int(line) for line in lines[2:12]) == squares  # imap_unordered: any order
    assert lines[12] == "400"
    pid = int(lines[13])
    pids = [int(p) for p in re.fullmatch(r"\[(\d+), (\d+), (\d+), (\d+)\]", lines[14]).groups()]  # type: ignore[union-attr]
    assert len({pid, *pids}) <= 4  # the pool's four workers
    assert lines[15:] == [
        "We lacked patience and got a TimeoutError",
        "For the moment, the pool remains available for more work",
        "Now the pool is closed and no longer available",  # at once: the sleeping task was stopped
    ]


@pytest.mark.parametrize("run", _runs("tutorial_apply_async.py"), ids=_ids(_runs("tutorial_apply_async.py")))
def test_tutorial_apply_async(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    assert _output(tutorial_outputs, run) == [
        "error_callback got ZeroDivisionError: division by zero",
        str([i * i for i in range(10)]),
        "callbacks ran in ['MainThread']",
    ]


@pytest.mark.parametrize("run", _runs("tutorial_starmap.py"), ids=_ids(_runs("tutorial_starmap.py")))
def test_tutorial_starmap(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    assert _output(tutorial_outputs, run) == [
        "[1, 2, 3]",
        "[0, 6, 14, 24, 36]",
        "starmap_async: [0, 2, 4, 6, 8, 10, 12, 14]",
    ]


@pytest.mark.parametrize(
    "run", _runs("tutorial_producer_consumer.py"), ids=_ids(_runs("tutorial_producer_consumer.py"))
)
def test_tutorial_producer_consumer(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    lines = _output(tutorial_outputs, run)
    kind = "SpawnProcess" if run[2] == "spawn" else "ForkServerProcess"
    assert lines[0] == "Unordered results:"
    said = [
        re.fullmatch(rf"\t {kind}-(\d+) says that (mul|plus)\((\d+), (\d+)\) = (\d+)", line) for line in lines[1:31]
    ]
    assert all(said), lines[1:31]
    results = [(m.group(2), int(m.group(3)), int(m.group(4)), int(m.group(5))) for m in said if m]
    assert sorted(results[:20]) == [("mul", i, 7, i * 7) for i in range(20)]
    assert sorted(results[20:]) == [("plus", i, 8, i + 8) for i in range(10)]
    assert {int(m.group(1)) for m in said if m} <= {1, 2, 3, 4}
    assert lines[31:] == [
        "workers' exit codes [0, 0, 0, 0]",  # every worker left its loop at the shutdown
        *(f"consumed {i * i}" for i in range(5)),
        "the producer shut the queue down",
    ]


@pytest.mark.parametrize("run", _runs("tutorial_logging.py"), ids=_ids(_runs("tutorial_logging.py")))
def test_tutorial_logging(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    done = tutorial_outputs[run]
    if isinstance(done, BaseException):
        raise done
    assert done.stdout.splitlines() == ["results [0, 1, 4]"]
    kind = "SpawnProcess" if run[2] == "spawn" else "ForkServerProcess"
    lines = done.stderr.splitlines()
    assert lines[:2] == ["[WARNING/MainProcess] doomed", f"[INFO/{kind}-1] hello from a child process"]
    tasks = sorted(re.sub(r"aiomp-worker-\d+", "aiomp-worker-N", line) for line in lines[2:])
    assert tasks == [f"[INFO/aiomp-worker-N] task({n}) = {n * n}" for n in range(3)]  # no DEBUG record


@pytest.mark.parametrize("run", _runs("tutorial_cpu_count.py"), ids=_ids(_runs("tutorial_cpu_count.py")))
def test_tutorial_cpu_count(tutorial_outputs: dict[Run, Any], run: Run) -> None:
    lines = _output(tutorial_outputs, run)
    usable, smaller = _usable_cpus(), max(1, _usable_cpus() - 1)
    assert lines[:4] == [
        f"Number of cpu : {usable}",
        f"CPUs of the machine: {multiprocessing.cpu_count()}",
        f"Pool() workers: {usable}",
        f"Pool(cpu_count() - 1) workers: {smaller}",
    ]
    served = re.fullmatch(r"100 tasks ran in (\d+) of them", lines[4])
    assert served is not None and 1 <= int(served.group(1)) <= smaller, lines[4]
    assert len(lines) == 5


@pytest.mark.parametrize("loop", LOOPS)
def test_progress_example(loop: str) -> None:
    done = _run([str(EXAMPLES / "progress.py"), "--loop", loop])
    assert done.stdout.splitlines() == [
        "sized source: sum of squares below 200 = 2646700",
        "async source: sum of squares below 100 = 328350",
        "no total: 300 results, statistics counted 255 tasks",
        "the map ran 30 tasks of 10 items",
    ]
    bars = done.stderr.replace("\r", "\n")
    assert re.search(r"sized source: 100%.*200/200", bars), bars  # the total came from len()
    assert re.search(r"async source: 100%.*100/100", bars), bars
    assert re.search(r"completed \d+, running \d+, queued \d+", bars), bars


def test_every_example_is_on_the_examples_page() -> None:
    """The site's examples page shows every example's source (pymdownx.snippets includes it)."""
    page = (ROOT / "docs" / "examples.md").read_text()
    shown = re.findall(r'^--8<-- "examples/(\w+\.py)"$', page, re.MULTILINE)
    assert sorted(shown) == sorted(p.name for p in EXAMPLES.glob("*.py"))
    for name in shown:
        assert f"{{#{name.removesuffix('.py')}}}" in page  # the anchor docs/_hooks.py links to


@pytest.mark.parametrize("name", TUTORIALS)
def test_tutorial_shape(name: str) -> None:
    """Each tutorial says which stdlib example it mirrors, has the main guard, and offers the loops."""
    text = (EXAMPLES / name).read_text()
    docstring = text.split('"""')[1]
    assert "mirrors" in docstring.lower(), name
    assert f"python examples/{name}" in docstring
    assert '\nif __name__ == "__main__":' in text
    assert 'choices=["asyncio", "uvloop", "trio"]' in text
