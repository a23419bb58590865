"""One recorded forward pass of a model, as a small graph that planning, propagation and
diagnose all read.

:func:`record` runs the model once on an example input (the one given, else a transformers
model's ``dummy_inputs``, else an input guessed from the first layer) under ``torch.no_grad()``
and a :class:`~torch.overrides.TorchFunctionMode` that sees every torch function and tensor
method, with forward hooks on the layers initwise knows (``Linear``, ``Conv*``, ``Embedding``,
``RNN``/``LSTM``/``GRU``, ``MultiheadAttention``, normalization layers, ``PReLU``: each call is one
``layer`` node; what runs inside is not recorded). Everything else is recorded operation by
operation (kinds in :mod:`initwise.ops`), so the weights of layers initwise does not know are
seen where the forward uses them (``torch.addmm(b, x, W)`` in GPT-2's ``Conv1D``, ``F.linear(x,
experts[e])`` in fused mixture-of-experts layers). Chains of pointwise operations on one tensor
(``0.5*x*(1+tanh(...))``, ``x*sigmoid(x)``, ``relu(x)**2``) are fused into one ``act`` node that can
be evaluated on any tensor (:meth:`Node.phi`).

Node ids are positions in :attr:`Graph.nodes`, which are in execution order, so every node's
inputs come before it. The model is left as it was: buffers, train/eval flags and the CPU and
CUDA random generators are restored, and a forward that changes a parameter is an error. A
model on the meta device is recorded with meta tensors (shapes, no values).

:class:`Node` and the known layers are in :mod:`initwise.nodes`, the recorder itself in
:mod:`initwise.recorder`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from . import tree as _tree
from .activations import Activation, of_module
from .fusion import fuse as _fuse
from .inputs import candidate_inputs, describe
from .nodes import Node, layers
from .recorder import _run
from .tree import Tree

__all__ = ["Graph", "Node", "record", "record_pass"]


@dataclass
class Graph:
    """The recorded forward pass: ``nodes`` in execution order, ``outputs`` (ids of the model's
    output tensors), ``params`` (every parameter's qualified name -> the names it is known
    by, tied first), ``method`` (``"forward"``, or ``"order"`` when no forward pass could run)
    ``note`` (which input was used, or why the forward pass failed) and ``modules`` (every
    called module's qualified name -> the node of its output, at its last call)."""

    nodes: list[Node]
    outputs: tuple[int, ...]
    params: dict[str, tuple[str, ...]]
    method: str = "forward"
    note: str = ""
    modules: dict[str, int] = field(default_factory=dict)
    _consumers: list[list[int]] | None = field(default=None, repr=False)
    #: results of pure functions of one activation (its edge-of-chaos fixed point), by a key that
    #: names the activation exactly: a model repeats the same activation in every block
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def consumers(self, nid: int) -> list[int]:
        """Ids of the nodes that read node ``nid``'s output, in execution order."""
        if self._consumers is None:
            table: list[list[int]] = [[] for _ in self.nodes]
            for n in self.nodes:
                for i in dict.fromkeys(n.inputs):
                    table[i].append(n.id)
            self._consumers = table
        return self._consumers[nid]

    def uses(self, param: str) -> list[Node]:
        """The operation nodes that use parameter ``param`` (through any view of it)."""
        return [n for n in self.nodes if param in n.weights]

    def of_kind(self, *kinds: str) -> Iterator[Node]:
        return (n for n in self.nodes if n.kind in kinds)


# ----------------------------------------------------------------------------- entry point
def record(model: nn.Module, example_input: Any = None) -> Graph:
    """Record ``model``'s forward pass on ``example_input`` (see the module docstring).

    Runs in training mode (BatchNorm uses batch statistics, as at the first training step),
    then in eval mode if that fails. Raises ``ValueError`` when a given ``example_input`` does
    not fit the model. When no input is given and neither ``dummy_inputs`` nor a guessed input
    runs, the graph is built from declaration order (``method == "order"``; ``note`` says why).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    tries = candidate_inputs(model, example_input)
    if not tries:
        return _order_graph(model, "no example input was given and none could be guessed from the first layer")
    errors: list[str] = []
    for (inputs, source, guessed), training in [(t, mode) for t in tries for mode in (True, False)]:
        try:
            rec = _run(model, inputs, training, guessed)
        except Exception as exc:  # noqa: BLE001 - try eval mode, the next input, then report
            if isinstance(exc, ValueError) and "changed parameter" in str(exc):
                raise
            message = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
            message = message if example_input is not None or len(tries) == 1 else f"with {source}: {message}"
            if message not in errors:
                errors.append(message)
            continue
        mode = "" if training else " (in eval mode: training mode failed)"
        return Graph(_fuse(rec.nodes, rec.outputs), rec.outputs, _aliases(model, rec.tree),
                     note=f"recorded forward pass with {source}{mode}", modules=rec.module_out)
    error = "; ".join(errors)
    if len(error) > 300:
        error = error[:297] + "..."
    if example_input is not None:
        raise ValueError(f"the forward pass of {type(model).__name__} failed with the given example_input "
                         f"({describe(example_input)}): {error}; pass an example_input the model accepts "
                         "(CLI: --input-shape, batch first)")
    what = tries[0][1] if len(tries) == 1 else ", ".join(t[1] for t in tries)
    return _order_graph(model, f"the forward pass with {what} failed ({error})")


def record_pass(model: nn.Module, inputs: Any, observer: Any = None, stats: bool = True) -> tuple[Graph, Any, dict[int, tuple[torch.Tensor, int]]]:
    """One forward pass of ``model`` on ``inputs`` with gradients enabled, recorded as
    :func:`record` does, in each module's current train/eval mode (diagnose measures in this
    pass). Returns the graph, the model's output (to take a loss and a backward pass) and each
    node's output tensor with its version counter when it was made (a later in-place write
    shows as a newer version). ``observer``: diagnose's measuring, told of every torch call and
    of its layers' calls (:class:`initwise.recorder._Recorder`); ``stats=False`` leaves out the
    statistics only planning reads (the moments of constants, masks, attention probabilities).
    Flags and the random generators are restored after the forward pass, buffers are not (the
    backward pass may need them as the forward left them: the caller restores them after it);
    errors of the model's forward propagate unchanged."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    rec = _run(model, inputs, None, grad=True, observer=observer, stats=stats)
    g = Graph(_fuse(rec.nodes, rec.outputs), rec.outputs, _aliases(model, rec.tree), note="recorded forward pass with the "
              "given inputs", modules=rec.module_out)
    return g, rec.result, rec.tensors


def _aliases(model: nn.Module, tree: Tree | None = None) -> dict[str, tuple[str, ...]]:
    names: dict[int, list[str]] = {}
    for name, p in _tree.named_parameters(_tree.walk(model) if tree is None else tree):
        names.setdefault(id(p), []).append(name)
    return {n[0]: tuple(n) for n in names.values()}


def _order_graph(model: nn.Module, why: str) -> Graph:
    """The last resort: the known layers and activation modules in declaration order, as a
    chain (it cannot see functional calls such as ``torch.relu`` in ``forward``)."""
    nodes: list[Node] = [Node(0, "input", "input", (), (), True)]
    found = layers(model)
    inside: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(s + ".") for s in inside):
            continue
        prev = nodes[-1].id
        if name in found:
            inside.append(name)
            prefix = f"{name}." if name else ""
            nodes.append(Node(len(nodes), "layer", f"{type(module).__name__} '{name}'", (prev,), (), True,
                              module=name, weights=tuple(prefix + n for n, _ in module.named_parameters()),
                              info={"type": type(module).__name__, "module": module, "kwargs": {}}))
            continue
        act = of_module(module, name)
        if act is not None:
            node = Node(len(nodes), "act", act.name, (prev,), (), True, module=name,
                        info={"chain": [], "module": module})
            node.info["activation"] = Activation(act.name, act.params, via=f"{act.via}, {_ORDER}", fn=module)
            nodes.append(node)
    return Graph(nodes, (nodes[-1].id,), _aliases(model), method="order",
                 note=f"{_ORDER} because {why}")


_ORDER = "guessed from declaration order"
