"""``initwise.init`` then ``initwise.diagnose`` on many ``transformers`` model types from one
generic small config each (no download): a sweep for faults beyond the zoo.

For each model type: build ``AutoModelFor<kind>.from_config`` with hidden 64, 2 blocks, 4 heads
(head dim 16), vocabulary 256 and dropout off; initialize it with ``initwise.init(model,
example, seed=0)`` (ids of shape (2, 16), or 4 random 64x64 images); then, in train mode, the
share of trainable elements planned, the initial excess loss ``E[logsumexp(z) - mean(z)] - ln C``
of the logits (the loss against uniformly random labels, minus chance), whether they are finite,
and diagnose's verdicts. A type that does not build from the generic config is reported as
skipped, with why.

Run:  python benchmarks/hf_sweep.py [--kind causal|mlm|s2s|img] [--models gemma,gemma2] [--out DIR]

Prints one line per model and writes ``hf_sweep_<kind>.md`` and ``.json`` to ``--out`` (default
benchmarks/results/hf_sweep; temporary file, then rename).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from typing import Any

import torch

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers

import initwise

DEFAULT_OUT = os.path.join("benchmarks", "results", "hf_sweep")
SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=256,
             num_key_value_heads=4, max_position_embeddings=128, n_embd=64, n_layer=2, n_head=4, d_model=64,
             encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
             encoder_ffn_dim=128, decoder_ffn_dim=128, d_ff=128, num_layers=2, num_heads=4, d_kv=16, ffn_dim=128,
             rotary_dim=16, head_dim=16)
DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout", "resid_pdrop",
            "embd_pdrop", "attn_pdrop", "hidden_dropout", "activation_dropout")
KINDS = {"causal": "AutoModelForCausalLM", "mlm": "AutoModelForMaskedLM", "s2s": "AutoModelForSeq2SeqLM",
         "img": "AutoModelForImageClassification"}
DEFAULT_MODELS = {
    "causal": "gpt2,gpt_neo,gpt_neox,gptj,codegen,opt,bloom,falcon,phi,stablelm,olmo,olmo2,qwen3,qwen2_moe,"
              "granite,cohere,mpt,gemma,gemma2,gemma3_text,mamba,falcon_mamba,mixtral,xglm,ctrl",
    "mlm": "bert,roberta,distilbert,albert,deberta,deberta-v2,electra,mpnet,funnel",
    "s2s": "bart,mbart,t5,pegasus",
    "img": "beit,dinov2,resnet,regnet,efficientnet,mobilenet_v2,mobilevit,bit,focalnet,poolformer",
}


def build(model_type: str, kind: str) -> torch.nn.Module:
    """The model of ``model_type`` from the generic small config (raises if it does not build)."""
    import transformers

    cfg = transformers.AutoConfig.for_model(model_type)
    for key, value in [*SMALL.items(), *((k, 0.0) for k in DROPOUTS)]:
        if hasattr(cfg, key):
            try:
                setattr(cfg, key, value)
            except (AttributeError, TypeError, ValueError):
                pass  # a read-only or derived setting keeps the config's own value
    torch.manual_seed(0)
    return getattr(transformers, KINDS[kind]).from_config(cfg)


def example(kind: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    if kind == "img":
        channels = getattr(model.config, "num_channels", 3)
        return {"pixel_values": torch.randn(4, channels, 64, 64, generator=gen)}
    ex = {"input_ids": torch.randint(3, 200, (2, 16), generator=gen)}
    if kind == "s2s":
        ex["decoder_input_ids"] = torch.randint(3, 200, (2, 8), generator=gen)
    return ex


def measure(model_type: str, kind: str) -> dict[str, Any]:
    """One model's row: ``status`` "ok", "skipped" (it does not build from the generic config)
    or "failed" (``initwise.init`` or the model raised), with the figures of the module docstring."""
    row: dict[str, Any] = {"model": model_type}
    try:
        model = build(model_type, kind)
        ex = example(kind, model)
    except Exception as exc:  # noqa: BLE001 - a type the generic config does not fit is a row too
        return {**row, "status": "skipped", "why": f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"}
    try:
        plan = initwise.init(model, ex, seed=0)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        kept = sum(math.prod(e.shape) for e in plan if e.scheme == "keep" and model.get_parameter(e.name).requires_grad)
        model.train()
        with torch.no_grad():
            logits = getattr(model(**ex), "logits", None)
        row["planned"] = 1.0 - kept / max(trainable, 1)
        if logits is not None:
            z = logits.float().reshape(-1, logits.shape[-1])
            row["excess"] = float((torch.logsumexp(z, -1) - z.mean(-1)).mean()) - math.log(z.shape[-1])
            row["finite"] = bool(torch.isfinite(z).all())
        report = initwise.diagnose(model, ex)
        row["diagnose"] = sorted(report.kinds)
    except Exception as exc:  # noqa: BLE001 - the error is the measurement
        return {**row, "status": "failed", "why": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}
    return {**row, "status": "ok"}


def to_markdown(rows: list[dict[str, Any]], command: str, wall: float) -> str:
    lines = [f"`{command}`, {wall:.0f} s; torch {torch.__version__}.", "",
             "| model | status | planned | initial excess loss | finite | diagnose |", "|---|---|---:|---:|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['model']} | {r['status']}: {r['why']} | | | | |")
            continue
        excess = f"{r['excess']:+.3f}" if "excess" in r else "-"
        lines.append(f"| {r['model']} | ok | {r['planned']:.1%} | {excess} | {r.get('finite', '-')} | "
                     f"{'+'.join(r['diagnose'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=list(KINDS), default="causal",
                        help="which head the models get (default causal)")
    parser.add_argument("--models", default="", help="comma-separated model types (default: the kind's list)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        import transformers  # noqa: F401
    except ImportError:
        parser.error("the sweep needs transformers (pip install -e '.[test]')")
    names = [n.strip() for n in (args.models or DEFAULT_MODELS[args.kind]).split(",") if n.strip()]
    if not names:
        parser.error("--models names no model type")
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    start, rows = time.perf_counter(), []
    for i, name in enumerate(names, 1):
        t0 = time.perf_counter()
        rows.append(measure(name, args.kind))
        r = rows[-1]
        what = (f"planned {r['planned']:.1%}, excess {r.get('excess', float('nan')):+.3f}, "
                f"diagnose {'+'.join(r['diagnose'])}" if r["status"] == "ok" else f"{r['status']}: {r['why'][:100]}")
        print(f"[{i}/{len(names)}] {name}: {what} ({time.perf_counter() - t0:.1f}s)", flush=True)
    wall = time.perf_counter() - start
    command = ("python benchmarks/hf_sweep.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    md = to_markdown(rows, command, wall)
    peers.write_atomic(os.path.join(args.out, f"hf_sweep_{args.kind}.md"), md)
    peers.write_atomic(os.path.join(args.out, f"hf_sweep_{args.kind}.json"),
                       json.dumps({"command": command, "kind": args.kind, "wall_time_s": round(wall, 1),
                                   "versions": peers._versions(), "rows": rows}, indent=1))
    print(f"wrote {os.path.join(args.out, f'hf_sweep_{args.kind}.md')} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
