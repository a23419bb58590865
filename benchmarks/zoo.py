"""The real-model zoo table: each model under its framework's own init and under ``initwise.init``.

One row per model and init: the share of trainable parameter elements the plan changes, the
residual stream's std after the first and the last block and their ratio, the initial loss minus
ln(C), the std of the initial logits, the token embedding's share of the variance of summed
embeddings, the largest relative error of the plan's predicted output stds (``PlanEntry.predicted_std``,
where the plan has them), the frozen tensors init changed, and ``initwise.diagnose``'s verdict
(or its error). The models are tests/zoo_real.py's (transformers models from small configs, no
download, plus hand-written no-norm residual nets and a 48-block pre-norm transformer); when
torchvision and timm are importable, their ResNet-50, ConvNeXt, EfficientNet, MobileNetV3, ViT
and Mixer (built without weights) are added.

Run:  python benchmarks/zoo.py [--models llama,gpt2] [--out benchmarks/results/zoo] [--threads 1]

Prints a markdown table and writes ``zoo.md`` and ``zoo.json`` to ``--out`` (temporary file +
``os.replace``). Criteria of issue 8 point 9: planned >= 99%, ratio <= 2, |loss - ln C| <= 0.1,
prediction error <= 25%.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from typing import Any, Callable

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import initwise  # noqa: E402
from tests import zoo_measure as zm  # noqa: E402
from tests.zoo_real import REAL_ZOO, RealModel, build  # noqa: E402

INITS = ("framework", "initwise")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "zoo")


# ----------------------------------------------------------------------------- vision extras
def _vision_builders() -> tuple[dict[str, Callable[[], RealModel]], str]:
    """torchvision/timm models built without weights, or ``({}, why not)``."""
    try:
        import timm as timm_
        import torchvision.models as tvm
    except Exception as exc:  # noqa: BLE001 - any import failure means: leave them out
        return {}, f"torchvision/timm not importable ({type(exc).__name__}: {exc}); their models are left out"
    import torch.nn.functional as F

    def loss(classes: int):
        def f(model, x):
            logits = model(x)
            g = torch.Generator().manual_seed(1)
            return F.cross_entropy(logits.float(), torch.randint(0, classes, (logits.shape[0],), generator=g))
        return f

    def blocks(model, prefixes: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        names = [n for n, _ in model.named_modules()]
        out = {}
        for p in prefixes:
            depth = p.count(".") + 1
            found = tuple(n for n in names if n.startswith(p + ".") and n.count(".") == depth)
            if found:
                out[p] = found
        return out

    def make(name: str, ctor: Callable[[], Any], prefixes: tuple[str, ...], size: int = 64,
             classes: int = 10) -> Callable[[], RealModel]:
        def builder() -> RealModel:
            torch.manual_seed(0)
            model = ctor()
            g = torch.Generator().manual_seed(0)
            x = torch.randn(4, 3, size, size, generator=g)
            return RealModel(name, model.train(), x, "image_classification", classes, loss(classes),
                             blocks(model, prefixes), framework=name.split("_")[0])
        return builder

    extra = {
        "tv_resnet50": make("tv_resnet50", lambda: tvm.resnet50(weights=None, num_classes=10),
                            ("layer1", "layer2", "layer3", "layer4")),
        "tv_convnext_tiny": make("tv_convnext_tiny", lambda: tvm.convnext_tiny(weights=None, num_classes=10),
                                 ("features.1", "features.3", "features.5", "features.7")),
        "tv_efficientnet_b0": make("tv_efficientnet_b0", lambda: tvm.efficientnet_b0(weights=None, num_classes=10),
                                   ("features.2", "features.4", "features.6")),
        "tv_mobilenet_v3_small": make("tv_mobilenet_v3_small",
                                      lambda: tvm.mobilenet_v3_small(weights=None, num_classes=10), ("features",)),
        "tv_vit_b_16": make("tv_vit_b_16", lambda: tvm.vit_b_16(weights=None, num_classes=10, image_size=64),
                            ("encoder.layers",)),
        "timm_mixer_s16": make("timm_mixer_s16", lambda: timm_.create_model(
            "mixer_s16_224", pretrained=False, num_classes=10, img_size=64), ("blocks",)),
        "timm_convnext_atto": make("timm_convnext_atto", lambda: timm_.create_model(
            "convnext_atto", pretrained=False, num_classes=10), ("stages.0.blocks", "stages.3.blocks")),
    }
    return extra, ""


# ----------------------------------------------------------------------------- one model
def run_model(name: str, builder: Callable[[], RealModel], diagnose: bool = True) -> list[dict[str, Any]]:
    """Both rows (framework init, initwise.init) of model ``name`` as JSON-ready dicts; an error
    of ``initwise.init`` is recorded in its row, not raised."""
    rows = []
    for init in INITS:
        t0 = time.perf_counter()
        rm = builder()
        frozen, buffers = zm.snapshot_frozen(rm.model), zm.snapshot_buffers(rm.model)
        plan = None
        error = ""
        warned: list[str] = []
        if init == "initwise":
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.manual_seed(0)
                    plan = initwise.init(rm.model, rm.example_input, seed=0)
                warned = [" ".join(str(w.message).split())[:200] for w in caught
                          if issubclass(w.category, UserWarning)]
            except Exception as exc:  # noqa: BLE001 - recorded in the table
                error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        if error:
            row: dict[str, Any] = {"model": name, "init": init, "error": error}
        else:
            m = zm.measure(rm, plan, init, frozen_before=frozen, buffers_before=buffers, run_diagnose=diagnose)
            row = m.to_dict()
            row["kept"] = row["kept"][:10]
            row["warnings"] = warned
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- table
def _num(v: Any, fmt: str = ".3g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, fmt)


def _stream_cells(row: dict[str, Any]) -> tuple[str, str, str]:
    stream = row.get("stream") or {}
    if not stream:
        return "-", "-", "-"
    firsts = "/".join(_num(s[0]) for s in stream.values())
    lasts = "/".join(_num(s[-1]) for s in stream.values())
    ratios = "/".join(_num(s[-1] / s[0]) if s[0] else "-" for s in stream.values())
    return firsts, lasts, ratios


def markdown(rows: list[dict[str, Any]]) -> str:
    """The zoo table in markdown, one line per (model, init)."""
    head = ("| model | init | planned | stream first | stream last | last/first | loss - ln C "
            "| logits std | token share | max pred. err | frozen changed | diagnose |")
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r.get("error"):
            lines.append(f"| {r['model']} | {r['init']} | error: {r['error']} | | | | | | | | | |")
            continue
        first, last, ratio = _stream_cells(r)
        planned = "-" if r.get("planned") is None else f"{100 * r['planned']:.1f}%"
        err = r.get("max_prediction_error")
        err_cell = "-" if err is None else (f"{100 * err:.0f}%" if math.isfinite(err) else "unmeasured")
        frozen = ", ".join(r.get("frozen_changed") or []) or "-"
        diag = (r.get("diagnose") or "-").replace("|", "/")
        gap = r["loss_gap"]
        gap_cell = _num(gap, "+.3f" if abs(gap) < 100 else "+.3g")
        tied = " (tied)" if r.get("tied") else ""
        lines.append(f"| {r['model']} | {r['init']} | {planned} | {first} | {last} | {ratio} | "
                     f"{gap_cell} | {_num(r.get('logits_std'))}{tied} | {_num(r.get('token_share'), '.3f')} | "
                     f"{err_cell} | {frozen} | {diag[:90]} |")
    return "\n".join(lines)


def _write_atomic(path: str, text: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated model names (default: all): "
                        + ", ".join(REAL_ZOO))
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"folder for zoo.md and zoo.json (default {DEFAULT_OUT})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-diagnose", action="store_true", help="leave out initwise.diagnose")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)

    builders: dict[str, Callable[[], RealModel]] = {n: (lambda n=n: build(n)) for n in REAL_ZOO}
    extra, why = _vision_builders()
    if why:
        print(why)
    builders.update(extra)
    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(builders)
    unknown = [n for n in names if n not in builders]
    if unknown:
        parser.error(f"unknown models {unknown}; known: {', '.join(builders)}")

    rows: list[dict[str, Any]] = []
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        try:
            new = run_model(name, builders[name], diagnose=not args.no_diagnose)
        except Exception as exc:  # noqa: BLE001 - a model that fails to build is a row too
            new = [{"model": name, "init": init, "error": f"{type(exc).__name__}: {exc}"} for init in INITS]
        rows.extend(new)
        iw = new[-1]
        print(f"[{i}/{len(names)}] {name}: {time.perf_counter() - t0:.1f}s"
              + (f", planned {100 * iw['planned']:.1f}%, ratio {_num(zm.stream_ratio(iw.get('stream') or {}))}"
                 if not iw.get("error") and iw.get("planned") is not None else f", {iw.get('error', '')}"),
              flush=True)
    table = markdown(rows)
    print()
    print(table)
    header = (f"# Real-model zoo: framework init vs initwise.init\n\n"
              f"`python benchmarks/zoo.py` (torch {torch.__version__}, initwise {initwise.__version__}"
              + (f", transformers {_tf_version()}" if _tf_version() else "") + ")."
              + (f" {why}." if why else "") + "\n\n")
    _write_atomic(os.path.join(args.out, "zoo.md"), header + table + "\n")
    _write_atomic(os.path.join(args.out, "zoo.json"), json.dumps(_finite({
        "torch": torch.__version__, "transformers": _tf_version(), "rows": rows}), indent=1) + "\n")
    print(f"\nwrote {os.path.join(args.out, 'zoo.md')} and zoo.json")
    return 0


def _tf_version() -> str | None:
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


if __name__ == "__main__":
    raise SystemExit(main())
