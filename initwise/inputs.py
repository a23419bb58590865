"""Example inputs for a model, calling it with them, and leaving it as it was afterwards.

Used by :mod:`initwise.graph` and :mod:`initwise.recorder` (the recorded forward pass) and by diagnose.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, Iterator

import torch
from torch import nn

from . import tree as _tree

__all__ = ["tensors_in", "call_model", "resolve_input", "candidate_inputs", "guesses_for", "preserved", "describe"]


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


def candidate_inputs(model: nn.Module, example_input: Any = None) -> list[tuple[Any, str, bool]]:
    """Inputs to record with, in the order to try them, as ``(input, where it came from,
    guessed)``: the given one alone; else a transformers model's ``dummy_inputs``, an input made
    for its ``main_input_name`` from its config (``pixel_values``, ``input_features``,
    ``input_values``), then inputs guessed from its first layers (batch of 2, drawn from a local
    generator, on the model's device). Empty when there is none."""
    if example_input is not None:
        return [(example_input, "the example input", False)]
    device = _device(model)
    out: list[tuple[Any, str, bool]] = []
    dummy = _safe_dummy(model) if getattr(type(model), "dummy_inputs", None) is not None else None
    if isinstance(dummy, Mapping) and dummy:
        out.append(({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in dummy.items()},
                    "the model's dummy_inputs", False))
    main = _main_input(model)
    if main is not None:
        key, x = main
        out.append(({key: x.to(device)}, f"a guessed {key} of shape {tuple(x.shape)}", True))
    out.extend((x, f"a guessed input of shape {tuple(x.shape)}", True) for x in guesses_for(model))
    return out


def resolve_input(model: nn.Module, example_input: Any = None) -> tuple[Any, str]:
    """The first of :func:`candidate_inputs` and where it came from; ``(None, reason)`` when
    there is none."""
    found = candidate_inputs(model, example_input)
    if not found:
        return None, "no example input was given and none could be guessed from the first layer"
    return found[0][0], found[0][1]


def _main_input(model: nn.Module) -> tuple[str, torch.Tensor] | None:
    """A batch of 2 for a transformers model's ``main_input_name``, sized from its config."""
    key = getattr(model, "main_input_name", None)
    config = getattr(model, "config", None)
    if key is None or config is None or key == "input_ids":
        return None
    g = torch.Generator().manual_seed(0)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if key == "pixel_values":
        size = getattr(config, "image_size", 224)
        size = size if isinstance(size, int) else size[0]
        return key, torch.randn(2, getattr(config, "num_channels", 3), size, size, generator=g).to(dtype)
    if key == "input_features":
        frames = 2 * getattr(config, "max_source_positions", 1500)
        return key, torch.randn(2, getattr(config, "num_mel_bins", 80), frames, generator=g).to(dtype)
    if key == "input_values":
        strides = getattr(config, "conv_stride", (320,))
        return key, torch.randn(2, int(math.prod(strides)) * 16, generator=g).to(dtype)
    return None


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
    """Where example inputs go: the device of the model's first parameter (the CPU for a meta
    model: its input is moved to meta after its statistics were read)."""
    first = next(model.parameters(), None)
    if first is None or first.is_meta:
        return torch.device("cpu")
    return first.device


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
def preserved(model: nn.Module, keep_buffers: bool = True,
              modules: list[tuple[str, nn.Module]] | None = None) -> Iterator[None]:
    """Run a block and put the model back: buffers' values (unless ``keep_buffers`` is False:
    a caller that still runs a backward pass restores them after it, since autograd may have
    saved them), every module's train/eval flag, the CPU and CUDA random generators;
    ``ValueError`` if the block changed a parameter. ``modules``: ``model.named_modules()``
    when the caller has it (:mod:`initwise.tree`)."""
    modules = list(model.named_modules()) if modules is None else modules
    buffers = [(b, b.detach().clone()) for b in _tree.buffers(modules) if not b.is_meta] if keep_buffers else []
    flags = [(m, m.training) for _, m in modules]
    named: dict[int, tuple[str, nn.Parameter]] = {}
    for n, p in _tree.named_parameters(modules):  # model.named_parameters(): each under its first name
        named.setdefault(id(p), (n, p))
    versions = [(n, p, p._version) for n, p in named.values() if not p.is_inference()]
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
                if m.training != flag:  # (nn.Module.__setattr__ is slow enough to skip)
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
