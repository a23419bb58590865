"""``policy="torch"``: PyTorch's own ``reset_parameters`` distributions.

Linear/Conv ``kaiming_uniform_(a=sqrt(5))`` i.e. ``U(+-1/sqrt(fan_in))`` with torch's fan rule,
biases ``U(+-1/sqrt(fan_in))``, RNN everything ``U(+-1/sqrt(hidden))``, embeddings ``N(0, 1)``,
attention as ``MultiheadAttention._reset_parameters`` (q/k/v ``xavier_uniform_``, ``in_proj_bias``
and ``out_proj.bias`` 0, ``bias_k``/``bias_v`` ``xavier_normal_``, ``out_proj.weight`` as a Linear);
inside an ``nn.Transformer`` every tensor with 2+ dims ``xavier_uniform_``.
"""
from __future__ import annotations

import math

from torch import nn
from torch.nn.utils import parametrize

from ..plan import PlanEntry
from ..write import _effective_shape
from ..schemes import variance_scaling_std

__all__ = ["torch_tags", "torch_entry"]


def torch_tags(model: nn.Module) -> dict[int, frozenset[str]]:
    """Modules whose PyTorch defaults are overridden by a container's ``_reset_parameters``:
    ``"mha_out_proj"`` for the ``out_proj`` of a ``MultiheadAttention`` with biases (its bias is
    set to 0), ``"transformer"`` for every module inside an ``nn.Transformer`` (every tensor with
    more than one dimension gets ``xavier_uniform_``)."""
    tags: dict[int, set[str]] = {}
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_bias is not None:
            tags.setdefault(id(module.out_proj), set()).add("mha_out_proj")
        if isinstance(module, nn.Transformer):
            for sub in module.modules():
                tags.setdefault(id(sub), set()).add("transformer")
    return {k: frozenset(v) for k, v in tags.items()}


def torch_entry(make, kind, role, module, local, shape, tags: frozenset[str] = frozenset()) -> PlanEntry:
    """PyTorch's own defaults (reset_parameters), with torch's fan rule (dims 1 and 0), including
    the overrides of containers (see :func:`torch_tags`)."""
    torch_fan_in = shape[1] * math.prod(shape[2:]) if len(shape) >= 2 else None
    torch_fan_out = shape[0] * math.prod(shape[2:]) if len(shape) >= 2 else None
    if "transformer" in tags and len(shape) >= 2:
        return make("xavier_uniform", "uniform", torch_fan_in, torch_fan_out, 1.0,
                    variance_scaling_std(1.0, "fan_avg", torch_fan_in, torch_fan_out),
                    "PyTorch default: nn.Transformer applies xavier_uniform_ to every tensor with 2+ dims")
    if "mha_out_proj" in tags and role == "bias":
        return make("zeros", "-", None, None, None, 0.0,
                    "PyTorch default: MultiheadAttention sets out_proj.bias to 0")
    if kind == "dense":
        if role == "weight":
            return make("kaiming_uniform", "uniform", torch_fan_in, torch_fan_out, math.sqrt(1 / 3),
                        variance_scaling_std(1 / 3, "fan_in", torch_fan_in, torch_fan_out),
                        "PyTorch default: kaiming_uniform_(a=sqrt(5)), U(+-1/sqrt(fan_in))")
        fan_in = _torch_bias_fan_in(module)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        if bound == 0:
            return make("zeros", "-", None, None, None, 0.0, "PyTorch default: bias 0 (no inputs)")
        return make("uniform", "uniform", fan_in, None, None, bound / math.sqrt(3),
                    "PyTorch default: bias U(+-1/sqrt(fan_in))", bound=bound)
    if kind == "embedding":
        pad = getattr(module, "padding_idx", None)
        return make("normal", "normal", None, None, None, 1.0, "PyTorch default: embedding N(0, 1)",
                    std=1.0, **({"padding_idx": pad} if pad is not None else {}))
    if kind == "rnn":
        bound = 1 / math.sqrt(module.hidden_size)
        return make("uniform", "uniform", None, None, None, bound / math.sqrt(3),
                    "PyTorch default: every RNN tensor U(+-1/sqrt(hidden_size))", bound=bound)
    if kind == "mha":
        if role == "bias":
            return make("zeros", "-", None, None, None, 0.0, "PyTorch default: in_proj_bias 0")
        scheme = "xavier_normal" if local in ("bias_k", "bias_v") else "xavier_uniform"
        dist = scheme.split("_", 1)[1]
        return make(scheme, dist, torch_fan_in, torch_fan_out, 1.0,
                    variance_scaling_std(1.0, "fan_avg", torch_fan_in, torch_fan_out),
                    f"PyTorch default: {scheme}_ on the whole tensor")
    if kind == "norm":
        if role == "scale":
            return make("constant", "-", None, None, None, 0.0, "PyTorch default: weight 1", value=1.0)
        return make("zeros", "-", None, None, None, 0.0, "PyTorch default: bias 0")
    if kind == "prelu":
        return make("constant", "-", None, None, None, 0.0, "PyTorch default: 0.25", value=0.25)
    return make("keep", "-", None, None, None, None, "kept")


def _torch_bias_fan_in(module: nn.Module) -> int:
    if parametrize.is_parametrized(module, "weight"):
        shape = _effective_shape(module, "weight")
    else:
        w = module.weight
        if isinstance(w, nn.parameter.UninitializedParameter) or w.dim() < 2:
            return 0
        shape = w.shape
    return shape[1] * math.prod(shape[2:]) if len(shape) >= 2 else 0
