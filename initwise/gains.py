"""Gains: the factor by which an activation changes the scale of the signal.

**initwise convention** (the default). He et al. (2015, eq. 7-10) show that a layer ``y = W x``
with ``x = phi(y_prev)`` keeps ``Var[y]`` constant when ``n_in * Var[W] * E[x^2] = Var[y_prev]``.
For a pre-activation ``z ~ N(0, 1)`` this gives ``Var[W] = gain^2 / n_in`` with::

    gain = 1 / sqrt(E[phi(z)^2]),    z ~ N(0, 1)

which is exact for the piecewise-linear activations (relu: ``sqrt(2)``, leaky relu with slope
``a``: ``sqrt(2 / (1 + a^2))``, identity: 1) and makes SELU's gain exactly 1 (Klambauer et al.
2017 chose its constants so that ``E[selu(z)^2] = 1``). For every other activation, and for any
callable or ``nn.Module``, the expectation is computed numerically (see :func:`second_moment`).

**torch convention** (``convention="torch"``) returns exactly
``torch.nn.init.calculate_gain``'s value, for the activations torch knows. The two differ where
torch picked a value by other reasoning:

============  =====================  ==========================
activation    initwise (He, exact)   torch ``calculate_gain``
============  =====================  ==========================
tanh          1.5925                 5/3 = 1.6667
sigmoid       1.8462                 1
selu          1                      3/4
relu          sqrt(2)                sqrt(2)
leaky_relu a  sqrt(2/(1+a^2))        sqrt(2/(1+a^2))
============  =====================  ==========================
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checks import number

__all__ = ["gain", "second_moment", "activation_name", "activation_params", "GAIN_NAMES"]

# Pieces of [-12, 12] for composite Gauss-Legendre quadrature: breakpoints at the kinks of the
# usual activations (0 for relu-likes, +-1 for hardtanh) so that every piece is smooth. The
# normal density beyond |z| = 12 is below 1e-31.
_BREAKPOINTS = (-12.0, -6.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 12.0)
_NODES_PER_PIECE = 64

# name -> phi(z) on a float64 tensor (params passed as keywords)
_ACTIVATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "identity": lambda z: z,
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "leaky_relu": lambda z, negative_slope=0.01: F.leaky_relu(z, negative_slope),
    "elu": lambda z, alpha=1.0: F.elu(z, alpha),
    "selu": F.selu,
    "celu": lambda z, alpha=1.0: F.celu(z, alpha),
    "gelu": lambda z, approximate="none": F.gelu(z, approximate=approximate),
    "silu": F.silu,
    "mish": F.mish,
    "softplus": lambda z, beta=1.0: F.softplus(z, beta),
    "softsign": F.softsign,
    "hardtanh": lambda z, min_val=-1.0, max_val=1.0: F.hardtanh(z, min_val, max_val),
    "relu6": F.relu6,
    "hardswish": F.hardswish,
    "hardsigmoid": F.hardsigmoid,
    "logsigmoid": F.logsigmoid,
    "tanhshrink": F.tanhshrink,
    "softshrink": lambda z, lambd=0.5: F.softshrink(z, lambd),
    "hardshrink": lambda z, lambd=0.5: F.hardshrink(z, lambd),
    "threshold": lambda z, threshold=0.0, value=0.0: F.threshold(z, threshold, value),
    # RReLU draws its negative slope from U(lower, upper) in training and uses the mean in eval
    "rrelu": lambda z, lower=1.0 / 8, upper=1.0 / 3: F.leaky_relu(z, (lower + upper) / 2),
}
_ALIASES = {
    "linear": "identity", "none": "identity", "swish": "silu",
    "conv1d": "identity", "conv2d": "identity", "conv3d": "identity",
    "conv_transpose1d": "identity", "conv_transpose2d": "identity", "conv_transpose3d": "identity",
    # softmax ends a network: the layer before it produces logits, which initwise treats as a
    # linear output (gain 1, Glorot & Bengio's setting for the output layer).
    "softmax": "identity", "log_softmax": "identity", "softmin": "identity",
}
GAIN_NAMES: tuple[str, ...] = tuple(sorted(set(_ACTIVATIONS) | set(_ALIASES)))

_TORCH_NAMES = {"identity": "linear", "sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu",
                "leaky_relu": "leaky_relu", "selu": "selu"}


def _quadrature() -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights (including the N(0,1) density) of the composite rule, float64."""
    x, w = np.polynomial.legendre.leggauss(_NODES_PER_PIECE)
    nodes, weights = [], []
    for lo, hi in zip(_BREAKPOINTS[:-1], _BREAKPOINTS[1:]):
        z = (hi - lo) / 2 * x + (hi + lo) / 2
        nodes.append(z)
        weights.append((hi - lo) / 2 * w * np.exp(-z * z / 2) / math.sqrt(2 * math.pi))
    return torch.from_numpy(np.concatenate(nodes)), torch.from_numpy(np.concatenate(weights))


def _elementwise(phi: Callable[..., Any], z: torch.Tensor, out: torch.Tensor) -> bool:
    """Whether ``phi`` acted on each element alone: applied to the reversed input, and to each
    half of it separately, it must give the same values (softmax, normalizations fail this)."""
    half = z.numel() // 2
    again = torch.cat([_evaluate(phi, z[:half].flip(0), check=False).flip(0),
                       _evaluate(phi, z[half:].flip(0), check=False).flip(0)])
    scale = float(out.abs().nan_to_num(0.0, posinf=0.0).max())
    return bool(torch.allclose(again, out, rtol=1e-5, atol=1e-6 * (1 + scale), equal_nan=True))


def _evaluate(phi: Callable[..., Any], z: torch.Tensor, check: bool = True) -> torch.Tensor:
    """phi(z) as float64, trying float64, then the module's own dtype, then numpy; with
    ``check``, ``TypeError`` unless phi is elementwise."""
    attempts: list[Callable[[], Any]] = [lambda: phi(z)]
    if isinstance(phi, nn.Module):
        p = next(phi.parameters(), None)
        if p is not None:
            attempts.append(lambda: phi(z.to(p.dtype)))
    attempts.append(lambda: phi(z.numpy()))
    error: Exception | None = None
    for attempt in attempts:
        try:
            with torch.no_grad():
                out = attempt()
            out = torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out)
            if out.shape != z.shape:
                raise ValueError(f"returned shape {tuple(out.shape)} for input shape {tuple(z.shape)}")
            out = out.detach().to(torch.float64)
        except Exception as exc:  # noqa: BLE001 - try the next way of calling it
            error = exc
            continue
        if check and not _elementwise(phi, z, out):
            raise TypeError(
                f"activation {phi!r} is not elementwise (its value at one element depends on the "
                "others, as softmax's does); gain() is defined for elementwise activations only"
            )
        return out
    raise TypeError(
        f"cannot evaluate activation {phi!r} elementwise on a 1-D float tensor ({error}); "
        "gain() needs an elementwise function of one tensor argument"
    )


def second_moment(phi: Callable[..., Any]) -> float:
    """``E[phi(z)^2]`` for ``z ~ N(0, 1)``.

    Composite Gauss-Legendre quadrature, 64 nodes on each of the pieces of [-12, 12] split at
    -6, -3, -1, 0, 1, 3, 6. Splitting at the kinks of the usual activations makes each piece
    smooth, where plain Gauss-Hermite converges slowly on a kink; relu gives 1/2 and the tanh
    value agrees with 10^6-point Monte Carlo to its error.
    """
    z, w = _quadrature()
    return float((_evaluate(phi, z).square() * w).sum())


#: activation modules: (class, name, the attributes that are its parameters), subclasses first
_MODULE_ACTIVATIONS: tuple[tuple[type, str, tuple[str, ...]], ...] = (
    (nn.ReLU6, "relu6", ()), (nn.ReLU, "relu", ()), (nn.LeakyReLU, "leaky_relu", ("negative_slope",)),
    (nn.ELU, "elu", ("alpha",)), (nn.CELU, "celu", ("alpha",)), (nn.SELU, "selu", ()),
    (nn.GELU, "gelu", ("approximate",)), (nn.SiLU, "silu", ()), (nn.Mish, "mish", ()),
    (nn.Softplus, "softplus", ("beta",)), (nn.Softsign, "softsign", ()),
    (nn.Hardtanh, "hardtanh", ("min_val", "max_val")), (nn.Hardswish, "hardswish", ()),
    (nn.Tanh, "tanh", ()), (nn.Sigmoid, "sigmoid", ()), (nn.Identity, "identity", ()),
    (nn.Softmax, "softmax", ()), (nn.LogSoftmax, "log_softmax", ()), (nn.Softmin, "softmin", ()),
    (nn.Hardsigmoid, "hardsigmoid", ()), (nn.LogSigmoid, "logsigmoid", ()),
    (nn.Tanhshrink, "tanhshrink", ()), (nn.Softshrink, "softshrink", ("lambd",)),
    (nn.Hardshrink, "hardshrink", ("lambd",)), (nn.Threshold, "threshold", ("threshold", "value")),
    (nn.RReLU, "rrelu", ("lower", "upper")),
)

#: activation functions (torch, functional, Tensor methods) by name
_FUNCTION_ACTIVATIONS: dict[Any, str] = {
    F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu",
    F.leaky_relu: "leaky_relu", F.leaky_relu_: "leaky_relu", F.elu: "elu", F.celu: "celu",
    F.selu: "selu", torch.selu: "selu", F.gelu: "gelu", F.silu: "silu", F.mish: "mish",
    F.softplus: "softplus", F.softsign: "softsign", F.hardtanh: "hardtanh", F.relu6: "relu6",
    F.hardswish: "hardswish", torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid", F.softmax: "softmax", torch.softmax: "softmax",
    F.log_softmax: "log_softmax", torch.log_softmax: "log_softmax", F.softmin: "softmin",
    F.hardsigmoid: "hardsigmoid", F.logsigmoid: "logsigmoid", F.tanhshrink: "tanhshrink",
    F.softshrink: "softshrink", F.hardshrink: "hardshrink", F.threshold: "threshold",
    F.rrelu: "rrelu", F.rrelu_: "rrelu", F.threshold_: "threshold",
    torch.Tensor.relu: "relu", torch.Tensor.relu_: "relu", torch.Tensor.tanh: "tanh",
    torch.Tensor.sigmoid: "sigmoid", torch.Tensor.softmax: "softmax",
    torch.Tensor.log_softmax: "log_softmax",
}


def activation_name(obj: Any) -> tuple[str, dict[str, Any]] | None:
    """Name and parameters of a known activation module or function, else ``None``.

    ``nn.LeakyReLU(0.2)`` -> ``("leaky_relu", {"negative_slope": 0.2})``, ``F.relu`` /
    ``torch.relu`` / ``Tensor.relu`` -> ``("relu", {})``, ``nn.Identity()`` -> ``("identity", {})``.
    Functional calls carry their parameters in the call's arguments, not in the function, so
    functions map to their name with empty parameters.
    """
    if isinstance(obj, nn.Module):
        for cls, name, attrs in _MODULE_ACTIVATIONS:
            if isinstance(obj, cls):
                return name, {a: getattr(obj, a) for a in attrs}
        if isinstance(obj, nn.PReLU) and obj.weight.numel() == 1:
            return "leaky_relu", {"negative_slope": float(obj.weight.detach())}
        return None
    try:
        name = _FUNCTION_ACTIVATIONS.get(obj)
    except TypeError:  # unhashable
        return None
    return (name, {}) if name else None


def _canonical(name: str) -> str:
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; known names: {', '.join(GAIN_NAMES)}. "
            "For anything else pass the function or module itself, e.g. gain(my_activation)"
        )
    return key


def activation_params(name: str) -> dict[str, Any]:
    """The parameters the named activation takes, with their defaults:
    ``activation_params("leaky_relu") == {"negative_slope": 0.01}``; ``ValueError`` for an
    unknown name."""
    phi = _ACTIVATIONS[_canonical(name)]
    try:
        signature = inspect.signature(phi)
    except (TypeError, ValueError):  # a builtin such as torch.tanh: no parameters
        return {}
    return {k: v.default for k, v in list(signature.parameters.items())[1:]}


def gain(activation: str | Callable[..., Any] | nn.Module, convention: str = "initwise", **params: Any) -> float:
    """Gain of ``activation``: ``1 / sqrt(E[phi(z)^2])``, ``z ~ N(0, 1)`` (He et al. 2015).

    ``activation`` is a name (see ``GAIN_NAMES``; parameters as keywords, e.g.
    ``gain("leaky_relu", negative_slope=0.2)``, ``gain("elu", alpha=1.0)``,
    ``gain("gelu", approximate="tanh")``), an activation module (``nn.LeakyReLU(0.2)``) or any
    elementwise callable. ``convention="torch"`` returns ``torch.nn.init.calculate_gain``'s value
    and raises ``ValueError`` for activations torch has no gain for.
    """
    if convention not in ("initwise", "torch"):
        raise ValueError(f"convention must be 'initwise' or 'torch', got {convention!r}")
    if not isinstance(activation, str):
        known = activation_name(activation)
        if known is None:
            if params:
                raise TypeError("parameters go with a named activation; a callable carries its own")
            if convention == "torch":
                raise ValueError(
                    f"torch.nn.init.calculate_gain has no gain for {activation!r}; use convention='initwise'"
                )
            if not callable(activation):
                raise TypeError(
                    f"activation must be a name, a callable or an nn.Module, got {type(activation).__name__}"
                )
            return _from_moment(second_moment(activation), repr(activation))
        activation, module_params = known
        params = {**module_params, **params}

    name = _canonical(activation)
    phi = _ACTIVATIONS[name]
    _check_params(name, params)
    try:
        phi(torch.zeros(1, dtype=torch.float64), **params)
    except TypeError:
        raise TypeError(f"unexpected parameters {sorted(params)} for activation {name!r}") from None
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"bad parameters {params} for activation {name!r}: {exc}") from None

    if convention == "torch":
        if name not in _TORCH_NAMES:
            raise ValueError(
                f"torch.nn.init.calculate_gain has no gain for {name!r} (it knows "
                f"{', '.join(sorted(_TORCH_NAMES.values()))}); use convention='initwise'"
            )
        return float(torch.nn.init.calculate_gain(_TORCH_NAMES[name], params.get("negative_slope")))

    if name == "identity":
        return 1.0
    if name == "relu":
        return math.sqrt(2.0)
    if name == "leaky_relu":
        a = params.get("negative_slope", 0.01)
        return math.sqrt(2.0 / (1.0 + a * a))
    if name == "selu":
        return 1.0
    label = f"{name}" + (f" with {params}" if params else "")
    return _from_moment(second_moment(lambda z: phi(z, **params)), label)


def _check_params(name: str, params: dict[str, Any]) -> None:
    """Each parameter of the named activation must be one it takes (else ``TypeError``) with a
    value of its kind: a finite number (not a bool, a list or a string) where the default is a
    number, a string where it is one (else ``ValueError``, as ``calculate_gain`` raises)."""
    defaults = activation_params(name)
    unknown = sorted(k for k in params if k not in defaults)
    if unknown:
        known = ", ".join(defaults) or "none"
        raise TypeError(f"unexpected parameters {unknown} for activation {name!r} (its parameters: {known})")
    for key, value in params.items():
        if isinstance(defaults[key], str):
            if not isinstance(value, str):
                raise ValueError(f"gain({name!r}): {key} must be a string such as "
                                 f"{defaults[key]!r}, got {type(value).__name__} {value!r}")
        else:
            number(value, key, f"gain({name!r})")


def _from_moment(m2: float, label: str) -> float:
    """``1 / sqrt(m2)``; ``ValueError`` when the second moment is 0 (the activation is 0 for
    almost every input) or not finite."""
    if not math.isfinite(m2):
        raise ValueError(f"activation {label} has E[phi(z)^2] = {m2} for z ~ N(0, 1): not finite, so it "
                         "has no gain (does it return inf or NaN for some inputs?)")
    if m2 <= 0:
        raise ValueError(f"activation {label} is 0 for almost every input z ~ N(0, 1) (E[phi(z)^2] = 0), so "
                         "no gain can keep the signal's scale; check its parameters (e.g. a threshold "
                         "beyond the inputs' range)")
    gain = 1.0 / math.sqrt(m2)
    if not math.isfinite(gain):
        raise ValueError(f"activation {label} has E[phi(z)^2] = {m2:.3g} for z ~ N(0, 1): its gain {gain} is "
                         "not finite")
    return gain
