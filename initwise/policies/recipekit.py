"""The pieces the recipes (:mod:`.recipes`) share: the context of one recipe's run (which
tensors it may decide, the chains of :mod:`.branches`), and writers that set a plan entry to a
scheme consistently (std, gain, fans and params agree, as :mod:`initwise.plancheck` checks).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..graph import Graph
from ..nodes import Node
from ..plan import PlanEntry
from ..schemes import variance_scaling_std
from ..streams import truncated_std
from . import branches as br

__all__ = ["Ctx", "CUT", "normal", "scaled", "trunc3", "zeros", "constant", "num", "fmt", "claim_defaults",
           "dense", "need_branches", "last_entry", "where"]

#: Truncation used by torchtitan's output layer and by OLMo (in standard deviations).
CUT = 3.0


@dataclass
class Ctx:
    graph: Graph
    name: str
    by_name: dict[str, PlanEntry]
    owned: set[int]
    chains: list[br.Chain]
    decided: dict[int, PlanEntry] = field(default_factory=dict)
    node_of: dict[str, Node] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def entry(self, name: str | None) -> PlanEntry | None:
        """The entry of tensor ``name`` if this recipe may decide it (the standard policy owns it:
        not a rule's, not frozen, not parametrized)."""
        e = self.by_name.get(name) if name else None
        if e is None:
            return None
        if id(e) not in self.owned or e.reason.startswith("rule "):  # a rule's choice (even "standard") stays
            if name not in self.skipped:
                self.skipped.append(name)
            return None
        self.decided[id(e)] = e
        return e

    def fans(self, name: str, e: PlanEntry) -> tuple[float, float]:
        """The fans of weight ``name`` as the layer that applies it sees them."""
        n = self.node_of.get(name)
        return br.fans_of(n, e) if n is not None else br.fans_of(Node(-1, "?", "?", (), (), False), e)

    @property
    def branches(self) -> list[br.Branch]:
        return [b for c in self.chains for b in c.branches]


# ----------------------------------------------------------------------------- entry writers
def _pad(e: PlanEntry) -> dict:
    return {k: v for k, v in e.params.items() if k == "padding_idx" and v is not None}


def normal(e: PlanEntry, std: float, why: str) -> None:
    """``N(0, std^2)``, a fixed std (no fans)."""
    e.scheme, e.distribution, e.gain, e.std = "normal", "normal", None, float(std)
    e.params = {"std": float(std), **_pad(e)}
    e.reason = why


def scaled(e: PlanEntry, family: str, distribution: str, gain: float, fans: tuple[float, float], why: str,
            cut: float | None = None) -> None:
    """A variance-scaling scheme (``kaiming``: mode fan_in, ``xavier``: fan_avg) with ``fans``,
    ``gain`` and a truncation ``cut``."""
    fi, fo = float(fans[0]), float(fans[1])
    mode = "fan_in" if family == "kaiming" else "fan_avg"
    e.scheme, e.distribution = f"{family}_{distribution}", distribution
    e.fan_in, e.fan_out, e.gain = num(fi), num(fo), float(gain)
    e.std = variance_scaling_std(gain * gain, mode, fi, fo)
    e.params = {**({"mode": mode} if family == "kaiming" else {}),
                **({"blocks": e.params["blocks"]} if "blocks" in e.params else {}), **_pad(e),
                **({"cut": cut} if cut is not None else {})}
    e.reason = why


def trunc3(e: PlanEntry, s: float, fans: tuple[float, float], why: str) -> None:
    """torch's ``trunc_normal_(std=s, a=-3s, b=3s)`` as a truncated normal over ``fans[0]``
    inputs: the drawn std is ``truncated_std(3) s``, written ``gain / sqrt(fan_in)``."""
    scaled(e, "kaiming", "truncated_normal", truncated_std(CUT) * s * math.sqrt(fans[0]), fans, why, cut=CUT)


def zeros(e: PlanEntry, why: str) -> None:
    e.scheme, e.distribution, e.fan_in, e.fan_out, e.gain, e.std, e.params = "zeros", "-", None, None, None, 0.0, {}
    e.reason = why


def constant(e: PlanEntry, value: float, why: str) -> None:
    e.scheme, e.distribution, e.fan_in, e.fan_out, e.gain, e.std = "constant", "-", None, None, None, 0.0
    e.params = {"value": float(value)}
    e.reason = why


def num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def fmt(x: float) -> str:
    return f"{x:.4g}"


# ----------------------------------------------------------------------------- shared pieces
def claim_defaults(ctx: Ctx) -> None:
    """Biases 0, normalization layers 1 and 0, PReLU 0.25: the table's fills, claimed so the
    standard policy leaves them."""
    for e in {id(e): e for e in ctx.by_name.values()}.values():
        if id(e) in ctx.owned and e.scheme in ("zeros", "constant"):
            ctx.decided[id(e)] = e


def dense(g: Graph) -> list[tuple[Node, str]]:
    out, seen = [], set()
    for n in g.nodes:
        if br.is_dense(n):
            for w in br.dense_weights(n):
                if w not in seen:
                    seen.add(w)
                    out.append((n, w))
    return out


def need_branches(ctx: Ctx) -> None:
    if not ctx.branches:
        raise ValueError(f"policy {ctx.name!r} scales residual branches, but initwise finds no residual sum "
                         f"h + f(h) in the recorded forward pass of this model; use a recipe without branches "
                         "('gpt2', 'torchtitan', 'olmo_mitchell' apply their base rules to any model) or "
                         "policy='standard'")


def last_entry(ctx: Ctx, b: br.Branch) -> PlanEntry | None:
    if b.last is None:
        ctx.notes.append(f"residual sum {ctx.graph.nodes[b.add].op}() in '{ctx.graph.nodes[b.add].module}': "
                         "no last layer found, left at the base rule")
        return None
    return ctx.entry(br.weight_name(b.last))


def where(ctx: Ctx, b: br.Branch) -> str:
    n = ctx.graph.nodes[b.add]
    return f"branch {b.index + 1} (block {b.block}) of its chain, summed in '{n.module or 'the model'}'"
