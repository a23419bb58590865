"""Research: which analytic initialization rule should initwise's default plan use?

    python benchmarks/research_rules.py                        # stage "plain", 3 seeds
    python benchmarks/research_rules.py --stage residual       # 50-block no-norm residual MLP
    python benchmarks/research_rules.py --rules eoc_bias lsuv --cases gelu30 --seeds 5

Candidate rules are plain functions ``rule(model, batch, seed)`` that set every Linear of a
plain MLP (``nn.Sequential`` of Linear, activation, ..., Linear) from a data-free mean-field
propagation of the moments of the signal, layer by layer. They run in the SAME harness as
benchmarks/peers.py (same models, data, loop, optimizer, lr, steps, seeds), beside lsuv and
AnyInit, so their numbers can be compared with the peers table directly.

The propagated state (two-level mean field)
-------------------------------------------
After layer l, unit i has, over the samples, a mean ``m_i`` and a variance ``v_i``. The state
is ``A1 = avg_i m_i``, ``A2 = avg_i m_i^2`` and ``V = avg_i v_i``. For the next Linear with
fan_in n and weight variance ``sw2 / n`` (zero-mean i.i.d.), unit j's pre-activation is
``h_j = c_j + sqrt(P) z`` over the samples (z ~ N(0, 1)), where
- ``P = sw2 * V``: the part that differs between samples (the signal);
- ``c_j ~ N(0, C)``: a per-unit offset, constant over the samples, with ``C = sw2 * A2``
  (zero bias), or ``C = sw2 * (A2 - A1^2)`` when the bias cancels the common mean
  (``b_j = -A1 * sum_i W_ji``, "bias centering") or the rows of W sum to zero ("row
  centering", which cancels it without knowing A1).
The activation then gives ``m(c) = E_z phi(c + sqrt(P) z)`` and the new state
``A1 = E_c m(c)``, ``A2 = E_c m(c)^2``, ``V = E_c E_z phi^2 - A2``, by nested quadrature.
The standard (Poole et al. 2016) mean-field variable is ``q = C + P`` (raw second moment of
the pre-activation over units and samples), and the gradient factor per layer is
``chi_1 = sw2 * E[phi'(h)^2]`` with ``h ~ N(0, q)`` (Schoenholz et al. 2017).

Targets (how ``sw2`` is chosen at each layer)
---------------------------------------------
- ``q1``:  ``q = 1`` (the analytic version of LSUV, which measures the std of each layer's
  whole output tensor, offsets included, and sets it to 1);
- ``p1``:  ``P = 1`` (the variance of the part that differs between samples is 1; the issue's
  proposal; with centering this is rule (a), gain^2 = 1/Var[phi(z)]);
- ``eoc``: ``chi_1 = 1`` at the pre-activation distribution it produces (solved for sw2; q is
  then whatever the map gives: q' = sw2 E[phi(sqrt(q) z)^2], the mean-field map);
- ``gain``: initwise's constant He-style gain ``sw2 = 1/E[phi(z)^2]`` at every layer.
The output layer (no activation) always gets the target ``q = 1`` (logits of variance ~1)
with the same centering as the hidden layers.

Draws: ``gauss`` (i.i.d. normal), ``orth`` (orthogonal, scaled to the same entry variance),
``exact`` (normal, rescaled so the matrix's empirical std is exact, as AnyInit does),
``rownorm`` (normal, each row rescaled to the exact norm sqrt(sw2)).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import peers  # noqa: E402
from initwise.experiments.models import ConvResNet, ResidualBlock  # noqa: E402
from peers import (  # noqa: E402
    CASES,
    METHODS,
    Case,
    ResidualMLP,
    digits,
    mlp_case,
    run_benchmark,
    summarize,
    to_markdown,
    write_atomic,
)

OUT = os.path.join("benchmarks", "results", "research")

# ---------------------------------------------------------------------------- quadrature
#: inner grid for z ~ N(0, 1): Simpson on [-10, 10] (kinks at 0 cost O(h^2) ~ 1e-5)
_Z = torch.linspace(-10.0, 10.0, 4001, dtype=torch.float64)
_H = float(_Z[1] - _Z[0])
_SIMPSON = torch.ones_like(_Z)
_SIMPSON[1:-1:2], _SIMPSON[2:-1:2] = 4.0, 2.0
_WZ = _SIMPSON * _H / 3.0 * torch.exp(-_Z ** 2 / 2) / math.sqrt(2 * math.pi)
_WZ = _WZ / _WZ.sum()
#: outer nodes for the per-unit offset c ~ N(0, C): probabilists' Gauss-Hermite
_GH_X, _GH_W = (torch.tensor(a, dtype=torch.float64) for a in
                __import__("numpy").polynomial.hermite_e.hermegauss(48))
_GH_W = _GH_W / _GH_W.sum()


def _phi_and_grad(phi: Callable[[torch.Tensor], torch.Tensor], h: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    h = h.detach().requires_grad_(True)
    with torch.enable_grad():
        y = phi(h)
        (g,) = torch.autograd.grad(y.sum(), h)
    return y.detach(), g


def propagate(phi, C: float, P: float) -> dict:
    """Moments of ``phi(c + sqrt(P) z)``, c ~ N(0, C), z ~ N(0, 1) independent.

    Returns ``A1 = E_c m(c)``, ``A2 = E_c m(c)^2``, ``V = E_c Var_z``, ``m2`` (raw second
    moment), ``d2 = E[phi'(h)^2]``, the quantities the rules need.
    """
    c = math.sqrt(max(C, 0.0)) * _GH_X[:, None]
    h = c + math.sqrt(max(P, 0.0)) * _Z[None, :]
    y, g = _phi_and_grad(phi, h)
    m_c = (y * _WZ).sum(dim=1)                 # per-offset mean over the samples
    e2_c = (y * y * _WZ).sum(dim=1)
    d2 = float(((g * g * _WZ).sum(dim=1) * _GH_W).sum())
    A1 = float((m_c * _GH_W).sum())
    A2 = float((m_c * m_c * _GH_W).sum())
    m2 = float((e2_c * _GH_W).sum())
    return {"A1": A1, "A2": A2, "V": max(m2 - A2, 0.0), "m2": m2, "d2": d2}


def _solve_log(f: Callable[[float], float], lo: float = 1e-4, hi: float = 1e4) -> float:
    """Root of a function increasing in x (bisection in log x); clamps to the bracket."""
    flo, fhi = f(lo), f(hi)
    if flo >= 0:
        return lo
    if fhi <= 0:
        return hi
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if f(mid) < 0:
            lo = mid
        else:
            hi = mid
    return math.sqrt(lo * hi)


# ---------------------------------------------------------------------------- the rule
def plan_mlp(acts: list, *, target: str, center: str, in_A1: float = 0.0, in_A2: float = 0.0,
             in_V: float = 1.0, q0: float = 1.0) -> list[dict]:
    """Per Linear layer: ``sw2`` (weight variance x fan_in), whether to center, the predicted
    pre-activation (``C`` offsets, ``P`` signal) and ``chi`` = the backward factor
    ``sw2_l * E[phi_{l-1}'(h_{l-1})^2]`` from this layer's pre-activation to the previous one's.
    ``acts[l]`` is the activation after Linear l (None for the output layer)."""
    A1, A2, V = in_A1, in_A2, in_V
    d2_prev = None       # E[phi'(h)^2] of the activation feeding this layer (None: the data)
    out = []
    for l, phi in enumerate(acts):
        centered = center != "none" and not (A1 == 0.0 and A2 == 0.0)
        off = (A2 - A1 * A1) if centered else A2       # offset variance per unit of sw2
        if phi is None or target == "q1" or (phi is None and target == "qfix"):
            sw2 = 1.0 / max(off + V, 1e-12)
        elif target == "p1":
            sw2 = 1.0 / max(V, 1e-12)
        elif target == "gain":                          # initwise today: 1/E[phi(z)^2]
            sw2 = 1.0 / propagate(phi, 0.0, 1.0)["m2"]
        elif target == "eoc1":                          # 1/E[phi'(z)^2], q = 1 assumed
            sw2 = 1.0 / propagate(phi, 0.0, 1.0)["d2"]
        elif target == "eoc":                           # chi = 1 with the tracked q
            sw2 = 1.0 / max(off + V, 1e-12) if d2_prev is None else 1.0 / max(d2_prev, 1e-4)
        elif target == "eocq":                          # first layer q = q0, then chi = 1
            sw2 = q0 / max(off + V, 1e-12) if d2_prev is None else 1.0 / max(d2_prev, 1e-4)
        elif target == "qfix":                          # raw q = q0 at every layer
            sw2 = q0 / max(off + V, 1e-12)
        elif target == "pq":                            # the signal P = q0 at every layer
            sw2 = q0 / max(V, 1e-12)
        else:
            raise ValueError(f"unknown target {target!r}")
        C, P = sw2 * off, sw2 * V
        rec = {"layer": l, "sw2": sw2, "C": C, "P": P, "centered": centered, "in_A1": A1,
               "chi": None if d2_prev is None else sw2 * d2_prev}
        if phi is not None:
            st = propagate(phi, C, P)
            A1, A2, V, d2_prev = st["A1"], st["A2"], st["V"], st["d2"]
        out.append(rec)
    return out


def mlp_layers(model: nn.Module) -> tuple[list[nn.Linear], list]:
    """The Linear layers of a plain Sequential MLP and the activation after each (None last)."""
    mods = list(model)
    linears, acts = [], []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            linears.append(m)
            nxt = mods[i + 1] if i + 1 < len(mods) else None
            acts.append(nxt if nxt is not None and not isinstance(nxt, nn.Linear) else None)
    return linears, acts


def draw(shape: tuple[int, int], std: float, dist: str, gen: torch.Generator) -> torch.Tensor:
    """A float32 (out, in) matrix with entry std ``std`` drawn as ``dist``."""
    out_f, in_f = shape
    g = torch.randn(out_f, in_f, generator=gen, dtype=torch.float64)
    if dist == "gauss":
        w = g
    elif dist == "exact":
        w = g / g.std()
    elif dist == "rownorm":
        w = g / g.norm(dim=1, keepdim=True) * math.sqrt(in_f)
    elif dist == "orth":
        # orthonormal rows (out <= in) or columns (out > in), scaled to entry variance 1
        q, r = torch.linalg.qr(g if out_f >= in_f else g.T)
        q = q * torch.sign(torch.diagonal(r))
        w = q * math.sqrt(out_f) if out_f >= in_f else q.T * math.sqrt(in_f)
    else:
        raise ValueError(f"unknown draw {dist!r}")
    return (w * std).float()


def make_rule(target: str, center: str = "none", dist: str = "gauss", q0: float = 1.0,
              head: str = "q1") -> peers.InitFn:
    """A rule ``(model, batch, seed) -> None`` for plain MLPs; data-free (inputs assumed
    standardized: mean 0, variance 1 per feature). ``head``: the output layer gets logits of
    predicted variance 1 ("q1"), Xavier-normal 2/(fan_in + fan_out) as initwise's plan today
    ("xavier"), or zeros ("zero")."""
    def rule(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
        linears, acts = mlp_layers(model)
        if not linears or len(linears) != len(list(model)) - sum(a is not None for a in acts):
            raise ValueError("rule needs an nn.Sequential of Linear and activation modules")
        plan = plan_mlp(acts, target=target, center=center, q0=q0)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for lin, rec in zip(linears, plan):
                sw2 = rec["sw2"]
                if lin is linears[-1] and head == "xavier":
                    sw2 = 2.0 * lin.in_features / (lin.in_features + lin.out_features)
                elif lin is linears[-1] and head == "zero":
                    sw2 = 0.0
                std = math.sqrt(sw2 / lin.in_features)
                w = draw(tuple(lin.weight.shape), std, dist, gen)
                if rec["centered"] and center == "rows":
                    w = w - w.mean(dim=1, keepdim=True)
                    w = w * (std / w.std()) if dist != "rownorm" else \
                        w * (std * math.sqrt(lin.in_features) / w.norm(dim=1, keepdim=True))
                lin.weight.copy_(w)
                if lin.bias is not None:
                    lin.bias.zero_()
                    if rec["centered"] and center == "bias":
                        lin.bias.copy_(-rec["in_A1"] * w.sum(dim=1))
    rule.__doc__ = (f"target {target}" + (f" (q0 {q0:g})" if target in ("eocq", "pq", "qfix") else "")
                    + f", centering {center}, draw {dist}"
                    + ("" if head == "q1" else f", head {head}"))
    return rule


def make_measured(mode: str, source: str, dist: str = "gauss") -> peers.InitFn:
    """Data-driven reference rules (LSUV-like, layer by layer in order, one pass each):
    draw every weight with variance 1/fan_in (``dist``), zero biases, then for each Linear
    measure its output on the batch and
    - ``q1``: rescale W so the output's raw second moment is 1 (LSUV's target);
    - ``center``: set the bias to cancel each unit's mean, rescale W so the mean per-unit
      variance is 1 (the signal P = 1 measured, offsets 0);
    - ``unit``: per unit, mean 0 and variance 1 (Kraehenbuehl et al. 2016's data-dependent
      init: a BatchNorm folded into the weights at initialization).
    ``source``: ``data`` (the real batch) or ``synth`` (N(0, 1) inputs of the batch's shape,
    seeded: data-free, but it sees the drawn weights)."""
    def rule(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
        linears, acts = mlp_layers(model)
        gen = torch.Generator().manual_seed(seed)
        x = batch if source == "data" else torch.randn(
            batch.shape, generator=torch.Generator().manual_seed(seed + 777))
        with torch.no_grad():
            h = x.double()
            for lin, phi in zip(linears, acts):
                w = draw(tuple(lin.weight.shape), 1.0 / math.sqrt(lin.in_features), dist,
                         gen).double()
                out = h @ w.T
                if mode == "q1":
                    s = out.pow(2).mean().sqrt()
                    w, b = w / s, torch.zeros(w.shape[0], dtype=w.dtype)
                elif mode == "center":
                    s = out.var(dim=0).mean().sqrt()
                    w, b = w / s, -out.mean(dim=0) / s
                elif mode == "unit":
                    s = out.std(dim=0).clamp_min(1e-8)
                    w, b = w / s[:, None], -out.mean(dim=0) / s
                else:
                    raise ValueError(mode)
                lin.weight.copy_(w.float())
                if lin.bias is not None:
                    lin.bias.copy_(b.float())
                out = h @ w.T + b
                h = phi(out) if phi is not None else out
    rule.__doc__ = f"measured {mode} on {source} inputs, draw {dist}"
    return rule


def make_residual_rule(gamma: str, head: str = "unit", branch_in: str = "he") -> peers.InitFn:
    """Rules for the no-normalization residual nets (ResidualMLP, ConvResNet).

    Stem: LeCun (var 1/fan_in: the stream starts at the input's variance ~1). The first layer
    of each branch: He (var 2/fan_in) w.r.t. its input, or ``branch_in="fixup"``: He x 1/L
    (Fixup's L^(-1/(2m-2)) on the std with m = 2 layers per branch). The branch end is chosen
    so each block adds ``gamma`` x the stream's variance: ``gamma`` "one" (the stream doubles
    per block, as with He on every layer), "L" (1/L: the stream grows by (1 + 1/L)^L ~ e), "2L" (1/(2L), GPT-2/Megatron's
    depth scaling), "zero" (SkipInit / zero_init_residual / Fixup: every branch starts at 0).
    Head: "unit" (logits of variance ~1 given the predicted stream) or "zero" (Fixup).
    Biases 0. Gaussian draws."""
    def rule(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
        if not isinstance(model, (ResidualMLP, ConvResNet)):
            raise ValueError("residual rules need a ResidualMLP or a ConvResNet")
        n_blocks = len(model.blocks)
        g = {"one": 1.0, "L": 1.0 / n_blocks, "2L": 1.0 / (2 * n_blocks), "zero": 0.0}[gamma]
        gen = torch.Generator().manual_seed(seed)

        def put(layer: nn.Module, sw2: float) -> None:
            w = layer.weight
            fan_in = w[0].numel()
            flat = draw((w.shape[0], fan_in), math.sqrt(sw2 / fan_in), "gauss", gen)
            w.copy_(flat.reshape(w.shape))
            if layer.bias is not None:
                layer.bias.zero_()

        with torch.no_grad():
            put(model.stem, 1.0)
            stream = 1.0
            for block in model.blocks:
                first, last = ((block.fc1, block.fc2) if isinstance(block, ResidualBlock)
                               else (block.conv1, block.conv2))
                sw2_in = 2.0 * (1.0 / n_blocks if branch_in == "fixup" else 1.0)
                put(first, sw2_in)
                # E[x^2] at the branch end's input, per unit of stream variance: an MLP block
                # reads the stream (relu(sw2_in S) -> sw2_in S / 2), a conv block relu(stream)
                e_in = sw2_in / 2.0 if isinstance(block, ResidualBlock) else sw2_in / 4.0
                if g > 0:
                    put(last, g / e_in)               # adds g * S to the stream
                else:
                    last.weight.zero_()
                    if last.bias is not None:
                        last.bias.zero_()
                stream *= 1.0 + g
            if head == "zero":
                model.head.weight.zero_()
                model.head.bias.zero_()
            else:
                # relu(stream) has E[x^2] = stream/2; a ConvResNet's global average pool keeps
                # about that (positions are correlated); logits variance ~1
                put(model.head, 2.0 / stream)
    rule.__doc__ = f"residual: branch ends gamma={gamma}, branch input {branch_in}, head {head}"
    return rule


# ---------------------------------------------------------------------------- measurements
def init_diagnostics(model: nn.Module, batch: torch.Tensor) -> dict:
    """What the initialization did, measured on ``batch`` (no training): for the Linear
    layers in call order, the raw second moment ``q`` of the output (over units and samples),
    the share ``P/q`` of it that differs between samples (per-unit variance over the batch),
    and the gradient norm of every weight under a fixed random projection of the output
    (``loss = sum(out * r)``, r ~ N(0, 1) seeded), as log10(first hidden / last hidden)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    stats: list[tuple[float, float]] = []

    def hook(_m, _i, out):
        h = out.detach().double().reshape(-1, out.shape[-1])
        stats.append((float(h.pow(2).mean()), float(h.var(dim=0).mean())))

    handles = [m.register_forward_hook(hook) for m in linears]
    stream: list[float] = []
    if isinstance(getattr(model, "blocks", None), nn.Sequential):
        handles.append(model.blocks.register_forward_hook(
            lambda _m, _i, out: stream.append(float(out.detach().double().pow(2).mean()))))
    was = model.training
    model.eval()
    try:
        model.zero_grad(set_to_none=True)
        out = model(batch)
        r = torch.randn(out.shape, generator=torch.Generator().manual_seed(123))
        (out * r).sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    grads = [float(m.weight.grad.norm()) if m.weight.grad is not None else float("nan")
             for m in linears]
    model.zero_grad(set_to_none=True)
    hidden = stats[:-1] or stats
    q_last, p_last = hidden[-1]
    g_ratio = (math.log10(grads[0] / grads[-2]) if len(grads) > 2 and grads[-2] > 0
               and grads[0] > 0 else float("nan"))
    return {"q_first": stats[0][0], "q_last_hidden": q_last,
            "signal_share_last": p_last / q_last if q_last > 0 else float("nan"),
            "out_std": float(out.detach().std()), "log10_grad_first_over_last": g_ratio,
            "stream_m2_last": stream[0] if stream else float("nan")}


# ---------------------------------------------------------------------------- registry
RULES: dict[str, peers.InitFn] = {}
for _t in ("gain", "q1", "p1", "eoc1", "eoc"):
    for _c in ("none", "bias", "rows"):
        for _d in ("gauss", "orth", "exact", "rownorm"):
            _name = _t + ("" if _c == "none" else f"_{_c}") + ("" if _d == "gauss" else f"_{_d}")
            RULES[_name] = make_rule(_t, _c, _d)

for _t in ("gain", "q1", "p1", "eoc1"):
    RULES[f"{_t}_headxavier"] = make_rule(_t, head="xavier")
    RULES[f"{_t}_headzero"] = make_rule(_t, head="zero")
for _q in (3.0, 10.0, 30.0):
    for _d in ("gauss", "orth"):
        RULES[f"qfix{_q:g}" + ("" if _d == "gauss" else f"_{_d}")] = make_rule("qfix", "none", _d,
                                                                              q0=_q)
        RULES[f"eocq{_q:g}" + ("" if _d == "gauss" else f"_{_d}")] = make_rule("eocq", "none", _d,
                                                                              q0=_q)
for _q in (0.01, 0.03, 0.1, 0.3):
    for _c in ("none", "bias"):
        for _d in ("gauss", "orth"):
            _sfx = ("" if _c == "none" else f"_{_c}") + ("" if _d == "gauss" else f"_{_d}")
            RULES[f"eocq{_q:g}{_sfx}"] = make_rule("eocq", _c, _d, q0=_q)
            RULES[f"pq{_q:g}{_sfx}"] = make_rule("pq", _c, _d, q0=_q)

for _m in ("q1", "center", "unit"):
    for _src in ("data", "synth"):
        for _d in ("gauss", "orth"):
            RULES[f"meas_{_m}_{_src}" + ("" if _d == "gauss" else f"_{_d}")] = \
                make_measured(_m, _src, _d)

for _g in ("one", "L", "2L", "zero"):
    RULES[f"res_{_g}"] = make_residual_rule(_g)
RULES["res_zero_headzero"] = make_residual_rule("zero", head="zero")
RULES["res_fixup"] = make_residual_rule("zero", head="zero", branch_in="fixup")

BASELINES = ("initwise", "anyinit", "lsuv")

EXTRA_CASES: dict[str, Case] = {c.name: c for c in [
    mlp_case("elu30", "elu", 30),
    Case("softplus30", "30-layer softplus MLP, width 128, digits",
         lambda: nn.Sequential(*sum([[nn.Linear(64 if i == 0 else 128, 128), nn.Softplus()]
                                     for i in range(29)], []), nn.Linear(128, 10)), digits),
    mlp_case("sigmoid30", "sigmoid", 30),
    mlp_case("gelu30_w64", "gelu", 30, width=64),
]}
ALL_CASES = {**CASES, **EXTRA_CASES}
PLAIN = ["gelu30", "silu30_reg", "relu30", "tanh50", "selu32", "elu30", "softplus30",
         "sigmoid30"]

STAGES: dict[str, tuple[list[str], list[str]]] = {
    # stage 1: which target and which centering (Gaussian draws)
    "targets": (PLAIN, list(BASELINES) + ["gain", "q1", "p1", "p1_bias", "p1_rows", "eoc1",
                                          "eoc1_bias", "eoc", "eoc_bias", "eoc_rows"]),
    # stage 2: which draw
    "draws": (PLAIN, ["q1_orth", "q1_exact", "q1_rownorm", "eoc_orth", "eoc_rownorm",
                      "eoc_bias_orth", "eoc_bias_rownorm", "p1_bias_orth"]),
    # the linear regime of smooth activations: small pre-activation variance q0, centered
    "linear": (["gelu30", "silu30_reg", "elu30", "softplus30", "sigmoid30", "tanh50"],
               ["eocq0.01_bias", "eocq0.1_bias", "eocq0.3_bias", "eocq0.1_bias_orth",
                "pq0.1_bias", "eocq0.1"]),
    # 50-block residual MLP and the conv ResNet, no normalization
    "residual": (["resmlp50", "resnet_conv"], ["torch", "initwise", "anyinit", "lsuv",
                                                "res_one", "res_L", "res_2L", "res_zero",
                                                "res_zero_headzero", "res_fixup"]),
    # data-driven references: what LSUV-like measuring buys, on data or on N(0, 1) inputs
    "measured": (PLAIN, ["meas_q1_data", "meas_q1_synth", "meas_center_data",
                         "meas_center_synth", "meas_unit_data", "meas_unit_synth",
                         "meas_q1_synth_orth"]),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=sorted(STAGES), default="targets")
    parser.add_argument("--cases", nargs="+", metavar="CASE",
                        help=f"override the stage's cases: {', '.join(ALL_CASES)}")
    parser.add_argument("--rules", nargs="+", metavar="RULE",
                        help="override the stage's rules/methods (rules: "
                             "{gain,q1,p1,eoc1,eoc}[_bias|_rows][_orth|_exact|_rownorm]; "
                             f"methods: {', '.join(METHODS)})")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tag", default=None, help="output name (default: the stage)")
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    case_names, rule_names = STAGES[args.stage]
    case_names = args.cases or case_names
    rule_names = args.rules or rule_names
    registry = {**METHODS, **RULES}
    bad = [c for c in case_names if c not in ALL_CASES] + [r for r in rule_names
                                                           if r not in registry]
    if bad:
        parser.error(f"unknown: {', '.join(bad)}")
    cases = [ALL_CASES[c] for c in case_names]
    start = time.perf_counter()
    runs, ran = run_benchmark(cases, rule_names, list(range(args.seeds)), registry=registry,
                              after_init=init_diagnostics)
    summary = summarize(runs)
    tasks = {c.name: c.data().task for c in cases}
    table = to_markdown(summary, cases, ran, tasks)
    diag = {}
    for r in runs:
        if r.get("diag"):
            d = diag.setdefault(r["case"], {}).setdefault(r["method"], [])
            d.append(r["diag"])
    lines = ["| case | method | q first | q last hidden | signal share last | "
             "log10 grad first/last | out std | stream E[x^2] end |",
             "|---|---|---|---|---|---|---|---|"]
    for c in case_names:
        for m in ran:
            ds = diag.get(c, {}).get(m)
            if not ds:
                continue
            med = {k: statistics.median(x[k] for x in ds) for k in ds[0]}
            lines.append(f"| {c} | {m} | {med['q_first']:.3g} | {med['q_last_hidden']:.3g} | "
                         f"{med['signal_share_last']:.3f} | "
                         f"{med['log10_grad_first_over_last']:.2f} | {med['out_std']:.3g} | "
                         f"{med['stream_m2_last']:.3g} |")
    tag = args.tag or args.stage
    md = [f"# research_rules: stage {args.stage}", "",
          f"Command: `python benchmarks/research_rules.py "
          f"{' '.join(argv if argv is not None else sys.argv[1:])}`; "
          f"{time.perf_counter() - start:.0f} s", "",
          "Same harness as benchmarks/peers.py (same models, data, loop, lr, seeds).", "",
          table, "", "## At initialization (median over seeds, measured on the init batch)", "",
          *lines, ""]
    md += ["## Rules", ""] + [f"- **{m}**: {(registry[m].__doc__ or '').strip().splitlines()[0]}"
                              for m in ran]
    write_atomic(os.path.join(args.out, f"{tag}.json"),
                 json.dumps(peers._json_safe({"summary": summary, "runs": runs}), indent=1))
    write_atomic(os.path.join(args.out, f"{tag}.md"), "\n".join(md) + "\n")
    print(table)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
