"""Naming the activation a recorded pointwise chain computes.

The planner works with whatever elementwise function runs between a layer and its consumer;
a name is only for the reasons it prints. A chain of one known function is named from the
function and its arguments (``F.leaky_relu(x, 0.2)`` -> ``leaky_relu(negative_slope=0.2)``,
``x.clamp(min=0)`` -> ``relu``); a longer chain (the tanh formula of GELU written out,
``x * torch.sigmoid(x)``) is named by comparing its values on a grid with the known activations
(``gelu(approximate=tanh)``, ``silu``), else it is ``"custom"`` (its moments are computed from
the chain itself either way).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .gains import _ACTIVATIONS, activation_name

__all__ = ["Activation", "of_call", "of_module", "identify"]

# Positional parameters (after the input) of functional activations.
_POSITIONAL = {
    "leaky_relu": ("negative_slope",), "elu": ("alpha",), "celu": ("alpha",),
    "softplus": ("beta",), "hardtanh": ("min_val", "max_val"),
}
_KEYWORDS = frozenset({"negative_slope", "alpha", "beta", "approximate", "min_val", "max_val"})


@dataclass(frozen=True)
class Activation:
    """An activation found downstream of a layer: ``name`` (as in :data:`initwise.GAIN_NAMES`,
    ``"custom"`` for an unnamed elementwise chain, ``"none"`` when the output is used
    linearly) and its parameters as sorted ``(key, value)`` pairs. ``via`` says where it was
    seen (not part of equality); ``fn`` is the elementwise function itself."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    via: str = field(default="", compare=False)
    fn: Any = field(default=None, compare=False, repr=False)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def label(self) -> str:
        """``"relu"``, ``"leaky_relu(negative_slope=0.2)"``, ``"none"``."""
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params)
        return f"{self.name}({inner})"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def of_module(module: nn.Module, where: str) -> Activation | None:
    """The activation an activation module applies, or None."""
    known = activation_name(module)
    if known is not None and known[0] != "identity":
        name, params = known
        return Activation(name, tuple(sorted(params.items())), via=f"{type(module).__name__} module '{where}'",
                          fn=module)
    return None


def _clamp(fname: str, args: tuple, kwargs: dict) -> Activation | None:
    """``x.clamp(min=0)`` / ``torch.clamp(x, 0)`` / ``clip`` / ``clamp_min(0)``: relu (relu6 with max 6)."""
    bare = fname.strip("_")
    if bare not in ("clamp", "clip", "clamp_min"):
        return None
    lo = kwargs.get("min", args[1] if len(args) > 1 else None)
    hi = None if bare == "clamp_min" else kwargs.get("max", args[2] if len(args) > 2 else None)
    if isinstance(lo, bool) or not isinstance(lo, (int, float)) or lo != 0:
        return None
    if hi is None:
        return Activation("relu", (), via=f"{fname}(min=0)")
    if isinstance(hi, (int, float)) and not isinstance(hi, bool) and hi == 6:
        return Activation("relu6", (), via=f"{fname}(min=0, max=6)")
    return None


def of_call(func: Any, args: tuple, kwargs: dict) -> Activation | None:
    """The known activation one functional call applies, with its parameters, or None."""
    fname = getattr(func, "__name__", str(func))
    if isinstance(fname, str):
        clamp = _clamp(fname, args, kwargs)
        if clamp is not None:
            return clamp
    try:
        known = activation_name(func)
    except Exception:  # noqa: BLE001 - odd callables
        known = None
    if known is None and isinstance(fname, str):
        bare = fname.strip("_")
        for space in (F, torch):
            candidate = getattr(space, bare, None)
            if candidate is not None and candidate is not func:
                try:
                    known = activation_name(candidate)
                except Exception:  # noqa: BLE001
                    known = None
                if known is not None:
                    break
    if known is None or known[0] in ("softmax", "log_softmax", "softmin"):
        return None
    name, params = known
    params = dict(params)
    for i, key in enumerate(_POSITIONAL.get(name, ())):
        if len(args) > i + 1 and isinstance(args[i + 1], (int, float)) and not isinstance(args[i + 1], bool):
            params[key] = float(args[i + 1])
    for key, value in kwargs.items():
        if key in _KEYWORDS and not isinstance(value, torch.Tensor):
            params[key] = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    module = getattr(func, "__module__", None) or ""
    prefix = "F." if module.endswith("functional") or module == "torch._C._nn" else (
        "torch." if module.startswith("torch") else "Tensor.")
    return Activation(name, tuple(sorted(params.items())), via=f"{prefix}{fname}")


_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("identity", {}), ("relu", {}), ("gelu", {}), ("gelu", {"approximate": "tanh"}), ("silu", {}),
    ("tanh", {}), ("sigmoid", {}), ("elu", {}), ("selu", {}), ("mish", {}), ("softplus", {}),
    ("relu6", {}), ("hardswish", {}), ("hardsigmoid", {}), ("softsign", {}), ("hardtanh", {}),
    ("leaky_relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("leaky_relu", {"negative_slope": 0.1}),
    ("celu", {}), ("logsigmoid", {}), ("tanhshrink", {}),
)
_GRID = torch.linspace(-6.0, 6.0, 97, dtype=torch.float64)
#: the candidates' values on the grid, one row each (compared with a chain's values at once)
_REFS = torch.stack([_ACTIVATIONS[name](_GRID, **params) for name, params in _CANDIDATES])


def identify(phi: Callable[[torch.Tensor], torch.Tensor],
             cache: dict[bytes, tuple[str, dict[str, Any]]] | None = None) -> tuple[str, dict[str, Any]]:
    """``(name, params)`` of the known activation equal to ``phi`` on [-6, 6] (to 1e-7 of
    its scale, in float64), else ``("custom", {})``; ``relu(x)**2`` and other compositions are custom.

    ``cache`` (a dict the caller keeps, e.g. for the chains of one graph): answers by the
    values of ``phi`` on the grid, so that equal functions are compared with the candidates once."""
    try:
        with torch.no_grad():
            y = phi(_GRID.clone()).to(torch.float64)
    except Exception:  # noqa: BLE001 - not evaluable on float64: stays custom
        return "custom", {}
    if y.shape != _GRID.shape:
        return "custom", {}
    if cache is None:
        return _match(y)
    key = y.detach().cpu().numpy().tobytes()
    if key not in cache:
        cache[key] = _match(y)
    name, params = cache[key]
    return name, dict(params)


def _match(y: torch.Tensor) -> tuple[str, dict[str, Any]]:
    """The first of the candidates equal to ``y`` (values on the grid), else custom."""
    if not torch.isfinite(y).all():
        return "custom", {}
    tol = 1e-7 * (1.0 + float(y.abs().max()))
    close = ((_REFS - y).abs().amax(dim=1) <= tol).nonzero()
    if close.numel() == 0:
        return "custom", {}
    name, params = _CANDIDATES[int(close[0])]
    return name, dict(params)
