"""Run configuration: the command-line choices and the sizes they imply."""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
from dataclasses import asdict, dataclass
from typing import Any


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
    repeats: int  # timed runs per figure; the median is reported
    tiny_items: int
    per_item_items: int  # tiny's size for peers that send one message per item
    apply_concurrent: int
    apply_sequential: int
    lag_seconds: float
    lag_items: int
    cpu_tasks: int
    cpu_task_seconds: float
    startup_trials: int
    crash_calls: int
    payload_arrays: int  # payload: how many float64 arrays go through the pool
    payload_mib: int  # payload: the size of each array
    bigmsg_mib: int  # bigmsg: the size of the array sent back and forth
    bigmsg_trips: int  # bigmsg: timed round trips (the median is reported)
    hang_timeout: float  # how long a crash peer may take before it is reported as hanging
    cell_timeout: float  # hard limit for one library in one workload

    @classmethod
    def make(cls, loop: str, start_method: str, processes: int, quick: bool) -> Config:
        if quick:
            return cls(
                loop,
                start_method,
                processes,
                quick,
                repeats=1,
                tiny_items=20_000,
                per_item_items=2_000,
                apply_concurrent=1_000,
                apply_sequential=50,
                lag_seconds=1.0,
                lag_items=5_000,
                cpu_tasks=8,
                cpu_task_seconds=0.05,
                startup_trials=2,
                crash_calls=20,
                payload_arrays=2,
                payload_mib=8,
                bigmsg_mib=16,
                bigmsg_trips=1,
                hang_timeout=4.0,
                cell_timeout=60.0,
            )
        return cls(
            loop,
            start_method,
            processes,
            quick,
            repeats=3,
            tiny_items=100_000,
            per_item_items=20_000,
            apply_concurrent=5_000,
            apply_sequential=200,
            lag_seconds=3.0,
            lag_items=20_000,
            cpu_tasks=16,
            cpu_task_seconds=0.1,
            startup_trials=5,
            crash_calls=20,
            payload_arrays=8,
            payload_mib=32,
            bigmsg_mib=64,
            bigmsg_trips=5,
            hang_timeout=10.0,
            cell_timeout=120.0,
        )

    @property
    def context(self) -> multiprocessing.context.BaseContext:
        return multiprocessing.get_context(self.start_method)

    @property
    def lag_small_pool(self) -> int:
        """``cpu_count - 1`` workers (PITFALLS.md): leaves a core to the event loop."""
        return max(1, usable_cpus() - 1)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
