"""A script without the ``__main__`` guard gets a clear error, not an endless respawn."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import START_METHODS

SCRIPT = textwrap.dedent(
    """
    import os, anyio, aiomp

    async def main():
        async with aiomp.Pool(2, context=os.environ["METHOD"]) as pool:
            print(await pool.apply(abs, (-1,), timeout=60))

    anyio.run(main)
    """
)


@pytest.mark.parametrize("method", START_METHODS)
def test_missing_main_guard_raises_a_clear_error(tmp_path: Path, method: str) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "METHOD": method}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=50, env=env, cwd=tmp_path
    )
    assert done.returncode != 0
    assert "aiomp.BrokenPoolError" in done.stderr
    assert 'if __name__ == "__main__":' in done.stderr


SHARED_GLOBALS = textwrap.dedent(
    """
    import os, anyio, aiomp

    _queue = None


    def init(queue):
        global _queue
        _queue = queue


    def work(x):
        _queue.put(x * 2)  # the global the initializer set, in the same module
        return x


    if __name__ == "__main__":
        def guarded(x):  # only the parent defines it: must travel by value
            return -x

        async def main():
            queue = aiomp.Queue()
            async with aiomp.Pool(2, initializer=init, initargs=(queue,), context=os.environ["METHOD"]) as pool:
                await pool.map(work, range(10), timeout=60)
                print("guarded", await pool.apply(guarded, (3,), timeout=60))
                print("lambda", await pool.apply(lambda: 7, timeout=60))
            print("doubled", sorted([await queue.aget(timeout=10) for _ in range(10)]))

        anyio.run(main)
    """
)


@pytest.mark.parametrize("method", START_METHODS)
def test_script_functions_share_the_scripts_globals(tmp_path: Path, method: str) -> None:
    """An initializer and a task function of the main script see the same globals,
    and a queue in ``initargs`` reaches every worker."""
    script = tmp_path / "shared_globals.py"
    script.write_text(SHARED_GLOBALS)
    env = {**os.environ, "METHOD": method}
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=50, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "guarded -3" in done.stdout
    assert "lambda 7" in done.stdout
    assert "doubled [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]" in done.stdout
