"""A script without the ``__main__`` guard gets a clear error, not an endless respawn.

Each script runs as a user runs it, on the event loop that ``LOOP`` names and with the
start method that ``METHOD`` names.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from .conftest import START_METHODS

LOOPS = ["asyncio", "uvloop", "trio"] if sys.platform != "win32" else ["asyncio", "trio"]

# How a script picks its loop from LOOP: pasted into each one at its ``# RUN`` line.
RUN = """
def run(main):
    loop = os.environ["LOOP"]
    options = {"use_uvloop": True} if loop == "uvloop" else {}
    anyio.run(main, backend="trio" if loop == "trio" else "asyncio", backend_options=options)
"""

SCRIPT = textwrap.dedent(
    """
    import os, anyio, aiomp
    # RUN
    async def main():
        async with aiomp.Pool(2, context=os.environ["METHOD"]) as pool:
            print(await pool.apply(abs, (-1,), timeout=60))

    run(main)
    """
).replace("# RUN\n", RUN)


def _run(script: Path, loop: str, method: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "METHOD": method, "LOOP": loop}
    return subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=50, env=env, cwd=script.parent
    )


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("loop", LOOPS)
def test_missing_main_guard_raises_a_clear_error(tmp_path: Path, loop: str, method: str) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(SCRIPT)
    done = _run(script, loop, method)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    # The parent's error, last: it names the missing guard.
    last = done.stderr.rstrip().splitlines()[-1]
    failed = re.fullmatch(
        r"aiomp\.BrokenPoolError: (\d+) worker processes in a row exited \(code 1\) while starting\. (.*)", last
    )
    assert failed is not None, done.stderr
    assert 'has no `if __name__ == "__main__":` guard around its top-level code, add one' in failed.group(2)
    # Each worker that failed said why; the pool stopped starting them (at most the pool's
    # two slots had one more start under way when it gave up).
    said = done.stderr.count("aiomp.BrokenPoolError: a Pool was started while this process was importing the main")
    assert 1 <= said <= int(failed.group(1)) + 2, done.stderr


SHARED_GLOBALS = textwrap.dedent(
    """
    import os, anyio, aiomp
    # RUN
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

        run(main)
    """
).replace("# RUN\n", RUN)


@pytest.mark.parametrize("method", START_METHODS)
@pytest.mark.parametrize("loop", LOOPS)
def test_script_functions_share_the_scripts_globals(tmp_path: Path, loop: str, method: str) -> None:
    """An initializer and a task function of the main script see the same globals,
    and a queue in ``initargs`` reaches every worker."""
    script = tmp_path / "shared_globals.py"
    script.write_text(SHARED_GLOBALS)
    done = _run(script, loop, method)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout == "guarded -3\nlambda 7\ndoubled [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]\n"
