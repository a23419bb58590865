"""Centred output layers: the one step of :func:`initwise.init` that reads the data.

A classifier's last layer often reads features that carry a large part shared by every sample
(the mean of ReLU features after a global pool, or of non-centred inputs carried along a
residual stream). Its weights then turn that shared part into a constant offset per class: the
logits differ between classes before the model has seen anything, the initial loss rises above
``ln C``, and a weight std small enough to keep the loss near ``ln C`` leaves the part of the
logits that *does* depend on the input tiny, so the gradients reaching the layers below are tiny
too.

The standard policy plans such a layer's bias as ``"centre"`` (an output ``nn.Linear`` with a
bias, not tied). After the plan is written, :func:`centre_outputs` runs the example input once
(as the graph was recorded: training mode, no gradients, buffers and random generators restored)
and, for each such layer with input ``x`` (the rows of the batch) and drawn weight ``W``:

* rescales ``W`` by ``k`` so that the part of the logits that varies between samples has the
  policy's target variance, ``mean_j Var_n((k W x_n)_j) = E[z^2]`` (the scale goes into the
  weight's entry, ``std`` and ``gain``, as LSUV records it: Mishkin & Matas 2016);
* sets the bias to ``b = -k W E_n[x_n]``, so every logit has mean 0 over the batch: the initial
  loss is ``ln C + E[z^2] / 2`` to first order (data-dependent bias, Krähenbühl et al. 2016).

The bias values and the seed they belong to are stored in its entry (``params["values"]``,
``params["seed"]``), so the returned plan re-applies to exactly the same model. If the pass
cannot run (or the model is sharded), the bias is left at 0, the weight at the planned std, and
the plan's note and a ``UserWarning`` say why.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
from torch import nn

from .inputs import call_model, candidate_inputs, preserved
from .plan import Plan, PlanEntry
from .write import write_entry

__all__ = ["centre_outputs", "centred_entries", "CENTRE"]

CENTRE = "centre"


def centred_entries(plan: Plan) -> list[PlanEntry]:
    """The plan's ``"centre"`` bias entries, in order."""
    return [e for e in plan if e.scheme == CENTRE]


def centre_outputs(model: nn.Module, plan: Plan, example_input: Any, target: float, *,
                   seed: int | None = None, device: str | torch.device | None = None) -> Plan:
    """Apply ``plan`` to ``model`` with its ``"centre"`` biases measured on ``example_input``
    (see the module docstring); ``target`` is the logits' variance between samples. Returns the
    plan (a copy) that re-applies to the model's values."""
    p = copy.deepcopy(plan)
    todo = centred_entries(p)
    first = copy.deepcopy(p)  # the same plan with the biases at 0: what is written first
    for e in centred_entries(first):
        e.scheme, e.params, e.std = "zeros", {}, 0.0
    p.seed = first.apply(model, seed=seed, device=device).seed
    why = _unsupported(model)
    if why is None:
        try:
            features = _features(model, example_input, [e.params["weight"] for e in todo])
        except Exception as exc:  # noqa: BLE001 - the plan without centring is still a valid init
            why = f"the forward pass failed ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    if why is not None:
        return _uncentred(first, [e.name for e in todo], why)
    params = dict(model.named_parameters())
    for e in todo:
        weight = p[e.params["weight"]]
        _centre(weight, e, features[weight.name], params[weight.name], target, p.seed)
        for changed in (weight, e):  # only these differ from what ``first`` wrote
            write_entry(changed, params[changed.name], p.seed)
    return p


def _unsupported(model: nn.Module) -> str | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return None
    if any(isinstance(t, DTensor) for t in model.parameters()):
        return "the model is sharded (DTensor): one pass per rank would measure each rank's inputs"
    return None


def _features(model: nn.Module, example_input: Any, weights: list[str]) -> dict[str, torch.Tensor]:
    """Run the first input that works (the one the graph was recorded with) and return each
    named layer's input, as rows ``(n, fan_in)`` in float64."""
    tries = candidate_inputs(model, example_input)
    if not tries:
        raise ValueError("no example input")
    modules = {name: model.get_submodule(name.rpartition(".")[0]) for name in weights}
    seen: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(
        lambda mod, args, name=name: seen.setdefault(name, args[0].detach())) for name, m in modules.items()]
    error: Exception | None = None
    try:
        for inputs, _, _ in tries:
            for training in (True, False):
                seen.clear()
                try:
                    with preserved(model), torch.no_grad():
                        model.train(training)
                        call_model(model, inputs)
                except Exception as exc:  # noqa: BLE001 - try eval mode, then the next input
                    error = exc
                    continue
                if len(seen) == len(modules):
                    return {k: v.double().reshape(-1, v.shape[-1]) for k, v in seen.items()}
                error = ValueError("an output layer did not run")
    finally:
        for h in handles:
            h.remove()
    raise error if error is not None else ValueError("no input ran")


def _centre(w_entry: PlanEntry, bias: PlanEntry, x: torch.Tensor, weight: torch.Tensor, target: float,
            seed: int) -> None:
    """Fill ``w_entry``'s scale and ``bias``'s values from the layer's input rows ``x`` and its
    drawn ``weight`` (see the module docstring)."""
    w = weight.detach().double()
    y = x @ w.T
    v = float(y.var(0, unbiased=False).mean()) if x.shape[0] > 1 else 0.0
    k = math.sqrt(target / v) if v > 0 and math.isfinite(v) else 1.0
    w_entry.scale(k)
    mean = x.mean(0)
    values = (-(k * w) @ mean).tolist()
    offset = float((y.mean(0) ** 2).mean())
    w_entry.reason += (f"; at init, scaled x{k:.4g} on the example batch ({x.shape[0]} rows) so that the logits' "
                       f"part that varies between samples has variance {target:g} (it was {v:.3g}), the shared "
                       f"part (mean square {offset * k * k:.3g}) removed by the centred bias")
    for e in (w_entry, bias):  # the layer's output: centred, of variance ``target`` on the batch
        e.predicted_std = float(f"{math.sqrt(target):.4g}")
    w_entry.check()
    bias.params = {"weight": w_entry.name, "seed": int(seed), "values": [float(f"{v:.9g}") for v in values]}
    bias.reason = ("centred on the example batch: -W E[x] with E[x] the mean of the layer's input under the new "
                   "weights, so each logit starts at mean 0 and the initial loss near ln C (data-dependent "
                   "bias, Krähenbühl et al. 2016)")
    bias.check()


def _uncentred(p: Plan, names: list[str], why: str) -> Plan:
    """``p`` (written, its centred biases at 0) with the reasons, the note and a warning."""
    for name in names:
        p[name].reason = f"biases start at 0 (not centred: {why})"
    msg = f"output bias(es) {', '.join(names)} not centred on the data: {why}"
    p.note = "; ".join(n for n in (p.note, msg) if n)
    warnings.warn(msg, UserWarning, stacklevel=3)
    return p
