"""Plots of diagnose reports: activation and gradient std per layer, the residual streams,
histograms of the post-activation values at a few depths."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Sequence

import torch

from ..atomic import savefig
from .report import Report
from .results import KINDS

__all__ = ["plot_reports"]


def _spaced(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def plot_reports(reports: Report | Sequence[Report] | Mapping[str, Report], path: str, *,
                 title: str | None = None, depths: Sequence[int] | None = None) -> str:
    """Write a PNG comparing one or several reports (one colour each) and return ``path``.

    Top: activation std (across the batch) and gradient std per layer, log scale (an exact 0
    is drawn at the bottom of the axis with an "x"). Bottom: histograms of the post-activation
    values at a few depths (``depths``: 1-based layer positions; default first, 1/3, 2/3, last).
    """
    # A bare Figure renders with Agg by itself: no pyplot, no change to the global backend.
    from matplotlib import rcParams
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if isinstance(reports, Report):
        items = [(reports.label or "model", reports)]
    elif isinstance(reports, Mapping):
        items = [(str(k), r) for k, r in reports.items()]
    else:
        items = [(r.label or f"model {i + 1}", r) for i, r in enumerate(reports)]
    if not items:
        raise ValueError("plot_reports needs at least one report")
    depth = max(len(r) for _, r in items)
    if depths is None:
        depths = [i + 1 for i in _spaced(depth, 4)]
    depths = [d for d in depths if 1 <= d <= depth][:6] or [1]

    fig = Figure(figsize=(max(11.0, 3.2 * len(depths)), 7.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.25, 1.0])
    with_streams = any(r.streams for _, r in items)
    top_axes = top.subplots(1, 3 if with_streams else 2)
    ax_act, ax_grad = top_axes[0], top_axes[1]
    hist_axes = bottom.subplots(1, len(depths), squeeze=False)[0]
    bottom.suptitle("post-activation values at a few depths (density, log scale, central 99.8%; "
                    "shared bins per depth)", fontsize=9)
    colors = rcParams["axes.prop_cycle"].by_key()["color"]

    def series(ax, key: str, ylabel: str, heading: str) -> None:
        for i, (label, rep) in enumerate(items):
            xs = [r.index for r in rep.layers]
            ys = [getattr(r, key) for r in rep.layers]
            ys = [v if v is not None and math.isfinite(v) else math.nan for v in ys]
            pos = [v if v > 0 else math.nan for v in ys]
            kinds = ", ".join(k for k in KINDS if k in rep.kinds)
            ax.plot(xs, pos, marker="o", ms=2.5, lw=1.4, color=colors[i % len(colors)],
                    label=f"{label} ({kinds})")
            zeros = [x for x, v in zip(xs, ys) if v == 0]
            if zeros:
                ax.plot(zeros, [0.02] * len(zeros), "x", color=colors[i % len(colors)],
                        transform=ax.get_xaxis_transform(), ms=4)
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer (data-flow order)")
        ax.set_ylabel(ylabel)
        ax.set_title(heading, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)

    series(ax_act, "out_std", "std of layer output", "activations: std across the batch")
    series(ax_grad, "grad_out_std", "std of dLoss/d(output)", "gradients w.r.t. layer outputs")
    ax_act.legend(fontsize=7, loc="best")
    if with_streams:
        _plot_streams(top_axes[2], items, colors)

    for ax, d in zip(hist_axes, depths):
        pooled = [r.layers[d - 1].samples for _, r in items
                  if d - 1 < len(r) and r.layers[d - 1].samples is not None]
        if not pooled:
            ax.set_axis_off()
            continue
        allv = torch.cat(pooled)
        allv = allv[torch.isfinite(allv)]
        lo = float(torch.quantile(allv, 0.001)) if allv.numel() else -1.0
        hi = float(torch.quantile(allv, 0.999)) if allv.numel() else 1.0
        if lo > 0 and lo < 0.25 * hi or hi < 0 and hi > 0.25 * lo:
            lo, hi = min(lo, 0.0), max(hi, 0.0)  # show the distance from 0 when it is small
        if not hi > lo:
            lo, hi = lo - 0.5 * (abs(lo) + 1e-30), hi + 0.5 * (abs(hi) + 1e-30)
        bins = torch.linspace(lo, hi, 61).tolist()
        for i, (label, rep) in enumerate(items):
            if d - 1 >= len(rep) or rep.layers[d - 1].samples is None:
                continue
            v = rep.layers[d - 1].samples
            v = v[(v >= lo) & (v <= hi)].numpy()  # the central 99.8% of the pooled values
            ax.hist(v, bins=bins, histtype="step", density=True, lw=1.3, log=True,
                    color=colors[i % len(colors)], label=label)
        ref = next(r for _, r in items if d - 1 < len(r)).layers[d - 1]
        act = ref.activation or "no activation"
        ax.set_title(f"layer {d} ({ref.name or ref.type}), after {act}", fontsize=9)
        ax.set_yticks([], minor=True)
        ax.set_yticks([])
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    fig.suptitle(title or "initwise diagnose: signal and gradient flow at initialization",
                 fontsize=11)
    savefig(fig, path, dpi=110)
    return path


def _plot_streams(ax: Any, items: list[tuple[str, Report]], colors: list[str]) -> None:
    """The residual stream's std after each sum (solid) and the branch added there (dashed)."""
    from matplotlib.ticker import MaxNLocator

    for i, (label, rep) in enumerate(items):
        color = colors[i % len(colors)]
        for k, s in enumerate(rep.streams):
            xs = list(range(1, len(s.points) + 1))
            ys = [p.std if p.std > 0 else math.nan for p in s.points]
            bs = [p.branch_std if p.branch_std > 0 else math.nan for p in s.points]
            ax.plot(xs, ys, marker="o", ms=2.5, lw=1.4, color=color,
                    label=f"{label}: {s.name}" if k < 2 else None)
            ax.plot(xs, bs, ls="--", lw=1.0, color=color)
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("residual sum (block)")
    ax.set_ylabel("std across the batch")
    ax.set_title("residual stream (solid) and branches added (dashed)", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
