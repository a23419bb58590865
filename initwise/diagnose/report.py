"""The report of :func:`initwise.diagnose`: layers, residual streams, verdicts, and their
table, JSON and plot."""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..table import Table
from .results import (
    INFO_KINDS,
    DiagnosisThresholds,
    Finding,
    LayerDiagnosis,
    Stream,
    _finite_or_none,
    _fmt,
    _pct,
)
from .verdicts import findings

__all__ = ["Report"]


@dataclass
class Report:
    """What :func:`diagnose` measured: one :class:`LayerDiagnosis` per layer, and the verdicts."""

    layers: list[LayerDiagnosis]
    loss: float
    input_std: float
    thresholds: DiagnosisThresholds = field(default_factory=DiagnosisThresholds)
    label: str | None = None
    #: parametric layers that did not run in the forward pass
    unused: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    #: the residual streams, block by block (empty for a network without residual sums)
    streams: list[Stream] = field(default_factory=list)
    #: layer name -> the layer before it on its chain (read from the recorded graph)
    previous: dict[str, str] = field(default_factory=dict)
    #: layers whose output goes straight into a normalization (its scale is reset there)
    normed: list[str] = field(default_factory=list)
    #: how the data flow was read (the graph's note), for the report's reader
    note: str = ""

    def __post_init__(self) -> None:
        if not self.findings:
            self.findings = findings(self.layers, self.streams, self.previous, self.thresholds, self.normed)

    @property
    def verdicts(self) -> list[str]:
        """The verdicts as plain sentences with numbers."""
        return [f.text for f in self.findings]

    @property
    def kinds(self) -> set[str]:
        """The set of verdict kinds, e.g. ``{"vanishing", "dead"}`` or ``{"healthy"}``."""
        return {f.kind for f in self.findings}

    @property
    def problems(self) -> set[str]:
        """The verdict kinds that are faults (every kind but healthy, zero_init and
        input_independent, which only inform)."""
        return self.kinds - INFO_KINDS

    @property
    def healthy(self) -> bool:
        """No fault found (deliberate zero inits and input-independent layers are not faults)."""
        return "healthy" in self.kinds and not self.problems

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, key: int | str) -> LayerDiagnosis:
        """Layer by position in the list (0-based int) or by qualified name."""
        if isinstance(key, str):
            for layer in self.layers:
                if layer.name == key:
                    return layer
            raise KeyError(f"no layer named {key!r} in the report; layers: "
                           f"{', '.join(l.name for l in self.layers[:10])}...")
        return self.layers[key]

    # -- output
    def table(self, title: str | None = None) -> Table:
        """One row per layer: position, name, type, activation, output mean and std, std after
        the activation, dead and saturated fractions, gradient stds, duplicate units and the
        layer's role (head, branch end; zero, constant over the batch). Prints at the terminal's
        width (``print(report.table())``; ``rich.print`` draws it as a rich table)."""
        rows = []
        for r in self.layers:
            notes = [r.role or "", "zero" if r.zero else "", "input-independent" if r.input_independent else "",
                     "frozen" if r.frozen else ""]
            rows.append([str(r.index), r.name or "(root)", r.type, r.activation or "-",
                         _fmt(r.out_mean), _fmt(r.out_std), _fmt(r.post_std), _pct(r.dead),
                         _pct(r.saturated), _fmt(r.grad_out_std), _fmt(r.grad_weight_std),
                         f"{r.duplicates}/{r.units}" if r.duplicates else "0", ", ".join(n for n in notes if n)])
        cols = ["#", "layer", "type", "act", "out mean", "out std", "post std", "dead", "sat",
                "grad out", "grad W", "dup", "note"]
        return Table(title or (f"diagnose: {self.label}" if self.label else "diagnose"), cols, rows,
                     right=frozenset(cols[4:12]) | {"#"}, notes=list(self.verdicts), key=2)

    def stream_table(self, title: str | None = None) -> Table:
        """The residual streams block by block: the stream's std after each sum, the std of the
        branch added there, their ratio, and the gradient's std w.r.t. the stream."""
        rows = []
        for s in self.streams:
            rows.append([s.name, "input", "", _fmt(s.start), "", "", ""])
            for k, p in enumerate(s.points, 1):
                rows.append(["", str(k), p.block, _fmt(p.std), _fmt(p.branch_std),
                             _fmt(p.branch_std / p.std if p.std and math.isfinite(p.std) else None),
                             _fmt(p.grad_std)])
        cols = ["stream", "sum", "block", "stream std", "branch std", "branch/stream", "grad std"]
        return Table(title or "diagnose: residual streams (std across the batch)", cols, rows,
                     right=frozenset(cols[3:]) | {"sum"})

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON values: label, loss, input std, thresholds, verdicts (the
        sentences), findings (kind and sentence), unused layers and one dict per layer (see
        :meth:`LayerDiagnosis.to_dict`); NaN written as None."""
        return {
            "label": self.label,
            "loss": _finite_or_none(self.loss),
            "input_std": _finite_or_none(self.input_std),
            "thresholds": asdict(self.thresholds),
            "verdicts": self.verdicts,
            "findings": [asdict(f) for f in self.findings],
            "unused": list(self.unused),
            "note": self.note,
            "streams": [s.to_dict() for s in self.streams],
            "layers": [r.to_dict() for r in self.layers],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (NaN written as null; histogram samples left out)."""
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, path: str, *others: Report, title: str | None = None) -> str:
        """Write a PNG: this report (and ``others``, overlaid); see :func:`plot_reports`."""
        from .plot import plot_reports

        return plot_reports([self, *others], path, title=title)


