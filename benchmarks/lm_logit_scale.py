"""The initial logits' scale against the final loss of the prenorm_lm_24 claim's LM.

    python benchmarks/lm_logit_scale.py                       # E[y^2] 0 0.002 0.02 0.2 0.3, 3 seeds
    python benchmarks/lm_logit_scale.py --targets 0.02 0.2 --seeds 1 --steps 50

The claim (``initwise claim prenorm_lm_24``) trains a 24-block pre-norm transformer LM on the
standard library's source for 200 steps (AdamW, lr 1e-3) from ``initwise.init`` and from other
inits. Here every run starts from ``initwise.init``'s default plan with one change: the output
layer's weight is multiplied by ``sqrt(target / 0.02)``, so that the logits' second moment is
``target`` instead of the plan's 0.02 (the logits are linear in that weight, and the plan's
prediction of 0.02 is exact to a few percent on this model). PyTorch's default init is trained
alongside. Everything else (model, data, batches, seeds) is the claim's. Output:
``benchmarks/results/lm_logit_scale/lm_logit_scale.{json,md}`` (atomic writes).
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


def run(target: float | None, seed: int, config: LMConfig, data) -> tuple[float, float]:
    """(initial, final) test loss of one run: ``initwise.init`` with the output layer scaled to
    logits of second moment ``target``, or PyTorch's default init (``target=None``)."""
    d, heads, blocks, context = LM24
    with seeded(seed):
        model = CharLM(d=d, heads=heads, blocks=blocks, context=context)
    if target is not None:
        initwise.init(model, data.test_windows(2, context)[0], seed=seed)
        with torch.no_grad():
            model.head.weight.mul_(math.sqrt(target / TARGET_LOGITS))
    r = train_lm(model, data, config=config, seed=seed, scheme="torch" if target is None else f"{target:g}")
    return r.test_loss[0], r.test_loss[-1]


def to_markdown(rows: list[dict], command: str, wall: float) -> str:
    lines = [(f"Initial logits' scale vs final test loss (nats/char), `{command}`, {wall:.0f} s; "
              f"ln {VOCAB} = {math.log(VOCAB):.3f}."), "",
             "| init | logits E[y^2] | initial loss - ln V | final test loss (mean) | per seed |",
             "|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['init']} | {r['target'] if r['target'] is not None else '-'} | "
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
    parser.add_argument("--no-torch", action="store_true", help="leave out PyTorch's default init")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be >= 1")
    if any(not (math.isfinite(t) and t >= 0) for t in args.targets):
        parser.error(f"--targets must be finite and >= 0, got {args.targets}")
    torch.set_num_threads(1)  # as the claims: the same bits on every run
    config = LMConfig(steps=args.steps, batch=8, context=LM24[3], eval_every=min(50, args.steps))
    data = load_text()
    start = time.perf_counter()
    rows = []
    for target in [*args.targets, *([] if args.no_torch else [None])]:
        results = [run(target, seed, config, data) for seed in range(args.seeds)]
        rows.append({"init": "torch default" if target is None else "initwise.init, head rescaled",
                     "target": target, "initial_excess": statistics.fmean(a for a, _ in results) - math.log(VOCAB),
                     "final": statistics.fmean(b for _, b in results), "finals": [b for _, b in results]})
        print(f"{rows[-1]['init']:<30} E[y^2] {'-' if target is None else target:<6} initial {rows[-1]['initial_excess']:+.3f} "
              f"final {rows[-1]['final']:.3f}", flush=True)
    wall = time.perf_counter() - start
    command = ("python benchmarks/lm_logit_scale.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    md = to_markdown(rows, command, wall)
    print()
    print(md)
    peers.write_atomic(os.path.join(args.out, "lm_logit_scale.md"), md)
    peers.write_atomic(os.path.join(args.out, "lm_logit_scale.json"), json.dumps(
        {"command": command, "seeds": args.seeds, "steps": args.steps, "wall_time_s": round(wall, 1),
         "versions": peers._versions(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
