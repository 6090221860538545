"""The one command line of the benchmarks.

    python -m benchmarks SUITE [--only W,...] [--quick] [--processes N] [--loop L] [--start-method M]
                               [--json PATH] [--plot DIR]
    python -m benchmarks plot RESULTS.json... [--out DIR]
    python -m benchmarks report RESULTS.json... [--markdown]

SUITE is one of the suites below, or ``all``. Each suite runs aiomp and its peers in alternating
order, prints a table per workload and a summary of the targets, and writes JSON.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import importlib.util
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import platform
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil

from benchmarks import _harness, _runners
from benchmarks._config import LOOPS, START_METHODS, Config, usable_cpus
from benchmarks._report import markdown, read_json, summary_text, to_json, workload_text, write_json
from benchmarks._types import WorkloadResult
from benchmarks.workloads import SUITES, workloads_of

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PACKAGES = ["aiomp", "anyio", "uvloop", "trio", "trio-parallel", "aiomultiprocess", "aioprocessing", "numpy"]


def parse_run(argv: list[str]) -> argparse.Namespace:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=formatter)
    suites = ", ".join(f"{s} ({','.join(workloads_of([s]))})" for s in SUITES)
    parser.add_argument("suite", choices=[*SUITES, "all"], help=f"the suites: {suites}")
    parser.add_argument("--only", default="", help="comma-separated workloads of the suite (default: all of them)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and one round: a smoke run")
    parser.add_argument("--processes", type=int, default=2, help="pool size for every library (default 2)")
    parser.add_argument("--loop", choices=LOOPS, default="asyncio")
    parser.add_argument("--start-method", choices=START_METHODS, default="spawn")
    parser.add_argument("--json", type=Path, help="where to write the JSON (default benchmarks/results/)")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="also draw a PNG per workload into DIR")
    args = parser.parse_args(argv)
    args.suites = list(SUITES) if args.suite == "all" else [args.suite]
    known = workloads_of(args.suites)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()] or known
    unknown = sorted(set(args.only) - set(known))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; {args.suite} has {', '.join(known)}")
    if args.processes < 1:
        parser.error("--processes must be >= 1")
    return args


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def commit() -> str:
    """The checkout's commit, ``+dirty`` when aiomp/ has changes that are not committed."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--", "aiomp") else "")


def source_digest(package: str) -> str | None:
    """A short hash of a package's ``.py`` files: says which state of a changing aiomp was measured."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    root, digest = Path(spec.origin).parent, hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def metadata(cfg: Config, args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    busy = psutil.cpu_percent(interval=1.0)
    if busy > 15:
        print(f"warning: the machine is {busy:.0f}% busy before the run: figures will be noisy", file=sys.stderr)
    return {
        "command": "python -m benchmarks " + shlex.join(argv),
        "suites": args.suites,
        "workloads": args.only,
        "load_before": {"cpu_busy_percent_1s": busy, "loadavg": os.getloadavg()},
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "usable_cpus": usable_cpus(),
        "config": cfg.as_dict(),
        "versions": {name: _version(name) for name in PACKAGES},
        "commit": commit(),
        "aiomp_source_sha256": source_digest("aiomp"),
    }


def prepare(cfg: Config) -> None:
    """Start the shared helper processes now, so that no pool's process count includes them."""
    multiprocessing.set_start_method(cfg.start_method, force=True)
    multiprocessing.resource_tracker.ensure_running()
    if cfg.start_method == "forkserver":
        multiprocessing.forkserver.ensure_running()
    _runners.start_shared_helpers(cfg)


def run(argv: list[str]) -> int:
    args = parse_run(argv)
    cfg = Config.make(args.loop, args.start_method, args.processes, args.quick)
    quick = "-quick" if cfg.quick else ""
    path = args.json or RESULTS / f"{args.suite}-{cfg.loop}-{cfg.start_method}-p{cfg.processes}{quick}.json"
    meta = metadata(cfg, args, argv)
    busy = meta["load_before"]["cpu_busy_percent_1s"]
    print(
        f"aiomp benchmarks {args.suite}: {cfg.loop}, {cfg.start_method}, {cfg.processes} processes, quick={cfg.quick};"
        f" {meta['usable_cpus']} usable CPUs, {busy:.0f}% busy; aiomp {meta['commit']}; pid {os.getpid()}",
        flush=True,
    )
    prepare(cfg)
    results: list[WorkloadResult] = []
    data = to_json(meta, results)
    _harness.on_watchdog.append(lambda message: write_json(path, {**to_json(meta, results), "aborted": message}))
    for suite in args.suites:
        for name, workload in SUITES[suite].items():
            if name not in args.only:
                continue
            print(f"-- {suite}: {name}", file=sys.stderr, flush=True)
            load = os.getloadavg()[0]
            result = workload(cfg)
            result.suite = suite
            result.notes.append(f"1-min load average {load:.2f} before, {os.getloadavg()[0]:.2f} after")
            results.append(result)
            data = to_json(meta, results)
            write_json(path, data)
            print("\n" + workload_text(name, data["workloads"][name]) + "\n", flush=True)
    print(summary_text(data["summary"]) + f"\n\nJSON: {path}", flush=True)
    if args.plot:
        draw([path], args.plot)
    _exit_if_stuck()
    return 0


def draw(paths: list[Path], out: Path) -> None:
    from benchmarks._plot import plot_file

    for path in paths:
        for png in plot_file(read_json(path), out):
            print(f"plot: {png} ({png.stat().st_size // 1024} KiB)")


def redraw(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks plot", description="PNG bar charts from saved JSON")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder of the PNGs (docs/img)")
    args = parser.parse_args(argv)
    draw(args.files, args.out)
    return 0


def report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks report", description="the tables of saved JSON")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--markdown", action="store_true", help="in docs/performance.md's format, to paste there")
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown([read_json(path) for path in args.files]))
        return 0
    for path in args.files:
        data = read_json(path)
        print(f"# {path}: {', '.join(data['meta']['suites'])}, {data['meta']['command']}\n")
        for name, w in data["workloads"].items():
            print(workload_text(name, w) + "\n")
        print(summary_text(data["summary"]) + "\n")
    return 0


def _exit_if_stuck() -> None:
    """A library thread stuck in a hung call would keep the interpreter alive: leave without it."""
    stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck:
        print(f"warning: threads still blocked in library calls: {stuck}; exiting without them", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"plot": redraw, "report": report}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
