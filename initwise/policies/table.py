"""The mission's table, layer by layer: the scheme a weight gets from the activation that
consumes its output, and :func:`recommend`.

=====================================================  =========================================
activation after the layer                             weight
=====================================================  =========================================
none (output layer), identity, sigmoid, tanh, softmax,  Xavier/Glorot, gain 1: var 2/(fan_in +
softsign, hardtanh                                      fan_out) (Glorot & Bengio 2010)
relu, leaky_relu (slope a), elu, celu, gelu, silu,      He: var gain^2/fan_in with initwise's
mish, softplus, relu6, hardswish, any other callable    gain 1/sqrt(E[phi(z)^2]) (He et al. 2015)
selu                                                    LeCun: var 1/fan_in (Klambauer et al. 2017)
=====================================================  =========================================

RNN/LSTM/GRU: ``weight_ih`` by the gate activations, ``weight_hh`` orthogonal per gate block
(Saxe et al. 2014), ``weight_hr`` Xavier; MultiheadAttention q/k/v Xavier with per-block fans;
embeddings ``N(0, 1)``. The standard policy (:mod:`.standard`) starts from these choices and
corrects their std with the signal propagated through the graph.
"""
from __future__ import annotations

import math
from typing import Any

from ..activations import Activation
from ..fans import param_blocks
from ..gains import GAIN_NAMES
from ..gains import gain as _gain
from ..plan import PlanEntry
from .common import DISTRIBUTIONS, XAVIER_ACTS, he, lecun, orthogonal_std, xavier

__all__ = ["recommend", "standard_entry"]


def _choice_for(act: Activation, make, distribution, fan_in, fan_out) -> PlanEntry:
    name = act.name
    where = f" ({act.via})" if act.via else ""
    if name in ("none", "identity", "linear"):
        return xavier(make, distribution, fan_in, fan_out,
                       f"no activation follows{where}: Xavier/Glorot with gain 1 (linear output)")
    if name in XAVIER_ACTS:
        return xavier(make, distribution, fan_in, fan_out,
                       f"feeds {act.label()}{where}: Xavier/Glorot with gain 1, derived for its linear regime "
                       "(Glorot & Bengio 2010)")
    if name == "selu":
        return lecun(make, distribution, fan_in, fan_out,
                      f"feeds selu{where}: LeCun var 1/fan_in keeps SELU self-normalizing (Klambauer et al. 2017)")
    try:
        g = _gain(name, **act.kwargs) if name in GAIN_NAMES else _gain(act.fn)
    except (ValueError, TypeError):
        return xavier(make, distribution, fan_in, fan_out,
                       f"feeds {act.label()}{where}, whose gain initwise cannot compute: treated as linear, Xavier")
    label = act.label()
    return he(make, distribution, fan_in, fan_out, g,
               f"feeds {label}{where}: He et al. 2015, var gain^2/fan_in with {name}'s gain {g:.4g}")


def recommend(activation: str, fan_in: int | float = 256, fan_out: int | float = 256, distribution: str = "normal",
              **params: Any) -> PlanEntry:
    """The standard policy's choice for a weight of fans ``(fan_in, fan_out)`` whose output
    feeds ``activation`` (a name from :data:`initwise.GAIN_NAMES` or ``"none"``; parameters as
    keywords, e.g. ``recommend("leaky_relu", negative_slope=0.2)``)."""
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name, got {type(activation).__name__}")
    name = activation.strip().lower().replace("-", "_")
    name = {"linear": "none", "identity": "none", "swish": "silu"}.get(name, name)
    if name != "none" and name not in GAIN_NAMES:
        known = sorted({n for n in GAIN_NAMES if not n.startswith("conv")} | {"none"})
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(known)}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fans must be positive, got fan_in={fan_in}, fan_out={fan_out}")
    if name != "none":
        _gain(name, **params)  # validates the parameters
    act = Activation(name, tuple(sorted(params.items())))
    base = dict(name="weight", shape=(fan_out, fan_in), layer="Linear", activation=act.label())

    def make(scheme_, dist_, fan_in_, fan_out_, gain_, std_, reason_, **extra) -> PlanEntry:
        return PlanEntry(**base, scheme=scheme_, distribution=dist_, fan_in=fan_in_, fan_out=fan_out_,
                         gain=gain_, std=std_, reason=reason_, params=extra)

    return _choice_for(act, make, distribution, fan_in, fan_out)


def standard_entry(make, kind, role, module, local, shape, fan_in, fan_out, acts, distribution) -> PlanEntry:
    if kind == "embedding":
        pad = getattr(module, "padding_idx", None)
        return make("normal", "normal", fan_in, fan_out, 1.0, 1.0,
                    "embedding: N(0, 1), since each output reads one row (fan_in 1)"
                    + ("; padding row 0" if pad is not None else ""), std=1.0,
                    **({"padding_idx": pad} if pad is not None else {}))  # no key when None: plans round-trip JSON
    if kind == "rnn":
        blocks = param_blocks(module, local)
        if role == "hh":
            std = orthogonal_std(shape[0] // blocks, math.prod(shape[1:]))
            return make("orthogonal", "-", fan_in, fan_out, 1.0, std,
                        f"recurrent weight: orthogonal per gate block ({blocks}) keeps the state's norm over time "
                        "(Saxe et al. 2014)", blocks=blocks)
        if role == "ih":
            if getattr(module, "nonlinearity", None) == "relu":
                return he(make, distribution, fan_in, fan_out, math.sqrt(2.0),
                           "input weight of a ReLU RNN: He, gain sqrt(2)")
            return xavier(make, distribution, fan_in, fan_out,
                           f"input weight feeding sigmoid/tanh gates: Xavier with the fans of one gate block "
                           f"({blocks} blocks)")
        return xavier(make, distribution, fan_in, fan_out, "LSTM projection: Xavier, gain 1")
    if kind == "mha":
        blocks = param_blocks(module, local)
        what = "q/k/v projection" + (f" ({blocks} blocks)" if blocks > 1 else "")
        return xavier(make, distribution, fan_in, fan_out,
                       f"attention {what}: linear, Xavier with per-block fans")
    if not acts:
        acts = (Activation("none", via="activation unknown"),)
    options = [_choice_for(a, make, distribution, fan_in, fan_out) for a in acts]
    best = min(options, key=lambda e: e.std)
    if len(options) > 1:
        labels = ", ".join(a.label() for a in acts)
        best.reason = (f"output feeds {len(acts)} activations ({labels}): most conservative (smallest std) choice; "
                       + best.reason)
    return best
