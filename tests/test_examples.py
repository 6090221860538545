"""The examples run as a user would run them, and print what they promise."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("loop", ["asyncio", "uvloop", "trio"])
def test_primitives_example(loop: str) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "primitives.py"), "--loop", loop],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "hello bob from process" in out
    assert "squares [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]" in out
    assert "echo: hello" in out
    assert out.index("parent holds the lock") < out.index("has the lock")
    assert sorted(line for line in out.splitlines() if line.endswith("has the lock")) == [
        f"worker {i} has the lock" for i in range(3)
    ]
    assert "total 800 hits per slot 600" in out
    assert "event set after" in out


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_demo_runs(context: str) -> None:
    """``python -m aiomp``, the Quickstart's first command: its functions live in a
    package's ``__main__``, which workers cannot import, so they travel by value."""
    out = subprocess.run(
        [sys.executable, "-m", "aiomp", "--processes", "2", "--context", context],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    ).stdout
    assert "await pool.map(crunch, work)" in out
    assert "speedup over serial" in out


@pytest.mark.parametrize(
    ("loop", "context"), [("asyncio", "forkserver"), ("uvloop", "spawn"), ("trio", "forkserver"), ("trio", "spawn")]
)
def test_worker_logging_example(loop: str, context: str) -> None:
    """Worker records come out in the parent's format, filtered by its levels, none lost."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "worker_logging.py"), "--loop", loop, "--context", context],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
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
    assert "[INFO/aiomp-worker-0] hello from a worker via aiomp.get_logger()" in done.stderr
    assert "Traceback" not in done.stderr
