"""The field's recipes as policies: ``policy="gpt2"``, ``"torchtitan"``, ``"olmo_mitchell"``,
``"t_fixup"``, ``"deepnorm"``, ``"fixup"``, ``"skipinit"``.

Each recipe was written for one family of models by hand; here it is applied to any model
whose residual branches initwise finds in the recorded forward pass (:mod:`.branches`: the
chains of residual sums, their blocks, each branch's layers and last layer). ``N`` is the
number of branches of a chain, ``L`` the number of its blocks and ``l`` (from 0) a block's
position on it; ``d_in`` a layer's fan-in. A recipe decides the tensors it has a rule for
(biases 0 and normalization layers 1/0 included); initwise's standard policy decides the rest
(``residual="none"``), seeing the recipe's values upstream. Where a recipe's assumptions do not
hold (Fixup on a model with normalization layers, T-Fixup without attention, T-Fixup or
DeepNorm with a value projection fused with the queries and keys in a layout initwise cannot
split, any recipe that needs residual branches on a model without them) it raises
``ValueError`` naming what is missing. ``nn.MultiheadAttention``'s ``in_proj_weight`` is split:
its value rows (the last third) get their own gain through ``params["block_gains"]``. The residual scalings that a recipe puts in the model's forward (DeepNorm's ``alpha``,
Fixup's scalar multipliers and biases) are the model's: the recipes set weights only.

==============  ====================================================================================
recipe          weights (``N(0, s^2)`` unless said; ``trunc3``: cut at +-3 s, drawn std 0.98664 s)
==============  ====================================================================================
gpt2            every dense and embedding weight ``s = 0.02``; the last layer of each residual branch
                ``s = 0.02 / sqrt(N)`` (``N = 2L`` in a transformer: GPT-2's residual projections,
                Radford et al. 2019; Megatron-LM's ``scaled_init_method``, Shoeybi et al. 2019)
torchtitan      torchtitan's llama ``init_weights`` with ``depth_init``: embeddings ``s = 1``; dense
                ``s = 0.02`` (torch's ``trunc_normal_`` at its default +-2, i.e. 100 s: a normal);
                each branch's last layer and the linear half of a gated product (``w3``)
                ``s = 0.02 / sqrt(2 (l + 1))``; the output layer trunc3 ``s = d_in^(-1/2)``
olmo_mitchell   OLMo's ``init_fn="mitchell"`` (Groeneveld et al. 2024): trunc3 with ``s =
                1 / sqrt(d_in)`` for every dense weight, ``1 / sqrt(d)`` for embeddings of width
                ``d``, and ``1 / sqrt(d_in) / sqrt(2 (l + 1))`` for each branch's last layer
t_fixup         Huang et al. 2020: Xavier (uniform, gain 1) for every dense weight; embeddings that
                feed a chain ``s = d^(-1/2) (9L)^(-1/4)``; in each branch the value projections and
                the output projection of an attention, every layer of an MLP, scaled by ``(9L)^(-1/4)``
                on chains with 3 branches per block (the paper's decoder) or ``0.67 L^(-1/4)`` (2 per
                block: its encoder, or a decoder-only LM)
deepnorm        Wang et al. 2022 (weights part): Xavier normal with gain ``beta`` for the value and
                output projections of attention branches and every layer of the other branches,
                gain 1 for queries and keys; ``beta = (8L)^(-1/4)``, or for an encoder (``L``
                blocks) with a decoder (``M`` blocks, 3 branches per block) ``0.87 (L^4 M)^(-1/16)``
                and ``(12M)^(-1/4)``. ``x_{l+1} = LN(alpha x + f(x))`` with ``alpha = (2L)^(1/4)``
                (or ``0.81 (L^4 M)^(1/16)``, ``(3M)^(1/4)``) is the model's forward: initwise reports
                the skip scale it finds
fixup           Zhang et al. 2019: the last layer of each branch and the output layer 0; the other
                layers of a branch of ``m`` layers He (gain of their activation) times
                ``L_tot^(-1/(2m-2))``, ``L_tot`` the number of residual branches in the model;
                scalar parameters 1 where they multiply, 0 where they are added. Needs a model
                without normalization layers
skipinit        De & Smith 2020: the last scale of each branch 0 (a scalar multiplier, a norm's
                weight as in Goyal et al. 2017's ``zero_init_residual``, or the last layer), so
                every block starts as the identity; the rest initwise's standard choice
==============  ====================================================================================
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..graph import Graph
from ..nodes import Node
from ..plan import PlanEntry
from ..structure import _derives, affine_slope, branch_end
from . import branches as br
from .recipekit import (Ctx, claim_defaults, constant, dense, fmt, last_entry, need_branches, normal, num,
                        scaled, trunc3, where, zeros)
from .standard import refine

__all__ = ["RECIPES", "apply_recipe"]

# ----------------------------------------------------------------------------- the recipes
def _gpt2(ctx: Ctx) -> None:
    for n, w in dense(ctx.graph) + br.embedding_weights(ctx.graph):
        e = ctx.entry(w)
        if e is not None:
            normal(e, 0.02, "GPT-2/Megatron: N(0, 0.02^2) for every linear and embedding weight "
                             "(Radford et al. 2019; Shoeybi et al. 2019)")
    for c in ctx.chains:
        n = len(c.branches)
        for b in c.branches:
            e = last_entry(ctx, b)
            if e is not None:
                normal(e, 0.02 / math.sqrt(n), f"GPT-2/Megatron: last layer of {where(ctx, b)}: N(0, (0.02/sqrt(N))^2) "
                                                 f"with N = {n} residual branches on its chain (2 per block in a "
                                                 "transformer: 0.02/sqrt(2L))")
    if not ctx.chains:
        ctx.notes.append("no residual branches: every weight N(0, 0.02^2), no scaled projections")


def _torchtitan(ctx: Ctx) -> None:
    g = ctx.graph
    for n, w in br.embedding_weights(g):
        e = ctx.entry(w)
        if e is not None:
            normal(e, 1.0, "torchtitan: token embedding N(0, 1)")
    for n, w in dense(g):
        e = ctx.entry(w)
        if e is not None:
            normal(e, 0.02, "torchtitan: trunc_normal_(std=0.02) (cut at torch's default +-2, i.e. 100 std: a "
                              "normal)")
    for b in ctx.branches:
        std = 0.02 / math.sqrt(2 * (b.block + 1))
        last = br.weight_name(b.last) if b.last is not None else None
        names = ([last] if last else []) + [w for w in br.gated_halves(g, b) if w != last]
        for w in names:
            e = ctx.entry(w)
            if e is not None:
                what = "last layer" if w == last else "linear half of the gated product"
                normal(e, std, f"torchtitan depth_init: {what} of {where(ctx, b)}: 0.02/sqrt(2(l+1)) with l = "
                                f"{b.block}")
    for n in br.output_layers(g):
        e = ctx.entry(br.weight_name(n))
        if e is not None:
            fans = br.fans_of(n, e)
            trunc3(e, fans[0] ** -0.5, fans, f"torchtitan: output layer trunc_normal_(std=d^-1/2, cut +-3 std) with "
                                              f"d = {num(fans[0])}")


def _olmo(ctx: Ctx) -> None:
    g = ctx.graph
    for n, w in br.embedding_weights(g):
        e = ctx.entry(w)
        if e is not None and len(e.shape) == 2:
            d = float(e.shape[1])
            trunc3(e, d ** -0.5, (d, float(e.shape[0])), f"OLMo mitchell: embedding of width d = {num(d)}: "
                                                           "trunc_normal_(std=1/sqrt(d), cut +-3 std)")
    for n, w in dense(g):
        e = ctx.entry(w)
        if e is not None:
            fans = br.fans_of(n, e)
            trunc3(e, fans[0] ** -0.5, fans, f"OLMo mitchell: trunc_normal_(std=1/sqrt(d_in), cut +-3 std), d_in = "
                                              f"{num(fans[0])}")
    for b in ctx.branches:
        e = last_entry(ctx, b)
        if e is not None:
            fans = br.fans_of(b.last, e)
            d = fans[0]
            s = d ** -0.5 / math.sqrt(2 * (b.block + 1))
            trunc3(e, s, fans, f"OLMo mitchell: output projection of {where(ctx, b)}: 1/sqrt(d_in)/sqrt(2(l+1)) with "
                             f"d_in = {num(d)}, l = {b.block}, cut +-3 std")


def _value_and_out(ctx: Ctx, b: br.Branch) -> tuple[list[str], list[str], list[str]]:
    """``(scaled, kept, thirds)``: the weights a T-Fixup/DeepNorm branch scales, the attention
    weights it keeps at gain 1 (queries, keys), and fused ``in_proj_weight``s whose value third
    alone is scaled (``params["block_gains"]``)."""
    g = ctx.graph
    if not b.attention:
        return [w for n in b.layers for w in br.dense_weights(n)], [], []
    values, thirds, fused = br.value_names(g, b)
    if fused:
        raise ValueError(f"policy {ctx.name!r} scales the value projection of each attention alone, but "
                         f"{fused[0]!r} holds it fused with the query/key projections in one tensor "
                         f"({where(ctx, b)}); use separate q/k/v layers (or nn.MultiheadAttention, whose "
                         "in_proj_weight initwise splits), or another recipe")
    out = [br.weight_name(b.last)] if b.last is not None else []
    chosen = list(dict.fromkeys(values + out))
    kept = [w for n in b.layers for w in br.dense_weights(n) if w not in chosen and w not in thirds]
    return chosen, kept, thirds


def _scale_value_third(ctx: Ctx, w: str, family_dist: tuple[str, str], factor: float, why: str) -> None:
    """q and k at gain 1, the value third of a fused ``in_proj_weight`` times ``factor``."""
    e = ctx.entry(w)
    if e is not None:
        scaled(e, *family_dist, 1.0, ctx.fans(w, e), why)
        e.params["block_gains"] = [1.0, 1.0, float(factor)]


def _feeds(g: Graph, chain: br.Chain, emb: Node) -> bool:
    """Whether embedding lookup ``emb`` feeds the start of ``chain``."""
    first = chain.branches[0].residual
    return first.skip == emb.id or _derives(g, first.skip, emb.id)


def _t_fixup(ctx: Ctx) -> None:
    g = ctx.graph
    need_branches(ctx)
    if not any(b.attention for b in ctx.branches):
        raise ValueError("policy 't_fixup' is T-Fixup for transformers (Huang et al. 2020): it scales the value and "
                         "output projections of attention branches, but no residual branch of this model holds an "
                         "attention; use 'fixup' for residual networks without attention")
    for n, w in dense(g):
        e = ctx.entry(w)
        if e is not None:
            scaled(e, "xavier", "uniform", 1.0, ctx.fans(w, e),
                   "T-Fixup: Xavier (uniform, gain 1) for every weight but the input embeddings (Huang et al. 2020)")
    for c in ctx.chains:
        big = c.per_block >= 3
        factor = (9 * c.blocks) ** -0.25 if big else 0.67 * c.blocks ** -0.25
        rule = "(9L)^(-1/4)" if big else "0.67 L^(-1/4)"
        for b in c.branches:
            what = "MLP weight" if not b.attention else "value/output projection"
            chosen, _, thirds = _value_and_out(ctx, b)
            for w in chosen:
                e = ctx.entry(w)
                if e is not None:
                    scaled(e, "xavier", "uniform", factor, ctx.fans(w, e),
                           f"T-Fixup: {what} of {where(ctx, b)}: Xavier times {rule} = {fmt(factor)}, L = {c.blocks} "
                           f"blocks with {c.per_block} branches each")
            for w in thirds:
                _scale_value_third(ctx, w, ("xavier", "uniform"), factor,
                                   f"T-Fixup: q/k/v projection of {where(ctx, b)}: Xavier, its value rows (the last "
                                   f"third) times {rule} = {fmt(factor)}, L = {c.blocks}")
    for n, w in br.embedding_weights(g):
        chain = next((c for c in ctx.chains if _feeds(g, c, n)), None)
        e = ctx.entry(w) if chain is not None else None
        if e is not None and len(e.shape) == 2:
            d = float(e.shape[1])
            factor = (9 * chain.blocks) ** -0.25
            normal(e, d ** -0.5 * factor, f"T-Fixup: input embedding N(0, d^-1) (d = {num(d)}) times (9L)^(-1/4) "
                                          f"= {fmt(factor)}, L = {chain.blocks}")
    norms = sum(len(b.norms) for b in ctx.branches)
    if norms:
        ctx.notes.append("T-Fixup was derived for transformers without layer normalization (Huang et al. remove "
                         f"it); this model keeps {norms} norm layer(s) in its branches at weight 1")


def _encoder_decoder(chains: list[br.Chain]) -> tuple[br.Chain, br.Chain] | None:
    decs = [c for c in chains if c.per_block >= 3]
    encs = [c for c in chains if c.per_block < 3]
    return (encs[0], decs[0]) if len(decs) == 1 and len(encs) == 1 else None


def _deepnorm(ctx: Ctx) -> None:
    g = ctx.graph
    need_branches(ctx)
    pair = _encoder_decoder(ctx.chains)
    for c in ctx.chains:
        if pair is not None:
            n_enc, m_dec = pair[0].blocks, pair[1].blocks
            if c is pair[0]:
                beta, alpha = 0.87 * (n_enc ** 4 * m_dec) ** (-1 / 16), 0.81 * (n_enc ** 4 * m_dec) ** (1 / 16)
                rule = f"0.87 (N^4 M)^(-1/16) with N = {n_enc}, M = {m_dec} (encoder)"
            else:
                beta, alpha = (12 * m_dec) ** -0.25, (3 * m_dec) ** 0.25
                rule = f"(12M)^(-1/4) with M = {m_dec} (decoder)"
        else:
            beta, alpha = (8 * c.blocks) ** -0.25, (2 * c.blocks) ** 0.25
            rule = f"(8N)^(-1/4) with N = {c.blocks} blocks"
        for b in c.branches:
            chosen, rest, thirds = _value_and_out(ctx, b)
            for w in thirds:
                _scale_value_third(ctx, w, ("xavier", "normal"), beta,
                                   f"DeepNorm: q/k/v projection of {where(ctx, b)}: xavier_normal_, gain 1 for q and "
                                   f"k, beta = {rule} = {fmt(beta)} for the value rows (Wang et al. 2022)")
            what = "value/output projection" if b.attention else "weight"
            for w in chosen:
                e = ctx.entry(w)
                if e is not None:
                    scaled(e, "xavier", "normal", beta, ctx.fans(w, e),
                           f"DeepNorm: {what} of {where(ctx, b)}: xavier_normal_(gain=beta), beta = {rule} = "
                           f"{fmt(beta)} (Wang et al. 2022)")
            for w in rest:
                e = ctx.entry(w)
                if e is not None:
                    scaled(e, "xavier", "normal", 1.0, ctx.fans(w, e),
                           f"DeepNorm: query/key projection of {where(ctx, b)}: xavier_normal_(gain=1) "
                           "(Wang et al. 2022)")
        ctx.notes.append(_alpha_note(g, c, alpha))


def _alpha_note(g: Graph, c: br.Chain, alpha: float) -> str:
    """What the model's sums do with their skip (DeepNorm's alpha is in the forward pass)."""
    found = {_skip_scale(g, b.residual.skip) for b in c.branches}
    post = all(b.residual.post_norm for b in (c.branches[:-1] or c.branches))
    seen = ", ".join(fmt(s) for s in sorted(found))
    return (f"DeepNorm's x_(l+1) = LN(alpha x + f(x)) with alpha = {fmt(alpha)} is the model's forward, not its "
            f"weights: on this chain of {len(c.branches)} sums the skip is scaled by {seen}"
            + ("" if post else " and the sums are not post-norm (DeepNorm is derived for LN after each sum)"))


def _skip_scale(g: Graph, nid: int) -> float:
    n = g.nodes[nid]
    slope = affine_slope(n)
    return abs(slope) if slope is not None else 1.0


def _fixup(ctx: Ctx) -> None:
    g = ctx.graph
    need_branches(ctx)
    norms = [n for n in g.nodes if (n.kind == "layer" and n.info.get("norm")) or (n.kind == "norm" and n.weights)]
    if norms:
        raise ValueError(f"policy 'fixup' is Fixup (Zhang et al. 2019), which replaces normalization: this model has "
                         f"{len(norms)} normalization layer(s), e.g. {norms[0].op!r}; use 'skipinit' (its branches "
                         "start at 0 with the norms kept) or remove the norms")
    total = len(ctx.branches)
    for b in ctx.branches:
        last = br.weight_name(b.last) if b.last is not None else None
        if last is None:
            raise ValueError(f"policy 'fixup': {where(ctx, b)} has no last weight layer to set to 0")
        if any(a not in ("identity",) for a in b.through):
            raise ValueError(f"policy 'fixup': the last layer of {where(ctx, b)} is followed by {b.through[0]} "
                             "before the sum: at 0 it would get no gradient (relu'(0) = 0); Fixup needs branches "
                             "that end in a layer")
        m = len(b.layers)
        factor = total ** (-1.0 / (2 * m - 2)) if m > 1 else 1.0
        for n in b.layers:
            for w in br.dense_weights(n):
                e = ctx.entry(w)
                if e is None:
                    continue
                if w == last:
                    zeros(e, f"Fixup: last layer of {where(ctx, b)}: 0, so the branch starts at 0 (Zhang et al. 2019)")
                    continue
                gain = float(e.gain) if e.family == "he" and e.gain else 1.0
                scaled(e, "kaiming", "normal", gain * factor, ctx.fans(w, e),
                       f"Fixup: layer of {where(ctx, b)} ({m} layers): He (gain {fmt(gain)}) times L^(-1/(2m-2)) = "
                       f"{fmt(factor)} with L = {total} residual branches (Zhang et al. 2019)")
    for n in br.output_layers(g):
        for w in br.dense_weights(n) + [f"{n.module}.bias" if n.module else "bias"]:
            e = ctx.entry(w) if w in ctx.by_name else None
            if e is not None:
                zeros(e, "Fixup: the classification layer starts at 0 (Zhang et al. 2019)")
    scalars = _scalars(ctx)
    ctx.notes.append(f"Fixup's scalar multipliers and biases are part of the model's forward: {scalars} scalar "
                     "parameter(s) found, multipliers set to 1 and biases to 0")


def _scalars(ctx: Ctx) -> int:
    """Scalar parameters: 1 where the signal is multiplied by them, 0 where they are added."""
    count = 0
    for n in ctx.graph.of_kind("param"):
        e = ctx.by_name.get(n.param)
        if e is None or len(e.shape) > 1 or (e.shape and e.shape[0] != 1) or id(e) not in ctx.owned:
            continue
        kinds = {ctx.graph.nodes[c].kind for c in ctx.graph.consumers(n.id)}
        if kinds == {"mul"} or kinds == {"add"}:
            e = ctx.entry(n.param)
            if kinds == {"mul"}:
                constant(e, 1.0, "Fixup: scalar multiplier 1")
            else:
                zeros(e, "Fixup: scalar bias 0")
            count += 1
    return count


def _skipinit(ctx: Ctx) -> None:
    g = ctx.graph
    need_branches(ctx)
    for b in ctx.branches:
        if b.end is None:
            raise ValueError(f"policy 'skipinit': {where(ctx, b)} ends in an operation initwise cannot scale "
                             "(not a layer, a norm or a scalar)")
        _, path = branch_end(g, b.residual.branch)
        acts = [g.nodes[i] for i in path if g.nodes[i].kind == "act" and affine_slope(g.nodes[i]) is None]
        if acts:
            raise ValueError(f"policy 'skipinit': {where(ctx, b)} passes {acts[0].op} after its last scale: at 0 it "
                             "would get no gradient (relu'(0) = 0)")
        end = br.entry_of(b.end, ctx.by_name)
        e = ctx.entry(end.name) if end is not None else None
        if e is None:
            ctx.notes.append(f"skipinit: the end of {where(ctx, b)} is not a tensor this plan decides")
            continue
        what = ("scalar multiplier (SkipInit's alpha)" if b.end.kind == "param" else
                "norm weight (zero_init_residual)" if br.is_norm_node(b.end) else "last layer")
        why = f"SkipInit: {what} of {where(ctx, b)}: 0, so the block starts as the identity (De & Smith 2020)"
        off = b.end.info.get("scale_offset", 0.0) if br.is_norm_node(b.end) else 0.0
        if off:  # a norm that scales by off + weight (Gemma 2's post-norms): a gain of 0 is weight -off
            constant(e, -off, why + f"; weight {-off:g} in its {off:g} + weight form")
        else:
            zeros(e, why)


_RECIPES: dict[str, Callable[[Ctx], None]] = {
    "gpt2": _gpt2, "torchtitan": _torchtitan, "olmo_mitchell": _olmo, "t_fixup": _t_fixup,
    "deepnorm": _deepnorm, "fixup": _fixup, "skipinit": _skipinit,
}
#: The recipe policies, by name.
RECIPES = tuple(_RECIPES)


def apply_recipe(name: str, entries: list[PlanEntry], owned: list[PlanEntry], graph: Graph | None, *,
                 distribution: str = "normal", tensors: dict[str, torch.Tensor] | None = None
                 ) -> tuple[list[PlanEntry], list[str]]:
    """Apply recipe ``name`` to the standard policy's table entries ``owned`` (in place; see the
    module docstring), let the standard policy (:func:`~.standard.refine`, ``residual="none"``)
    decide the others with the recipe's values upstream, and return the entries it decided and
    the plan's notes. ``tensors``: the model's current values (for kept tensors)."""
    if name not in _RECIPES:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
    if graph is None or graph.method == "order":
        why = graph.note.split(" because ", 1)[-1] if graph is not None else "no graph was recorded"
        raise ValueError(f"policy {name!r} reads the model's residual branches from a recorded forward pass, and "
                         f"none could run ({why}); pass example_input (CLI: --input-shape)")
    by_name: dict[str, PlanEntry] = {}
    for e in entries:
        for n in (e.name, *e.shared_with, *e.writes):
            by_name[n] = e
    ctx = Ctx(graph, name, by_name, {id(e) for e in owned}, br.chains(graph))
    ctx.node_of = {w: n for n, w in dense(graph)}
    claim_defaults(ctx)
    _RECIPES[name](ctx)
    if ctx.skipped:
        ctx.notes.append(f"{len(ctx.skipped)} tensor(s) the recipe would set are decided elsewhere (a rule, frozen "
                         "or parametrized): " + ", ".join(repr(s) for s in ctx.skipped[:4])
                         + (" ..." if len(ctx.skipped) > 4 else ""))
    n_chains = len(ctx.chains)
    ctx.notes.insert(0, f"recipe {name!r}: {len(ctx.decided)} tensor(s) set by the recipe on {n_chains} residual "
                        f"chain(s) ({sum(len(c.branches) for c in ctx.chains)} branches); the rest by the standard "
                        "policy (residual='none')")
    rest = [e for e in owned if id(e) not in ctx.decided]
    more = refine(entries, rest, graph, residual="none", distribution=distribution, tensors=tensors)
    decided = {n for e in ctx.decided.values() for n in (e.name, *e.shared_with)}
    for note in more:  # the standard policy's remarks on tensors the recipe decided, or on its residual rule
        if note.startswith("tied output layer") and note.split("'")[1] in decided or " post-norm residual" in note:
            continue
        ctx.notes.append(note)
    return rest, ctx.notes
