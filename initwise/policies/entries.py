"""What the standard policy (:mod:`.standard`) writes into a plan entry once it has chosen: a
scaled random draw (a Gaussian, or a scaled semi-orthogonal matrix for a small hidden layer), an
embedding's ``N(0, 1/k)``, a constant, and the rescaling (or zeroing) of a residual branch's end.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..nodes import Node
from ..plan import PlanEntry
from .common import dist_scheme
from .targets import TARGET_ATTENTION_STD, TARGET_LOGITS

if TYPE_CHECKING:  # standard.py imports this module; its state is only needed for hints
    from .standard import _State


def _const(e: PlanEntry, value: float, why: str) -> None:
    e.scheme, e.distribution, e.fan_in, e.fan_out, e.gain, e.std = (
        "zeros" if value == 0 else "constant", "-", None, None, None, 0.0)
    e.params = {} if value == 0 else {"value": value}
    e.reason = why


def _embedding(e: PlanEntry, share: tuple[int, int] | None, st: _State, std: float | None = None,
               tied_head: bool = False) -> None:
    k = share[0] if share else 1
    bias = std is not None and not tied_head
    std = math.sqrt(1.0 / k) if std is None else std
    e.scheme, e.distribution, e.fan_in, e.gain, e.std = "normal", "normal", 1, 1.0, std
    e.params = {**{k2: v for k2, v in e.params.items() if k2 == "padding_idx"}, "std": std}
    tied = e.reason.split(": ", 1)[0] + ": " if e.reason.startswith("shared by") else ""
    if tied_head:
        e.reason = tied + (f"N(0, {std:.3g}^2): the tied output layer has no norm scale before it, so this weight "
                           f"sets the initial logits (E[y^2] = {TARGET_LOGITS}); the layers after the embedding "
                           "adapt to its smaller scale")
        return
    if bias:
        e.reason = tied + (f"embedding added to attention logits (a learned position bias): N(0, {std:g}^2), half "
                           f"the logits' std target {TARGET_ATTENTION_STD}")
        return
    e.reason = tied + ("embedding: each output reads one row (fan_in 1): N(0, 1)" if k == 1 else
                f"embedding, one of {k} summed embeddings (token/position/type): N(0, 1/{k}), so each keeps an "
                f"equal share of the sum's unit variance") + (
        "; padding row 0" if e.params.get("padding_idx") is not None else "")


#: Hidden weights up to this size on each side (square ones of any rank, 2-D ones of any shape)
#: are drawn (semi-)orthogonal (a QR of 512 x 512 takes ~20 ms).
ORTHOGONAL_MAX = 512


def _random(e: PlanEntry, family: str, std: float, fan_in: float, fan_out: float | None, why: str,
            st: _State, hidden: bool = False) -> None:
    fan_out = fan_out or fan_in
    if family == "xavier":
        gain = std / math.sqrt(2.0 / (fan_in + fan_out))
    else:
        gain = std * math.sqrt(fan_in)
    params = {k: v for k, v in e.params.items() if k in ("padding_idx", "blocks")}
    if family == "kaiming":
        params["mode"] = "fan_in"
    if e.reason.startswith("shared by"):
        why = e.reason.split(": ", 1)[0] + ": " + why
    e.scheme, e.distribution = dist_scheme(family, st.distribution), st.distribution
    e.fan_in, e.fan_out, e.gain, e.std, e.params = _num(fan_in), _num(fan_out), float(gain), std, params
    e.reason = why
    rows, cols = (e.shape[0], math.prod(e.shape[1:])) if len(e.shape) >= 2 else (0, 0)
    if hidden and st.distribution == "normal" and (rows == cols or len(e.shape) == 2) \
            and 2 <= min(rows, cols) and max(rows, cols) <= ORTHOGONAL_MAX \
            and "padding_idx" not in params and params.get("blocks", 1) == 1:
        e.scheme, e.distribution = f"{family}_orthogonal", "orthogonal"
        what = ("a square hidden layer then keeps every input's norm exactly" if rows == cols else
                f"a {'tall' if rows > cols else 'wide'} hidden layer then keeps the norm of every input"
                + ("" if rows > cols else " in its row space") + " exactly")
        e.reason = (why + f"; drawn as a scaled (semi-)orthogonal matrix of that std (all singular values "
                    f"{std * math.sqrt(max(rows, cols)):.3g}): {what} at finite width (Saxe et al. 2014), where a "
                    "Gaussian one fluctuates")


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _rescale(e: PlanEntry, factor: float, end: Node, st: _State, target: float, v: float, n: int,
             zero: bool = False) -> None:
    off = end.info.get("scale_offset", 0.0) if end.kind == "layer" else 0.0  # a (1 + weight) norm
    if zero:
        e.scheme, e.distribution, e.std, e.gain, e.params = "zeros", "-", 0.0, None, {}
        if off:
            e.scheme, e.params = "constant", {"value": -off}
        e.reason = ("ends a residual branch: starts at 0, so the block starts as the identity (SkipInit, De & Smith "
                    "2020; zero_init_residual, Goyal et al. 2017)" + (f"; weight {-off:g} is a gain of 0 in its "
                    f"{off:g} + weight form" if off else "") + f"; was: {e.reason}")
        return
    k = math.sqrt(factor)
    why = (f"; scaled x{k:.3g} as the end of branch 1 of {n} on a residual stream (stream input E[x^2] = {v:.3g}): "
           f"each branch adds 1/{n} of it, so the stream grows at most 2x in variance (GPT-2/Megatron's 1/sqrt(2L) "
           "rule, Radford et al. 2019, from the propagated values)")
    if e.scheme == "constant" or (off and e.scheme == "zeros"):
        value = _gain_value(e, k, off)
        e.scheme, e.params = ("constant", {"value": float(f"{value:.6g}")}) if value else ("zeros", {})
        if off:
            why += f" (weight {value:.6g}: a gain of {(off + value):.3g} in its {off:g} + weight form)"
    elif e.std is not None and e.std > 0:
        _scale_std(e, k)
    e.reason += why


def _gain_value(e: PlanEntry, k: float, off: float = 0.0) -> float:
    """The value of constant (or zero) scale ``e`` that multiplies its gain ``off + value`` by
    ``k`` (``off``: 1 for a norm of the ``1 + weight`` form, else 0)."""
    return (off + float(e.params.get("value", 0.0 if e.scheme == "zeros" else 1.0))) * k - off


def _scale_std(e: PlanEntry, k: float) -> None:
    """Multiply the std (and the gain) of random entry ``e`` by ``k``."""
    e.std *= k
    if e.gain is not None:
        e.gain = e.gain * k
    if "std" in e.params:
        e.params["std"] = e.std
