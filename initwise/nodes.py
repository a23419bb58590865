"""The nodes of the recorded graph (:mod:`initwise.graph`): :class:`Node`, one recorded
operation, and the layers initwise knows, each call of which is recorded as one ``layer`` node
(:func:`is_layer`, :func:`is_norm`, :func:`layers`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["Node", "is_layer", "is_norm", "layers", "scale_offset", "scale_offsets"]

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


def scale_offset(module: nn.Module) -> float:
    """``c`` in a norm's output ``normalized(x) * (c + weight)``: 0 for torch's norms and most
    others, 1 for the ``(1 + weight)`` form (Gemma's RMSNorm, whose identity is weight 0). Read
    numerically from the module's own forward on a fixed probe with the weight at 0 and at 1 (and
    the shift at 0); 0 when the probe cannot run (meta buffers, extra arguments) or the output is
    not of that form."""
    if isinstance(module, _NORM_TYPES) or not is_norm(module):
        return 0.0
    own = dict(module.named_parameters(recurse=False))
    names = list(own)
    weight = own[names[0]]
    if weight.dim() != 1 or any(b.is_meta for b in module.buffers(recurse=False)):
        return 0.0
    dtype = weight.dtype if weight.is_floating_point() else torch.float32
    x = torch.randn(4, weight.numel(), generator=torch.Generator().manual_seed(0)).to(dtype)
    zero = {n: torch.zeros(p.shape, dtype=dtype) for n, p in own.items()}
    try:
        with torch.no_grad():
            y0 = torch.func.functional_call(module, zero, (x,)).double()
            y1 = torch.func.functional_call(module, {**zero, names[0]: torch.ones(weight.shape, dtype=dtype)},
                                            (x,)).double()
    except Exception:  # noqa: BLE001 - a norm this probe cannot call keeps the usual form
        return 0.0
    d = y1 - y0  # normalized(x): the part the weight scales
    if y0.shape != x.shape or not bool(torch.isfinite(y1).all()) or float(d.square().sum()) == 0.0:
        return 0.0
    c = float((y0 * d).sum() / d.square().sum())
    exact = float((y0 - c * d).square().sum()) <= 1e-4 * float(y0.square().sum()) + 1e-12
    return round(c, 6) if exact and abs(c) > 1e-3 else 0.0


def scale_offsets(modules: Iterable[nn.Module]) -> dict[int, float]:
    """id(norm) -> its :func:`scale_offset` for the norms among ``modules`` where it is not 0,
    probed once per class and settings (``extra_repr``). The probe calls each module: run it
    before any recording hook is on."""
    found: dict[int, float] = {}
    forms: dict[tuple, float] = {}
    for m in modules:
        if is_norm(m):
            key = (type(m), m.extra_repr())
            if key not in forms:
                forms[key] = scale_offset(m)
            if forms[key]:
                found[id(m)] = forms[key]
    return found


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
