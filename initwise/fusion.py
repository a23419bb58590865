"""Fusing chains of pointwise operations into one activation node.

A recorded pointwise operation (``tanh``, ``x * 0.5``, ``pow``, ``x * sigmoid(x)``) whose tensor
operands all derive from one tensor, through pointwise operations only, belongs to that tensor's
chain; each chain that leaves the chain (used by anything else, or an output of the model)
becomes one ``act`` node whose inputs are the chain's root, with the chain's steps in
``info["chain"]`` (replayed by :meth:`initwise.nodes.Node.phi`) and its name in
``info["activation"]`` (:mod:`initwise.activations`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import ops
from .activations import Activation, identify, of_call

if TYPE_CHECKING:
    from .nodes import Node

__all__ = ["fuse"]


def fuse(nodes: list[Node], outputs: tuple[int, ...]) -> list[Node]:
    """Replace each chain of pointwise nodes on one root by one ``act`` node (its last node's
    id), keeping the ids of all other nodes; inner nodes of a chain become ``"fused"``."""
    consumers: list[list[int]] = [[] for _ in nodes]
    for n in nodes:
        for i in dict.fromkeys(n.inputs):
            consumers[i].append(n.id)
    root = {n.id: n.info["root"] for n in nodes if n.kind == "elementwise"}
    out_set = set(outputs)
    exits = [n for n in nodes if n.kind == "elementwise" and (
        n.id in out_set or not consumers[n.id] or any(root.get(c) != root[n.id] for c in consumers[n.id]))]
    keep = {n.id for n in exits}
    chains = {}
    named: dict[bytes, tuple[str, dict]] = {}  # identify's answers for this graph, by values
    for e in exits:
        chain, stack = set(), [e.id]
        while stack:
            i = stack.pop()
            if i in chain or root.get(i) != root[e.id]:
                continue
            chain.add(i)
            stack.extend(nodes[i].inputs)
        chains[e.id] = [(i, *nodes[i].info["template"]) for i in sorted(chain)]
    for e in exits:
        steps = chains[e.id]
        act = type(e)(e.id, "act", "+".join(ops.bare(s[1]) for s in steps), (root[e.id],), e.shape, e.varies,
                   module=e.module, info={"chain": steps})
        act.info["activation"] = _name(act, steps, named)
        nodes[e.id] = act
    for n in nodes:
        if n.kind == "elementwise" and n.id not in keep:
            n.kind, n.inputs = "fused", ()
    return nodes


def _name(act: Node, steps: list, cache: dict[bytes, tuple[str, dict]]) -> Activation:
    """The activation an ``act`` node computes (see :mod:`initwise.activations`); ``cache``
    goes to :func:`~initwise.activations.identify`."""
    if len(steps) == 1:
        _, func, args, kwargs = steps[0]
        known = of_call(func, args, kwargs)
        if known is not None:
            return Activation(known.name, known.params, via=known.via, fn=act.phi)
    name, params = identify(act.phi, cache)
    via = act.op if len(steps) <= 3 else f"{len(steps)} pointwise ops"
    return Activation(name, tuple(sorted(params.items())), via=via, fn=act.phi)
