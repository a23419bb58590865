"""What each consumer asks of the layer that feeds it: the targets of the standard policy.

``target(uses, x, ...)`` returns ``(s, family, reason)``: the weight's ``n E[w^2] = s / E[x^2]``
(``n`` its fan-in, ``x`` what reaches it) for the most conservative of its uses (see the table in
:mod:`initwise.policies.standard`).
"""
from __future__ import annotations

import math
from typing import Any

from ..graph import Graph, Node
from ..moments import act_moments
from ..propagate import Moments
from ..structure import consumer, slope_at_zero, sum_group
from .common import XAVIER_ACTS

__all__ = ["target", "output_like", "edge_of_chaos", "saturating", "attention_dims", "TARGET_LOGITS", "TARGET_CENTRED",
           "TARGET_ATTENTION_STD"]

#: Second moment of a model's outputs at initialization (std 0.14: loss ~ ln C + 0.01): the whole
#: second moment, offsets shared by all samples included, since nothing removes them.
TARGET_LOGITS = 0.02
#: Variance between samples of the logits of an output layer whose bias is centred on the data
#: (:mod:`initwise.calibrate`: no offset left, initial loss ~ ln C + E[z^2]/2 = ln C + 0.05).
TARGET_CENTRED = 0.1
#: Std of attention logits at initialization.
TARGET_ATTENTION_STD = 0.5
_HE_LIKE_CAP = 1e3


def _top_sum(g: Graph, add_id: int) -> int:
    cur = add_id
    while True:
        nxt = [c for c in g.consumers(cur) if g.nodes[c].kind == "add" and sum_group(g, c) is not None]
        if not nxt:
            return cur
        cur = nxt[0]


def target(uses: list, x: Moments, g: Graph, node: Node, table_family: str) -> tuple[float, str, str]:
    """``(s, family, reason)``: the weight's ``n E[w^2] = s / q_x`` for the most conservative use
    (``table_family``: the table's family, kept where no activation follows directly)."""
    q = max(x.m2, 1e-12)
    options = [one_target(u, q, g, table_family) for u in uses]
    s, family, why = min(options, key=lambda o: o[0])
    if len(options) > 1:
        names = ", ".join(dict.fromkeys(use_label(u) for u in uses))
        why = f"output has {len(options)} uses ({names}); the most conservative: {why}"
    return s, family, why + f" [input E[x^2] = {q:.3g}]"


def output_like(node: Node) -> bool:
    """Whether activation ``node``, right before the model's output, leaves the logits as they
    are for small values: a linear/sigmoid/tanh/softmax, or a chain that is the identity near 0
    (a logit softcap ``c tanh(x / c)``, Gemma 2)."""
    act = node.info.get("activation")
    if act is not None and act.name in XAVIER_ACTS:
        return True
    slope = slope_at_zero(node)
    return slope is not None and abs(slope - 1.0) < 1e-3


def use_label(u: Any) -> str:
    act = u.node.info.get("activation") if u.node is not None and u.kind == "act" else None
    return act.label() if act is not None else u.kind


def one_target(u: Any, q: float, g: Graph, table_family: str = "xavier") -> tuple[float, str, str]:
    kind = u.kind
    if kind == "act":
        act = u.node.info.get("activation")
        name = act.name if act is not None else "custom"
        label = act.label() if act is not None else "custom"
        if all(c.kind == "output" for c in consumer(g, u.node.id)) and output_like(u.node):
            return TARGET_LOGITS / q, "xavier", f"feeds {label} at the model output: logits of E[z^2] = {TARGET_LOGITS}"
        if name == "selu":
            return 1.0 / q, "lecun", "feeds selu: LeCun, E[z^2] = 1 keeps SELU self-normalizing (Klambauer et al. 2017)"
        chain = bool(u.node.info.get("chain"))
        phi = u.node.phi if chain else act.fn
        # the same activation (a name and parameters the recorder identified, as a module or as a
        # chain of elementwise ops) gives the same fixed point: solved once per graph
        key = None if name == "custom" else (label, chain, q)
        if name in XAVIER_ACTS:
            t, slope2 = _memo(g, ("saturating", key), lambda: saturating(phi, q))
            return t, "xavier", (f"feeds {label}: Xavier family, n E[w^2] = {t:.3g} so that n E[w^2] E[phi'(z)^2] "
                                 f"= 1 at its pre-activation E[z^2] = {t * q:.3g} (chi_1 = 1, the edge of chaos: "
                                 "near-linear, as Glorot & Bengio 2010 derive it; Schoenholz et al. 2017)")
        s, slope2 = _memo(g, ("edge_of_chaos", key and key[:2]), lambda: edge_of_chaos(phi, q, False))
        return s / q, "kaiming", (f"feeds {label}: He family with s E[phi'(z)^2] = {s * slope2:.3g} at E[z^2] = "
                                  f"{s:.3g} (chi_1 = 1: the gradient keeps its scale, Schoenholz et al. 2017)")
    if kind == "output":
        return TARGET_LOGITS / q, "xavier", f"model output: logits of E[y^2] = {TARGET_LOGITS} (initial loss ~ ln C)"
    if kind in ("query", "key"):
        d, scale = attention_dims(g, u.node)
        scale *= abs(u.slope) or 1.0
        target = TARGET_ATTENTION_STD / (scale * math.sqrt(d))
        return target / q, "xavier", (f"attention {kind}: logits scale*q.k (scale {scale:.3g}, {d:g} dims) of std "
                                      f"{TARGET_ATTENTION_STD}")
    if kind == "residual":
        family = {"he": "kaiming", "lecun": "lecun"}.get(table_family, "xavier")
        return 1.0 / q, family, "ends a residual branch"
    if kind == "sum" and u.node is not None:
        group = sum_group(g, _top_sum(g, u.node.id))
        if group:
            k = len(group)
            return 1.0 / (k * q), "xavier", (f"one of {k} summed embeddings (patches + position): E[y^2] = 1/{k}, an "
                                             "equal share of the sum's unit variance")
    return 1.0 / q, "xavier", "no activation follows: its consumer receives E[y^2] = 1"


def _memo(g: Graph, key: Any, compute: Any) -> Any:
    """``compute()``, kept in ``g.memo`` under ``key`` (computed every time when the key holds
    None: an activation that cannot be named exactly)."""
    if key[-1] is None:
        return compute()
    if key not in g.memo:
        g.memo[key] = compute()
    return g.memo[key]


def saturating(phi: Any, q: float) -> tuple[float, float]:
    """``(t, E[phi'^2])`` with ``t E[phi'(z)^2] = 1`` for ``z ~ N(0, t q)``: ``t = n E[w^2]``
    for a saturating activation (tanh: ``t -> 1`` as ``q -> 0``), whose pre-activation is left to
    settle where the gradient keeps its scale; at most the pre-activation ``E[z^2] = 1``
    (sigmoid, whose slope is at most 1/4, would otherwise be driven into saturation)."""
    t, slope2 = 1.0, 1.0
    for _ in range(40):
        slope2 = act_moments(phi, 0.0, t * q, 0.0).slope2
        if slope2 <= 0:
            break
        new = min(max(1.0 / slope2, 1e-3), 1.0 / q)
        if abs(new - t) < 1e-6 * t:
            t = new
            break
        t = 0.5 * (t + new)
    return t, slope2


def edge_of_chaos(phi: Any, q: float, linear_regime: bool) -> tuple[float, float]:
    """``(s, E[phi'^2])`` with ``s E[phi'(z)^2] = 1``, ``z ~ N(0, s)`` (``s`` the pre-activation's
    second moment), by fixed-point iteration; capped at 1 for saturating activations."""
    s = 1.0
    slope2 = 1.0
    for _ in range(30):
        slope2 = act_moments(phi, 0.0, s, 0.0).slope2
        if slope2 <= 0:
            break
        new = min(max(1.0 / slope2, 1e-3), _HE_LIKE_CAP)
        if linear_regime:
            new = min(new, 1.0)
        if abs(new - s) < 1e-6 * s:
            s = new
            break
        s = 0.5 * (s + new)
    return s, slope2


def attention_dims(g: Graph, att: Node) -> tuple[float, float]:
    if att.kind == "attention":
        d = float(g.nodes[att.inputs[0]].shape[-1] or 1)
        scale = att.info.get("scale")
        return d, (1.0 / math.sqrt(d) if scale is None else float(scale))
    d = float(g.nodes[att.inputs[0]].shape[-1] or 1) if att.inputs else 1.0
    scale = 1.0
    for c in g.consumers(att.id):
        n = g.nodes[c]
        # the scale, or a scale and a softcap (Gemma 2: c tanh(x s / c)): the chain's slope at 0
        slope = slope_at_zero(n)
        if slope is not None:
            scale = slope
    return d, abs(scale) or 1.0
