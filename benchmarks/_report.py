"""Tables on stdout and the JSON file."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks._types import NOT_PEERS, Cell, Metric, SummaryRow, Target, Value, WorkloadResult

# --- formatting -----------------------------------------------------------------------------------


def fmt_rate(v: Value) -> str:
    if not isinstance(v, (int, float)):
        return "-" if v is None else str(v)
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def fmt_fixed(digits: int) -> Any:
    def fmt(v: Value) -> str:
        if not isinstance(v, (int, float)):
            return "-" if v is None else str(v)
        return f"{v:.{digits}f}"

    return fmt


def fmt_text(v: Value) -> str:
    return "-" if v is None else str(v)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join(s.rstrip() for s in out)


# --- comparing ------------------------------------------------------------------------------------


def number(cell: Cell | None, key: str) -> float | None:
    if cell is None:
        return None
    v = cell.values.get(key)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def best_peer(result: WorkloadResult, metric: Metric) -> tuple[str, float] | None:
    figures = [
        (c.lib, n) for c in result.cells if c.lib not in NOT_PEERS for n in [number(c, metric.key)] if n is not None
    ]
    if not figures or metric.better is None:
        return None
    pick = max if metric.better == "higher" else min
    return pick(figures, key=lambda f: f[1])


def ratio_text(result: WorkloadResult, metric: Metric) -> str:
    mine, best = number(result.cell("aiomp"), metric.key), best_peer(result, metric)
    if mine is None or best is None:
        return "-"
    return f"{mine / best[1]:.2f}x" if best[1] else "-"


def default_summary(result: WorkloadResult) -> list[SummaryRow]:
    rows = []
    for metric in result.metrics:
        if metric.target is None:
            continue
        rows.append(summary_row(result, metric, metric.target))
    return rows


def summary_row(result: WorkloadResult, metric: Metric, target: Target) -> SummaryRow:
    aiomp_cell = result.cell("aiomp")
    mine, best = number(aiomp_cell, metric.key), best_peer(result, metric)
    if mine is None:
        shown = f"ERROR: {aiomp_cell.error}" if aiomp_cell and aiomp_cell.error else "-"
    else:
        shown = metric.fmt(mine)
    peer = f"{metric.fmt(best[1])} ({best[0]})" if best else "-"
    met = target.check(mine, best[1] if best else None) if mine is not None else False
    return SummaryRow(result.name, metric.label, shown, peer, ratio_text(result, metric), target.text, met)


# --- printing -------------------------------------------------------------------------------------


def workload_table(result: WorkloadResult) -> str:
    headers = ["library", *(m.label for m in result.metrics), "notes"]
    rows = [[c.lib, *(_shown(c, m) for m in result.metrics), _notes(c)] for c in result.cells]
    parts = [f"== {result.name}: {result.title}", table(headers, rows)]
    parts += [_ratio_line(result, m) for m in result.metrics if m.better is not None]
    parts += [f"note: {n}" for n in result.notes]
    return "\n".join(p for p in parts if p)


def _shown(cell: Cell, metric: Metric) -> str:
    v = cell.values.get(metric.key)
    if v is None and cell.error:
        return "ERROR"
    return metric.fmt(v)


def _notes(cell: Cell) -> str:
    parts = ([f"ERROR: {cell.error}"] if cell.error else []) + cell.notes
    return "; ".join(parts)


def _ratio_line(result: WorkloadResult, metric: Metric) -> str:
    best = best_peer(result, metric)
    mine = number(result.cell("aiomp"), metric.key)
    if best is None:
        return ""
    shown = metric.fmt(mine) if mine is not None else "n/a"
    return (
        f"ratio aiomp / best peer, {metric.label}: {shown} / {metric.fmt(best[1])} ({best[0]}) = "
        f"{ratio_text(result, metric)} ({metric.better} is better)"
    )


def summary_table(rows: Sequence[SummaryRow]) -> str:
    headers = ["workload", "metric", "aiomp", "best peer", "ratio", "target", "met"]
    body = [[r.workload, r.metric, r.aiomp, r.best_peer, r.ratio, r.target, _met(r.met)] for r in rows]
    return "== summary (ratio = aiomp / best peer)\n" + table(headers, body)


def _met(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "NOT MET")


# --- JSON -----------------------------------------------------------------------------------------


def to_json(meta: dict[str, Any], results: Sequence[WorkloadResult], summary: Sequence[SummaryRow]) -> dict[str, Any]:
    return {
        "meta": meta,
        "workloads": {r.name: _workload_json(r) for r in results},
        "summary": [asdict(s) for s in summary],
    }


def _workload_json(result: WorkloadResult) -> dict[str, Any]:
    metrics = [
        {"key": m.key, "label": m.label, "better": m.better, "target": m.target.text if m.target else None}
        for m in result.metrics
    ]
    best = {m.key: best_peer(result, m) for m in result.metrics if m.better is not None}
    return {
        "title": result.title,
        "metrics": metrics,
        "notes": result.notes,
        "results": {c.lib: asdict(c) for c in result.cells},
        "best_peer": {k: {"lib": v[0], "value": v[1]} if v else None for k, v in best.items()},
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
