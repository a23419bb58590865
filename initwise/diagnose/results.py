"""The results of :func:`initwise.diagnose`: thresholds, one record per layer, the residual
streams and the verdicts (plain data; :mod:`.report` builds the report around them)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

__all__ = ["DiagnosisThresholds", "LayerDiagnosis", "Finding", "StreamPoint", "Stream", "KINDS", "INFO_KINDS"]


# ----------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class DiagnosisThresholds:
    """The limits behind the verdicts. Override any of them: ``DiagnosisThresholds(vanish=1e-3)``.

    Activation std is compared with layer 1's, gradient std with the last layer's, through
    chained ratios: the ratio ``std_i / std_{i-1}`` of each pair of consecutive layers (data-flow
    order; backwards for gradients, as per-sample norms) is multiplied in whole, except that
    what the operations between two layers do is left out when they change the per-sample size
    (pooling: architectural rescaling, not a fault of the initialization); see the module
    docstring. With equal sizes throughout this is ``out_std`` of a layer / that of the first
    (``grad_out_std`` / that of the last). The defaults separate the geometric decay of a mismatched scheme (x0.7 per layer for
    Xavier or torch's default on ReLU: 1e-8 after 50 layers) from the slow, polynomial drift of
    a matched one at finite width (He on ReLU, Xavier on tanh: about x0.1-0.3 after 50 layers,
    as the inputs of a deep net become correlated).
    """

    #: activations vanish when some layer's std falls below ``vanish`` x layer 1's (chained ratio)
    vanish: float = 1e-2
    #: activations explode when some layer's std exceeds ``explode`` x layer 1's (chained ratio)
    explode: float = 1e2
    #: gradients vanish when some layer's output-gradient std falls below this x the last
    #: layer's (chained ratio)
    grad_vanish: float = 1e-2
    #: gradients explode when some layer's output-gradient std exceeds this x the last layer's
    #: (chained ratio)
    grad_explode: float = 1e2
    #: a layer is reported for dead units when more than this fraction of its units are dead
    #: (a matched ReLU net of depth 50 has up to ~60% of units silent on a batch in its deepest
    #: layers, as the inputs become correlated with depth: that alone is not a fault)
    dead: float = 0.75
    #: a layer is reported as saturated when more than this fraction of its outputs saturate
    saturated: float = 0.2
    #: |tanh| (and softsign, hardtanh) above this value is saturated
    tanh_saturation: float = 0.99
    #: sigmoid (and hardsigmoid) below this value or above 1 - this value is saturated
    sigmoid_saturation: float = 0.01
    #: two units are duplicates when max|a - b| <= duplicate_rtol * max(max|a|, max|b|)
    duplicate_rtol: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("vanish", "explode", "grad_vanish", "grad_explode", "duplicate_rtol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"DiagnosisThresholds.{name} must be a positive number, got {value!r}")
        for name in ("dead", "saturated", "sigmoid_saturation"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value <= 1):
                raise ValueError(f"DiagnosisThresholds.{name} must be in [0, 1], got {value!r}")
        if not 0 < self.tanh_saturation < 1:
            raise ValueError(f"DiagnosisThresholds.tanh_saturation must be in (0, 1), got {self.tanh_saturation!r}")
        if self.vanish >= 1 or self.grad_vanish >= 1 or self.explode <= 1 or self.grad_explode <= 1:
            raise ValueError("DiagnosisThresholds: vanish limits must be < 1 and explode limits > 1, "
                             f"got {self!r}")


# ----------------------------------------------------------------------------- results
@dataclass
class LayerDiagnosis:
    """The measurements of one parametric layer (see the module docstring for each field)."""

    index: int  #: 1-based position in data-flow order
    name: str  #: qualified module name ("" for the root module)
    type: str  #: module class name
    weight_shape: tuple[int, ...]
    units: int  #: output features / channels
    activation: str | None = None  #: name of the activation that follows, None if none
    #: per-sample output size (elements of the output / batch size); None without a float output.
    #: Used by the verdicts to leave out what size-changing operations between two layers
    #: (pooling, flattening) do to the std; see :class:`DiagnosisThresholds`
    out_numel: int | None = None
    #: per-sample size of the layer's input (its first floating-point argument); None without one
    in_numel: int | None = None
    #: spread across the batch of the layer's input (same definition as ``out_std``)
    in_std: float = math.nan
    out_mean: float = math.nan
    out_std: float = math.nan
    post_std: float = math.nan
    dead: float | None = None
    saturated: float | None = None
    grad_out_std: float | None = None
    grad_weight_std: float | None = None
    #: std of the gradient w.r.t. the layer's input, and w.r.t. the output of the activation
    #: that follows it: measured only around a step where the size changes between two layers
    #: (``in_numel`` of the next layer != ``out_numel``), the only place the verdicts use them
    grad_in_std: float | None = None
    grad_post_std: float | None = None
    duplicates: int = 0
    #: the output is the same for every sample (a position embedding looked up from a buffer,
    #: a constant table): it says nothing about the signal, and no ratio is taken from it
    input_independent: bool = False
    #: every weight of the layer is exactly 0
    zero: bool = False
    #: where the layer sits when that matters for the verdicts: "head" (nothing with weights
    #: follows it before the output), "branch end" (the last layer of a residual branch) or None
    role: str | None = None
    #: its weights are frozen (``requires_grad=False`` before diagnose)
    frozen: bool = False
    #: why units are duplicates: "zero initialization", "constant initialization",
    #: "identical weight rows" or "identical outputs over the batch"; None if no duplicates
    duplicate_cause: str | None = None
    #: a subsample of the post-activation values, for histograms (not in JSON)
    samples: torch.Tensor | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """``"3 (fc3)"``: position and name."""
        return f"{self.index} ({self.name or self.type})"

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON values (NaN as None; the histogram samples left out)."""
        out = {k: v for k, v in asdict(self).items() if k != "samples"}
        out["weight_shape"] = list(self.weight_shape)
        return {k: _finite_or_none(v) for k, v in out.items()}


@dataclass(frozen=True)
class Finding:
    """One verdict: ``kind`` is one of :data:`KINDS`; ``text`` is the sentence, with numbers.

    A verdict about a ratio carries it: ``ratio`` (the chained ratio judged), ``values`` (the
    two stds it compares, from and to) and ``correction`` (what the chain left out where the
    per-sample size changes: pooling), so that ``ratio == values[1] / values[0] * correction``;
    ``path`` names the path it was judged along (a residual stream, or a chain of layers)."""

    kind: str
    text: str
    ratio: float | None = None
    values: tuple[float, float] | None = None
    correction: float = 1.0
    path: str = ""


@dataclass
class StreamPoint:
    """The residual stream after one residual sum: ``block`` (the module the sum runs in),
    ``std`` (spread across the batch of the stream), ``branch_std`` (that of the branch added
    there), ``grad_std`` (std of the gradient w.r.t. the stream) and ``numel`` (per-sample size)."""

    block: str
    std: float = math.nan
    branch_std: float = math.nan
    grad_std: float | None = None
    numel: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: _finite_or_none(v) for k, v in asdict(self).items()}


@dataclass
class Stream:
    """One residual stream: ``name`` (the modules its sums run in, common prefix), ``start``
    (the std of its input) and one :class:`StreamPoint` per sum, in order."""

    name: str
    start: float
    points: list[StreamPoint]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "start": _finite_or_none(self.start),
                "points": [p.to_dict() for p in self.points]}


KINDS = ("symmetry", "vanishing", "exploding", "saturation", "dead", "gradient_vanishing",
         "gradient_exploding", "gradient_blocked", "unjudged", "zero_init", "input_independent", "healthy")
#: Kinds that tell something about the model without being a fault: a deliberate zero
#: initialization (a head or a branch end) and a layer whose output ignores the input.
INFO_KINDS = frozenset({"zero_init", "input_independent", "healthy"})


# ----------------------------------------------------------------------------- formatting
def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0:
        return "0"
    return f"{v:.3g}"


def _pct(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.0%}"
