"""Several initializations of one architecture, diagnosed side by side."""
from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Sequence, Union

import torch
from torch import nn

from ..api import apply_scheme
from ..table import Table
from .plot import _spaced, plot_reports
from .report import Report
from .results import DiagnosisThresholds, _fmt

__all__ = ["Comparison", "compare_schemes"]


SchemeSpec = Union[Sequence[str], Mapping[str, Callable[[nn.Module], Any]]]


class Comparison(Mapping):
    """Reports for one architecture under several schemes: a read-only ``{scheme: Report}``."""

    def __init__(self, reports: Mapping[str, Report]) -> None:
        self._reports = dict(reports)

    def __getitem__(self, key: str) -> Report:
        return self._reports[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._reports)

    def __len__(self) -> int:
        return len(self._reports)

    def __repr__(self) -> str:
        return f"Comparison({', '.join(f'{k}: {sorted(r.kinds)}' for k, r in self.items())})"

    def table(self, max_rows: int = 12) -> Table:
        """Activation std and gradient std per scheme, side by side, at every layer (or
        ``max_rows`` evenly spaced layers for deeper models), verdicts below."""
        cols = ["layer"]
        for key in self:
            cols += [f"{key} act std", f"{key} grad std"]
        depth = max(len(r) for r in self.values())
        rows = []
        for i in _spaced(depth, max_rows):
            name = next((r.layers[i].name for r in self.values() if i < len(r)), "")
            cells = []
            for r in self.values():
                row = r.layers[i] if i < len(r) else None
                cells += [_fmt(row.out_std if row else None), _fmt(row.grad_out_std if row else None)]
            rows.append([f"{i + 1} ({name})", *cells])
        notes = [f"{key}: {text}" for key, rep in self.items() for text in rep.verdicts]
        return Table("diagnose: activation std / gradient std (across the batch)", cols, rows,
                     right=frozenset(cols[1:]), notes=notes)

    def verdicts(self) -> dict[str, list[str]]:
        """``{scheme: the report's verdict sentences}``, in the compared order."""
        return {k: r.verdicts for k, r in self.items()}

    def to_dict(self) -> dict[str, Any]:
        """``{scheme: Report.to_dict()}``, in the compared order."""
        return {k: r.to_dict() for k, r in self.items()}

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as JSON text (NaN written as null)."""
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, path: str, title: str | None = None) -> str:
        """Write a PNG with every scheme's report overlaid (see :func:`plot_reports`); returns
        ``path``."""
        return plot_reports(self, path, title=title)


def compare_schemes(
    model_factory: Callable[[], nn.Module],
    inputs: Any,
    schemes: SchemeSpec = ("torch", "auto"),
    *,
    targets: torch.Tensor | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    seed: int = 0,
    thresholds: DiagnosisThresholds | None = None,
) -> Comparison:
    """Diagnose the architecture ``model_factory()`` under each scheme, on the same batch.

    ``schemes`` is a list of names: ``"torch"`` (the model as the factory built it),
    ``"auto"`` (``initwise.init(model, inputs, seed=seed)``) or any policy/scheme name
    (``initwise.init(model, inputs, policy=name, seed=seed)``: "xavier_normal", "he",
    "lecun", "orthogonal", "zeros", "small", ...); or a mapping ``{label: fn}`` where ``fn(model)``
    initializes the model in place. Every model is built by the factory with torch's global
    generator seeded with ``seed`` (the caller's random state is restored afterwards).
    Returns a :class:`Comparison` (``{label: Report}``, in the given order).
    """
    if not callable(model_factory):
        raise TypeError(f"model_factory must be a callable returning an nn.Module, got {model_factory!r}")
    if isinstance(schemes, str):
        schemes = [schemes]
    items: list[tuple[str, Any]]
    if isinstance(schemes, Mapping):
        items = list(schemes.items())
    else:
        items = [(str(s), str(s)) for s in schemes]
    if not items:
        raise ValueError("compare_schemes needs at least one scheme")
    reports: dict[str, Report] = {}
    for label, scheme in items:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_factory()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model_factory returned {type(model).__name__}, not an nn.Module")
        if callable(scheme):
            scheme(model)
        else:
            apply_scheme(model, scheme, seed=seed, example_input=inputs)
        from . import diagnose

        reports[label] = diagnose(model, inputs, targets, loss_fn, thresholds=thresholds,
                                  label=label)
    return Comparison(reports)


# ----------------------------------------------------------------------------- plotting
