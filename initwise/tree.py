"""One walk of a model's module tree, read by the steps of a recording (the twins check, the
recorder's names, the hooks, what is restored afterwards) instead of a walk each.

:func:`walk` is ``model.named_modules(remove_duplicate=False)``: every module under every name,
a shared module (and what it holds) once per place it sits. From it, without walking again:
:func:`unique` (as ``named_modules()``), :func:`named_parameters` (as
``model.named_parameters(remove_duplicate=False)``), :func:`parameters` and :func:`buffers` (as
``model.parameters()`` / ``model.buffers()``), all in the same order as torch's own walks. The
tensors are read from the modules when asked, so a walk stays right when they are swapped (the
meta twins of :mod:`initwise.twins`).
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["walk", "unique", "named_parameters", "parameters", "buffers"]

Tree = list[tuple[str, nn.Module]]


def walk(model: nn.Module) -> Tree:
    """``(name, module)`` for every place of every module, depth first (a shared module under
    each of its names)."""
    return list(model.named_modules(remove_duplicate=False))


def unique(tree: Tree) -> Tree:
    """Each module once, under its first name: ``model.named_modules()`` (the places of a
    shared module after its first, and all below them, are repeats)."""
    seen: set[int] = set()
    out = []
    for name, m in tree:
        if id(m) not in seen:
            seen.add(id(m))
            out.append((name, m))
    return out


def named_parameters(tree: Tree) -> list[tuple[str, nn.Parameter]]:
    """``model.named_parameters(remove_duplicate=False)``: a tensor once per module place that
    holds it, as ``prefix.name``."""
    return [(f"{prefix}.{k}" if prefix else k, p) for prefix, m in tree
            for k, p in m._parameters.items() if p is not None]


def parameters(modules: Tree) -> list[nn.Parameter]:
    """``model.parameters()`` (each tensor once, in order) from :func:`unique`'s modules."""
    return list(dict.fromkeys(p for _, m in modules for p in m._parameters.values() if p is not None))


def buffers(modules: Tree) -> list[torch.Tensor]:
    """``model.buffers()`` (each tensor once, in order) from :func:`unique`'s modules."""
    return list(dict.fromkeys(b for _, m in modules for b in m._buffers.values() if b is not None))
