"""The workloads of BENCHMARKS.md that this package reproduces, in the order they run."""

from __future__ import annotations

from collections.abc import Callable

from benchmarks._config import Config
from benchmarks._types import WorkloadResult
from benchmarks.workloads import apply, bigmsg, cpu, crash, dask, lag, payload, startup, tiny

WORKLOADS: dict[str, Callable[[Config], WorkloadResult]] = {
    "tiny": tiny.run,
    "apply": apply.run,
    "lag": lag.run,
    "payload": payload.run,
    "bigmsg": bigmsg.run,
    "cpu": cpu.run,
    "startup": startup.run,
    "crash": crash.run,
    "dask": dask.run,
}
