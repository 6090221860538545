"""Results as JSON, and the tables printed from that JSON (plain text and Markdown).

Every table is drawn from the JSON, so that ``python -m benchmarks report FILE...`` redraws what
a run printed, from saved files, without running anything.
"""

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
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join(s.rstrip() for s in out)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *(line(r) for r in rows)])


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


def _ratio(mine: float | None, theirs: float | None) -> str:
    return f"{mine / theirs:.2f}x" if mine is not None and theirs else "-"


def ratio_text(result: WorkloadResult, metric: Metric) -> str:
    best = best_peer(result, metric)
    return _ratio(number(result.cell("aiomp"), metric.key), best[1] if best else None)


def default_summary(result: WorkloadResult) -> list[SummaryRow]:
    return [summary_row(result, m, m.target) for m in result.metrics if m.target is not None]


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


def summarize(results: Sequence[WorkloadResult]) -> list[SummaryRow]:
    rows: list[SummaryRow] = []
    for result in results:
        rows += (result.summarize or default_summary)(result)
    return rows


# --- JSON -----------------------------------------------------------------------------------------


def to_json(meta: dict[str, Any], results: Sequence[WorkloadResult]) -> dict[str, Any]:
    return {
        "meta": meta,
        "workloads": {r.name: _workload_json(r) for r in results},
        "summary": [asdict(s) for s in summarize(results)],
    }


def _cell_json(cell: Cell, metrics: Sequence[Metric]) -> dict[str, Any]:
    d = asdict(cell)
    d["samples"] = {k: [round(x, 9) for x in xs] for k, xs in cell.samples.items()}
    d["shown"] = {m.key: _shown(cell, m) for m in metrics}
    return d


def _shown(cell: Cell, metric: Metric) -> str:
    v = cell.values.get(metric.key)
    return "ERROR" if v is None and cell.error else metric.fmt(v)


def _workload_json(result: WorkloadResult) -> dict[str, Any]:
    compared = [m for m in result.metrics if m.better is not None]
    best = {m.key: best_peer(result, m) for m in compared}
    ref = result.cell(result.reference) if result.reference else None
    return {
        "suite": result.suite,
        "title": result.title,
        "metrics": [
            {"key": m.key, "label": m.label, "better": m.better, "target": m.target.text if m.target else None}
            for m in result.metrics
        ],
        "notes": result.notes,
        "reference": result.reference,
        "results": {c.lib: _cell_json(c, result.metrics) for c in result.cells},
        "best_peer": {k: {"lib": v[0], "value": v[1]} if v else None for k, v in best.items()},
        "ratio": {m.key: ratio_text(result, m) for m in compared},
        "ratio_reference": {m.key: _ratio(number(result.cell("aiomp"), m.key), number(ref, m.key)) for m in compared},
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# --- tables, from the JSON ------------------------------------------------------------------------


def _cell_notes(cell: dict[str, Any]) -> str:
    parts = ([f"ERROR: {cell['error']}"] if cell.get("error") else []) + cell.get("notes", [])
    return "; ".join(([cell["skipped"]] if cell.get("skipped") else []) + parts)


def _rows(w: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The table of one workload: a row per library, then the ratio rows (aiomp / best peer, / reference)."""
    metrics = w["metrics"]
    headers = ["library", *(m["label"] for m in metrics), "notes"]
    body = [
        [lib, *("-" if c.get("skipped") else c["shown"].get(m["key"], "-") for m in metrics), _cell_notes(c)]
        for lib, c in w["results"].items()
    ]
    if any(m["better"] for m in metrics):
        body.append(["aiomp / best peer", *_ratio_cells(w, metrics, "ratio", with_peer=True), ""])
        if w.get("reference"):
            body.append([f"aiomp / {w['reference']}", *_ratio_cells(w, metrics, "ratio_reference"), ""])
    return headers, body


def _ratio_cells(w: dict[str, Any], metrics: list[dict[str, Any]], key: str, with_peer: bool = False) -> list[str]:
    cells = []
    for m in metrics:
        text = w[key].get(m["key"], "") if m["better"] else ""
        best = w["best_peer"].get(m["key"]) if with_peer else None
        cells.append(f"{text} ({best['lib']})" if best and text != "-" else text)
    return cells


def _summary_rows(rows: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [
        [r["workload"], r["metric"], r["aiomp"], r["best_peer"], r["ratio"], r["target"], _met(r["met"])] for r in rows
    ]


SUMMARY_HEADERS = ["workload", "figure", "aiomp", "best peer", "ratio", "target", "met"]


def _met(met: bool | None) -> str:
    return "-" if met is None else ("met" if met else "NOT MET")


def workload_text(name: str, w: dict[str, Any]) -> str:
    headers, body = _rows(w)
    better = [f"{m['label']}: {m['better']} is better" for m in w["metrics"] if m["better"]]
    parts = [f"== {name}: {w['title']}", table(headers, body)]
    parts += [f"({'; '.join(better)})" if better else "", *(f"note: {n}" for n in w["notes"])]
    return "\n".join(p for p in parts if p)


def summary_text(summary: Sequence[dict[str, Any]]) -> str:
    if not summary:
        return "== summary: no target of BENCHMARKS.md in these workloads"
    return "== summary (ratio = aiomp / best peer)\n" + table(SUMMARY_HEADERS, _summary_rows(summary))


def setting(meta: dict[str, Any]) -> str:
    cfg = meta.get("config", {})
    quick = ", --quick" if cfg.get("quick") else ""
    return f"{cfg.get('loop')}, {cfg.get('start_method')}, {cfg.get('processes')} processes{quick}"


def plot_name(name: str, meta: dict[str, Any]) -> str:
    """The PNG of one workload's plot (``--plot``, ``plot``): ``<workload>-<loop>-<start method>.png``."""
    cfg = meta.get("config", {})
    return f"{name}-{cfg.get('loop')}-{cfg.get('start_method')}.png"


def markdown(files: Sequence[dict[str, Any]], img: str | None = "img") -> str:
    """Saved results in docs/performance.md's format: a section per suite (``##``), in it one part per
    run (``###``: loop, start method), and per workload (``####``) its table, notes, targets and plot
    (``img``: the folder of the PNGs relative to the page; None: no plots)."""
    suites = dict.fromkeys(w["suite"] for data in files for w in data["workloads"].values())
    out = ["## Targets at a glance"]
    for data in files:
        if data["summary"]:
            out += [f"### {', '.join(data['meta']['suites'])}: {setting(data['meta'])}"]
            out.append(markdown_table(SUMMARY_HEADERS, _summary_rows(data["summary"])))
    for suite in suites:
        out.append(f"## {suite}")
        for data in files:
            mine = {name: w for name, w in data["workloads"].items() if w["suite"] == suite}
            if mine:
                out += _markdown_run(data, mine, img)
    return "\n\n".join(out) + "\n"


def _markdown_run(data: dict[str, Any], workloads: dict[str, Any], img: str | None) -> list[str]:
    meta = data["meta"]
    busy = meta.get("load_before", {}).get("cpu_busy_percent_1s", "?")
    out = [
        f"### {setting(meta)}",
        f"`{meta.get('command')}`, {meta.get('started')}, aiomp {meta.get('commit')}; the machine was {busy}% busy "
        "just before the run.",
    ]
    for name, w in workloads.items():
        headers, body = _rows(w)
        out += [f"#### {name}: {w['title']}", markdown_table(headers, body), "\n".join(f"- {n}" for n in w["notes"])]
        targets = [r for r in data["summary"] if r["workload"] == name]
        if targets:
            out.append(markdown_table(SUMMARY_HEADERS, _summary_rows(targets)))
        if img is not None and any(m["better"] for m in w["metrics"]):
            out.append(f"![{name}, {setting(meta)}]({img}/{plot_name(name, meta)})")
    return out
