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

:func:`rnn_m2` runs these moments through the gates of a recurrent layer (RNN, LSTM, GRU), step by
step: the mean-field ``E[h^2]`` of its outputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # propagate.py imports this module; its Context is only needed for hints
    from .propagate import Context

__all__ = ["ActMoments", "act_moments", "rnn_m2"]

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


def rnn_m2(module: nn.RNNBase, q_x: float, steps: int, prefix: str, ctx: Context) -> float:
    """Mean-field ``E[h^2]`` of a recurrent layer's outputs, averaged over ``steps`` time steps:
    gate pre-activations get ``n_in E[w_ih^2] q_x + n_h E[w_hh^2] q_h`` (independent weights);
    LSTM ``c = f c + i g``, ``h = o tanh(c)``; GRU ``h = (1 - u) n + u h``; tanh/relu RNN
    ``h = phi(z)``; gates independent of each other (Chen et al. 2018's mean-field view)."""
    sig = lambda z: torch.sigmoid(z)  # noqa: E731
    for layer in range(module.num_layers):
        n_in = module.input_size if layer == 0 else module.hidden_size * (2 if module.bidirectional else 1)
        w_ih = ctx.w(f"{prefix}weight_ih_l{layer}")[1]
        w_hh = ctx.w(f"{prefix}weight_hh_l{layer}")[1]
        q_h, q_c, total = 0.0, 0.0, 0.0
        for _ in range(max(1, min(steps, 256))):
            q_z = n_in * w_ih * q_x + module.hidden_size * w_hh * q_h
            gate = act_moments(sig, 0.0, q_z).m2
            if module.mode == "LSTM":
                g2 = act_moments(torch.tanh, 0.0, q_z).m2
                q_c = gate * q_c + gate * g2
                q_h = gate * act_moments(torch.tanh, 0.0, q_c).m2
            elif module.mode == "GRU":
                keep = act_moments(lambda z: 1 - torch.sigmoid(z), 0.0, q_z).m2
                q_h = keep * act_moments(torch.tanh, 0.0, q_z).m2 + gate * q_h
            else:
                fn = torch.relu if module.mode == "RNN_RELU" else torch.tanh
                q_h = act_moments(fn, 0.0, q_z).m2
            total += q_h
        q_x = total / max(1, min(steps, 256))
    return q_x
