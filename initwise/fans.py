"""Fan-in and fan-out of weight tensors, for any tensor shape and for the parameters of known layers.

The fan-in of a weight is the number of inputs that are summed, with that weight, into one
output unit; the fan-out is the number of outputs each input unit contributes to. Variance-
preserving initializations (Glorot & Bengio 2010; He et al. 2015) set the weight variance from
these counts, so they must follow what the layer computes, not merely the tensor's shape:

* ``Linear``: weight ``(out, in)`` -> ``fan_in = in``, ``fan_out = out``.
* ``ConvNd``, stride ``s``: weight ``(out, in/groups, *k)`` -> ``fan_in = in/groups * prod(k)``,
  ``fan_out = out/groups * prod(k) / prod(s)``: each output sums ``in/groups * prod(k)`` inputs;
  each input feeds only the ``out/groups`` channels of its group, at ``prod(k/s)`` output
  positions on average (``torch.nn.init`` ignores groups and stride: ``out * prod(k)``).
* ``ConvTransposeNd``, stride ``s``: weight ``(in, out/groups, *k)`` -> ``fan_in = in/groups *
  prod(k) / prod(s)``, ``fan_out = out/groups * prod(k)``: a transposed convolution is the
  gradient of a convolution, so the roles swap; each output position receives ``prod(k/s)``
  kernel taps on average (``torch.nn.init`` reads the first two dimensions as ``(out, in)``,
  swapping the fans, and ignores stride, which makes a stride-2 ``ConvTranspose2d`` 4x too
  small in variance under He). Where ``k/s`` is not whole the fan is that average, a float.
* ``Embedding``: weight ``(num_embeddings, dim)`` is a ``Linear`` fed by a one-hot vector, so each
  output element reads exactly one weight: ``fan_in = 1``, ``fan_out = dim``. Variance
  ``1/fan_in = 1`` is why ``N(0, 1)`` is the right embedding initialization.
* ``RNN``/``LSTM``/``GRU``: ``weight_ih_l*`` ``(gates*hidden, input)`` and ``weight_hh_l*``
  ``(gates*hidden, hidden)`` stack 1/4/3 independent gate matrices; fans are those of one gate
  block: ``fan_in = input`` (or ``hidden``), ``fan_out = hidden``. ``weight_hr_l*`` (LSTM
  projection) is a plain ``(proj, hidden)`` matrix.
* ``MultiheadAttention``: ``in_proj_weight`` ``(3*E, E)`` stacks the q, k and v projections:
  ``fan_in = E``, ``fan_out = E`` per block.

:func:`effective_fan_in` is the fan-in the signal sees (:mod:`initwise.propagate`): the inputs a
``Linear``/``Conv`` output sums on average, without the kernel taps that fall in zero padding.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["effective_fan_in", "fans", "param_blocks"]

_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
_CELL_GATES = {nn.RNNCell: 1, nn.LSTMCell: 4, nn.GRUCell: 3}


def _shape_of(tensor_or_shape: torch.Tensor | Sequence[int]) -> tuple[int, ...]:
    if isinstance(tensor_or_shape, torch.Tensor):
        return tuple(tensor_or_shape.shape)
    if isinstance(tensor_or_shape, torch.Size) or (
        isinstance(tensor_or_shape, Sequence) and all(isinstance(d, int) for d in tensor_or_shape)
    ):
        return tuple(int(d) for d in tensor_or_shape)
    raise TypeError(
        f"fans() expects a tensor or a shape (a sequence of ints), got {type(tensor_or_shape).__name__}"
    )


def _param_name(layer: nn.Module, tensor: torch.Tensor | Sequence[int], name: str | None) -> str:
    """The local name of ``tensor`` among ``layer``'s own parameters (or ``name`` if given)."""
    if name is not None:
        return name.rsplit(".", 1)[-1]
    if isinstance(tensor, torch.Tensor):
        for qualified, p in layer.named_parameters():
            parts = qualified.split(".")
            if p is tensor:
                # a parametrized weight lives at parametrizations.<name>.original
                return parts[1] if parts[0] == "parametrizations" else parts[-1]
    raise ValueError(
        f"cannot tell which parameter of {type(layer).__name__} this tensor is: pass the tensor "
        "object itself (layer.weight) or name='weight_hh_l0'"
    )


def param_blocks(layer: nn.Module | None, name: str) -> int:
    """Number of independent blocks stacked along dim 0 of ``layer``'s parameter ``name``.

    4 for LSTM ``weight_ih``/``weight_hh`` (input, forget, cell, output gates), 3 for GRU
    (reset, update, new), 1 for a plain RNN, 3 for ``MultiheadAttention.in_proj_weight``
    (q, k, v) and 1 for everything else.
    """
    local = name.rsplit(".", 1)[-1]
    if local.split("_l")[0] in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        if isinstance(layer, nn.RNNBase):
            return _GATES.get(layer.mode, 1)
        if isinstance(layer, (nn.RNNCell, nn.LSTMCell, nn.GRUCell)):
            return _CELL_GATES[type(layer)]
    if isinstance(layer, nn.MultiheadAttention) and local in ("in_proj_weight", "in_proj_bias"):
        return 3
    return 1


def _count(x: float) -> int | float:
    """``x`` as an int when it is whole (the usual case), else the float."""
    return int(x) if float(x).is_integer() else float(x)


def _generic_fans(shape: tuple[int, ...]) -> tuple[int, int]:
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def fans(
    tensor_or_shape: torch.Tensor | Sequence[int],
    layer: nn.Module | None = None,
    name: str | None = None,
) -> tuple[int | float, int | float]:
    """Return ``(fan_in, fan_out)`` of a weight tensor (see the module docstring for the rules).

    Without ``layer``, the PyTorch layout ``(out, in, *kernel)`` is assumed:
    ``fan_in = in * prod(kernel)``, ``fan_out = out * prod(kernel)``. With ``layer`` (the module
    that owns the tensor), grouped and transposed convolutions, embeddings and fused gate/q-k-v
    blocks get their true fans; ``name`` is the parameter's local name (``"weight_hh_l0"``),
    needed only when a shape rather than the parameter itself is passed.

    Raises ``ValueError`` for tensors with fewer than 2 dimensions (a bias or a norm scale has no
    fan-in/fan-out; initialize it with ``zeros_`` or ``constant_``).
    """
    shape = _shape_of(tensor_or_shape)
    if len(shape) < 2:
        raise ValueError(
            f"fan_in/fan_out need a tensor with at least 2 dimensions, got shape {list(shape)}; "
            "biases and norm scales have no fans: initialize them with zeros_ or constant_"
        )
    if layer is None:
        return _generic_fans(shape)
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module, got {type(layer).__name__}")

    local = _param_name(layer, tensor_or_shape, name)
    receptive = math.prod(shape[2:])
    if isinstance(layer, nn.modules.conv._ConvNd) and local == "weight":
        strides = math.prod(layer.stride)
        if isinstance(layer, nn.modules.conv._ConvTransposeNd):
            return _count(shape[0] // layer.groups * receptive / strides), shape[1] * receptive
        return shape[1] * receptive, _count(shape[0] // layer.groups * receptive / strides)
    if isinstance(layer, (nn.Embedding, nn.EmbeddingBag)) and local == "weight":
        return 1, shape[1]
    blocks = param_blocks(layer, local)
    if blocks > 1:
        if shape[0] % blocks:
            raise ValueError(
                f"{type(layer).__name__}.{local} of shape {list(shape)} should stack {blocks} "
                f"blocks along dim 0, but {shape[0]} is not divisible by {blocks}"
            )
        return shape[1] * receptive, shape[0] // blocks * receptive
    return _generic_fans(shape)


def effective_fan_in(module: nn.Module, in_shape: tuple[int, ...] = ()) -> float:
    """How many inputs a ``Linear``/``Conv`` output sums on average: ``in_features``; for a
    convolution ``in/groups`` times the mean number of kernel taps that fall inside the input
    (zero padding leaves the border outputs fewer), over ``prod(stride)`` for a transposed one."""
    if isinstance(module, nn.Linear) or not isinstance(module, nn.modules.conv._ConvNd):
        return float(getattr(module, "in_features", 1))
    d = len(module.kernel_size)
    taps = 1.0
    spatial = tuple(in_shape[-d:]) if len(in_shape) >= d + 1 else ()
    for i in range(d):
        k, s = module.kernel_size[i], module.stride[i]
        if module.transposed or not spatial or isinstance(module.padding, str):
            taps *= k / (s if module.transposed else 1)
            continue
        taps *= _mean_taps(spatial[i], k, s, module.padding[i], module.dilation[i])
    return module.in_channels / module.groups * taps


def _mean_taps(length: int, k: int, s: int, p: int, dil: int) -> float:
    out = (length + 2 * p - dil * (k - 1) - 1) // s + 1
    if out <= 0:
        return float(k)
    total = sum(sum(1 for j in range(k) if 0 <= o * s - p + j * dil < length) for o in range(min(out, 4096)))
    return total / min(out, 4096)
