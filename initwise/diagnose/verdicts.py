"""The verdicts of diagnose, judged along the paths of the graph (:mod:`.paths`).

Activations and gradients are compared along each chain of layers (chained step ratios, the
first layer of the chain as reference for activations and the last for gradients; a step
where the per-sample size changes, such as pooling, counts the layers and activations only) and
along each residual stream (the stream's std after each sum against its input; gradients
against the last sum). Never across siblings, never through a norm. Every verdict about a ratio
quotes it with the two values it compares; ``ratio = to / from x correction``, the correction
being what the chain left out at the size changes (1 where nothing was left out).
"""
from __future__ import annotations

import math
from typing import Sequence

from .results import DiagnosisThresholds, Finding, LayerDiagnosis, Stream

__all__ = ["findings"]


def _runs(indices: Sequence[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> "1-3, 7, 9-10"."""
    parts: list[str] = []
    start = prev = None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            parts.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = i
    if start is not None:
        parts.append(f"{start}-{prev}" if prev != start else f"{start}")
    return ", ".join(parts)


def _where(indices: Sequence[int]) -> str:
    return f"layer {indices[0]}" if len(indices) == 1 else f"layers {_runs(indices)}"


def _per_layer(ratio: float, steps: int) -> str:
    if steps < 1:
        return ""
    if ratio <= 0:
        return " (to 0)"
    return f" (x{ratio ** (1.0 / steps):.2g} per layer)"


def _chained(stds: Sequence[float], sizes: Sequence[int | None],
             bridges: Sequence[float | None] | None = None,
             in_sizes: Sequence[int | None] | None = None) -> tuple[list[float], list[int], list[int]]:
    """The std of each element relative to the first, chained step by step: ``c[0] = 1`` and

    * ``c[i] = c[i-1] * stds[i] / stds[i-1]`` (the whole step) when what element i receives has
      the size that element i-1 hands on: ``in_sizes[i] == sizes[i-1]`` (``sizes[i]`` when
      ``in_sizes`` is not given);
    * otherwise (a reduction between them, such as pooling) ``c[i] = c[i-1] * bridges[i]``, the
      step's ratio with what happens between the two elements left out, when it is given and
      finite; else the step counts as x1 and is not judged.

    A std of exactly 0 gives ``c = 0`` (and the chain stays 0 after it). Returns ``c``, the
    number of judged steps up to each element, and of steps not compared whole (bridged or x1).
    """
    ins = sizes if in_sizes is None else in_sizes
    chain, counted, skipped = [1.0], [0], [0]
    for i in range(1, len(stds)):
        c, n, k = chain[-1], counted[-1], skipped[-1]
        same = sizes[i - 1] is not None and ins[i] == sizes[i - 1]
        bridge = None if same or bridges is None else bridges[i]
        if bridge is not None and not (math.isfinite(bridge) and bridge >= 0):
            bridge = None
        if stds[i] == 0:
            c = 0.0
        elif same and stds[i - 1] > 0:
            c = c * stds[i] / stds[i - 1]
        elif bridge is not None:
            c = c * bridge
        if same or bridge is not None or stds[i] == 0:
            n += 1
        if not same:
            k += 1
        chain.append(c)
        counted.append(n)
        skipped.append(k)
    return chain, counted, skipped


def _ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or None when either is unknown or ``b`` is 0."""
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return None
    return a / b


def _act_bridge(prev: LayerDiagnosis, r: LayerDiagnosis) -> float | None:
    """Activation step from ``prev`` to ``r`` without what happens between the two:
    ``(out_std / in_std of r) * (post_std / out_std of prev)``."""
    a, b = _ratio(r.out_std, r.in_std), _ratio(prev.post_std, prev.out_std)
    return None if a is None or b is None else a * b


def _norm(std: float | None, numel: int | None) -> float | None:
    """Gradient std x sqrt(per-sample size): the gradient's norm per sample (up to a constant)."""
    return None if std is None or numel is None else std * math.sqrt(numel)


def _grad_bridge(r: LayerDiagnosis, prev: LayerDiagnosis) -> float | None:
    """Backward gradient step from ``r`` to ``prev`` (the layer before it) without what happens
    between the two, in per-sample gradient norms: ``(G_out / G_post of prev) * (G_in / G_out
    of r)``; ``G_post = G_out`` when no activation follows ``prev``."""
    post = prev.grad_post_std if prev.grad_post_std is not None else (
        prev.grad_out_std if prev.activation is None else None)
    a = _ratio(prev.grad_out_std, post)
    b = _ratio(_norm(r.grad_in_std, r.in_numel), _norm(r.grad_out_std, r.out_numel))
    return None if a is None or b is None else a * b


def _skip_note(skipped: int) -> str:
    return (f"; at {skipped} step(s) where the size changes between layers (pooling, flattening) "
            "only the layers and activations are compared") if skipped else ""


def _name(r: LayerDiagnosis) -> str:
    return f"layer {r.index} ({r.name or r.type})"



# ----------------------------------------------------------------------------- chains
def chains(layers: list[LayerDiagnosis], previous: dict[str, str]) -> list[list[LayerDiagnosis]]:
    """Every chain of layers, first to last: from each layer that no other layer follows, back
    along ``previous`` (layer name -> the layer before it). A layer whose output is constant
    over the batch, exactly 0 or not measured ends the chain there (nothing to compare with)."""
    by_name = {r.name: r for r in layers}

    def usable(r: LayerDiagnosis) -> bool:
        return not r.input_independent and not r.zero and math.isfinite(r.out_std)

    followed = {p for n, p in previous.items() if n in by_name and usable(by_name[n])}
    out = []
    for r in layers:
        if r.name in followed or not usable(r):
            continue
        path, cur, seen = [r], r, {r.name}
        while cur.name in previous and previous[cur.name] in by_name and previous[cur.name] not in seen:
            prev = by_name[previous[cur.name]]
            if not usable(prev):
                break
            path.append(prev)
            seen.add(prev.name)
            cur = prev
        out.append(path[::-1])
    return out


def _extremes(lo: tuple | None, hi: tuple | None, ratios: list[float], steps: list[int], skips: list[int],
              path: list[LayerDiagnosis]) -> tuple[tuple | None, tuple | None]:
    """The lowest and highest chained ratio so far, ``(ratio, path, i, steps, skips)``, updated
    with the judged elements of one chain."""
    for i in range(1, len(path)):
        if steps[i] == 0:
            continue
        item = (ratios[i], path, i, steps[i], skips[i])
        if lo is None or ratios[i] < lo[0]:
            lo = item
        if hi is None or ratios[i] > hi[0]:
            hi = item
    return lo, hi


def _path_name(path: Sequence[LayerDiagnosis]) -> str:
    return (f"the chain of {len(path)} layers from {path[0].name or path[0].type} to "
            f"{path[-1].name or path[-1].type}")


def _chain_findings(paths: list[list[LayerDiagnosis]], th: DiagnosisThresholds
                    ) -> tuple[list[Finding], tuple[float, float] | None, tuple[float, float] | None, int, bool]:
    """Vanishing/exploding activations and gradients along the chains: the worst of each, the
    ranges seen, the number of steps compared and whether a size change was bridged."""
    found: list[Finding] = []
    act_lo = act_hi = grad_lo = grad_hi = None  # (ratio, path, i, steps, skips)
    judged, bridged = 0, False
    for path in paths:
        if len(path) < 2:
            continue
        if path[0].out_std == 0:
            continue
        ratios, steps, skips = _chained(
            [r.out_std for r in path], [r.out_numel for r in path],
            [None] + [_act_bridge(p, r) for p, r in zip(path, path[1:])], [r.in_numel for r in path])
        judged += steps[-1]
        bridged = bridged or skips[-1] > 0
        act_lo, act_hi = _extremes(act_lo, act_hi, ratios, steps, skips, path)
        back = [r for r in path[::-1] if r.grad_out_std is not None and math.isfinite(r.grad_out_std)]
        while back and back[0].grad_out_std == 0:  # blocked after the chain (a zero layer): not judged
            back = back[1:]
        if len(back) < 2:
            continue
        gratios, gsteps, gskips = _chained(
            [_norm(r.grad_out_std, r.out_numel) if r.out_numel else r.grad_out_std for r in back],
            [r.in_numel for r in back], [None] + [_grad_bridge(r, p) for r, p in zip(back, back[1:])],
            [r.out_numel for r in back])
        judged += gsteps[-1]
        grad_lo, grad_hi = _extremes(grad_lo, grad_hi, gratios, gsteps, gskips, back)
    for item, kind, verb, hit in ((act_lo, "vanishing", "vanish", act_lo and act_lo[0] < th.vanish),
                                  (act_hi, "exploding", "explode", act_hi and act_hi[0] > th.explode)):
        if not hit:
            continue
        ratio, path, i, steps, skips = item
        a, b = path[0].out_std, path[i].out_std
        moves = "falls" if kind == "vanishing" else "grows"
        found.append(Finding(kind, (
            f"activations {verb}: std {moves} x{ratio:.2g} along {_path_name(path[:i + 1])}, from "
            f"{a:.2g} at {_name(path[0])} to {b:.2g} at {_name(path[i])}{_per_layer(ratio, steps)}"
            f"{_skip_note(skips)}"), ratio, (a, b), _correction(ratio, a, b), _path_name(path[:i + 1])))
    for item, kind, verb, hit in ((grad_lo, "gradient_vanishing", "vanish", grad_lo and grad_lo[0] < th.grad_vanish),
                                  (grad_hi, "gradient_exploding", "explode", grad_hi and grad_hi[0] > th.grad_explode)):
        if not hit:
            continue
        ratio, back, i, steps, skips = item
        a, b = back[0].grad_out_std, back[i].grad_out_std
        normed = back[0].out_numel != back[i].out_numel
        what = " (gradient norm per sample)" if normed else ""
        corr = _correction(ratio, a, b)
        found.append(Finding(kind, (
            f"gradients {verb}: x{ratio:.2g}{what} backwards along {_path_name(back[i::-1])}, from "
            f"std {a:.2g} at {_name(back[0])} to {b:.2g} at {_name(back[i])}{_per_layer(ratio, steps)}"
            f"{_skip_note(skips)}"), ratio, (a, b), corr, _path_name(back[i::-1])))
    act_range = (act_lo[0], act_hi[0]) if act_lo else None
    grad_range = (grad_lo[0], grad_hi[0]) if grad_lo else None
    extremes = [(ratio, path[0].out_std, path[i].out_std, f"along {_path_name(path[:i + 1])}")
                for ratio, path, i, _, _ in ((act_lo, act_hi) if act_lo else ())]
    return found, act_range, grad_range, judged, bridged, extremes


def _correction(ratio: float, a: float, b: float) -> float:
    """What makes ``ratio`` differ from ``b / a`` (1 when the chain counted every step whole)."""
    if not (a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)):
        return 1.0
    c = ratio / (b / a)
    return 1.0 if abs(c - 1) < 1e-9 else c


# ----------------------------------------------------------------------------- streams
def _stream_findings(streams: list[Stream], th: DiagnosisThresholds
                     ) -> tuple[list[Finding], tuple[float, float] | None, int, list[tuple[float, float, float, str]]]:
    """Growth and decay of each residual stream against its input, and of the gradient w.r.t.
    the stream against the last sum's."""
    found: list[Finding] = []
    lo = hi = None
    judged = 0
    extremes: list[tuple[float, float, float, str]] = []
    for s in streams:
        stds = [p.std for p in s.points]
        ref, ref_name = (s.start, "its input") if s.start > 0 and math.isfinite(s.start) else (
            (stds[0], f"after {s.points[0].block}") if stds else (math.nan, ""))
        if not (ref > 0 and math.isfinite(ref)) or len(s.points) < 2:
            continue
        bad = next((k for k, v in enumerate(stds) if not math.isfinite(v)), None)
        if bad is not None:
            found.append(Finding("exploding", (
                f"activations explode: the residual stream {s.name} overflows (values not finite) after "
                f"sum {bad + 1} of {len(stds)} ({s.points[bad].block}); std {ref:.2g} at {ref_name}"),
                math.inf, (ref, math.inf), 1.0, f"the residual stream {s.name}"))
            continue
        judged += len(stds)
        ratios = [v / ref for v in stds]
        k_lo = min(range(len(ratios)), key=ratios.__getitem__)
        k_hi = max(range(len(ratios)), key=ratios.__getitem__)
        lo = ratios[k_lo] if lo is None else min(lo, ratios[k_lo])
        hi = ratios[k_hi] if hi is None else max(hi, ratios[k_hi])
        extremes += [(ratios[k], ref, stds[k], f"the residual stream {s.name} after {s.points[k].block}")
                     for k in (k_lo, k_hi)]
        for k, kind, verb, hit in ((k_lo, "vanishing", "falls", ratios[k_lo] < th.vanish),
                                   (k_hi, "exploding", "grows", ratios[k_hi] > th.explode)):
            if hit:
                found.append(Finding(kind, (
                    f"activations {'vanish' if kind == 'vanishing' else 'explode'}: the residual stream "
                    f"{s.name} {verb} x{ratios[k]:.2g} over {k + 1} of its {len(stds)} sums, from std "
                    f"{ref:.2g} at {ref_name} to {stds[k]:.2g} after {s.points[k].block}"
                    f"{_per_layer(ratios[k], k + 1).replace('layer', 'sum')}"),
                    ratios[k], (ref, stds[k]), 1.0, f"the residual stream {s.name}"))
        grads = [p.grad_std for p in s.points]
        if all(g is not None and math.isfinite(g) for g in grads) and grads[-1] > 0:
            gr = [g / grads[-1] for g in grads]
            judged += len(gr) - 1
            for k, kind, hit in ((min(range(len(gr)), key=gr.__getitem__), "gradient_vanishing", th.grad_vanish),
                                 (max(range(len(gr)), key=gr.__getitem__), "gradient_exploding", th.grad_explode)):
                if (gr[k] < hit) if kind == "gradient_vanishing" else (gr[k] > hit):
                    verb = "vanish" if kind == "gradient_vanishing" else "explode"
                    found.append(Finding(kind, (
                        f"gradients {verb}: x{gr[k]:.2g} backwards along the residual stream {s.name}, "
                        f"from std {grads[-1]:.2g} after its last sum ({s.points[-1].block}) to "
                        f"{grads[k]:.2g} after {s.points[k].block}"),
                        gr[k], (grads[-1], grads[k]), 1.0, f"the residual stream {s.name}"))
    return found, ((lo, hi) if lo is not None else None), judged, extremes


# ----------------------------------------------------------------------------- all verdicts
def _names(rs: Sequence[LayerDiagnosis], limit: int = 4) -> str:
    names = [r.name or r.type for r in rs]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def findings(layers: list[LayerDiagnosis], streams: list[Stream], previous: dict[str, str],
             th: DiagnosisThresholds, normed: Sequence[str] = ()) -> list[Finding]:
    """The verdicts on ``layers`` (the report's records), ``streams``, the chains of
    ``previous`` and the layers that feed a normalization, ``normed`` (see the module docstring)."""
    found: list[Finding] = []
    if not layers:
        return found
    deliberate = [r for r in layers if r.zero and r.role in ("head", "branch end")]
    for role, what in (("head", "the output starts at 0 and only the head's own weights get a "
                                "gradient at the first step"),
                       ("branch end", "each residual block starts as the identity (SkipInit, "
                                      "ReZero, zero_init_residual)")):
        rs = [r for r in deliberate if r.role == role]
        if rs:
            found.append(Finding("zero_init", (
                f"zero-initialized {role}{'s' if len(rs) > 1 else ''}: {_names(rs)} "
                f"(deliberate, not a symmetry: {what})")))
    sym = [r for r in layers if r.duplicates > 0 and not r.input_independent and not r.frozen
           and r not in deliberate]
    if sym:
        r = sym[0]
        head = (f"all {r.units} units of {r.name or r.type} are identical" if r.duplicates == r.units
                else f"{r.duplicates} of {r.units} units of {r.name or r.type} duplicate another unit")
        more = f"; {len(sym) - 1} more layer(s) have duplicate units" if len(sym) > 1 else ""
        found.append(Finding("symmetry", f"symmetry: {head} ({r.duplicate_cause}){more}: "
                                         "identical units get identical updates and never differ"))
    paths = chains(layers, previous)
    chain_found, act_range, grad_range, judged, bridged, extremes = _chain_findings(paths, th)
    stream_found, stream_range, stream_judged, stream_extremes = _stream_findings(streams, th)
    extremes += stream_extremes
    found += stream_found + chain_found
    judged += stream_judged

    sat = [r for r in layers if r.saturated is not None and r.saturated > th.saturated]
    if sat:
        mean = sum(r.saturated for r in sat) / len(sat)
        acts_named = sorted({r.activation for r in sat if r.activation})
        found.append(Finding("saturation", (
            f"saturation: {mean:.0%} of unit outputs saturated ({', '.join(acts_named)} in its "
            f"flat part) in {_where([r.index for r in sat])}: their gradients are near 0")))
    dead = [r for r in layers if r.dead is not None and r.dead > th.dead]
    if dead:
        mean = sum(r.dead for r in dead) / len(dead)
        found.append(Finding("dead", (
            f"dead units: {mean:.0%} of units output 0 for the whole batch in "
            f"{_where([r.index for r in dead])}")))
    measured = [r for r in layers if r.grad_out_std is not None and math.isfinite(r.grad_out_std)]
    blocked = [r for r in measured if r.grad_out_std == 0]
    blocked_note = ""
    if measured and len(blocked) == len(measured) and not deliberate:
        found.append(Finding("gradient_vanishing", "gradients vanish: the gradient w.r.t. every "
                             "layer's output is 0: nothing learns"))
    elif blocked and not any(r.role == "head" for r in deliberate):
        blocked_note = (f"gradients are exactly 0 at {_where([r.index for r in blocked])} while other layers "
                        "get one: a zero scale after them blocks it (intended with zero-initialized residual "
                        "norms or branch ends, zero_init_residual; a fault otherwise)")
    normed_layers = [r for r in layers if r.name in set(normed)]
    judged += len(normed_layers)
    constant = [r for r in layers if r.input_independent]
    if constant:
        found.append(Finding("input_independent", (
            f"input-independent: the output of {_names(constant)} is the same for every sample "
            "(a position table, a constant): it carries no signal of the input and is not used as a "
            "reference for any ratio")))

    if all(f.kind in ("zero_init", "input_independent") for f in found) and judged == 0:
        found.append(Finding("unjudged", (
            "not judged: no chain of two layers and no residual stream could be compared, so "
            "vanishing or exploding signals cannot be ruled out")))
    if all(f.kind in ("zero_init", "input_independent") for f in found):
        parts = []
        if stream_range is not None:
            parts.append(f"residual stream std within [{stream_range[0]:.2g}, {stream_range[1]:.2g}] "
                         "x the stream's input")
        if act_range is not None:
            parts.append(f"along chains of layers, activation std within [{act_range[0]:.2g}, "
                         f"{act_range[1]:.2g}] x the chain's first layer's")
        if grad_range is not None:
            parts.append(f"gradient std within [{grad_range[0]:.2g}, {grad_range[1]:.2g}] x the "
                         "chain's last layer's")
        if normed_layers:
            parts.append(f"{len(normed_layers)} layer(s) feed a normalization, which resets their scale")
        if blocked_note:
            parts.append(blocked_note)
        note = "; chained, leaving out what changes the size between layers (pooling)" if bridged else ""
        worst = max(extremes, key=lambda e: abs(math.log(e[0])) if e[0] > 0 else math.inf, default=None)
        if worst is not None:
            parts.append(f"the largest change x{worst[0]:.2g}, from std {worst[1]:.2g} to {worst[2]:.2g} {worst[3]}")
        found.append(Finding("healthy", "healthy: " + "; ".join(parts or ["nothing to report"]) + (
            f" (limits {th.vanish:g} and {th.explode:g}{note}; no symmetry, saturation or dead layers)"),
            *((worst[0], (worst[1], worst[2]), _correction(worst[0], worst[1], worst[2]), worst[3])
              if worst is not None else ())))
    elif blocked_note:
        found.append(Finding("gradient_blocked", blocked_note))
    return found
