"""Mean-field signal propagation through deep random networks, by initwise's quadrature
(:func:`initwise.moments.act_moments`), and the input-output Jacobian of a deep net.

A fully connected layer ``h_l = W_l phi(h_{l-1}) + b_l`` with ``W_ij ~ (0, sigma_w^2 / N)`` and
``b_i ~ N(0, sigma_b^2)`` maps, for a wide net (Poole et al. 2016; Schoenholz et al. 2017):

- the length ``q_l = E[h^2]``:  ``q_{l+1} = sigma_w^2 E[phi(sqrt(q_l) z)^2] + sigma_b^2``, with a
  fixed point ``q*``;
- the correlation ``c_l`` of two inputs at ``q*``: ``c_{l+1} = (sigma_w^2 E[phi(u_a) phi(u_b)] +
  sigma_b^2) / q*`` (``u_a, u_b ~ N(0, q*)`` with correlation ``c_l``), fixed point ``c*``;
- ``chi_1 = sigma_w^2 E[phi'(sqrt(q*) z)^2]``: the slope of the correlation map at ``c = 1`` and
  the factor by which a gradient's squared norm changes per layer; ``chi_1 < 1`` ordered phase
  (``c* = 1``), ``chi_1 > 1`` chaotic (``c* < 1``), ``chi_1 = 1`` the edge of chaos;
- ``chi_c = sigma_w^2 E[phi'(u_a) phi'(u_b)]`` at ``c*`` (``= chi_1`` in the ordered phase) and
  the depth scale of correlations ``xi_c = -1 / ln(chi_c)``: deviations from ``c*`` decay like
  ``exp(-l / xi_c)``. Schoenholz et al. 2017 find random networks trainable iff ``L < ~6 xi_c``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..moments import act_moments

__all__ = [
    "c_star",
    "chi_1",
    "chi_c",
    "critical_point",
    "critical_sigma_w2",
    "jacobian_singular_values",
    "q_star",
    "xi_c",
]

Phi = Callable[[torch.Tensor], torch.Tensor]


def _check(sigma_w2: float, sigma_b2: float) -> None:
    if not (math.isfinite(sigma_w2) and sigma_w2 > 0):
        raise ValueError(f"sigma_w2 must be a positive number, got {sigma_w2!r}")
    if not (math.isfinite(sigma_b2) and sigma_b2 >= 0):
        raise ValueError(f"sigma_b2 must be a number >= 0, got {sigma_b2!r}")


def _slope(phi: Phi) -> Phi:
    """phi' by a central difference (step 1e-5), for any elementwise phi."""
    return lambda z: (phi(z + 1e-5) - phi(z - 1e-5)) / 2e-5


def q_star(sigma_w2: float, sigma_b2: float, phi: Phi = torch.tanh, *, q0: float = 1.0,
           tol: float = 1e-12, max_iter: int = 100_000) -> float:
    """Fixed point of the length map ``q -> sigma_w^2 E[phi(sqrt(q) z)^2] + sigma_b^2``, by
    iterating it from ``q0`` (tanh: the stable fixed point; ``0`` when ``sigma_b2 = 0`` and
    ``sigma_w2 <= 1``, reached only slowly). ``ValueError`` if it has not converged."""
    _check(sigma_w2, sigma_b2)
    q = q0
    for _ in range(max_iter):
        nxt = sigma_w2 * act_moments(phi, 0.0, q).m2 + sigma_b2
        if abs(nxt - q) <= tol * max(1.0, q):
            return nxt
        q = nxt
        if q < 1e-10:
            return 0.0
    raise ValueError(f"q map did not converge in {max_iter} iterations (sigma_w2={sigma_w2}, "
                     f"sigma_b2={sigma_b2}); the length diverges or phi has no stable fixed point")


def chi_1(sigma_w2: float, sigma_b2: float, phi: Phi = torch.tanh) -> float:
    """``sigma_w^2 E[phi'(sqrt(q*) z)^2]`` (Schoenholz et al. 2017, eq. 5)."""
    q = q_star(sigma_w2, sigma_b2, phi)
    return sigma_w2 * act_moments(phi, 0.0, q).slope2


def _c_map(c: float, q: float, sigma_w2: float, sigma_b2: float, phi: Phi) -> float:
    return (sigma_w2 * act_moments(phi, 0.0, q, rho=c).cross + sigma_b2) / q


def c_star(sigma_w2: float, sigma_b2: float, phi: Phi = torch.tanh) -> float:
    """The stable fixed point of the correlation map: 1 in the ordered phase (``chi_1 <= 1``),
    else the root in [0, 1) found by bisection (the map minus ``c`` is positive at ``c = 0``
    when ``sigma_b2 > 0`` and ``E[phi] = 0``, and negative just below 1 when ``chi_1 > 1``)."""
    if chi_1(sigma_w2, sigma_b2, phi) <= 1.0:
        return 1.0
    q = q_star(sigma_w2, sigma_b2, phi)
    lo, hi = 0.0, 1.0 - 1e-6
    if _c_map(lo, q, sigma_w2, sigma_b2, phi) - lo <= 0:
        return 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _c_map(mid, q, sigma_w2, sigma_b2, phi) - mid > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def chi_c(sigma_w2: float, sigma_b2: float, phi: Phi = torch.tanh) -> float:
    """``sigma_w^2 E[phi'(u_a) phi'(u_b)]`` at ``(q*, c*)``: the slope of the correlation map at
    its stable fixed point (equal to :func:`chi_1` in the ordered phase)."""
    c = c_star(sigma_w2, sigma_b2, phi)
    q = q_star(sigma_w2, sigma_b2, phi)
    if c >= 1.0:
        return sigma_w2 * act_moments(phi, 0.0, q).slope2
    return sigma_w2 * act_moments(_slope(phi), 0.0, q, rho=c).cross


def xi_c(sigma_w2: float, sigma_b2: float, phi: Phi = torch.tanh) -> float:
    """``-1 / ln(chi_c)`` (Schoenholz et al. 2017, eq. 9): the depth over which correlations
    between inputs reach their fixed point; ``inf`` at the edge of chaos."""
    chi = chi_c(sigma_w2, sigma_b2, phi)
    if chi >= 1.0 or abs(math.log(chi)) < 1e-12:
        return math.inf
    return -1.0 / math.log(chi)


def critical_sigma_w2(sigma_b2: float, phi: Phi = torch.tanh, lo: float = 0.5, hi: float = 4.0,
                      tol: float = 1e-8) -> float:
    """The ``sigma_w^2`` with ``chi_1 = 1`` at bias variance ``sigma_b2`` (bisection on
    [lo, hi]; ``chi_1`` grows with ``sigma_w^2`` for tanh)."""
    f_lo, f_hi = chi_1(lo, sigma_b2, phi) - 1, chi_1(hi, sigma_b2, phi) - 1
    if f_lo * f_hi > 0:
        raise ValueError(f"chi_1 - 1 has the same sign at sigma_w2 = {lo} and {hi}; widen the bracket")
    while hi - lo > tol:
        mid = (lo + hi) / 2
        if (chi_1(mid, sigma_b2, phi) - 1) * f_lo > 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def critical_point(q: float, phi: Phi = torch.tanh) -> tuple[float, float]:
    """The ``(sigma_w^2, sigma_b^2)`` on the critical line whose fixed point is ``q* = q``
    (Pennington et al. 2017): ``sigma_w^2 = 1 / E[phi'(sqrt(q) z)^2]`` (``chi_1 = 1``) and
    ``sigma_b^2 = q - sigma_w^2 E[phi(sqrt(q) z)^2]``."""
    if not (math.isfinite(q) and q > 0):
        raise ValueError(f"q must be a positive number, got {q!r}")
    m = act_moments(phi, 0.0, q)
    sw2 = 1.0 / m.slope2
    sb2 = q - sw2 * m.m2
    if sb2 < 0:
        raise ValueError(f"no critical point with q* = {q}: it needs sigma_b2 = {sb2:.3g} < 0")
    return sw2, sb2


def jacobian_singular_values(weights: list[torch.Tensor], biases: list[torch.Tensor] | None,
                             x0: torch.Tensor, phi: Phi = torch.tanh) -> torch.Tensor:
    """Singular values (descending, float64) of the input-output Jacobian ``dx_L / dx_0`` of
    ``x_l = phi(W_l x_{l-1} + b_l)`` at the input vector ``x0``: ``J = prod_l D_l W_l`` with
    ``D_l = diag(phi'(h_l))`` (Pennington et al. 2017), accumulated in float64."""
    if not weights:
        raise ValueError("jacobian_singular_values needs at least one weight matrix")
    x = x0.detach().to(torch.float64).reshape(-1)
    jac = torch.eye(x.numel(), dtype=torch.float64)
    dphi = _slope(phi)
    for i, w in enumerate(weights):
        w = w.detach().to(torch.float64)
        if w.dim() != 2 or w.shape[1] != x.numel():
            raise ValueError(f"weight {i} has shape {list(w.shape)}; expected (n, {x.numel()})")
        h = w @ x
        if biases is not None:
            h = h + biases[i].detach().to(torch.float64)
        jac = dphi(h)[:, None] * (w @ jac)
        x = phi(h)
    return torch.linalg.svdvals(jac)
