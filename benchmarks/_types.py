"""Result records shared by the workloads, the harness and the report."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Value = float | int | str | None

#: Rows that are floors or references, not peers: never the "best peer".
NOT_PEERS = frozenset({"aiomp", "serial", "idle", "mp (sync)", "busy, no logs", "python"})


@dataclass(frozen=True)
class Target:
    text: str
    check: Callable[[float, float | None], bool]  # (aiomp figure, best peer figure) -> met


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: Literal["higher", "lower"] | None  # None: informational, no ratio
    fmt: Callable[[Value], str]
    target: Target | None = None


@dataclass
class Cell:
    """One library's figures in one workload."""

    lib: str
    values: dict[str, Value] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0  # wall time spent on this cell, set-up included
    skipped: str | None = None  # why this row has no figures (not installed, needs asyncio...)


@dataclass
class SummaryRow:
    workload: str
    metric: str
    aiomp: str
    best_peer: str
    ratio: str
    target: str
    met: bool | None


@dataclass
class WorkloadResult:
    name: str
    title: str
    metrics: list[Metric]
    cells: list[Cell]
    notes: list[str] = field(default_factory=list)
    summarize: Callable[[WorkloadResult], list[SummaryRow]] | None = None
    reference: str | None = None  # a floor row (serial, idle, mp (sync)): the table also gives aiomp / it
    suite: str = ""  # set by the command line

    def cell(self, lib: str) -> Cell | None:
        return next((c for c in self.cells if c.lib == lib), None)
