"""What the recorded graph says about a model's structure: who consumes a layer's output,
where residual streams run and where their branches end, which tensors are summed embeddings.

* :func:`consumer` follows a node's output forward through operations that only move values
  (reshapes, indexing, dropout, identity casts, masks) to what uses it: an activation, another
  layer, the query or key of an attention, a residual sum, a sum of embeddings, a product, a
  normalization or the model's output.
* :func:`residual_adds` finds every sum ``h + f(h)`` whose one operand derives from the other
  (the skip ``h`` and the branch ``f(h)``), and sums of two branches of one tensor (a projection
  shortcut); consecutive sums on one skip path form a stream (:class:`Stream`); a sum whose
  output goes straight into a normalization is post-norm (BERT). :func:`branch_end` walks back
  from a branch to the last node that scales it (a layer, a norm, a parameter it is multiplied
  by), and returns the nodes in between, whose scale follows that node's.
"""
from __future__ import annotations

import heapq

from dataclasses import dataclass, field

from .graph import Graph
from .nodes import Node
from .ops import CASTS

__all__ = ["Consumer", "consumer", "Residual", "Stream", "residual_adds", "streams", "branch_end", "sum_group",
           "is_identity", "PASS_KINDS", "attention_softmax", "slope_at_zero"]

#: Node kinds that move values without changing their scale.
PASS_KINDS = frozenset({"shape", "fused"})


def is_identity(n: Node) -> bool:
    """An ``act`` node that only casts or copies (``x.float()``, ``contiguous``)."""
    act = n.info.get("activation")
    return n.kind == "act" and act is not None and act.name == "identity" and \
        all(s[1].__name__.strip("_") in CASTS for s in n.info.get("chain", []))


def _signals(g: Graph, n: Node) -> list[int]:
    return [i for i in n.inputs if g.nodes[i].data]


def affine_slope(n: Node) -> float | None:
    """The slope of an ``act`` node that only scales and shifts (``x * 0.125``, ``-x``, a cast),
    else None."""
    if n.kind != "act" or not n.info.get("chain"):
        return None
    if not all(s[1].__name__.strip("_") in _AFFINE for s in n.info["chain"]):
        return None
    import torch
    y = n.phi(torch.tensor([0.0, 1.0], dtype=torch.float64))
    return float(y[1] - y[0])


_AFFINE = CASTS | {"mul", "rmul", "div", "truediv", "neg", "add", "radd", "sub", "rsub", "imul", "itruediv", "iadd"}


def slope_at_zero(n: Node) -> float | None:
    """The slope at 0 of an ``act`` node's chain that maps 0 to 0 (a scale, a softcap
    ``c tanh(x / c)``), by a central difference; None for another node or a chain with an offset."""
    if n.kind != "act" or not n.info.get("chain"):
        return None
    import torch
    y = n.phi(torch.tensor([-1e-4, 0.0, 1e-4], dtype=torch.float64))
    return float(y[2] - y[0]) / 2e-4 if abs(float(y[1])) < 1e-12 else None


def _passes(g: Graph, n: Node) -> bool:
    if n.kind in PASS_KINDS or is_identity(n) or affine_slope(n) is not None:
        return True
    if n.kind in ("add", "mul") and len(_signals(g, n)) == 1:
        others = [g.nodes[i] for i in n.inputs if not g.nodes[i].data]
        return all(o.kind == "const" for o in others)
    if (n.kind == "layer" and n.info.get("norm")) or n.kind == "norm":
        return len(_signals(g, n)) == 1
    return False


@dataclass
class Consumer:
    """What uses a node's output (``kind``): ``"act"``, ``"layer"``, ``"query"``, ``"key"``,
    ``"value"``, ``"residual"``, ``"sum"``, ``"product"``, ``"norm"``, ``"output"``, ``"none"``
    or ``"other"``; ``node`` the consuming node (None for the output), ``path`` the nodes
    passed on the way, ``slope`` the product of the scalings passed (``x * d**-0.5``) and
    ``norm`` whether a normalization was passed."""

    kind: str
    node: Node | None = None
    path: list[int] = field(default_factory=list)
    slope: float = 1.0


def consumer(g: Graph, nid: int, residual: dict[int, "Residual"] | None = None) -> list[Consumer]:
    """Every distinct use of node ``nid``'s output (see the module docstring)."""
    found: list[Consumer] = []
    outputs = set(g.outputs)
    stack: list[tuple[int, list[int], float]] = [(nid, [], 1.0)]
    seen: set[int] = set()
    while stack:
        cur, path, slope = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        if cur in outputs:
            found.append(Consumer("output", None, path, slope))
        for c in g.consumers(cur):
            n = g.nodes[c]
            if n.kind == "fused":
                continue
            a = affine_slope(n)
            plain_sum = n.kind == "add" and not (residual and n.id in residual) and sum_group(g, n.id) is None
            if _passes(g, n) or (n.kind == "cat" and not n.weights) or plain_sum:
                stack.append((c, path + [c], slope * (a if a is not None else 1.0)))
                continue
            found.append(Consumer(_use(g, n, cur, residual), n, path, slope))
    return found or [Consumer("none")]


def _use(g: Graph, n: Node, src: int, residual: dict[int, "Residual"] | None) -> str:
    if n.kind == "act":
        return "act"
    if n.kind in ("layer", "linear", "embedding"):
        return "norm" if n.kind == "layer" and n.info.get("norm") else "layer"
    if n.kind == "norm":
        return "norm"
    if n.kind == "attention":
        pos = n.inputs.index(src) if src in n.inputs else _position(g, n, src)
        return ("query", "key", "value")[pos] if pos < 3 else "other"
    if n.kind == "matmul":
        other = [i for i in n.inputs if i != src and g.nodes[i].data]
        if other and attention_softmax(g, other[0]):  # (softmax of q.k) @ v: written out, eager attention
            return "value"
        return "key" if n.inputs and n.inputs[-1] == src else "query"
    if n.kind == "add":
        if residual is not None and n.id in residual:
            return "residual" if residual[n.id].branch == src or _feeds(g, src, residual[n.id].branch) else "skip"
        return "sum"
    if n.kind == "mul":
        return "product"
    if n.kind == "softmax":
        return "output"
    return "other"


def attention_softmax(g: Graph, nid: int) -> Node | None:
    """The softmax whose output node ``nid`` is, passed through reshapes, dropout and elementwise
    steps only (attention probabilities on their way to the values); else None."""
    for _ in range(16):
        n = g.nodes[nid]
        if n.kind == "softmax":
            return n
        sig = [i for i in n.inputs if g.nodes[i].data]
        if n.kind not in ("shape", "act") or len(sig) != 1:
            return None
        nid = sig[0]
    return None


def _position(g: Graph, n: Node, src: int) -> int:
    return 3


def _feeds(g: Graph, a: int, b: int) -> bool:
    """Whether node ``a`` reaches node ``b`` through pass-through nodes only."""
    cur = b
    while True:
        if cur == a:
            return True
        n = g.nodes[cur]
        sig = _signals(g, n)
        if not (_passes(g, n) and len(sig) == 1):
            return False
        cur = sig[0]


def _derives(g: Graph, y: int, x: int) -> bool:
    """Whether node ``y`` depends on node ``x`` (a walk back from ``y`` over ids >= ``x``)."""
    stack, seen = [y], set()
    while stack:
        i = stack.pop()
        if i == x:
            return True
        if i in seen or i < x:
            continue
        seen.add(i)
        stack.extend(g.nodes[i].inputs)
    return False


@dataclass
class Residual:
    """A residual sum: node ``add``, its ``skip`` and ``branch`` operands; ``fork`` when both
    operands are branches of one tensor (a projection shortcut: ``skip`` is the shorter);
    ``post_norm`` when the sum goes straight into a normalization."""

    add: int
    skip: int
    branch: int
    fork: bool = False
    post_norm: bool = False


@dataclass
class Stream:
    """Consecutive residual sums on one skip path (``adds``, in order); ``start`` is the skip
    operand of the first (the stream's input)."""

    adds: list[int]
    start: int


def _weighted_len(g: Graph, nid: int, stop: int) -> int:
    """How many nodes with parameters lie on the single-input path back from ``nid`` to ``stop``."""
    count, cur = 0, nid
    for _ in range(10_000):
        n = g.nodes[cur]
        if cur <= stop or not n.inputs:
            break
        count += bool(n.weights)
        sig = _signals(g, n) or list(n.inputs)
        cur = max(sig)
    return count


def residual_adds(g: Graph) -> dict[int, Residual]:
    """Every residual sum of ``g`` by node id (see :class:`Residual`)."""
    out: dict[int, Residual] = {}
    for n in g.nodes:
        if n.kind != "add":
            continue
        sig = list(dict.fromkeys(_signals(g, n)))
        if len(sig) != 2:
            continue
        a, b = sorted(sig)
        if _derives(g, b, a):
            skip, branch, fork = a, b, False
        elif sum_group(g, n.id) is not None:
            continue
        else:
            common = _common_source(g, a, b)
            if common is None:
                continue
            la, lb = _weighted_len(g, a, common), _weighted_len(g, b, common)
            if la == lb:  # parallel branches of equal depth (or two pieces of one signal): a plain sum
                continue
            skip, branch, fork = (a, b, True) if la <= lb else (b, a, True)
        out[n.id] = Residual(n.id, skip, branch, fork, _feeds_norm(g, n.id))
    # post-norm only when the norm's output carries the stream on to the next sum (BERT); the
    # last sum of a pre-norm stack also feeds a norm (the final one), but nothing follows it
    order = sorted(out)
    for i, add in enumerate(order):
        r = out[add]
        if r.post_norm:
            r.post_norm = any(_through_norm(g, out[later].skip, add) for later in order[i + 1:i + 4])
    return out


def _through_norm(g: Graph, nid: int, add: int) -> bool:
    """Whether node ``nid`` comes from sum ``add`` through a norm and pass-through nodes."""
    cur, seen_norm = nid, False
    for _ in range(10_000):
        if cur == add:
            return seen_norm
        n = g.nodes[cur]
        if (n.kind == "layer" and n.info.get("norm")) or n.kind == "norm":
            seen_norm = True
        elif not (n.kind in PASS_KINDS or is_identity(n)):
            return False
        sig = _signals(g, n)
        if len(sig) != 1:
            return False
        cur = sig[0]
    return False


def _feeds_norm(g: Graph, nid: int) -> bool:
    """Whether every use of node ``nid`` (through reshapes) is a normalization (post-norm)."""
    uses = g.consumers(nid)
    if not uses:
        return False
    for c in uses:
        n = g.nodes[c]
        if n.kind in PASS_KINDS or is_identity(n):
            if not _feeds_norm(g, c):
                return False
        elif not ((n.kind == "layer" and n.info.get("norm")) or n.kind == "norm"):
            return False
    return True


def _common_source(g: Graph, a: int, b: int) -> int | None:
    """The latest node both ``a`` and ``b`` depend on through data nodes.

    Node ids are in execution order, so the walk pops ids from the largest down (one heap for
    both sides): every node reached from a side is labelled before it is popped, and the first
    popped node with both labels is the latest common source."""
    labels = {a: 1, b: 2} if a != b else {a: 3}
    heap = [-a, -b] if a != b else [-a]
    heapq.heapify(heap)
    for _ in range(100_000):
        if not heap:
            return None
        i = -heapq.heappop(heap)
        mark = labels[i]
        if mark == 3:
            return i
        for j in dict.fromkeys(g.nodes[i].inputs):
            if not g.nodes[j].data:
                continue
            if j not in labels:
                labels[j] = mark
                heapq.heappush(heap, -j)
            else:
                labels[j] |= mark
    return None


def streams(g: Graph, residual: dict[int, Residual]) -> list[Stream]:
    """Group residual sums into streams: a sum belongs to the stream of the previous sum its
    skip operand comes from (through pass-through nodes and activations, not norms)."""
    owner: dict[int, Stream] = {}
    out: list[Stream] = []
    for add_id in sorted(residual):
        r = residual[add_id]
        prev = _previous_add(g, r.skip, residual)
        if prev is not None and prev in owner and not residual[prev].post_norm:
            s = owner[prev]
            s.adds.append(add_id)
        else:
            s = Stream([add_id], r.skip)
            out.append(s)
        owner[add_id] = s
    return out


def _previous_add(g: Graph, nid: int, residual: dict[int, Residual]) -> int | None:
    cur = nid
    for _ in range(10_000):
        if cur in residual:
            return cur
        n = g.nodes[cur]
        sig = _signals(g, n)
        if len(sig) != 1 or not (_passes(g, n) or n.kind == "act"):
            return None
        cur = sig[0]
    return None


#: Activations that commute with a positive scale (``phi(k x) = k phi(x)``): a branch that ends
#: in one is scaled through it.
HOMOGENEOUS = frozenset({"relu", "leaky_relu", "identity"})


def branch_end(g: Graph, branch: int) -> tuple[Node | None, list[int]]:
    """The last node that scales a branch, walking back from its output ``branch`` through
    pass-through nodes, positively homogeneous activations (relu, leaky relu: the path then
    holds an ``act`` node), sums of rows (``index_add``) and products with routing weights or
    constants; and the nodes passed (whose scale follows the end's). ``(None, path)`` when the
    branch ends in something else (another activation, a product of two signals)."""
    path: list[int] = []
    cur = branch
    for _ in range(10_000):
        n = g.nodes[cur]
        act = n.info.get("activation") if n.kind == "act" else None
        if act is not None and act.name in HOMOGENEOUS and n.inputs:
            path.append(cur)
            cur = n.inputs[0]
            continue
        if n.weights and n.kind in ("layer", "linear", "mul", "add", "norm"):
            return n, path
        if n.kind == "param":
            return n, path
        sig = _signals(g, n)
        if n.kind == "mul" and len(sig) == 2:
            probs = [i for i in sig if _from_softmax(g, i)]
            if len(probs) == 1:
                path.append(cur)
                cur = next(i for i in sig if i not in probs)
                continue
            return None, path
        if n.kind in ("scatter", "other") and sig:
            path.append(cur)
            cur = max(sig, key=lambda i: g.nodes[i].shape[-1:] == n.shape[-1:])
            continue
        if (_passes(g, n) or n.kind == "cat") and sig:
            path.append(cur)
            cur = sig[0]
            continue
        return None, path
    return None, path


def _from_softmax(g: Graph, nid: int) -> bool:
    cur = nid
    for _ in range(50):
        n = g.nodes[cur]
        if n.kind == "softmax":
            return True
        if not n.inputs:
            return False
        cur = n.inputs[0]
    return False


def _is_source(g: Graph, nid: int) -> bool:
    """An embedding lookup, a parameter, the model input, or a layer applied to the input
    (a patch embedding), reached back through pass-through nodes and concatenations."""
    cur = nid
    for _ in range(10_000):
        n = g.nodes[cur]
        if n.kind in ("input", "param", "embedding"):
            return True
        if n.kind == "layer":
            t = n.info.get("type", "")
            if "Embedding" in t:
                return True
            return all(g.nodes[i].kind in ("input",) or _through_shape_to_input(g, i) for i in n.inputs)
        if n.kind in ("shape", "cat") or is_identity(n):
            sig = [i for i in n.inputs if g.nodes[i].kind != "const"]
            if not sig:
                return False
            cur = sig[0] if n.kind != "cat" else max(sig)
            continue
        return False
    return False


def _through_shape_to_input(g: Graph, nid: int) -> bool:
    cur = nid
    for _ in range(1000):
        n = g.nodes[cur]
        if n.kind == "input":
            return True
        if n.kind != "shape" or not n.inputs:
            return False
        cur = n.inputs[0]
    return False


def sum_group(g: Graph, add_id: int) -> list[int] | None:
    """The operands of a sum of embeddings (token + position + type, patches + position), as
    the nodes that produce them, nested sums flattened; ``None`` if ``add_id`` is not one."""
    n = g.nodes[add_id]
    members: list[int] = []
    for i in n.inputs:
        m = g.nodes[i]
        if m.kind == "const":
            continue
        if m.kind == "add":
            inner = sum_group(g, i)
            if inner is None:
                return None
            members.extend(inner)
        elif _is_source(g, i):
            members.append(i)
        else:
            return None
    return members if len(members) >= 2 else None
