"""Example inputs for a model, calling it with them, and leaving it as it was afterwards.

Used by :mod:`initwise.graph` (the recorded forward pass) and by diagnose.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Iterator

import torch
from torch import nn

__all__ = ["tensors_in", "call_model", "resolve_input", "preserved", "describe"]


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor in ``obj`` (nested tuples, lists, mappings, transformers ``ModelOutput``)."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in tensors_in(v)]
    if isinstance(obj, (tuple, list)):
        return [t for v in obj for t in tensors_in(v)]
    if hasattr(obj, "to_tuple") and callable(obj.to_tuple):
        return tensors_in(obj.to_tuple())
    return []


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping (dict, ``BatchEncoding``), ``model(*inputs)`` for a
    tuple or list, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def resolve_input(model: nn.Module, example_input: Any = None) -> tuple[Any, str]:
    """The input to record with and where it came from: the given one, a transformers model's
    ``dummy_inputs`` (moved to the model's device), or one guessed from the first layer (batch
    of 2, drawn from a local generator). ``(None, reason)`` when there is none."""
    if example_input is not None:
        return example_input, "the example input"
    device = _device(model)
    dummy = getattr(type(model), "dummy_inputs", None) is not None and _safe_dummy(model)
    if isinstance(dummy, Mapping) and dummy:
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in dummy.items()}, \
            "the model's dummy_inputs"
    guesses = guesses_for(model)
    if not guesses:
        return None, "no example input was given and none could be guessed from the first layer"
    return guesses[0].to(device), f"a guessed input of shape {tuple(guesses[0].shape)}"


def guesses_for(model: nn.Module, limit: int = 4) -> list[torch.Tensor]:
    """Inputs that would fit each of the first ``limit`` distinct layers of ``model`` (in
    declaration order, which need not be the order of the forward pass), batch of 2, drawn
    from a local generator seeded with 0, on the model's device."""
    out: list[torch.Tensor] = []
    shapes: set[tuple] = set()
    device = _device(model)
    for module in model.modules():
        x = _guess_one(module)
        if x is not None and (tuple(x.shape), x.dtype) not in shapes:
            shapes.add((tuple(x.shape), x.dtype))
            out.append(x.to(device))
            if len(out) >= limit:
                break
    return out


def _safe_dummy(model: nn.Module) -> Any:
    try:
        return model.dummy_inputs
    except Exception:  # noqa: BLE001 - a broken property means: no dummy inputs
        return None


def _device(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _guess_one(module: nn.Module) -> torch.Tensor | None:
    g = torch.Generator().manual_seed(0)
    weight = next(module.parameters(recurse=False), None)
    if weight is None and not isinstance(module, nn.Embedding):
        return None
    dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
    if isinstance(module, nn.Linear):
        return torch.randn(2, module.in_features, dtype=dtype, generator=g)
    if isinstance(module, nn.modules.conv._ConvNd):
        size = max(16, *(k * 2 for k in module.kernel_size))
        return torch.randn(2, module.in_channels, *([size] * len(module.kernel_size)), dtype=dtype, generator=g)
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return torch.randint(0, module.num_embeddings, (2, 8), generator=g)
    if isinstance(module, nn.RNNBase):
        shape = (2, 5, module.input_size) if module.batch_first else (5, 2, module.input_size)
        return torch.randn(*shape, dtype=dtype, generator=g)
    return None


@contextlib.contextmanager
def preserved(model: nn.Module) -> Iterator[None]:
    """Run a block and put the model back: buffers' values, every module's train/eval flag,
    the CPU and CUDA random generators; ``ValueError`` if the block changed a parameter."""
    buffers = [(b, b.detach().clone()) for b in model.buffers() if not b.is_meta]
    flags = [(m, m.training) for m in model.modules()]
    versions = [(n, p, p._version) for n, p in model.named_parameters()]
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    if b.shape == saved.shape:
                        b.copy_(saved)
            for m, flag in flags:
                m.training = flag
    changed = [n for n, p, v in versions if p._version != v]
    if changed:
        raise ValueError(f"the forward pass of {type(model).__name__} changed parameter {changed[0]!r} in place; "
                         "initwise reads the forward pass and cannot plan a model that rewrites its weights")


def describe(x: Any) -> str:
    """``"a torch.float32 tensor of shape (2, 3)"`` / ``"a tuple of 2 inputs"`` for messages."""
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} inputs"
    if isinstance(x, Mapping):
        return f"keyword inputs {', '.join(map(str, x))}"
    return f"a {type(x).__name__}"
