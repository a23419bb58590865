"""The measuring pass of diagnose: told by the graph's recorder of every layer call and torch
call of the forward pass (activations, in-place writes), it keeps what it measures and taps the
graph's residual sums; statistics after backward."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..nodes import is_layer
from .results import DiagnosisThresholds, LayerDiagnosis
from .stats import (
    _ACTIVATIONS,
    _CHANNEL_FIRST,
    _MAX_DUP_COLUMNS,
    _chunks,
    _duplicate_mask,
    _first_tensor,
    _grouped,
    _layer_params,
    _maybe_duplicates,
    _mean_spreads,
    _output_columns,
    _quiet,
    _sampled_units,
    _stack,
    _stds,
    _units,
    _weight,
    _weight_rows,
    _weight_twins,
)


@dataclass
class _Output:
    """A layer's output, kept (a float copy) until the statistics are computed."""

    rec: LayerDiagnosis
    module: nn.Module
    params: list[nn.Parameter]
    y: torch.Tensor
    cdim: int | None  #: the units' dim, None if the output cannot be split per unit
    version: int = 0  #: ``y._version`` when kept (a later in-place change shows in it)


@dataclass
class _Post:
    """The activation that follows a layer, and its output (a float copy)."""

    rec: LayerDiagnosis
    kind: str | None
    y: torch.Tensor
    bounds: tuple[float, float] | None = None  #: a hardtanh's (min_val, max_val)
    version: int = 0  #: ``y._version`` when kept
    src: torch.Tensor | None = None  #: the activation's output itself (for a gradient hook)


@dataclass
class _Input:
    """A layer's input (batch, -1), kept until the statistics are computed; or ``alias``, the
    kept output or activation output of the previous layer that it is (then nothing is kept)."""

    rec: LayerDiagnosis
    y: torch.Tensor | None
    alias: _Output | _Post | None = None
    version: int = 0


def _same_values(x: torch.Tensor, item: _Output | _Post) -> bool:
    """Whether ``x`` holds the values kept in ``item`` now (same memory, size, batch dim, not
    written since), so that its spread is the one measured there."""
    y = item.y
    return (x.data_ptr() == y.data_ptr() and x.numel() == y.numel() and x.shape[0] == y.shape[0]
            and x.dtype == y.dtype and x._version == item.version and x.is_contiguous()
            and y.is_contiguous())


def _copy(t: torch.Tensor) -> torch.Tensor:
    """A float copy of ``t``."""
    t = t.detach()
    return t.clone() if t.dtype == torch.float32 else t.float()


def _writes_in_place(func: Any, kwargs: dict) -> bool:
    """Whether a torch function call may write into its first argument or ``out``: ``add_``,
    ``__iadd__``, ``__setitem__``, ``F.relu(x, inplace=True)``, ``torch.add(a, b, out=c)``."""
    name = getattr(func, "__name__", "")
    if name.endswith("__"):
        return name.startswith("__i") or name == "__setitem__"
    return name.endswith("_") or kwargs.get("inplace") is True or kwargs.get("out") is not None


def _storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _Recorder:
    """The measuring of diagnose's forward pass: told by the graph's recorder
    (:mod:`initwise.recorder`) of each call of the layers (:meth:`pre_hook`, :meth:`hook`) and of
    every torch call (:meth:`before`, :meth:`after`: activations, in-place writes).

    During the passes it only keeps the tensors to measure (layer outputs,
    activation outputs, gradients w.r.t. the layer outputs); :meth:`measure` computes every
    statistic afterwards, stacking same-shaped tensors of several layers so that the cost is a
    few tensor operations per shape rather than per layer.
    """

    def __init__(self, layers: list[tuple[str, nn.Module]], thresholds: DiagnosisThresholds,
                 n_samples: int, copy: bool = False) -> None:
        # taps: the tensors of graph nodes (residual sums, branches), set after the forward pass
        self.taps: dict[int, torch.Tensor] = {}  # node id -> its tensor (detached)
        self.tap_grads: dict[int, torch.Tensor] = {}  # node id -> gradient w.r.t. it
        self.th = thresholds
        self.n_samples = n_samples
        self.copy = copy
        # kept tensors that are not copies, by storage: copied before an in-place write
        self.shared: dict[int, list[_Output | _Post]] = {}
        self.names = {id(m): name for name, m in layers}
        self.modules = {id(m): m for _, m in layers}
        self.params = {id(m): _layer_params(m) for _, m in layers}  # id(layer) -> its weights
        self.records: dict[int, LayerDiagnosis] = {}
        self.order: list[LayerDiagnosis] = []
        self.transposed: set[int] = set()  # layers whose weight is read as (inputs, outputs)
        self.pending: tuple[LayerDiagnosis, torch.Size] | None = None
        self.outputs: list[_Output] = []
        self.posts: list[_Post] = []
        self.inputs: list[_Input] = []
        self.grads: dict[int, torch.Tensor] = {}  # rec.index -> grad w.r.t. the layer output
        self.grads_in: dict[int, torch.Tensor] = {}  # rec.index -> grad w.r.t. the layer input
        self.grads_post: dict[int, torch.Tensor] = {}  # rec.index -> grad w.r.t. its activation
        #: by storage, the tensors whose gradient the backward pass returns (:meth:`grad_inputs`),
        #: each with where it goes, under which key, and its version when asked for; one about
        #: to be written in place is hooked instead and leaves this table
        self.wanted: dict[int, list[tuple[torch.Tensor, dict[int, torch.Tensor], int, int]]] = {}
        self.rewritten = False  #: one of them was written in place unseen (see :meth:`stale`)

    # -- every torch call of the forward pass (told by the graph's recorder)
    def before(self, func: Any, args: tuple, kwargs: dict) -> None:
        """Before a call runs: copy the kept tensors it is about to write into."""
        if (self.shared or self.wanted) and _writes_in_place(func, kwargs):
            with _quiet():
                self._protect(args[0] if args else None, kwargs.get("out"))

    def after(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """After a call: keep an activation's output if it follows the last layer."""
        if self.pending is not None and isinstance(out, torch.Tensor):
            name = getattr(func, "__name__", "").rstrip("_")
            if name in _ACTIVATIONS:
                with _quiet():
                    rec, shape = self.pending
                    if out.dim() >= 1 and out.shape[0] == shape[0] and out.numel() == shape.numel():
                        self.pending = None
                        self._post_activation(rec, name, out, args, kwargs)

    def tap(self, nid: int, t: torch.Tensor) -> None:
        """Measure graph node ``nid``'s tensor ``t`` (unchanged since it was made): its spread,
        and the gradient w.r.t. it in the backward pass."""
        if not t.is_floating_point():
            return
        self.taps[nid] = t.detach()
        self._want(t, self.tap_grads, nid)

    def _post_activation(self, rec: LayerDiagnosis, name: str, out: torch.Tensor,
                         args: tuple, kwargs: dict) -> None:
        rec.activation = name
        kind = _ACTIVATIONS[name]
        bounds = None
        if kind == "hardtanh":
            bounds = (float(kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)),
                      float(kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)))
        self._keep(_Post(rec, kind, out.detach().reshape(out.shape[0], -1), bounds, src=out))

    def read_transposed(self, names: set[str]) -> None:
        """The layers (by name) whose forward reads their 2-D weight as (inputs, outputs), as
        the recorded graph saw it (``x @ W``: GPT-2's ``Conv1D``): their units are the weight's
        columns, and their outputs split per unit along the last dim."""
        ids = {i for i, n in self.names.items()
               if n in names and _weight(self.modules[i], self.params[i]).dim() == 2}
        self.transposed |= ids
        for i in ids & self.records.keys():
            self.records[i].units = _units(self.modules[i], self.params[i], True)
        for o in self.outputs:
            if id(o.module) in ids:
                o.cdim = o.y.dim() - 1 if o.y.dim() >= 2 and o.y.shape[-1] == o.rec.units else None

    # -- module hooks
    def pre_hook(self, module: nn.Module, args: Any) -> None:
        self.pending = None

    def hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in self.records:  # called again (shared layer): first call only
            return
        with _quiet():
            self._record(module, args, output)

    def _record(self, module: nn.Module, args: Any, output: Any) -> None:
        name = self.names[id(module)]
        t = _first_tensor(output)
        params = self.params[id(module)]
        rec = LayerDiagnosis(index=len(self.order) + 1, name=name, type=type(module).__name__,
                             weight_shape=tuple(_weight(module, params).shape),
                             units=_units(module, params))
        prev = self.order[-1] if self.order else None
        self.records[id(module)] = rec
        self.order.append(rec)
        self._record_input(rec, prev, _first_tensor(args))
        if t is None or not t.is_floating_point():
            return
        if t.dim() < 1 or t.shape[0] < 2:
            # the same for every sample (a (1, L) position table broadcast over the batch)
            rec.input_independent = True
            return
        rec.out_numel = t.numel() // t.shape[0]
        # outputs per unit (channel): channel-first layers use dim 1, others the last dim
        cdim = 1 if isinstance(module, _CHANNEL_FIRST) and t.dim() > 2 else t.dim() - 1
        if not (t.dim() >= 2 and t.shape[cdim] == rec.units):
            cdim = None
        self._keep(_Output(rec, module, params, t.detach(), cdim))
        self._want(t, self.grads, rec.index)
        self.pending = (rec, t.shape)

    def _record_input(self, rec: LayerDiagnosis, prev: LayerDiagnosis | None,
                      x: torch.Tensor | None) -> None:
        """Keep the layer's input (or note which kept tensor of the previous layer it is); around
        a change of size from the previous layer, hook the gradients w.r.t. the input and
        w.r.t. the previous layer's activation output."""
        if x is None or not x.is_floating_point() or x.dim() < 1 or x.shape[0] < 2:
            return
        rec.in_numel = x.numel() // x.shape[0]
        last = [item for item in (self.posts[-1:] + self.outputs[-1:]) if item.rec is prev]
        alias = next((item for item in last if _same_values(x, item)), None)
        if alias is not None:
            self.inputs.append(_Input(rec, None, alias))
        else:
            self._keep(_Input(rec, x.detach().reshape(x.shape[0], -1)))
        if prev is None or prev.out_numel is None or prev.out_numel == rec.in_numel:
            return
        self._want(x, self.grads_in, rec.index)
        post = next((p for p in self.posts[-1:] if p.rec is prev), None)
        if post is not None and post.src is not None:
            self._want(post.src, self.grads_post, prev.index)

    # -- kept tensors
    def _keep(self, item: _Output | _Post | _Input) -> None:
        """Keep ``item.y`` until the statistics are computed: a reference (copied only if an
        in-place operation is about to change it), or a float copy with ``copy=True``."""
        if self.copy or item.y.dtype != torch.float32:
            item.y = _copy(item.y)
        else:
            self.shared.setdefault(_storage_key(item.y), []).append(item)
        item.version = item.y._version
        (self.outputs if isinstance(item, _Output) else
         self.posts if isinstance(item, _Post) else self.inputs).append(item)

    def _protect(self, *targets: Any) -> None:
        """Copy the kept tensors that share storage with ``targets`` (about to be written), and
        hook the gradients wanted of them (a hook gets the gradient w.r.t. the values before the
        write; the backward pass's inputs would get it w.r.t. those after)."""
        for t in targets:
            if isinstance(t, (tuple, list)):
                self._protect(*t)
            elif isinstance(t, torch.Tensor):
                key = _storage_key(t)
                for item in self.shared.pop(key, ()):
                    if item.y._version == item.version:
                        item.y = _copy(item.y)
                        item.version = item.y._version
                for wanted, into, index, _ in self.wanted.pop(key, ()):
                    wanted.register_hook(self._grad_hook(index, into))

    def _want(self, t: torch.Tensor, into: dict[int, torch.Tensor], index: int) -> None:
        """Ask for the gradient w.r.t. ``t`` (as it is now), to be put in ``into[index]``: from
        the backward pass's inputs, or with ``copy=True`` (writes unseen) from a hook."""
        if not t.requires_grad:
            return
        if self.copy:
            t.register_hook(self._grad_hook(index, into))
            return
        self.wanted.setdefault(_storage_key(t), []).append((t, into, index, t._version))

    def grad_inputs(self) -> list[torch.Tensor]:
        """The tensors whose gradients the backward pass returns to :meth:`take_grads`, in order."""
        return [w[0] for ws in self.wanted.values() for w in ws]

    def take_grads(self, grads: Any) -> None:
        """The gradients w.r.t. :meth:`grad_inputs` (None: the loss does not depend on it)."""
        wanted = [w for ws in self.wanted.values() for w in ws]
        for (_, into, index, _), g in zip(wanted, grads):
            if g is not None and index not in into:
                into[index] = g.detach()
        self.rewritten = any(t._version != version for t, _, _, version in wanted)
        self.wanted = {}

    def stale(self) -> bool:
        """Whether a kept tensor, or one whose gradient is wanted, was changed in place without
        being seen first (an in-place write this mode did not see): the statistics would be
        wrong, measure again with copies."""
        return any(item.y._version != item.version
                   for item in (*self.outputs, *self.posts, *self.inputs) if item.y is not None) \
            or self.rewritten

    def _grad_hook(self, index: int, into: dict[int, torch.Tensor]) -> Callable[[torch.Tensor], None]:
        def hook(grad: torch.Tensor) -> None:
            if index not in into:
                into[index] = grad.detach()
        return hook

    # -- statistics, after the backward pass
    def measure(self) -> None:
        """Fill in every statistic of the records from the kept tensors (and drop them)."""
        with _quiet(), torch.no_grad():
            self._measure_outputs()
            self._measure_posts()
            self._measure_inputs()
            self._measure_grads()
        self.outputs, self.posts, self.inputs = [], [], []
        self.grads, self.grads_in, self.grads_post = {}, {}, {}

    def _samples(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """An even subsample of ``n_samples`` values of each row of ``flat`` (layers, n)."""
        if flat.shape[1] > self.n_samples:
            flat = flat[:, :: -(-flat.shape[1] // self.n_samples)]
        return list(flat.to("cpu", copy=True).unbind(0))

    def _measure_outputs(self) -> None:
        rtol = self.th.duplicate_rtol
        groups = _grouped(self.outputs, lambda o: (o.y.shape, o.y.device, o.cdim))
        for group in groups:
            shape = group[0].y.shape
            for chunk in _chunks(group, shape.numel()):
                y = _stack([o.y for o in chunk])
                flat = y.reshape(len(chunk), shape[0], -1)
                means, spreads = _mean_spreads(flat)
                samples = self._samples(flat.reshape(len(chunk), -1))
                for o, m, s, sample in zip(chunk, means.tolist(), spreads.tolist(), samples):
                    o.rec.out_mean, o.rec.out_std = m, s
                    # post-activation = the output itself until an activation is seen
                    o.rec.post_std = s
                    o.rec.samples = sample
                cdim = chunk[0].cdim
                if cdim is None:
                    maybe = _weight_twins([(o.module, o.params, id(o.module) in self.transposed) for o in chunk], rtol)
                else:
                    maybe = dict.fromkeys(_maybe_duplicates(_sampled_units(y, cdim, _MAX_DUP_COLUMNS), rtol))
                for i, rows in maybe.items():
                    o = chunk[i]
                    self._duplicates(o.rec, o.module, o.params, y[i], o.cdim, rows)

    def _measure_posts(self) -> None:
        th = self.th
        for group in _grouped(self.posts, lambda p: (p.y.shape, p.y.device, p.kind, p.bounds)):
            shape, kind, bounds = group[0].y.shape, group[0].kind, group[0].bounds
            for chunk in _chunks(group, shape.numel()):
                y = _stack([p.y for p in chunk])
                _, spreads = _mean_spreads(y)
                samples = self._samples(y.reshape(len(chunk), -1))
                dead = saturated = None
                if kind == "relu" or (kind == "hardtanh" and bounds[0] == 0):
                    # relu6 = hardtanh(0, 6): its 0 is "dead", not saturated
                    # (y == 0).all(dim=1), several times faster: NaN compares unequal either way
                    silent = (y.amax(dim=1) == 0) & (y.amin(dim=1) == 0)
                    dead = silent.float().mean(dim=1).tolist()
                if kind == "tanh":
                    sat = y.abs() > th.tanh_saturation
                elif kind == "sigmoid":
                    lo = th.sigmoid_saturation
                    sat = (y < lo) | (y > 1 - lo)
                elif kind == "hardtanh":
                    sat = y >= bounds[1]
                    if bounds[0] != 0:
                        sat |= y <= bounds[0]
                if kind in ("tanh", "sigmoid", "hardtanh"):
                    saturated = sat.float().mean(dim=(1, 2)).tolist()
                for i, (p, s, sample) in enumerate(zip(chunk, spreads.tolist(), samples)):
                    p.rec.post_std = s
                    p.rec.samples = sample
                    p.rec.dead = None if dead is None else dead[i]
                    if saturated is not None:
                        p.rec.saturated = saturated[i]

    def _measure_inputs(self) -> None:
        for i in self.inputs:
            if i.alias is not None:
                i.rec.in_std = (i.alias.rec.post_std if isinstance(i.alias, _Post)
                                else i.alias.rec.out_std)
        kept = [i for i in self.inputs if i.y is not None]
        for group in _grouped(kept, lambda i: (i.y.shape, i.y.device)):
            for chunk in _chunks(group, group[0].y.shape.numel()):
                _, spreads = _mean_spreads(_stack([i.y.float() for i in chunk]))
                for i, s in zip(chunk, spreads.tolist()):
                    i.rec.in_std = s

    def _measure_grads(self) -> None:
        out_grads = [(self.order[i - 1], "grad_out_std", g) for i, g in self.grads.items()]
        out_grads += [(self.order[i - 1], "grad_in_std", g) for i, g in self.grads_in.items()]
        out_grads += [(self.order[i - 1], "grad_post_std", g) for i, g in self.grads_post.items()]
        for group in _grouped(out_grads, lambda rg: (rg[2].numel(), rg[2].device)):
            numel = group[0][2].numel()
            for chunk in _chunks(group, numel):
                stds = _stds(_stack([g.float().reshape(-1) for _, _, g in chunk]))
                for (rec, key, _), s in zip(chunk, stds.tolist()):
                    setattr(rec, key, s)

    def measure_weight_grads(self, layer_grads: list[tuple[LayerDiagnosis, list[torch.Tensor]]]) -> None:
        """``grad_weight_std`` of each layer: the std over all elements of its weights' gradients."""
        flats = []
        for rec, gs in layer_grads:
            if gs:
                flats.append((rec, gs[0].detach().float().reshape(-1) if len(gs) == 1 else
                              torch.cat([g.detach().float().reshape(-1) for g in gs])))
        with _quiet(), torch.no_grad():
            for group in _grouped(flats, lambda rf: (rf[1].numel(), rf[1].device)):
                for chunk in _chunks(group, group[0][1].numel()):
                    stds = _stds(_stack([f for _, f in chunk]))
                    for (rec, _), s in zip(chunk, stds.tolist()):
                        rec.grad_weight_std = s

    def _duplicates(self, rec: LayerDiagnosis, module: nn.Module, params: list[nn.Parameter],
                    y: torch.Tensor, cdim: int | None, rows: tuple[torch.Tensor, int] | None = None) -> None:
        rtol = self.th.duplicate_rtol
        cache: list[tuple[torch.Tensor, int]] = [] if rows is None else [rows]

        def weight_rows() -> torch.Tensor:
            if not cache:
                cache.append(_weight_rows(module, params, id(module) in self.transposed))
            return cache[0][0]

        if cdim is not None:
            dup = _duplicate_mask(_output_columns(y, cdim, _MAX_DUP_COLUMNS), rtol,
                                  confirm=weight_rows)
        elif not is_layer(module):  # a module of another library whose output's units are unknown:
            return                    # its weight's rows need not be units (Mamba's A_log: one per state)
        else:  # outputs cannot be split per unit: weight rows only
            dup = _duplicate_mask(weight_rows(), rtol)
        if dup is None:
            return
        rec.duplicates = int(dup.sum())
        rows = weight_rows()
        w = rows[:, :cache[0][1]]
        by_weight = _duplicate_mask(rows, rtol)
        if not bool(w.any()):
            rec.duplicate_cause = "zero initialization"
        elif bool((w == w.reshape(-1)[0]).all()):
            rec.duplicate_cause = "constant initialization"
        elif by_weight is not None and bool((by_weight & dup).any()):
            rec.duplicate_cause = "identical weight rows"
        else:
            rec.duplicate_cause = "identical outputs over the batch"
