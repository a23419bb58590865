"""Plans: which scheme every parameter of a model gets, and why.

A :class:`Plan` is an ordered sequence of :class:`PlanEntry` (one per parameter tensor; tied
parameters once), built by :func:`build_plan` from the activations that :mod:`initwise.discover`
finds downstream of each layer, the policy and the user's rules. Building reads the model only;
:meth:`Plan.apply` writes it (all or nothing). A plan round-trips through JSON, and applying the
same plan with the same seed gives the same weights on any fresh copy of the model.

Policies
--------
``"standard"`` (initwise's choice per layer, from the activation that consumes its output):

=====================================================  =========================================
activation after the layer                             weight
=====================================================  =========================================
none (output layer), identity, sigmoid, tanh, softmax,  Xavier/Glorot, gain 1: var 2/(fan_in +
softsign, hardtanh                                      fan_out) (Glorot & Bengio 2010 derive it
                                                        in the linear regime of these units)
relu, leaky_relu (slope a), elu, celu, gelu, silu,      He: var gain^2/fan_in with initwise's
mish, softplus, relu6, hardswish, any other callable    gain 1/sqrt(E[phi(z)^2]) (He et al. 2015):
                                                        relu 2, leaky 2/(1+a^2), gelu/silu/... by
                                                        their numeric gain
selu                                                    LeCun: var 1/fan_in (Klambauer et al. 2017)
=====================================================  =========================================

RNN/LSTM/GRU: ``weight_ih`` by the gate activations (sigmoid/tanh gates: Xavier with the fans of
one gate block; a ReLU ``nn.RNN``: He), ``weight_hh`` orthogonal per gate block (Saxe et al.
2014), ``weight_hr`` Xavier. MultiheadAttention: q/k/v projections Xavier with per-block fans.
Embeddings ``N(0, 1)`` (their fan-in is 1), the ``padding_idx`` row 0 (under every policy,
also when the weight is tied to another layer). Biases 0; norm layers
weight 1, bias 0; PReLU slopes 0.25. A layer whose output feeds several different activations
gets the most conservative (smallest std) of their choices. A weight whose layer ends a
residual branch keeps this choice; its reason and the plan's note say that the branch variances
add up at the sum (He et al. 2016; Fixup, Zhang et al. 2019) and which rule zeroes the branches.

``"torch"``: PyTorch's own ``reset_parameters`` distributions (Linear/Conv ``kaiming_uniform_(a=
sqrt(5))`` i.e. ``U(+-1/sqrt(fan_in))`` with torch's fan rule, biases ``U(+-1/sqrt(fan_in))``,
RNN everything ``U(+-1/sqrt(hidden))``, embeddings ``N(0, 1)``, attention as
``MultiheadAttention._reset_parameters``: q/k/v ``xavier_uniform_``, ``in_proj_bias`` and
``out_proj.bias`` 0, ``bias_k``/``bias_v`` ``xavier_normal_``, ``out_proj.weight`` as a Linear;
inside an ``nn.Transformer`` every tensor with 2+ dims ``xavier_uniform_``).

Any scheme name accepted by :func:`initwise.get_initializer` (``"xavier_normal"``, ``"he"``,
``"lecun"``, ``"orthogonal"``, ``"zeros"``, ``"small"`` ...): that scheme for every weight with at
least 2 dimensions (He with the ReLU gain, Xavier and orthogonal with gain 1; fused gate/q-k-v
weights with per-block fans or per-block orthogonality), biases 0, norm layers 1 and 0.

Parameters of layer types initwise does not know are kept and listed as ``keep``.
"""
from __future__ import annotations

import copy
import fnmatch
import hashlib
import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm

from .atomic import write_text
from .plancheck import check_entry_dict, check_names, check_plan_dict, check_plan_model
from .schemes import (
    canonical_name,
    constant_,
    delta_orthogonal_,
    orthogonal_,
    small_normal_,
    small_uniform_,
    variance_scaling_,
    variance_scaling_std,
    zeros_,
)

__all__ = ["Plan", "PlanEntry", "param_generator", "stream_seed"]

POLICIES = ("standard", "torch")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
_XAVIER_ACTS = frozenset({"none", "identity", "linear", "sigmoid", "hardsigmoid", "tanh", "softmax",
                          "log_softmax", "softmin", "softsign", "hardtanh"})
_FAN_FREE = frozenset({"zeros", "small_normal", "small_uniform"})
_JSON_VERSION = 1


# ============================================================================= entries
@dataclass
class PlanEntry:
    """How one parameter tensor is initialized.

    ``name`` is the qualified parameter name (for a parametrized weight, the name of the
    effective tensor, e.g. ``"fc.weight"``; the tensors actually written are in ``writes``),
    ``scheme`` a registry name (``"xavier_normal"``, ``"kaiming_uniform"``, ``"orthogonal"``,
    ``"zeros"``, ``"constant"``), ``"normal"``/``"uniform"`` (fixed std / bound in ``params``) or
    ``"keep"``. ``std`` is the standard deviation of the entries the scheme draws (``None`` when
    kept), ``gain`` the gain used, ``fan_in``/``fan_out`` the fans used (per gate block for
    fused weights). ``params`` holds the remaining arguments (``mode``, ``blocks``, ``value``,
    ``padding_idx``). ``shared_with`` lists the other names of a tied parameter.
    """

    name: str
    shape: tuple[int, ...]
    layer: str
    activation: str
    scheme: str
    distribution: str
    fan_in: int | float | None
    fan_out: int | float | None
    gain: float | None
    std: float | None
    reason: str
    params: dict[str, Any] = field(default_factory=dict)
    shared_with: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    predicted_std: float | None = None

    @property
    def family(self) -> str:
        """``"xavier"``, ``"he"``, ``"lecun"``, ``"orthogonal"``, ``"delta_orthogonal"``,
        ``"constant"`` (zeros, ones, constant), ``"normal"``, ``"uniform"`` or ``"keep"``."""
        s = self.scheme
        if s.startswith("xavier"):
            return "xavier"
        if s.startswith("kaiming"):
            return "he"
        if s.startswith("lecun"):
            return "lecun"
        if s in ("zeros", "constant"):
            return "constant"
        if s in ("small_normal",):
            return "normal"
        if s in ("small_uniform",):
            return "uniform"
        return s

    def to_dict(self) -> dict[str, Any]:
        """The entry as a JSON-ready dict (tuples as lists); :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["shape"] = list(self.shape)
        d["shared_with"] = list(self.shared_with)
        d["writes"] = list(self.writes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], index: int = 0) -> "PlanEntry":
        """An entry from :meth:`to_dict`'s output, checked (:func:`initwise.plancheck.check_entry_dict`:
        fields and types, finite numbers, the scheme's distribution, gain and params, ``std``
        against the scheme's formula); ``ValueError`` naming the entry and the field."""
        return cls(**check_entry_dict(d, index))

    def check(self, index: int = 0) -> None:
        """``ValueError`` when the entry is not consistent (as :meth:`from_dict` checks), e.g.
        after its ``std`` was edited without its gain or fans."""
        check_entry_dict(self.to_dict(), index)


# ============================================================================= plan
class Plan(Sequence):
    """An ordered sequence of :class:`PlanEntry`; index by position or by parameter name.

    ``policy``, ``distribution``, ``method`` (how activations were discovered: ``"fx"``,
    ``"forward"``, ``"order"``, or ``"not needed"``) and ``note`` describe how it was built;
    ``seed`` is the seed it was last applied with (``None`` before).
    """

    def __init__(self, entries: Sequence[PlanEntry], *, policy: str = "standard", distribution: str = "normal",
                 method: str = "", note: str = "", seed: int | None = None):
        self.entries: list[PlanEntry] = list(entries)
        self.policy = policy
        self.distribution = distribution
        self.method = method
        self.note = note
        self.seed = seed
        self._by_name = {}
        for e in self.entries:
            for n in (e.name, *e.shared_with):
                self._by_name[n] = e

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, key):  # noqa: ANN001
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise KeyError(f"no parameter {key!r} in the plan; names look like {self.entries[0].name!r}"
                               if self.entries else f"no parameter {key!r}: the plan is empty") from None
        return self.entries[key]

    def __iter__(self) -> Iterator[PlanEntry]:
        return iter(self.entries)

    def __contains__(self, key: object) -> bool:
        return key in self._by_name if isinstance(key, str) else key in self.entries

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Plan):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"Plan({len(self)} tensors, policy={self.policy!r}, method={self.method!r}"
                + (f", seed={self.seed}" if self.seed is not None else "") + ")")

    def __str__(self) -> str:
        return self.table()

    # ---------------------------------------------------------------- display
    def header(self) -> str:
        """One line: policy, discovery method and note, seed (once applied), and how many
        tensors get each scheme (the title of :meth:`table`)."""
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.scheme] = counts.get(e.scheme, 0) + 1
        summary = ", ".join(f"{k} {v}" for k, v in counts.items())
        seed = f", seed {self.seed}" if self.seed is not None else ""
        how = f"{self.method}" + (f" ({self.note})" if self.note else "")
        return f"initwise plan: policy {self.policy!r}, discovery {how}{seed}; {len(self)} tensors: {summary}"

    def rows(self) -> list[list[str]]:
        """Table rows as strings (parameter, shape, layer, activation, scheme, fan_in, fan_out,
        gain, std, reason)."""
        def num(x: float | None) -> str:
            return "-" if x is None else f"{x:.4g}"

        out = []
        for e in self.entries:
            name = e.name + (f" (= {', '.join(e.shared_with)})" if e.shared_with else "")
            out.append([name, "x".join(map(str, e.shape)) or "scalar", e.layer, e.activation, e.scheme,
                        "-" if e.fan_in is None else str(e.fan_in), "-" if e.fan_out is None else str(e.fan_out),
                        num(e.gain), _std_cell(e), e.reason])
        return out

    _COLUMNS = ("parameter", "shape", "layer", "activation", "scheme", "fan_in", "fan_out", "gain", "std", "reason")

    def rich_table(self, compact: bool = False):  # noqa: ANN201 - rich is optional
        """The plan as a ``rich.table.Table`` (needs rich). ``compact`` leaves out the layer and
        reason columns and merges the fans, for narrow terminals (the reasons are then printed
        below the table by ``rich``'s rendering of the plan itself)."""
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(self.header()), title_justify="left")
        columns = self._COLUMNS if not compact else ("parameter", "shape", "activation", "scheme", "fans",
                                                    "gain", "std")
        for col in columns:
            numeric = col in ("fan_in", "fan_out", "fans", "gain", "std")
            table.add_column(col, justify="right" if numeric else "left", overflow="fold",
                             no_wrap=col != "reason", min_width=24 if col == "reason" else None,
                             ratio=1 if col == "reason" else None)
        for row in self.rows():
            if compact:
                row = [row[0], row[1], row[3], row[4], f"{row[5]}/{row[6]}", row[7], row[8]]
            table.add_row(*(Text(c) for c in row))  # reasons hold brackets: not rich markup
        return table

    def __rich_console__(self, console, options):  # noqa: ANN001, ANN204 - rich protocol
        if options.max_width >= 150:
            yield self.rich_table()
            return
        from rich.text import Text

        yield self.rich_table(compact=True)
        for e in self.entries:
            yield Text.assemble((f"{e.name}: ", "bold"), e.reason)

    def table(self, width: int | None = None, *, plain: bool = False) -> str:
        """The plan as text: a rich table when rich is installed (unless ``plain``), else
        aligned columns."""
        if not plain:
            try:
                from rich.console import Console
            except ImportError:
                plain = True
        if not plain:
            buf = io.StringIO()
            console = Console(file=buf, width=width or 200, color_system=None, force_terminal=False,
                              force_jupyter=False)  # in a notebook too: into buf, not displayed
            console.print(self)
            return buf.getvalue().rstrip() + "\n"
        rows = [list(self._COLUMNS)] + self.rows()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._COLUMNS) - 1)]
        lines = [self.header()]
        for r in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
        return "\n".join(lines) + "\n"

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """The plan as a JSON-ready dict (format version, policy, distribution, method, note,
        seed and every entry's :meth:`PlanEntry.to_dict`); :meth:`from_dict` reads it back."""
        return {"initwise_plan": _JSON_VERSION, "policy": self.policy, "distribution": self.distribution,
                "method": self.method, "note": self.note, "seed": self.seed,
                "entries": [e.to_dict() for e in self.entries]}

    def to_json(self, path: str | os.PathLike | None = None, indent: int = 2) -> str:
        """The plan as strict JSON text (also written to ``path`` when given, atomically: a
        failed write leaves the previous file intact). ``ValueError`` when a number in the plan
        is not finite (strict JSON has no NaN or Infinity)."""
        try:
            text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        except ValueError:
            bad = next((e.name for e in self.entries
                        if any(isinstance(v, float) and not math.isfinite(v)
                               for v in (e.fan_in, e.fan_out, e.gain, e.std, *e.params.values()))), "?")
            raise ValueError(f"plan entry {bad!r} holds a non-finite number; a plan with NaN or "
                             "Infinity cannot be written as JSON") from None
        if path is not None:
            write_text(path, text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        """A plan from :meth:`to_dict`'s output, checked as a whole
        (:func:`initwise.plancheck.check_plan_dict`: the schema, every entry as
        :meth:`PlanEntry.from_dict` checks it, duplicate names, ``shared_with``, the seed);
        one ``ValueError`` naming the entry and the field."""
        checked = check_plan_dict(d)
        return cls([PlanEntry(**e) for e in checked.pop("entries")], **checked)

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Plan":
        """Read a plan written by :meth:`to_json` (JSON text or a path to a file), checked as
        :meth:`from_dict` does. Strict JSON: ``NaN``, ``Infinity`` and numbers beyond float
        range (``1e400``) are errors."""
        text = os.fspath(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text, encoding="utf-8") as fh:
                text = fh.read()
        try:
            data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
        except json.JSONDecodeError as exc:
            raise ValueError(f"plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def validate(self, model: nn.Module | None = None) -> "Plan":
        """Check the plan and return it: every entry is consistent (:meth:`PlanEntry.check`),
        no name is planned twice, and, with ``model``, the plan fits it: every entry names a
        parameter of that shape (tied names one tensor), drawn tensors are floating point and
        materialized, and every parameter of the model is planned
        (:func:`initwise.plancheck.check_plan_model`). Reads only; call it before writing."""
        dicts = [check_entry_dict(e.to_dict(), i) for i, e in enumerate(self.entries)]
        check_names(dicts)
        if model is not None:
            check_plan_model(self.entries, model)
        return self

    # ---------------------------------------------------------------- apply
    def apply(self, model: nn.Module, seed: int | None = None) -> "Plan":
        """Write every parameter of ``model`` as planned and return the plan (with ``seed``
        set to the seed used).

        Each tensor's random stream is a ``torch.Generator`` seeded from ``seed`` and the
        parameter's qualified name (:func:`stream_seed`), so the result does not depend on the
        order of the layers. ``seed=None`` draws a seed from torch's global generator (so
        ``torch.manual_seed`` makes it reproducible) and records it in ``plan.seed``.

        All or nothing: every new value is computed and checked first (names, shapes, dtypes),
        then all are copied under ``torch.no_grad()``; on any error the model is unchanged.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"apply() expects an nn.Module, got {type(model).__name__}")
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        writes = _compute_writes(self, model, seed)
        with torch.no_grad():
            for target, value in writes:
                target.copy_(value)
        self.seed = seed
        return self


def _reject_constant(name: str) -> float:
    raise ValueError(f"plan JSON holds {name}, which is not a number strict JSON allows; a plan's "
                     "numbers must be finite")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"plan JSON holds the number {text}, beyond float range; a plan's numbers "
                         "must be finite")
    return value


def _std_cell(e: PlanEntry) -> str:
    """The std column: the planned std, and the measured effective one when a parametrization
    changes it (see :func:`_effective_note`)."""
    if e.std is None:
        return "-"
    eff = e.params.get("effective_std")
    return f"{e.std:.4g}" + (f" (eff. {eff:.3g})" if eff is not None else "")


# ============================================================================= seeds
def stream_seed(seed: int, name: str) -> int:
    """The 63-bit seed of parameter ``name``'s random stream: SHA-256 of ``f"{seed}:{name}"``."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def param_generator(seed: int, name: str) -> torch.Generator:
    """A CPU ``torch.Generator`` for parameter ``name`` (see :func:`stream_seed`)."""
    g = torch.Generator()
    g.manual_seed(stream_seed(seed, name))
    return g


# ============================================================================= drawing
def draw(entry: PlanEntry, generator: torch.Generator | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """A new CPU tensor for ``entry`` (``None`` when the entry keeps its values)."""
    s, p = entry.scheme, entry.params
    if s == "keep":
        return None
    t = torch.empty(entry.shape, dtype=dtype)
    fans = (entry.fan_in, entry.fan_out) if entry.fan_in is not None else None
    g = 1.0 if entry.gain is None else float(entry.gain)
    family = entry.family
    if family in ("xavier", "he", "lecun"):
        mode = p.get("mode", "fan_avg" if family == "xavier" else "fan_in")
        variance_scaling_(t, g * g, mode, entry.distribution, generator, fans)
    elif s == "orthogonal":
        orthogonal_(t, gain=g, blocks=int(p.get("blocks", 1)), generator=generator)
    elif s == "delta_orthogonal":
        delta_orthogonal_(t, gain=g, generator=generator, blocks=int(p.get("blocks", 1)))
    elif s == "zeros":
        zeros_(t)
    elif s == "constant":
        constant_(t, float(p["value"]))
    elif s in ("normal", "small_normal"):
        small_normal_(t, std=float(p.get("std", 0.01)), generator=generator)
    elif s in ("uniform", "small_uniform"):
        small_uniform_(t, bound=float(p.get("bound", 0.01)), generator=generator)
    else:
        raise ValueError(f"plan entry {entry.name!r}: unknown scheme {s!r}")
    pad = p.get("padding_idx")
    if pad is not None:
        t[int(pad) if isinstance(pad, (int, float)) else [int(i) for i in pad]] = 0
    return t


def _compute_writes(plan: Plan, model: nn.Module, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    tensors = dict(model.named_parameters(remove_duplicate=False))
    virtual = _parametrized(model)
    covered: set[str] = set()
    writes: list[tuple[torch.Tensor, torch.Tensor]] = []
    drawn: dict[str, torch.Tensor] = {}
    deferred: list[PlanEntry] = []
    for entry in plan.entries:
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
            if entry.scheme == "keep":
                continue
            if any(t.is_meta for _, t in originals):
                continue
            new_writes, _ = _parametrized_writes(entry, plist, seed)
            writes.extend(new_writes)
            continue
        if entry.scheme == "weight_norm_g":
            deferred.append(entry)
            continue
        missing = [n for n in names if n not in tensors]
        if missing:
            raise ValueError(f"plan entry {missing[0]!r} names no parameter of {type(model).__name__}; "
                             "was the plan made for another model?")
        target = tensors[entry.name]
        if _is_lazy(target):
            if entry.scheme != "keep":
                raise ValueError(f"parameter {entry.name!r} is lazy (not materialized): run a forward pass first")
            continue
        _check_shape(entry, tuple(target.shape))
        if entry.scheme == "keep" or target.is_meta:
            continue
        if not target.is_floating_point():
            raise ValueError(f"parameter {entry.name!r} has dtype {target.dtype}; only floating-point "
                             "parameters can be initialized: add a rule {'%s': 'keep'}" % entry.name)
        value = draw(entry, param_generator(seed, entry.name), _work_dtype(target))
        drawn[entry.name] = value
        writes.append((target, value))
    for entry in deferred:  # legacy weight_norm magnitudes follow the directions just drawn
        writes.extend(_weight_norm_g_write(entry, tensors, drawn))
    extra = [n for n in tensors if n not in covered]
    if extra:
        raise ValueError(f"parameter {extra[0]!r} of {type(model).__name__} is not in the plan "
                         f"({len(extra)} missing); was the plan made for another model? Build it with "
                         "initwise.plan(model)")
    return writes


def _weight_norm_g_write(entry: PlanEntry, tensors: Mapping[str, torch.Tensor],
                         drawn: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``weight_g = ||weight_v||`` per slice (``torch.norm_except_dim``), from the new
    ``weight_v`` (or its current value when it is kept), so that ``g v / ||v|| = v``."""
    for n in (entry.name, *entry.shared_with):
        if n not in tensors:
            raise ValueError(f"plan entry {n!r} names no parameter of the model; was the plan made for another model?")
    target, of = tensors[entry.name], entry.params.get("of")
    if of not in tensors:
        raise ValueError(f"plan entry {entry.name!r}: its direction {of!r} is not a parameter of the model")
    _check_shape(entry, tuple(target.shape))
    if target.is_meta or tensors[of].is_meta:
        return []
    v = drawn[of] if of in drawn else tensors[of].detach().to(_work_dtype(target))
    g = torch.norm_except_dim(v, 2, int(entry.params.get("dim", 0)))
    if tuple(g.shape) != tuple(target.shape):
        raise ValueError(f"{entry.name}: ||{of}|| has shape {list(g.shape)}, the magnitude {list(target.shape)}")
    return [(target, g)]


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_shape(entry: PlanEntry, shape: tuple[int, ...]) -> None:
    if tuple(entry.shape) != tuple(shape):
        raise ValueError(f"plan entry {entry.name!r} has shape {list(entry.shape)} but the model's tensor has "
                         f"shape {list(shape)}; was the plan made for another model?")


def _is_lazy(t: torch.Tensor) -> bool:
    return isinstance(t, nn.parameter.UninitializedParameter)


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


def _parametrized_writes(entry: PlanEntry, plist: nn.Module,
                         seed: int) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    """The writes that give parametrized tensor ``entry`` the values drawn with ``seed``, and
    the effective tensor the model will then compute.

    Works on a copy of the parametrization list: ``right_inverse`` may update buffers (the
    orthogonal parametrization's ``base``), which are written with the originals, so the model
    is untouched until the plan writes everything. The effective tensor is the copy's forward
    with the new originals (spectral norm rescales, the orthogonal parametrization projects)."""
    originals = _originals(plist)
    value = draw(entry, param_generator(seed, entry.name), _work_dtype(originals[0][1]))
    dry = copy.deepcopy(plist)
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
        if changed is not None and changed.shape == buffer.shape and not torch.equal(changed, buffer):
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


