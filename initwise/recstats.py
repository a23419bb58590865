"""Statistics of the tensors a recorded forward pass sees, as the propagation rules need them.

Constants and inputs: mean, second moment, and for ids the chance two are equal; fixed tables:
the moment two tokens share; attention masks: how many keys each query may read and how much
two queries' averages overlap. Nothing is computed on meta tensors.
"""
from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["ratio", "stats", "const_stats", "token_corr", "sample_corr", "support", "allowed", "rows", "overlap"]


def stats(t: torch.Tensor) -> dict[str, float]:
    """Mean, second moment and size of a tensor's values; for integer ids, the chance that two
    elements are equal (``collision``); for a float mask, ``mask`` (it holds large negative
    entries). Only ``numel`` on the meta device."""
    if t.is_meta or t.numel() == 0:
        return {"numel": t.numel()}
    if not t.is_floating_point() and t.dtype != torch.bool and not t.is_complex():
        flat = t.detach().reshape(-1).long()
        if 1 < flat.numel() <= 1 << 22:
            counts = torch.unique(flat, return_counts=True)[1].double()
            n = flat.numel()
            return {"numel": n, "collision": float((counts * (counts - 1)).sum() / (n * (n - 1)))}
        return {"numel": t.numel()}
    x = t.detach().double() if t.is_floating_point() or t.dtype == torch.bool else None
    if x is None:
        return {"numel": t.numel()}
    finite = torch.isfinite(x)
    out = {"numel": t.numel(), "finite": float(finite.double().mean())}
    x = torch.where(finite, x, torch.zeros_like(x))
    if t.is_floating_point() and float(t.detach().min()) < -1e4:
        out["mask"] = True
        x = torch.where(x < -1e4, torch.zeros_like(x), x)
    out["mean"], out["m2"] = float(x.mean()), float(x.square().mean())
    return out


def const_stats(t: torch.Tensor) -> dict[str, float]:
    """What the plan reads of a constant: its size, whether it is an attention mask, the
    collision chance of integer ids; never its float values (a meta model has none, and the
    plan of a meta model must equal that of the built one). The keys of :func:`stats` it
    keeps, computed without the float moments it leaves out."""
    if t.is_meta or t.numel() == 0 or not (t.is_floating_point() or t.dtype == torch.bool or t.is_complex()):
        return stats(t)  # the size alone, or integer ids: size and collision chance
    out: dict[str, float] = {"numel": t.numel()}
    if t.is_floating_point() and float(t.detach().min()) < -1e4:
        out["mask"] = True
    return out


def token_corr(t: torch.Tensor) -> dict[str, float]:
    """``token_corr``: the moment two different tokens (vectors along the last dimension)
    share, over ``E[x^2]``, of a tensor's current values (nothing on meta)."""
    if t.is_meta or not t.is_floating_point() or t.dim() < 2:
        return {}
    s = t.detach().double().reshape(-1, t.shape[-1])[:4096]
    n, d = s.shape
    m2 = float(s.square().mean())
    if n < 2 or m2 <= 0:
        return {}
    cross = float(s.sum(0).square().sum() - s.square().sum()) / (n * (n - 1) * d)
    return {"token_corr": min(1.0, max(0.0, cross / m2))}


def sample_corr(t: torch.Tensor) -> dict[str, float]:
    """``corr``: the moment two different samples (rows of dim 0) share per element, over
    ``E[x^2]`` (the mean and what is common to every sample count in it)."""
    if t.is_meta or not t.is_floating_point() or t.dim() < 2 or t.shape[0] < 2:
        return {}
    s = t.detach().double().reshape(t.shape[0], -1)
    b, d = s.shape
    m2 = float(s.square().mean())
    cross = float((s.sum(0).square() - s.square().sum(0)).sum()) / (b * (b - 1) * d)
    return {"corr": min(1.0, max(0.0, cross / m2))} if m2 > 0 else {}


def rows(t: torch.Tensor) -> int:
    """How many distinct vectors a parameter holds along its last dimension (1 for a bias)."""
    return max(1, t.numel() // t.shape[-1]) if t.dim() else 1


def overlap(allowed: torch.Tensor) -> tuple[float, float]:
    """``(inv_keys, pair)`` of a boolean (..., queries, keys) mask of allowed keys: the mean over
    queries of 1 / their number of keys (what a uniform average keeps of independent values'
    variance) and the mean over pairs of different queries of the weight their averages share
    (``|K_s & K_t| / (|K_s| |K_t|)``: 1/L for full attention, ~2/L for causal)."""
    a = allowed.double()
    counts = a.sum(-1, keepdim=True).clamp(min=1)
    inv = float((1.0 / counts).mean())
    lq = a.shape[-2]
    if lq < 2:
        return inv, inv
    n = a / counts
    s = n.sum(-2)
    pair = ((s * s).sum(-1) - (1.0 / counts).squeeze(-1).sum(-1)) / (lq * (lq - 1))
    return inv, float(pair.mean())


def support(p: torch.Tensor) -> dict[str, float]:
    """:func:`_overlap` of the non-zero entries of a probability tensor (nothing on meta)."""
    if p.is_meta or p.dim() < 2:
        return {}
    inv, pair = overlap(p.detach().reshape(-1, *p.shape[-2:])[:64] != 0)
    return {"inv_keys": inv, "pair_keys": pair}


def allowed(mask: Any, args: tuple, kwargs: dict) -> dict[str, float]:
    """:func:`_overlap` of the keys each query may attend to in ``scaled_dot_product_attention``."""
    q, k = args[0], args[1]
    lq, lk = q.shape[-2], k.shape[-2]
    if kwargs.get("is_causal", args[5] if len(args) > 5 else False):
        ok = torch.ones(lq, lk, dtype=torch.bool).tril(lk - lq)
    elif isinstance(mask, torch.Tensor) and not mask.is_meta:
        ok = mask.detach() if mask.dtype == torch.bool else mask.detach() > -1e4
        ok = ok.expand(*ok.shape[:-2], lq, lk).reshape(-1, lq, lk)[:64]
    else:
        return {"inv_keys": 1.0 / lk, "pair_keys": 1.0 / lk}
    inv, pair = overlap(ok)
    return {"inv_keys": inv, "pair_keys": pair}


def ratio(first: torch.Tensor | None, out: torch.Tensor) -> float | None:
    """``E[out^2] / E[in^2]`` of a parameter-free operation (max pooling, top-k, routing) on
    the recorded values: a scale-free figure (``None`` on meta)."""
    if first is None or first.is_meta or out.is_meta or not first.is_floating_point() \
            or not out.is_floating_point() or first.numel() == 0 or out.numel() == 0:
        return None
    a, b = float(first.detach().double().square().mean()), float(out.detach().double().square().mean())
    return b / a if a > 0 and math.isfinite(a) and math.isfinite(b) else None
