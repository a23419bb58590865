"""Applying a plan: validate everything, then draw and write tensor by tensor.

:func:`apply_plan` (what :meth:`initwise.Plan.apply` and :func:`initwise.init` call) works in
two phases.

1. **Check** (nothing is written): every entry's scheme and numbers, names and shapes against
   the model, every parameter named once, dtypes, inference tensors, expanded (self-overlapping)
   views, parameters that share memory without being the same tensor (refused, naming both,
   unless they are exactly tied and planned alike), tensors on two devices, DTensor placements,
   meta tensors the plan cannot fill. Parametrized weights are computed here (small).
2. **Write**, one tensor at a time, from the streams of :mod:`initwise.streams`: a float32 CPU
   tensor is filled block by block in place, any other dtype or device through one 1 MiB
   float32 buffer, so the extra memory is one block (orthogonal schemes: the float64 matrix of
   one tensor). The values depend only on the seed, the parameter's name and the element's
   index, never on the layout, the number of processes or threads, the dtype or the device.

Meta models (built under ``torch.device("meta")``): with ``device=`` every meta parameter is
allocated once on that device in its dtype and filled there; meta buffers are rebuilt from
their module's definition (BatchNorm running statistics; the rotary ``inv_freq`` of
transformers models, computed on the CPU as at construction), other buffers are moved to the
device. The new tensors replace the meta ones only when all are filled (``torch.utils.
swap_tensors``, so ties and attributes survive): the same bits as a model built normally.
Without ``device=`` a meta model is a ``ValueError``.

An output bias of scheme ``"centre"`` is written from its measured ``params["values"]``
(:mod:`initwise.calibrate`, which :func:`initwise.init` runs on the example input); without them
(a plan from :func:`initwise.plan` applied directly) it is written as 0.

Sharded models (``torch.distributed.tensor`` with ``Shard(d)``/``Replicate()``, FSDP2's
``fully_shard``): each rank writes its local shard from the stream; for ``Shard(0)`` it draws
only its rows. Orthogonal schemes compute the whole matrix on every rank.

A failure after the check phase can only come from the machine (out of memory, interrupt);
the normal path has then written the tensors before it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from . import streams, targets
from .entrycheck import (
    _RANDOM_FAMILIES,
    _blocks,
    _check_entry,
    _distribution,
    _padding_rows,
)

if TYPE_CHECKING:  # plan.py imports this module; the types are only needed for hints
    from .plan import Plan, PlanEntry

__all__ = ["apply_plan", "draw", "write_entry"]

_CHUNK = 4 * streams.BLOCK  # elements drawn at once when a shard or a strided tensor is written by rows


# ============================================================================= writing one tensor
def _full_box(shape: tuple[int, ...]) -> tuple[slice, ...]:
    return tuple(slice(0, s) for s in shape)


def _write_random(local: torch.Tensor, box: tuple[slice, ...], name: str, shape: tuple[int, ...],
                  seed: int, distribution: str, std: float, cut: float = streams.TRUNCATED_CUT) -> None:
    numel = math.prod(shape)
    if numel == 0 or local.numel() == 0:
        return
    rows = box[0] if box else slice(0, 1)
    rowlen = math.prod(shape[1:])
    whole_rows = all(b.start == 0 and b.stop == s for b, s in zip(box[1:], shape[1:]))
    if whole_rows and local.is_contiguous():  # the shard is one range of the flattened tensor
        streams.fill_(local.view(-1), seed, name, numel, rows.start * rowlen, distribution=distribution, std=std,
                      cut=cut)
        return
    step = max(1, _CHUNK // max(rowlen, 1))
    for a in range(rows.start, rows.stop, step):
        b = min(a + step, rows.stop)
        values = streams.draw(seed, name, numel, a * rowlen, b * rowlen, distribution=distribution, std=std, cut=cut)
        local[a - rows.start:b - rows.start].copy_(values.view(b - a, *shape[1:])[(slice(None), *box[1:])])


def _write(entry: PlanEntry, local: torch.Tensor, box: tuple[slice, ...] | None, seed: int) -> None:
    """Write ``entry``'s values into ``local``, the part ``box`` of the full tensor (all of it
    when ``None``), in place under ``no_grad``."""
    shape = tuple(entry.shape)
    box = _full_box(shape) if box is None else box
    s = entry.scheme
    with torch.no_grad():
        if s == "zeros":
            local.zero_()
        elif s == "constant":
            local.fill_(float(entry.params["value"]))
        elif s == "centre" and "values" not in entry.params:  # not measured (plan.apply has no data): 0
            local.zero_()
        elif s == "centre":
            full = torch.tensor(entry.params["values"], dtype=torch.float64).view(shape)
            local.copy_(_narrow(full, local)[box])
        elif entry.family in _RANDOM_FAMILIES and s.endswith("_orthogonal"):
            # the family's variance, drawn as a scaled orthogonal matrix: entries of std
            # gain / sqrt(max(rows, cols)) for singular values all equal to gain
            rows, cols = shape[0], math.prod(shape[1:])
            gain = float(entry.std) * math.sqrt(max(rows, cols))
            q = streams.orthogonal(seed, entry.name, rows, cols, 1, gain)
            local.copy_(_narrow(q, local).view(shape)[box])
        elif entry.family in _RANDOM_FAMILIES:
            cut = float(entry.params.get("cut", streams.TRUNCATED_CUT))
            if entry.std == 0:
                local.zero_()
            elif not box or not entry.params.get("block_gains"):
                _write_random(local, box, entry.name, shape, seed, _distribution(entry), float(entry.std), cut)
            else:  # params.block_gains scale equal blocks of rows (a value projection fused with q and k)
                for rows, k in _row_blocks(entry, box):
                    part = local[rows.start - box[0].start:rows.stop - box[0].start]
                    if k == 0:
                        part.zero_()
                    else:
                        _write_random(part, (rows, *box[1:]), entry.name, shape, seed, _distribution(entry),
                                      float(entry.std) * k, cut)
        elif s == "orthogonal":
            rows, cols = shape[0], math.prod(shape[1:])
            q = streams.orthogonal(seed, entry.name, rows, cols, _blocks(entry, rows), float(entry.gain))
            local.copy_(_narrow(q, local).view(shape)[box])
        elif s == "delta_orthogonal":
            out_ch, in_ch = shape[:2]
            q = streams.orthogonal(seed, entry.name, out_ch, in_ch, _blocks(entry, out_ch), float(entry.gain))
            full = torch.zeros(shape, dtype=torch.float64)
            full[(slice(None), slice(None), *(k // 2 for k in shape[2:]))] = q
            local.copy_(_narrow(full, local)[box])
        for r in _padding_rows(entry):
            if box[0].start <= r < box[0].stop:
                local[r - box[0].start].zero_()


def _row_blocks(entry: PlanEntry, box: tuple[slice, ...]) -> list[tuple[slice, float]]:
    """The rows of ``box`` by block of ``params["block_gains"]`` (equal blocks of rows, each
    drawn with ``std`` times its gain: the same stream, so a block's values are those of the
    whole tensor scaled), or all of them with gain 1."""
    rows, gains = box[0], entry.params["block_gains"]
    per = entry.shape[0] // len(gains)
    out = []
    for b, k in enumerate(gains):
        lo, hi = max(b * per, rows.start), min((b + 1) * per, rows.stop)
        if lo < hi:
            out.append((slice(lo, hi), float(k)))
    return out


def _narrow(q: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """A float64 matrix as ``local`` gets it: exact for float64, else through float32, so that
    every dtype gets the float32 tensor's values rounded."""
    return q if local.dtype == torch.float64 else q.float()


def write_entry(entry: PlanEntry, tensor: torch.Tensor, seed: int) -> None:
    """Write ``entry``'s values for ``seed`` into ``tensor``, in place, as :func:`apply_plan`
    writes a plain tensor of the model (materialized, not sharded, not parametrized)."""
    _check_entry(entry)
    _write(entry, tensor, None, seed)


def draw(entry: PlanEntry, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """A new CPU tensor of ``entry``'s shape with the values ``seed`` gives it (``None`` when
    the entry keeps its values)."""
    _check_entry(entry)
    if entry.scheme in ("keep", "weight_norm_g"):
        return None
    t = torch.empty(tuple(entry.shape), dtype=dtype)
    _write(entry, t, None, seed)
    return t


# ============================================================================= parametrizations
def _parametrized(model: nn.Module) -> dict[str, tuple[nn.Module, str, str]]:
    """Qualified effective name ("fc.weight") -> (owner module, tensor name, owner prefix)."""
    out = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        if parametrize.is_parametrized(module):
            prefix = f"{mname}." if mname else ""
            for pname in module.parametrizations.keys():
                out[prefix + pname] = (module, pname, prefix)
    return out


def _originals(plist: nn.Module) -> list[tuple[str, torch.Tensor]]:
    if getattr(plist, "is_tensor", True) and hasattr(plist, "original"):
        return [("original", plist.original)]
    out, i = [], 0
    while hasattr(plist, f"original{i}"):
        out.append((f"original{i}", getattr(plist, f"original{i}")))
        i += 1
    return out


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two parameter objects over exactly the same memory (planned as one tied tensor)."""
    if a.is_meta or b.is_meta or type(a) is not type(b):
        return False
    return (a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()
            and a.dtype == b.dtype)


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _parametrized_writes(entry: PlanEntry, plist: nn.Module,
                         seed: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The writes that give parametrized tensor ``entry`` the values drawn with ``seed``, and
    the effective tensor the model will then compute.

    Works on a copy of the parametrization list: ``right_inverse`` may update buffers (the
    orthogonal parametrization's ``base``), which are written with the originals, so the model
    is untouched until the plan writes everything. The effective tensor is the copy's forward
    with the new originals (spectral norm rescales, the orthogonal parametrization projects).
    ``right_inverse`` runs on one thread (the same bits for every thread count)."""
    originals = _originals(plist)
    value = draw(entry, seed, _work_dtype(originals[0][1]))
    dry = copy.deepcopy(plist)
    with streams.one_thread():
        new = _right_inverse(dry, value, entry.name)
    writes = []
    for (oname, target), v in zip(originals, new):
        if tuple(v.shape) != tuple(target.shape):
            raise ValueError(f"{entry.name}: right_inverse gave shape {list(v.shape)} for "
                             f"{oname} of shape {list(target.shape)}")
        writes.append((target, v))
    dry_buffers = dict(dry.named_buffers())
    for bname, buffer in plist.named_buffers():
        changed = dry_buffers.get(bname)
        if changed is not None and not changed.is_meta and changed.shape == buffer.shape and (
                buffer.is_meta or not torch.equal(changed, buffer)):
            writes.append((buffer, changed.detach().clone()))
    with torch.no_grad():
        for (oname, _), v in zip(originals, new):
            getattr(dry, oname).copy_(v)
        effective = dry()
    if tuple(effective.shape) != tuple(entry.shape):
        raise ValueError(f"{entry.name}: after right_inverse the parametrization gives shape "
                         f"{list(effective.shape)}, not {list(entry.shape)}; add a rule {{'{entry.name}': 'keep'}}")
    return writes, effective.detach()


def _effective_note(entry: PlanEntry, plist: nn.Module, kinds: str) -> None:
    """When the parametrization changes the drawn values' std by more than 10% (spectral norm
    divides by the top singular value, the orthogonal one projects), say so in ``entry`` with
    the measured std (dry run with seed 0; ``params["effective_std"]``)."""
    if entry.scheme == "keep" or entry.std is None or any(t.is_meta for _, t in _originals(plist)):
        return
    try:
        _, effective = _parametrized_writes(entry, plist, 0)
    except Exception:  # noqa: BLE001 - applying the plan reports the error
        return
    if not torch.isfinite(effective).all():
        entry.reason += (f"; WARNING: {kinds} turns these values into a non-finite effective weight "
                         "(e.g. weight norm of a zero tensor): choose another scheme for it")
        return
    eff = effective.double().std(unbiased=False).item()
    if entry.std > 0 and abs(eff / entry.std - 1) > 0.10:
        entry.params["effective_std"] = float(f"{eff:.6g}")
        entry.reason += (f"; but {kinds} turns the drawn weight (std {entry.std:.3g}) into an effective weight "
                         f"of std {eff:.3g} (measured)")


def _right_inverse(plist: nn.Module, value: torch.Tensor, name: str) -> list[torch.Tensor]:
    with torch.no_grad():
        for module in reversed(list(plist)):
            if not hasattr(module, "right_inverse"):
                raise ValueError(f"{name}: parametrization {type(module).__name__} has no right_inverse, so "
                                 f"initwise cannot set it; add a rule {{'{name}': 'keep'}}")
            value = module.right_inverse(value)
    values = [value] if isinstance(value, torch.Tensor) else list(value)
    return [v.detach().clone() for v in values]


def _effective_shape(module: nn.Module, pname: str) -> torch.Size:
    """Shape of a parametrized tensor, computed with the parametrizations in eval mode so that
    nothing (e.g. spectral norm's power iteration) updates."""
    plist = module.parametrizations[pname]
    flags = [(m, m.training) for m in plist.modules()]
    try:
        plist.eval()
        with torch.no_grad():
            return getattr(module, pname).shape
    finally:
        for m, flag in flags:
            m.training = flag


def _check_shape(entry: PlanEntry, shape: tuple[int, ...]) -> None:
    if tuple(entry.shape) != tuple(shape):
        raise ValueError(f"plan entry {entry.name!r} has shape {list(entry.shape)} but the model's tensor has "
                         f"shape {list(shape)}; was the plan made for another model?")


def _is_lazy(t: torch.Tensor) -> bool:
    return isinstance(t, nn.parameter.UninitializedParameter)


# ============================================================================= the plan
@dataclass
class _Job:
    entry: PlanEntry
    target: torch.Tensor | None = None       # the parameter written (a DTensor for a sharded one)
    writes: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # parametrized


def apply_plan(plan: Plan, model: nn.Module, seed: int | None = None,
               device: str | torch.device | None = None) -> Plan:
    """Write every parameter of ``model`` as ``plan`` says (see the module docstring) and
    return the plan with ``plan.seed`` set. ``seed=None`` draws one from torch's global
    generator (so ``torch.manual_seed`` makes it reproducible). ``device`` is where the meta
    tensors of a model built on the meta device are created (``"cpu"``, ``"cuda"``, ...)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"apply() expects an nn.Module, got {type(model).__name__}")
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    for e in plan:
        if e.scheme == "centre" and "seed" in e.params and e.params["seed"] != seed:
            raise ValueError(f"plan entry {e.name!r} centres {e.params.get('weight')!r} as drawn with seed "
                             f"{e.params['seed']}, not {seed}: apply the plan with seed={e.params['seed']}, or "
                             "re-run initwise.init with the new seed")
    jobs, deferred, tensors = _jobs(plan, model, seed)
    state = targets.check_model(model, jobs, deferred, tensors, device)  # raises before any write
    for job in jobs:
        if job.target is not None:
            local, box = state.local(job.target)
            _write(job.entry, local, box, seed)
        with torch.no_grad():
            for target, value in job.writes:
                state.dest(target).copy_(value)
    for entry in deferred:  # legacy weight_norm magnitudes follow the directions just written
        _write_weight_norm_g(entry, tensors, state)
    state.finish(model)
    plan.seed = seed
    return plan


def _jobs(plan: Plan, model: nn.Module, seed: int) -> tuple[list[_Job], list[PlanEntry], dict[str, torch.Tensor]]:
    """One job per entry written (names, shapes and schemes checked), the weight_norm_g entries
    (written last) and the model's parameters by name."""
    tensors = dict(model.named_parameters(remove_duplicate=False))
    virtual = _parametrized(model)
    covered: set[str] = set()
    jobs: list[_Job] = []
    deferred: list[PlanEntry] = []
    for entry in plan.entries:
        _check_entry(entry)
        names = (entry.name, *entry.shared_with)
        covered.update(names)
        covered.update(entry.writes)
        if entry.writes or entry.name in virtual:
            if entry.name not in virtual:
                raise ValueError(f"plan entry {entry.name!r} is a parametrized weight, but the model has no "
                                 "parametrization there; was the plan made for another model?")
            owner, pname, prefix = virtual[entry.name]
            _check_shape(entry, tuple(_effective_shape(owner, pname)))
            plist = owner.parametrizations[pname]
            originals = _originals(plist)
            covered.update(f"{prefix}parametrizations.{pname}.{o}" for o, _ in originals)
            job = _Job(entry)
            if entry.scheme != "keep":
                job.writes, _ = _parametrized_writes(entry, plist, seed)
            jobs.append(job)
            continue
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"plan entry {missing[0]!r} names no parameter of {type(model).__name__}; "
                             "was the plan made for another model?")
        target = tensors[entry.name]
        untied = [n for n in entry.shared_with if tensors[n] is not target and not _same_view(tensors[n], target)]
        if untied:
            raise ValueError(f"plan entry {entry.name!r} is tied to {untied[0]!r}, but in this model they are "
                             "different tensors (model.to('meta') and to_empty() untie parameters): tie them again "
                             "(e.g. model.tie_weights()) or plan this model")
        if _is_lazy(target):
            if entry.scheme != "keep":
                raise ValueError(f"parameter {entry.name!r} is lazy (not materialized): run a forward pass first")
            continue
        _check_shape(entry, tuple(target.shape))
        if entry.scheme == "weight_norm_g":
            _check_weight_norm_g(entry, tensors)
            deferred.append(entry)
            continue
        if entry.scheme != "keep" and not target.is_floating_point():
            raise ValueError(f"parameter {entry.name!r} has dtype {target.dtype}; only floating-point "
                             "parameters can be initialized: add a rule {'%s': 'keep'}" % entry.name)
        jobs.append(_Job(entry, None if entry.scheme == "keep" else target))
    extra = [n for n in tensors if n not in covered]
    if extra:
        raise ValueError(f"parameter {extra[0]!r} of {type(model).__name__} is not in the plan "
                         f"({len(extra)} missing); was the plan made for another model? Build it with "
                         "initwise.plan(model)")
    return jobs, deferred, tensors


def _check_weight_norm_g(entry: PlanEntry, tensors: Mapping[str, torch.Tensor]) -> None:
    for n in (entry.name, *entry.shared_with):
        if n not in tensors:
            raise ValueError(f"plan entry {n!r} names no parameter of the model; was the plan made for another model?")
    of = entry.params.get("of")
    if of not in tensors:
        raise ValueError(f"plan entry {entry.name!r}: its direction {of!r} is not a parameter of the model")
    dim = entry.params.get("dim", 0)
    v = tensors[of]
    if not isinstance(dim, int) or not -v.dim() - 1 <= dim < v.dim():
        raise ValueError(f"plan entry {entry.name!r}: dim {dim!r} is not a dimension of {of} {list(v.shape)}")
    g_shape = tuple(torch.norm_except_dim(torch.empty(v.shape, device="meta"), 2, dim).shape)
    if g_shape != tuple(tensors[entry.name].shape):
        raise ValueError(f"{entry.name}: ||{of}|| has shape {list(g_shape)}, the magnitude "
                         f"{list(tensors[entry.name].shape)}")


def _write_weight_norm_g(entry: PlanEntry, tensors: Mapping[str, torch.Tensor], state: targets.Targets) -> None:
    """``weight_g = ||weight_v||`` per slice (``torch.norm_except_dim``, on the CPU, one
    thread), from the values ``weight_v`` now holds, so that ``g v / ||v|| = v``."""
    v = state.dest(tensors[entry.params["of"]]).detach()
    with streams.one_thread(), torch.no_grad():
        g = torch.norm_except_dim(v.to("cpu", _work_dtype(v)), 2, int(entry.params.get("dim", 0)))
        state.dest(tensors[entry.name]).copy_(g)

