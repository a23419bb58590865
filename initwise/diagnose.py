"""Signal and gradient flow at initialization: one forward and one backward pass, measured.

``diagnose(model, inputs)`` runs the model once forward and once backward on a batch and
reports, for every parametric layer (a module with a weight of two or more dimensions) in the
order its forward pass ends:

* ``out_mean``, ``out_std``: mean of the layer's output, and its spread across the batch: the
  std of each unit over the batch (dim 0), averaged over the units (every non-batch position).
  A constant offset, such as the one biases leave once the input signal has died, is not
  signal and does not count;
* ``post_std``: the same spread after the activation that follows the layer (the first
  elementwise activation, module or functional, that runs after the layer and before the next
  layer starts, on a tensor of the same size); the layer's own output if none follows;
* ``dead``: for a ReLU-family activation (relu, relu6, hardtanh with a lower bound 0), the
  fraction of units whose output is exactly 0 for the whole batch (dead ReLUs); ``None`` for
  other activations;
* ``saturated``: fraction of post-activation outputs (units x batch) in the flat part of a
  saturating activation: ``|tanh| > 0.99``, ``sigmoid < 0.01 or > 0.99``, a hardtanh at its
  bounds; ``None`` for non-saturating activations;
* ``grad_out_std``, ``grad_weight_std``: std (over all elements) of the gradient of the loss
  with respect to the layer's output and with respect to its weight(s);
* ``duplicates``: number of units (output features / channels) that have an identical twin in
  the same layer: identical outputs over the batch, up to a relative tolerance
  ``duplicate_rtol`` (1e-5) of the larger of the two (units with identical weight rows, bias
  included, have identical outputs). Two units whose outputs are constant over the batch
  count only if their weight rows are identical too: equal constants left by the biases are a
  vanished signal, not a symmetry. Layers whose output cannot be split per unit are judged on
  their weight rows alone.

* ``out_numel``: the per-sample size of the output (its number of elements / batch size).

From these, :class:`Report` derives verdicts in words: symmetry, vanishing or exploding
activations, saturation, dead units, vanishing or exploding gradients, or healthy. The limits
are the fields of :class:`DiagnosisThresholds` (documented defaults, overridable).

Vanishing and exploding are judged on what the initialization does, not on the architecture.
Each step between consecutive layers (data-flow order) splits as
``out_i / out_(i-1) = (out_i / in_i) * (in_i / post_(i-1)) * (post_(i-1) / out_(i-1))``: the
layer's own gain (``in_std``: the spread of its input), what the parameter-free operations
between the activation and the next layer do, and the activation. The middle factor is left
out (x1) only when it changes the per-sample size (``in_numel`` of layer i != ``out_numel`` of
layer i-1: pooling, global average pooling); everything else is counted at every step, so
strided and transposed convolutions and changes of width are judged. (A global average pool
over H x W positions alone makes the head's activations ~sqrt(HW) and the convs' gradients ~HW
smaller whatever the initialization.) Gradients chain backwards the same way, in per-sample
norms (``grad_out_std x sqrt(out_numel)``; ``grad_in_std`` and ``grad_post_std`` give the
split around a change of size): a layer scaled by its fan-in keeps the forward std per
element and the backward norm per sample whatever the change of size, so an upsampling
decoder's gradients, larger per element in its smaller layers, are not blamed on the init.
Activations chain from the first layer forward, gradients from the last layer backward; the
limits apply to these chained ratios. In a network of equal-size layers (an MLP, a CNN at one
resolution) the chained ratio is simply the std of a layer over that of the first (last). A
report in which no step could be compared says so (``unjudged``) instead of ``healthy``.

The references: Glorot & Bengio 2010 (activation and gradient histograms per layer,
saturation of deep tanh/sigmoid nets), He et al. 2015 (ReLU nets halve or keep the signal
variance at every layer), Saxe et al. 2014 and Klambauer et al. 2017 (signal propagation).
The model's weights, gradients (``.grad``), buffers, train/eval mode and ``requires_grad`` flags
are left as they were, and every hook is removed, even when the forward pass raises.
"""
from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .api import apply_scheme
from .atomic import savefig
from .inputs import call_model

__all__ = [
    "DiagnosisThresholds", "LayerDiagnosis", "Finding", "Report", "Comparison",
    "diagnose", "compare_schemes", "plot_reports",
]


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
    """One verdict: ``kind`` is one of ``symmetry``, ``vanishing``, ``exploding``,
    ``saturation``, ``dead``, ``gradient_vanishing``, ``gradient_exploding``, ``unjudged``
    (no step between layers could be compared), ``healthy``;
    ``text`` is the sentence, with numbers."""

    kind: str
    text: str


KINDS = ("symmetry", "vanishing", "exploding", "saturation", "dead", "gradient_vanishing",
         "gradient_exploding", "gradient_blocked", "unjudged", "healthy")


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

    def __post_init__(self) -> None:
        if not self.findings:
            self.findings = _findings(self.layers, self.thresholds)

    @property
    def verdicts(self) -> list[str]:
        """The verdicts as plain sentences with numbers."""
        return [f.text for f in self.findings]

    @property
    def kinds(self) -> set[str]:
        """The set of verdict kinds, e.g. ``{"vanishing", "dead"}`` or ``{"healthy"}``."""
        return {f.kind for f in self.findings}

    @property
    def healthy(self) -> bool:
        return self.kinds == {"healthy"}

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
    def table(self, title: str | None = None) -> Any:
        """A ``rich.table.Table`` with one row per layer (needs ``rich``)."""
        from rich.table import Table

        table = Table(title=title or (f"diagnose: {self.label}" if self.label else "diagnose"),
                      title_justify="left")
        for col, justify in (("#", "right"), ("layer", "left"), ("type", "left"),
                             ("act", "left"), ("out mean", "right"), ("out std", "right"),
                             ("post std", "right"), ("dead", "right"), ("sat", "right"),
                             ("grad out", "right"), ("grad W", "right"), ("dup", "right")):
            table.add_column(col, justify=justify)
        for r in self.layers:
            table.add_row(
                str(r.index), r.name or "(root)", r.type, r.activation or "-",
                _fmt(r.out_mean), _fmt(r.out_std), _fmt(r.post_std), _pct(r.dead),
                _pct(r.saturated), _fmt(r.grad_out_std), _fmt(r.grad_weight_std),
                f"{r.duplicates}/{r.units}" if r.duplicates else "0",
            )
        return table

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
            "layers": [r.to_dict() for r in self.layers],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as JSON (NaN written as null; histogram samples left out)."""
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, path: str, *others: Report, title: str | None = None) -> str:
        """Write a PNG: this report (and ``others``, overlaid); see :func:`plot_reports`."""
        return plot_reports([self, *others], path, title=title)


# ----------------------------------------------------------------------------- measuring
# Elementwise activations recognised in the forward pass, by function name (module
# activations call these too), with how they saturate.
_ACTIVATIONS: dict[str, str | None] = {
    "relu": "relu", "relu6": "relu", "leaky_relu": None, "rrelu": None, "prelu": None, "elu": None,
    "selu": None, "celu": None, "gelu": None, "silu": None, "mish": None, "softplus": None,
    "hardswish": None, "tanh": "tanh", "softsign": "tanh", "hardtanh": "hardtanh",
    "sigmoid": "sigmoid", "hardsigmoid": "sigmoid", "logsigmoid": None,
}
_CHANNEL_FIRST = (nn.modules.conv._ConvNd,)
# The statistics computed inside forward hooks must not go through our own torch-function mode
# (that would cost a Python call per tensor operation); DisableTorchFunction turns modes off.
_quiet = getattr(torch._C, "DisableTorchFunction", contextlib.nullcontext)
_MAX_DUP_COLUMNS = 1024


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _layer_params(layer: nn.Module) -> list[nn.Parameter]:
    """The layer's own parameters with >= 2 dims (and the originals of a parametrized weight)."""
    params = [p for p in layer.parameters(recurse=False) if p.dim() >= 2]
    parametrizations = getattr(layer, "parametrizations", None)
    if isinstance(parametrizations, nn.ModuleDict):
        for plist in parametrizations.values():
            params += [p for p in plist.parameters() if p.dim() >= 2]
    return params


def _parametric_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules owning a parameter of 2+ dims (a parametrized weight belongs to its module, not
    to the ``parametrizations`` container that computes it)."""
    from torch.nn.utils.parametrize import ParametrizationList

    inner = {id(p) for m in model.modules() if isinstance(m, ParametrizationList)
             for p in m.modules()}
    return [(name, m) for name, m in model.named_modules()
            if id(m) not in inner and _layer_params(m)]


def _weight(layer: nn.Module, params: list[nn.Parameter]) -> torch.Tensor:
    weight = getattr(layer, "weight", None)
    if not (isinstance(weight, torch.Tensor) and weight.dim() >= 2):
        weight = params[0]
    return weight


def _units(layer: nn.Module, params: list[nn.Parameter]) -> int:
    """Number of output units (features, channels) of the layer."""
    shape = _weight(layer, params).shape
    if isinstance(layer, (nn.modules.conv._ConvTransposeNd, nn.Embedding)):
        return shape[1] * (getattr(layer, "groups", 1) if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 1)
    return shape[0]


def _weight_rows(layer: nn.Module, params: list[nn.Parameter]) -> tuple[torch.Tensor, int]:
    """The layer's weight as (units, inputs), with the bias appended as a last column, and the
    number of weight columns."""
    w = _weight(layer, params).detach()
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        groups = getattr(layer, "groups", 1)
        # (in, out/groups, *k) -> (out, in/groups, *k): unit j of group g reads input block g
        w = torch.cat([blk.transpose(0, 1) for blk in w.chunk(groups, dim=0)], dim=0)
    elif isinstance(layer, nn.Embedding):
        w = w.t()
    rows = w.reshape(w.shape[0], -1)
    n_weight = rows.shape[1]
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.numel() == rows.shape[0]:
        rows = torch.cat([rows, bias.detach().reshape(-1, 1).to(rows.dtype)], dim=1)
    return rows.float(), n_weight


_DIRECTIONS: dict[int, tuple[torch.Tensor, float]] = {}


def _direction(n: int) -> tuple[torch.Tensor, float]:
    """A fixed vector of ``n`` positive pseudo-random weights in [0.5, 1.5), and its sum
    (cached, CPU)."""
    found = _DIRECTIONS.get(n)
    if found is None:
        gen = torch.Generator(device="cpu").manual_seed(n)
        d = torch.rand(n, generator=gen).add_(0.5)
        found = _DIRECTIONS[n] = (d, float(d.sum()))
    return found


def _duplicate_mask(rows: torch.Tensor, rtol: float,
                    confirm: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
    """Boolean (units,): units whose row equals another unit's row up to ``rtol``, i.e.
    ``max|a - b| <= rtol * max(max|a|, max|b|)``; ``None`` when no unit has a twin.

    Rows are sorted by a fixed random projection ``key = row . d`` (``d`` in [0.5, 1.5)):
    identical rows get equal keys and end up next to each other, and two rows can only be equal
    if their keys differ by at most ``rtol * max|rows| * sum(d)``; only such neighbours are
    compared element by element. O(units x columns), a handful of tensor operations when no
    unit has a twin.

    ``confirm`` (returns units x k, the weight rows when ``rows`` are outputs; called only when
    some rows are equal): two equal rows that are
    constant (spanning no more than ``rtol`` x their scale) count only if their ``confirm``
    rows are equal too: units left with nothing but their bias carry no signal, and equal
    constants are a vanished signal, not a symmetry.
    """
    n = rows.shape[0]
    if n < 2 or rows.shape[1] == 0:
        return None
    direction, total = _direction(rows.shape[1])
    keys, order = torch.sort(rows @ direction.to(device=rows.device, dtype=rows.dtype))
    bound = rtol * float(rows.abs().max()) * total * 1.001
    pairs = (keys.diff().abs() <= bound).nonzero().reshape(-1)
    if pairs.numel() == 0:
        return None
    ia, ib = order[pairs], order[pairs + 1]
    a, b = rows[ia], rows[ib]
    sa, sb = a.abs().amax(dim=1), b.abs().amax(dim=1)
    same = (a - b).abs().amax(dim=1) <= rtol * torch.maximum(sa, sb)
    if confirm is not None:
        varies = (((a.amax(dim=1) - a.amin(dim=1)) > rtol * sa)
                  & ((b.amax(dim=1) - b.amin(dim=1)) > rtol * sb))
        other = confirm()
        ca, cb = other[ia], other[ib]
        same_confirm = (ca - cb).abs().amax(dim=1) <= rtol * torch.maximum(
            ca.abs().amax(dim=1), cb.abs().amax(dim=1))
        same &= varies | same_confirm
    if not bool(same.any()):
        return None
    mask = torch.zeros(n, dtype=torch.bool, device=rows.device)
    mask[ia[same]] = True
    mask[ib[same]] = True
    return mask


def _mean_spread(x: torch.Tensor) -> tuple[float, float]:
    """Mean of ``x`` (batch, units), and its spread: the std over the batch (dim 0) of each
    unit, averaged over units (one layer; :func:`_mean_spreads` does several at once)."""
    means, spreads = _mean_spreads(x.unsqueeze(0))
    return float(means[0]), float(spreads[0])


def _mean_spreads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``x`` (layers, batch, units): the mean of each layer's values, and its spread: the
    std over the batch (dim 1) of each unit, averaged over units. Two tensors of shape (layers,).

    Two passes (centre, then square) as ``Tensor.std`` does, written out because the strided
    reduction of ``x.std(dim=1)`` is several times slower on CPU.
    """
    means = x.mean(dim=1, keepdim=True)
    spreads = (x - means).square_().sum(dim=1).div_(x.shape[1] - 1).sqrt_().mean(dim=1)
    tiny = _underflowed(spreads)
    if tiny is not None:  # squares below float32's range: measure those layers again in float64
        spreads[tiny] = _mean_spreads(x[tiny].double())[1].to(spreads.dtype)
    return means.mean(dim=(1, 2)), spreads


def _underflowed(values: torch.Tensor) -> torch.Tensor | None:
    """Indices of float32 results small enough that squaring may have flushed them towards 0
    (a signal of 1e-29 squares to 1e-58); None when there are none (the usual case)."""
    if values.dtype == torch.float64:
        return None
    idx = (values < 1e-17).nonzero().flatten()
    return idx if idx.numel() else None


def _stds(x: torch.Tensor) -> torch.Tensor:
    """Std (n - 1) over all the elements of each row of ``x`` (rows, n): two passes, as
    ``Tensor.std``; NaN for rows of one element."""
    if x.shape[1] < 2:
        return torch.full(x.shape[:1], math.nan, dtype=x.dtype, device=x.device)
    stds = (x - x.mean(dim=1, keepdim=True)).square_().sum(dim=1).div_(x.shape[1] - 1).sqrt_()
    tiny = _underflowed(stds)
    if tiny is not None:  # as in _mean_spreads: squares below float32's range
        stds[tiny] = _stds(x[tiny].double()).to(stds.dtype)
    return stds


def _output_columns(y: torch.Tensor, cdim: int, limit: int) -> torch.Tensor:
    """(units, <= limit) values of each unit (along ``cdim``) over an even subsample of the batch
    and positions, without copying the whole output."""
    y4 = _sampled_units(y.unsqueeze(0), cdim, limit)
    return y4[0].permute(1, 0, 2).reshape(y4.shape[2], -1)


def _sampled_units(y: torch.Tensor, cdim: int, limit: int) -> torch.Tensor:
    """For ``y`` (layers, batch, ...) with the units along ``cdim`` (a dim of one layer's output):
    (layers, batch', units, positions') with an even subsample of <= ``limit`` (batch',
    positions') pairs, a view when nothing is left out. Unit ``u`` of layer ``l`` has the
    values ``[l, :, u, :]``, which :func:`_output_columns` lays out as one row."""
    n_layers, n, units = y.shape[0], y.shape[1], y.shape[cdim + 1]
    y4 = y.movedim(cdim + 1, 2).reshape(n_layers, n, units, -1)
    n_keep = min(n, limit)
    if n_keep < n:
        y4 = y4[:, torch.linspace(0, n - 1, n_keep, device=y.device).long()]
    p_keep = max(1, limit // n_keep)
    if y4.shape[3] > p_keep:
        y4 = y4[:, :, :, torch.linspace(0, y4.shape[3] - 1, p_keep, device=y.device).long()]
    return y4


def _maybe_duplicates(y4: torch.Tensor, rtol: float) -> list[int]:
    """The layers in which some unit may have a twin, for ``y4`` from :func:`_sampled_units`
    (layers, batch', units, positions'): the first steps of :func:`_duplicate_mask` on each
    layer's :func:`_output_columns` (projection, sort, comparison of neighbours, with a bound
    0.2% looser), for all layers at once. A layer not listed has no duplicate unit; a listed
    one is checked by :func:`_duplicate_mask` itself."""
    n_layers, n, units, p = y4.shape
    if units < 2 or n * p == 0:
        return []
    direction, total = _direction(n * p)
    direction = direction.to(device=y4.device, dtype=y4.dtype)
    if p == 1:  # (batch,) @ (layers, batch, units): no copy of the transposed columns
        keys = torch.matmul(direction, y4[..., 0])
    else:
        keys = torch.matmul(y4.permute(0, 2, 1, 3).reshape(n_layers, units, -1), direction)
    keys, order = torch.sort(keys, dim=1)
    bound = y4.abs().amax(dim=(1, 2, 3)).mul_(rtol * total * 1.002)
    li, pi = (keys.diff(dim=1).abs() <= bound.unsqueeze(1)).nonzero(as_tuple=True)
    if li.numel() == 0:
        return []
    cols = y4.permute(0, 2, 1, 3)
    a = cols[li, order[li, pi]].reshape(li.numel(), -1)
    b = cols[li, order[li, pi + 1]].reshape(li.numel(), -1)
    same = (a - b).abs().amax(dim=1) <= rtol * torch.maximum(a.abs().amax(dim=1),
                                                            b.abs().amax(dim=1))
    return sorted(set(li[same].tolist()))


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _chunks(items: list[Any], numel: int) -> Iterator[list[Any]]:
    """``items`` (all of ``numel`` elements) in runs of at most ``_STACK_LIMIT`` elements."""
    per = max(1, _STACK_LIMIT // max(numel, 1))
    for i in range(0, len(items), per):
        yield items[i:i + per]


def _grouped(items: list[Any], key: Callable[[Any], Any]) -> list[list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


# Same-shaped tensors are stacked and measured together, a few layers at a time (at most this
# many elements per stack): a handful of tensor operations for all of them instead of a handful
# per layer.
_STACK_LIMIT = 1 << 18


@dataclass
class _Output:
    """A layer's output, kept (a float copy) until the statistics are computed."""

    rec: LayerDiagnosis
    module: nn.Module
    params: list[nn.Parameter]
    y: torch.Tensor
    cdim: int | None  #: the units' dim, None if the output cannot be split per unit
    version: int = 0  #: ``y._version`` when kept (a later in-place change shows in it)


@dataclass
class _Post:
    """The activation that follows a layer, and its output (a float copy)."""

    rec: LayerDiagnosis
    kind: str | None
    y: torch.Tensor
    bounds: tuple[float, float] | None = None  #: a hardtanh's (min_val, max_val)
    version: int = 0  #: ``y._version`` when kept
    src: torch.Tensor | None = None  #: the activation's output itself (for a gradient hook)


@dataclass
class _Input:
    """A layer's input (batch, -1), kept until the statistics are computed; or ``alias``, the
    kept output or activation output of the previous layer that it is (then nothing is kept)."""

    rec: LayerDiagnosis
    y: torch.Tensor | None
    alias: _Output | _Post | None = None
    version: int = 0


def _same_values(x: torch.Tensor, item: _Output | _Post) -> bool:
    """Whether ``x`` holds the values kept in ``item`` now (same memory, size, batch dim, not
    written since), so that its spread is the one measured there."""
    y = item.y
    return (x.data_ptr() == y.data_ptr() and x.numel() == y.numel() and x.shape[0] == y.shape[0]
            and x.dtype == y.dtype and x._version == item.version and x.is_contiguous()
            and y.is_contiguous())


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A float copy of ``t``."""
    t = t.detach()
    return t.clone() if t.dtype == torch.float32 else t.float()


def _writes_in_place(func: Any, kwargs: dict) -> bool:
    """Whether a torch function call may write into its first argument or ``out``: ``add_``,
    ``__iadd__``, ``__setitem__``, ``F.relu(x, inplace=True)``, ``torch.add(a, b, out=c)``."""
    name = getattr(func, "__name__", "")
    if name.endswith("__"):
        return name.startswith("__i") or name == "__setitem__"
    return name.endswith("_") or kwargs.get("inplace") is True or kwargs.get("out") is not None


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Recorder(TorchFunctionMode):
    """Forward hooks on the layers + a torch-function mode that sees every activation call.

    During the passes the hooks only keep copies of the tensors to measure (layer outputs,
    activation outputs, gradients w.r.t. the layer outputs); :meth:`measure` computes every
    statistic afterwards, stacking same-shaped tensors of several layers so that the cost is a
    few tensor operations per shape rather than per layer.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], thresholds: DiagnosisThresholds,
                 n_samples: int, copy: bool = False) -> None:
        super().__init__()
        self.th = thresholds
        self.n_samples = n_samples
        self.copy = copy
        # kept tensors that are not copies, by storage: copied before an in-place write
        self.shared: dict[int, list[_Output | _Post]] = {}
        self.names = {id(m): name for name, m in layers}
        self.params = {id(m): _layer_params(m) for _, m in layers}
        self.records: dict[int, LayerDiagnosis] = {}
        self.order: list[LayerDiagnosis] = []
        self.pending: tuple[LayerDiagnosis, torch.Size] | None = None
        self.outputs: list[_Output] = []
        self.posts: list[_Post] = []
        self.inputs: list[_Input] = []
        self.grads: dict[int, torch.Tensor] = {}  # rec.index -> grad w.r.t. the layer output
        self.grads_in: dict[int, torch.Tensor] = {}  # rec.index -> grad w.r.t. the layer input
        self.grads_post: dict[int, torch.Tensor] = {}  # rec.index -> grad w.r.t. its activation

    # -- torch function mode: activation calls
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.shared and _writes_in_place(func, kwargs):
            self._protect(args[0] if args else None, kwargs.get("out"))
        out = func(*args, **kwargs)
        if self.pending is not None and isinstance(out, torch.Tensor):
            name = getattr(func, "__name__", "").rstrip("_")
            if name in _ACTIVATIONS:
                rec, shape = self.pending
                if out.dim() >= 1 and out.shape[0] == shape[0] and out.numel() == shape.numel():
                    self.pending = None
                    self._post_activation(rec, name, out, args, kwargs)
        return out

    def _post_activation(self, rec: LayerDiagnosis, name: str, out: torch.Tensor,
                         args: tuple, kwargs: dict) -> None:
        rec.activation = name
        kind = _ACTIVATIONS[name]
        bounds = None
        if kind == "hardtanh":
            bounds = (float(kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)),
                      float(kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)))
        self._keep(_Post(rec, kind, out.detach().reshape(out.shape[0], -1), bounds, src=out))

    # -- module hooks
    def pre_hook(self, module: nn.Module, args: Any) -> None:
        self.pending = None

    def hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in self.records:  # called again (shared layer): first call only
            return
        with _quiet():
            self._record(module, args, output)

    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        name = self.names[id(module)]
        t = _first_tensor(output)
        params = self.params[id(module)]
        rec = LayerDiagnosis(index=len(self.order) + 1, name=name, type=type(module).__name__,
                             weight_shape=tuple(_weight(module, params).shape),
                             units=_units(module, params))
        prev = self.order[-1] if self.order else None
        self.records[id(module)] = rec
        self.order.append(rec)
        self._record_input(rec, prev, _first_tensor(args))
        if t is None or not t.is_floating_point():
            return
        if t.dim() < 1 or t.shape[0] < 2:
            raise ValueError(
                f"layer {name!r} ({type(module).__name__}) returned shape {tuple(t.shape)}: "
                "diagnose measures the spread across the batch, so it needs inputs with a batch "
                "dimension first and at least 2 samples")
        rec.out_numel = t.numel() // t.shape[0]
        # outputs per unit (channel): channel-first layers use dim 1, others the last dim
        cdim = 1 if isinstance(module, _CHANNEL_FIRST) and t.dim() > 2 else t.dim() - 1
        if not (t.dim() >= 2 and t.shape[cdim] == rec.units):
            cdim = None
        self._keep(_Output(rec, module, params, t.detach(), cdim))
        if t.requires_grad:
            t.register_hook(self._grad_hook(rec.index))
        self.pending = (rec, t.shape)

    def _record_input(self, rec: LayerDiagnosis, prev: LayerDiagnosis | None,
                      x: torch.Tensor | None) -> None:
        """Keep the layer's input (or note which kept tensor of the previous layer it is); around
        a change of size from the previous layer, hook the gradients w.r.t. the input and
        w.r.t. the previous layer's activation output."""
        if x is None or not x.is_floating_point() or x.dim() < 1 or x.shape[0] < 2:
            return
        rec.in_numel = x.numel() // x.shape[0]
        last = [item for item in (self.posts[-1:] + self.outputs[-1:]) if item.rec is prev]
        alias = next((item for item in last if _same_values(x, item)), None)
        if alias is not None:
            self.inputs.append(_Input(rec, None, alias))
        else:
            self._keep(_Input(rec, x.detach().reshape(x.shape[0], -1)))
        if prev is None or prev.out_numel is None or prev.out_numel == rec.in_numel:
            return
        if x.requires_grad:
            x.register_hook(self._grad_hook(rec.index, self.grads_in))
        post = next((p for p in self.posts[-1:] if p.rec is prev), None)
        if post is not None and post.src is not None and post.src.requires_grad:
            post.src.register_hook(self._grad_hook(prev.index, self.grads_post))

    # -- kept tensors
    def _keep(self, item: _Output | _Post | _Input) -> None:
        """Keep ``item.y`` until the statistics are computed: a reference (copied only if an
        in-place operation is about to change it), or a float copy with ``copy=True``."""
        if self.copy or item.y.dtype != torch.float32:
            item.y = _copy(item.y)
        else:
            self.shared.setdefault(_storage_key(item.y), []).append(item)
        item.version = item.y._version
        (self.outputs if isinstance(item, _Output) else
         self.posts if isinstance(item, _Post) else self.inputs).append(item)

    def _protect(self, *targets: Any) -> None:
        """Copy the kept tensors that share storage with ``targets`` (about to be written)."""
        for t in targets:
            if isinstance(t, (tuple, list)):
                self._protect(*t)
            elif isinstance(t, torch.Tensor):
                for item in self.shared.pop(_storage_key(t), ()):
                    if item.y._version == item.version:
                        item.y = _copy(item.y)
                        item.version = item.y._version

    def stale(self) -> bool:
        """Whether a kept tensor was changed in place without being copied first (an in-place
        write this mode did not see): the statistics would be wrong, measure again with copies."""
        return any(item.y._version != item.version
                   for item in (*self.outputs, *self.posts, *self.inputs) if item.y is not None)

    def _grad_hook(self, index: int, into: dict[int, torch.Tensor] | None = None
                   ) -> Callable[[torch.Tensor], None]:
        into = self.grads if into is None else into

        def hook(grad: torch.Tensor) -> None:
            if index not in into:
                into[index] = grad.detach()
        return hook

    # -- statistics, after the backward pass
    def measure(self) -> None:
        """Fill in every statistic of the records from the kept tensors (and drop them)."""
        with _quiet(), torch.no_grad():
            self._measure_outputs()
            self._measure_posts()
            self._measure_inputs()
            self._measure_grads()
        self.outputs, self.posts, self.inputs = [], [], []
        self.grads, self.grads_in, self.grads_post = {}, {}, {}

    def _samples(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """An even subsample of ``n_samples`` values of each row of ``flat`` (layers, n)."""
        if flat.shape[1] > self.n_samples:
            flat = flat[:, :: -(-flat.shape[1] // self.n_samples)]
        return list(flat.to("cpu", copy=True).unbind(0))

    def _measure_outputs(self) -> None:
        rtol = self.th.duplicate_rtol
        groups = _grouped(self.outputs, lambda o: (o.y.shape, o.y.device, o.cdim))
        for group in groups:
            shape = group[0].y.shape
            for chunk in _chunks(group, shape.numel()):
                y = _stack([o.y for o in chunk])
                flat = y.reshape(len(chunk), shape[0], -1)
                means, spreads = _mean_spreads(flat)
                samples = self._samples(flat.reshape(len(chunk), -1))
                for o, m, s, sample in zip(chunk, means.tolist(), spreads.tolist(), samples):
                    o.rec.out_mean, o.rec.out_std = m, s
                    # post-activation = the output itself until an activation is seen
                    o.rec.post_std = s
                    o.rec.samples = sample
                cdim = chunk[0].cdim
                maybe = (range(len(chunk)) if cdim is None else
                         _maybe_duplicates(_sampled_units(y, cdim, _MAX_DUP_COLUMNS), rtol))
                for i in maybe:
                    o = chunk[i]
                    self._duplicates(o.rec, o.module, o.params, y[i], o.cdim)

    def _measure_posts(self) -> None:
        th = self.th
        for group in _grouped(self.posts, lambda p: (p.y.shape, p.y.device, p.kind, p.bounds)):
            shape, kind, bounds = group[0].y.shape, group[0].kind, group[0].bounds
            for chunk in _chunks(group, shape.numel()):
                y = _stack([p.y for p in chunk])
                _, spreads = _mean_spreads(y)
                samples = self._samples(y.reshape(len(chunk), -1))
                dead = saturated = None
                if kind == "relu" or (kind == "hardtanh" and bounds[0] == 0):
                    # relu6 = hardtanh(0, 6): its 0 is "dead", not saturated
                    # (y == 0).all(dim=1), several times faster: NaN compares unequal either way
                    silent = (y.amax(dim=1) == 0) & (y.amin(dim=1) == 0)
                    dead = silent.float().mean(dim=1).tolist()
                if kind == "tanh":
                    sat = y.abs() > th.tanh_saturation
                elif kind == "sigmoid":
                    lo = th.sigmoid_saturation
                    sat = (y < lo) | (y > 1 - lo)
                elif kind == "hardtanh":
                    sat = y >= bounds[1]
                    if bounds[0] != 0:
                        sat |= y <= bounds[0]
                if kind in ("tanh", "sigmoid", "hardtanh"):
                    saturated = sat.float().mean(dim=(1, 2)).tolist()
                for i, (p, s, sample) in enumerate(zip(chunk, spreads.tolist(), samples)):
                    p.rec.post_std = s
                    p.rec.samples = sample
                    p.rec.dead = None if dead is None else dead[i]
                    if saturated is not None:
                        p.rec.saturated = saturated[i]

    def _measure_inputs(self) -> None:
        for i in self.inputs:
            if i.alias is not None:
                i.rec.in_std = (i.alias.rec.post_std if isinstance(i.alias, _Post)
                                else i.alias.rec.out_std)
        kept = [i for i in self.inputs if i.y is not None]
        for group in _grouped(kept, lambda i: (i.y.shape, i.y.device)):
            for chunk in _chunks(group, group[0].y.shape.numel()):
                _, spreads = _mean_spreads(_stack([i.y.float() for i in chunk]))
                for i, s in zip(chunk, spreads.tolist()):
                    i.rec.in_std = s

    def _measure_grads(self) -> None:
        out_grads = [(self.order[i - 1], "grad_out_std", g) for i, g in self.grads.items()]
        out_grads += [(self.order[i - 1], "grad_in_std", g) for i, g in self.grads_in.items()]
        out_grads += [(self.order[i - 1], "grad_post_std", g) for i, g in self.grads_post.items()]
        for group in _grouped(out_grads, lambda rg: (rg[2].numel(), rg[2].device)):
            numel = group[0][2].numel()
            for chunk in _chunks(group, numel):
                stds = _stds(_stack([g.float().reshape(-1) for _, _, g in chunk]))
                for (rec, key, _), s in zip(chunk, stds.tolist()):
                    setattr(rec, key, s)

    def measure_weight_grads(self, layer_grads: list[tuple[LayerDiagnosis, list[torch.Tensor]]]) -> None:
        """``grad_weight_std`` of each layer: the std over all elements of its weights' gradients."""
        flats = []
        for rec, gs in layer_grads:
            if gs:
                flats.append((rec, gs[0].detach().float().reshape(-1) if len(gs) == 1 else
                              torch.cat([g.detach().float().reshape(-1) for g in gs])))
        with _quiet(), torch.no_grad():
            for group in _grouped(flats, lambda rf: (rf[1].numel(), rf[1].device)):
                for chunk in _chunks(group, group[0][1].numel()):
                    stds = _stds(_stack([f for _, f in chunk]))
                    for (rec, _), s in zip(chunk, stds.tolist()):
                        rec.grad_weight_std = s

    def _duplicates(self, rec: LayerDiagnosis, module: nn.Module, params: list[nn.Parameter],
                    y: torch.Tensor, cdim: int | None) -> None:
        rtol = self.th.duplicate_rtol
        cache: list[tuple[torch.Tensor, int]] = []

        def weight_rows() -> torch.Tensor:
            if not cache:
                cache.append(_weight_rows(module, params))
            return cache[0][0]

        if cdim is not None:
            dup = _duplicate_mask(_output_columns(y, cdim, _MAX_DUP_COLUMNS), rtol,
                                  confirm=weight_rows)
        else:  # outputs cannot be split per unit: weight rows only
            dup = _duplicate_mask(weight_rows(), rtol)
        if dup is None:
            return
        rec.duplicates = int(dup.sum())
        rows = weight_rows()
        w = rows[:, :cache[0][1]]
        by_weight = _duplicate_mask(rows, rtol)
        if not bool(w.any()):
            rec.duplicate_cause = "zero initialization"
        elif bool((w == w.reshape(-1)[0]).all()):
            rec.duplicate_cause = "constant initialization"
        elif by_weight is not None and bool((by_weight & dup).any()):
            rec.duplicate_cause = "identical weight rows"
        else:
            rec.duplicate_cause = "identical outputs over the batch"


def _float_leaves(obj: Any) -> list[torch.Tensor]:
    """Every floating-point tensor in ``obj`` (a tensor, or tuples/lists/dicts of them, nested),
    in order; other leaves (integers, strings, None) are skipped."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _float_leaves(item)]
    return []


def _default_loss(outputs: list[torch.Tensor], targets: torch.Tensor | None) -> torch.Tensor:
    """The default loss on the model's floating-point output tensors ``outputs``: without
    targets, the sum over outputs of each one's mean of squares (every head gets a gradient);
    with targets, cross entropy (integer targets) or MSE (float targets) on the one output."""
    if targets is None:
        loss = outputs[0].float().square().mean()
        for t in outputs[1:]:
            loss = loss + t.float().square().mean()
        return loss
    if len(outputs) != 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in outputs[:6])
        raise ValueError(
            f"the model returned {len(outputs)} output tensors (shapes {shapes}): the default "
            "loss with targets needs exactly one; pass loss_fn=fn, called as fn(output, targets) "
            "with the output as the model returns it, to combine them")
    output = outputs[0]
    if not targets.is_floating_point():
        return F.cross_entropy(output.float(), targets)
    return F.mse_loss(output.float(), targets.float())


def _passes(model: nn.Module, inputs: Any, targets: torch.Tensor | None,
            loss_fn: Callable[..., torch.Tensor] | None, layers: list[tuple[str, nn.Module]],
            recorder: _Recorder) -> tuple[float, list[tuple[LayerDiagnosis, list[torch.Tensor]]]]:
    """The forward and backward pass of :func:`diagnose`, recorded by ``recorder``; the model is
    left as it was. Returns the loss and the gradients w.r.t. each layer's weights."""
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    modes = [(m, m.training) for m in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    handles = []
    try:
        for p in params:
            if p.is_floating_point() or p.is_complex():
                p.requires_grad_(True)
        for _, module in layers:
            handles.append(module.register_forward_pre_hook(recorder.pre_hook))
            handles.append(module.register_forward_hook(recorder.hook))
        with torch.enable_grad():
            with recorder:
                output = call_model(model, inputs)
            if loss_fn is not None:
                loss = loss_fn(output, targets) if targets is not None else loss_fn(output)
            else:
                leaves = _float_leaves(output)
                if not leaves:
                    raise TypeError(f"{type(model).__name__} returned {type(output).__name__} "
                                    "with no floating-point tensor: diagnose needs one to build "
                                    "the default loss; pass loss_fn=fn(output) -> scalar tensor")
                loss = _default_loss(leaves, targets)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"the loss must be a scalar tensor, got {loss!r:.80}")
            layer_params = [(rec, recorder.params[id(m)]) for _, m in layers
                            if (rec := recorder.records.get(id(m))) is not None]
            wanted = [p for _, ps in layer_params for p in ps]
            unique = list({id(p): p for p in wanted}.values())
            if not loss.requires_grad:
                raise ValueError("the loss does not depend on any parameter: check that the "
                                 "model's output is computed from its layers")
            grads = torch.autograd.grad(loss.reshape(()), unique, allow_unused=True)
        by_id = {id(p): g for p, g in zip(unique, grads)}
        weight_grads = [(rec, [by_id[id(p)] for p in ps if by_id.get(id(p)) is not None])
                        for rec, ps in layer_params]
        loss_value = float(loss.detach())
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    return loss_value, weight_grads


def diagnose(
    model: nn.Module,
    inputs: Any,
    targets: torch.Tensor | None = None,
    loss_fn: Callable[..., torch.Tensor] | None = None,
    *,
    thresholds: DiagnosisThresholds | None = None,
    label: str | None = None,
    samples: int = 2048,
) -> Report:
    """Run one forward and one backward pass of ``model`` on ``inputs``; measure every layer.

    ``inputs``: a tensor (``model(inputs)``), a tuple/list (``model(*inputs)``) or a dict
    (``model(**inputs)``); dim 0 of every layer output is taken as the batch dimension, so the
    batch needs at least 2 samples (a few hundred give stable numbers). The loss is
    ``loss_fn(output, targets)`` (``loss_fn(output)`` without targets), ``output`` as the model
    returns it (a tensor, or a tuple/list/dict for several heads). By default: without targets,
    the mean of the squared outputs, summed over every floating-point tensor of the output (each
    head of a tuple/list/dict output, nested ones too, gets a gradient); with targets, cross
    entropy for integer targets and the mean squared error for float targets, which needs a
    single output tensor (otherwise a ValueError asks for ``loss_fn``).

    The model runs in its current train/eval mode. Gradients are taken with
    ``torch.autograd.grad``, so ``.grad`` is untouched; frozen parameters get
    ``requires_grad`` for the duration of the call; buffers (BatchNorm running statistics) are
    restored afterwards. ``samples`` post-activation values per layer are kept for histograms.
    Returns a :class:`Report`.

    Cost and memory: the statistics are computed after the backward pass, layers of the same
    output shape together (a few tensor operations per shape, not per layer), so every layer's
    output, the activation output after it and the gradient w.r.t. it are kept until then:
    up to about three times the memory of the activations, which is fine for the models and
    batches diagnose is meant for (a few hundred samples). The kept tensors are references; one
    is copied just before an in-place operation writes into it (``nn.ReLU(inplace=True)``,
    ``out += x``), and if a write went unseen (made with torch functions disabled) the passes
    are run again with copies, with the CPU random state of the first run.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"diagnose needs an nn.Module, got {type(model).__name__}")
    thresholds = thresholds or DiagnosisThresholds()
    if not isinstance(thresholds, DiagnosisThresholds):
        raise TypeError(f"thresholds must be a DiagnosisThresholds, got {type(thresholds).__name__}")
    first_input = _first_tensor(inputs)
    if first_input is None:
        raise TypeError(f"inputs must be a tensor or a tuple/list/dict of tensors, got {type(inputs).__name__}")
    layers = _parametric_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer with a weight of 2 or more "
                         "dimensions (Linear, Conv, Embedding, RNN...): nothing to diagnose")

    rng = torch.get_rng_state()
    recorder = _Recorder(layers, thresholds, samples)
    loss_value, weight_grads = _passes(model, inputs, targets, loss_fn, layers, recorder)
    if recorder.stale():  # an in-place write the recorder did not see: again, with copies
        torch.set_rng_state(rng)
        recorder = _Recorder(layers, thresholds, samples, copy=True)
        loss_value, weight_grads = _passes(model, inputs, targets, loss_fn, layers, recorder)
    recorder.measure()
    recorder.measure_weight_grads(weight_grads)
    x = first_input.detach()
    input_std = _mean_spread(x.float().reshape(x.shape[0], -1))[1] if x.is_floating_point() and x.dim() >= 1 and x.shape[0] > 1 else math.nan
    unused = [name for name, m in layers if id(m) not in recorder.records]
    return Report(layers=recorder.order, loss=loss_value, input_std=input_std,
                  thresholds=thresholds, label=label, unused=unused)


# ----------------------------------------------------------------------------- verdicts
def _runs(indices: Sequence[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1-3, 7, 9-10"."""
    parts: list[str] = []
    start = prev = None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)


def _where(indices: Sequence[int]) -> str:
    return f"layer {indices[0]}" if len(indices) == 1 else f"layers {_runs(indices)}"


def _per_layer(ratio: float, steps: int) -> str:
    if steps < 1:
        return ""
    if ratio <= 0:
        return " (to 0)"
    return f" (x{ratio ** (1.0 / steps):.2g} per layer)"


def _chained(stds: Sequence[float], sizes: Sequence[int | None],
             bridges: Sequence[float | None] | None = None,
             in_sizes: Sequence[int | None] | None = None) -> tuple[list[float], list[int], list[int]]:
    """The std of each element relative to the first, chained step by step: ``c[0] = 1`` and

    * ``c[i] = c[i-1] * stds[i] / stds[i-1]`` (the whole step) when what element i receives has
      the size that element i-1 hands on: ``in_sizes[i] == sizes[i-1]`` (``sizes[i]`` when
      ``in_sizes`` is not given);
    * otherwise (a reduction between them, such as pooling) ``c[i] = c[i-1] * bridges[i]``, the
      step's ratio with what happens between the two elements left out, when it is given and
      finite; else the step counts as x1 and is not judged.

    A std of exactly 0 gives ``c = 0`` (and the chain stays 0 after it). Returns ``c``, the
    number of judged steps up to each element, and of steps not compared whole (bridged or x1).
    """
    ins = sizes if in_sizes is None else in_sizes
    chain, counted, skipped = [1.0], [0], [0]
    for i in range(1, len(stds)):
        c, n, k = chain[-1], counted[-1], skipped[-1]
        same = sizes[i - 1] is not None and ins[i] == sizes[i - 1]
        bridge = None if same or bridges is None else bridges[i]
        if bridge is not None and not (math.isfinite(bridge) and bridge >= 0):
            bridge = None
        if stds[i] == 0:
            c = 0.0
        elif same and stds[i - 1] > 0:
            c = c * stds[i] / stds[i - 1]
        elif bridge is not None:
            c = c * bridge
        if same or bridge is not None or stds[i] == 0:
            n += 1
        if not same:
            k += 1
        chain.append(c)
        counted.append(n)
        skipped.append(k)
    return chain, counted, skipped


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is unknown or ``b`` is 0."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _act_bridge(prev: LayerDiagnosis, r: LayerDiagnosis) -> float | None:
    """Activation step from ``prev`` to ``r`` without what happens between the two:
    ``(out_std / in_std of r) * (post_std / out_std of prev)``."""
    a, b = _ratio(r.out_std, r.in_std), _ratio(prev.post_std, prev.out_std)
    return None if a is None or b is None else a * b


def _norm(std: float | None, numel: int | None) -> float | None:
    """Gradient std x sqrt(per-sample size): the gradient's norm per sample (up to a constant)."""
    return None if std is None or numel is None else std * math.sqrt(numel)


def _grad_bridge(r: LayerDiagnosis, prev: LayerDiagnosis) -> float | None:
    """Backward gradient step from ``r`` to ``prev`` (the layer before it) without what happens
    between the two, in per-sample gradient norms: ``(G_out / G_post of prev) * (G_in / G_out
    of r)``; ``G_post = G_out`` when no activation follows ``prev``."""
    post = prev.grad_post_std if prev.grad_post_std is not None else (
        prev.grad_out_std if prev.activation is None else None)
    a = _ratio(prev.grad_out_std, post)
    b = _ratio(_norm(r.grad_in_std, r.in_numel), _norm(r.grad_out_std, r.out_numel))
    return None if a is None or b is None else a * b


def _skip_note(skipped: int) -> str:
    return (f"; at {skipped} step(s) where the size changes between layers (pooling, flattening) "
            "only the layers and activations are compared") if skipped else ""


def _name(r: LayerDiagnosis) -> str:
    return f"layer {r.index} ({r.name or r.type})"


def _findings(layers: list[LayerDiagnosis], th: DiagnosisThresholds) -> list[Finding]:
    found: list[Finding] = []
    if not layers:
        return found

    # symmetry
    sym = [r for r in layers if r.duplicates > 0]
    if sym:
        r = sym[0]
        head = (f"all {r.units} units of {r.name or r.type} are identical" if r.duplicates == r.units
                else f"{r.duplicates} of {r.units} units of {r.name or r.type} duplicate another unit")
        more = f"; {len(sym) - 1} more layer(s) have duplicate units" if len(sym) > 1 else ""
        found.append(Finding("symmetry", f"symmetry: {head} ({r.duplicate_cause}){more}: "
                                         "identical units get identical updates and never differ"))

    # activations, relative to layer 1, chained over the steps that keep the output size
    acts = [r for r in layers if math.isfinite(r.out_std)]
    act_range = None
    any_skipped = False
    judged = 0  # steps compared, activations and gradients
    if acts:
        first = acts[0]
        ref = first.out_std
        if ref == 0:
            found.append(Finding("vanishing", f"activations vanish: std is 0 already at "
                                              f"{_name(first)}: no signal passes"))
        else:
            ratios, steps, skips = _chained(
                [r.out_std for r in acts], [r.out_numel for r in acts],
                [None] + [_act_bridge(p, r) for p, r in zip(acts, acts[1:])],
                [r.in_numel for r in acts])
            any_skipped = any_skipped or skips[-1] > 0
            judged += steps[-1]
            lo = min(range(len(acts)), key=lambda i: ratios[i])
            hi = max(range(len(acts)), key=lambda i: ratios[i])
            act_range = (ratios[lo], ratios[hi]) if steps[-1] else None
            for i, kind, verb, limit in ((lo, "vanishing", "vanish", ratios[lo] < th.vanish),
                                         (hi, "exploding", "explode", ratios[hi] > th.explode)):
                if not limit:
                    continue
                r = acts[i]
                moves = "falls" if kind == "vanishing" else "grows"
                if skips[i] == 0:
                    text = (f"activations {verb}: std {moves} from {ref:.2g} at {_name(first)} to "
                            f"{r.out_std:.2g} at {_name(r)}{_per_layer(ratios[i], steps[i])}")
                else:
                    text = (f"activations {verb}: std {moves} x{ratios[i]:.2g} from {_name(first)} "
                            f"to {_name(r)}, from {ref:.2g} to {r.out_std:.2g}{_per_layer(ratios[i], steps[i])}"
                            f"{_skip_note(skips[i])}")
                found.append(Finding(kind, text))

    # saturation
    sat = [r for r in layers if r.saturated is not None and r.saturated > th.saturated]
    if sat:
        mean = sum(r.saturated for r in sat) / len(sat)
        acts_named = sorted({r.activation for r in sat if r.activation})
        found.append(Finding("saturation", (
            f"saturation: {mean:.0%} of unit outputs saturated ({', '.join(acts_named)} in its "
            f"flat part) in {_where([r.index for r in sat])}: their gradients are near 0")))

    # dead units
    dead = [r for r in layers if r.dead is not None and r.dead > th.dead]
    if dead:
        mean = sum(r.dead for r in dead) / len(dead)
        found.append(Finding("dead", (
            f"dead units: {mean:.0%} of units output 0 for the whole batch in "
            f"{_where([r.index for r in dead])}")))

    # gradients, relative to the last layer, chained over the steps that keep the output size
    grads = [r for r in layers if r.grad_out_std is not None and math.isfinite(r.grad_out_std)]
    # A gradient of exactly 0 at a layer while a layer before it still gets one is blocked by a
    # zero scale after it (a norm with weight 0, as zero_init_residual does), not vanishing on
    # the way back: such layers are left out of the chain and named.
    blocked: list[LayerDiagnosis] = []
    kept: list[LayerDiagnosis] = []
    reached = False  # some layer before this one gets a gradient
    for r in grads:
        (blocked if r.grad_out_std == 0 and reached else kept).append(r)
        reached = reached or r.grad_out_std > 0
    grads = kept
    blocked_note = (f"gradients are exactly 0 at {_where([r.index for r in blocked])} while earlier "
                    "layers get one: a zero scale after them blocks it (intended with zero-initialized "
                    "residual norms, zero_init_residual; a fault otherwise)") if blocked else ""
    grad_range = None
    if grads:
        last = grads[-1]
        ref = last.grad_out_std
        if ref == 0:
            found.append(Finding("gradient_vanishing", (
                f"gradients vanish: the gradient at the output of {_name(last)} is 0")))
        elif len(grads) > 1:
            back = grads[::-1]
            # per-sample norms, std x sqrt(size): a layer scaled to keep the forward std per
            # element (fan_in) keeps the backward norm per sample, whatever the change of size.
            # Backwards, step i -> i-1 is whole when layer i's input has layer i-1's output size.
            ratios, steps, skips = _chained(
                [_norm(r.grad_out_std, r.out_numel) if r.out_numel else r.grad_out_std
                 for r in back],
                [r.in_numel for r in back],
                [None] + [_grad_bridge(r, p) for r, p in zip(back, back[1:])],
                [r.out_numel for r in back])
            any_skipped = any_skipped or skips[-1] > 0
            judged += steps[-1]
            normed = len({r.out_numel for r in back}) > 1
            lo = min(range(len(back)), key=lambda i: ratios[i])
            hi = max(range(len(back)), key=lambda i: ratios[i])
            grad_range = (ratios[lo], ratios[hi]) if steps[-1] else None
            for i, kind, verb, limit in ((lo, "gradient_vanishing", "vanish", ratios[lo] < th.grad_vanish),
                                         (hi, "gradient_exploding", "explode", ratios[hi] > th.grad_explode)):
                if not limit:
                    continue
                r = back[i]
                what = " (gradient norm per sample, chained)" if normed else ""
                found.append(Finding(kind, (
                    f"gradients {verb}: x{ratios[i]:.2g} from the last layer to {_name(r)}{what}: std "
                    f"{ref:.2g} at {_name(last)}, {r.grad_out_std:.2g} at layer {r.index}"
                    f"{_per_layer(ratios[i], steps[i])}{_skip_note(skips[i])}")))

    if not found and judged == 0:
        found.append(Finding("unjudged", (
            "not judged: no step between two layers could be compared (a single layer, or no "
            "input/output sizes known), so vanishing or exploding signals cannot be ruled out")))
    if not found:
        parts = []
        if act_range is not None:
            parts.append(f"activation std within [{act_range[0]:.2g}, {act_range[1]:.2g}] x layer 1's "
                         f"at every depth")
        if grad_range is not None:
            parts.append(f"gradient std within [{grad_range[0]:.2g}, {grad_range[1]:.2g}] x the "
                         f"last layer's")
        chained = ("; chained, leaving out what changes the size between layers (pooling)"
                   if any_skipped else "")
        limits = (f"(limits {th.vanish:g} and {th.explode:g}{chained}; no symmetry, saturation "
                  "or dead layers)")
        if blocked_note:
            parts.append(blocked_note)
        found.append(Finding("healthy", "healthy: " + "; ".join(parts or ["nothing to report"])
                             + " " + limits))
    elif blocked_note:
        found.append(Finding("gradient_blocked", blocked_note))
    return found


# ----------------------------------------------------------------------------- schemes
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

    def table(self, max_rows: int = 12) -> Any:
        """A ``rich.table.Table``: activation std and gradient std per scheme, side by side, at
        every layer (or ``max_rows`` evenly spaced layers for deeper models)."""
        from rich.table import Table

        table = Table(title="diagnose: activation std / gradient std (across the batch)",
                      title_justify="left")
        table.add_column("layer", justify="left")
        for key in self:
            table.add_column(f"{key}\nact std", justify="right")
            table.add_column(f"{key}\ngrad std", justify="right")
        depth = max(len(r) for r in self.values())
        for i in _spaced(depth, max_rows):
            name = next((r.layers[i].name for r in self.values() if i < len(r)), "")
            cells = []
            for r in self.values():
                row = r.layers[i] if i < len(r) else None
                cells += [_fmt(row.out_std if row else None), _fmt(row.grad_out_std if row else None)]
            table.add_row(f"{i + 1} ({name})", *cells)
        return table

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
        reports[label] = diagnose(model, inputs, targets, loss_fn, thresholds=thresholds,
                                  label=label)
    return Comparison(reports)


# ----------------------------------------------------------------------------- plotting
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
    ax_act, ax_grad = top.subplots(1, 2)
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
