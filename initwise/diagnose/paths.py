"""The paths diagnose judges along, read from the recorded graph of the forward pass.

* **Chains of layers**: layer B follows layer A on a chain when B's input is A's output through
  parameter-free operations of one signal only (activations, reshapes, dropout, pooling, a bias
  or a constant scale). A normalization, a sum or product of two signals, a concatenation or an
  attention starts a new chain: siblings (q/k/v, gate/up, the two sides of a
  squeeze-and-excite) are never compared with each other, and a norm resets the scale, so what
  comes before it is not blamed for what comes after.
* **Residual streams** (:func:`initwise.structure.residual_adds` and ``streams``): the stream's
  value after each residual sum, and the branch added there.
* **Roles**: the head (no layer with weights follows it before the output) and the last layer of
  each residual branch, so that a deliberate zero initialization there is named as such.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .. import structure
from ..graph import Graph
from ..nodes import Node

__all__ = ["Paths", "read_paths"]

#: kinds a chain passes through (one signal in, nothing that resets or mixes scales)
_THROUGH = frozenset({"shape", "fused", "act", "reduce", "elementwise"})


@dataclass
class StreamNodes:
    """The graph nodes of one residual stream: ``start`` (its input), and per sum the sum node,
    the branch node and the module the sum runs in."""

    start: int
    adds: list[int]
    branches: list[int]
    blocks: list[str]


@dataclass
class Paths:
    """What diagnose reads from the graph (layer names are the report's layer names)."""

    #: layer name -> the layer before it on its chain (absent: the layer starts a chain)
    previous: dict[str, str] = field(default_factory=dict)
    streams: list[StreamNodes] = field(default_factory=list)
    #: layer name -> "head" or "branch end"
    roles: dict[str, str] = field(default_factory=dict)
    #: layer names whose output goes into a normalization (through reshapes, activations)
    normed: set[str] = field(default_factory=set)
    #: layer names whose output does not depend on the input (graph: ``varies`` is False)
    constant: set[str] = field(default_factory=set)
    #: the nodes whose tensors are measured (residual sums, branches, stream inputs)
    taps: set[int] = field(default_factory=set)
    #: node id -> layer name, for nodes that are a layer's output (no tap needed)
    layer_of: dict[int, str] = field(default_factory=dict)


def _owner(param: str, names: set[str]) -> str | None:
    """The report layer owning parameter ``param``: its longest dotted prefix in ``names``."""
    parts = param.split(".")
    for k in range(len(parts) - 1, -1, -1):
        prefix = ".".join(parts[:k])
        if prefix in names:
            return prefix
    return None


def _layer_nodes(g: Graph, names: list[str]) -> dict[int, str]:
    """Graph node id -> report layer name, for each node that applies a report layer's weight."""
    out: dict[int, str] = {}
    known = set(names)
    for n in g.nodes:
        if n.kind == "layer" and n.module in known:
            out[n.id] = n.module
        elif n.kind in ("linear", "embedding") and n.weights:
            owner = _owner(n.weights[0], known)
            if owner is not None:
                out[n.id] = owner
    return out


def _signals(g: Graph, n: Node) -> list[int]:
    return list(dict.fromkeys(i for i in n.inputs if g.nodes[i].data))


def _through(g: Graph, n: Node) -> bool:
    """Whether a chain passes node ``n`` (one signal in, and nothing that resets the scale)."""
    if len(_signals(g, n)) != 1 or n.weights:
        return False
    if n.kind in _THROUGH:
        return True
    if n.kind in ("add", "mul"):  # a bias or a constant scale
        return all(g.nodes[i].kind == "const" for i in n.inputs if not g.nodes[i].data)
    return False


def _previous_node(g: Graph, n: Node, layer_of: dict[int, str]) -> int | None:
    sig = _signals(g, n)
    if len(sig) != 1:
        return None
    cur = sig[0]
    for _ in range(10_000):
        if cur in layer_of:
            return cur
        node = g.nodes[cur]
        if not _through(g, node):
            return None
        cur = _signals(g, node)[0]
    return None


def _free_to_output(g: Graph, layer_of: dict[int, str]) -> list[bool]:
    """For each node, whether its output reaches a model output without passing a node with
    weights (one sweep backwards over the execution order)."""
    free = [False] * len(g.nodes)
    for i in g.outputs:
        free[i] = True
    for n in reversed(g.nodes):
        if not free[n.id]:
            free[n.id] = any(free[c] and c not in layer_of and not g.nodes[c].weights for c in g.consumers(n.id))
    return free


def _is_norm(n: Node) -> bool:
    return (n.kind == "layer" and bool(n.info.get("norm"))) or n.kind == "norm"


def _feeds(g: Graph, nid: int, target: Callable[[Node], bool]) -> bool:
    """Whether the output of node ``nid`` goes into a node ``target`` accepts, through nodes a
    chain passes."""
    for c in g.consumers(nid):
        n = g.nodes[c]
        if target(n) or (_through(g, n) and _feeds(g, c, target)):
            return True
    return False


def read_paths(g: Graph, names: list[str]) -> Paths:
    """Chains, residual streams, roles and taps of ``g`` for the report layers ``names``."""
    paths = Paths()
    if g.method != "forward":
        return paths
    layer_of = _layer_nodes(g, names)
    paths.layer_of = layer_of
    free = _free_to_output(g, layer_of)
    first: dict[str, int] = {}
    for nid, name in layer_of.items():
        first.setdefault(name, nid)
    for name, nid in first.items():
        node = g.nodes[nid]
        if not node.varies:
            paths.constant.add(name)
        prev = _previous_node(g, node, layer_of)
        if prev is not None and layer_of[prev] != name:
            paths.previous[name] = layer_of[prev]
        if free[nid]:
            paths.roles[name] = "head"
        if _feeds(g, nid, _is_norm):
            paths.normed.add(name)
    residual = structure.residual_adds(g)
    for r in residual.values():
        end, _ = structure.branch_end(g, r.branch)
        if end is not None and end.id in layer_of:
            paths.roles.setdefault(layer_of[end.id], "branch end")
    for s in structure.streams(g, residual):
        if any(_feeds(g, a, lambda n: n.kind == "softmax") for a in s.adds):
            continue  # attention scores plus a mask or a position bias, not a residual stream
        branches = [residual[a].branch for a in s.adds]
        paths.streams.append(StreamNodes(s.start, list(s.adds), branches,
                                         [g.nodes[a].module for a in s.adds]))
        paths.taps.update(nid for nid in (s.start, *s.adds, *branches) if nid not in layer_of)
    return paths
