"""Statistics of diagnose: spreads across the batch, duplicate units, weight rows, grouping of
same-shaped tensors so that each statistic costs a few tensor operations per shape."""
from __future__ import annotations

import contextlib
import gc
import math
from collections.abc import Iterator, Mapping
from typing import Any, Callable

import torch
from torch import nn

# Elementwise activations recognised in the forward pass, by function name (module
# activations call these too), with how they saturate.
_ACTIVATIONS: dict[str, str | None] = {
    "relu": "relu", "relu6": "relu", "leaky_relu": None, "rrelu": None, "prelu": None, "elu": None,
    "selu": None, "celu": None, "gelu": None, "silu": None, "mish": None, "softplus": None,
    "hardswish": None, "tanh": "tanh", "softsign": "tanh", "hardtanh": "hardtanh",
    "sigmoid": "sigmoid", "hardsigmoid": "sigmoid", "logsigmoid": None,
}
_CHANNEL_FIRST = (nn.modules.conv._ConvNd,)
# The statistics computed inside forward hooks must not go through our own torch-function mode
# (that would cost a Python call per tensor operation); DisableTorchFunction turns modes off.
_quiet = getattr(torch._C, "DisableTorchFunction", contextlib.nullcontext)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block, as it was after (``timeit`` does
    the same). A recorded pass makes many small objects (graph nodes, kept tensors), and each
    collection they trigger walks every object alive, a large model's included (measured on a
    200-layer net: a few percent of diagnose's time on a quiet machine, up to 40% on a loaded
    one). Reference counting still frees what is not cyclic."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


_MAX_DUP_COLUMNS = 1024



def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for item in obj:
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def _layer_params(layer: nn.Module) -> list[nn.Parameter]:
    """The layer's own parameters with >= 2 dims (and the originals of a parametrized weight);
    for a layer initwise knows as one unit (``MultiheadAttention``), those of its parts too."""
    # a layer's own parameters, read from its table: what parameters(recurse=False) yields, faster
    own = [p for p in dict.fromkeys(layer._parameters.values()) if p is not None and p.dim() >= 2]
    if not layer._modules:
        return own
    params = [p for p in layer.parameters() if p.dim() >= 2] if _whole(layer) else own
    parametrizations = getattr(layer, "parametrizations", None)
    if isinstance(parametrizations, nn.ModuleDict):
        for plist in parametrizations.values():
            params += [p for p in plist.parameters() if p.dim() >= 2]
    return params


def _parametric_layers(model: nn.Module, named: list[tuple[str, nn.Module]] | None = None
                       ) -> list[tuple[str, nn.Module]]:
    """Modules owning a parameter of 2+ dims (a parametrized weight belongs to its module, not
    to the ``parametrizations`` container that computes it); ``named``: ``model.named_modules()``
    when the caller has it."""
    from torch.nn.utils.parametrize import ParametrizationList

    named = list(model.named_modules()) if named is None else named
    inner = {id(p) for _, m in named if isinstance(m, ParametrizationList) for p in m.modules()}
    inner |= {id(p) for _, m in named if _whole(m) for p in m.modules() if p is not m}
    return [(name, m) for name, m in named if id(m) not in inner and _layer_params(m)]


def _whole(module: nn.Module) -> bool:
    """A layer whose parts' weights it uses itself (``MultiheadAttention`` calls
    ``out_proj.weight`` in its own forward; the part is never called)."""
    return isinstance(module, (nn.MultiheadAttention, nn.RNNBase))


def _weight(layer: nn.Module, params: list[nn.Parameter]) -> torch.Tensor:
    weight = getattr(layer, "weight", None)
    if not (isinstance(weight, torch.Tensor) and weight.dim() >= 2):
        weight = params[0]
    return weight


def _units(layer: nn.Module, params: list[nn.Parameter], transposed: bool = False) -> int:
    """Number of output units (features, channels) of the layer; ``transposed``: its forward
    reads the 2-D weight as (inputs, outputs) (``x @ W``: GPT-2's ``Conv1D``), units are columns."""
    shape = _weight(layer, params).shape
    if transposed and len(shape) == 2:
        return shape[1]
    if isinstance(layer, (nn.modules.conv._ConvTransposeNd, nn.Embedding)):
        return shape[1] * (getattr(layer, "groups", 1) if isinstance(layer, nn.modules.conv._ConvTransposeNd) else 1)
    return shape[0]


def _weight_rows(layer: nn.Module, params: list[nn.Parameter], transposed: bool = False
                 ) -> tuple[torch.Tensor, int]:
    """The layer's weight as (units, inputs), with the bias appended as a last column, and the
    number of weight columns (``transposed`` as in :func:`_units`)."""
    w = _weight(layer, params).detach()
    if transposed and w.dim() == 2:
        w = w.t()
    elif isinstance(layer, nn.modules.conv._ConvTransposeNd):
        groups = getattr(layer, "groups", 1)
        # (in, out/groups, *k) -> (out, in/groups, *k): unit j of group g reads input block g
        w = torch.cat([blk.transpose(0, 1) for blk in w.chunk(groups, dim=0)], dim=0)
    elif isinstance(layer, nn.Embedding):
        w = w.t()
    rows = w.reshape(w.shape[0], -1)
    n_weight = rows.shape[1]
    bias = getattr(layer, "bias", None)
    if isinstance(bias, torch.Tensor) and bias.dim() == 1 and bias.numel() == rows.shape[0]:
        rows = torch.cat([rows, bias.detach().reshape(-1, 1).to(rows.dtype)], dim=1)
    return rows.float(), n_weight


_DIRECTIONS: dict[int, tuple[torch.Tensor, float]] = {}


def _direction(n: int) -> tuple[torch.Tensor, float]:
    """A fixed vector of ``n`` positive pseudo-random weights in [0.5, 1.5), and its sum
    (cached, CPU)."""
    found = _DIRECTIONS.get(n)
    if found is None:
        gen = torch.Generator(device="cpu").manual_seed(n)
        d = torch.rand(n, generator=gen).add_(0.5)
        found = _DIRECTIONS[n] = (d, float(d.sum()))
    return found


def _duplicate_mask(rows: torch.Tensor, rtol: float,
                    confirm: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
    """Boolean (units,): units whose row equals another unit's row up to ``rtol``, i.e.
    ``max|a - b| <= rtol * max(max|a|, max|b|)``; ``None`` when no unit has a twin.

    Rows are sorted by a fixed random projection ``key = row . d`` (``d`` in [0.5, 1.5)):
    identical rows get equal keys and end up next to each other, and two rows can only be equal
    if their keys differ by at most ``rtol * max|rows| * sum(d)``; only such neighbours are
    compared element by element. O(units x columns), a handful of tensor operations when no
    unit has a twin.

    ``confirm`` (returns units x k, the weight rows when ``rows`` are outputs; called only when
    some rows are equal): two equal rows that are
    constant (spanning no more than ``rtol`` x their scale) count only if their ``confirm``
    rows are equal too: units left with nothing but their bias carry no signal, and equal
    constants are a vanished signal, not a symmetry.
    """
    n = rows.shape[0]
    if n < 2 or rows.shape[1] == 0:
        return None
    direction, total = _direction(rows.shape[1])
    keys, order = torch.sort(rows @ direction.to(device=rows.device, dtype=rows.dtype))
    bound = rtol * float(rows.abs().max()) * total * 1.001
    pairs = (keys.diff().abs() <= bound).nonzero().reshape(-1)
    if pairs.numel() == 0:
        return None
    ia, ib = order[pairs], order[pairs + 1]
    a, b = rows[ia], rows[ib]
    sa, sb = a.abs().amax(dim=1), b.abs().amax(dim=1)
    same = (a - b).abs().amax(dim=1) <= rtol * torch.maximum(sa, sb)
    if confirm is not None:
        varies = (((a.amax(dim=1) - a.amin(dim=1)) > rtol * sa)
                  & ((b.amax(dim=1) - b.amin(dim=1)) > rtol * sb))
        other = confirm()
        ca, cb = other[ia], other[ib]
        same_confirm = (ca - cb).abs().amax(dim=1) <= rtol * torch.maximum(
            ca.abs().amax(dim=1), cb.abs().amax(dim=1))
        same &= varies | same_confirm
    if not bool(same.any()):
        return None
    mask = torch.zeros(n, dtype=torch.bool, device=rows.device)
    mask[ia[same]] = True
    mask[ib[same]] = True
    return mask


def _mean_spread(x: torch.Tensor) -> tuple[float, float]:
    """Mean of ``x`` (batch, units), and its spread: the std over the batch (dim 0) of each
    unit, averaged over units (one layer; :func:`_mean_spreads` does several at once)."""
    means, spreads = _mean_spreads(x.unsqueeze(0))
    return float(means[0]), float(spreads[0])


def _mean_spreads(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For ``x`` (layers, batch, units): the mean of each layer's values, and its spread: the
    std over the batch (dim 1) of each unit, averaged over units. Two tensors of shape (layers,).

    Two passes (centre, then square) as ``Tensor.std`` does, written out because the strided
    reduction of ``x.std(dim=1)`` is several times slower on CPU.
    """
    means = x.mean(dim=1, keepdim=True)
    spreads = (x - means).square_().sum(dim=1).div_(x.shape[1] - 1).sqrt_().mean(dim=1)
    tiny = _underflowed(spreads)
    if tiny is not None:  # squares below float32's range: measure those layers again in float64
        spreads[tiny] = _mean_spreads(x[tiny].double())[1].to(spreads.dtype)
    return means.mean(dim=(1, 2)), spreads


def _underflowed(values: torch.Tensor) -> torch.Tensor | None:
    """Indices of float32 results small enough that squaring may have flushed them towards 0
    (a signal of 1e-29 squares to 1e-58); None when there are none (the usual case)."""
    if values.dtype == torch.float64:
        return None
    idx = (values < 1e-17).nonzero().flatten()
    return idx if idx.numel() else None


def _stds(x: torch.Tensor) -> torch.Tensor:
    """Std (n - 1) over all the elements of each row of ``x`` (rows, n): two passes, as
    ``Tensor.std``; NaN for rows of one element."""
    if x.shape[1] < 2:
        return torch.full(x.shape[:1], math.nan, dtype=x.dtype, device=x.device)
    stds = (x - x.mean(dim=1, keepdim=True)).square_().sum(dim=1).div_(x.shape[1] - 1).sqrt_()
    tiny = _underflowed(stds)
    if tiny is not None:  # as in _mean_spreads: squares below float32's range
        stds[tiny] = _stds(x[tiny].double()).to(stds.dtype)
    return stds


def _output_columns(y: torch.Tensor, cdim: int, limit: int) -> torch.Tensor:
    """(units, <= limit) values of each unit (along ``cdim``) over an even subsample of the batch
    and positions, without copying the whole output."""
    y4 = _sampled_units(y.unsqueeze(0), cdim, limit)
    return y4[0].permute(1, 0, 2).reshape(y4.shape[2], -1)


def _sampled_units(y: torch.Tensor, cdim: int, limit: int) -> torch.Tensor:
    """For ``y`` (layers, batch, ...) with the units along ``cdim`` (a dim of one layer's output):
    (layers, batch', units, positions') with an even subsample of <= ``limit`` (batch',
    positions') pairs, a view when nothing is left out. Unit ``u`` of layer ``l`` has the
    values ``[l, :, u, :]``, which :func:`_output_columns` lays out as one row."""
    n_layers, n, units = y.shape[0], y.shape[1], y.shape[cdim + 1]
    y4 = y.movedim(cdim + 1, 2).reshape(n_layers, n, units, -1)
    n_keep = min(n, limit)
    if n_keep < n:
        y4 = y4[:, torch.linspace(0, n - 1, n_keep, device=y.device).long()]
    p_keep = max(1, limit // n_keep)
    if y4.shape[3] > p_keep:
        y4 = y4[:, :, :, torch.linspace(0, y4.shape[3] - 1, p_keep, device=y.device).long()]
    return y4


def _maybe_duplicates(y4: torch.Tensor, rtol: float, slack: float = 1.002) -> list[int]:
    """The layers in which some unit may have a twin, for ``y4`` from :func:`_sampled_units`
    (layers, batch', units, positions'): the first steps of :func:`_duplicate_mask` on each
    layer's :func:`_output_columns` (projection, sort, comparison of neighbours, with a bound
    ``slack`` times looser), for all layers at once. A layer not listed has no duplicate unit;
    a listed one is checked by :func:`_duplicate_mask` itself."""
    n_layers, n, units, p = y4.shape
    if units < 2 or n * p == 0:
        return []
    direction, total = _direction(n * p)
    direction = direction.to(device=y4.device, dtype=y4.dtype)
    if p == 1:  # (batch,) @ (layers, batch, units): no copy of the transposed columns
        keys = torch.matmul(direction, y4[..., 0])
    else:
        keys = torch.matmul(y4.permute(0, 2, 1, 3).reshape(n_layers, units, -1), direction)
    keys, order = torch.sort(keys, dim=1)
    bound = y4.abs().amax(dim=(1, 2, 3)).mul_(rtol * total * slack)
    li, pi = (keys.diff(dim=1).abs() <= bound.unsqueeze(1)).nonzero(as_tuple=True)
    if li.numel() == 0:
        return []
    cols = y4.permute(0, 2, 1, 3)
    a = cols[li, order[li, pi]].reshape(li.numel(), -1)
    b = cols[li, order[li, pi + 1]].reshape(li.numel(), -1)
    same = (a - b).abs().amax(dim=1) <= rtol * torch.maximum(a.abs().amax(dim=1),
                                                            b.abs().amax(dim=1))
    return sorted(set(li[same].tolist()))


def _weight_twins(layers: list[tuple[nn.Module, list[nn.Parameter], bool]], rtol: float
                  ) -> dict[int, tuple[torch.Tensor, int]]:
    """The layers (indices into ``layers``, (module, params, transposed) triples) whose weight
    rows (:func:`_weight_rows`) may hold a twin, with those rows: :func:`_maybe_duplicates` on
    the rows of same-shaped layers stacked (each row one unit, one position), with a bound 10%
    looser than :func:`_duplicate_mask`'s, which then checks the layers listed."""
    rows = [_weight_rows(module, params, transposed) for module, params, transposed in layers]
    found: dict[int, tuple[torch.Tensor, int]] = {}
    for group in _grouped(list(range(len(rows))), lambda i: (rows[i][0].shape, rows[i][0].device)):
        for chunk in _chunks(group, rows[group[0]][0].numel()):
            stacked = _stack([rows[i][0] for i in chunk])  # (layers, units, columns)
            for j in _maybe_duplicates(stacked.unsqueeze(-1).permute(0, 2, 1, 3), rtol, slack=1.1):
                found[chunk[j]] = rows[chunk[j]]
    return found


def _spreads_of(tensors: dict[Any, torch.Tensor]) -> dict[Any, float]:
    """The spread (:func:`_mean_spread` of ``t`` as (batch, -1), in float32) of each tensor,
    NaN for one without a batch of 2 or more; same-shaped tensors are stacked and measured
    together (a few tensor operations per shape)."""
    out = {key: math.nan for key, t in tensors.items() if t.dim() < 1 or t.shape[0] < 2}
    items = [(key, t) for key, t in tensors.items() if key not in out]
    with torch.no_grad():
        for group in _grouped(items, lambda kt: (kt[1].shape, kt[1].device)):
            for chunk in _chunks(group, group[0][1].numel()):
                x = _stack([t.float().reshape(t.shape[0], -1) for _, t in chunk])
                for (key, _), s in zip(chunk, _mean_spreads(x)[1].tolist()):
                    out[key] = s
    return out


def _stds_of(tensors: dict[Any, torch.Tensor]) -> dict[Any, float]:
    """The std over all elements (:func:`_stds`, float32) of each tensor of two or more
    elements (others are left out); tensors of the same size are stacked and measured together."""
    items = [(key, t) for key, t in tensors.items() if t.numel() >= 2]
    out: dict[Any, float] = {}
    with torch.no_grad():
        for group in _grouped(items, lambda kt: (kt[1].numel(), kt[1].device)):
            for chunk in _chunks(group, group[0][1].numel()):
                stds = _stds(_stack([t.float().reshape(-1) for _, t in chunk]))
                for (key, _), s in zip(chunk, stds.tolist()):
                    out[key] = s
    return out


def _stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    return tensors[0].unsqueeze(0) if len(tensors) == 1 else torch.stack(tensors)


def _chunks(items: list[Any], numel: int) -> Iterator[list[Any]]:
    """``items`` (all of ``numel`` elements) in runs of at most ``_STACK_LIMIT`` elements."""
    per = max(1, _STACK_LIMIT // max(numel, 1))
    for i in range(0, len(items), per):
        yield items[i:i + per]


def _grouped(items: list[Any], key: Callable[[Any], Any]) -> list[list[Any]]:
    groups: dict[Any, list[Any]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return list(groups.values())


# Same-shaped tensors are stacked and measured together, a few layers at a time (at most this
# many elements per stack): a handful of tensor operations for all of them instead of a handful
# per layer.
_STACK_LIMIT = 1 << 18
