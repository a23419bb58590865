"""Where a plan's values go: the check phase of :mod:`initwise.write` and the tensors it writes.

:func:`check_model` looks at every tensor the plan will write before the first write and
raises ``ValueError`` naming the tensor and the fix: inference tensors, expanded views,
parameters that share memory without being the same tensor, tensors on two devices, DTensor
placements other than ``Shard(d)``/``Replicate()``, meta tensors nothing can fill. It returns
a :class:`Targets`, which gives the writer each tensor's destination (the tensor itself, its
DTensor shard and the shard's place in the full tensor, or a new tensor on the target device
for a meta one) and, at the end, puts the new tensors into the model.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Iterable

import torch
from torch import nn

__all__ = ["Targets", "check_model", "dtensor_type"]


def dtensor_type() -> type | None:
    """``torch.distributed.tensor.DTensor`` when that module is loaded (a model holding
    DTensors has loaded it), else ``None``."""
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def _shard(t: torch.Tensor, name: str) -> tuple[torch.Tensor, tuple[slice, ...] | None]:
    """``(local tensor, its box in the full tensor)``; ``(t, None)`` for a plain tensor."""
    dt = dtensor_type()
    if dt is None or not isinstance(t, dt):
        return t, None
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for p in t.placements:
        if not (type(p) is Shard or isinstance(p, Replicate)):
            raise ValueError(f"parameter {name!r} is a DTensor with placement {p}; initwise writes Shard(dim) and "
                             "Replicate() shards: initialize before applying that placement, or keep it")
    shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    with torch.no_grad():
        local = t.to_local()
    if tuple(local.shape) != tuple(shape):
        raise ValueError(f"parameter {name!r}: the local shard has shape {list(local.shape)}, its placement "
                         f"says {list(shape)}")
    return local, tuple(slice(o, o + s) for o, s in zip(offset, shape))


def _self_overlapping(t: torch.Tensor) -> bool:
    """True when two elements of ``t`` may share a memory location (an ``expand``-ed view):
    the dims sorted by stride must each step over the whole extent of the previous ones."""
    if t.is_contiguous():
        return False
    extent = 1  # elements spanned by the dims seen so far
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride()) if s > 1):
        if stride < extent:
            return True
        extent += stride * (size - 1)
    return False


def _span(t: torch.Tensor) -> tuple[int, int] | None:
    """The byte range ``[lo, hi)`` of memory that ``t`` reads (``None`` when empty)."""
    if t.numel() == 0:
        return None
    n = 1 + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
    lo = t.data_ptr()
    return lo, lo + n * t.element_size()


class Targets:
    """The destination of every write (see the module docstring)."""

    def __init__(self, device: torch.device | None, shards: dict[int, tuple[torch.Tensor, Any]],
                 buffers: list[tuple[torch.Tensor, torch.Tensor]], moves: list[torch.Tensor]):
        self.device = device
        self._shards = shards
        self._buffers = buffers
        self._moves = moves
        self._new: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def dest(self, t: torch.Tensor) -> torch.Tensor:
        """The tensor to write for model tensor ``t``: ``t``, or a new one on the device when
        ``t`` is on the meta device (allocated once, in ``t``'s dtype)."""
        if not t.is_meta:
            return t
        got = self._new.get(id(t))
        if got is None:
            got = (t, torch.empty(t.shape, dtype=t.dtype, device=self.device))
            self._new[id(t)] = got
        return got[1]

    def local(self, t: torch.Tensor) -> tuple[torch.Tensor, tuple[slice, ...] | None]:
        """``(tensor to write, its box in the full tensor or None for all of it)``."""
        shard = self._shards.get(id(t))
        return shard if shard is not None else (self.dest(t), None)

    def finish(self, model: nn.Module) -> None:
        """Fill the rebuilt buffers, then put every new tensor into the model in place of its
        meta tensor (and moved buffers in place of the old ones)."""
        with torch.no_grad():
            for old, value in self._buffers:
                self.dest(old).copy_(value)
        pairs = list(self._new.values()) + [(b, b.to(self.device)) for b in self._moves]
        for old, new in pairs:
            if isinstance(old, nn.Parameter):
                new = nn.Parameter(new, requires_grad=old.requires_grad)
            new.__dict__.update(old.__dict__)
            try:
                torch.utils.swap_tensors(old, new)
            except RuntimeError:  # another reference holds it: replace it where the model holds it
                _replace(model, old, new)


def _replace(model: nn.Module, old: torch.Tensor, new: torch.Tensor) -> None:
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for k, v in table.items():
                if v is old:
                    table[k] = new


# ============================================================================= checks
def _device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    try:
        d = torch.device(device)
        torch.empty(0, device=d)
    except (RuntimeError, TypeError, AssertionError) as exc:
        raise ValueError(f"device={device!r} cannot be used here: {str(exc).splitlines()[0]}") from None
    if d.type == "meta":
        raise ValueError("device='meta' would write nothing; pass the device the tensors should live on")
    return d


def _same_place(d: torch.device, want: torch.device) -> bool:
    return d.type == want.type and (want.index is None or d.index in (None, want.index))


def _check_writable(name: str, t: torch.Tensor) -> None:
    if t.layout != torch.strided:
        raise ValueError(f"parameter {name!r} has layout {t.layout}; initwise writes dense tensors: keep it "
                         f"with a rule {{'{name}': 'keep'}}")
    if t.is_inference():
        raise ValueError(f"parameter {name!r} is an inference tensor (made under torch.inference_mode()) and "
                         "cannot be written outside it: build the model outside inference_mode, or replace it "
                         f"with a copy (nn.Parameter(w.clone())) or keep it with a rule {{'{name}': 'keep'}}")
    if _self_overlapping(t):
        raise ValueError(f"parameter {name!r} is an expanded view (shape {list(t.shape)}, stride "
                         f"{list(t.stride())}): several of its elements share one memory location, so it cannot "
                         f"be written element by element; make it a real tensor (nn.Parameter(w.clone())) or "
                         f"keep it with a rule {{'{name}': 'keep'}}")


def _check_overlaps(items: Iterable[tuple[str, torch.Tensor, Any]]) -> list[int]:
    """Refuse tensors that share memory without being the same tensor (naming both); two
    tensors over exactly the same memory (same start, shape, stride, dtype) planned alike are
    tied: the ids of the later ones are returned so they are written once."""
    spans = []
    for name, t, entry in items:
        span = _span(t)
        if span is not None:
            spans.append((span[0], span[1], name, t, entry))
    spans.sort(key=lambda s: (s[0], -s[1]))
    skip: list[int] = []
    reach = None
    for lo, hi, name, t, entry in spans:
        if reach is not None and lo < reach[0]:
            _, oname, ot, oentry = reach
            exact = (lo == ot.data_ptr() and t.shape == ot.shape and t.stride() == ot.stride()
                     and t.dtype == ot.dtype)
            if not exact:
                raise ValueError(f"parameters {oname!r} and {name!r} share memory but are different tensors "
                                 "(one is a view of the other's storage), so writing one changes the other: make "
                                 "them independent (nn.Parameter(w.clone())), tie them (the same nn.Parameter), "
                                 "or keep both")
            if not _alike(entry, oentry):
                raise ValueError(f"parameters {oname!r} and {name!r} are two tensors over the same memory but "
                                 f"the plan gives them different schemes ({_label(oentry)} and {_label(entry)}): "
                                 "tie them (the same nn.Parameter) or give both the same rule")
            skip.append(id(t))
            continue
        if reach is None or hi > reach[0]:
            reach = (hi, name, t, entry)
    return skip


def _alike(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    fields = ("scheme", "distribution", "std", "gain", "shape")
    return all(getattr(a, f) == getattr(b, f) for f in fields) and a.params == b.params


def _label(entry: Any) -> str:
    return "kept" if entry is None or entry.scheme == "keep" else entry.scheme


def check_model(model: nn.Module, jobs: list, deferred: list, tensors: dict[str, torch.Tensor],
                device: str | torch.device | None) -> Targets:
    """The check phase (see the module docstring); returns where each write goes."""
    device = _device(device)
    names = {}
    for n, t in tensors.items():
        names.setdefault(id(t), n)
    entries: dict[int, Any] = {}   # id(tensor) -> the entry writing it (None: written by a parametrization)
    written: list[torch.Tensor] = []
    for job in jobs:
        if job.target is not None:
            entries[id(job.target)] = job.entry
            written.append(job.target)
            for other in getattr(job.entry, "shared_with", ()):  # tied names: the entry writes them too
                if other in tensors and tensors[other] is not job.target:
                    entries.setdefault(id(tensors[other]), job.entry)
        for target, _ in job.writes:
            entries.setdefault(id(target), None)
            written.append(target)
    for entry in deferred:
        entries[id(tensors[entry.name])] = entry
        written.append(tensors[entry.name])

    shards: dict[int, tuple[torch.Tensor, Any]] = {}
    locals_: dict[int, torch.Tensor] = {}
    for n, t in tensors.items():
        if id(t) in locals_:
            continue
        local, box = _shard(t, n)
        locals_[id(t)] = local
        if box is not None:
            shards[id(t)] = (local, box)
            if id(t) in entries and (entries[id(t)] is None or entries[id(t)].scheme == "weight_norm_g"):
                raise ValueError(f"parameter {n!r}: parametrized and weight-norm tensors cannot be DTensors here; "
                                 "initialize before sharding")

    places: dict[str, str] = {}
    for n, t in tensors.items():
        places.setdefault(str(locals_[id(t)].device), n)
    meta = "meta" in places
    real = {d: n for d, n in places.items() if d != "meta"}
    if meta and device is None:
        raise ValueError(f"the model is on the meta device (e.g. {places['meta']!r}): its tensors hold no values. "
                         "Pass device='cpu' or 'cuda' to create and initialize them there in one pass, e.g. "
                         "initwise.init(model, device='cpu', seed=0)")
    if len(real) > 1:
        shown = ", ".join(f"{n!r} on {d}" for d, n in real.items())
        raise ValueError(f"the model's parameters are on {len(real)} devices ({shown}); move the model to one "
                         "device first (model.to(device))")
    if device is not None and real:
        (d, n), = real.items()
        if not _same_place(torch.device(d), device):
            raise ValueError(f"device={str(device)!r} is where meta tensors are created, but parameter {n!r} is "
                             f"on {d}: move the model there first (model.to({str(device)!r})) or leave out device=")
    if meta and shards:
        raise ValueError("a sharded (DTensor) model on the meta device: call model.to_empty(device=...) first "
                         "(FSDP2 tracks its shards), then initwise.init(model)")

    for t in written:
        if not t.is_meta:
            _check_writable(names.get(id(t), "(buffer)"), locals_.get(id(t), t))
    items = [(names[id(t)], locals_[id(t)], entries.get(id(t))) for t in {id(t): t for t in tensors.values()}.values()
             if not locals_[id(t)].is_meta]
    skip = set(_check_overlaps(items))
    if skip:
        keep_jobs = [j for j in jobs if j.target is None or id(j.target) not in skip]
        jobs[:] = keep_jobs

    buffers: list[tuple[torch.Tensor, torch.Tensor]] = []
    moves: list[torch.Tensor] = []
    if meta:
        unfilled = [names[id(t)] for t in {id(t): t for t in tensors.values()}.values()
                    if t.is_meta and id(t) not in entries]
        if unfilled:
            raise ValueError(f"parameter {unfilled[0]!r} is on the meta device but the plan keeps it "
                             f"({len(unfilled)} such): a meta tensor has no values to keep; give it a scheme with "
                             f"a rule, e.g. rules={{'{unfilled[0]}': 'zeros'}}, or build it on a device")
        buffers, moves = _buffers(model, device, {id(t) for t in written})
    return Targets(device, shards, buffers, moves)


# ============================================================================= buffers of meta models
def _buffers(model: nn.Module, device: torch.device,
             written: set[int]) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor]]:
    """Values for the meta buffers (from their module's definition) and the real buffers to
    move to ``device``; ``ValueError`` naming the first buffer initwise cannot rebuild."""
    rebuilt, moves, unknown, seen = [], [], [], set()
    for mname, module in model.named_modules(remove_duplicate=False):
        for local, b in module._buffers.items():
            if b is None or id(b) in seen or id(b) in written:
                continue
            seen.add(id(b))
            name = f"{mname}.{local}" if mname else local
            if not b.is_meta:
                if not _same_place(b.device, device):
                    moves.append(b)
                continue
            value = _rebuild(module, local, b)
            if value is None:
                unknown.append((name, type(module).__name__))
            else:
                rebuilt.append((b, value))
    if unknown:
        name, cls = unknown[0]
        raise ValueError(f"buffer {name!r} of {cls} is on the meta device and initwise cannot rebuild it "
                         f"({len(unknown)} such; it rebuilds BatchNorm statistics and rotary inv_freq): build the "
                         "model with its buffers on a device (only the parameters on meta), or call the module's "
                         "reset_parameters() after model.to_empty(device=...)")
    return rebuilt, moves


def _rebuild(module: nn.Module, local: str, b: torch.Tensor) -> torch.Tensor | None:
    """The value ``module``'s own definition gives buffer ``local`` (``None`` if unknown)."""
    if isinstance(module, nn.modules.batchnorm._NormBase):
        if local == "running_mean":
            return torch.zeros(b.shape, dtype=b.dtype)
        if local == "running_var":
            return torch.ones(b.shape, dtype=b.dtype)
        if local == "num_batches_tracked":
            return torch.zeros(b.shape, dtype=b.dtype)
    if "RotaryEmbedding" in type(module).__name__ and local in ("inv_freq", "original_inv_freq"):
        value = _rope_inv_freq(module)
        if value is not None and tuple(value.shape) == tuple(b.shape):
            return value.to(b.dtype)
    return None


def _rope_inv_freq(module: nn.Module) -> torch.Tensor | None:
    """A transformers rotary embedding's ``inv_freq``, computed on the CPU by the function its
    ``__init__`` uses (``compute_default_rope_parameters`` or ``ROPE_INIT_FUNCTIONS[rope_type]``)."""
    config = getattr(module, "config", None)
    rope_type = getattr(module, "rope_type", "default")
    fn = getattr(module, "rope_init_fn", None)
    if fn is None and rope_type == "default":
        fn = getattr(module, "compute_default_rope_parameters", None)
    if fn is None and type(module).__module__.startswith("transformers"):
        try:
            from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
        except ImportError:
            return None
        fn = ROPE_INIT_FUNCTIONS.get(rope_type)
    if fn is None or config is None:
        return None
    with torch.device("cpu"):
        try:
            out = fn(config)
        except TypeError:
            out = fn(config, torch.device("cpu"))
    value = out[0] if isinstance(out, tuple) else out
    return value if isinstance(value, torch.Tensor) and math.prod(value.shape) > 0 else None
