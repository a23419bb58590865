"""One plan entry as the writer (:mod:`initwise.write`) reads it: everything it needs from the
entry checked before anything is written (:func:`_check_entry`: a known scheme, finite numbers,
a distribution that agrees with the scheme, blocks, cuts, block gains and padding rows that fit
the shape), and what it reads from the entry while writing (the implied distribution, the
orthogonal blocks, the padding rows).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import streams

if TYPE_CHECKING:  # plan.py imports write.py, which imports this module; the type is only needed for hints
    from .plan import PlanEntry

_RANDOM_FAMILIES = ("xavier", "he", "lecun", "normal", "uniform")
_KNOWN = frozenset({"keep", "zeros", "constant", "normal", "uniform", "small_normal", "small_uniform",
                    "orthogonal", "delta_orthogonal", "weight_norm_g", "centre"}
                   | {f"{f}_{d}" for f in ("xavier", "kaiming", "lecun") for d in (*streams.DISTRIBUTIONS, "orthogonal")})


def _distribution(entry: PlanEntry) -> str:
    """The distribution the scheme name implies (``entry.distribution`` must agree)."""
    s = entry.scheme
    implied = {"normal": "normal", "small_normal": "normal", "uniform": "uniform", "small_uniform": "uniform"}.get(s)
    if implied is None:
        implied = next(d for d in ("truncated_normal", "uniform", "normal", "orthogonal") if s.endswith("_" + d))
    if entry.distribution != implied:
        raise ValueError(f"plan entry {entry.name!r}: scheme {s!r} draws a {implied} distribution but "
                         f"'distribution' says {entry.distribution!r}; make them agree")
    return implied


def _number(entry: PlanEntry, what: str, value: Any, positive: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        need = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"plan entry {entry.name!r}: {what} must be {need}, got {value!r}")
    return float(value)


def _blocks(entry: PlanEntry, rows: int) -> int:
    b = entry.params.get("blocks", 1)
    if not isinstance(b, int) or isinstance(b, bool) or b < 1 or rows % b:
        raise ValueError(f"plan entry {entry.name!r}: blocks={b!r} must be a positive integer dividing the "
                         f"{rows} rows of shape {list(entry.shape)}")
    return b


def _check_entry(entry: PlanEntry) -> None:
    """Everything the writer needs from one entry, checked before anything is written."""
    s, shape = entry.scheme, tuple(entry.shape)
    if s not in _KNOWN:
        raise ValueError(f"plan entry {entry.name!r}: unknown scheme {s!r}")
    if s in ("keep", "zeros", "weight_norm_g"):
        return
    if s == "centre":
        values = entry.params.get("values")
        if values is not None and (not isinstance(values, list) or len(values) != math.prod(shape)):
            raise ValueError(f"plan entry {entry.name!r}: scheme 'centre' needs params.values, a list of "
                             f"{math.prod(shape)} numbers, got {type(values).__name__}")
    elif s == "constant":
        v = entry.params.get("value")
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)):
            raise ValueError(f"plan entry {entry.name!r}: constant needs a finite 'value' in params, got {v!r}")
    elif entry.family in _RANDOM_FAMILIES:
        _distribution(entry)
        _number(entry, "std", entry.std)
        gains = entry.params.get("block_gains")
        if gains is not None:
            if not isinstance(gains, (list, tuple)) or not gains or not shape or shape[0] % len(gains) \
                    or s.endswith("_orthogonal"):
                raise ValueError(f"plan entry {entry.name!r}: block_gains {gains!r} must be a list of gains, one per "
                                 f"equal block of the {shape[0] if shape else 0} rows, of a non-orthogonal draw")
            for k in gains:
                _number(entry, "params.block_gains", k)
        if "cut" in entry.params:
            if _distribution(entry) != "truncated_normal":
                raise ValueError(f"plan entry {entry.name!r}: 'cut' applies to a truncated_normal draw, not "
                                 f"{entry.scheme!r}")
            _number(entry, "params.cut", entry.params["cut"], positive=True)
    elif s == "orthogonal":
        if len(shape) < 2:
            raise ValueError(f"plan entry {entry.name!r}: orthogonal needs 2+ dimensions, got shape {list(shape)}")
        _number(entry, "gain", entry.gain, positive=True)
        _blocks(entry, shape[0])
    elif s == "delta_orthogonal":
        if not 3 <= len(shape) <= 5 or not all(k % 2 for k in shape[2:]):
            raise ValueError(f"plan entry {entry.name!r}: delta_orthogonal needs a convolution weight with odd "
                             f"kernel sizes, got shape {list(shape)}")
        _number(entry, "gain", entry.gain, positive=True)
        _blocks(entry, shape[0])
    pad = entry.params.get("padding_idx")
    if pad is not None:
        rows = shape[0] if shape else 0
        pads = pad if isinstance(pad, (list, tuple)) else [pad]
        if not all(isinstance(p, int) and not isinstance(p, bool) and -rows <= p < rows for p in pads):
            raise ValueError(f"plan entry {entry.name!r}: padding_idx {pad!r} must be row indices in "
                             f"[-{rows}, {rows})")


def _padding_rows(entry: PlanEntry) -> list[int]:
    pad = entry.params.get("padding_idx")
    if pad is None or entry.scheme in ("keep", "zeros"):
        return []
    pads = pad if isinstance(pad, (list, tuple)) else [pad]
    return sorted({p % entry.shape[0] for p in pads})
