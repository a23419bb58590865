"""Signal and gradient flow at initialization: one forward and one backward pass, measured.

Package layout: :mod:`.results` (thresholds, per-layer records, findings), :mod:`.stats` and
:mod:`.measure` (the measuring pass), :mod:`.paths` (what is read from the recorded graph),
:mod:`.verdicts`, :mod:`.report` (table, JSON), :mod:`.plot` and :mod:`.compare`.

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

Vanishing and exploding are judged along the paths of the recorded graph of the forward pass
(the graph planning reads, recorded in the measuring pass itself by
:func:`initwise.graph.record_pass`; see :mod:`.paths` and :mod:`.verdicts`):
along each chain of layers (a layer follows another when its input is the other's output
through activations, reshapes, dropout or pooling only; a norm, a sum, a product of two signals
or an attention starts a new chain, so siblings such as q/k/v are never compared) and along each
residual stream (its std after every residual sum against its input, and the gradient w.r.t. it
against the last sum's). Along a chain each step between consecutive layers splits as
``out_i / out_(i-1) = (out_i / in_i) * (in_i / post_(i-1)) * (post_(i-1) / out_(i-1))``: the
middle factor (what parameter-free operations do) is left out only where the per-sample size
changes (pooling, flattening); gradients chain backwards in per-sample norms
(``grad_out_std x sqrt(out_numel)``). Every verdict quotes its ratio and the two values it
compares (:class:`Finding`). A layer whose output is the same for every sample (position
embeddings looked up from a buffer) is reported as input-independent and never a reference; a
zero-initialized head or residual branch end is named as deliberate, not as symmetry. A report
in which nothing could be compared says so (``unjudged``) instead of ``healthy``.

The references: Glorot & Bengio 2010 (activation and gradient histograms per layer,
saturation of deep tanh/sigmoid nets), He et al. 2015 (ReLU nets halve or keep the signal
variance at every layer), Saxe et al. 2014 and Klambauer et al. 2017 (signal propagation).
The model's weights, gradients (``.grad``), buffers, train/eval mode and ``requires_grad`` flags
are left as they were, and every hook is removed, even when the forward pass raises.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from .. import tree as _tree
from ..graph import Graph, record_pass
from .compare import Comparison, compare_schemes
from .measure import _Recorder
from .passes import _passes
from .paths import Paths, read_paths
from .plot import plot_reports
from .report import Report
from .results import (
    INFO_KINDS,
    KINDS,
    DiagnosisThresholds,
    Finding,
    LayerDiagnosis,
    Stream,
    StreamPoint,
)
from .stats import (
    _duplicate_mask,  # noqa: F401 - tested helper
    _first_tensor,
    _gc_paused,
    _mean_spread,
    _parametric_layers,
    _quiet,
    _spreads_of,
    _stds_of,
)
from .verdicts import _chained, _per_layer  # noqa: F401 - tested helpers

__all__ = [
    "DiagnosisThresholds", "LayerDiagnosis", "Finding", "Report", "Comparison", "Stream", "StreamPoint",
    "KINDS", "INFO_KINDS", "diagnose", "compare_schemes", "plot_reports",
]


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

    ``inputs``: what the model takes: a tensor (``model(inputs)``), a tuple/list
    (``model(*inputs)``) or a dict or ``BatchEncoding`` (``model(**inputs)``: token ids of a
    language model need nothing else); dim 0 of every layer output is taken as the batch dimension, so the
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
    restored afterwards; the global random generators are left as they were. ``samples``
    post-activation values per layer are kept for histograms. The forward pass is recorded as
    the planner records it (:func:`initwise.graph.record_pass`), and the verdicts follow its
    paths. Returns a :class:`Report` (layers, residual streams, verdicts).

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
    if first_input.dim() < 1 or first_input.shape[0] < 2:
        raise ValueError(f"the input has shape {tuple(first_input.shape)}: diagnose measures the spread "
                         "across the batch, so it needs inputs with a batch dimension first and at least "
                         "2 samples (a few hundred give stable numbers)")
    named = list(model.named_modules())  # one walk of the module tree, read below and by _passes
    layers = _parametric_layers(model, named)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer with a weight of 2 or more "
                         "dimensions (Linear, Conv, Embedding, RNN...): nothing to diagnose")
    if any(p.is_meta for p in _tree.parameters(named)):
        raise ValueError(f"{type(model).__name__} has parameters on the meta device: diagnose measures real "
                         "values; materialize it first (initwise.init(model) on a meta model does)")
    with _gc_paused():  # the measuring's objects are freed before the collector is back on
        return _measured(model, inputs, targets, loss_fn, thresholds, label, samples, named, layers)


def _measured(model: nn.Module, inputs: Any, targets: torch.Tensor | None,
              loss_fn: Callable[..., torch.Tensor] | None, thresholds: DiagnosisThresholds,
              label: str | None, samples: int, named: list[tuple[str, nn.Module]],
              layers: list[tuple[str, nn.Module]]) -> Report:
    """:func:`diagnose` on checked arguments (``named``: the model's modules; ``layers``: the
    layers it measures)."""
    names = [n for n, _ in layers]
    state: dict[str, Any] = {}

    def forward(recorder: _Recorder) -> Any:
        graph, output, tensors = record_pass(model, inputs, observer=recorder, stats=False)
        state.update(graph=graph, tensors=tensors)
        return output

    def after(recorder: _Recorder) -> None:  # between forward and backward: hook the streams
        graph = state["graph"]
        paths = read_paths(graph, names)
        state["paths"] = paths
        recorder.read_transposed({alias.rpartition(".")[0] for n in graph.of_kind("linear")
                                  if n.info.get("transposed") for alias in graph.params.get(n.info["weight"], ())})
        for nid in paths.taps:
            t, version = state["tensors"].get(nid, (None, None))
            if t is not None and t._version == version:  # unchanged since made (else not measured)
                recorder.tap(nid, t)

    rng = torch.get_rng_state()
    recorder = _Recorder(layers, thresholds, samples)
    frozen = {name for name, m in layers if not any(p.requires_grad for p in recorder.params[id(m)])}
    loss_value, weight_grads = _passes(model, targets, loss_fn, layers, recorder,
                                       lambda: forward(recorder), lambda: after(recorder), named)
    if recorder.stale():  # an in-place write the recorder did not see: again, with copies
        torch.set_rng_state(rng)
        recorder = _Recorder(layers, thresholds, samples, copy=True)
        loss_value, weight_grads = _passes(model, targets, loss_fn, layers, recorder,
                                           lambda: forward(recorder), lambda: after(recorder), named)
    recorder.measure()
    recorder.measure_weight_grads(weight_grads)
    graph, paths = state["graph"], state["paths"]
    note = graph.note
    params = {name: recorder.params[id(m)] for name, m in layers}
    for rec in recorder.order:
        rec.role = paths.roles.get(rec.name)
        rec.frozen = rec.name in frozen
        rec.input_independent = rec.input_independent or rec.name in paths.constant
        rec.zero = all(not bool(p.detach().any()) for p in params[rec.name])
    x = _first_tensor(inputs).detach()
    input_std = _mean_spread(x.float().reshape(x.shape[0], -1))[1] if x.is_floating_point() and x.dim() >= 1 and x.shape[0] > 1 else math.nan
    unused = [name for name, m in layers if id(m) not in recorder.records]
    streams = _streams(paths, recorder, graph, input_std)
    return Report(layers=recorder.order, loss=loss_value, input_std=input_std,
                  thresholds=thresholds, label=label, unused=unused, streams=streams,
                  previous=paths.previous, normed=sorted(paths.normed), note=note)


def _streams(paths: Paths, recorder: _Recorder, graph: Graph | None, input_std: float) -> list[Stream]:
    """The residual streams measured by the taps (a node that is a layer's output is read from
    the layer's record; the model's input from ``input_std``). The spreads of the taps and
    the stds of the gradients w.r.t. the sums are computed together, same shapes stacked."""
    by_name = {r.name: r for r in recorder.order}
    with _quiet():
        spreads = _spreads_of(recorder.taps)
        grad_stds = _stds_of({a: recorder.tap_grads[a] for s in paths.streams for a in s.adds
                              if a in recorder.tap_grads})

    def std_of(nid: int) -> float:
        if nid in recorder.taps:
            return spreads[nid]
        name = paths.layer_of.get(nid)
        if name in by_name:
            return by_name[name].out_std
        if graph is not None and graph.nodes[nid].kind == "input":
            return input_std
        return math.nan

    out = []
    for s in paths.streams:
        points = [StreamPoint(block, std_of(a), std_of(b), grad_stds.get(a), _numel(recorder.taps.get(a)))
                  for a, b, block in zip(s.adds, s.branches, s.blocks)]
        out.append(Stream(_common(s.blocks), std_of(s.start), points))
    return out


def _numel(t: torch.Tensor | None) -> int | None:
    return None if t is None or t.dim() < 1 else t.numel() // max(t.shape[0], 1)


def _common(blocks: list[str]) -> str:
    """The common dotted prefix of the blocks' names ("model.layers" for model.layers.0..11)."""
    parts = [b.split(".") for b in blocks if b]
    if not parts:
        return "(root)"
    prefix = []
    for words in zip(*parts):
        if len(set(words)) != 1:
            break
        prefix.append(words[0])
    return ".".join(prefix) or blocks[0] or "(root)"


# ----------------------------------------------------------------------------- verdicts
