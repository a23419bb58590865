"""Argument checks shared by the tensor functions, the gains and the plan reader.

Each returns the checked value (a ``float`` or an ``int``) or raises ``ValueError`` naming the
function, the argument and the value. A bool is never a number here (``True`` is an ``int`` to
Python, but ``gain=True`` is a mistake), nor is a list, a string or a tensor.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import torch

__all__ = ["number", "integer", "fans_pair", "generator_for", "check_std_fits", "fillable"]

#: Largest seed a ``torch.Generator`` accepts (``manual_seed`` takes 64-bit unsigned values).
MAX_SEED = 2**64 - 1


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, type(None))) and \
        type(value).__name__ != "bool_"


def number(value: Any, name: str, where: str, *, positive: bool = False,
           nonnegative: bool = False) -> float:
    """``value`` as a finite ``float`` (``positive``: > 0, ``nonnegative``: >= 0)."""
    if not _is_real(value):
        hint = " (pass a Python number, e.g. float(t))" if isinstance(value, torch.Tensor) else ""
        raise ValueError(f"{where}: {name} must be a number, got {type(value).__name__} {value!r}{hint}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{where}: {name} must be a finite number, got {value!r}")
    if positive and not v > 0:
        raise ValueError(f"{where}: {name} must be a positive number, got {value!r}")
    if nonnegative and v < 0:
        raise ValueError(f"{where}: {name} must be >= 0, got {value!r}")
    return v


def integer(value: Any, name: str, where: str, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """``value`` as an ``int`` (not a bool, not a float), within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{where}: {name} must be an integer, got {type(value).__name__} {value!r}")
    v = int(value)
    if minimum == 1 and maximum is None and v < 1:
        raise ValueError(f"{where}: {name} must be a positive integer, got {v}")
    if minimum is not None and v < minimum or maximum is not None and v > maximum:
        bounds = (f">= {minimum}" if maximum is None else
                  f"<= {maximum}" if minimum is None else f"from {minimum} to {maximum}")
        raise ValueError(f"{where}: {name} must be {bounds}, got {v}")
    return v


def fans_pair(value: Any, where: str) -> tuple[float, float]:
    """``fans=(fan_in, fan_out)``: two finite positive numbers (fractional fans are allowed:
    a strided transposed convolution has ``in/g * prod(k/s)``)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"{where}: fans must be a pair (fan_in, fan_out), got {value!r}")
    fan_in = number(value[0], "fan_in (fans[0])", where, positive=True)
    fan_out = number(value[1], "fan_out (fans[1])", where, positive=True)
    return (int(fan_in) if fan_in.is_integer() else fan_in,
            int(fan_out) if fan_out.is_integer() else fan_out)


def generator_for(tensor: torch.Tensor, generator: torch.Generator | None, seed: Any,
                  where: str) -> torch.Generator | None:
    """The generator to draw with: ``generator``, or a new one on the tensor's device seeded
    with the integer ``seed`` (``torch.Generator(tensor.device).manual_seed(seed)``), or
    ``None`` (torch's global generator). Both at once is an error."""
    if seed is not None:
        if generator is not None:
            raise ValueError(f"{where}: give seed= or generator=, not both")
        seed = integer(seed, "seed", where, minimum=0, maximum=MAX_SEED)
        return torch.Generator(device=tensor.device).manual_seed(seed)
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{where}: generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != tensor.device.type:
        raise ValueError(f"{where}: the generator is on {generator.device} but the tensor on "
                         f"{tensor.device}; make it with torch.Generator(device={str(tensor.device)!r})")
    return generator


def check_std_fits(std: float, tensor: torch.Tensor, where: str, source: str) -> float:
    """``std`` must be a finite positive float whose samples ``tensor``'s dtype can hold: not
    beyond its largest value (divided by 16, room for the tails) and not below its smallest
    normal number (the samples would round to 0). ``source`` says where ``std`` came from."""
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"{where}: {source} gives std {std!r}; the weights would not be finite, "
                         "non-zero numbers")
    info = torch.finfo(tensor.dtype if tensor.dtype.is_floating_point else torch.float32)
    if std > info.max / 16:
        raise ValueError(f"{where}: {source} gives std {std:.3g}, beyond what {tensor.dtype} holds "
                         f"(max {info.max:.3g}); the weights would overflow to inf")
    if std < info.tiny:
        raise ValueError(f"{where}: {source} gives std {std:.3g}, below {tensor.dtype}'s smallest "
                         f"normal number {info.tiny:.3g}; the weights would round to 0")
    return std


def fillable(tensor: torch.Tensor, what: str) -> bool:
    """Validate ``tensor``; False when there is nothing to fill (meta or empty)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{what} expects a torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise ValueError(
            f"{what} needs a floating-point tensor, got dtype {tensor.dtype} with shape "
            f"{list(tensor.shape)}; weights must be float16, bfloat16, float32 or float64"
        )
    if tensor.device.type == "meta":
        return False
    if tensor.numel() == 0:
        warnings.warn(f"{what}: tensor of shape {list(tensor.shape)} has no elements; left as it is",
                      stacklevel=3)
        return False
    return True
