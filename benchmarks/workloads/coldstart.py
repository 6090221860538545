"""coldstart: a fresh program creates a pool and gets the result of one trivial task.

Each library's script is what a user would write (its imports at the top, so spawned
workers import them too), run as a new interpreter; the figure is the wall time from just
before the interpreter is started to the first result, the forkserver's own start
included. ``python`` is the floor: an interpreter that starts and prints the time.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks._config import Config
from benchmarks._harness import median
from benchmarks._report import fmt_fixed
from benchmarks._types import Cell, Metric, Target, WorkloadResult

_SCRIPTS = {
    "aiomp": """
        import sys, time
        import anyio
        import aiomp

        async def main():
            async with aiomp.Pool(2, context=sys.argv[1]) as pool:
                await pool.apply(abs, (-1,))
                print(time.time(), flush=True)

        if __name__ == "__main__":
            anyio.run(main, backend=sys.argv[2], backend_options={"use_uvloop": True} if sys.argv[3] == "1" else {})
    """,
    "mp.Pool": """
        import sys, time
        import multiprocessing

        if __name__ == "__main__":
            with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:
                pool.apply(abs, (-1,))
                print(time.time(), flush=True)
    """,
    "PPE": """
        import sys, time
        import asyncio
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        async def main():
            with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(sys.argv[1])) as pool:
                await asyncio.get_running_loop().run_in_executor(pool, abs, -1)
                print(time.time(), flush=True)

        if __name__ == "__main__":
            asyncio.run(main())
    """,
    "python": """
        import time
        print(time.time(), flush=True)
    """,
}
LIBS = list(_SCRIPTS)
METRICS = [
    Metric(
        "cold_ms",
        "fresh program -> first result, ms (median)",
        "lower",
        fmt_fixed(1),
        Target("<= 80 ms and below the best peer", lambda a, b: a <= 80 and (b is None or a < b)),
    ),
    Metric("min_ms", "min ms", None, fmt_fixed(1)),
]


def _once(script: Path, cfg: Config) -> float:
    backend = "trio" if cfg.loop == "trio" else "asyncio"
    start = time.time()
    done = subprocess.run(
        [sys.executable, str(script), cfg.start_method, backend, "1" if cfg.loop == "uvloop" else "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout.split()[0]) - start


def run(cfg: Config) -> WorkloadResult:
    trials = cfg.startup_trials * 2 + 1
    cells = {lib: Cell(lib) for lib in LIBS}
    with tempfile.TemporaryDirectory() as folder:
        scripts = {}
        for lib, text in _SCRIPTS.items():
            scripts[lib] = Path(folder) / f"cold_{lib.replace('.', '_').lower()}.py"
            scripts[lib].write_text(textwrap.dedent(text))
        for r in range(trials):  # the libraries take turns; the first round is not counted
            for lib in LIBS if r % 2 == 0 else reversed(LIBS):
                try:
                    seconds = _once(scripts[lib], cfg)
                except (subprocess.SubprocessError, OSError, ValueError, IndexError) as error:
                    cells[lib].error = f"{type(error).__name__}: {error}"
                    continue
                if r:
                    cells[lib].samples.setdefault("cold_s", []).append(seconds)
    for cell in cells.values():
        times = cell.samples.get("cold_s", [])
        if times:
            cell.values.update(cold_ms=median(times) * 1e3, min_ms=min(times) * 1e3)
    notes = [
        f"median of {trials - 1} fresh programs per library, the libraries taking turns after one uncounted round; "
        f"{cfg.start_method}, 2 workers; `python` is the floor (an interpreter that only prints the time)",
    ]
    return WorkloadResult("coldstart", "fresh program -> first result", METRICS, list(cells.values()), notes)


WORKLOADS = {"coldstart": run}
