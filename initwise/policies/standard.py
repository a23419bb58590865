"""``policy="standard"``: the mission's table, with each std set by the signal that reaches the
weight through the recorded graph.

The scheme family still comes from the table (:mod:`.table`: He before relu-like
activations, Xavier before linear/sigmoid/tanh/softmax consumers, LeCun before SELU,
orthogonal recurrent weights); the std is chosen while the moments of the signal are
propagated through the graph in execution order (:mod:`initwise.propagate`), from what
actually reaches the weight (``E[x^2]`` of its input) and what consumes its output:

=======================  ======================================================================
consumer                 std of ``W`` (fan-in ``n``, input second moment ``q_x``): ``s / (n q_x)``
=======================  ======================================================================
activation ``phi``       ``s`` with ``s E[phi'(z)^2] = 1`` for ``z ~ N(0, s q_x)``: the gradient
                         keeps its scale through the layer (``chi_1 = 1``, the edge of chaos,
                         Poole et al. 2016, Schoenholz et al. 2017). ReLU: ``s = 2``, He exactly;
                         SELU: ``s = 1 / q_x`` (LeCun); saturating ones (tanh, sigmoid) are kept in
                         their linear regime (``E[z^2] <= 1``, Glorot & Bengio 2010)
model output (logits)    ``s = 0.02 / q_x``: logits of std 0.14, initial loss ~ ln(classes) + 0.01
attention query / key    logits ``scale^2 d q_q q_k`` of std 0.5 whatever the model's scaling (T5)
sum of embeddings        each of the ``k`` summed embeddings gets ``1/k`` of the unit variance
other (layer, norm...)   ``s = 1 / q_x``: the consumer receives unit second moment
=======================  ======================================================================

Residual streams (``residual=``): ``"scaled"`` (default) rescales the last scale on each branch
(a layer, a norm's weight or a layer scale) so that each of the ``N`` branches of a stream adds
``1/N`` of the stream's input variance: after all of them the stream's variance is at most
doubled (GPT-2/Megatron's ``1/sqrt(2L)``, Radford et al. 2019, here from the propagated
values); ``"zero"`` starts every branch at 0 (SkipInit, De & Smith 2020; ReZero; Goyal et al.
2017's zero_init_residual), never zeroing a layer a ReLU follows; ``"none"`` leaves the per-layer
choice. Post-norm sums (a norm right after the sum, BERT) are left alone. A tied output layer
whose weight the embedding already decided reaches the logits target through the norm (a gain of
``1 + weight`` for Gemma's form) or the projection before it.

What each decision writes into its plan entry (scheme, std, params, reason) is in :mod:`.entries`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..fans import effective_fan_in
from ..graph import Graph
from ..nodes import Node
from ..plan import PlanEntry
from ..propagate import Context, Moments, propagate
from ..structure import Residual, branch_end, consumer, residual_adds, streams, sum_group
from .entries import _const, _embedding, _gain_value, _random, _rescale, _scale_std
from .targets import TARGET_ATTENTION_STD, TARGET_CENTRED, TARGET_LOGITS, _top_sum, output_like, target

__all__ = ["refine", "RESIDUAL_MODES", "TARGET_LOGITS", "TARGET_ATTENTION_STD"]

RESIDUAL_MODES = ("scaled", "zero", "none")


@dataclass
class _State:
    graph: Graph
    entries: dict[str, PlanEntry]             # every name of every tensor -> its entry
    owned: set[int]                            # ids of entries the standard policy decides
    decided: set[int] = field(default_factory=set)
    distribution: str = "normal"
    residual: str = "scaled"
    res: dict[int, Residual] = field(default_factory=dict)
    stream_of: dict[int, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    scaled: list[str] = field(default_factory=list)
    unscaled: list[str] = field(default_factory=list)
    fixed: dict[int, float] = field(default_factory=dict)   # entry id -> std decided by a tied output layer
    retry: dict[int, float] = field(default_factory=dict)


def refine(entries: list[PlanEntry], owned: list[PlanEntry], graph: Graph, *, residual: str = "scaled",
           distribution: str = "normal", tensors: dict[str, torch.Tensor] | None = None) -> list[str]:
    """Set the std of every ``owned`` entry from the signal propagated through ``graph`` (see
    the module docstring), record each entry's ``predicted_std``, and return the notes the plan
    should carry (residual streams, what was kept). ``tensors``: the model's current values
    (for kept tensors and for naming deliberate constants)."""
    if residual not in RESIDUAL_MODES:
        raise ValueError(f"residual must be one of {', '.join(map(repr, RESIDUAL_MODES))}, got {residual!r}")
    by_name: dict[str, PlanEntry] = {}
    for e in entries:
        for n in (e.name, *e.shared_with, *e.writes):
            by_name[n] = e
    saved = {id(e): copy.deepcopy(e.__dict__) for e in owned}
    res = residual_adds(graph)
    stream_of = {a: s for s in streams(graph, res) for a in s.adds}
    fixed: dict[int, float] = {}
    for _ in range(2):  # a second pass when a tied output layer needs its weight smaller
        st = _State(graph, by_name, {id(e) for e in owned}, distribution=distribution, residual=residual,
                    res=res, stream_of=stream_of, fixed=fixed)
        weights = {}
        for e in entries:
            stats = _entry_stats(e, (tensors or {}).get(e.name))
            for n in (e.name, *e.shared_with, *e.writes):
                weights[n] = stats
        kept = {n for e in entries if e.scheme == "keep" for n in (e.name, *e.shared_with, *e.writes)}
        ctx = propagate(graph, weights, lambda node, c, st=st: _decide(node, c, st), kept)
        if not st.retry:
            break
        for e in owned:
            e.__dict__.update(copy.deepcopy(saved[id(e)]))
        fixed = dict(st.retry)
    _predict(entries, graph, ctx)
    return _notes(st, graph)


def _entry_stats(e: PlanEntry, t: torch.Tensor | None) -> tuple[float, float]:
    if e.scheme == "keep" or e.scheme == "weight_norm_g":
        if t is not None and type(t) in (nn.Parameter, torch.Tensor) and not t.is_meta and t.numel() \
                and t.is_floating_point():
            x = t.detach().double()
            return float(x.mean()), float(x.square().mean())
        return 0.0, (e.std or 0.0) ** 2
    if e.scheme == "zeros":
        return 0.0, 0.0
    if e.scheme == "constant":
        v = float(e.params.get("value", 0.0))
        return v, v * v
    return 0.0, float(e.std or 0.0) ** 2


def _set_stats(ctx: Context, e: PlanEntry) -> None:
    stats = _entry_stats(e, None)
    for n in (e.name, *e.shared_with, *e.writes):
        ctx.weights[n] = stats
    canon = ctx.alias.get(e.name)
    if canon:
        ctx.weights[canon] = stats


# ----------------------------------------------------------------------------- decisions
def _decide(node: Node, ctx: Context, st: _State) -> None:
    if node.id in st.res and st.residual != "none":
        _branch(node, ctx, st)
    if not node.weights and node.kind != "param":
        return
    if node.kind in ("layer", "linear", "embedding"):
        _weight_node(node, ctx, st)
    elif node.kind == "param":
        _param_node(node, ctx, st)
    elif node.kind in ("mul", "add", "norm", "cat"):
        for w in node.weights:
            e = st.entries.get(w)
            if e is not None and _open(e, st) and e.scheme == "keep" and not _derived(st.graph, node, w):
                if node.kind == "add" and len(e.shape) <= 1:
                    _const(e, 0.0, "added to the signal like a bias: starts at 0")
                elif node.kind == "norm" and w == node.weights[-1] and len(node.weights) > 1:
                    _const(e, 0.0, "normalization shift: starts at 0")
                else:
                    _const(e, 1.0, f"multiplies the signal ({node.op}): starts at 1, the identity"
                           if node.kind != "norm" else "normalization scale: starts at 1")
                st.decided.add(id(e))
                _set_stats(ctx, e)


def _derived(g: Graph, node: Node, w: str) -> bool:
    """Whether ``node`` reads parameter ``w`` through a function of it (``-exp(A_log)``), not
    as it is: its use then says nothing of the value it should start at (it is kept)."""
    return any(g.nodes[i].kind == "param" and g.nodes[i].param == w and g.nodes[i].info.get("derived")
               for i in node.inputs)


def _open(e: PlanEntry, st: _State) -> bool:
    return id(e) in st.owned and id(e) not in st.decided


def _weight_node(node: Node, ctx: Context, st: _State) -> None:
    g = st.graph
    module = node.info.get("module")
    if node.kind == "linear":
        wname, fans = node.info.get("weight", ""), node.info.get("fans")
    elif node.kind == "embedding" or (module is not None and "Embedding" in type(module).__name__):
        wname, fans = (node.weights[0] if node.weights else ""), None
    elif module is not None and type(module).__name__ in _DENSE:
        wname = _weight_of(node, st)
        src = next((g.nodes[i] for i in node.inputs if g.nodes[i].data), None)
        fans = (effective_fan_in(module, src.shape if src is not None else ()), None)
    else:
        for w in node.weights:  # norms, recurrent layers, attention: the table's choice stands
            e = st.entries.get(w)
            if e is not None:
                st.decided.add(id(e))
        _tied_head(node, ctx, st)
        return
    e = st.entries.get(wname)
    for w in node.weights:  # biases of a layer initwise did not know: zeros
        b = st.entries.get(w)
        if b is not None and b is not e and _open(b, st):
            if b.scheme == "keep" and len(b.shape) <= 1:
                _const(b, 0.0, "bias of the linear operation: starts at 0")
                _set_stats(ctx, b)
            st.decided.add(id(b))
    if e is None:
        return
    if not _open(e, st):
        _tied_head(node, ctx, st)
        return
    x = _input(node, ctx)
    if id(e) in st.fixed:  # a tied output layer needs this scale (second pass)
        _embedding(e, None, st, st.fixed[id(e)], tied_head=True)
    elif fans is None:  # embedding lookup: fan-in 1
        if any(u.kind == "other" and u.node is not None and u.node.kind == "attention" for u in consumer(g, node.id)):
            _embedding(e, None, st, TARGET_ATTENTION_STD / 2)  # a learned attention bias (T5's relative positions)
        else:
            _embedding(e, _share(g, node), st)
    else:
        uses = consumer(g, node.id, st.res)
        s, family, why = target(uses, x, g, node, e.family)
        fan_in = float(fans[0] or 1.0)
        fan_out = float(fans[1]) if fans[1] is not None else e.fan_out
        nominal = float(e.fan_in) if fans[1] is None and e.fan_in else fan_in
        if abs(nominal - fan_in) > 1e-6 * nominal:
            why += f" [{fan_in:.4g} of the {nominal:g} inputs of an output lie inside the zero padding, on average]"
        _random(e, family, math.sqrt(s / fan_in), nominal, fan_out, why, st,
                hidden=bool(uses) and all(u.kind == "act" for u in uses))
        if isinstance(module, nn.Linear) and uses and all(_feeds_output(u, g) for u in uses):
            _centre_bias(node, e, x, st)
    st.decided.add(id(e))
    _set_stats(ctx, e)


#: Share of an output layer's input second moment common to all samples above which its bias is
#: centred on the data (:mod:`initwise.calibrate`), and the fewest rows of the example input at
#: that layer to measure the mean and the variance on (a batch of 2 would fit its own noise).
SHARED_CENTRE = 0.05
CENTRE_MIN_ROWS = 32


def _feeds_output(u: Any, g: Graph) -> bool:
    if u.kind == "output":
        return True
    return u.kind == "act" and u.node is not None and output_like(u.node) \
        and all(c.kind == "output" for c in consumer(g, u.node.id))


def _centre_bias(node: Node, w: PlanEntry, x: Moments, st: _State) -> None:
    """An output ``nn.Linear`` whose input carries a part shared by all samples: plan its bias
    as ``"centre"`` (measured by ``init`` on the example batch, :mod:`initwise.calibrate`)."""
    b = st.entries.get(f"{node.module}.bias" if node.module else "bias")
    shared = max(x.corr, x.mean * x.mean / x.m2) if x.m2 > 0 else 0.0
    src = next((st.graph.nodes[i] for i in node.inputs if st.graph.nodes[i].data), None)
    rows = math.prod(src.shape[:-1]) if src is not None and src.shape else 0
    if b is None or id(b) not in st.owned or b.scheme != "zeros" or w.shared_with or b.shared_with or w.writes \
            or shared < SHARED_CENTRE or rows < CENTRE_MIN_ROWS:
        return
    b.scheme, b.distribution, b.std, b.params = "centre", "-", 0.0, {"weight": w.name}
    b.reason = (f"output bias, centred by initwise.init on the example batch: -W E[x], so each logit starts at "
                f"mean 0 (its input's part shared by all samples is {shared:.2g} of E[x^2]; data-dependent bias, "
                "Krähenbühl et al. 2016); the weight is then rescaled so the logits' part that varies between "
                f"samples has variance {TARGET_CENTRED}")
    st.decided.add(id(b))


_DENSE = ("Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
          "NonDynamicallyQuantizableLinear", "LazyLinear", "LazyConv1d", "LazyConv2d", "LazyConv3d")


def _weight_of(node: Node, st: _State) -> str:
    prefix = f"{node.module}." if node.module else ""
    for local in ("weight", "weight_v"):  # weight_v: a legacy weight_norm's direction
        if prefix + local in st.entries:
            return prefix + local
    return next((w for w in node.weights if len(st.entries[w].shape) >= 2), "") if node.weights else ""


def _input(node: Node, ctx: Context) -> Moments:
    sig = [ctx.of(i) for i in node.inputs if ctx.graph.nodes[i].data]
    return sig[0] if sig else Moments()


def _share(g: Graph, node: Node) -> tuple[int, int] | None:
    """``(k, add)`` when ``node`` is one of ``k`` summed embeddings, else None."""
    for c in consumer(g, node.id):
        if c.node is not None and c.node.kind == "add":
            top = _top_sum(g, c.node.id)
            group = sum_group(g, top)
            if group is not None:
                return len(group), top
    return None


def _param_node(node: Node, ctx: Context, st: _State) -> None:
    e = st.entries.get(node.param)
    if e is None or not _open(e, st) or e.scheme != "keep":
        return
    g = st.graph
    kinds = {g.nodes[c].kind for c in g.consumers(node.id)}
    if kinds & {"linear", "layer", "embedding", "param", "matmul"}:
        return  # decided where the linear operation uses it
    share = None
    for c in consumer(g, node.id):
        if c.node is not None and c.node.kind in ("add", "cat"):
            top = c.node.id
            if c.node.kind == "cat":
                nxt = consumer(g, top)
                top = next((u.node.id for u in nxt if u.node is not None and u.node.kind == "add"), top)
            top = _top_sum(g, top) if g.nodes[top].kind == "add" else top
            group = sum_group(g, top) if g.nodes[top].kind == "add" else None
            share = len(group) if group else 1
    if share is None:
        return
    std = math.sqrt(1.0 / share)
    e.scheme, e.distribution, e.fan_in, e.fan_out, e.gain, e.std = "normal", "normal", 1, None, 1.0, std
    e.params = {"std": std}
    e.reason = (f"learned embedding added to the signal (one of {share} summed parts): N(0, 1/{share})"
                if share > 1 else "learned embedding joined to the signal: N(0, 1)")
    st.decided.add(id(e))
    _set_stats(ctx, e)


# ----------------------------------------------------------------------------- residual streams
def _branch(add: Node, ctx: Context, st: _State) -> None:
    """At a residual sum: rescale the branch's last scale to its share of the stream."""
    r = st.res[add.id]
    if r.post_norm:
        return
    g = st.graph
    stream = st.stream_of.get(add.id)
    end, path = branch_end(g, r.branch)
    where = f"{add.op}() in '{add.module or 'the model'}'"
    e = _end_entry(end, st) if end is not None else None
    if e is None or id(e) not in st.owned:
        st.unscaled.append(where if end is None else f"{end.module or end.op} (not planned by the standard policy)")
        return
    bm, skip = ctx.of(r.branch), ctx.of(r.skip)
    b = bm.m2
    n = len(stream.adds) if stream is not None else 1
    v = ctx.of(stream.start).m2 if stream is not None else skip.m2
    through_act = any(g.nodes[i].kind == "act" and not _affine_or_identity(g.nodes[i]) for i in path)
    if st.residual == "zero" and through_act:
        st.notes.append(f"{e.name!r} ends a residual branch through an activation: zeroing it would stop its "
                        "gradient (relu'(0) = 0), so it is scaled instead")
    if st.residual == "zero" and not through_act:
        target, factor = 0.0, 0.0
    else:
        # the sum's second moment grows by k^2 b + 2 k m_skip m_branch (means add coherently):
        # choose the scale k of the branch so that it grows by v / n
        target = v / n
        cross = skip.mean * bm.mean
        k = (-cross + math.sqrt(cross * cross + b * target)) / b if b > 0 else 1.0
        factor = k * k
        if not (math.isfinite(factor) and _MIN_FACTOR <= factor <= 1.0 / _MIN_FACTOR):
            # the moments the branch was planned from are out of any trained range (a recurrence
            # the propagation cannot follow, as Mamba's scan): no rescale, said in the notes
            st.unscaled.append(f"{e.name} (its branch's predicted E[x^2] = {b:.3g} against the stream's {v:.3g}: "
                               "out of range, left as planned)")
            st.decided.add(id(e))
            return
    _rescale(e, factor, end, st, target, v, n, zero=st.residual == "zero" and not through_act)
    st.decided.add(id(e))
    _set_stats(ctx, e)
    _scale_moments(ctx, [end.id, *path], factor)
    st.scaled.append(e.name)


def _scale_moments(ctx: Context, ids: list[int], factor: float) -> None:
    """The propagated moments of nodes ``ids`` after their signal's scale changed by
    ``sqrt(factor)`` (a rescaled layer or norm, and the nodes between it and its consumer)."""
    for i in ids:
        m = ctx.moments.get(i)
        if m is not None:
            ctx.moments[i] = Moments(m.mean * math.sqrt(factor), m.m2 * factor, m.corr)


#: the smallest (and, inverted, the largest) variance factor the residual rule applies to a branch
_MIN_FACTOR = 1e-8


def _end_entry(end: Node, st: _State) -> PlanEntry | None:
    if end.kind == "param":
        return st.entries.get(end.param)
    if end.kind == "layer" and end.info.get("norm"):
        return st.entries.get(end.weights[0]) if end.weights else None
    if end.kind == "linear":
        return st.entries.get(end.info.get("weight", ""))
    if end.kind == "layer":
        module = end.info.get("module")
        name = type(module).__name__ if module is not None else ""
        if name == "MultiheadAttention":
            return st.entries.get(f"{end.module}.out_proj.weight")
        return st.entries.get(_weight_of(end, st))
    params = [w for w in end.weights if st.entries.get(w) is not None]
    return st.entries.get(params[0]) if params else None


def _affine_or_identity(n: Node) -> bool:
    act = n.info.get("activation")
    return act is not None and act.name == "identity"


def _tied_head(node: Node, ctx: Context, st: _State) -> None:
    """A layer whose weight an earlier use decided (a tied output embedding): reach the logits
    target through the norm scale or the projection right before it (else make the embedding
    smaller, in a second pass)."""
    uses = consumer(st.graph, node.id, st.res)
    if not uses or not all(_feeds_output(u, st.graph) for u in uses) or node.kind not in ("layer", "linear"):
        return
    wname = node.info.get("weight") or _weight_of(node, st)
    e = st.entries.get(wname)
    if e is None or not (e.scheme == "normal" and e.fan_in == 1):  # decided as an embedding only
        return
    x = _input(node, ctx)
    fan = float(e.shape[-1]) if e.shape else 1.0
    logits = fan * ctx.w(wname)[1] * x.m2
    if logits <= TARGET_LOGITS * 1.5:
        return
    cur, path = node.inputs[0] if node.inputs else None, []
    g = st.graph
    while cur is not None:
        n = g.nodes[cur]
        if n.kind == "layer" and n.info.get("norm") and n.weights:
            scale = st.entries.get(n.weights[0])
            off = n.info.get("scale_offset", 0.0)  # the gain is off + weight
            if scale is None or id(scale) not in st.owned or scale.scheme not in ("constant", "zeros"):
                break
            factor = TARGET_LOGITS / logits
            value = _gain_value(scale, math.sqrt(factor), off)
            _const(scale, float(f"{value:.6g}"),
                   f"the norm before a tied output layer: its scale sets the initial logits to E[y^2] = "
                   f"{TARGET_LOGITS} (the tied weight keeps the embedding's scale)"
                   + (f"; weight {value:.6g} is a gain of {value + off:.3g} in its {off:g} + weight form" if off else ""))
            _set_stats(ctx, scale)
            _scale_moments(ctx, [cur, *path], factor)
            return
        dense = st.entries.get(n.info.get("weight") or _weight_of(n, st)) if n.kind in ("layer", "linear") else None
        if dense is not None and id(dense) in st.owned and dense.std and dense.scheme not in ("keep", "constant") \
                and not dense.shared_with and not n.info.get("norm"):
            # a projection before the tied output layer (OPT's project_out): its std sets the logits
            factor = TARGET_LOGITS / logits
            _scale_std(dense, math.sqrt(factor))
            dense.reason += (f"; scaled x{math.sqrt(factor):.3g}: the tied output layer after it then gives logits "
                             f"of E[y^2] = {TARGET_LOGITS} (the tied weight keeps the embedding's scale)")
            _set_stats(ctx, dense)
            _scale_moments(ctx, [cur, *path], factor)
            return
        if n.kind in ("shape", "act", "mul") and n.inputs:
            path.append(cur)
            sig = [i for i in n.inputs if g.nodes[i].data]
            cur = sig[0] if sig else None
            continue
        break
    if id(e) in st.owned and id(e) not in st.fixed and e.std:
        st.retry[id(e)] = e.std * math.sqrt(TARGET_LOGITS / logits)
    else:
        st.notes.append(f"tied output layer {wname!r}: initial logits E[y^2] = {logits:.3g} (no scale before it "
                        "to correct)")


# ----------------------------------------------------------------------------- results
def _predict(entries: list[PlanEntry], graph: Graph, ctx: Context) -> None:
    for e in entries:
        if e.scheme == "keep" and e.reason.startswith("frozen"):
            continue
        module = e.name.rsplit(".", 1)[0] if "." in e.name else ""
        nid = None
        while True:
            if module in graph.modules:
                nid = graph.modules[module]
                break
            if not module:
                break
            module = module.rsplit(".", 1)[0] if "." in module else ""
        if nid is not None and nid in ctx.moments:
            e.predicted_std = float(f"{ctx.moments[nid].std:.4g}")


def _notes(st: _State, graph: Graph) -> list[str]:
    notes = list(st.notes)
    if st.scaled:
        n_streams = len({id(s) for s in st.stream_of.values()})
        what = ("zeroed (each block starts as the identity)" if st.residual == "zero" else
                "scaled so each stream's variance at most doubles over its branches")
        notes.append(f"{len(st.scaled)} residual branch ends on {n_streams} stream(s) {what} (residual="
                     f"{st.residual!r}; 'none' keeps the per-layer choice)")
    post = sum(r.post_norm for r in st.res.values())
    if post:
        notes.append(f"{post} post-norm residual sum(s) (a norm right after the sum resets the scale): left alone")
    if st.unscaled:
        notes.append(f"{len(st.unscaled)} residual branch(es) whose end could not be scaled: "
                     + ", ".join(st.unscaled[:3]) + (" ..." if len(st.unscaled) > 3 else ""))
    return notes
