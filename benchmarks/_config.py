"""The one run configuration: the command-line choices and the sizes they imply."""

from __future__ import annotations

import multiprocessing
from dataclasses import asdict, dataclass
from typing import Any

LOOPS = ["asyncio", "uvloop", "trio"]
START_METHODS = ["spawn", "forkserver"]

#: Sizes of a full run; ``--quick`` uses QUICK's instead (a smoke run).
FULL: dict[str, Any] = {
    "rounds": 3,  # alternating rounds per figure (aiomp, peers; then the reverse order); medians over them
    "tiny_items": 100_000,
    "per_item_items": 20_000,  # tiny's size for peers that send one message per item
    "apply_concurrent": 5_000,
    "apply_sequential": 200,
    "lag_seconds": 3.0,
    "lag_items": 20_000,
    "cpu_tasks": 16,
    "cpu_task_seconds": 0.1,
    "startup_trials": 5,
    "crash_calls": 20,
    "payload_arrays": 8,  # payload: float64 arrays through the pool
    "payload_mib": 32,  # payload: the size of each array
    "bigmsg_mib": 64,  # bigmsg: the array sent back and forth
    "round_trips": 2_000,  # primitives: timed round trips per cell
    "warmup": 200,  # primitives: untimed round trips (or hand-offs) first
    "handoffs": 300,  # primitives: timed lock hand-offs / event wake-ups per cell
    "hold": 0.002,  # primitives: how long the child holds the lock (or waits) before release (or set)
    "idle_seconds": 2.0,  # primitives: the wait whose CPU cost is measured
    "prim_lag_seconds": 1.0,  # primitives: round trips with the ticker running
    "log_records": 100_000,  # logs: INFO records from the workers, all together
    "log_flood": 1_000_000,  # logs: debug calls per worker (filtered out in the worker)
    "fault_trials": 3,  # faults: trials per fault
    "hang_timeout": 10.0,  # a call with no answer by then counts as hung
    "cell_timeout": 120.0,  # hard limit for one library in one workload
}
QUICK: dict[str, Any] = {
    **FULL,
    "rounds": 1,
    "tiny_items": 20_000,
    "per_item_items": 2_000,
    "apply_concurrent": 1_000,
    "apply_sequential": 50,
    "lag_seconds": 1.0,
    "lag_items": 5_000,
    "cpu_tasks": 8,
    "cpu_task_seconds": 0.05,
    "startup_trials": 2,
    "payload_arrays": 2,
    "payload_mib": 8,
    "bigmsg_mib": 16,
    "round_trips": 300,
    "warmup": 50,
    "handoffs": 50,
    "idle_seconds": 0.5,
    "prim_lag_seconds": 0.3,
    "log_records": 20_000,
    "log_flood": 100_000,
    "fault_trials": 1,
    "hang_timeout": 4.0,
    "cell_timeout": 60.0,
}


def anyio_backend(loop: str) -> dict[str, Any]:
    """``anyio.run`` keyword arguments for an event loop: the one place that selects uvloop."""
    if loop == "trio":
        return {"backend": "trio"}
    return {"backend": "asyncio", "backend_options": {"use_uvloop": loop == "uvloop"}}


def usable_cpus() -> int:
    """CPUs this process may run on: ``aiomp.cpu_count()``."""
    import aiomp

    return aiomp.cpu_count()


@dataclass(frozen=True)
class Config:
    loop: str
    start_method: str
    processes: int
    quick: bool
    rounds: int
    tiny_items: int
    per_item_items: int
    apply_concurrent: int
    apply_sequential: int
    lag_seconds: float
    lag_items: int
    cpu_tasks: int
    cpu_task_seconds: float
    startup_trials: int
    crash_calls: int
    payload_arrays: int
    payload_mib: int
    bigmsg_mib: int
    round_trips: int
    warmup: int
    handoffs: int
    hold: float
    idle_seconds: float
    prim_lag_seconds: float
    log_records: int
    log_flood: int
    fault_trials: int
    hang_timeout: float
    cell_timeout: float

    @classmethod
    def make(cls, loop: str, start_method: str, processes: int, quick: bool) -> Config:
        return cls(loop, start_method, processes, quick, **(QUICK if quick else FULL))

    @property
    def context(self) -> Any:  # a DefaultContext subclass: typeshed's BaseContext lacks Process
        return multiprocessing.get_context(self.start_method)

    @property
    def lag_small_pool(self) -> int:
        """``cpu_count - 1`` workers (PITFALLS.md): leaves a core to the event loop."""
        return max(1, usable_cpus() - 1)

    def anyio_backend(self) -> dict[str, Any]:
        return anyio_backend(self.loop)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
