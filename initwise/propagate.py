"""Moments of the signal through the recorded graph.

Every tensor of the forward pass is summarized by three numbers (:class:`Moments`): the mean
``m`` and second moment ``q = E[x^2]`` of its elements, and ``c``, the normalized moment two
different tokens share (``E[x_a x_b] / q`` for two samples or positions ``a != b``; the mean,
per-unit offsets and anything identical across tokens count in it). ``q (1 - c)`` is the part
that differs between tokens: the signal. Each node kind has one small rule that maps its
inputs' moments to its output's, assuming wide layers with independent zero-mean weights (the
mean-field limit, Poole et al. 2016):

* linear layer ``y = W x + b`` (fan-in ``n``, weight second moment ``s^2``):
  ``q_y = n s^2 q_x + E[b^2]``, ``c_y q_y = n s^2 c_x q_x + E[b^2]`` (a bias that cancels
  ``W E[x]``, ``info["centered"]``, removes ``n s^2 m_x^2`` from both);
* embedding: ``q = E[w^2]``, ``c`` = the chance that two tokens have the same id;
* activation: Gaussian quadrature of the chain (:func:`initwise.moments.act_moments`);
* sum of independent signals: means, second moments and shared moments add;
* product of independent signals: means and moments multiply;
* normalization: ``q = 1`` before its affine scale ``g`` and shift ``b`` (``q = E[g^2] + E[b^2]``;
  ``g = 1 + weight`` for a norm of that form, :func:`initwise.nodes.scale_offset`);
  LayerNorm/GroupNorm remove the mean, BatchNorm the per-unit offsets (``c = 0``);
* attention: softmax-weighted averages of values over ``k`` allowed keys, with logits of
  variance ``s^2``: ``q_out = q_v (c_v + (1 - c_v) A)``, ``A = min(1, e^{s^2} / k)``;
* concatenation: size-weighted averages; reshapes, indexing, dropout: unchanged;
* anything else without parameters (max pooling, top-k routing, quotients): the second-moment
  ratio measured on the recorded pass (scale-free), unchanged on the meta device. The float
  values of constants (rotary tables, masks) are not read: a product with one keeps the scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from .fans import effective_fan_in
from .graph import Graph
from .moments import act_moments, rnn_m2
from .nodes import Node, is_norm
from .structure import attention_softmax

__all__ = ["Moments", "Context", "propagate", "RULES"]


@dataclass(frozen=True)
class Moments:
    """``mean``, second moment ``m2`` and shared fraction ``corr`` of a tensor's elements."""

    mean: float = 0.0
    m2: float = 1.0
    corr: float = 0.0

    @property
    def var(self) -> float:
        """Variance over all elements: ``m2 - mean^2``."""
        return max(self.m2 - self.mean * self.mean, 0.0)

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @property
    def signal(self) -> float:
        """The part that differs between tokens: ``m2 (1 - corr)``."""
        return max(self.m2 * (1.0 - self.corr), 0.0)


def _clip(c: float) -> float:
    return min(1.0, max(0.0, c)) if math.isfinite(c) else 0.0


@dataclass
class Context:
    """What the rules read: the graph, the moments found so far (by node id) and the moments
    ``(mean, m2)`` of every parameter's values (planned or measured), by qualified name;
    ``kept``: the names of parameters that keep the values the graph was recorded with."""

    graph: Graph
    moments: dict[int, Moments] = field(default_factory=dict)
    weights: dict[str, tuple[float, float]] = field(default_factory=dict)
    alias: dict[str, str] = field(default_factory=dict)
    kept: set[str] = field(default_factory=set)

    def w(self, name: str) -> tuple[float, float]:
        """``(mean, m2)`` of parameter ``name`` (any of its tied names); ``(0, 0)`` if unknown."""
        return self.weights.get(self.alias.get(name, name), (0.0, 0.0))

    def of(self, nid: int) -> Moments:
        return self.moments.get(nid, Moments())


Rule = Callable[[Node, list[Moments], Context], Moments]
RULES: dict[str, Rule] = {}


def rule(*kinds: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for k in kinds:
            RULES[k] = fn
        return fn
    return register


def propagate(graph: Graph, weights: dict[str, tuple[float, float]] | None = None,
              decide: Callable[[Node, Context], None] | None = None, kept: set[str] | None = None) -> Context:
    """Moments of every node of ``graph`` in execution order. ``decide(node, ctx)``, when
    given, is called before each node's rule and may set ``ctx.weights`` for the parameters
    the node uses (this is how a policy chooses each weight's std from what reaches it)."""
    alias = {a: names[0] for names in graph.params.values() for a in names}
    ctx = Context(graph, {}, dict(weights or {}), alias, set(kept or ()))
    for node in graph.nodes:
        if node.kind == "fused":
            continue
        if decide is not None:
            decide(node, ctx)
        inputs = [ctx.of(i) for i in node.inputs]
        fn = RULES.get(node.kind, _passthrough)
        try:
            ctx.moments[node.id] = fn(node, inputs, ctx)
        except (ValueError, TypeError, ZeroDivisionError, OverflowError):
            ctx.moments[node.id] = inputs[0] if inputs else Moments()
    return ctx


def _signal_inputs(node: Node, inputs: list[Moments], ctx: Context) -> list[tuple[Node, Moments]]:
    return [(ctx.graph.nodes[i], m) for i, m in zip(node.inputs, inputs) if ctx.graph.nodes[i].data]


# ----------------------------------------------------------------------------- sources
@rule("input", "const")
def _source(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    info = node.info
    if "m2" not in info:
        return Moments(0.0, 1.0, info.get("corr", 0.0))
    return Moments(info["mean"], info["m2"], info.get("corr", 1.0 if node.kind == "const" else 0.0))


@rule("param")
def _param(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    """A parameter used as a tensor: two tokens share an entry when they read the same row
    (every token reads a bias; one of ``rows`` positions of a position embedding)."""
    mean, m2 = ctx.w(node.param)
    return Moments(mean, m2, 1.0 / node.info.get("rows", 1))


def _passthrough(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    sig = _signal_inputs(node, inputs, ctx)
    return sig[0][1] if sig else (inputs[0] if inputs else Moments())


rule("shape", "fused")(_passthrough)


@rule("other", "reduce", "scatter")
def _measured(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    sig = _signal_inputs(node, inputs, ctx)
    if not sig:
        return _passthrough(node, inputs, ctx)
    m = sig[0][1]
    if node.kind == "scatter" and len(sig) >= 1:
        return _sum([mm for _, mm in sig])
    if node.kind == "reduce" and node.op in _MAXES:
        k = max(1.0, _numel(ctx.graph.nodes[sig[0][0].id].shape) / max(1.0, _numel(node.shape)))
        return max_of(m, int(round(k)))
    if node.kind == "reduce" and node.op in _MEANS:
        k = max(1.0, _numel(ctx.graph.nodes[sig[0][0].id].shape) / max(1.0, _numel(node.shape)))
        q = m.m2 * (m.corr + (1.0 - m.corr) / k)
        return Moments(m.mean, q, _clip(m.corr * m.m2 / q) if q > 0 else 0.0)
    ratio = node.info.get("ratio")
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return m
    return Moments(m.mean * math.sqrt(ratio), m.m2 * ratio, m.corr)


_MAXES = frozenset({"max_pool1d", "max_pool2d", "max_pool3d", "max_pool1d_with_indices",
                    "max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
                    "adaptive_max_pool2d", "adaptive_max_pool3d", "adaptive_max_pool1d_with_indices",
                    "adaptive_max_pool2d_with_indices", "adaptive_max_pool3d_with_indices", "amax", "max"})


def max_of(x: Moments, k: int) -> Moments:
    """Moments of the maximum of ``k`` elements of ``x`` correlated by its ``corr`` (max
    pooling): ``z_i = m + s (sqrt(r) u + sqrt(1 - r) e_i)``, so ``max = m + s (sqrt(r) u +
    sqrt(1 - r) M_k)`` with ``M_k`` the maximum of ``k`` independent N(0, 1), whose moments come
    from the density ``k phi(z) Phi(z)^(k-1)`` by quadrature."""
    if k <= 1:
        return x
    import torch

    z = torch.linspace(-8.0, 8.0, 4001, dtype=torch.float64)
    pdf = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    w = k * pdf * cdf.pow(k - 1)
    w = w / w.sum()
    mu, m2k = float((w * z).sum()), float((w * z * z).sum())
    v, r = x.var, _rho(x)
    s = math.sqrt(max(v * (1 - r), 0.0))
    mean = x.mean + s * mu
    q = mean * mean + v * r + s * s * (m2k - mu * mu)
    return Moments(mean, q, _clip((x.corr * x.m2 + (mean * mean - x.mean * x.mean)) / q) if q > 0 else 0.0)


_MEANS = frozenset({"mean", "nanmean", "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d",
                    "adaptive_avg_pool2d", "adaptive_avg_pool3d"})


def _numel(shape: tuple[int, ...]) -> float:
    return float(math.prod(shape)) if shape else 1.0


# ----------------------------------------------------------------------------- layers
def linear_out(x: Moments, fan_in: float, w_m2: float, b: tuple[float, float] = (0.0, 0.0),
               centered: bool = False) -> Moments:
    """``y = W x + b`` with iid zero-mean weights of second moment ``w_m2`` (see the module
    docstring); ``centered``: the bias cancels ``W E[x]``, so the input mean does not reach ``y``."""
    gain = fan_in * w_m2
    shared = gain * (x.corr * x.m2 - (x.mean * x.mean if centered else 0.0))
    total = gain * (x.m2 - (x.mean * x.mean if centered else 0.0))
    b_mean, b_m2 = (0.0, 0.0) if centered else b
    q = total + b_m2
    return Moments(b_mean, q, _clip((shared + b_m2) / q) if q > 0 else 0.0)


def _norm_out(x: Moments, kind: str, scale: tuple[float, float], shift: tuple[float, float]) -> Moments:
    if kind == "batch":
        corr = 0.0
    elif kind == "layer":
        v = x.m2 - x.mean * x.mean
        corr = _clip((x.corr * x.m2 - x.mean * x.mean) / v) if v > 0 else 0.0
    else:  # rms
        corr = x.corr
    q = scale[1] + shift[1]
    return Moments(shift[0], q, _clip((scale[1] * corr + shift[1]) / q) if q > 0 else 0.0)


def norm_kind(module: nn.Module | None, op: str = "") -> str:
    """``"batch"`` (per unit over the batch), ``"layer"`` (per token, mean removed) or ``"rms"``."""
    name = (type(module).__name__ if module is not None else op).lower()
    if isinstance(module, nn.modules.batchnorm._NormBase) or "batch" in name or "instance" in name:
        return "batch"
    return "rms" if "rms" in name else "layer"


@rule("layer")
def _layer(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    module = node.info.get("module")
    x = next((m for n, m in _signal_inputs(node, inputs, ctx)), inputs[0] if inputs else Moments())
    prefix = f"{node.module}." if node.module else ""
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        mean, m2 = ctx.w(prefix + "weight")
        if prefix + "weight" in ctx.kept and "token_corr" in node.info:  # a fixed table (sinusoids)
            return Moments(mean, m2, node.info["token_corr"])
        ids = ctx.graph.nodes[node.inputs[0]] if node.inputs else None
        same = ids.info.get("collision", 0.0) if ids is not None else 0.0
        return Moments(mean, m2, _clip(max(same, mean * mean / m2 if m2 > 0 else 0.0)))
    if module is not None and is_norm(module):
        names = [n for n, _ in module.named_parameters(recurse=False)]
        scale = ctx.w(prefix + names[0]) if names else (1.0, 1.0)
        off = node.info.get("scale_offset", 0.0)  # the (1 + weight) form: the gain is off + weight
        if off:
            scale = (off + scale[0], off * off + 2.0 * off * scale[0] + scale[1])
        shift = ctx.w(prefix + names[1]) if len(names) > 1 else (0.0, 0.0)
        return _norm_out(x, norm_kind(module), scale, shift)
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        src = next((ctx.graph.nodes[i] for i in node.inputs if ctx.graph.nodes[i].data), None)
        fan_in = effective_fan_in(module, src.shape if src is not None else ())
        _, w_m2 = ctx.w(prefix + "weight")
        bias = ctx.w(prefix + "bias") if getattr(module, "bias", None) is not None else (0.0, 0.0)
        return linear_out(x, fan_in, w_m2, bias, node.info.get("centered", False))
    if isinstance(module, nn.MultiheadAttention):
        e = module.embed_dim
        _, w_in = ctx.w(prefix + "in_proj_weight") if module.in_proj_weight is not None else ctx.w(prefix + "v_proj_weight")
        _, w_out = ctx.w(prefix + "out_proj.weight")
        v = linear_out(x, module.kdim if module.in_proj_weight is None else e, w_in)
        logit_var = (e / module.num_heads) * v.m2 * v.m2 / (e / module.num_heads)
        seq = node.shape[0] if node.shape and not module.batch_first else (node.shape[1] if len(node.shape) > 1 else 1)
        avg = attention_average(v, logit_var, 1.0 / max(float(seq), 1.0))
        return linear_out(avg, e, w_out, ctx.w(prefix + "out_proj.bias") if module.out_proj.bias is not None else (0, 0))
    if isinstance(module, nn.PReLU):
        mean, m2 = ctx.w(prefix + "weight")
        a = math.sqrt(m2)
        am = act_moments(lambda z: z.clamp(min=0) + a * z.clamp(max=0), x.mean, x.var, _rho(x))
        return Moments(am.mean, am.m2, _clip(am.cross / am.m2) if am.m2 > 0 else 0.0)
    if isinstance(module, nn.RNNBase):
        steps = node.shape[1 if module.batch_first else 0] if len(node.shape) == 3 else 1
        return Moments(0.0, rnn_m2(module, x.m2, steps, prefix, ctx), 0.0)
    return x


# ----------------------------------------------------------------------------- operations
@rule("linear")
def _linear(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    sig = _signal_inputs(node, inputs, ctx)
    x = sig[0][1] if sig else Moments()
    weight = node.info.get("weight", "")
    fans = node.info.get("fans") or (1.0, 1.0)
    _, w_m2 = ctx.w(weight)
    bias = [w for w in node.weights if w != ctx.alias.get(weight, weight) and w != weight]
    b = ctx.w(bias[0]) if bias else (0.0, 0.0)
    return linear_out(x, fans[0], w_m2, b, node.info.get("centered", False))


@rule("embedding")
def _embedding(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    mean, m2 = ctx.w(node.weights[0]) if node.weights else (0.0, 1.0)
    return Moments(mean, m2, 0.0)


def _rho(x: Moments) -> float:
    v = x.m2 - x.mean * x.mean
    return _clip((x.corr * x.m2 - x.mean * x.mean) / v) if v > 0 else 1.0


@rule("act")
def _act(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    x = inputs[0]
    if not node.info.get("chain") and "module" not in node.info:
        return x
    fn = node.phi if node.info.get("chain") else node.info["module"]
    am = act_moments(fn, x.mean, x.var, _rho(x))
    return Moments(am.mean, am.m2, _clip(am.cross / am.m2) if am.m2 > 0 else 0.0)


def _sum(parts: list[Moments], signs: list[float] | None = None) -> Moments:
    signs = signs or [1.0] * len(parts)
    mean = sum(s * p.mean for s, p in zip(signs, parts))
    m2 = sum(p.m2 for p in parts) + 2 * sum(
        signs[i] * signs[j] * parts[i].mean * parts[j].mean for i in range(len(parts)) for j in range(i + 1, len(parts)))
    shared = sum(p.corr * p.m2 for p in parts) + (m2 - sum(p.m2 for p in parts))
    return Moments(mean, m2, _clip(shared / m2) if m2 > 0 else 0.0)


def _base(ctx: Context, nid: int, depth: int = 0) -> int | None:
    """The signal a node is a rearrangement of (through reshapes, indexing, sign flips and
    concatenations of pieces of it), or None."""
    n = ctx.graph.nodes[nid]
    if depth > 50:
        return None
    if n.kind == "shape" or (n.kind == "act" and n.op in ("neg", "contiguous", "clone", "to", "float")):
        data = [i for i in n.inputs if ctx.graph.nodes[i].data]
        return _base(ctx, data[0], depth + 1) if len(data) == 1 else None
    if n.kind == "cat":
        bases = {_base(ctx, i, depth + 1) for i in n.inputs if ctx.graph.nodes[i].data}
        return bases.pop() if len(bases) == 1 else None
    return nid


def _rotation(node: Node, ctx: Context) -> int | None:
    """``x * cos + rotate_half(x) * sin`` (rotary embeddings): a sum of products of one signal,
    rearranged, with constants the plan does not read. Its scale is the signal's (a rotation)."""
    bases = set()
    for i in node.inputs:
        m = ctx.graph.nodes[i]
        if not m.data:
            continue
        consts = [ctx.graph.nodes[j] for j in m.inputs if ctx.graph.nodes[j].kind == "const"]
        data = [j for j in m.inputs if ctx.graph.nodes[j].data]
        if m.kind != "mul" or len(data) != 1 or not consts or any("m2" in c.info for c in consts):
            return None
        bases.add(_base(ctx, data[0]))
    return bases.pop() if len(bases) == 1 and None not in bases else None


@rule("add")
def _add(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    rot = _rotation(node, ctx)
    if rot is not None:
        return ctx.of(rot)
    parts, signs = [], []
    for k, (i, m) in enumerate(zip(node.inputs, inputs)):
        src = ctx.graph.nodes[i]
        if src.kind == "const" and (src.info.get("mask") or "m2" not in src.info):
            continue  # an attention mask (-inf / large negative entries), or unread values
        parts.append(m)
        signs.append(-1.0 if k > 0 and node.op in ("sub", "isub") else 1.0)
    if node.op == "rsub" and len(signs) > 1:
        signs = [-1.0] + signs[1:]
    return _sum(parts, signs) if parts else Moments()


@rule("mul")
def _mul(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    if node.op in ("div", "truediv", "itruediv", "true_divide", "idiv", "rtruediv"):
        return _measured(node, inputs, ctx)
    mean, m2, shared = 1.0, 1.0, 1.0
    for i, m in zip(node.inputs, inputs):
        src = ctx.graph.nodes[i]
        if src.kind == "const" and "m2" not in src.info:
            continue  # a constant whose values the plan does not read (rotary tables, masks)
        mean, m2, shared = mean * m.mean, m2 * m.m2, shared * m.corr * m.m2
    return Moments(mean, m2, _clip(shared / m2) if m2 > 0 else 0.0)


@rule("cat")
def _cat(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    sizes = dict(node.info.get("sizes", []))
    total = sum(sizes.get(i, 1) for i in node.inputs) or 1
    mean = sum(sizes.get(i, 1) * m.mean for i, m in zip(node.inputs, inputs)) / total
    m2 = sum(sizes.get(i, 1) * m.m2 for i, m in zip(node.inputs, inputs)) / total
    shared = sum(sizes.get(i, 1) * m.corr * m.m2 for i, m in zip(node.inputs, inputs)) / total
    return Moments(mean, m2, _clip(shared / m2) if m2 > 0 else 0.0)


@rule("norm")
def _fnorm(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    sig = _signal_inputs(node, inputs, ctx)
    x = sig[0][1] if sig else Moments()
    names = [w for w in node.weights]
    scale = ctx.w(names[0]) if names else (1.0, 1.0)
    shift = ctx.w(names[1]) if len(names) > 1 else (0.0, 0.0)
    return _norm_out(x, norm_kind(None, node.op), scale, shift)


@rule("softmax")
def _softmax(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    inv = node.info.get("inv_keys") or (1.0 / node.shape[-1] if node.shape else 1.0)
    logits = inputs[0]
    return Moments(inv, min(1.0, math.exp(min(logits.var, 50.0)) * inv) * inv, 1.0)


def attention_average(v: Moments, logit_var: float, inv_keys: float, pair_keys: float | None = None) -> Moments:
    """Moments of softmax-weighted averages of values ``v`` over the allowed keys with logits of
    variance ``logit_var``: ``inv_keys`` is the mean over queries of 1 / their number of keys
    (log-normal weights: ``E[sum p^2] ~ e^{s^2} / keys``), ``pair_keys`` the weight two
    queries' averages share (their outputs are correlated by it: causal prefixes overlap)."""
    a = min(1.0, math.exp(min(logit_var, 50.0)) * inv_keys)
    pair = inv_keys if pair_keys is None else min(pair_keys, a)
    q = v.m2 * (v.corr + (1.0 - v.corr) * a)
    shared = v.m2 * (v.corr + (1.0 - v.corr) * pair)
    return Moments(v.mean, q, _clip(shared / q) if q > 0 else 0.0)


def logit_variance(q: Moments, k: Moments, dim: float, scale: float) -> float:
    """Variance of ``scale * q . k`` over ``dim`` components of independent q and k."""
    return scale * scale * dim * q.m2 * k.m2


@rule("attention")
def _attention(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    q, k, v = inputs[0], inputs[1], inputs[2]
    dim = float(ctx.graph.nodes[node.inputs[0]].shape[-1] or 1)
    scale = node.info.get("scale")
    scale = 1.0 / math.sqrt(dim) if scale is None else float(scale)
    extra = inputs[3].var if len(inputs) > 3 and not ctx.graph.nodes[node.inputs[3]].info.get("mask") else 0.0
    inv = node.info.get("inv_keys") or 1.0 / float(ctx.graph.nodes[node.inputs[1]].shape[-2])
    return attention_average(v, logit_variance(q, k, dim, scale) + extra, inv, node.info.get("pair_keys"))


@rule("matmul")
def _matmul(node: Node, inputs: list[Moments], ctx: Context) -> Moments:
    a_node = ctx.graph.nodes[node.inputs[0]]
    soft = attention_softmax(ctx.graph, a_node.id) if len(inputs) > 1 else None
    if soft is not None:
        inv = soft.info.get("inv_keys") or 1.0 / float(soft.shape[-1] if soft.shape else 1)
        return attention_average(inputs[1], ctx.of(soft.inputs[0]).var if soft.inputs else 0.0, inv,
                                 soft.info.get("pair_keys"))
    contracted = float(a_node.shape[-1]) if a_node.shape else 1.0
    a, b = inputs[0], inputs[-1]
    return Moments(0.0, contracted * a.m2 * b.m2, _clip(a.corr * b.corr))

