"""Reading the arguments of a call the graph recorder (:mod:`initwise.recorder`) sees: its tensor
operands, a call's positional arguments, where a linear call's bias sits, a module's own
parameters."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["bias_pos", "numel", "parameters", "positional", "tensors"]


def tensors(objs: Any, found: list[torch.Tensor]) -> list[torch.Tensor]:
    """Append the tensors in ``objs`` (an iterable; nested tuples, lists and dicts) to ``found``,
    depth first, in order (the operands of a call); returns ``found``."""
    for o in objs:
        if isinstance(o, torch.Tensor):
            found.append(o)
        elif isinstance(o, (tuple, list)):
            tensors(o, found)
        elif isinstance(o, dict):
            tensors(o.values(), found)
    return found


def parameters(module: nn.Module) -> Any:
    """``module.parameters()``; for a module without sub-modules, read from its own table
    (the same parameters in the same order, without walking the module tree)."""
    if module._modules:
        return module.parameters()
    return dict.fromkeys(p for p in module._parameters.values() if p is not None)


def positional(args: tuple) -> tuple:
    """A call's positional operands: ``einsum(equation, [a, b])`` -> ``(a, b)`` (the list of
    operands, the equation left out); any other call's arguments as they are."""
    return tuple(args[1]) if len(args) == 2 and isinstance(args[0], str) and isinstance(args[1], (list, tuple)) \
        else tuple(args)


def bias_pos(name: str) -> int:
    """Position of the bias (added term) among a linear call's arguments, -1 if none."""
    return {"linear": 2, "addmm": 0, "baddbmm": 0, "addbmm": 0, "addmv": 0}.get(name, 2 if name.startswith("conv") else -1)


def numel(t: torch.Tensor) -> int:
    """Number of elements of ``t``."""
    return t.numel()
