"""The suites and their workloads, in the order they run.

A workload module offers ``WORKLOADS = {name: run}``, ``run(cfg) -> WorkloadResult``; a suite is a
list of such modules. Adding a suite is one module here and one line in ``SUITES``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

from benchmarks._config import Config
from benchmarks._types import WorkloadResult
from benchmarks.workloads import (
    apply,
    bigmsg,
    cancel,
    coldstart,
    cpu,
    crash,
    dask,
    faults,
    lag,
    logs,
    payload,
    primitives,
    startup,
    tiny,
    web,
)

Workload = Callable[[Config], WorkloadResult]


def _suite(*modules: ModuleType) -> dict[str, Workload]:
    return {name: run for module in modules for name, run in module.WORKLOADS.items()}


SUITES: dict[str, dict[str, Workload]] = {
    "pool": _suite(tiny, apply, lag, cpu, startup, coldstart),
    "primitives": _suite(primitives),
    "logs": _suite(logs),
    "faults": _suite(crash, cancel, faults),
    "payload": _suite(payload, bigmsg),
    "dask": _suite(dask),
    "web": _suite(web),
}


def workloads_of(suites: Sequence[str]) -> list[str]:
    return [name for suite in suites for name in SUITES[suite]]
