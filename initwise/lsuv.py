"""Layer-sequential unit-variance refinement (LSUV, Mishkin & Matas 2016) on top of a plan.

:func:`lsuv` first applies a plan (initwise's standard plan by default; ``plan="orthogonal"``
is the paper's orthonormal start; or a given :class:`~initwise.plan.Plan`), then walks the
weight layers in data-flow order (the recorded forward pass, not registration order) and, for
each, runs the batch, measures the variance ``v`` of that layer's output and multiplies its
weight by ``sqrt(target / v)``, until ``|v - target| <= tol`` or ``max_iter`` rescalings. The
measured scale of each weight goes into its plan entry (``std`` and ``gain`` times the scale, and
the reason), and the plan is applied once more with the same seed, so the returned plan
re-applies to exactly the model's values.

The batch runs in eval mode (dropout off, batch norms on their running statistics, nothing
random) under ``torch.no_grad()``; every module's train/eval flag, the buffers and the random
generators are restored. All or nothing: if anything fails part-way (the forward pass, a
non-finite variance), every parameter and buffer is put back as it was before the call.

Layers measured: ``Linear`` and convolution modules, and functional linear maps of a parameter
whose module returns their output (GPT-2's ``Conv1D``). Left as planned, and named in the note:
weights tied to another layer, parametrized weights, weights the plan keeps or sets to a
constant (zero-initialized branch ends), and layers whose output has no variance.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .build import build_plan
from .graph import Graph, record
from .inputs import call_model, describe
from .nodes import Node
from .plan import Plan, PlanEntry

__all__ = ["lsuv"]


@dataclass
class _Layer:
    """One measured layer: its weight's name, the module whose output is measured, its entry."""

    weight: str
    module: nn.Module
    module_name: str
    entry: PlanEntry
    calls: int = 0
    scale: float = 1.0
    steps: int = 0
    first: float = float("nan")
    last: float = float("nan")
    history: list[float] = field(default_factory=list)


class _Stop(Exception):
    """Ends a forward pass once the measured layer has run."""


def lsuv(model: nn.Module, batch: Any, *, plan: Plan | str | None = None, target: float = 1.0, tol: float = 0.1,
         max_iter: int = 10, seed: int | None = None) -> Plan:
    """Initialize ``model`` by ``plan``, then rescale each layer's weight, in data-flow order,
    until its output variance on ``batch`` is ``target +- tol`` (Mishkin & Matas 2016); return the
    plan with each measured scale in its entry (see the module docstring).

    ``batch``: the model's input (a tensor, a tuple of positional inputs or a dict of keyword
    inputs), also used to record the data flow. ``plan``: ``None`` (initwise's standard plan for
    this batch), a policy name (``"orthogonal"`` for the paper's orthonormal start, a recipe such
    as ``"gpt2"``) or a :class:`~initwise.plan.Plan` (not modified: a copy is returned).
    ``seed``: the plan's seed (``None``: a given plan's own seed, else one drawn from torch's
    global generator, recorded in ``plan.seed``); the refinement itself draws nothing, so the
    same seed and batch give the same weights.

    >>> model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))
    >>> p = initwise.lsuv(model, torch.randn(256, 8), seed=0)
    >>> print(p["0.weight"].reason)   # ... LSUV (Mishkin & Matas 2016): output variance ...
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    _check_args(target, tol, max_iter, seed, plan)
    if any(p.is_meta for p in model.parameters()):
        raise ValueError("lsuv measures the model's outputs, but its parameters are on the meta device; "
                         "materialize them first (initwise.init(model, x, device='cpu'))")
    saved = _snapshot(model)
    flags = [(m, m.training) for m in model.modules()]
    try:
        with torch.random.fork_rng(devices=_cuda_devices()):
            return _run(model, batch, plan, target, tol, max_iter, seed)
    except BaseException:
        _restore(model, saved)
        raise
    finally:
        for m, flag in flags:
            m.training = flag


def _check_args(target: Any, tol: Any, max_iter: Any, seed: Any, plan: Any) -> None:
    def real(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not real(target) or target <= 0:
        raise ValueError(f"target must be a finite variance > 0, got {target!r}")
    if not real(tol) or not 0 < tol < target:
        raise ValueError(f"tol must be a number with 0 < tol < target ({target}), got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1 (rescalings per layer), got {max_iter!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be None or an integer >= 0, got {seed!r}")
    if plan is not None and not isinstance(plan, (str, Plan)):
        raise TypeError(f"plan must be None, a policy name or an initwise Plan, got {type(plan).__name__}")


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() \
        else []


def _snapshot(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    seen: set[int] = set()
    out = []
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen and not t.is_meta:
            seen.add(id(t))
            out.append((t, t.detach().clone()))
    return out


def _restore(model: nn.Module, saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    with torch.no_grad():
        for t, value in saved:
            if t.shape == value.shape:
                t.copy_(value)


# ----------------------------------------------------------------------------- the run
def _run(model: nn.Module, batch: Any, plan: Plan | str | None, target: float, tol: float, max_iter: int,
         seed: int | None) -> Plan:
    graph = record(model, batch)
    if isinstance(plan, Plan):
        p = copy.deepcopy(plan).validate(model)
        seed = plan.seed if seed is None else seed
    else:
        p = build_plan(model, batch, policy=plan or "standard", graph=graph)
    for e in p:  # LSUV scales every layer itself: an output bias the plan would centre starts at 0
        if e.scheme == "centre" and "values" not in e.params:
            e.scheme, e.params, e.reason = "zeros", {}, "biases start at 0 (LSUV)"
    p.apply(model, seed=seed)
    layers, skipped = _layers(model, graph, p)
    model.eval()
    _measure_all(model, batch, layers)   # how many times each module runs (a reused layer: twice)
    for layer in layers:
        _fit(model, batch, layers, layer, target, tol, max_iter)
    for layer in layers:
        layer.entry.scale(layer.scale)
    p.apply(model, seed=p.seed)  # the same values, now from the plan
    final = _measure_all(model, batch, layers)
    within = 0
    for layer in layers:
        v = final[layer.weight]
        ok = abs(v - target) <= tol
        within += ok
        layer.entry.predicted_std = float(f"{math.sqrt(v):.4g}")
        layer.entry.reason += (f"; LSUV (Mishkin & Matas 2016): output variance {layer.first:.4g} on the batch, weight "
                               f"scaled x{layer.scale:.4g} in {layer.steps} step(s) to variance {v:.4g}"
                               + ("" if ok else f" (not within {target:g} +- {tol:g} after {max_iter} steps)"))
        layer.entry.check()
    p.note = "; ".join(n for n in (p.note, _note(layers, skipped, within, batch, target, tol, max_iter)) if n)
    return p


def _layers(model: nn.Module, g: Graph, p: Plan) -> tuple[list[_Layer], list[str]]:
    """The measurable weight layers in data-flow order, and why the others are left."""
    modules = dict(model.named_modules())
    out: dict[str, _Layer] = {}
    skipped: list[str] = []
    for n in g.nodes:
        found = _layer_of(n, g, modules)
        if found is None:
            continue
        weight, mname = found
        if weight in out or weight in skipped:
            if weight in out and out[weight].module_name != mname:   # one weight in two modules
                del out[weight]
                skipped.append(weight)
            continue
        e = p[weight] if weight in p else None
        why = _unmeasurable(e)
        if why:
            skipped.append(f"{weight} ({why})")
            continue
        out[weight] = _Layer(weight, modules[mname], mname, e)
    return list(out.values()), skipped


def _layer_of(n: Node, g: Graph, modules: dict[str, nn.Module]) -> tuple[str, str] | None:
    if n.kind == "layer":
        m = n.info.get("module")
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and "weight" in m._parameters:
            return (f"{n.module}.weight" if n.module else "weight"), n.module
        return None
    if n.kind == "linear" and n.info.get("weight") and n.module in modules and n.module:
        out = g.modules.get(n.module)
        cur = out
        while cur is not None and cur != n.id:   # the module returns this node's output, reshaped at most
            node = g.nodes[cur]
            cur = node.inputs[0] if node.kind == "shape" and len(node.inputs) == 1 else None
        if cur == n.id:
            return n.info["weight"], n.module
    return None


def _unmeasurable(e: PlanEntry | None) -> str:
    if e is None:
        return "not in the plan"
    if e.shared_with:
        return "tied to " + ", ".join(e.shared_with)
    if e.writes:
        return "parametrized"
    if e.scheme in ("keep", "zeros", "constant", "weight_norm_g") or not e.std:
        return f"planned {e.scheme}"
    return ""


class _Meter:
    """Forward hooks summing each measured module's outputs (float64), stopping the forward
    pass once module ``stop`` has run ``calls`` times."""

    def __init__(self, layers: list[_Layer], stop: _Layer | None = None):
        self.sums: dict[str, list[float]] = {l.weight: [0.0, 0.0, 0.0] for l in layers}
        self.calls: dict[str, int] = {l.weight: 0 for l in layers}
        self.stop = stop
        self.handles = [l.module.register_forward_hook(self._hook(l)) for l in layers]

    def _hook(self, layer: _Layer):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            y = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(y, torch.Tensor):
                y = y.detach().double()
                s = self.sums[layer.weight]
                s[0] += float(y.sum())
                s[1] += float(y.square().sum())
                s[2] += y.numel()
            self.calls[layer.weight] += 1
            if self.stop is layer and self.calls[layer.weight] >= layer.calls > 0:
                raise _Stop
        return hook

    def variance(self, weight: str) -> float:
        total, squares, count = self.sums[weight]
        if count == 0:
            return float("nan")
        mean = total / count
        return max(squares / count - mean * mean, 0.0)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _forward(model: nn.Module, batch: Any, meter: _Meter) -> None:
    try:
        with torch.no_grad():
            call_model(model, batch)
    except _Stop:
        pass
    finally:
        meter.close()


def _measure_all(model: nn.Module, batch: Any, layers: list[_Layer]) -> dict[str, float]:
    meter = _Meter(layers)
    _forward(model, batch, meter)
    for layer in layers:
        layer.calls = meter.calls[layer.weight]
    return {l.weight: meter.variance(l.weight) for l in layers}


def _fit(model: nn.Module, batch: Any, layers: list[_Layer], layer: _Layer, target: float, tol: float,
         max_iter: int) -> None:
    weight = dict(model.named_parameters())[layer.weight]
    for step in range(max_iter + 1):
        meter = _Meter([layer], stop=layer)
        _forward(model, batch, meter)
        v = meter.variance(layer.weight)
        if not math.isfinite(v):
            raise ValueError(f"lsuv: the output of {layer.module_name!r} ({layer.weight!r}) has variance {v} on the "
                             f"batch; check the batch ({describe(batch)}) and the plan")
        if step == 0:
            layer.first = v
        layer.last = v
        if v == 0.0 or abs(v - target) <= tol or step == max_iter:
            return
        k = math.sqrt(target / v)
        with torch.no_grad():
            weight.mul_(k)
        layer.scale *= k
        layer.steps += 1


def _note(layers: list[_Layer], skipped: list[str], within: int, batch: Any, target: float, tol: float,
          max_iter: int) -> str:
    text = (f"LSUV (Mishkin & Matas 2016) on {describe(batch)}: {len(layers)} layer(s) rescaled in data-flow order "
            f"to output variance {target:g} +- {tol:g} (at most {max_iter} steps each, eval mode), {within} within; "
            "predicted_std of those is the measured output std")
    if skipped:
        text += f"; {len(skipped)} left as planned: " + ", ".join(skipped[:4]) + (" ..." if len(skipped) > 4 else "")
    return text
