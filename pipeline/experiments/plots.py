"""Accuracy against cost: top-1 over flops and over activations, one line per strategy (the papers' plots).

``COSTS`` holds the three costs a run is plotted over, as (record key, axis label): flops, params and acts;
``plot_scaling`` draws flops and acts, the report's panels all three.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.atomic import atomic_write
from pipeline.errors import PipelineError

COSTS = (("flops", "flops (multiply-adds)"), ("params", "parameters"), ("acts", "activations"))


def plot_scaling(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write a PNG with top-1 (raw, %) over flops and over activations, log x, one line per strategy.

    Each point is labelled with its run name; records without top-1 or costs are left out.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: cluster nodes have no display
    import matplotlib.pyplot as plt

    points = [r for r in records if r.get("top1") is not None and r.get("flops") and r.get("acts")]
    if not points:
        raise PipelineError("no finished run with top1, flops and acts to plot")
    costs = [(key, label) for key, label in COSTS if key != "params"]
    fig, axes = plt.subplots(1, len(costs), figsize=(10, 4), sharey=True, constrained_layout=True)
    for ax, (key, label) in zip(axes, costs, strict=True):
        for strategy in sorted({str(r.get("strategy")) for r in points}):
            line = sorted((r for r in points if str(r.get("strategy")) == strategy), key=lambda r: r[key])
            xs, ys = [r[key] for r in line], [100 * r["top1"] for r in line]
            ax.plot(xs, ys, marker="o", label=strategy)
            for r, x, y in zip(line, xs, ys, strict=True):
                ax.annotate(str(r.get("run_name")), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("top-1 (%)")
    axes[0].legend(title="strategy")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def plot_panels(
    lines: dict[str, list[dict[str, Any]]], xs: Sequence[tuple[str, str]], y: str, ylabel: str, path: str | Path,
    yerr: str | None = None,
    reference: dict[str, list[dict[str, Any]]] | None = None, unjoined: Sequence[str] = (),
) -> Path:
    """One panel per ``(x key, x label)``, log x, a line per group of ``lines`` (sorted by x) with optional error
    bars ``yerr`` (a record's value: one half-width, or the distances (below, above) of an asymmetric interval);
    ``reference`` lines are drawn dashed (e.g. the source accuracy beside transfer accuracy), groups
    named in ``unjoined`` as points only (e.g. grid candidates, which are not a family)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(xs), figsize=(5 * len(xs), 4), sharey=True, constrained_layout=True, squeeze=False)
    for ax, (key, label) in zip(axes[0], xs, strict=True):
        for style, groups in (("-", lines), ("--", reference or {})):
            for name, points in groups.items():
                line = sorted(points, key=lambda r: r[key])
                ax.errorbar([r[key] for r in line], [r[y] for r in line], marker="o", capsize=3,
                            linestyle="none" if name in unjoined else style,
                            yerr=_errors([r[yerr] for r in line]) if yerr else None, label=name)
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(ylabel)
    axes[0][0].legend(fontsize=8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, lambda f: f.write(buffer.getvalue()))


def _errors(values: list[Any]) -> list[Any]:
    """Error bars as matplotlib takes them: half-widths as they are, (below, above) pairs as two rows."""
    if values and isinstance(values[0], tuple | list):
        return [[v[0] for v in values], [v[1] for v in values]]
    return values
