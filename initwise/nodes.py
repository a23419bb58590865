"""The nodes of the recorded graph (:mod:`initwise.graph`): :class:`Node`, one recorded
operation, and the layers initwise knows, each call of which is recorded as one ``layer`` node
(:func:`is_layer`, :func:`is_norm`, :func:`layers`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Node", "is_layer", "is_norm", "layers"]

_NORM_TYPES: tuple[type, ...] = tuple(t for t in (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, getattr(nn, "RMSNorm", None),
) if t is not None)
_LAYER_TYPES: tuple[type, ...] = (
    nn.Linear, nn.modules.conv._ConvNd, nn.Embedding, nn.EmbeddingBag, nn.RNNBase, nn.RNNCellBase,
    nn.MultiheadAttention, nn.PReLU, nn.Bilinear,
)


def is_norm(module: nn.Module) -> bool:
    """A normalization layer: torch's (batch/layer/group/instance/RMS norm), or a module of
    another library whose class name ends in ``Norm`` (``LlamaRMSNorm``, ``T5LayerNorm``,
    ``LayerNorm2d``) and whose own parameters are at most a scale and a shift vector."""
    if isinstance(module, _NORM_TYPES):
        return True
    name = type(module).__name__.lower().rstrip("0123456789d")
    if not name.endswith("norm") or any(True for _ in module.children()):
        return False
    own = [p for p in module.parameters(recurse=False)]
    return 0 < len(own) <= 2 and all(p.dim() == 1 for p in own)


def is_layer(module: nn.Module) -> bool:
    """A layer initwise knows, recorded as one node (see :mod:`initwise.graph`)."""
    return isinstance(module, _LAYER_TYPES) or is_norm(module)


def layers(model: nn.Module, named: list[tuple[str, nn.Module]] | None = None) -> dict[str, nn.Module]:
    """The known layers of ``model`` by qualified name (outermost first; a known layer's
    sub-modules, such as ``MultiheadAttention.out_proj``, belong to it); ``named``:
    ``model.named_modules()`` when the caller has it."""
    found: dict[str, nn.Module] = {}
    for name, module in (model.named_modules() if named is None else named):
        parts = name.split(".")
        if any(".".join(parts[:k]) in found for k in range(1, len(parts))):
            continue  # a part of a known layer
        if is_layer(module):
            found[name] = module
    return found


@dataclass
class Node:
    """One recorded operation.

    ``kind``: ``"input"``, ``"const"`` (a tensor that depends on neither the input nor a
    parameter: buffers, masks, ``arange``), ``"param"`` (a parameter, or a view of one: ``param``
    names it), ``"layer"`` (a call of known layer ``module``), ``"act"`` (a fused pointwise chain)
    or an operation kind of :mod:`initwise.ops`. ``inputs`` are the ids of the nodes whose
    tensors the operation read, in call order; ``shape`` the first output's shape; ``varies``
    whether it depends on the model's input (False for position embeddings looked up from a
    buffer). ``weights`` are the parameters the operation uses, ``info`` what its rule needs
    (fans, scalar arguments, statistics of constants, the fused chain).
    """

    id: int
    kind: str
    op: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    varies: bool
    module: str = ""
    param: str = ""
    weights: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def data(self) -> bool:
        """Whether the node carries data through the network (the input, or what layers make
        of it or of their own parameters), as opposed to a constant or a raw parameter."""
        return self.kind not in ("const", "param")

    def phi(self, z: torch.Tensor) -> torch.Tensor:
        """The fused chain of an ``act`` node applied to ``z`` (elementwise)."""
        env: dict[int, Any] = {self.inputs[0]: z}
        for nid, func, args, kwargs in self.info["chain"]:
            env[nid] = func(*_fill(args, env), **_fill(kwargs, env))
        return env[self.info["chain"][-1][0]]


#: a recorded tensor inside a fused chain's step (:meth:`Node.phi` puts the tensor back)
class _Ref:
    __slots__ = ("nid",)

    def __init__(self, nid: int):
        self.nid = nid


def _fill(obj: Any, env: dict[int, Any]) -> Any:
    if isinstance(obj, _Ref):
        return env[obj.nid]
    if isinstance(obj, (tuple, list)):
        return type(obj)(_fill(o, env) for o in obj)
    if isinstance(obj, dict):
        return {k: _fill(v, env) for k, v in obj.items()}
    return obj
