"""The forward and backward pass of diagnose, measured by :class:`.measure._Recorder`, with the
default loss; the model is left as it was (training flags, ``requires_grad``, buffers)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import tree as _tree
from .measure import _Recorder
from .results import LayerDiagnosis


def _float_leaves(obj: Any) -> list[torch.Tensor]:
    """Every floating-point tensor in ``obj`` (a tensor, or tuples/lists/dicts of them, nested),
    in order; other leaves (integers, strings, None) are skipped."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        return [t for item in obj for t in _float_leaves(item)]
    return []


def _default_loss(outputs: list[torch.Tensor], targets: torch.Tensor | None) -> torch.Tensor:
    """The default loss on the model's floating-point output tensors ``outputs``: without
    targets, the sum over outputs of each one's mean of squares (every head gets a gradient);
    with targets, cross entropy (integer targets) or MSE (float targets) on the one output."""
    if targets is None:
        loss = outputs[0].float().square().mean()
        for t in outputs[1:]:
            loss = loss + t.float().square().mean()
        return loss
    if len(outputs) != 1:
        shapes = ", ".join(str(tuple(t.shape)) for t in outputs[:6])
        raise ValueError(
            f"the model returned {len(outputs)} output tensors (shapes {shapes}): the default "
            "loss with targets needs exactly one; pass loss_fn=fn, called as fn(output, targets) "
            "with the output as the model returns it, to combine them")
    output = outputs[0]
    if not targets.is_floating_point():
        return F.cross_entropy(output.float(), targets)
    return F.mse_loss(output.float(), targets.float())


def _passes(model: nn.Module, targets: torch.Tensor | None,
            loss_fn: Callable[..., torch.Tensor] | None, layers: list[tuple[str, nn.Module]],
            recorder: _Recorder, forward: Callable[[], Any], after: Callable[[], None] | None = None,
            modules: _tree.Tree | None = None,
            ) -> tuple[float, list[tuple[LayerDiagnosis, list[torch.Tensor]]]]:
    """The forward and backward pass of :func:`diagnose`, recorded by ``recorder``; the model is
    left as it was. ``forward()`` runs the model, recorded (the graph's recorder tells
    ``recorder`` of every call); ``after()`` runs between the forward and the backward pass;
    ``modules``: ``model.named_modules()`` when the caller has it. Returns the loss and the gradients w.r.t.
    each layer's weights."""
    modules = list(model.named_modules()) if modules is None else modules  # one walk, read below
    params = _tree.parameters(modules)
    flags = [p.requires_grad for p in params]
    modes = [(m, m.training) for _, m in modules]
    buffers = [(b, b.detach().clone()) for b in _tree.buffers(modules)]
    try:
        for p in params:
            if p.is_floating_point() or p.is_complex():
                p.requires_grad_(True)
        with torch.enable_grad():
            output = forward()
            if after is not None:
                after()
            if loss_fn is not None:
                loss = loss_fn(output, targets) if targets is not None else loss_fn(output)
            else:
                leaves = _float_leaves(output)
                if not leaves:
                    raise TypeError(f"{type(model).__name__} returned {type(output).__name__} "
                                    "with no floating-point tensor: diagnose needs one to build "
                                    "the default loss; pass loss_fn=fn(output) -> scalar tensor")
                loss = _default_loss(leaves, targets)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError(f"the loss must be a scalar tensor, got {loss!r:.80}")
            layer_params = [(rec, recorder.params[id(m)]) for _, m in layers
                            if (rec := recorder.records.get(id(m))) is not None]
            wanted = [p for _, ps in layer_params for p in ps]
            unique = list({id(p): p for p in wanted}.values())
            if not loss.requires_grad:
                raise ValueError("the loss does not depend on any parameter: check that the "
                                 "model's output is computed from its layers")
            wanted = recorder.grad_inputs()  # layer outputs, residual sums: their gradients
            grads = torch.autograd.grad(loss.reshape(()), unique + wanted, allow_unused=True)
            recorder.take_grads(grads[len(unique):])
            grads = grads[:len(unique)]
        by_id = {id(p): g for p, g in zip(unique, grads)}
        weight_grads = [(rec, [by_id[id(p)] for p in ps if by_id.get(id(p)) is not None])
                        for rec, ps in layer_params]
        loss_value = float(loss.detach())
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        for m, mode in modes:
            if m.training != mode:  # (nn.Module.__setattr__ is slow enough to skip)
                m.training = mode
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
    return loss_value, weight_grads


