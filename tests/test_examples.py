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
