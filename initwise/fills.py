"""torch.nn.init's elementary fills, with the same semantics, plus ``seed=`` and checks.

``uniform_``, ``normal_``, ``trunc_normal_``, ``ones_``, ``eye_``, ``dirac_`` and ``sparse_``
take the arguments of their ``torch.nn.init`` namesakes, in the same order, and fill the tensor
directly in its own dtype, as torch does: with the same generator state they give torch's values
(``sparse_`` for its normal values; torch draws its zero positions from the global generator,
initwise from ``generator``). On top of torch: ``seed=`` (an int) instead of ``generator=``;
every number is checked (finite, in range, not a bool or a list: ``ValueError`` naming the
argument); meta tensors are left as they are and empty tensors warn, as for every initwise
scheme; ``trunc_normal_`` also takes its cut in standard deviations (``cut=2``, Keras's
``TruncatedNormal`` and timm's ``trunc_normal_tf_``).
"""
from __future__ import annotations

import math
import warnings

import torch

from .checks import fillable, generator_for, integer, number

__all__ = ["uniform_", "normal_", "trunc_normal_", "ones_", "eye_", "dirac_", "sparse_"]


def _fits(value: float, tensor: torch.Tensor, name: str, what: str) -> None:
    """``value`` (a bound or a mean plus some stds) must not overflow the tensor's dtype."""
    top = torch.finfo(tensor.dtype).max
    if abs(value) > top:
        raise ValueError(f"{what}: {name} reaches {value:.3g}, beyond what {tensor.dtype} holds "
                         f"(max {top:.3g}); the values would overflow to inf")


def uniform_(tensor: torch.Tensor, a: float = 0.0, b: float = 1.0,
             generator: torch.Generator | None = None, *, seed: int | None = None) -> torch.Tensor:
    """``U(a, b)`` (``torch.nn.init.uniform_``; ``a < b``, both finite)."""
    what = "uniform_"
    a, b = number(a, "a", what), number(b, "b", what)
    if not a < b or not math.isfinite(b - a):
        raise ValueError(f"{what}: need a < b with a finite width, got a={a!r}, b={b!r}")
    if not fillable(tensor, what):
        return tensor
    _fits(max(abs(a), abs(b)), tensor, "the bound", what)
    g = generator_for(tensor, generator, seed, what)
    with torch.no_grad():
        return tensor.uniform_(a, b, generator=g)


def normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0,
            generator: torch.Generator | None = None, *, seed: int | None = None) -> torch.Tensor:
    """``N(mean, std^2)`` (``torch.nn.init.normal_``; ``std > 0``)."""
    what = "normal_"
    mean, std = number(mean, "mean", what), number(std, "std", what, positive=True)
    if not fillable(tensor, what):
        return tensor
    _fits(abs(mean) + 8 * std, tensor, "mean + 8 std", what)
    g = generator_for(tensor, generator, seed, what)
    with torch.no_grad():
        return tensor.normal_(mean, std, generator=g)


def _norm_cdf(x: float) -> float:
    return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0


def trunc_normal_(tensor: torch.Tensor, mean: float = 0.0, std: float = 1.0, a: float | None = None,
                  b: float | None = None, generator: torch.Generator | None = None, *,
                  cut: float | None = None, seed: int | None = None) -> torch.Tensor:
    """``N(mean, std^2)`` restricted to ``[a, b]``: values outside are redrawn.

    Two ways to say where to cut:

    * torch's: ``a`` and ``b`` are **absolute** values, default ``-2`` and ``2``
      (``torch.nn.init.trunc_normal_``). With a small ``std`` (ViT's 0.02) the default cuts
      nothing: pass ``a=-2 * std, b=2 * std``, or
    * ``cut=c``, in standard deviations: ``[mean - c std, mean + c std]`` (Keras's
      ``TruncatedNormal`` and timm's ``trunc_normal_tf_`` cut at ``c = 2``). Not with ``a``/``b``.

    ``std`` is the standard deviation of the normal *before* truncation, as in torch and Keras:
    the samples have a smaller one (``0.87962566 std`` for a cut at 2 std). For a truncated normal
    whose variance is a target, use ``variance_scaling_(..., distribution="truncated_normal")``
    or ``*_truncated_normal_``. Same algorithm as torch 2.13 (redraw outside ``[a, b]`` while
    the interval holds more than 30% of the mass, else rejection from a uniform proposal), so
    the same generator state gives torch's values.
    """
    what = "trunc_normal_"
    mean, std = number(mean, "mean", what), number(std, "std", what, positive=True)
    if cut is not None:
        if a is not None or b is not None:
            raise ValueError(f"{what}: give cut= (in standard deviations) or a=/b= (absolute), not both")
        c = number(cut, "cut", what, positive=True)
        a, b = mean - c * std, mean + c * std
    a = -2.0 if a is None else number(a, "a", what)
    b = 2.0 if b is None else number(b, "b", what)
    if not a < b:
        raise ValueError(f"{what}: need a < b, got a={a!r}, b={b!r}")
    if not fillable(tensor, what):
        return tensor
    _fits(max(abs(a), abs(b)), tensor, "the cut", what)
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn(f"{what}: mean {mean} is more than 2 std from [{a}, {b}]; the values are "
                      "drawn from the far tail and may be inaccurate", stacklevel=2)
    g = generator_for(tensor, generator, seed, what)
    with torch.no_grad():
        if _norm_cdf((b - mean) / std) - _norm_cdf((a - mean) / std) > 0.3:
            _redraw_outside(tensor, mean, std, a, b, g)
        else:
            _uniform_rejection(tensor, mean, std, a, b, g)
    return tensor


def _redraw_outside(tensor: torch.Tensor, mean: float, std: float, a: float, b: float,
                    g: torch.Generator | None) -> None:
    lo = tensor.new_tensor(a, device="cpu").item()  # the bounds as the dtype holds them
    hi = tensor.new_tensor(b, device="cpu").item()
    result = tensor.normal_(mean, std, generator=g)
    while True:
        mask = (result < lo) | (result > hi)
        if not mask.any():
            break
        result = torch.where(mask, torch.empty_like(result).normal_(mean, std, generator=g), result)
    if result is not tensor:
        tensor.copy_(result)


def _uniform_rejection(tensor: torch.Tensor, mean: float, std: float, a: float, b: float,
                       g: torch.Generator | None) -> None:
    """Candidates ``U(a, b)``, accepted with probability ``pdf(x) / pdf(mode)``."""
    mode = max(a, min(mean, b))
    log_peak = -0.5 * ((mode - mean) / std) ** 2
    candidates = torch.empty_like(tensor)
    accept = torch.empty_like(tensor)
    tensor.uniform_(a, b, generator=g)
    candidates.copy_(tensor)
    candidates.sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)
    pending = accept.uniform_(generator=g).log_().gt(candidates)
    if not pending.any():
        return
    result = tensor
    while True:
        candidates.uniform_(a, b, generator=g)
        result = torch.where(pending, candidates, result)
        candidates.sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)
        pending = torch.where(pending, accept.uniform_(generator=g).log_().gt(candidates), pending)
        if not pending.any():
            break
    tensor.copy_(result)


def ones_(tensor: torch.Tensor) -> torch.Tensor:
    """Fill with 1 (``torch.nn.init.ones_``)."""
    if fillable(tensor, "ones_"):
        with torch.no_grad():
            tensor.fill_(1.0)
    return tensor


def eye_(tensor: torch.Tensor) -> torch.Tensor:
    """The identity matrix, for a 2-D tensor (``torch.nn.init.eye_``): a ``Linear`` layer that
    passes on as many of its inputs as it has outputs (``W[i, i] = 1``, 0 elsewhere)."""
    if isinstance(tensor, torch.Tensor) and tensor.dim() != 2:
        raise ValueError(f"eye_ needs a 2-D tensor, got shape {list(tensor.shape)}")
    if fillable(tensor, "eye_"):
        with torch.no_grad():
            tensor.zero_()
            tensor.fill_diagonal_(1.0)
    return tensor


def dirac_(tensor: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """The Dirac delta for a convolution weight ``(out, in, *kernel)`` with 1 to 3 spatial
    dimensions (``torch.nn.init.dirac_``): output channel ``d`` of each group copies input
    channel ``d`` at the kernel's centre (``k // 2``), for as many channels as both sides have,
    so the convolution is the identity on them."""
    what = "dirac_"
    if isinstance(tensor, torch.Tensor) and tensor.dim() not in (3, 4, 5):
        raise ValueError(f"{what} needs a 3-, 4- or 5-D convolution weight, got shape {list(tensor.shape)}")
    groups = integer(groups, "groups", what, minimum=1)
    if isinstance(tensor, torch.Tensor) and tensor.shape[0] % groups:
        raise ValueError(f"{what}: {tensor.shape[0]} output channels cannot be split into {groups} groups")
    if not fillable(tensor, what):
        return tensor
    per_group = tensor.shape[0] // groups
    d = torch.arange(min(per_group, tensor.shape[1]), device=tensor.device)
    rows = (torch.arange(groups, device=tensor.device)[:, None] * per_group + d).reshape(-1)
    centre = tuple(k // 2 for k in tensor.shape[2:])
    with torch.no_grad():
        tensor.zero_()
        tensor[(rows, d.repeat(groups), *centre)] = 1.0
    return tensor


def sparse_(tensor: torch.Tensor, sparsity: float, std: float = 0.01,
            generator: torch.Generator | None = None, *, seed: int | None = None) -> torch.Tensor:
    """Martens (2010), ``torch.nn.init.sparse_``: a 2-D tensor of ``N(0, std^2)`` values in
    which each column has ``ceil(sparsity * rows)`` zeros at random rows.

    The normal values are torch's for the same generator state; the rows to zero are drawn from
    the same generator too (torch takes them from the global generator, so its result is not
    reproducible from ``generator`` alone)."""
    what = "sparse_"
    if isinstance(tensor, torch.Tensor) and tensor.dim() != 2:
        raise ValueError(f"{what} needs a 2-D tensor, got shape {list(tensor.shape)}")
    sparsity = number(sparsity, "sparsity", what, nonnegative=True)
    if sparsity > 1:
        raise ValueError(f"{what}: sparsity is the fraction of each column set to 0, from 0 to 1; got {sparsity!r}")
    std = number(std, "std", what, positive=True)
    if not fillable(tensor, what):
        return tensor
    _fits(8 * std, tensor, "8 std", what)
    g = generator_for(tensor, generator, seed, what)
    rows, cols = tensor.shape
    zeros = math.ceil(sparsity * rows)
    with torch.no_grad():
        tensor.normal_(0.0, std, generator=g)
        if zeros:
            order = torch.rand(rows, cols, generator=g, device=tensor.device).argsort(dim=0)
            tensor.scatter_(0, order[:zeros], 0.0)
    return tensor
