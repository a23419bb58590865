"""What the recipes (:mod:`.recipes`) read from the recorded graph: residual chains, their
blocks, and the layers of each residual branch.

* A **chain** is a sequence of residual sums on one path, each sum's skip operand coming from
  the previous sum (through reshapes, activations and normalizations: a post-norm model's sums,
  ``LN(x + f(x))``, form one chain too); the sums are its **branches**, in order.
* A **block** groups the consecutive branches of a chain run by the same repeated module (the
  ``ModuleList``/``ModuleDict`` entry ``layers.3`` of a transformer holds its attention and MLP
  branches): the first module path component that is an index and differs along the chain;
  sums run by one module's loop (no index in the path) are one block each. ``l`` in the recipes'
  formulas is the block's position on its chain, ``N`` (or ``L``) the number of blocks.
* A branch's **layers** are the weight layers (``Linear``, convolutions, functional linear
  maps, ``MultiheadAttention``) between its input and its output; its **end** the last node
  that scales it (:func:`initwise.structure.branch_end`), its **last layer** the last weight
  layer before the sum (through scalings, biases and positively homogeneous activations).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import math

from torch import nn
from torch.nn.utils import parametrize

from ..graph import Graph
from ..nodes import Node
from ..plan import PlanEntry
from ..structure import HOMOGENEOUS, Residual, branch_end, consumer, residual_adds

__all__ = ["Branch", "Chain", "chains", "dense_weights", "embedding_weights", "output_layers", "entry_of",
           "weight_name", "fans_of", "is_dense", "is_norm_node", "value_names", "gated_halves"]


@dataclass
class Branch:
    """One residual branch: the sum ``add`` (node id), its :class:`~initwise.structure.Residual`,
    its position ``index`` on the chain and its ``block``; ``layers`` (weight-layer nodes, in
    execution order), ``end`` (what scales it last) and ``last`` (its last weight layer; ``None``
    when none is found), ``through`` the activations passed from ``last`` to the sum, and
    whether it holds an attention."""

    add: int
    residual: Residual
    index: int = 0
    block: int = 0
    layers: list[Node] = field(default_factory=list)
    end: Node | None = None
    last: Node | None = None
    through: list[str] = field(default_factory=list)
    attention: bool = False
    norms: list[Node] = field(default_factory=list)


@dataclass
class Chain:
    """The branches of one chain, in order; ``blocks`` how many blocks they form."""

    branches: list[Branch]
    blocks: int = 1

    @property
    def per_block(self) -> int:
        """The largest number of branches in one block (2 in a transformer encoder or a
        decoder-only LM, 3 in an encoder-decoder's decoder, 1 in a ResNet)."""
        counts: dict[int, int] = {}
        for b in self.branches:
            counts[b.block] = counts.get(b.block, 0) + 1
        return max(counts.values()) if counts else 0


def chains(g: Graph) -> list[Chain]:
    """Every residual chain of ``g`` (see the module docstring), in the order they start."""
    res = residual_adds(g)
    owner: dict[int, list[int]] = {}
    groups: list[list[int]] = []
    for add_id in sorted(res):
        prev = _previous_add(g, res[add_id].skip, res)
        if prev is not None and prev in owner:
            owner[prev].append(add_id)
            owner[add_id] = owner[prev]
        else:
            group = [add_id]
            groups.append(group)
            owner[add_id] = group
    out = []
    for adds in groups:
        keys = _block_keys(g, adds)
        branches, block, last_key = [], -1, None
        for i, (a, key) in enumerate(zip(adds, keys)):
            if key != last_key or key is None:
                block += 1
            last_key = key
            branches.append(_branch(g, res[a], i, block))
        out.append(Chain(branches, block + 1))
    return out


def _previous_add(g: Graph, nid: int, res: dict[int, Residual]) -> int | None:
    """The residual sum that node ``nid`` comes from through one-input reshapes, casts,
    scalings, activations and normalizations, if any."""
    cur = nid
    for _ in range(10_000):
        if cur in res:
            return cur
        n = g.nodes[cur]
        sig = [i for i in n.inputs if g.nodes[i].data]
        one_way = n.kind in ("shape", "act", "norm", "fused") or (n.kind == "layer" and n.info.get("norm")) \
            or (n.kind in ("add", "mul") and all(g.nodes[i].kind in ("const", "param") for i in n.inputs
                                                  if i not in sig))
        if len(sig) != 1 or not one_way:
            return None
        cur = sig[0]
    return None


def _block_keys(g: Graph, adds: list[int]) -> list[str | None]:
    """The block of each sum (see the module docstring); ``None``: a block of its own."""
    paths = [g.nodes[a].module.split(".") if g.nodes[a].module else [] for a in adds]
    depth = max((len(p) for p in paths), default=0)
    for k in range(1, depth + 1):
        if all(len(p) >= k and p[k - 1].isdigit() for p in paths):
            keys = [".".join(p[:k]) for p in paths]
            if len(set(keys)) > 1:
                return keys
    return [None] * len(adds)


def _branch(g: Graph, r: Residual, index: int, block: int) -> Branch:
    stop = _fork_point(g, r) if r.fork else r.skip
    region = _region(g, r.branch, stop)
    b = Branch(r.add, r, index, block)
    b.layers = [g.nodes[i] for i in region if is_dense(g.nodes[i])]
    b.norms = [g.nodes[i] for i in region if is_norm_node(g.nodes[i])]
    b.attention = any(_is_attention(g, g.nodes[i]) for i in region)
    b.end, _ = branch_end(g, r.branch)
    b.last, b.through = _last_layer(g, r.branch)
    return b


def _fork_point(g: Graph, r: Residual) -> int:
    from ..structure import _common_source
    common = _common_source(g, r.skip, r.branch)
    return common if common is not None else -1


def _region(g: Graph, top: int, stop: int) -> list[int]:
    """The nodes after ``stop`` that ``top`` depends on (``top`` included), in execution order."""
    seen: set[int] = set()
    stack = [top]
    while stack:
        i = stack.pop()
        if i in seen or i <= stop:
            continue
        seen.add(i)
        stack.extend(g.nodes[i].inputs)
    return sorted(seen)


def is_norm_node(n: Node) -> bool:
    """A normalization layer or a functional norm with a weight."""
    return (n.kind == "layer" and bool(n.info.get("norm"))) or (n.kind == "norm" and bool(n.weights))


def is_dense(n: Node) -> bool:
    """A weight layer: a ``Linear``/convolution/``MultiheadAttention`` call, or a functional
    linear map of a parameter (``F.linear``, ``addmm`` in GPT-2's ``Conv1D``)."""
    if n.kind == "linear":
        return bool(n.info.get("weight"))
    if n.kind != "layer" or n.info.get("norm"):
        return False
    return isinstance(n.info.get("module"), (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.Bilinear))


def _is_attention(g: Graph, n: Node) -> bool:
    if n.kind == "attention" or (n.kind == "layer" and isinstance(n.info.get("module"), nn.MultiheadAttention)):
        return True
    return n.kind == "softmax" and any(g.nodes[c].kind == "matmul" for c in _through_shapes(g, n.id))


def _through_shapes(g: Graph, nid: int) -> list[int]:
    out, stack, seen = [], [nid], set()
    while stack:
        i = stack.pop()
        for c in g.consumers(i):
            if c in seen:
                continue
            seen.add(c)
            n = g.nodes[c]
            if n.kind in ("shape", "fused") or (n.kind == "act" and not n.info.get("chain")):
                stack.append(c)
            elif n.kind == "act" and n.info.get("activation") is not None and n.info["activation"].name == "identity":
                stack.append(c)  # dropout, casts
            else:
                out.append(c)
    return out


def _last_layer(g: Graph, top: int) -> tuple[Node | None, list[str]]:
    """The last weight layer before the sum ``top`` (walking back through reshapes, scalings by
    parameters or constants, added biases, positively homogeneous activations and products
    with attention probabilities) and the activations passed."""
    cur, through = top, []
    for _ in range(10_000):
        n = g.nodes[cur]
        if is_dense(n):
            return n, through
        sig = [i for i in n.inputs if g.nodes[i].data]
        if n.kind == "act":
            act = n.info.get("activation")
            if act is not None and act.name not in ("identity",):
                through.append(act.name if act.name in HOMOGENEOUS else act.label())
            if not sig:
                return None, through
            cur = sig[0]
            continue
        if n.kind in ("shape", "fused", "cat", "scatter", "other") and sig:
            cur = max(sig)
            continue
        if n.kind in ("add", "mul") and len(sig) == 1:
            cur = sig[0]
            continue
        if n.kind == "mul" and len(sig) == 2:
            from ..structure import _from_softmax
            probs = [i for i in sig if _from_softmax(g, i)]
            if len(probs) == 1:
                cur = next(i for i in sig if i not in probs)
                continue
        return None, through
    return None, through


# ----------------------------------------------------------------------------- tensors
def weight_name(n: Node) -> str | None:
    """The weight matrix a dense node applies (``None`` for a fused ``MultiheadAttention``,
    whose tensors :func:`value_names` and the caller name)."""
    if n.kind == "linear":
        return n.info.get("weight")
    module = n.info.get("module")
    if isinstance(module, nn.MultiheadAttention):
        return f"{n.module}.out_proj.weight" if n.module else "out_proj.weight"
    prefix = f"{n.module}." if n.module else ""
    if module is not None and ("weight" in module._parameters or parametrize.is_parametrized(module, "weight")):
        return f"{prefix}weight"  # under this name even when tied to an earlier one
    return None


def fans_of(n: Node, e: PlanEntry) -> tuple[float, float]:
    """``(fan_in, fan_out)`` of the weight ``e`` that dense node ``n`` applies: the recorded
    fans of a functional linear map, else the plan's (per block for fused weights)."""
    if n.kind == "linear" and n.info.get("fans"):
        fi, fo = n.info["fans"]
        return float(fi), float(fo)
    if e.fan_in:
        return float(e.fan_in), float(e.fan_out or e.fan_in)
    shape = tuple(e.shape)
    fi = float(math.prod(shape[1:])) if len(shape) >= 2 else 1.0
    return fi, float(shape[0]) if shape else 1.0


def dense_weights(n: Node) -> list[str]:
    """Every weight matrix of dense node ``n`` (all four of a ``MultiheadAttention``)."""
    module = n.info.get("module")
    if isinstance(module, nn.MultiheadAttention):
        prefix = f"{n.module}." if n.module else ""
        names = [prefix + local for local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
                 if getattr(module, local, None) is not None]
        return names + [prefix + "out_proj.weight"]
    w = weight_name(n)
    return [w] if w else []


def embedding_weights(g: Graph) -> list[tuple[Node, str]]:
    """``(node, weight name)`` of every embedding lookup (``nn.Embedding`` layers, ``F.embedding``
    of a parameter)."""
    out = []
    for n in g.nodes:
        if n.kind == "layer" and isinstance(n.info.get("module"), (nn.Embedding, nn.EmbeddingBag)):
            prefix = f"{n.module}." if n.module else ""
            out.append((n, prefix + "weight"))
        elif n.kind == "embedding" and n.weights:
            out.append((n, n.weights[0]))
    return out


def output_layers(g: Graph) -> list[Node]:
    """Dense nodes whose every use is the model's output (through reshapes and scalings, not
    through a residual sum): the classifier, the language-model head."""
    out, res = [], residual_adds(g)
    for n in g.nodes:
        if is_dense(n):
            uses = consumer(g, n.id, res)
            if uses and all(u.kind == "output" for u in uses):
                out.append(n)
    return out


def entry_of(n: Node, by_name: dict[str, PlanEntry]) -> PlanEntry | None:
    """The entry of the tensor that scales node ``n`` last: a parameter, a norm's weight, a
    dense layer's weight (see :func:`initwise.structure.branch_end`)."""
    if n.kind == "param":
        return by_name.get(n.param)
    if is_norm_node(n):
        return by_name.get(n.weights[0]) if n.weights else None
    if is_dense(n):
        w = weight_name(n)
        return by_name.get(w) if w else None
    named = [w for w in n.weights if w in by_name]
    return by_name[named[0]] if named else None


def value_names(g: Graph, branch: Branch) -> tuple[list[str], list[str], list[str]]:
    """``(values, thirds, fused)``: the weights of the branch's value projections (a layer whose
    output is an attention's value, or is multiplied by attention probabilities), the
    ``in_proj_weight`` of ``nn.MultiheadAttention`` layers (q, k, v stacked in equal thirds of its
    rows, v last), and weights that hold the value projection fused with the query or key in a
    layout initwise cannot split (a recipe that scales the values alone cannot scale them)."""
    values, thirds, fused = [], [], []
    for n in branch.layers:
        module = n.info.get("module")
        if isinstance(module, nn.MultiheadAttention):
            prefix = f"{n.module}." if n.module else ""
            if module.v_proj_weight is not None:
                values.append(prefix + "v_proj_weight")
            else:
                thirds.append(prefix + "in_proj_weight")
            continue
        w = weight_name(n)
        if w is None:
            continue
        kinds = set(_uses(g, n))
        if "value" in kinds:
            (fused if kinds & {"query", "key"} else values).append(w)
    return values, thirds, fused


def _uses(g: Graph, n: Node) -> list[str]:
    """How the output of ``n`` is used: ``"value"``, ``"query"``, ``"key"`` of an attention
    (``F.scaled_dot_product_attention``, or a product with attention probabilities), else the
    :class:`~initwise.structure.Consumer` kind."""
    from ..structure import attention_softmax
    out = []
    for u in consumer(g, n.id):
        src = u.path[-1] if u.path else n.id
        if u.node is not None and u.node.kind == "matmul":
            other = [i for i in u.node.inputs if i != src and g.nodes[i].data]
            if other and attention_softmax(g, other[0]):
                out.append("value")
                continue
            out.append("query" if u.node.inputs and u.node.inputs[0] == src else "key")
            continue
        out.append(u.kind)
    return out


def gated_halves(g: Graph, branch: Branch) -> list[str]:
    """Weights of the branch whose output multiplies an activated signal directly (``w3`` in a
    SwiGLU MLP ``w2(silu(w1 x) * w3 x)``)."""
    out = []
    for n in branch.layers:
        w = weight_name(n)
        if w is None:
            continue
        for u in consumer(g, n.id):
            if u.kind != "product" or u.node is None:
                continue
            src = u.path[-1] if u.path else n.id
            others = [i for i in u.node.inputs if i != src and g.nodes[i].data]
            if others and g.nodes[others[0]].kind == "act" and not _identity(g.nodes[others[0]]):
                out.append(w)
                break
    return out


def _identity(n: Node) -> bool:
    act = n.info.get("activation")
    return act is not None and act.name == "identity"
