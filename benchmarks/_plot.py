"""PNG bar charts of aiomp against its peers, one per workload, drawn from a run's JSON (matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks._report import plot_name, setting
from benchmarks._types import NOT_PEERS

AIOMP, PEER, FLOOR = "#d62728", "#1f77b4", "#bbbbbb"


def plot_file(data: dict[str, Any], out: Path) -> list[Path]:
    """One PNG per workload of ``data`` that compares figures; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    return [
        path
        for name, w in data["workloads"].items()
        if (path := _plot_workload(name, w, data["meta"], out / plot_name(name, data["meta"]))) is not None
    ]


def _plot_workload(name: str, w: dict[str, Any], meta: dict[str, Any], path: Path) -> Path | None:
    import matplotlib.pyplot as plt

    metrics = [m for m in w["metrics"] if m["better"]]
    if not metrics:
        return None
    libs = list(w["results"])
    cols = min(4, len(metrics))
    lines = -(-len(metrics) // cols)
    size = (2.6 * cols + 1.4, (0.32 * len(libs) + 1.0) * lines + 0.3)
    fig, axes = plt.subplots(lines, cols, figsize=size, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < len(metrics):
            _bars(ax, w, libs, metrics[i], labels=i % cols == 0)
        else:
            ax.axis("off")
    fig.suptitle(f"{name}: {setting(meta)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _bars(ax: Any, w: dict[str, Any], libs: list[str], metric: dict[str, Any], labels: bool) -> None:
    values, colors, texts = [], [], []
    for lib in libs:
        cell = w["results"][lib]
        v = cell["values"].get(metric["key"])
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        values.append(float(v) if number else 0.0)
        colors.append(AIOMP if lib == "aiomp" else FLOOR if lib in NOT_PEERS else PEER)
        texts.append(cell["shown"].get(metric["key"], "") if number else ("skipped" if cell.get("skipped") else "-"))
    y = range(len(libs))
    ax.barh(y, values, color=colors)
    ax.set_yticks(list(y), libs if labels else [""] * len(libs), fontsize=8)
    ax.invert_yaxis()
    top = max(values, default=0.0) or 1.0
    low = min((v for v in values if v > 0), default=top)
    log = top / low > 100  # tasks/s from 2k to 5M: a log scale keeps the small bars visible
    if log:
        ax.set_xscale("log")
        ax.set_xlim(low / 2, top * 8)
    else:
        ax.set_xlim(0, top * 1.35)
    for yi, v, text in zip(y, values, texts, strict=True):
        x = max(v, low / 2) * 1.15 if log else v + top * 0.02
        ax.text(x, yi, text, va="center", fontsize=7)
    scale = ", log scale" if log else ""
    ax.set_title(f"{metric['label']}\n({metric['better']} is better{scale})", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
