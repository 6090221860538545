"""Entry point: ``python -m benchmarks`` or ``python benchmarks/run.py`` (``--help`` for options)."""

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
import sys
import threading
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # type: ignore[import-untyped, unused-ignore]

from benchmarks import _harness, _runners
from benchmarks._config import Config, usable_cpus
from benchmarks._report import default_summary, summary_table, to_json, workload_table, write_json
from benchmarks._types import SummaryRow, WorkloadResult
from benchmarks.workloads import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ["aiomp", "anyio", "aiomultiprocess", "uvloop", "trio", "numpy", "psutil"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--start-method", choices=["spawn", "forkserver"], default="spawn")
    parser.add_argument("--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--processes", type=int, default=2, help="pool size for every library (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON (default benchmarks/results/)")
    args = parser.parse_args(argv)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    unknown = sorted(set(args.only) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    if args.processes < 1:
        parser.error("--processes must be >= 1")
    return args


def default_json_path(cfg: Config) -> Path:
    return RESULTS / f"{cfg.loop}-{cfg.start_method}-p{cfg.processes}{'-quick' if cfg.quick else ''}.json"


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def source_digest(package: str) -> str | None:
    """A short hash of a package's ``.py`` files: says which state of a changing aiomp was measured."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    root, digest = Path(spec.origin).parent, hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def machine_load() -> dict[str, Any]:
    """How busy the machine is before we start (other people's processes make every figure noisy)."""
    busy = psutil.cpu_percent(interval=1.0)
    if busy > 15:
        print(f"warning: the machine is {busy:.0f}% busy before the run: figures will be noisy", file=sys.stderr)
    return {"cpu_busy_percent_1s": busy, "loadavg": os.getloadavg()}


def metadata(cfg: Config, only: list[str]) -> dict[str, Any]:
    return {
        "load_before": machine_load(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "usable_cpus": usable_cpus(),
        "workloads": only,
        "config": cfg.as_dict(),
        "versions": {name: _version(name) for name in PACKAGES},
        "aiomp_source_sha256": source_digest("aiomp"),
    }


def prepare(cfg: Config) -> None:
    """Start the shared helper processes now, so that no pool's process count includes them."""
    multiprocessing.set_start_method(cfg.start_method, force=True)
    multiprocessing.resource_tracker.ensure_running()
    if cfg.start_method == "forkserver":
        multiprocessing.forkserver.ensure_running()
    _runners.start_shared_helpers(cfg)
    try:
        import aiomp

        aiomp.Pool  # noqa: B018
    except Exception as exc:  # reported, and every aiomp cell will show the error
        print(f"warning: aiomp is not usable: {type(exc).__name__}: {exc}", file=sys.stderr)


def summarize(results: list[WorkloadResult]) -> list[SummaryRow]:
    rows: list[SummaryRow] = []
    for result in results:
        rows += (result.summarize or default_summary)(result)
    return rows


def run_all(cfg: Config, only: list[str], path: Path, meta: dict[str, Any]) -> list[WorkloadResult]:
    results: list[WorkloadResult] = []

    def dump_partial(message: str) -> None:
        write_json(path, {**to_json(meta, results, summarize(results)), "aborted": message})
        print(f"partial results written to {path}", file=sys.stderr)

    _harness.on_watchdog.append(dump_partial)
    for name in only:
        print(f"-- {name}", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        results.append(WORKLOADS[name](cfg))
        results[-1].notes.append(f"1-min load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
        print("\n" + workload_table(results[-1]) + "\n", flush=True)
        write_json(path, to_json(meta, results, summarize(results)))
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = Config.make(args.loop, args.start_method, args.processes, args.quick)
    path = args.json or default_json_path(cfg)
    print(
        f"aiomp benchmarks: loop={cfg.loop} start method={cfg.start_method} processes={cfg.processes} "
        f"quick={cfg.quick} usable cpus={usable_cpus()} python={sys.version.split()[0]} pid={os.getpid()}",
        flush=True,
    )
    meta = metadata(cfg, args.only)
    load = meta["load_before"]
    print(
        f"machine before the run: {load['cpu_busy_percent_1s']:.0f}% CPU busy (1 s sample), "
        f"load average {load['loadavg'][0]:.2f}; aiomp source {meta['aiomp_source_sha256']}",
        flush=True,
    )
    prepare(cfg)
    results = run_all(cfg, args.only, path, meta)
    print(summary_table(summarize(results)), flush=True)
    print(f"\nJSON: {path}", flush=True)
    _exit_if_stuck()
    return 0


def _exit_if_stuck() -> None:
    """A library thread stuck in a hung call would keep the interpreter alive: leave without it."""
    stuck = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if stuck:
        print(f"warning: threads still blocked in library calls: {stuck}; exiting without them", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    raise SystemExit(main())
