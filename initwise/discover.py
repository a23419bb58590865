"""Which activation consumes the output of each layer: a view of the recorded graph.

:func:`discover` records the forward pass once (:func:`initwise.graph.record`) and reports,
for every layer (a known layer module, or a module whose parameter the forward uses in a
linear operation, such as GPT-2's ``Conv1D``), the distinct activations reached from its output
through operations that pass values on (reshapes, indexing, dropout, normalizations, pooling,
concatenations and sums); reaching another layer, the model output or any other operation
records ``"none"`` (the output is used linearly). An activation is whatever elementwise chain
runs there: ``nn.ReLU``, ``F.gelu``, ``0.5*x*(1+tanh(...))`` or ``x * sigmoid(x)``. Layers that end a
residual branch (``h + f(h)``) are listed in ``Discovery.residual``.

When no forward pass can run (no example input given and none can be guessed, or the guessed
one fails), the activations are guessed from declaration order: a :class:`UserWarning` is
issued, and ``method == "order"``, ``fallback`` and every ``via`` say so. A forward pass that
fails with a given ``example_input`` is an error (``ValueError``).
"""
from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .activations import Activation
from .graph import Graph, record
from .inputs import call_model
from .nodes import is_norm, layers
from .structure import branch_end, residual_adds

__all__ = ["Activation", "Discovery", "discover", "activations_of", "one_line", "layers", "is_norm",
           "call_model", "ORDER_GUESS"]

#: Prefix of ``Activation.via`` for activations guessed from module declaration order.
ORDER_GUESS = "guessed from declaration order"

_THROUGH = frozenset({"shape", "fused", "norm", "add", "cat", "reduce", "scatter"})


@dataclass
class Discovery:
    """Result of :func:`discover`: the ``method`` (``"forward"`` or ``"order"``), a ``note``,
    for every layer's qualified name the distinct activations consuming its output, the
    ``fallback`` reason (empty unless ``method == "order"``) and ``residual``: layers whose
    output ends a residual branch -> where the sum was seen."""

    method: str
    consumers: dict[str, tuple[Activation, ...]]
    note: str = ""
    fallback: str = ""
    residual: dict[str, str] = field(default_factory=dict)

    def of(self, layer_name: str) -> tuple[Activation, ...]:
        """Activations consuming ``layer_name``'s output (a sub-layer of a fused layer such as
        ``attn.out_proj`` inherits those of ``attn``)."""
        name = layer_name
        while True:
            if name in self.consumers:
                return self.consumers[name]
            if "." not in name:
                return (Activation("none", via="not reached"),)
            name = name.rsplit(".", 1)[0]


def _walk(g: Graph, nid: int) -> list[Activation]:
    found: list[Activation] = []
    outputs = set(g.outputs)
    stack, seen = [nid], set()
    while stack:
        cur = stack.pop()
        if cur in seen:
            continue
        seen.add(cur)
        if cur in outputs:
            found.append(Activation("none", via="model output"))
        for c in g.consumers(cur):
            n = g.nodes[c]
            if n.kind == "act":
                act = n.info.get("activation")
                if act is None or act.name == "identity" or (act.name == "custom" and _affine(n)):
                    stack.append(c)
                else:
                    found.append(act)
            elif n.kind in _THROUGH or (n.kind == "layer" and n.info.get("norm")) or \
                    (n.kind == "mul" and sum(g.nodes[i].data for i in n.inputs) == 1):
                stack.append(c)
            elif n.kind in ("layer", "linear", "embedding"):
                found.append(Activation("none", via=f"layer '{n.module}'" if n.kind == "layer" else f"{n.op}()"))
            elif n.kind != "fused":
                found.append(Activation("none", via=f"{n.op}()"))
    return list(dict.fromkeys(found)) or [Activation("none", via="output not used")]


def _affine(n: Any) -> bool:
    """A chain of scalar scalings and shifts (``x * 0.5``, ``-x``)."""
    return all(s[1].__name__.strip("_") in ("mul", "rmul", "div", "truediv", "neg", "add", "radd", "sub")
               for s in n.info.get("chain", []))


def activations_of(g: Graph) -> dict[str, tuple[Activation, ...]]:
    """Layer (or module) name -> the distinct activations consuming its output (see the module
    docstring); a layer called several times gets those of every call."""
    out: dict[str, list[Activation]] = {}
    for n in g.nodes:
        if n.kind == "layer" and not n.info.get("norm") or n.kind in ("linear", "embedding"):
            if g.method == "order":
                continue
            out.setdefault(n.module, []).extend(_walk(g, n.id))
    if g.method == "order":
        return _order_consumers(g)
    return {k: tuple(dict.fromkeys(v)) for k, v in out.items()}


def _order_consumers(g: Graph) -> dict[str, tuple[Activation, ...]]:
    out: dict[str, tuple[Activation, ...]] = {}
    for i, n in enumerate(g.nodes):
        if n.kind != "layer" or n.info.get("norm"):
            continue
        act = Activation("none", via="last layer in declaration order")
        for later in g.nodes[i + 1:]:
            if later.kind == "act":
                a = later.info["activation"]
                act = dataclasses.replace(a, via=a.via.split(",")[0])
                break
            if later.kind == "layer" and not later.info.get("norm"):
                act = Activation("none", via=f"next declared layer '{later.module}'")
                break
        out[n.module] = (dataclasses.replace(act, via=f"{ORDER_GUESS}: {act.via}"),)
    return out


def residual_layers(g: Graph) -> dict[str, str]:
    """Layers whose output ends a residual branch -> ``"add()"``."""
    out: dict[str, str] = {}
    for r in residual_adds(g).values():
        end, path = branch_end(g, r.branch)
        if end is None and path:  # the branch ends in an activation: the layer before it
            last = g.nodes[path[-1]] if path else g.nodes[r.branch]
            act = last if last.kind == "act" else g.nodes[r.branch]
            end = g.nodes[act.inputs[0]] if act.kind == "act" and act.inputs else None
        elif end is None and g.nodes[r.branch].kind == "act":
            end = g.nodes[g.nodes[r.branch].inputs[0]]
        while end is not None and end.kind == "layer" and end.info.get("norm") and end.inputs:
            end = g.nodes[end.inputs[0]]  # a norm ends the branch: the layer it normalizes
        if end is not None and end.kind in ("layer", "linear"):
            out.setdefault(end.module, f"{g.nodes[r.add].op}()")
    return out


def discover(model: nn.Module, example_input: Any = None, *, method: str = "auto", graph: Graph | None = None) -> Discovery:
    """Find the activations consuming each layer's output (see the module docstring).

    ``method`` is ``"auto"`` (a recorded forward pass, else declaration order), ``"forward"``
    (a forward pass or an error) or ``"order"``. The model is not modified. ``graph`` reuses a
    recorded graph.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"discover() expects an nn.Module, got {type(model).__name__}")
    if method not in ("auto", "forward", "order", "fx"):
        raise ValueError(f"method must be 'auto', 'forward' or 'order', got {method!r}")
    if method == "order":
        from .graph import _order_graph
        g = _order_graph(model, "declaration order was requested (method='order')")
        return Discovery("order", activations_of(g), f"activations {ORDER_GUESS} (requested)",
                         "declaration order was requested (method='order')")
    g = graph if graph is not None else record(model, example_input)
    if g.method == "order":
        fallback = g.note.split(" because ", 1)[-1]
        if method in ("forward", "fx"):
            raise ValueError(f"cannot record the forward pass of {type(model).__name__}: {fallback}; "
                             "pass example_input (CLI: --input-shape)")
        warn_order(model, fallback)
        note = (f"FALLBACK: activations {ORDER_GUESS}, which cannot see functional calls such as torch.relu, "
                f"because {fallback}; pass example_input (CLI: --input-shape) to follow the data flow")
        return Discovery("order", activations_of(g), note, fallback)
    return Discovery("forward", activations_of(g), g.note, residual=residual_layers(g))


def warn_order(model: nn.Module, fallback: str) -> None:
    """The warning issued when activations are guessed from declaration order."""
    warnings.warn(f"initwise could not follow the data flow of {type(model).__name__}: {fallback}. The activations "
                  f"were {ORDER_GUESS} and may be wrong; pass example_input (a tensor the model accepts; CLI: "
                  "--input-shape) to follow the data flow.", UserWarning, stacklevel=_stacklevel())


def _stacklevel() -> int:
    """Stack level pointing at the first frame outside initwise (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("initwise"):
        frame, level = frame.f_back, level + 1
    return level


def one_line(exc: BaseException, limit: int = 160) -> str:
    """``exc``'s message on one line (white space folded), cut to ``limit`` characters; the
    exception's type name when it has no message. Used for every one-line error report."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
