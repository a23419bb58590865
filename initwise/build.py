"""Building a plan: every parameter tensor of the model, the policy or rule that decides it,
and the entry it gets. Reads the model only (:meth:`initwise.Plan.apply` writes).

Tensors are collected once each (tied parameters under all their names; parametrized weights
through their effective tensor, written through the originals); rules (:mod:`initwise.rules`)
override the policy (:mod:`initwise.policies`); the standard policy reads one recorded forward
pass (:mod:`initwise.graph`) and the signal propagated through it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm

import math

from .activations import Activation
from .discover import ORDER_GUESS, Discovery, activations_of, warn_order
from .fans import fans as _fans
from .graph import Graph, record
from .nodes import is_norm, scale_offsets
from .plan import Plan, PlanEntry
from .write import _effective_note, _effective_shape, _is_lazy, _originals
from .policies import normalize_policy
from .policies.common import DISTRIBUTIONS, FAN_FREE, fan_free
from .policies.pytorch import torch_entry, torch_tags
from .policies.recipes import RECIPES, apply_recipe
from .policies.schemes import scheme_entry
from .policies.standard import RESIDUAL_MODES, refine
from .policies.table import standard_entry
from .rules import Rule, parse_rules, resolve

__all__ = ["build_plan"]


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
            key = _memory_key(p)
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


def _memory_key(p: torch.Tensor) -> Any:
    """Parameters that are the same view of the same memory (two ``nn.Parameter`` objects over
    one tensor) are one tensor to plan: tied. Anything else is told apart by identity."""
    if p.is_meta or _is_lazy(p) or type(p) not in (nn.Parameter, torch.Tensor) or p.numel() == 0:
        return id(p)
    try:
        return ("memory", p.untyped_storage().data_ptr(), p.storage_offset(), tuple(p.shape), p.stride(), p.dtype)
    except (RuntimeError, NotImplementedError):
        return id(p)


def build_plan(model: nn.Module, example_input: Any = None, *, rules: Mapping[Any, Any] | None = None,
               policy: str = "standard", distribution: str = "normal", residual: str = "scaled",
               include_frozen: bool = False, graph: Graph | None = None) -> Plan:
    """Build the :class:`Plan` for ``model`` without changing it (see the module docstring).

    ``rules`` override the policy: keys are parameter-name globs (``"head.*"``), layer types
    (``nn.LSTM``), modules of the model, or activations (``"activation:tanh"`` or an activation
    class such as ``nn.Tanh``: layers whose output feeds it); values are scheme names,
    ``"keep"``, ``"standard"`` or ``"torch"``. A name or module rule beats a type rule, which
    beats an activation rule; two rules of the same rank that disagree on a parameter, and a
    rule that matches nothing, are errors. Fan-based schemes in a rule apply to the matched
    weights (biases 0, norms 1/0); ``zeros``/``small_*`` apply to every matched tensor.
    ``residual`` (``"scaled"``, ``"zero"``, ``"none"``) and the propagation are the standard
    policy's (:mod:`initwise.policies.standard`). Tensors with ``requires_grad=False`` are kept
    (reason ``"frozen"``) unless ``include_frozen``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected an nn.Module, got {type(model).__name__}")
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    if residual not in RESIDUAL_MODES:
        raise ValueError(f"residual must be one of {', '.join(map(repr, RESIDUAL_MODES))}; got {residual!r}")
    if not isinstance(include_frozen, bool):
        raise TypeError(f"include_frozen must be True or False, got {include_frozen!r}")
    policy = normalize_policy(policy, distribution)
    recipe, policy = (policy, "standard") if policy in RECIPES else (None, policy)  # a recipe starts as standard
    parsed = parse_rules(rules, model, distribution)
    needs_graph = (policy == "standard" or any(r.value == "standard" or r.kind == "activation" for r in parsed))
    if graph is None and needs_graph:
        graph = record(model, example_input)
    acts_of = Discovery("forward", activations_of(graph)) if graph is not None else None
    if graph is not None and graph.method == "order":
        warn_order(model, graph.note.split(" because ", 1)[-1])
    module_ids = {id(r.key): {id(m) for m in r.key.modules()} for r in parsed if r.kind == "module"}
    tags = torch_tags(model)
    offsets = _norm_offsets(model, graph)

    entries, owned = [], []
    tensors: dict[str, torch.Tensor] = {}
    for item in _collect(model):
        contexts = []
        for alias in item.aliases:
            acts = acts_of.of(alias.module_name) if acts_of is not None else ()
            contexts.append((alias, acts))
        chosen_policy, rule = resolve(item, contexts, parsed, policy, module_ids)
        candidates = []
        for alias, acts in contexts:
            e = _entry(chosen_policy, item, alias, acts, distribution, explicit=rule is not None,
                       torch_tags=tags.get(id(alias.module), frozenset()), offsets=offsets)
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
        frozen = _frozen(item)
        if frozen and not include_frozen and best.scheme != "keep" and (rule is None or rule.value == "standard"):
            best = PlanEntry(best.name, best.shape, best.layer, best.activation, "keep", "-", None, None, None, None,
                             "frozen (requires_grad=False): kept; pass include_frozen=True to initialize it",
                             shared_with=best.shared_with)
        _keep_padding_rows(best, item)
        if item.writes:
            best.writes = item.writes
            best.reason += f" (parametrized by {item.parametrization}: written through the original tensor)"
            owner = item.aliases[0].module
            _effective_note(best, owner.parametrizations[item.aliases[0].local], item.parametrization)
        if graph is not None and graph.method == "order" and best.scheme != "keep" \
                and _uses_activation(chosen_policy, rule, item):
            best.reason += (f" [activation {ORDER_GUESS}, because {graph.note.split(' because ', 1)[-1]}"
                            "; pass example_input to follow the data flow]")
        if item.tensor is not None:
            tensors[best.name] = item.tensor
        entries.append(best)
        if chosen_policy == "standard" and not (frozen and not include_frozen) and not item.writes:
            owned.append(best)
    unused = [r.label for r in parsed if not r.used]
    if unused:
        raise ValueError(f"rule {unused[0]} matches no parameter of {type(model).__name__}; "
                         f"parameter names look like {entries[0].name if entries else '(none)'!r}")
    method = graph.method if graph is not None else "not needed"
    notes = [graph.note] if graph is not None else [f"policy {policy!r} does not depend on activations"]
    if graph is not None and graph.method == "order":
        notes = [f"FALLBACK: activations {ORDER_GUESS}, which cannot see functional calls such as torch.relu, because "
                 f"{graph.note.split(' because ', 1)[-1]}; pass example_input (CLI: --input-shape) to follow the data flow"]
    if recipe is not None:  # the recipe decides its tensors, the standard policy the rest (policies/recipes.py)
        owned, more = apply_recipe(recipe, entries, owned, graph, distribution=distribution, tensors=tensors)
        notes += more
    elif owned and graph is not None and graph.method != "order":
        notes += refine(entries, owned, graph, residual=residual, distribution=distribution, tensors=tensors)
    notes += _kept_notes(entries, tensors, owned)
    return Plan(entries, policy=recipe or policy, distribution=distribution, method=method,
                note="; ".join(n for n in notes if n))


def _frozen(item: _Tensor) -> bool:
    if item.tensor is not None:
        return not item.tensor.requires_grad
    return False


def _kept_notes(entries: list[PlanEntry], tensors: dict[str, torch.Tensor], owned: list[PlanEntry]) -> list[str]:
    """Name what the plan keeps (and why), and tensors the model had set to a constant that
    the plan now draws (a framework's deliberate init, e.g. zero_init_residual)."""
    notes = []
    unknown = [e for e in entries if e.scheme == "keep" and not e.reason.startswith(("frozen", "rule", "left"))]
    if unknown:
        size = sum(math.prod(e.shape) for e in unknown)
        notes.append(f"{len(unknown)} tensor(s) kept ({size} elements) because their use could not be read: "
                     + ", ".join(repr(e.name) for e in unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    frozen = [e for e in entries if e.reason.startswith("frozen")]
    if frozen:
        notes.append(f"{len(frozen)} frozen tensor(s) kept: " + ", ".join(repr(e.name) for e in frozen[:5])
                     + (" ..." if len(frozen) > 5 else ""))
    owned_ids = {id(e) for e in owned}
    constants = []
    for e in entries:
        t = tensors.get(e.name)
        if id(e) not in owned_ids or e.scheme == "keep" or t is None or t.is_meta or t.numel() < 2 \
                or not t.is_floating_point() or type(t) not in (nn.Parameter, torch.Tensor):
            continue
        flat = t.detach().reshape(-1)
        if bool((flat == flat[0]).all()):
            value = float(flat[0])
            usual = (value == 0.0 and e.scheme == "zeros") or (value == 1.0 and e.scheme == "constant"
                                                                and e.params.get("value") == 1.0)
            if not usual:
                constants.append((e.name, value))
    if constants:
        shown = ", ".join(f"{n!r} (was {v:g})" for n, v in constants[:4]) + (" ..." if len(constants) > 4 else "")
        glob = constants[0][0]
        notes.append(f"{len(constants)} tensor(s) the model set to a constant are re-drawn by this plan: {shown}; "
                     f"the residual rule reaches the same goal; to keep them, add rules={{{glob!r}: 'keep'}}")
    return notes


def _uses_activation(policy: str, rule: "Rule | None", item: _Tensor) -> bool:
    """True when the entry's scheme was chosen from the discovered activations: a standard-policy
    weight of a dense layer, or a tensor selected by an activation rule."""
    if rule is not None and rule.kind == "activation":
        return True
    return policy == "standard" and any(
        layer_kind(a.module, a.local) == "dense" and param_role("dense", a.local) == "weight" for a in item.aliases)


def layer_kind(module: nn.Module, local: str) -> str:
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return "dense"
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return "embedding"
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        return "rnn"
    if is_norm(module):
        return "norm"
    if isinstance(module, nn.PReLU):
        return "prelu"
    return "unknown"


def param_role(kind: str, local: str) -> str:
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


def _norm_offsets(model: nn.Module, graph: Graph | None) -> dict[int, float]:
    """id(norm module) -> :func:`~initwise.nodes.scale_offset` where it is not 0: read from the
    recorded graph when there is one, else probed once per norm class and settings."""
    if graph is not None:
        return {id(n.info["module"]): n.info["scale_offset"] for n in graph.nodes
                if n.kind == "layer" and n.info.get("scale_offset")}
    return scale_offsets(model.modules())


def _entry(policy: str, item: _Tensor, alias: _Alias, acts: tuple[Activation, ...], distribution: str,
           explicit: bool, torch_tags: frozenset[str] = frozenset(), offsets: Mapping[int, float] | None = None
           ) -> PlanEntry:
    """The table's entry for one name of ``item``; ``offsets``: id(norm module) -> its
    :func:`~initwise.nodes.scale_offset` where not 0."""
    module, local, shape = alias.module, alias.local, item.shape
    legacy_wn = _legacy_weight_norm(module, local)
    if legacy_wn is not None:  # weight_v is drawn as the weight itself (weight_g follows it)
        local = legacy_wn[0]
    kind = layer_kind(module, local)
    role = param_role(kind, local)
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
    if explicit and policy in FAN_FREE:
        return fan_free(make, policy, "")
    if legacy_wn is not None and alias.local == legacy_wn[0] + "_g":
        of = alias.name[: len(alias.name) - len(alias.local)] + legacy_wn[0] + "_v"
        return make("weight_norm_g", "-", None, None, None, None,
                    f"weight_norm magnitude: g = ||{of}|| (dim {legacy_wn[1]}), so the effective "
                    f"{legacy_wn[0]} g v/||v|| equals the drawn {legacy_wn[0]}_v", of=of, dim=legacy_wn[1])
    if kind == "unknown" or not role:
        what = f"{layer}.{alias.local}" if kind != "unknown" else f"layer type {layer}"
        return make("keep", "-", None, None, None, None, f"{what} unknown to initwise: kept as it is")
    off = (offsets or {}).get(id(module), 0.0) if role == "scale" else 0.0
    if off:
        why = (f"{type(module).__name__} scales by {off:g} + weight (the form of Gemma's RMSNorm): weight "
               f"{1 - off:g} starts it as the identity")
        return (make("zeros", "-", None, None, None, 0.0, why) if off == 1.0 else
                make("constant", "-", None, None, None, 0.0, why, value=1.0 - off))
    if policy == "torch":
        return torch_entry(make, kind, role, module, local, shape, torch_tags)
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
        return standard_entry(make, kind, role, module, local, shape, fan_in, fan_out, acts, distribution)
    return scheme_entry(make, policy, kind, role, module, local, shape, fan_in, fan_out)


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
