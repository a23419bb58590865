"""How the activation scale evolves with depth under each scheme: the picture behind the schemes.

A ``depth``-layer MLP (``Linear -> activation`` repeated) is fed a batch of
standard-normal inputs; after each layer we record two numbers:

* ``std``: the standard deviation of all activations (every unit, every input). This is the
  scale the schemes' variance argument is about: with a variance-preserving scheme it stays of
  order 1 at every depth; with zero, small or mismatched weights it falls to 0 or grows
  geometrically (Glorot & Bengio 2010, fig. 6; He et al. 2015, fig. 2-3).
* ``spread``: the std of each unit across the batch, averaged over units: how much the
  activations still tell the inputs apart. Even with He init a deep ReLU net slowly maps all
  inputs towards one direction (the correlation between two inputs tends to 1 with depth), so
  this falls slowly, while under a vanishing init it collapses with the scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .api import apply_scheme

__all__ = ["DEMO_SCHEMES", "ProfileRow", "depth_profile", "format_profile"]

#: The schemes the demo compares: label -> registry name ("torch" = PyTorch's default init).
DEMO_SCHEMES: dict[str, str] = {
    "zeros": "zeros",
    "small N(0, 0.01)": "small_normal",
    "xavier_normal": "xavier_normal",
    "he_normal": "kaiming_normal",
    "lecun_normal": "lecun_normal",
    "orthogonal": "orthogonal",
    "torch default": "torch",
}

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "selu": nn.SELU,
                "gelu": nn.GELU, "identity": nn.Identity}


@dataclass(frozen=True)
class ProfileRow:
    """One scheme's activation std and spread after each layer (index 0 = layer 1)."""

    label: str
    scheme: str
    stds: tuple[float, ...]
    spreads: tuple[float, ...]


def _mlp(activation: str, depth: int, width: int) -> nn.Sequential:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), _ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def _batch_std(x: torch.Tensor) -> float:
    """Spread across the batch: std of each unit over the batch, averaged over units."""
    return float(x.std(dim=0).mean())


def depth_profile(
    activation: str,
    schemes: dict[str, str] = DEMO_SCHEMES,
    *,
    depth: int = 50,
    width: int = 256,
    batch: int = 512,
    seed: int = 0,
) -> list[ProfileRow]:
    """Activation std after every layer of a ``depth``-layer ``activation`` MLP, per scheme.

    Every scheme sees the same input batch ``x ~ N(0, I)``; its weights are written by
    ``initwise.apply_scheme(model, scheme, seed=seed)`` (biases zero; ``"torch"`` keeps PyTorch's
    default weights and biases, drawn from the global RNG seeded with ``seed``).
    """
    if depth < 1 or width < 2 or batch < 2:
        raise ValueError(f"need depth >= 1, width >= 2, batch >= 2; got {depth}, {width}, {batch}")
    x = torch.randn(batch, width, generator=torch.Generator().manual_seed(seed))
    rows = []
    for label, scheme in schemes.items():
        torch.manual_seed(seed)
        model = _mlp(activation, depth, width)
        apply_scheme(model, scheme, seed=seed)
        stds, spreads = [], []
        h = x
        with torch.no_grad():
            for layer in model:
                h = layer(h)
                if not isinstance(layer, nn.Linear):
                    stds.append(float(h.std()))
                    spreads.append(_batch_std(h))
        rows.append(ProfileRow(label, scheme, tuple(stds), tuple(spreads)))
    return rows


def format_profile(rows: list[ProfileRow], activation: str, *, depth: int, width: int,
                   at: tuple[int, ...] = (1, 10, 25, 50)) -> str:
    """A plain-text table: activation std after the layers ``at`` (those within ``depth``), the
    factor it changes by per layer, and the spread across the batch after the last layer."""
    cols = [d for d in at if d <= depth] or [depth]
    lines = [
        f"{depth}-layer {activation} MLP, width {width}: std of the activations after layer",
        f"{'scheme':<18}" + "".join(f"{d:>10}" for d in cols) + f"{'per layer':>11}{f'spread@{depth}':>12}",
    ]
    for row in rows:
        first, last = row.stds[0], row.stds[-1]
        ratio = (last / first) ** (1 / (len(row.stds) - 1)) if first > 0 and last > 0 and len(row.stds) > 1 else 0.0
        per_layer = f"x{ratio:.3f}" if ratio else "-"
        lines.append(f"{row.label:<18}" + "".join(f"{row.stds[d - 1]:>10.3g}" for d in cols)
                     + f"{per_layer:>11}{row.spreads[-1]:>12.3g}")
    return "\n".join(lines)
