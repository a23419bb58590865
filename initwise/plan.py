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

import fnmatch
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

from .discover import ORDER_GUESS, Activation, Discovery, NORM_TYPES, discover
from .fans import fans as _fans
from .fans import param_blocks
from .gains import GAIN_NAMES, activation_name
from .gains import gain as _gain
from .streams import param_generator, stream_seed
from .write import _effective_note, _effective_shape, _is_lazy, _originals, apply_plan
from .schemes import canonical_name, variance_scaling_std

__all__ = ["Plan", "PlanEntry", "build_plan", "recommend", "POLICIES", "param_generator", "stream_seed"]

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
    def from_dict(cls, d: Mapping[str, Any]) -> "PlanEntry":
        """An entry from :meth:`to_dict`'s output; ``ValueError`` when a field is missing."""
        d = dict(d)
        try:
            d["shape"] = tuple(int(x) for x in d["shape"])
            d["shared_with"] = tuple(d.get("shared_with", ()))
            d["writes"] = tuple(d.get("writes", ()))
            d["params"] = dict(d.get("params", {}))
            return cls(**d)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed plan entry {d.get('name', '?')!r}: {exc}") from None


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

        table = Table(title=self.header(), title_justify="left")
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
            table.add_row(*row)
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
            console = Console(file=buf, width=width or 200, color_system=None, force_terminal=False)
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
        """The plan as JSON text (also written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text + "\n")
        return text

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Plan":
        """A plan from :meth:`to_dict`'s output; ``ValueError`` for anything else."""
        if not isinstance(d, Mapping) or "entries" not in d:
            raise ValueError("not an initwise plan: expected a JSON object with an 'entries' list")
        if d.get("initwise_plan", _JSON_VERSION) != _JSON_VERSION:
            raise ValueError(f"plan format version {d.get('initwise_plan')!r} is not supported "
                             f"(this initwise reads version {_JSON_VERSION})")
        return cls([PlanEntry.from_dict(e) for e in d["entries"]], policy=d.get("policy", ""),
                   distribution=d.get("distribution", "normal"), method=d.get("method", ""),
                   note=d.get("note", ""), seed=d.get("seed"))

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> "Plan":
        """Read a plan written by :meth:`to_json` (JSON text or a path to a file)."""
        text = os.fspath(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text, encoding="utf-8") as fh:
                text = fh.read()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"plan is not valid JSON: {exc}") from None
        return cls.from_dict(data)

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


def _std_cell(e: PlanEntry) -> str:
    """The std column: the planned std, and the measured effective one when a parametrization
    changes it (see :func:`_effective_note`)."""
    if e.std is None:
        return "-"
    eff = e.params.get("effective_std")
    return f"{e.std:.4g}" + (f" (eff. {eff:.3g})" if eff is not None else "")


# ============================================================================= rules
@dataclass
class _Rule:
    key: Any
    label: str
    kind: str  # "name", "module", "type", "activation"
    value: str
    level: int
    used: bool = False


def _with_distribution(raw: str, name: str, distribution: str) -> str:
    """A family name without a distribution ("he", "xavier", "lecun", "glorot", "kaiming") takes
    ``distribution``; a full name ("he_uniform") keeps its own."""
    if not name.startswith(("xavier", "kaiming", "lecun")) or "normal" in raw or "uniform" in raw:
        return name
    return f"{name.split('_')[0]}_{distribution}"


def _normalize_value(value: Any, label: str, distribution: str = "normal") -> str:
    if not isinstance(value, str):
        raise TypeError(f"rule {label}: the value must be a scheme name, 'keep', 'standard' or 'torch', "
                        f"got {type(value).__name__}")
    v = value.strip().lower()
    if v in ("keep", "standard", "torch"):
        return v
    try:
        name = canonical_name(v)
    except ValueError as exc:
        raise ValueError(f"rule {label}: {exc}") from None
    if name == "constant":
        raise ValueError(f"rule {label}: 'constant' needs a value; use 'zeros' or 'keep'")
    return _with_distribution(v, name, distribution)


def _activation_key(name: str, label: str) -> str:
    n = name.strip().lower().replace("-", "_")
    if n in ("none", "linear", "identity"):
        return "none"
    if n == "swish":
        return "silu"
    if n not in GAIN_NAMES:
        raise ValueError(f"rule {label}: unknown activation {name!r}; known: none, {', '.join(GAIN_NAMES)}")
    return n


def _parse_rules(rules: Mapping[Any, Any] | None, model: nn.Module, distribution: str) -> list[_Rule]:
    if rules is None:
        return []
    if not isinstance(rules, Mapping):
        raise TypeError(f"rules must be a dict {{key: scheme}}, got {type(rules).__name__}")
    parsed = []
    for key, value in rules.items():
        if isinstance(key, str):
            label = repr(key)
            low = key.strip()
            if low.lower().startswith(("activation:", "act:")):
                act = _activation_key(low.split(":", 1)[1], label)
                parsed.append(_Rule(act, label, "activation", _normalize_value(value, label, distribution), 2))
            else:
                parsed.append(_Rule(low, label, "name", _normalize_value(value, label, distribution), 0))
        elif isinstance(key, type) and issubclass(key, nn.Module):
            label = f"nn.{key.__name__}" if key.__module__.startswith("torch.nn") else key.__name__
            act = None
            if key.__module__ == "torch.nn.modules.activation" and key is not nn.MultiheadAttention:
                try:
                    known = activation_name(key())
                except Exception:  # noqa: BLE001 - needs constructor arguments
                    known = None
                act = known[0] if known else key.__name__.lower()
            if act is not None:
                parsed.append(_Rule(_activation_key(act, label) if act in GAIN_NAMES or act in ("none",) else act,
                                    label, "activation", _normalize_value(value, label, distribution), 2))
            else:
                parsed.append(_Rule(key, label, "type", _normalize_value(value, label, distribution), 1))
        elif isinstance(key, nn.Module):
            names = [n for n, m in model.named_modules() if m is key]
            label = f"module {names[0]!r}" if names else f"module {type(key).__name__}"
            if not names:
                raise ValueError(f"rule {label}: this module is not part of the model")
            parsed.append(_Rule(key, label, "module", _normalize_value(value, label, distribution), 0))
        else:
            raise TypeError(f"rule key {key!r}: use a parameter-name glob ('head.*'), a layer type "
                            "(nn.LSTM), a module of the model, or 'activation:NAME'")
    return parsed


# ============================================================================= building
@dataclass
class _Alias:
    name: str          # qualified name of the tensor
    local: str         # local name in its module
    module_name: str
    module: nn.Module


@dataclass
class _Tensor:
    aliases: list[_Alias]
    shape: tuple[int, ...]
    tensor: torch.Tensor | None
    writes: tuple[str, ...] = ()
    parametrization: str = ""


def _collect(model: nn.Module) -> list[_Tensor]:
    groups: dict[int, _Tensor] = {}
    order: list[int] = []
    for mname, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, parametrize.ParametrizationList):
            continue
        prefix = f"{mname}." if mname else ""
        for local, p in module._parameters.items():
            if p is None:
                continue
            key = id(p)
            if key not in groups:
                groups[key] = _Tensor([], () if _is_lazy(p) else tuple(p.shape), p)
                order.append(key)
            groups[key].aliases.append(_Alias(prefix + local, local, mname, module))
        if parametrize.is_parametrized(module):
            for pname, plist in module.parametrizations.items():
                key = id(plist)
                if key not in groups:
                    originals = _originals(plist)
                    kinds = "+".join(type(m).__name__.lstrip("_") for m in plist)
                    groups[key] = _Tensor([], tuple(_effective_shape(module, pname)), None,
                                          tuple(f"{prefix}parametrizations.{pname}.{o}" for o, _ in originals),
                                          kinds)
                    order.append(key)
                groups[key].aliases.append(_Alias(prefix + pname, pname, mname, module))
    out = []
    for key in order:
        g = groups[key]
        g.aliases.sort(key=lambda a: a.name)
        out.append(g)
    return out


def build_plan(model: nn.Module, example_input: Any = None, *, rules: Mapping[Any, Any] | None = None,
               policy: str = "standard", distribution: str = "normal",
               discovery: Discovery | None = None) -> Plan:
    """Build the :class:`Plan` for ``model`` without changing it (see the module docstring).

    ``rules`` override the policy: keys are parameter-name globs (``"head.*"``), layer types
    (``nn.LSTM``), modules of the model, or activations (``"activation:tanh"`` or an activation
    class such as ``nn.Tanh``: layers whose output feeds it); values are scheme names,
    ``"keep"``, ``"standard"`` or ``"torch"``. A name or module rule beats a type rule, which
    beats an activation rule; two rules of the same rank that disagree on a parameter, and a
    rule that matches nothing, are errors. Fan-based schemes in a rule apply to the matched
    weights (biases 0, norms 1/0); ``zeros``/``small_*`` apply to every matched tensor.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(_DISTRIBUTIONS)}; got {distribution!r}")
    policy = normalize_policy(policy, distribution)
    parsed = _parse_rules(rules, model, distribution)
    needs_discovery = (policy == "standard" or any(r.value == "standard" or r.kind == "activation"
                                                   for r in parsed))
    if discovery is None and needs_discovery:
        discovery = discover(model, example_input)
    module_ids = {id(r.key): {id(m) for m in r.key.modules()} for r in parsed if r.kind == "module"}
    torch_tags = _torch_tags(model)

    entries = []
    residual_ends: list[tuple[str, str]] = []
    for item in _collect(model):
        contexts = []
        for alias in item.aliases:
            acts = discovery.of(alias.module_name) if discovery is not None else ()
            contexts.append((alias, acts))
        chosen_policy, rule = _resolve(item, contexts, parsed, policy, module_ids)
        candidates = []
        for alias, acts in contexts:
            e = _entry(chosen_policy, item, alias, acts, distribution, explicit=rule is not None,
                       torch_tags=torch_tags.get(id(alias.module), frozenset()))
            if rule is not None:
                e.reason = f"rule {rule.label} -> {rule.value}: {e.reason}"
            candidates.append(e)
        best = min(candidates, key=lambda e: (e.std is None, e.std if e.std is not None else 0.0))
        if len(item.aliases) > 1:
            others = [a.name for a in item.aliases if a.name != item.aliases[0].name]
            best.name = item.aliases[0].name
            best.shared_with = tuple(others)
            owners = sorted({type(a.module).__name__ for a in item.aliases})
            best.reason = (f"shared by {len(item.aliases)} names (tied), initialized once"
                           + (f"; most conservative of the {'/'.join(owners)} choices" if len(owners) > 1 else "")
                           + f": {best.reason}")
        else:
            best.name = item.aliases[0].name
        _keep_padding_rows(best, item)
        if item.writes:
            best.writes = item.writes
            best.reason += f" (parametrized by {item.parametrization}: written through the original tensor)"
            owner = item.aliases[0].module
            _effective_note(best, owner.parametrizations[item.aliases[0].local], item.parametrization)
        branch_end = _residual_branch(discovery, item) if chosen_policy == "standard" else None
        if branch_end is not None and best.scheme != "keep":
            residual_ends.append((best.name, best.activation))
            best.reason += (f"; its output feeds a residual sum ({branch_end}), where the variances of the "
                            "summed branches add up (see the plan's note)")
        if (discovery is not None and discovery.method == "order" and best.scheme != "keep"
                and _uses_activation(chosen_policy, rule, item)):
            best.reason += (f" [activation {ORDER_GUESS}, because {discovery.fallback or 'the data flow was not followed'}"
                            "; pass example_input to follow the data flow]")
        entries.append(best)
    unused = [r.label for r in parsed if not r.used]
    if unused:
        raise ValueError(f"rule {unused[0]} matches no parameter of {type(model).__name__}; "
                         f"parameter names look like {entries[0].name if entries else '(none)'!r}")
    method = discovery.method if discovery is not None else "not needed"
    note = discovery.note if discovery is not None else f"policy {policy!r} does not depend on activations"
    if residual_ends:
        note += "; " + _residual_note(residual_ends)
    return Plan(entries, policy=policy, distribution=distribution, method=method, note=note)


def _residual_branch(discovery: Discovery | None, item: _Tensor) -> str | None:
    """Where the weight's layer feeds a residual sum (``Discovery.residual``), for the weights
    of dense layers and of an attention's output projection; ``None`` otherwise."""
    if discovery is None or not discovery.residual:
        return None
    for a in item.aliases:
        if _kind(a.module, a.local) != "dense" or _role("dense", a.local) != "weight":
            continue
        name = a.module_name
        if name in discovery.residual:
            return discovery.residual[name]
        parent = name.rsplit(".", 1)[0] if "." in name else ""
        if name.endswith("out_proj") and parent in discovery.residual:
            return discovery.residual[parent]
    return None


def _residual_note(ends: list[tuple[str, str]]) -> str:
    """The plan's note on residual branches (``(weight name, activation after it)`` of the layer
    ending each): their variances add up; how to start each branch at 0 without killing it."""
    linear = [name for name, act in ends if act in ("none", "-", "identity")]
    shown = ", ".join(f"{n!r}: 'zeros'" for n in linear[:3]) + (", ..." if len(linear) > 3 else "")
    example = f" (here, if no norm layer follows them: rules={{{shown}}})" if linear else ""
    branches = f"{len(ends)} residual branch" + ("es" if len(ends) > 1 else "")
    return (f"the model has {branches} whose variances add up at each sum, so per-branch init lets the "
            f"activations grow with depth (He et al. 2016; Fixup, Zhang et al. 2019). To start each branch "
            f"at 0, zero the last scale on it: the weight of the norm layer that ends it (Goyal et al. 2017, "
            f"torchvision's zero_init_residual), else its last layer when no activation follows{example}; "
            f"do not zero a layer that a ReLU follows (relu'(0) = 0: it would never train); or scale the "
            f"branch's init down")


def _uses_activation(policy: str, rule: "_Rule | None", item: _Tensor) -> bool:
    """True when the entry's scheme was chosen from the discovered activations: a standard-policy
    weight of a dense layer, or a tensor selected by an activation rule."""
    if rule is not None and rule.kind == "activation":
        return True
    return policy == "standard" and any(
        _kind(a.module, a.local) == "dense" and _role("dense", a.local) == "weight" for a in item.aliases)


def normalize_policy(policy: str, distribution: str = "normal") -> str:
    """The canonical form of ``policy`` ("standard", "torch" or a registry scheme name with the
    distribution applied to a bare family name); ``ValueError``/``TypeError`` for anything else.
    Lets callers validate a policy before doing any work."""
    if not isinstance(policy, str):
        raise TypeError(f"policy must be a string, got {type(policy).__name__}")
    p = policy.strip().lower()
    if p in POLICIES:
        return p
    try:
        name = canonical_name(p)
    except ValueError as exc:
        raise ValueError(f"unknown policy {policy!r}: use 'standard', 'torch' or a scheme name ({exc})") from None
    if name == "constant":
        raise ValueError("policy 'constant' needs a value; use rules with zeros, or policy 'zeros'")
    return _with_distribution(p, name, distribution)


def _resolve(item: _Tensor, contexts, parsed: list[_Rule], policy: str, module_ids) -> tuple[str, _Rule | None]:
    matches: list[_Rule] = []
    for rule in parsed:
        hit = False
        for alias, acts in contexts:
            if rule.kind == "name":
                hit = any(fnmatch.fnmatchcase(n, rule.key) for n in (alias.name, *item.writes))
            elif rule.kind == "module":
                hit = id(alias.module) in module_ids[id(rule.key)]
            elif rule.kind == "type":
                hit = isinstance(alias.module, rule.key)
            elif rule.kind == "activation":
                hit = any(_act_key(a) == rule.key for a in acts)
            if hit:
                break
        if hit:
            rule.used = True
            matches.append(rule)
    if not matches:
        return policy, None
    level = min(r.level for r in matches)
    best = [r for r in matches if r.level == level]
    values = {r.value for r in best}
    if len(values) > 1:
        desc = " and ".join(f"{r.label} -> {r.value}" for r in best)
        raise ValueError(f"conflicting rules for {item.aliases[0].name}: {desc}; make one more specific")
    return best[0].value, best[0]


def _act_key(a: Activation) -> str:
    return "none" if a.name in ("none", "identity", "linear") else ("silu" if a.name == "swish" else a.name)


# ----------------------------------------------------------------------------- one entry
def _kind(module: nn.Module, local: str) -> str:
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return "dense"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return "rnn"
    if isinstance(module, NORM_TYPES):
        return "norm"
    if isinstance(module, nn.PReLU):
        return "prelu"
    return "unknown"


def _role(kind: str, local: str) -> str:
    """"weight", "bias", "gain1" (norm/prelu scale), "hh" (recurrent), "ih" or "" (unknown)."""
    if kind in ("dense",):
        return {"weight": "weight", "bias": "bias"}.get(local, "")
    if kind == "embedding":
        return "weight" if local == "weight" else ""
    if kind == "norm":
        return {"weight": "scale", "bias": "bias"}.get(local, "")
    if kind == "prelu":
        return "prelu" if local == "weight" else ""
    if kind == "rnn":
        if local.startswith("weight_ih"):
            return "ih"
        if local.startswith("weight_hh"):
            return "hh"
        if local.startswith("weight_hr"):
            return "weight"
        if local.startswith(("bias_ih", "bias_hh")):
            return "bias"
        return ""
    if kind == "mha":
        if local in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
            return "weight"
        if local in ("bias_k", "bias_v"):
            return "weight"
        if local == "in_proj_bias":
            return "bias"
    return ""


def _entry(policy: str, item: _Tensor, alias: _Alias, acts: tuple[Activation, ...], distribution: str,
           explicit: bool, torch_tags: frozenset[str] = frozenset()) -> PlanEntry:
    module, local, shape = alias.module, alias.local, item.shape
    legacy_wn = _legacy_weight_norm(module, local)
    if legacy_wn is not None:  # weight_v is drawn as the weight itself (weight_g follows it)
        local = legacy_wn[0]
    kind = _kind(module, local)
    role = _role(kind, local)
    layer = _layer_name(module)
    act_label = _act_label(kind, module, local, acts)
    base = dict(name=alias.name, shape=shape, layer=layer, activation=act_label)

    def make(scheme_, dist_, fan_in_, fan_out_, gain_, std_, reason_, **params) -> PlanEntry:
        return PlanEntry(**base, scheme=scheme_, distribution=dist_, fan_in=fan_in_, fan_out=fan_out_,
                         gain=gain_, std=std_, reason=reason_, params=params)

    if policy == "keep":
        return make("keep", "-", None, None, None, None, "left as it is")
    if item.tensor is not None and _is_lazy(item.tensor):
        return make("keep", "-", None, None, None, None,
                    "lazy parameter not materialized yet: run a forward pass before initializing")
    if item.tensor is not None and not item.tensor.is_floating_point():
        return make("keep", "-", None, None, None, None, f"{item.tensor.dtype} tensor: not a weight")
    if explicit and policy in _FAN_FREE:
        return _fan_free(make, policy, "")
    if legacy_wn is not None and alias.local == legacy_wn[0] + "_g":
        of = alias.name[: len(alias.name) - len(alias.local)] + legacy_wn[0] + "_v"
        return make("weight_norm_g", "-", None, None, None, None,
                    f"weight_norm magnitude: g = ||{of}|| (dim {legacy_wn[1]}), so the effective "
                    f"{legacy_wn[0]} g v/||v|| equals the drawn {legacy_wn[0]}_v", of=of, dim=legacy_wn[1])
    if kind == "unknown" or not role:
        what = f"{layer}.{alias.local}" if kind != "unknown" else f"layer type {layer}"
        return make("keep", "-", None, None, None, None, f"{what} unknown to initwise: kept as it is")
    if policy == "torch":
        return _torch_entry(make, kind, role, module, local, shape, torch_tags)
    if role == "bias":
        return make("zeros", "-", None, None, None, 0.0, "biases start at 0")
    if role == "scale":
        return make("constant", "-", None, None, None, 0.0, "norm layers start as the identity: weight 1",
                    value=1.0)
    if role == "prelu":
        return make("constant", "-", None, None, None, 0.0,
                    "PReLU slopes start at 0.25 (He et al. 2015)", value=0.25)
    if len(shape) < 2:
        return make("keep", "-", None, None, None, None, f"{len(shape)}-D tensor with no fans: kept")
    fan_in, fan_out = _fans(shape, module, name=local)
    if policy == "standard":
        return _standard_entry(make, kind, role, module, local, shape, fan_in, fan_out, acts, distribution)
    return _uniform_entry(make, policy, kind, role, module, local, shape, fan_in, fan_out)


def _legacy_weight_norm(module: nn.Module, local: str) -> tuple[str, int] | None:
    """``(name, dim)`` when ``local`` is the ``<name>_g`` or ``<name>_v`` of a legacy
    ``torch.nn.utils.weight_norm`` on ``module`` (a forward pre-hook computing ``name = g v /
    ||v||``), else ``None``."""
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm) and local in (hook.name + "_g", hook.name + "_v"):
            return hook.name, int(hook.dim)
    return None


def _layer_name(module: nn.Module) -> str:
    cls = type(module)
    if parametrize.is_parametrized(module) and cls.__name__.startswith("Parametrized"):
        cls = cls.__mro__[1]
    return cls.__name__


def _act_label(kind: str, module: nn.Module, local: str, acts: tuple[Activation, ...]) -> str:
    if kind == "rnn" and (local.startswith("weight_ih") or local.startswith("weight_hh")):
        nl = getattr(module, "nonlinearity", None)
        mode = getattr(module, "mode", type(module).__name__.upper())
        if nl is not None:
            return f"{nl} (recurrent)"
        return "sigmoid+tanh gates" if "LSTM" in str(mode) or "GRU" in str(mode) else "gates"
    if not acts:
        return "-"
    return "+".join(a.label() for a in acts)


def _fan_free(make, scheme: str, why: str) -> PlanEntry:
    if scheme == "zeros":
        return make("zeros", "-", None, None, None, 0.0, why or "zeros")
    if scheme == "small_normal":
        return make("small_normal", "normal", None, None, None, 0.01, why or "N(0, 0.01^2), no fans", std=0.01)
    return make("small_uniform", "uniform", None, None, None, 0.01 / math.sqrt(3),
                why or "U(-0.01, 0.01), no fans", bound=0.01)


def _dist_scheme(family: str, distribution: str) -> str:
    return f"{family}_{distribution}"


def _xavier(make, distribution, fan_in, fan_out, why, gain=1.0, **params) -> PlanEntry:
    std = variance_scaling_std(gain * gain, "fan_avg", fan_in, fan_out)
    return make(_dist_scheme("xavier", distribution), distribution, fan_in, fan_out, gain, std, why, **params)


def _he(make, distribution, fan_in, fan_out, gain, why, **params) -> PlanEntry:
    return make(_dist_scheme("kaiming", distribution), distribution, fan_in, fan_out, gain,
                variance_scaling_std(gain * gain, "fan_in", fan_in, fan_out), why, **params)


def _lecun(make, distribution, fan_in, fan_out, why) -> PlanEntry:
    return make(_dist_scheme("lecun", distribution), distribution, fan_in, fan_out, 1.0,
                variance_scaling_std(1.0, "fan_in", fan_in, fan_out), why)


def _orthogonal_std(rows: int, cols: int, gain: float = 1.0) -> float:
    """Std of the entries of a ``rows x cols`` (semi-)orthogonal matrix times ``gain``: its
    ``min(rows, cols)`` singular values all equal ``gain``, so the squared entries sum to
    ``gain^2 min(rows, cols)`` over ``rows * cols`` entries: ``gain / sqrt(max(rows, cols))``."""
    return gain / math.sqrt(max(rows, cols))


def _choice_for(act: Activation, make, distribution, fan_in, fan_out) -> PlanEntry:
    name = act.name
    where = f" ({act.via})" if act.via else ""
    if name in ("none", "identity", "linear"):
        return _xavier(make, distribution, fan_in, fan_out,
                       f"no activation follows{where}: Xavier/Glorot with gain 1 (linear output)")
    if name in _XAVIER_ACTS:
        return _xavier(make, distribution, fan_in, fan_out,
                       f"feeds {act.label()}{where}: Xavier/Glorot with gain 1, derived for its linear regime "
                       "(Glorot & Bengio 2010)")
    if name == "selu":
        return _lecun(make, distribution, fan_in, fan_out,
                      f"feeds selu{where}: LeCun var 1/fan_in keeps SELU self-normalizing (Klambauer et al. 2017)")
    try:
        g = _gain(name, **act.kwargs) if name in GAIN_NAMES else _gain(act.fn)
    except (ValueError, TypeError):
        return _xavier(make, distribution, fan_in, fan_out,
                       f"feeds {act.label()}{where}, whose gain initwise cannot compute: treated as linear, Xavier")
    label = act.label()
    return _he(make, distribution, fan_in, fan_out, g,
               f"feeds {label}{where}: He et al. 2015, var gain^2/fan_in with {name}'s gain {g:.4g}")


def recommend(activation: str, fan_in: int | float = 256, fan_out: int | float = 256, distribution: str = "normal",
              **params: Any) -> PlanEntry:
    """The standard policy's choice for a weight of fans ``(fan_in, fan_out)`` whose output
    feeds ``activation`` (a name from :data:`initwise.GAIN_NAMES` or ``"none"``; parameters as
    keywords, e.g. ``recommend("leaky_relu", negative_slope=0.2)``)."""
    if not isinstance(activation, str):
        raise TypeError(f"activation must be a name, got {type(activation).__name__}")
    name = activation.strip().lower().replace("-", "_")
    name = {"linear": "none", "identity": "none", "swish": "silu"}.get(name, name)
    if name != "none" and name not in GAIN_NAMES:
        known = sorted({n for n in GAIN_NAMES if not n.startswith("conv")} | {"none"})
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(known)}")
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(_DISTRIBUTIONS)}; got {distribution!r}")
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fans must be positive, got fan_in={fan_in}, fan_out={fan_out}")
    if name != "none":
        _gain(name, **params)  # validates the parameters
    act = Activation(name, tuple(sorted(params.items())))
    base = dict(name="weight", shape=(fan_out, fan_in), layer="Linear", activation=act.label())

    def make(scheme_, dist_, fan_in_, fan_out_, gain_, std_, reason_, **extra) -> PlanEntry:
        return PlanEntry(**base, scheme=scheme_, distribution=dist_, fan_in=fan_in_, fan_out=fan_out_,
                         gain=gain_, std=std_, reason=reason_, params=extra)

    return _choice_for(act, make, distribution, fan_in, fan_out)


def _standard_entry(make, kind, role, module, local, shape, fan_in, fan_out, acts, distribution) -> PlanEntry:
    if kind == "embedding":
        pad = getattr(module, "padding_idx", None)
        return make("normal", "normal", fan_in, fan_out, 1.0, 1.0,
                    "embedding: N(0, 1), since each output reads one row (fan_in 1)"
                    + ("; padding row 0" if pad is not None else ""), std=1.0, padding_idx=pad)
    if kind == "rnn":
        blocks = param_blocks(module, local)
        if role == "hh":
            std = _orthogonal_std(shape[0] // blocks, math.prod(shape[1:]))
            return make("orthogonal", "-", fan_in, fan_out, 1.0, std,
                        f"recurrent weight: orthogonal per gate block ({blocks}) keeps the state's norm over time "
                        "(Saxe et al. 2014)", blocks=blocks)
        if role == "ih":
            if getattr(module, "nonlinearity", None) == "relu":
                return _he(make, distribution, fan_in, fan_out, math.sqrt(2.0),
                           "input weight of a ReLU RNN: He, gain sqrt(2)")
            return _xavier(make, distribution, fan_in, fan_out,
                           f"input weight feeding sigmoid/tanh gates: Xavier with the fans of one gate block "
                           f"({blocks} blocks)")
        return _xavier(make, distribution, fan_in, fan_out, "LSTM projection: Xavier, gain 1")
    if kind == "mha":
        blocks = param_blocks(module, local)
        what = "q/k/v projection" + (f" ({blocks} blocks)" if blocks > 1 else "")
        return _xavier(make, distribution, fan_in, fan_out,
                       f"attention {what}: linear, Xavier with per-block fans")
    if not acts:
        acts = (Activation("none", via="activation unknown"),)
    options = [_choice_for(a, make, distribution, fan_in, fan_out) for a in acts]
    best = min(options, key=lambda e: e.std)
    if len(options) > 1:
        labels = ", ".join(a.label() for a in acts)
        best.reason = (f"output feeds {len(acts)} activations ({labels}): most conservative (smallest std) choice; "
                       + best.reason)
    return best


def _uniform_entry(make, scheme, kind, role, module, local, shape, fan_in, fan_out) -> PlanEntry:
    blocks = param_blocks(module, local)
    why = f"policy {scheme}"
    if scheme in _FAN_FREE:
        return _fan_free(make, scheme, why)
    if scheme.startswith("xavier"):
        return _xavier(make, scheme.split("_", 1)[1], fan_in, fan_out, why + ", gain 1")
    if scheme.startswith("kaiming"):
        return _he(make, scheme.split("_", 1)[1], fan_in, fan_out, math.sqrt(2.0), why + ", ReLU gain sqrt(2)")
    if scheme.startswith("lecun"):
        return _lecun(make, scheme.split("_", 1)[1], fan_in, fan_out, why)
    groups = int(getattr(module, "groups", 1) or 1) if kind == "dense" else 1
    if groups > 1:
        # A grouped convolution's weight (out, in/g, *k) (transposed: (in, out/g, *k)) stacks the
        # g groups' blocks along dim 0: each must be orthogonal on its own, or a depthwise conv
        # (g = channels) keeps only ~k/channels of its input's variance.
        blocks = groups
    per_group = f", per group ({groups})" if groups > 1 else (f", per block ({blocks})" if blocks > 1 else "")
    if scheme == "delta_orthogonal":
        conv = kind == "dense" and isinstance(module, nn.modules.conv._ConvNd) and len(shape) >= 3
        if conv and all(k % 2 for k in shape[2:]):
            k = math.prod(shape[2:])
            extra = {"blocks": blocks} if blocks > 1 else {}
            return make("delta_orthogonal", "-", fan_in, fan_out, 1.0,
                        _orthogonal_std(shape[0] // blocks, shape[1]) / math.sqrt(k),
                        why + ", gain 1 (Xiao et al. 2018)" + per_group, **extra)
        if conv:
            kernel = "x".join(map(str, shape[2:]))
            scheme, why = "orthogonal", why + f" (kernel {kernel} has no centre tap: orthogonal instead)"
        else:
            scheme, why = "orthogonal", why + " (not a convolution: orthogonal instead)"
    if scheme == "orthogonal":
        std = _orthogonal_std(shape[0] // blocks, math.prod(shape[1:]))
        return make("orthogonal", "-", fan_in, fan_out, 1.0, std, why + ", gain 1" + per_group, blocks=blocks)
    raise ValueError(f"scheme {scheme!r} cannot be used as a whole-model policy")


def _torch_tags(model: nn.Module) -> dict[int, frozenset[str]]:
    """Modules whose PyTorch defaults are overridden by a container's ``_reset_parameters``:
    ``"mha_out_proj"`` for the ``out_proj`` of a ``MultiheadAttention`` with biases (its bias is
    set to 0), ``"transformer"`` for every module inside an ``nn.Transformer`` (every tensor with
    more than one dimension gets ``xavier_uniform_``)."""
    tags: dict[int, set[str]] = {}
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) and module.in_proj_bias is not None:
            tags.setdefault(id(module.out_proj), set()).add("mha_out_proj")
        if isinstance(module, nn.Transformer):
            for sub in module.modules():
                tags.setdefault(id(sub), set()).add("transformer")
    return {k: frozenset(v) for k, v in tags.items()}


def _keep_padding_rows(entry: PlanEntry, item: _Tensor) -> None:
    """Zero the ``padding_idx`` rows of an embedding weight whatever scheme (or tied layer's
    choice) fills the rest, as PyTorch does."""
    if entry.scheme in ("keep", "zeros"):
        return
    pads = sorted({int(a.module.padding_idx) for a in item.aliases
                   if isinstance(a.module, (nn.Embedding, nn.EmbeddingBag)) and a.local == "weight"
                   and getattr(a.module, "padding_idx", None) is not None})
    if not pads or entry.params.get("padding_idx") == (pads[0] if len(pads) == 1 else pads):
        return
    entry.params["padding_idx"] = pads[0] if len(pads) == 1 else pads
    rows = ", ".join(map(str, pads))
    entry.reason += f"; padding row{'s' if len(pads) > 1 else ''} {rows} set to 0 (embedding padding_idx)"


def _torch_entry(make, kind, role, module, local, shape, tags: frozenset[str] = frozenset()) -> PlanEntry:
    """PyTorch's own defaults (reset_parameters), with torch's fan rule (dims 1 and 0), including
    the overrides of containers (see :func:`_torch_tags`)."""
    torch_fan_in = shape[1] * math.prod(shape[2:]) if len(shape) >= 2 else None
    torch_fan_out = shape[0] * math.prod(shape[2:]) if len(shape) >= 2 else None
    if "transformer" in tags and len(shape) >= 2:
        return make("xavier_uniform", "uniform", torch_fan_in, torch_fan_out, 1.0,
                    variance_scaling_std(1.0, "fan_avg", torch_fan_in, torch_fan_out),
                    "PyTorch default: nn.Transformer applies xavier_uniform_ to every tensor with 2+ dims")
    if "mha_out_proj" in tags and role == "bias":
        return make("zeros", "-", None, None, None, 0.0,
                    "PyTorch default: MultiheadAttention sets out_proj.bias to 0")
    if kind == "dense":
        if role == "weight":
            return make("kaiming_uniform", "uniform", torch_fan_in, torch_fan_out, math.sqrt(1 / 3),
                        variance_scaling_std(1 / 3, "fan_in", torch_fan_in, torch_fan_out),
                        "PyTorch default: kaiming_uniform_(a=sqrt(5)), U(+-1/sqrt(fan_in))")
        fan_in = _torch_bias_fan_in(module)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        if bound == 0:
            return make("zeros", "-", None, None, None, 0.0, "PyTorch default: bias 0 (no inputs)")
        return make("uniform", "uniform", fan_in, None, None, bound / math.sqrt(3),
                    "PyTorch default: bias U(+-1/sqrt(fan_in))", bound=bound)
    if kind == "embedding":
        pad = getattr(module, "padding_idx", None)
        return make("normal", "normal", None, None, None, 1.0, "PyTorch default: embedding N(0, 1)",
                    std=1.0, padding_idx=pad)
    if kind == "rnn":
        bound = 1 / math.sqrt(module.hidden_size)
        return make("uniform", "uniform", None, None, None, bound / math.sqrt(3),
                    "PyTorch default: every RNN tensor U(+-1/sqrt(hidden_size))", bound=bound)
    if kind == "mha":
        if role == "bias":
            return make("zeros", "-", None, None, None, 0.0, "PyTorch default: in_proj_bias 0")
        scheme = "xavier_normal" if local in ("bias_k", "bias_v") else "xavier_uniform"
        dist = scheme.split("_", 1)[1]
        return make(scheme, dist, torch_fan_in, torch_fan_out, 1.0,
                    variance_scaling_std(1.0, "fan_avg", torch_fan_in, torch_fan_out),
                    f"PyTorch default: {scheme}_ on the whole tensor")
    if kind == "norm":
        if role == "scale":
            return make("constant", "-", None, None, None, 0.0, "PyTorch default: weight 1", value=1.0)
        return make("zeros", "-", None, None, None, 0.0, "PyTorch default: bias 0")
    if kind == "prelu":
        return make("constant", "-", None, None, None, 0.0, "PyTorch default: 0.25", value=0.25)
    return make("keep", "-", None, None, None, None, "kept")


def _torch_bias_fan_in(module: nn.Module) -> int:
    if parametrize.is_parametrized(module, "weight"):
        shape = _effective_shape(module, "weight")
    else:
        w = module.weight
        if isinstance(w, nn.parameter.UninitializedParameter) or w.dim() < 2:
            return 0
        shape = w.shape
    return shape[1] * math.prod(shape[2:]) if len(shape) >= 2 else 0
