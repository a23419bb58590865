"""Entry makers shared by the policies: the scheme families with their std formulas."""
from __future__ import annotations

import math

from ..plan import PlanEntry
from ..schemes import variance_scaling_std

__all__ = ["fan_free", "dist_scheme", "xavier", "he", "lecun", "orthogonal_std", "DISTRIBUTIONS", "FAN_FREE",
           "XAVIER_ACTS"]

DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
#: Schemes that need no fans: applied to every tensor a rule selects.
FAN_FREE = frozenset({"zeros", "small_normal", "small_uniform"})
#: Activations whose layer gets Xavier/Glorot (Glorot & Bengio 2010 derive it in their linear regime).
XAVIER_ACTS = frozenset({"none", "identity", "linear", "sigmoid", "hardsigmoid", "tanh", "softmax",
                         "log_softmax", "softmin", "softsign", "hardtanh"})


def fan_free(make, scheme: str, why: str) -> PlanEntry:
    if scheme == "zeros":
        return make("zeros", "-", None, None, None, 0.0, why or "zeros")
    if scheme == "small_normal":
        return make("small_normal", "normal", None, None, None, 0.01, why or "N(0, 0.01^2), no fans", std=0.01)
    return make("small_uniform", "uniform", None, None, None, 0.01 / math.sqrt(3),
                why or "U(-0.01, 0.01), no fans", bound=0.01)


def dist_scheme(family: str, distribution: str) -> str:
    return f"{family}_{distribution}"


def xavier(make, distribution, fan_in, fan_out, why, gain=1.0, **params) -> PlanEntry:
    std = variance_scaling_std(gain * gain, "fan_avg", fan_in, fan_out)
    return make(dist_scheme("xavier", distribution), distribution, fan_in, fan_out, gain, std, why, **params)


def he(make, distribution, fan_in, fan_out, gain, why, **params) -> PlanEntry:
    return make(dist_scheme("kaiming", distribution), distribution, fan_in, fan_out, gain,
                variance_scaling_std(gain * gain, "fan_in", fan_in, fan_out), why, **params)


def lecun(make, distribution, fan_in, fan_out, why) -> PlanEntry:
    return make(dist_scheme("lecun", distribution), distribution, fan_in, fan_out, 1.0,
                variance_scaling_std(1.0, "fan_in", fan_in, fan_out), why)


def orthogonal_std(rows: int, cols: int, gain: float = 1.0) -> float:
    """Std of the entries of a ``rows x cols`` (semi-)orthogonal matrix times ``gain``: its
    ``min(rows, cols)`` singular values all equal ``gain``, so the squared entries sum to
    ``gain^2 min(rows, cols)`` over ``rows * cols`` entries: ``gain / sqrt(max(rows, cols))``."""
    return gain / math.sqrt(max(rows, cols))
