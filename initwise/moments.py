"""Gaussian moments of an elementwise function: what an activation does to a signal's
statistics, as mean-field theory describes it (Poole et al. 2016; Schoenholz et al. 2017).

For a pre-activation whose elements are ``z ~ N(m, v)`` and whose values at two different tokens
(samples or positions) have correlation ``rho``, :func:`act_moments` returns

* ``E[phi(z)]`` and ``E[phi(z)^2]``: the mean and second moment of the activation's output;
* ``E[phi(z_a) phi(z_b)]``: the moment shared by two tokens (the correlation map);
* ``E[phi'(z)^2]``: the mean squared slope, which scales the gradient on its way back
  (``chi_1 = sigma_w^2 fan_in E[phi'(z)^2]`` per layer; 1 at the edge of chaos).

The expectations use composite Gauss-Legendre quadrature on [-10, 10] (in units of the
standard deviation), split at 0, +-1, +-2.5 and +-5, 16 nodes per piece (1-D: 128 nodes; the
shared moment: a 128 x 128 product rule); slopes are central differences (step 1e-5 of the
scale). ``phi`` may be any function that maps a float64 tensor elementwise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch

__all__ = ["ActMoments", "act_moments"]

_BREAKS = (-10.0, -5.0, -2.5, -1.0, 0.0, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class ActMoments:
    """``mean = E[phi(z)]``, ``m2 = E[phi(z)^2]``, ``cross = E[phi(z_a) phi(z_b)]``,
    ``slope2 = E[phi'(z)^2]`` (see the module docstring)."""

    mean: float
    m2: float
    cross: float
    slope2: float


@lru_cache(maxsize=1)
def _rule() -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(16)
    nodes, weights = [], []
    for lo, hi in zip(_BREAKS[:-1], _BREAKS[1:]):
        u = (hi - lo) / 2 * x + (hi + lo) / 2
        nodes.append(u)
        weights.append((hi - lo) / 2 * w * np.exp(-u * u / 2) / math.sqrt(2 * math.pi))
    u, w = np.concatenate(nodes), np.concatenate(weights)
    return torch.from_numpy(u), torch.from_numpy(w / w.sum())


def _apply(phi: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = phi(z)
    out = torch.as_tensor(out, dtype=torch.float64)
    if out.shape != z.shape:
        raise TypeError(f"activation returned shape {tuple(out.shape)} for an input of shape {tuple(z.shape)}: "
                        "not elementwise")
    return out


def act_moments(phi: Callable[[torch.Tensor], torch.Tensor], mean: float = 0.0, var: float = 1.0,
                rho: float = 0.0) -> ActMoments:
    """Moments of ``phi(z)`` for ``z ~ N(mean, var)`` and two tokens correlated by ``rho``.

    ``var = 0`` gives the moments of the constant ``phi(mean)``. ``ValueError`` for a negative or
    non-finite ``var`` or a ``rho`` outside [-1, 1].
    """
    if not (math.isfinite(mean) and math.isfinite(var)) or var < 0:
        raise ValueError(f"need a finite mean and a variance >= 0, got mean={mean}, var={var}")
    if not -1.0 - 1e-9 <= rho <= 1.0 + 1e-9:
        raise ValueError(f"rho must lie in [-1, 1], got {rho}")
    rho = min(1.0, max(-1.0, rho))
    s = math.sqrt(var)
    u, w = _rule()
    z = mean + s * u
    y = _apply(phi, z)
    y = torch.where(torch.isfinite(y), y, torch.zeros_like(y))
    m1, m2 = float((w * y).sum()), float((w * y * y).sum())
    h = 1e-5 * max(s, abs(mean), 1e-3)
    d = (_apply(phi, z + h) - _apply(phi, z - h)) / (2 * h)
    d = torch.where(torch.isfinite(d), d, torch.zeros_like(d))
    slope2 = float((w * d * d).sum())
    if s == 0.0 or rho >= 1.0:
        cross = m2
    else:
        # z_b = mean + s (rho u1 + sqrt(1 - rho^2) u2): E[phi(z_a) E[phi(z_b) | u1]]
        zb = mean + s * (rho * u[:, None] + math.sqrt(max(0.0, 1 - rho * rho)) * u[None, :])
        yb = _apply(phi, zb.reshape(-1)).reshape(zb.shape)
        yb = torch.where(torch.isfinite(yb), yb, torch.zeros_like(yb))
        cond = (yb * w[None, :]).sum(1)
        cross = float((w * y * cond).sum())
    return ActMoments(m1, m2, cross, slope2)
