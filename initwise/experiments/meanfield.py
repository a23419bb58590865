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

import numpy as np
import torch

from ..moments import ActMoments, act_moments

__all__ = [
    "c_star",
    "chi_1",
    "chi_c",
    "critical_point",
    "critical_sigma_w2",
    "jacobian_factors",
    "jacobian_log_singular_values",
    "log_singular_values_of_product",
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


def _m2(phi: Phi, q: float) -> ActMoments:
    """act_moments at z ~ N(0, q) without the two-token moment (``rho=1`` skips its 2-D rule)."""
    return act_moments(phi, 0.0, q, rho=1.0)


def q_star(sigma_w2: float, sigma_b2: float, phi: Phi = torch.tanh, *, tol: float = 1e-14,
           max_doublings: int = 60) -> float:
    """The stable fixed point of the length map ``f(q) = sigma_w^2 E[phi(sqrt(q) z)^2] +
    sigma_b^2``: the root of ``f(q) - q`` above which ``f(q) < q``, by bisection between 0 (or
    a tiny ``q`` when ``sigma_b2 = 0``) and an upper bound doubled until ``f(q) < q``. With
    ``sigma_b2 = 0`` and ``f(q) <= q`` near 0 (tanh with ``sigma_w2 <= 1``) it is 0.
    ``ValueError`` when no upper bound is found (the length grows without bound)."""
    _check(sigma_w2, sigma_b2)

    def gap(q: float) -> float:
        return sigma_w2 * _m2(phi, q).m2 + sigma_b2 - q

    lo = 0.0 if sigma_b2 > 0 else 1e-12
    if sigma_b2 == 0 and gap(lo) <= 0:
        return 0.0
    hi = max(1.0, 2 * (sigma_w2 + sigma_b2))
    for _ in range(max_doublings):
        if gap(hi) < 0:
            break
        lo, hi = hi, 2 * hi
    else:
        raise ValueError(f"the length map has no stable fixed point below {hi:g} (sigma_w2="
                         f"{sigma_w2}, sigma_b2={sigma_b2}): the signal grows without bound")
    while hi - lo > tol * max(1.0, hi):
        mid = (lo + hi) / 2
        if gap(mid) >= 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def chi_1(sigma_w2: float, sigma_b2: float, phi: Phi = torch.tanh) -> float:
    """``sigma_w^2 E[phi'(sqrt(q*) z)^2]`` (Schoenholz et al. 2017, eq. 5)."""
    q = q_star(sigma_w2, sigma_b2, phi)
    return sigma_w2 * _m2(phi, q).slope2


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
        return sigma_w2 * _m2(phi, q).slope2
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
    m = _m2(phi, q)
    sw2 = 1.0 / m.slope2
    sb2 = q - sw2 * m.m2
    if sb2 < 0:
        raise ValueError(f"no critical point with q* = {q}: it needs sigma_b2 = {sb2:.3g} < 0")
    return sw2, sb2


def _rounds(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Round-robin schedule of all column pairs: ``n - 1`` rounds (``n`` even) of disjoint pairs."""
    idx = list(range(n)) + ([-1] if n % 2 else [])
    m, out = len(idx), []
    for _ in range(m - 1):
        pairs = [(min(a, b), max(a, b)) for a, b in ((idx[i], idx[m - 1 - i]) for i in range(m // 2))
                 if a >= 0 and b >= 0]
        out.append((np.array([a for a, _ in pairs], dtype=np.int64),
                    np.array([b for _, b in pairs], dtype=np.int64)))
        idx = [idx[0], idx[-1]] + idx[1:-1]
    return out


def _jacobi_log(v: np.ndarray, ell: np.ndarray, rounds, tol: float, max_sweeps: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Jacobi (Hestenes 1958) on the matrix whose column ``j`` is ``exp(ell_j) v_j``
    (``v_j`` unit vectors): rotate pairs of columns until every pair is orthogonal (cosine <
    ``tol``); the column norms ``exp(ell)`` are then the singular values. Kept in log scale, so
    columns 10^-300 apart neither underflow nor lose digits: for a column-scaled matrix the
    relative accuracy depends on the unscaled part's conditioning only (Demmel & Veselic 1992).
    """
    for _ in range(max_sweeps):
        worst = 0.0
        for p, q in rounds:
            vp, vq = v[:, p], v[:, q]
            g = np.einsum("ij,ij->j", vp, vq)
            worst = max(worst, float(np.abs(g).max()))
            d = ell[p] - ell[q]
            r = np.exp(-np.abs(d))
            # tan of the rotation angle t = sign(z) / (|z| + sqrt(1 + z^2)), z = -sinh(d) / g,
            # written with r = e^-|d| so that nothing overflows: t / r and t r are what we need
            sgn = np.where(d == 0, 1.0, -np.sign(d) * np.sign(g))
            one = 1 - r * r
            den = one + np.sqrt(4 * r * r * g * g + one * one)
            t_over_r = np.divide(sgn * 2 * np.abs(g), den, out=np.zeros_like(g), where=g != 0)
            t = t_over_r * r
            c = 1 / np.sqrt(1 + t * t)
            t_down = np.where(d >= 0, t * r, t_over_r)      # t e^(ell_q - ell_p)
            t_up = np.where(d >= 0, t_over_r, t * r)        # t e^(ell_p - ell_q)
            up = c * vp - (c * t_down) * vq
            uq = (c * t_up) * vp + c * vq
            n_p = np.sqrt(np.einsum("ij,ij->j", up, up))
            n_q = np.sqrt(np.einsum("ij,ij->j", uq, uq))
            v[:, p], v[:, q] = up / n_p, uq / n_q
            ell[p] += np.log(n_p)
            ell[q] += np.log(n_q)
        if worst < tol:
            break
    order = np.argsort(-ell, kind="stable")
    return ell[order], v[:, order]


def log_singular_values_of_product(matrices: list[torch.Tensor], tol: float = 1e-13,
                                   max_sweeps: int = 60) -> torch.Tensor:
    """Natural logs of the singular values (descending) of ``M_L ... M_2 M_1`` (square float64
    matrices), accurate to high relative precision however ill-conditioned the product is.

    The product is never formed: after ``k`` factors it is held as ``V diag(exp(ell)) W^T``
    (``W`` orthogonal, never needed); the next factor gives ``(M_{k+1} V) diag(exp(ell))``, whose
    column-scaled SVD one-sided Jacobi computes in log scale (see ``_jacobi_log``). A plain SVD
    of the explicit product resolves only ~16 decades below the largest singular value: a
    200-layer Gaussian network's spectrum spans hundreds.
    """
    if not matrices:
        raise ValueError("log_singular_values_of_product needs at least one matrix")
    n = matrices[0].shape[1]
    for i, m in enumerate(matrices):
        if m.dim() != 2 or m.shape != (n, n):
            raise ValueError(f"matrix {i} has shape {list(m.shape)}; expected square ({n}, {n})")
    rounds = _rounds(n)
    v, ell = np.eye(n), np.zeros(n)
    for m in matrices:
        b = m.detach().to(torch.float64).numpy() @ v
        norms = np.linalg.norm(b, axis=0)
        if not np.all(norms > 0) or not np.all(np.isfinite(norms)):
            raise ValueError("the product is singular or not finite: a factor maps a direction to 0")
        ell, v = _jacobi_log(b / norms, ell + np.log(norms), rounds, tol, max_sweeps)
    return torch.from_numpy(ell.copy())


def jacobian_factors(weights: list[torch.Tensor], biases: list[torch.Tensor] | None,
                     x0: torch.Tensor, phi: Phi = torch.tanh, dphi: Phi | None = None
                     ) -> list[torch.Tensor]:
    """The factors ``D_l W_l`` (float64) of the input-output Jacobian ``dx_L / dx_0 = prod_l
    D_l W_l`` of ``x_l = phi(W_l x_{l-1} + b_l)`` at the input ``x0``, ``D_l =
    diag(phi'(h_l))`` (Pennington et al. 2017). ``dphi``: phi' (default: ``1 - tanh^2`` for
    tanh, else a central difference, relative error ~1e-10)."""
    if not weights:
        raise ValueError("jacobian_factors needs at least one weight matrix")
    x = x0.detach().to(torch.float64).reshape(-1)
    if dphi is None:
        dphi = (lambda z: 1 - torch.tanh(z) ** 2) if phi is torch.tanh else _slope(phi)
    out = []
    for i, w in enumerate(weights):
        w = w.detach().to(torch.float64)
        if w.dim() != 2 or w.shape[1] != x.numel():
            raise ValueError(f"weight {i} has shape {list(w.shape)}; expected (n, {x.numel()})")
        h = w @ x
        if biases is not None:
            h = h + biases[i].detach().to(torch.float64)
        out.append(dphi(h)[:, None] * w)
        x = phi(h)
    return out


def jacobian_log_singular_values(weights: list[torch.Tensor], biases: list[torch.Tensor] | None,
                                 x0: torch.Tensor, phi: Phi = torch.tanh, dphi: Phi | None = None
                                 ) -> torch.Tensor:
    """Logs of the singular values (descending) of the input-output Jacobian at ``x0``:
    :func:`log_singular_values_of_product` of :func:`jacobian_factors` (square layers)."""
    return log_singular_values_of_product(jacobian_factors(weights, biases, x0, phi, dphi))
