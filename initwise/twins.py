"""Recording a model whose tensors cannot run a plain forward pass: on the meta device.

A model built on the meta device (or with only its parameters there, as accelerate's
``init_empty_weights`` leaves it) and a model sharded with DTensor or FSDP2 are recorded with
*meta twins*: for the duration of the recording every parameter and buffer that is not already
meta is replaced by an empty meta tensor of its full shape and dtype (tied tensors by one twin;
a CPU scalar buffer stays, its value read as on the model built normally),
the hooks that torch.distributed installed (FSDP2's all-gathers) are set aside, and the example
input is moved to the meta device after its statistics were read. The forward then computes
shapes only; everything is put back afterwards.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Mapping
from typing import Any, Iterator

import torch
from torch import nn

from . import tree as _tree

__all__ = ["needs_twins", "meta_twins", "to_meta"]


def _dtensor() -> type | None:
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def needs_twins(model: nn.Module, modules: list[tuple[str, nn.Module]] | None = None) -> bool:
    """Whether ``model`` holds a meta tensor or a DTensor (its forward must run on meta);
    ``modules``: ``model.named_modules()`` when the caller has it."""
    dt = _dtensor()
    if modules is None:
        tensors: Any = (*model.parameters(), *model.buffers())
    else:
        tensors = (*_tree.parameters(modules), *_tree.buffers(modules))
    return any(t.is_meta or (dt is not None and isinstance(t, dt)) for t in tensors)


def _distributed(hook: Any) -> bool:
    fn = getattr(hook, "func", hook)
    return (getattr(fn, "__module__", "") or "").startswith("torch.distributed")


@contextlib.contextmanager
def meta_twins(model: nn.Module) -> Iterator[None]:
    """Run a block with every tensor of ``model`` on the meta device (see the module docstring)."""
    twins: dict[int, torch.Tensor] = {}
    saved: list[tuple[dict, str, Any]] = []
    hooks: list[tuple[dict, Any, Any]] = []

    def twin(t: torch.Tensor, param: bool) -> torch.Tensor:
        if id(t) not in twins:
            empty = torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")
            twins[id(t)] = nn.Parameter(empty, requires_grad=t.requires_grad) if param else empty
        return twins[id(t)]

    try:
        for m in model.modules():
            for table, param in ((m._parameters, True), (m._buffers, False)):
                for k, t in list(table.items()):
                    if t is not None and not t.is_meta and not (not param and _cpu_scalar(t)):
                        saved.append((table, k, t))
                        table[k] = twin(t, param)
            for table in (m._forward_pre_hooks, m._forward_hooks):
                for k, h in list(table.items()):
                    if _distributed(h):
                        hooks.append((table, k, h))
                        del table[k]
        yield
    finally:
        for table, k, t in reversed(saved):
            table[k] = t
        for table, k, h in hooks:
            table[k] = h


def _cpu_scalar(t: torch.Tensor) -> bool:
    """A plain 0-dim CPU tensor: as a buffer it stays real in the twins (a meta op takes a CPU
    scalar), so its value is part of the recorded computation (Gemma's embedding scale), as on
    the model built normally."""
    return type(t) is torch.Tensor and t.dim() == 0 and t.device.type == "cpu"


def to_meta(obj: Any) -> Any:
    """``obj`` with every tensor moved to the meta device (tuples, lists, mappings)."""
    if isinstance(obj, torch.Tensor):
        return obj.to("meta")
    if isinstance(obj, Mapping):
        return {k: to_meta(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_meta(v) for v in obj)
    return obj
