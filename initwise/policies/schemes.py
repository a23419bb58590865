"""One scheme for every weight: ``policy="xavier_uniform"``, ``"he"``, ``"orthogonal"``, ...

That scheme for every weight with at least 2 dimensions (He with the ReLU gain, Xavier and
orthogonal with gain 1; fused gate/q-k-v weights with per-block fans or per-block
orthogonality; grouped convolutions orthogonal per group), biases 0, norm layers 1 and 0.
"""
from __future__ import annotations

import math

from torch import nn

from ..fans import param_blocks
from ..plan import PlanEntry
from .common import FAN_FREE, fan_free, he, lecun, orthogonal_std, xavier

__all__ = ["scheme_entry"]


def scheme_entry(make, scheme, kind, role, module, local, shape, fan_in, fan_out) -> PlanEntry:
    blocks = param_blocks(module, local)
    why = f"policy {scheme}"
    if scheme in FAN_FREE:
        return fan_free(make, scheme, why)
    if scheme.startswith("xavier"):
        return xavier(make, scheme.split("_", 1)[1], fan_in, fan_out, why + ", gain 1")
    if scheme.startswith("kaiming"):
        return he(make, scheme.split("_", 1)[1], fan_in, fan_out, math.sqrt(2.0), why + ", ReLU gain sqrt(2)")
    if scheme.startswith("lecun"):
        return lecun(make, scheme.split("_", 1)[1], fan_in, fan_out, why)
    groups = int(getattr(module, "groups", 1) or 1) if kind == "dense" else 1
    if groups > 1:
        # A grouped convolution's weight (out, in/g, *k) (transposed: (in, out/g, *k)) stacks the
        # g groups' blocks along dim 0: each must be orthogonal on its own, or a depthwise conv
        # (g = channels) keeps only ~k/channels of its input's variance.
        blocks = groups
    per_group = f", per group ({groups})" if groups > 1 else (f", per block ({blocks})" if blocks > 1 else "")
    if scheme == "delta_orthogonal":
        conv = kind == "dense" and isinstance(module, nn.modules.conv._ConvNd) and len(shape) >= 3
        if conv and all(k % 2 for k in shape[2:]):
            k = math.prod(shape[2:])
            extra = {"blocks": blocks} if blocks > 1 else {}
            return make("delta_orthogonal", "-", fan_in, fan_out, 1.0,
                        orthogonal_std(shape[0] // blocks, shape[1]) / math.sqrt(k),
                        why + ", gain 1 (Xiao et al. 2018)" + per_group, **extra)
        if conv:
            kernel = "x".join(map(str, shape[2:]))
            scheme, why = "orthogonal", why + f" (kernel {kernel} has no centre tap: orthogonal instead)"
        else:
            scheme, why = "orthogonal", why + " (not a convolution: orthogonal instead)"
    if scheme == "orthogonal":
        std = orthogonal_std(shape[0] // blocks, math.prod(shape[1:]))
        return make("orthogonal", "-", fan_in, fan_out, 1.0, std, why + ", gain 1" + per_group, blocks=blocks)
    raise ValueError(f"scheme {scheme!r} cannot be used as a whole-model policy")
