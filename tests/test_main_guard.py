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
