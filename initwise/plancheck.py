"""Validation of plans: a plan read from JSON (or edited in Python) is checked as a whole, and
against the model it is applied to, before anything is written.

Each check raises one ``ValueError`` that names the entry (its position and parameter name)
and the field, says what is wrong and how to fix it. What is checked:

* the schema: the known fields only, each of its type (numbers are finite numbers, never
  bools or strings; ``shape`` a list of ints; ``padding_idx`` an int or a list of ints within the
  rows; ``seed`` an int or null);
* consistency: the scheme is one the plan can draw; its distribution is the scheme's own
  (``xavier_uniform`` draws a uniform); a scheme that needs fans and a gain has them
  (``gain: null`` is not taken as 1); ``std`` agrees with the scheme's formula (fans, gain,
  mode, blocks, or the fixed std/bound in ``params``) within 1e-6 relative, since ``std`` is
  what the table shows but not what is drawn; each scheme's ``params`` are the ones it takes;
* names: no parameter name in two entries, ``shared_with`` lists other names;
* against a model (:func:`check_plan_model`): every entry names a parameter (or parametrized
  tensor) of the model with that shape, tied names are one tensor in the model too, tensors the
  model ties are one entry, drawn tensors are floating point, materialized and wide enough in
  their dtype for the std, and every parameter of the model is in the plan.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from .schemes import variance_scaling_std

__all__ = ["check_plan_dict", "check_entry_dict", "check_plan_model", "PLAN_FIELDS", "ENTRY_FIELDS"]

PLAN_FIELDS = ("initwise_plan", "policy", "distribution", "method", "note", "seed", "entries")
ENTRY_FIELDS = ("name", "shape", "layer", "activation", "scheme", "distribution", "fan_in", "fan_out",
                "gain", "std", "reason", "params", "shared_with", "writes", "predicted_std")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
#: A family's entry may also be drawn as a scaled orthogonal matrix of the same variance.
_ENTRY_DISTRIBUTIONS = (*_DISTRIBUTIONS, "orthogonal")
_MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
_DEFAULT_MODE = {"xavier": "fan_avg", "kaiming": "fan_in", "lecun": "fan_in"}
_FIXED = {"normal": ("normal", "std", 0.01), "small_normal": ("normal", "std", 0.01),
          "uniform": ("uniform", "bound", 0.01), "small_uniform": ("uniform", "bound", 0.01)}
_DRAWN_EXTRA = ("padding_idx", "effective_std", "cut", "block_gains")
#: The params each scheme takes (a key not listed is an error: a typo would be ignored).
_PARAMS = {
    "variance": ("mode", *_DRAWN_EXTRA),
    "orthogonal": ("blocks", *_DRAWN_EXTRA),
    "delta_orthogonal": ("blocks", *_DRAWN_EXTRA),
    "normal": ("std", *_DRAWN_EXTRA), "small_normal": ("std", *_DRAWN_EXTRA),
    "uniform": ("bound", *_DRAWN_EXTRA), "small_uniform": ("bound", *_DRAWN_EXTRA),
    "constant": ("value", "padding_idx"),
    "zeros": (),
    "keep": (),
    "weight_norm_g": ("of", "dim"),
    "centre": ("weight", "seed", "values"),
}
_REL = 1e-6


class _Where:
    """Names the place of an error: ``plan entry 3 ('fc.weight'), field 'std'``."""

    def __init__(self, index: int | None, name: Any = None):
        self.index, self.name = index, name

    def __call__(self, field: str, message: str) -> ValueError:
        if self.index is None:
            return ValueError(f"plan field {field!r}: {message}")
        who = f" ({self.name!r})" if isinstance(self.name, str) else ""
        return ValueError(f"plan entry {self.index}{who}, field {field!r}: {message}")


def _real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _num(value: Any, field: str, where: _Where, *, positive: bool = False, nonneg: bool = False,
         null: bool = False) -> float | None:
    if value is None and null:
        return None
    if not _real(value):
        kind = "a number or null" if null else "a number"
        raise where(field, f"must be {kind}, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise where(field, f"must be a finite number, got {value!r}")
    if positive and not v > 0 or nonneg and v < 0:
        raise where(field, f"must be {'positive' if positive else '>= 0'}, got {value!r}")
    return value if isinstance(value, int) else v


def _int(value: Any, field: str, where: _Where, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise where(field, f"must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise where(field, f"must be >= {minimum}, got {value}")
    return int(value)


def _str(value: Any, field: str, where: _Where, *, empty: bool = True) -> str:
    if not isinstance(value, str) or not empty and not value:
        raise where(field, f"must be a {'non-empty ' if not empty else ''}string, got {value!r}")
    return value


def _names(value: Any, field: str, where: _Where) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise where(field, f"must be a list of parameter names, got {value!r}")
    if len(set(value)) != len(value):
        raise where(field, f"lists a name twice: {list(value)}")
    return tuple(value)


def _centre(p: Mapping[str, Any], shape: tuple[int, ...], where: _Where) -> None:
    """A centred output bias: the weight it centres, and (once measured) its seed and values."""
    _str(p.get("weight"), "params.weight", where, empty=False)
    if ("values" in p) != ("seed" in p):
        raise where("params", "of scheme 'centre' must hold both 'seed' and 'values' (measured by initwise.init) "
                              "or neither")
    if "values" in p:
        _int(p["seed"], "params.seed", where, minimum=0)
        values = p["values"]
        if not isinstance(values, list) or len(values) != math.prod(shape):
            raise where("params.values", f"must be a list of {math.prod(shape)} numbers (shape {list(shape)}), "
                                         f"got {type(values).__name__} of {len(values) if isinstance(values, list) else '?'}")
        for v in values:
            _num(v, "params.values", where)


def _family(scheme: str) -> str:
    for prefix in ("xavier", "kaiming", "lecun"):
        if scheme.startswith(prefix + "_") and scheme[len(prefix) + 1:] in _ENTRY_DISTRIBUTIONS:
            return prefix
    return scheme


def _known_schemes() -> list[str]:
    fams = [f"{f}_{d}" for f in ("xavier", "kaiming", "lecun") for d in _ENTRY_DISTRIBUTIONS]
    return fams + [s for s in _PARAMS if s not in ("variance",)]


def check_entry_dict(d: Any, index: int = 0) -> dict[str, Any]:
    """The keyword arguments of a :class:`~initwise.plan.PlanEntry` from its JSON dict,
    checked (see the module docstring); ``ValueError`` naming entry ``index`` and the field."""
    where = _Where(index, d.get("name") if isinstance(d, Mapping) else None)
    if not isinstance(d, Mapping):
        raise ValueError(f"plan entry {index}: must be a JSON object, got {type(d).__name__}")
    unknown = [k for k in d if k not in ENTRY_FIELDS]
    if unknown:
        raise where(unknown[0], f"unknown field; an entry has the fields {', '.join(ENTRY_FIELDS)}")
    for key in ("name", "shape", "scheme", "distribution", "fan_in", "fan_out", "gain", "std"):
        if key not in d:
            raise where(key, "is missing (write null for 'no value')")
    out: dict[str, Any] = {"name": _str(d["name"], "name", where, empty=False)}
    shape = d["shape"]
    if not isinstance(shape, (list, tuple)):
        raise where("shape", f"must be a list of sizes, got {shape!r}")
    out["shape"] = tuple(_int(s, "shape", where, minimum=0) for s in shape)
    for key in ("layer", "activation", "reason"):
        out[key] = _str(d.get(key, ""), key, where)
    scheme = _str(d["scheme"], "scheme", where)
    family = _family(scheme)
    if family not in ("xavier", "kaiming", "lecun") and scheme not in _PARAMS or scheme == "variance":
        raise where("scheme", f"unknown scheme {scheme!r}; a plan entry's scheme is one of "
                              f"{', '.join(_known_schemes())}")
    out["scheme"] = scheme
    out["distribution"] = _str(d["distribution"], "distribution", where)
    out["fan_in"] = _num(d["fan_in"], "fan_in", where, positive=True, null=True)
    out["fan_out"] = _num(d["fan_out"], "fan_out", where, positive=True, null=True)
    out["gain"] = _num(d["gain"], "gain", where, positive=True, null=True)
    out["std"] = _num(d["std"], "std", where, nonneg=True, null=True)
    params = d.get("params", {})
    if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
        raise where("params", f"must be a JSON object, got {params!r}")
    out["params"] = dict(params)
    out["shared_with"] = _names(d.get("shared_with", []), "shared_with", where)
    if out["name"] in out["shared_with"]:
        raise where("shared_with", f"lists the entry's own name {out['name']!r}; it holds the *other* "
                                   "names of a tied parameter")
    out["writes"] = _names(d.get("writes", []), "writes", where)
    out["predicted_std"] = _num(d.get("predicted_std"), "predicted_std", where, nonneg=True, null=True)
    _check_consistency(out, family, where)
    return out


def _check_consistency(e: dict[str, Any], family: str, where: _Where) -> None:
    """The scheme's distribution, required values, params and std formula."""
    scheme, p, shape = e["scheme"], e["params"], e["shape"]
    kind = "variance" if family in _DEFAULT_MODE else scheme
    allowed = _PARAMS[kind]
    for key in p:
        if key not in allowed:
            raise where(f"params.{key}", f"is not a parameter of scheme {scheme!r} (it takes: "
                                         f"{', '.join(allowed) or 'none'})")
    if family in _DEFAULT_MODE:
        want_dist = scheme[len(family) + 1:]
    else:
        want_dist = _FIXED[scheme][0] if scheme in _FIXED else "-"
    if e["distribution"] != want_dist:
        hint = (f"; for a {e['distribution']} draw use scheme {family}_{e['distribution']}"
                if family in _DEFAULT_MODE and e["distribution"] in _DISTRIBUTIONS else "")
        raise where("distribution", f"is {e['distribution']!r}, but scheme {scheme!r} draws "
                                    f"{want_dist!r}: edit the scheme and the distribution together{hint}")
    if "padding_idx" in p:
        _padding(p["padding_idx"], shape, where)
    if "effective_std" in p:
        _num(p["effective_std"], "params.effective_std", where, nonneg=True)
    if "block_gains" in p:
        gains = p["block_gains"]
        if not isinstance(gains, list) or not gains or not shape or shape[0] % len(gains) \
                or scheme.endswith("orthogonal"):
            raise where("params.block_gains", f"must be a list of gains, one per equal block of the rows "
                                              f"(shape {list(shape)}), of a non-orthogonal draw; got {gains!r}")
        for k in gains:
            _num(k, "params.block_gains", where, nonneg=True)
    if "cut" in p:
        _num(p["cut"], "params.cut", where, positive=True)
        if e["distribution"] != "truncated_normal":
            raise where("params.cut", f"cuts a truncated_normal draw (in its standard deviations), but scheme "
                                      f"{scheme!r} draws {e['distribution']!r}: drop it or use a *_truncated_normal "
                                      "scheme")
    std = e["std"]
    if scheme in ("keep", "weight_norm_g"):
        if std is not None:
            raise where("std", f"must be null for scheme {scheme!r}, which draws nothing; got {std!r}")
        if scheme == "weight_norm_g":
            _str(p.get("of"), "params.of", where, empty=False)
            _int(p.get("dim", 0), "params.dim", where)
        return
    if std is None:
        raise where("std", f"is null, but scheme {scheme!r} draws values; give their std")
    if scheme == "centre":
        _centre(p, shape, where)
        _agree(std, 0.0, "scheme 'centre' draws nothing random (std 0)", where)
        return
    if scheme in ("zeros", "constant"):
        if scheme == "constant":
            if "value" not in p:
                raise where("params.value", "is missing: scheme 'constant' needs the value to fill")
            _num(p["value"], "params.value", where)
        _agree(std, 0.0, f"scheme {scheme!r} draws nothing random (std 0)", where)
        return
    if scheme in _FIXED:
        _, key, default = _FIXED[scheme]
        value = _num(p.get(key, default), f"params.{key}", where, positive=True)
        expected = value if key == "std" else value / math.sqrt(3.0)
        formula = f"params.std {value}" if key == "std" else f"params.bound / sqrt(3) with bound {value}"
        _agree(std, expected, f"scheme {scheme!r} draws std {formula}", where)
        return
    gain = e["gain"]
    if gain is None:
        raise where("gain", f"is null, but scheme {scheme!r} scales by a gain; write it (1 for none)")
    if family in _DEFAULT_MODE:
        for key in ("fan_in", "fan_out"):
            if e[key] is None:
                raise where(key, f"is null, but scheme {scheme!r} needs both fans")
        mode = p.get("mode", _DEFAULT_MODE[family])
        if mode not in _MODES:
            raise where("params.mode", f"must be one of {', '.join(_MODES)}, got {mode!r}")
        expected = variance_scaling_std(gain * gain, mode, e["fan_in"], e["fan_out"])
        _agree(std, expected, f"scheme {scheme!r} with gain {gain}, {mode} of fans ({e['fan_in']}, "
                              f"{e['fan_out']}) draws std {expected:.6g}", where)
        return
    blocks = _int(p.get("blocks", 1), "params.blocks", where, minimum=1)
    if len(shape) < 2 or shape[0] % blocks:
        raise where("params.blocks" if len(shape) >= 2 else "shape",
                    f"an orthogonal weight needs 2+ dimensions whose rows split into {blocks} blocks; "
                    f"shape {list(shape)}")
    rows = shape[0] // blocks
    if scheme == "orthogonal":
        expected = gain / math.sqrt(max(rows, math.prod(shape[1:])))
    else:
        if not 3 <= len(shape) <= 5 or any(k % 2 == 0 for k in shape[2:]):
            raise where("shape", f"delta_orthogonal needs a convolution weight with odd kernel sizes, "
                                 f"got {list(shape)}")
        expected = gain / math.sqrt(max(rows, shape[1])) / math.sqrt(math.prod(shape[2:]))
    _agree(std, expected, f"scheme {scheme!r} with gain {gain} and {blocks} block(s) of shape "
                          f"{list(shape)} draws std {expected:.6g}", where)


def _agree(std: float, expected: float, what: str, where: _Where) -> None:
    if abs(std - expected) > _REL * max(abs(expected), 1e-300):
        raise where("std", f"is {std!r}, but {what}: the drawn values would not have the std the plan "
                           "shows. Edit std together with the values it follows from (gain, fans, "
                           "params), or change the scheme")


def _padding(value: Any, shape: tuple[int, ...], where: _Where) -> None:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise where("params.padding_idx", "is an empty list")
    rows = shape[0] if shape else 0
    for i in items:
        if isinstance(i, bool) or not isinstance(i, int):
            raise where("params.padding_idx", f"must be a row index (an integer) or a list of them, got "
                                              f"{type(i).__name__} {i!r}")
        if not 0 <= i < rows:
            raise where("params.padding_idx", f"row {i} is outside the weight's {rows} rows")


def check_plan_dict(d: Any) -> dict[str, Any]:
    """The checked top-level fields of a plan dict (``entries`` as lists of
    :class:`PlanEntry` keyword arguments); ``ValueError`` naming the field or the entry."""
    if not isinstance(d, Mapping) or "entries" not in d:
        raise ValueError("not an initwise plan: expected a JSON object with an 'entries' list")
    where = _Where(None)
    unknown = [k for k in d if k not in PLAN_FIELDS]
    if unknown:
        raise where(unknown[0], f"unknown field; a plan has the fields {', '.join(PLAN_FIELDS)}")
    version = d.get("initwise_plan", 1)
    if version != 1 or isinstance(version, bool):
        raise where("initwise_plan", f"plan format version {version!r} is not supported (this initwise "
                                     "reads version 1, written by Plan.to_json)")
    out: dict[str, Any] = {}
    for key in ("policy", "method", "note"):
        out[key] = _str(d.get(key, ""), key, where)
    out["distribution"] = d.get("distribution", "normal")
    if out["distribution"] not in _DISTRIBUTIONS:
        raise where("distribution", f"must be one of {', '.join(_DISTRIBUTIONS)}, got {out['distribution']!r}")
    seed = d.get("seed")
    if seed is not None:
        seed = _int(seed, "seed", where, minimum=0)
    out["seed"] = seed
    entries = d["entries"]
    if not isinstance(entries, list):
        raise where("entries", f"must be a list, got {type(entries).__name__}")
    out["entries"] = [check_entry_dict(e, i) for i, e in enumerate(entries)]
    check_names(out["entries"])
    return out


def check_names(entries: list[Mapping[str, Any]]) -> None:
    """No parameter name (or written tensor) in two entries; a weight_norm magnitude's
    direction is an entry of the plan."""
    seen: dict[str, int] = {}
    written: dict[str, int] = {}
    for i, e in enumerate(entries):
        for n in (e["name"], *e["shared_with"]):
            if n in seen:
                field = "name" if n == e["name"] else "shared_with"
                raise _Where(i, e["name"])(field, f"{n!r} is already in plan entry {seen[n]}; each parameter "
                                                  "is planned once (tied names go in one entry's shared_with)")
            seen[n] = i
        for n in e["writes"]:
            if n in written:
                raise _Where(i, e["name"])("writes", f"{n!r} is also written by plan entry {written[n]}")
            written[n] = i
    for i, e in enumerate(entries):
        if e["scheme"] == "weight_norm_g" and e["params"].get("of") not in seen:
            raise _Where(i, e["name"])("params.of", f"the direction {e['params'].get('of')!r} is not in the plan")


# ------------------------------------------------------------------------------ against a model
def _parametrized(model: nn.Module) -> dict[str, tuple[nn.Module, str, list[str], str]]:
    """Effective name -> (owner, tensor name, qualified names of the originals, prefix)."""
    out = {}
    for mname, module in model.named_modules(remove_duplicate=False):
        if parametrize.is_parametrized(module):
            prefix = f"{mname}." if mname else ""
            for pname, plist in module.parametrizations.items():
                originals = [f"{prefix}parametrizations.{pname}.{n}" for n, _ in plist.named_parameters()
                             if "." not in n]
                out[prefix + pname] = (module, pname, originals, prefix)
    return out


def _effective_shape(module: nn.Module, pname: str) -> tuple[int, ...]:
    """Shape of a parametrized tensor, computed in eval mode and without gradients so that no
    buffer (spectral norm's power iteration) changes."""
    plist = module.parametrizations[pname]
    flags = [(m, m.training) for m in plist.modules()]
    try:
        plist.eval()
        with torch.no_grad():
            return tuple(getattr(module, pname).shape)
    finally:
        for m, flag in flags:
            m.training = flag


def check_plan_model(entries: list[Any], model: nn.Module) -> None:
    """Check plan ``entries`` (:class:`PlanEntry` objects) against ``model`` (see the module
    docstring); reads the model only."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"a plan is checked against an nn.Module, got {type(model).__name__}")
    model_name = type(model).__name__
    tensors = dict(model.named_parameters(remove_duplicate=False))
    virtual = _parametrized(model)
    covered: set[str] = set()
    first_of: dict[int, int] = {}
    for i, e in enumerate(entries):
        where = _Where(i, e.name)
        names = (e.name, *e.shared_with)
        covered.update(names)
        covered.update(e.writes)
        if e.name in virtual or e.writes:
            if e.name not in virtual:
                raise where("writes", f"{e.name!r} is not a parametrized tensor of {model_name}; was the "
                                      "plan made for another model?")
            owner, pname, originals, _ = virtual[e.name]
            covered.update(originals)
            shape = _effective_shape(owner, pname)
            if tuple(e.shape) != shape:
                raise where("shape", f"is {list(e.shape)}, but {model_name}'s {e.name} has shape {list(shape)}")
            continue
        for n in names:
            if n not in tensors:
                raise where("name" if n == e.name else "shared_with",
                            f"{n!r} is not a parameter of {model_name}; was the plan made for another model?")
        t = tensors[e.name]
        others = [n for n in e.shared_with if tensors[n] is not t]
        if others:
            raise where("shared_with", f"{others[0]!r} is a different tensor from {e.name!r} in {model_name}; "
                                       "shared_with lists only names of the same (tied) tensor")
        if id(t) in first_of:
            raise where("name", f"{e.name!r} is the same tensor as plan entry {first_of[id(t)]} in "
                                f"{model_name} (tied): plan it once, with the other names in shared_with")
        first_of[id(t)] = i
        if isinstance(t, nn.parameter.UninitializedParameter):
            if e.scheme != "keep":
                raise where("scheme", f"{e.name!r} is lazy (not materialized yet): run a forward pass first")
            continue
        if tuple(e.shape) != tuple(t.shape):
            raise where("shape", f"is {list(e.shape)}, but {model_name}'s {e.name} has shape {list(t.shape)}; "
                                 "was the plan made for another model?")
        if e.scheme == "keep":
            continue
        if not t.is_floating_point():
            raise where("scheme", f"{e.name!r} has dtype {t.dtype}: only floating-point tensors can be "
                                  "initialized; use scheme 'keep' (and std null)")
        if e.std is not None and e.std > torch.finfo(t.dtype).max / 16:
            raise where("std", f"{e.std:.3g} is beyond what {e.name}'s dtype {t.dtype} holds")
    missing = [n for n in tensors if n not in covered]
    if missing:
        raise ValueError(f"parameter {missing[0]!r} of {model_name} is not in the plan ({len(missing)} "
                         "missing); was the plan made for another model? Build it with initwise.plan(model)")
