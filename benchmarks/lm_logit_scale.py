"""The initial logits' scale against the final loss of the prenorm_lm_24 claim's LM.

    python benchmarks/lm_logit_scale.py                       # E[y^2] 0 0.002 0.02 0.2 0.3, 3 seeds
    python benchmarks/lm_logit_scale.py --targets 0.02 0.2 --seeds 1 --steps 50
    python benchmarks/lm_logit_scale.py --targets 0.02 --norm-gains 1 10 --width 256 --blocks 4

The claim (``initwise claim prenorm_lm_24``) trains a 24-block pre-norm transformer LM on the
standard library's source for 200 steps (AdamW, lr 1e-3) from ``initwise.init`` and from other
inits. Here every run starts from ``initwise.init``'s default plan with one change: the output
layer's weight is multiplied by ``sqrt(target / 0.02)``, so that the logits' second moment is
``target`` instead of the plan's 0.02 (the logits are linear in that weight, and the plan's
prediction of 0.02 is exact to a few percent on this model). PyTorch's default init is trained
alongside. Everything else (model, data, batches, seeds) is the claim's.

``--norm-gains G``: besides, the final LayerNorm's weight is multiplied by ``G`` and the output
layer's by ``1 / G``: the same logits (the norm's bias starts at 0), with the scale moved from the
output weight into the signal that reaches it. Under Adam every weight moves by about the lr per
step, so this speeds up what the output layer learns by itself while the body's effect on the
logits stays the same. ``--width`` and ``--blocks`` change the LM's size (4 heads, context 64),
to see whether a finding holds at another width. Output:
``benchmarks/results/lm_logit_scale/lm_logit_scale.{json,md}`` (atomic writes; ``--out`` for
another folder).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers

import initwise
from initwise.experiments.claims_residual import LM24
from initwise.experiments.lm import VOCAB, CharLM, LMConfig, train_lm
from initwise.experiments.text import load_text
from initwise.experiments.training import seeded
from initwise.policies.targets import TARGET_LOGITS

DEFAULT_OUT = os.path.join("benchmarks", "results", "lm_logit_scale")
DEFAULT_TARGETS = (0.0, 0.002, 0.02, 0.2, 0.3)


def run(target: float | None, seed: int, config: LMConfig, data, gain: float = 1.0,
        size: tuple[int, int] = (LM24[0], LM24[2])) -> tuple[float, float]:
    """(initial, final) test loss of one run: ``initwise.init`` with the output layer scaled to
    logits of second moment ``target`` and the final norm's gain ``gain`` moved out of the output
    layer's weight, or PyTorch's default init (``target=None``); ``size``: (width, blocks)."""
    (d, blocks), heads, context = size, LM24[1], LM24[3]
    with seeded(seed):
        model = CharLM(d=d, heads=heads, blocks=blocks, context=context)
    if target is not None:
        initwise.init(model, data.test_windows(2, context)[0], seed=seed)
        with torch.no_grad():
            model.head.weight.mul_(math.sqrt(target / TARGET_LOGITS) / gain)
            model.norm.weight.mul_(gain)
    r = train_lm(model, data, config=config, seed=seed, scheme="torch" if target is None else f"{target:g}")
    return r.test_loss[0], r.test_loss[-1]


def to_markdown(rows: list[dict], command: str, wall: float, size: tuple[int, int] = (LM24[0], LM24[2])) -> str:
    lines = [(f"Initial logits' scale vs final test loss (nats/char), `{command}`, {wall:.0f} s; "
              f"ln {VOCAB} = {math.log(VOCAB):.3f}; width {size[0]}, {size[1]} blocks."), "",
             "| init | logits E[y^2] | final norm's gain | initial loss - ln V | final test loss (mean) | per seed |",
             "|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['init']} | {r['target'] if r['target'] is not None else '-'} | "
                     f"{'-' if r['target'] is None else format(r['gain'], 'g')} | "
                     f"{r['initial_excess']:+.3f} | {r['final']:.3f} | "
                     + ", ".join(f"{v:.3f}" for v in r["finals"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Final loss of the prenorm_lm_24 claim's LM against the "
                                                 "initial logits' second moment.")
    parser.add_argument("--targets", nargs="+", type=float, default=list(DEFAULT_TARGETS), metavar="E_Y2",
                        help=f"logits' second moments (default {' '.join(map(str, DEFAULT_TARGETS))})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3, as the claim)")
    parser.add_argument("--steps", type=int, default=200, help="training steps (default 200, as the claim)")
    parser.add_argument("--norm-gains", nargs="+", type=float, default=[1.0], metavar="G",
                        help="final norm's weight x G, output layer's x 1/G: the same logits (default 1)")
    parser.add_argument("--width", type=int, default=LM24[0], help=f"model width (default {LM24[0]}, as the claim)")
    parser.add_argument("--blocks", type=int, default=LM24[2], help=f"blocks (default {LM24[2]}, as the claim)")
    parser.add_argument("--no-torch", action="store_true", help="leave out PyTorch's default init")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be >= 1")
    if any(not (math.isfinite(t) and t >= 0) for t in args.targets):
        parser.error(f"--targets must be finite and >= 0, got {args.targets}")
    if any(not (math.isfinite(g) and g > 0) for g in args.norm_gains):
        parser.error(f"--norm-gains must be finite and > 0, got {args.norm_gains}")
    if args.blocks < 1 or args.width < LM24[1] or args.width % LM24[1]:
        parser.error(f"--width must be a positive multiple of {LM24[1]} (the heads) and --blocks >= 1, "
                     f"got {args.width} and {args.blocks}")
    torch.set_num_threads(1)  # as the claims: the same bits on every run
    config = LMConfig(steps=args.steps, batch=8, context=LM24[3], eval_every=min(50, args.steps))
    data = load_text()
    start = time.perf_counter()
    rows = []
    size = (args.width, args.blocks)
    runs = [(t, g) for t in args.targets for g in args.norm_gains] + ([] if args.no_torch else [(None, 1.0)])
    for target, gain in runs:
        results = [run(target, seed, config, data, gain, size) for seed in range(args.seeds)]
        rows.append({"init": "torch default" if target is None else "initwise.init, head rescaled",
                     "target": target, "gain": gain,
                     "initial_excess": statistics.fmean(a for a, _ in results) - math.log(VOCAB),
                     "final": statistics.fmean(b for _, b in results), "finals": [b for _, b in results]})
        print(f"{rows[-1]['init']:<30} E[y^2] {'-' if target is None else target:<6} gain {gain:<5g} "
              f"initial {rows[-1]['initial_excess']:+.3f} final {rows[-1]['final']:.3f}", flush=True)
    wall = time.perf_counter() - start
    command = ("python benchmarks/lm_logit_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    md = to_markdown(rows, command, wall, size)
    print()
    print(md)
    peers.write_atomic(os.path.join(args.out, "lm_logit_scale.md"), md)
    peers.write_atomic(os.path.join(args.out, "lm_logit_scale.json"), json.dumps(
        {"command": command, "seeds": args.seeds, "steps": args.steps, "width": args.width, "blocks": args.blocks, "wall_time_s": round(wall, 1),
         "versions": peers._versions(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
