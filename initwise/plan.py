"""Plans: which scheme every parameter of a model gets, and why (data only).

A :class:`Plan` is an ordered sequence of :class:`PlanEntry` (one per parameter tensor; tied
parameters once, their other names in ``shared_with``; parametrized weights through the
originals in ``writes``). It is built by :func:`initwise.build.build_plan` (the policies are in
:mod:`initwise.policies`, the rules in :mod:`initwise.rules`), reads like a table
(:meth:`Plan.table`), round-trips through strict, validated JSON (:mod:`initwise.plancheck`),
and is applied by :meth:`Plan.apply` (:mod:`initwise.write`: all or nothing, tensor by tensor;
element ``i`` of parameter ``name`` depends only on ``(seed, name, i)``, :mod:`initwise.streams`).
Applying the same plan with the same seed gives the same weights on any fresh copy of the model,
on any device, layout of shards or number of processes.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from .atomic import write_text
from .plancheck import check_entry_dict, check_names, check_plan_dict, check_plan_model
from .streams import param_generator, stream_seed
from .table import Table
from .write import apply_plan

__all__ = ["Plan", "PlanEntry", "param_generator", "stream_seed"]

_JSON_VERSION = 1
#: The param that fixes what a fixed-scale scheme draws, and its default.
_FIXED_DEFAULT = {"normal": ("std", 0.01), "small_normal": ("std", 0.01), "uniform": ("bound", 0.01),
                  "small_uniform": ("bound", 0.01)}


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

    def scale(self, k: float) -> None:
        """Scale what the entry draws by ``k``, keeping its fields consistent (``std`` stays the
        scheme's formula: the gain, or the fixed std/bound in ``params``, scaled with it)."""
        if k == 1.0:
            return
        self.std = float(self.std) * k
        if self.gain is not None:
            self.gain = float(self.gain) * k
        if self.scheme in _FIXED_DEFAULT:
            key, default = _FIXED_DEFAULT[self.scheme]
            self.params[key] = float(self.params.get(key, default)) * k
        if "effective_std" in self.params:
            self.params["effective_std"] = float(self.params["effective_std"]) * k

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
        return str(self.table())

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

    def table(self, width: int | None = None, *, plain: bool = False) -> Table:
        """The plan as a :class:`~initwise.table.Table` (the kind diagnose's reports return):
        ``print(plan.table())`` writes it at the terminal's width (``width`` fixes it; the reasons
        wrap), ``rich.print`` draws it, ``.markdown()`` gives Markdown. ``plain`` is accepted for
        compatibility (the text is always plain)."""
        del plain
        return Table(self.header(), list(self._COLUMNS), self.rows(),
                     right=frozenset({"fan_in", "fan_out", "gain", "std"}), width=width)

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
    def apply(self, model: nn.Module, seed: int | None = None,
              device: str | torch.device | None = None) -> "Plan":
        """Write every parameter of ``model`` as planned and return the plan (with ``seed``
        set to the seed used); see :func:`initwise.write.apply_plan`.

        Element ``i`` of parameter ``name`` is a function of ``(seed, name, i)`` only
        (:mod:`initwise.streams`), so the result does not depend on the order of the layers, the
        layout of shards, the number of processes or threads, the dtype or the device.
        ``seed=None`` draws a seed from torch's global generator (so ``torch.manual_seed``
        makes it reproducible) and records it in ``plan.seed``. ``device`` is where the tensors
        of a model built on the meta device are created and drawn, once each.

        All or nothing: everything is checked first (names, shapes, dtypes, inference tensors,
        views sharing memory, devices, meta tensors), then written tensor by tensor.
        """
        return apply_plan(self, model, seed=seed, device=device)


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


