"""Learning-rate sensitivity of a comparison: the same schemes at several learning rates.

    python benchmarks/lr_grid.py --lrs 0.001,0.003,0.01,0.03 --depth 30 --activation relu

For each learning rate of the grid, runs `initwise.experiments.compare` (identical data order,
optimizer and budget for every scheme) and prints one table: final test accuracy and final
training loss (mean over seeds) per scheme and learning rate, plus diverged runs. Used to check
that a conclusion (e.g. "Xavier stalls a 30-layer ReLU net") is not an artifact of one learning
rate, and to pick the default learning rate of the recipe from the training loss of the
reference scheme.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from initwise.experiments import TrainConfig, compare


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--arch", default="mlp")
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--activation", default="relu")
    p.add_argument("--schemes", default="torch,xavier,he,auto")
    p.add_argument("--lrs", default="0.001,0.003,0.01,0.03")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--out", default=os.path.join("benchmarks", "results", "lr_grid"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    schemes = args.schemes.split(",")
    lrs = [float(v) for v in args.lrs.split(",")]
    rows = []
    for lr in lrs:
        comp = compare(args.dataset, args.arch, depth=args.depth, width=args.width,
                       activation=args.activation, schemes=schemes, seeds=args.seeds,
                       config=TrainConfig(steps=args.steps, lr=lr))
        for row in comp.summary():
            rows.append({"lr": lr, **row})
            print(f"lr {lr:<7g} {row['scheme']:<11} acc {row['test_acc_mean']:.3f} ± "
                  f"{row['test_acc_std']:.3f}  final loss {row['final_loss']:.3f}  "
                  f"diverged {row['diverged']}/{row['runs']}", flush=True)
    tag = f"{args.dataset}_{args.arch}{args.depth}_{args.activation}"
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{tag}.json"), "w", encoding="utf-8") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=1, default=str)
    lines = [f"# lr grid: {tag}, {args.seeds} seeds, {args.steps} steps, SGD momentum 0.9", "",
             "| scheme | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |",
             "|---|" + "---|" * len(lrs)]
    for s in schemes:
        cells = [next(f"{r['test_acc_mean']:.3f} (loss {r['final_loss']:.2f}"
                      + (f", {r['diverged']} div." if r["diverged"] else "") + ")"
                      for r in rows if r["lr"] == lr and r["scheme"] == s) for lr in lrs]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    with open(os.path.join(args.out, f"{tag}.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
