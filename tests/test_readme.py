"""The README's first example runs, as a user would copy it, and prints what it promises.

The block is read from README.md at test time, so the test follows the README: each
``print(...)  # comment`` line promises the comment as its output line.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN_LINE = "    anyio.run(main)  # or "


def first_python_block() -> str:
    """The first ```python block of README.md, before the Quickstart heading."""
    text = (ROOT / "README.md").read_text()
    quickstart = text.index("\n## Quickstart")
    match = re.search(r"^```python\n(.*?)^```$", text[:quickstart], re.MULTILINE | re.DOTALL)
    assert match is not None, "README.md has no python block before its Quickstart"
    return match.group(1)


def promises(block: str) -> list[str]:
    """The output each commented ``print(...)`` line promises, in order."""
    return [line.split("#", 1)[1].strip() for line in block.splitlines() if "print(" in line and "#" in line]


def alternatives(block: str) -> list[str]:
    """The run lines: the block's own, then each one its comment offers instead."""
    [line] = [line for line in block.splitlines() if line.startswith(RUN_LINE)]
    offered = line[len(RUN_LINE) :].split(", or ")
    return ["anyio.run(main)", *offered]


def load(path: Path) -> ModuleType:
    """Import the example as a worker would (its ``__main__`` guard keeps main from running)."""
    spec = importlib.util.spec_from_file_location("readme_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_block_is_what_this_test_reads() -> None:
    """If the README's example changes shape, this test must be looked at, not silently pass."""
    block = first_python_block()
    assert "aiomp.Pool()" in block  # the default size: one worker per usable CPU
    assert promises(block) == ["285", "10000 [0, 0, 1, 5]"]
    assert "pool.imap_unordered(work, range(5))" in block
    assert alternatives(block) == ["anyio.run(main)", "asyncio.run(main())", 'anyio.run(main, backend="trio")']


def _id(run: str) -> str:
    return "as-written" if run == "anyio.run(main)" else re.sub(r"\W+", "-", run).strip("-")


@pytest.mark.parametrize("run", alternatives(first_python_block()), ids=_id)
def test_readme_example_prints_what_it_promises(tmp_path: Path, run: str) -> None:
    block = first_python_block()
    if run != "anyio.run(main)":
        # The comment's alternative, in place of the call it comments.
        [line] = [line for line in block.splitlines() if line.startswith(RUN_LINE)]
        block = block.replace(line, f"    {run}")
        if run.startswith("asyncio."):
            block = "import asyncio\n" + block  # what a user adds to take that alternative
    script = tmp_path / "readme_example.py"
    script.write_text(block)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the README example did not finish in 120 s:\n{out}\n{err}")
    assert proc.returncode == 0, err
    assert err == ""
    lines = out.splitlines()
    promised = promises(block)
    assert lines[: len(promised)] == promised
    # Then imap_unordered's results, one a line, in completion order.
    work = load(script).work
    assert sorted(int(line) for line in lines[len(promised) :]) == sorted(work(n) for n in range(5))
    assert len(lines) == len(promised) + 5
