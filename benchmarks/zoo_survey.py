"""How each zoo model's forward pass uses its parameters, as recorded in one forward pass.

For every parameter (and every view of it: transpose, indexing, chunk, ...), the torch functions
that consume it, with the argument position, the chain of views and the shapes; for the
attention, the softmax / ``scaled_dot_product_attention`` calls and their ``scale``. Parameters
are grouped by (owning module class, local name) so that the 12 layers of a model print once.
Modules are marked ``[not a layer]`` when ``initwise.discover.layers`` does not list them as
atomic layers, and ``[kept]`` when the standard plan keeps their parameter.

Run:  python benchmarks/zoo_survey.py [--models gpt2,mixtral] [--buffers] [--attn eager] [--experts eager]

Reads the model only; what it prints is what the lead needs to teach the planner about each
architecture (see tests/zoo_real.py for the configs).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import initwise  # noqa: E402
from initwise.discover import layers as discover_layers  # noqa: E402
from tests.zoo_real import HF_MODELS, REAL_ZOO, build, call  # noqa: E402

_VIEWS = {"t", "transpose", "permute", "view", "reshape", "__getitem__", "select", "chunk", "split",
          "unsqueeze", "squeeze", "expand", "contiguous", "to", "float", "type", "flatten", "T",
          "narrow", "unbind", "detach", "clone", "__get__"}
_ATTN = {"softmax", "scaled_dot_product_attention", "_softmax"}


def _fname(func: Any) -> str:
    name = getattr(func, "__name__", None) or str(func)
    owner = getattr(func, "__objclass__", None) or getattr(func, "__self__", None)
    if owner is not None and getattr(owner, "__name__", "") == "TensorBase":
        return f"Tensor.{name}"
    mod = getattr(func, "__module__", "") or ""
    if mod.startswith("torch.nn.functional"):
        return f"F.{name}"
    if mod.startswith("torch._C._nn"):
        return f"F.{name}"
    return f"torch.{name}" if not mod.startswith("torch._tensor") else f"Tensor.{name}"


def _shape(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return "x".join(str(s) for s in x.shape) or "scalar"
    return type(x).__name__


class UsageRecorder(TorchFunctionMode):
    """Records, for each tracked tensor (parameters and their views), the functions consuming it."""

    def __init__(self, tracked: dict[int, tuple[torch.Tensor, str]]) -> None:
        super().__init__()
        self.tracked = dict(tracked)      # id -> (tensor, "name" or "name.view()")
        self.uses: dict[str, set[str]] = defaultdict(set)
        self.attention: set[str] = set()
        self.keep: list[torch.Tensor] = []

    def _label(self, t: Any) -> str | None:
        if isinstance(t, torch.Tensor):
            hit = self.tracked.get(id(t))
            if hit is not None and hit[0] is t:
                return hit[1]
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        flat = tree_flatten((args, kwargs))[0]
        labels = [(i, self._label(a)) for i, a in enumerate(flat)]
        labels = [(i, lab) for i, lab in labels if lab is not None]
        if name in _ATTN:
            extra = {k: v for k, v in kwargs.items() if k in ("scale", "is_causal", "dim", "dropout_p")}
            shapes = ",".join(_shape(a) for a in flat if isinstance(a, torch.Tensor))
            self.attention.add(f"{_fname(func)}({shapes}) {extra}")
        if not labels:
            return out
        if name in _VIEWS and len(labels) == 1 and labels[0][0] == 0:
            base = labels[0][1]
            argtxt = ",".join(str(a) if not isinstance(a, torch.Tensor) else "<t>" for a in flat[1:])[:40]
            for j, o in enumerate(t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)):
                self.tracked[id(o)] = (o, f"{base}.{name}({argtxt})" if len(base) < 120 else base)
                self.keep.append(o)
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        shapes = ",".join(_shape(a) for a in flat if isinstance(a, torch.Tensor))
        for i, lab in labels:
            self.uses[lab].add(f"{_fname(func)} arg{i} of ({shapes}) -> {_shape(outs[0]) if outs else '-'}")
        return out


def survey(name: str, show_buffers: bool = False, attn: str | None = None, experts: str | None = None) -> str:
    """The usage summary of zoo model ``name`` (``attn``/``experts``: the transformers
    implementations, ignored for hand-written models)."""
    hf = name in HF_MODELS
    rm = build(name, attn_implementation=attn if hf else None, experts_implementation=experts if hf else None)
    model = rm.model
    plan = initwise.plan(model, rm.example_input)
    kept = {e.name for e in plan if e.scheme == "keep"}
    for e in plan:
        if e.scheme == "keep":
            kept.update(e.shared_with)
    atomic = {id(m) for m in discover_layers(model).values()}
    owner: dict[int, tuple[str, str, Any]] = {}
    tracked: dict[int, tuple[torch.Tensor, str]] = {}
    for mname, module in model.named_modules():
        for local, p in module.named_parameters(recurse=False):
            full = f"{mname}.{local}" if mname else local
            if id(p) not in owner:
                owner[id(p)] = (full, local, module)
                tracked[id(p)] = (p, full)
    rec = UsageRecorder(tracked)
    with torch.no_grad(), torch.random.fork_rng(devices=[]), rec:
        call(model, rm.example_input)
    # group by (module class, local name); one example of each use, with the layer count
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for pid, (full, local, module) in owner.items():
        cls = type(module).__name__
        key = (cls, local)
        g = groups.setdefault(key, {"count": 0, "shapes": set(), "uses": set(), "atomic": id(module) in atomic,
                                    "kept": False, "frozen": False, "example": full,
                                    "stds": [], "consts": set()})
        g["count"] += 1
        p = dict(model.named_parameters(remove_duplicate=False)).get(full)
        if p is not None:
            g["shapes"].add(tuple(p.shape))
            v = p.detach().float()
            if v.numel() > 1 and bool((v == v.flatten()[0]).all()):
                g["consts"].add(float(v.flatten()[0]))
            elif v.numel() > 1:
                g["stds"].append(float(v.std()))
        g["kept"] |= full in kept
        g["frozen"] |= p is not None and not p.requires_grad
        for lab, uses in rec.uses.items():
            if lab == full or lab.startswith(full + "."):
                chain = lab[len(full):]
                g["uses"].update(f"{chain or '(direct)'}: {u}" for u in uses)
    lines = [f"## {name}: {type(model).__name__} (attn_implementation="
             f"{getattr(model.config, '_attn_implementation', '-') if hasattr(model, 'config') else '-'}"
             f", experts={getattr(getattr(model, 'config', None), '_experts_implementation', '-')})"]
    for (cls, local), g in sorted(groups.items()):
        flags = []
        if not g["atomic"]:
            flags.append("not a layer")
        if g["kept"]:
            flags.append("kept")
        if g["frozen"]:
            flags.append("frozen")
        shapes = " ".join(str(sh) for sh in sorted(g["shapes"]))
        init = []
        if g["stds"]:
            lo, hi = min(g["stds"]), max(g["stds"])
            init.append(f"std {lo:.3g}" if abs(hi - lo) <= 0.02 * hi else f"std {lo:.3g}..{hi:.3g}")
        if g["consts"]:
            init.append("constant " + "/".join(f"{c:g}" for c in sorted(g["consts"])))
        lines.append(f"- {cls}.{local} {shapes} x{g['count']} (e.g. {g['example']})"
                     f"{' [' + ', '.join(flags) + ']' if flags else ''}; as built: {', '.join(init) or '-'}")
        for u in sorted(g["uses"])[:8]:
            lines.append(f"    {u}")
        if not g["uses"]:
            lines.append("    (no use recorded: not used in this forward pass, or used with torch functions off)")
    if rec.attention:
        lines.append("- attention / softmax calls:")
        for a in sorted(rec.attention)[:6]:
            lines.append(f"    {a}")
    if show_buffers:
        lines.append("- buffers: " + ", ".join(f"{n} {tuple(b.shape)} {b.dtype}" for n, b in model.named_buffers()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(REAL_ZOO),
                        help="comma-separated zoo models (default: all): " + ", ".join(REAL_ZOO))
    parser.add_argument("--buffers", action="store_true", help="also list the buffers")
    parser.add_argument("--attn", default=None, help="transformers attn_implementation (eager, sdpa; default: transformers')")
    parser.add_argument("--experts", default=None,
                        help="transformers experts_implementation (eager, grouped_mm, batched_mm; default: transformers')")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in REAL_ZOO]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(REAL_ZOO)}")
    for n in names:
        print(survey(n, args.buffers, args.attn, args.experts))
        print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
