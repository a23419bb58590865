"""User rules that override a policy: by parameter-name glob, layer type, module or activation.

``{"head.*": "zeros", nn.LSTM: "orthogonal", "encoder.*": "keep", "activation:tanh": "xavier_uniform"}``:
a name or module rule beats a type rule, which beats an activation rule; two rules of the same
rank that disagree on a parameter, and a rule that matches nothing, are errors.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Mapping

from torch import nn

from .activations import Activation
from .gains import GAIN_NAMES, activation_name
from .schemes import canonical_name

__all__ = ["Rule", "parse_rules", "resolve", "act_key", "with_distribution", "normalize_value"]


@dataclass
@dataclass
class Rule:
    key: Any
    label: str
    kind: str  # "name", "module", "type", "activation"
    value: str
    level: int
    used: bool = False


def with_distribution(raw: str, name: str, distribution: str) -> str:
    """A family name without a distribution ("he", "xavier", "lecun", "glorot", "kaiming") takes
    ``distribution``; a full name ("he_uniform") keeps its own."""
    if not name.startswith(("xavier", "kaiming", "lecun")) or "normal" in raw or "uniform" in raw:
        return name
    return f"{name.split('_')[0]}_{distribution}"


def normalize_value(value: Any, label: str, distribution: str = "normal") -> str:
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
    return with_distribution(v, name, distribution)


def activation_key(name: str, label: str) -> str:
    n = name.strip().lower().replace("-", "_")
    if n in ("none", "linear", "identity"):
        return "none"
    if n == "swish":
        return "silu"
    if n not in GAIN_NAMES:
        raise ValueError(f"rule {label}: unknown activation {name!r}; known: none, {', '.join(GAIN_NAMES)}")
    return n


def parse_rules(rules: Mapping[Any, Any] | None, model: nn.Module, distribution: str) -> list[Rule]:
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
                act = activation_key(low.split(":", 1)[1], label)
                parsed.append(Rule(act, label, "activation", normalize_value(value, label, distribution), 2))
            else:
                parsed.append(Rule(low, label, "name", normalize_value(value, label, distribution), 0))
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
                parsed.append(Rule(activation_key(act, label) if act in GAIN_NAMES or act in ("none",) else act,
                                    label, "activation", normalize_value(value, label, distribution), 2))
            else:
                parsed.append(Rule(key, label, "type", normalize_value(value, label, distribution), 1))
        elif isinstance(key, nn.Module):
            names = [n for n, m in model.named_modules() if m is key]
            label = f"module {names[0]!r}" if names else f"module {type(key).__name__}"
            if not names:
                raise ValueError(f"rule {label}: this module is not part of the model")
            parsed.append(Rule(key, label, "module", normalize_value(value, label, distribution), 0))
        else:
            raise TypeError(f"rule key {key!r}: use a parameter-name glob ('head.*'), a layer type "
                            "(nn.LSTM), a module of the model, or 'activation:NAME'")
    return parsed


def resolve(item: Any, contexts, parsed: list[Rule], policy: str, module_ids) -> tuple[str, Rule | None]:
    matches: list[Rule] = []
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
                hit = any(act_key(a) == rule.key for a in acts)
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


def act_key(a: Activation) -> str:
    return "none" if a.name in ("none", "identity", "linear") else ("silu" if a.name == "swish" else a.name)
